//! The client side: a blocking [`WebSocket`] for scripts, tests and tools, and connections
//! opened from the engine's workers ([`ServerHandle::connect`](crate::ServerHandle::connect))
//! for running thousands of them on the same [`Handler`](crate::Handler) API.
//!
//! Both start from a [`Connect`]: the URL, headers, subprotocols, the permessage-deflate offer,
//! timeouts and the protocol limits.
//!
//! ```no_run
//! use bidir::client::{Connect, Incoming};
//! use bidir::{CloseCode, Message};
//!
//! let mut ws = Connect::new("ws://127.0.0.1:9001/echo")?.protocol("chat").connect()?;
//! ws.send(Message::Text("hello"))?;
//! if let Incoming::Text(echo) = ws.recv()? {
//!     assert_eq!(echo, "hello");
//! }
//! ws.close(CloseCode::NORMAL, "done")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod blocking;
pub(crate) mod engine;
pub(crate) mod handshake;
mod link;
mod url;

use core::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bidir_protocol::deflate::{DeflateConfig, NegotiationError};
use bidir_protocol::http::ResponseError;
use bidir_protocol::{CloseCode, Config, DataKind, Event, Message};

use crate::CloseInfo;

pub use blocking::{ReadHalf, WebSocket, WriteHalf};
pub use url::{UrlError, WsUrl};

/// What to connect to and how: a `ws://` URL and the options of the opening handshake.
///
/// Defaults: no subprotocol, no extra header, no permessage-deflate, a 10 s connect timeout
/// and a 10 s handshake timeout, no read timeout, and the protocol limits of
/// [`Config::default`] with heartbeats off (a blocking client only runs timers while it
/// reads).
#[derive(Clone, Debug)]
pub struct Connect {
    pub(crate) url: WsUrl,
    pub(crate) protocols: Vec<String>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) deflate: Option<DeflateConfig>,
    pub(crate) connect_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) read_timeout: Option<Duration>,
    pub(crate) config: Arc<Config>,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::ClientTls>,
}

impl Connect {
    /// Options for `url` (`ws://host[:port][/path][?query]`).
    ///
    /// # Errors
    ///
    /// [`ConnectError::Url`]; `wss://` is refused with [`UrlError::TlsNotSupported`].
    pub fn new(url: &str) -> Result<Self, ConnectError> {
        let mut config = Config::default();
        config.ping_interval = None;
        Ok(Self {
            url: WsUrl::parse(url).map_err(ConnectError::Url)?,
            protocols: Vec::new(),
            headers: Vec::new(),
            deflate: None,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            read_timeout: None,
            config: Arc::new(config),
            #[cfg(feature = "tls")]
            tls: None,
        })
    }

    /// The parsed URL.
    pub fn url(&self) -> &WsUrl {
        &self.url
    }

    /// Offers a subprotocol; call again for more, in order of preference.
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocols.push(protocol.into());
        self
    }

    /// Adds a request header (authorization, cookies, origin). Names and values that cannot
    /// be sent make the connection fail with [`ConnectError::InvalidRequest`].
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Offers permessage-deflate with `config` (its profile and limits).
    pub fn deflate(mut self, config: DeflateConfig) -> Self {
        self.deflate = Some(config);
        self
    }

    /// How long the TCP connect may take. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long the opening handshake may take once connected. Default 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How long a blocking [`WebSocket::recv`] waits before [`Error::Timeout`] (the connection
    /// stays usable). Default: no limit. Engine connections ignore it (they have heartbeats).
    pub fn read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// The protocol limits and timers (message and frame size, heartbeats, close timeout).
    pub fn config(mut self, config: Config) -> Self {
        self.config = Arc::new(config);
        self
    }

    /// Which servers a `wss://` connection trusts. Default:
    /// [`ClientTls::webpki_roots`](crate::tls::ClientTls::webpki_roots). Unused for `ws://`.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// A `wss://` connection's TLS session, ready for its first flight; `None` for `ws://`.
    #[cfg(feature = "tls")]
    pub(crate) fn tls_session(&self) -> Result<Option<crate::tls::Session>, ConnectError> {
        if !self.url.tls {
            return Ok(None);
        }
        let name = rustls::pki_types::ServerName::try_from(self.url.host.clone()).map_err(|e| {
            ConnectError::Tls(format!("TLS: a host name that cannot be checked: {e}"))
        })?;
        let tls = self.tls.clone().unwrap_or_default();
        crate::tls::Session::client(&tls.config, name)
            .map(Some)
            .map_err(|e| ConnectError::Tls(format!("TLS: {e}")))
    }

    /// Without the `tls` feature no URL is `wss://`.
    #[cfg(not(feature = "tls"))]
    pub(crate) fn tls_session(&self) -> Result<Option<crate::tls::Session>, ConnectError> {
        Ok(None)
    }

    /// Connects and completes the opening handshake, blocking.
    ///
    /// # Errors
    ///
    /// [`ConnectError`]: the name does not resolve, the connection or the handshake fails or
    /// times out, or the server refuses the upgrade ([`ConnectError::Refused`] carries its
    /// status, headers and body).
    pub fn connect(&self) -> Result<WebSocket, ConnectError> {
        blocking::connect(self)
    }
}

/// The server's answer when it did not switch protocols.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The status code, e.g. 401, 403, 404, 426.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// The headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body: `Content-Length` bytes (at most 64 KiB), or what came with the head.
    pub body: Vec<u8>,
}

