//! The byte stream under the blocking client: the socket, or TLS over it for `wss://`.
//!
//! Over TLS both halves share one rustls connection behind a mutex. The reader reads the socket
//! without holding it, then takes it to decipher; every write of records to the socket happens
//! while holding it, so records leave in the order they were encrypted whichever half made them.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
#[cfg(feature = "tls")]
use std::sync::{Arc, Mutex};
use std::time::Instant as WallClock;

use super::{Connect, ConnectError};

/// One TLS record at most is read at a time: its plaintext then fits rustls's receive limit.
#[cfg(feature = "tls")]
const RAW_READ: usize = 16 << 10;

#[cfg(feature = "tls")]
type Tls = Arc<Mutex<rustls::ClientConnection>>;
#[cfg(not(feature = "tls"))]
#[derive(Clone, Debug)]
enum Tls {}

/// The socket, and the TLS session over it for `wss://`.
#[derive(Debug)]
pub(super) struct Link {
    stream: TcpStream,
    tls: Option<Tls>,
    /// The reader's buffer for received records (TLS only).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    raw: Vec<u8>,
}

impl Link {
    /// Connects to the first address of the URL's host that answers and, for `wss://`,
    /// completes the TLS handshake; returns the link and the handshake's deadline (the
    /// handshake timeout after the connect), which the upgrade shares.
    pub(super) fn open(options: &Connect) -> Result<(Self, WallClock), ConnectError> {
        let url = &options.url;
        let mut last = None;
        for addr in (url.host.as_str(), url.port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, options.connect_timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    let deadline = WallClock::now() + options.handshake_timeout;
                    let tls = handshake(options, &stream, deadline)?;
                    return Ok((Self { stream, tls, raw: Vec::new() }, deadline));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or_else(
            || ConnectError::Io(io::Error::new(io::ErrorKind::NotFound, "no address")),
            ConnectError::from,
        ))
    }

    /// The other half's link: the same socket and session.
    pub(super) fn try_clone(&self) -> io::Result<Self> {
        Ok(Self { stream: self.stream.try_clone()?, tls: self.tls.clone(), raw: Vec::new() })
    }

    pub(super) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Writes all of `bytes` (encrypted over TLS). Writers take turns (the caller's lock).
    pub(super) fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        match &self.tls {
            None => (&self.stream).write_all(bytes),
            #[cfg(feature = "tls")]
            Some(tls) => {
                let mut tls = lock(tls);
                let mut rest = bytes;
                while !rest.is_empty() {
                    let n = tls.writer().write(rest)?;
                    rest = &rest[n..];
                    send_records(&mut tls, &self.stream)?;
                }
                Ok(())
            }
            #[cfg(not(feature = "tls"))]
            Some(never) => match *never {},
        }
    }

    /// Reads some bytes (deciphered over TLS); `Ok(0)` at the end of the stream (or the
    /// server's `close_notify`). The socket's read timeout applies to each wait.
    pub(super) fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        match &self.tls {
            None => (&self.stream).read(dst),
            #[cfg(feature = "tls")]
            Some(tls) => loop {
                match lock(tls).reader().read(dst) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The stream ended without close_notify: for WebSocket, whose close
                    // handshake says whether everything came, the end of the stream.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
                self.raw.resize(RAW_READ, 0);
                let n = (&self.stream).read(&mut self.raw)?;
                let mut tls = lock(tls);
                let mut received = &self.raw[..n];
                loop {
                    tls.read_tls(&mut received)?;
                    let state = tls.process_new_packets().map_err(invalid);
                    // An alert, a key update's answer: out now, before the error if any.
                    send_records(&mut tls, &self.stream)?;
                    state?;
                    if received.is_empty() {
                        break;
                    }
                }
            },
            #[cfg(not(feature = "tls"))]
            Some(never) => match *never {},
        }
    }

    /// Ends the connection: `close_notify` first over TLS, then the socket both ways.
    pub(super) fn shutdown(&self) {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let mut tls = lock(tls);
            tls.send_close_notify();
            let _ = send_records(&mut tls, &self.stream);
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// The TLS handshake for `wss://`, blocking until `deadline`.
#[cfg(feature = "tls")]
fn handshake(
    options: &Connect,
    stream: &TcpStream,
    deadline: WallClock,
) -> Result<Option<Tls>, ConnectError> {
    if !options.url.tls {
        return Ok(None);
    }
    let name = rustls::pki_types::ServerName::try_from(options.url.host.clone())
        .map_err(|e| ConnectError::Tls(format!("TLS: a host name that cannot be checked: {e}")))?;
    let config = options.tls.clone().unwrap_or_default();
    let mut tls = rustls::ClientConnection::new(Arc::clone(&config.config), name)
        .map_err(|e| ConnectError::Tls(format!("TLS: {e}")))?;
    while tls.is_handshaking() {
        let left = deadline.saturating_duration_since(WallClock::now());
        if left.is_zero() {
            return Err(ConnectError::Timeout);
        }
        stream.set_read_timeout(Some(left))?;
        stream.set_write_timeout(Some(left))?;
        match tls.complete_io(&mut &*stream) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(ConnectError::Tls(format!("TLS: {e}")));
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(ConnectError::Closed);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(Arc::new(Mutex::new(tls))))
}

#[cfg(not(feature = "tls"))]
fn handshake(_: &Connect, _: &TcpStream, _: WallClock) -> Result<Option<Tls>, ConnectError> {
    Ok(None)
}

/// Writes the records rustls has waiting.
#[cfg(feature = "tls")]
fn send_records(tls: &mut rustls::ClientConnection, stream: &TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        tls.write_tls(&mut &*stream)?;
    }
    Ok(())
}

#[cfg(feature = "tls")]
fn lock(tls: &Tls) -> std::sync::MutexGuard<'_, rustls::ClientConnection> {
    tls.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(feature = "tls")]
fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}
