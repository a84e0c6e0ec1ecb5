//! Client connections driven by the engine's workers: the request is prepared on the caller's
//! thread, then a worker connects, sends it, reads the answer and runs the connection like an
//! accepted one, with the same [`Handler`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::handshake::Handshake;
use super::{Connect, ConnectError};
use crate::Handler;
use crate::tls::Session;

/// A connection for a worker to open.
pub(crate) struct PendingConnect {
    pub(crate) addr: SocketAddr,
    pub(crate) handshake: Handshake,
    pub(crate) request: Vec<u8>,
    pub(crate) handler: Box<dyn Handler + Send>,
    /// The request target, for [`Context::target`](crate::Context::target).
    pub(crate) target: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
    /// The TLS session of a `wss://` connection.
    pub(crate) tls: Option<Box<Session>>,
}

impl PendingConnect {
    /// Resolves the host (blocking, on the caller's thread) and writes the request.
    pub(crate) fn new(
        options: &Connect,
        handler: Box<dyn Handler + Send>,
    ) -> Result<Self, ConnectError> {
        let url = &options.url;
        let addr = (url.host.as_str(), url.port).to_socket_addrs()?.next().ok_or_else(|| {
            ConnectError::Io(std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))
        })?;
        let handshake = Handshake::new(options)?;
        let mut request = Vec::new();
        handshake.write_request(&mut request)?;
        Ok(Self {
            addr,
            handshake,
            request,
            handler,
            target: url.target.clone(),
            connect_timeout: options.connect_timeout,
            handshake_timeout: options.handshake_timeout,
            tls: options.tls_session()?.map(Box::new),
        })
    }
}