impl Refusal {
    /// The value of the first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Why a connection could not be opened.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL cannot be connected to.
    Url(UrlError),
    /// A header, subprotocol or the target cannot be sent in a request.
    InvalidRequest,
    /// Resolving, connecting, reading or writing failed.
    Io(io::Error),
    /// The connect or the handshake took longer than allowed.
    Timeout,
    /// The server answered with another status than 101.
    Refused(Box<Refusal>),
    /// The server's 101 answer is not valid for our request (RFC 6455 §4.1).
    InvalidResponse(ResponseError),
    /// The server's permessage-deflate answer is not one our offer allowed (RFC 7692 §5).
    Deflate(NegotiationError),
    /// The server closed the connection during the handshake.
    Closed,
    /// The engine is shutting down ([`ServerHandle::connect`](crate::ServerHandle::connect)).
    ShuttingDown,
    /// The worker holds [`ServerConfig::max_connections`](crate::ServerConfig) connections
    /// already ([`ServerHandle::connect`](crate::ServerHandle::connect)).
    TooManyConnections,
    /// The connection's handler refused the server's answer
    /// ([`Handler::on_response`](crate::Handler::on_response)), with its reason: a key
    /// exchange the server's headers do not complete, say.
    Rejected(String),
    /// The TLS handshake failed (the server's certificate, versions, ALPN), or TLS broke
    /// before the upgrade.
    Tls(String),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Url(e) => e.fmt(f),
            Self::InvalidRequest => f.write_str("a header, subprotocol or target cannot be sent"),
            Self::Io(e) => write!(f, "connection failed: {e}"),
            Self::Timeout => f.write_str("connect or handshake timed out"),
            Self::Refused(r) => {
                write!(f, "the server refused the upgrade: {} {}", r.status, r.reason)
            }
            Self::InvalidResponse(e) => write!(f, "invalid handshake answer: {e}"),
            Self::Deflate(e) => write!(f, "invalid permessage-deflate answer: {e}"),
            Self::Closed => f.write_str("the server closed the connection during the handshake"),
            Self::ShuttingDown => f.write_str("the engine is shutting down"),
            Self::TooManyConnections => f.write_str("the worker is at its connection limit"),
            Self::Rejected(reason) => write!(f, "the server's answer was rejected: {reason}"),
            Self::Tls(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Url(e) => Some(e),
            Self::Io(e) => Some(e),
            Self::Deflate(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ConnectError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Self::Timeout,
            _ => Self::Io(e),
        }
    }
}

/// What [`WebSocket::recv`] and [`WebSocket::recv_frame`] return: owned copies, so that the
/// socket can go on reading.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Incoming {
    /// A whole text message.
    Text(String),
    /// A whole binary message.
    Binary(Vec<u8>),
    /// A piece of a message ([`WebSocket::recv_frame`] only): the bytes of one frame, or of
    /// part of one that is still arriving. Text pieces may end inside a character; the whole
    /// message is valid UTF-8 (checked as it arrives).
    Fragment {
        /// Text or binary.
        kind: DataKind,
        /// The bytes.
        payload: Vec<u8>,
        /// The first piece of its message.
        first: bool,
        /// The last piece of its message.
        last: bool,
    },
    /// A ping; already answered.
    Ping(Vec<u8>),
    /// A pong, e.g. the answer to [`WebSocket::ping`].
    Pong(Vec<u8>),
    /// The end of the connection, owned: for [`WebSocket`], the completed closing handshake
    /// (the peer's code, 1005 when it sent none, and reason); for the blocking adapter's
    /// `Socket`, however its connection ended. Nothing more arrives.
    Close(CloseInfo<'static>),
}

impl Incoming {
    /// An owned copy of a decoded event.
    pub(crate) fn owned(event: Event<'_>) -> Self {
        match event {
            Event::Message(Message::Text(t)) => Self::Text(t.to_owned()),
            Event::Message(Message::Binary(b)) => Self::Binary(b.to_vec()),
            Event::Fragment(f) => Self::Fragment {
                kind: f.kind,
                payload: f.payload.to_vec(),
                first: f.first,
                last: f.last,
            },
            Event::Ping(p) => Self::Ping(p.to_vec()),
            Event::Pong(p) => Self::Pong(p.to_vec()),
            Event::Close(close) => Self::Close(CloseInfo::from(close).into_owned()),
            _ => Self::Close(CloseInfo::failed(CloseCode::ABNORMAL, "unknown event")),
        }
    }
}

/// Why an operation on an open [`WebSocket`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The connection is closed: the closing handshake completed, or it failed earlier.
    Closed,
    /// The read timeout passed with nothing received; the connection is still usable.
    Timeout,
    /// The peer broke the protocol, or a limit was passed: the connection failed and its
    /// close frame (1002, 1007, 1009) was sent.
    Protocol(bidir_protocol::Error),
    /// The protocol refused the send (fragment order, control payload length, close code).
    Send(bidir_protocol::SendError),
    /// The socket failed.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("the connection is closed"),
            Self::Timeout => f.write_str("read timed out"),
            Self::Protocol(e) => write!(f, "the connection failed: {e}"),
            Self::Send(e) => write!(f, "send refused: {e}"),
            Self::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Protocol(e) => Some(e),
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}
