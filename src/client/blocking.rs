//! The blocking client: one socket, the protocol core, and two locks so that one thread may
//! read while another writes.
//!
//! # Locks
//!
//! `proto` guards the protocol state and the bytes it encoded but nobody wrote yet
//! (`pending`); it is held only to encode or to handle received bytes, never across a system
//! call. `wire` serialises writers: whoever holds it writes `pending` out in order, so frames
//! reach the socket in the order they were encoded (which the masking-key sequence and the
//! compression context require). A sender waits for `wire` (so a peer that does not read
//! holds senders back); the reader only tries it — when another thread is writing, that
//! thread writes the reader's pongs and close reply too, and rechecks `pending` after letting
//! go of `wire`, so nothing is left behind.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant as WallClock};

use bidir_protocol::{
    CloseCode, Config, Connection, DataKind, Delivery, FrameKind, Input, Instant, Message,
    SendError, State,
};

use super::handshake::Handshake;
use super::link::Link;
use super::{Connect, ConnectError, Error, Incoming};
use crate::{CloseInfo, Sink};

/// The most one `read` takes.
const READ_BUF: usize = 64 << 10;

/// A WebSocket client connection, blocking.
///
/// Reads ([`WebSocket::recv`], [`WebSocket::recv_frame`]) and writes may happen on different
/// threads after [`WebSocket::split`]. Ping answers, close replies and heartbeats are handled
/// while reading: a connection nobody reads from answers no ping.
#[derive(Debug)]
pub struct WebSocket {
    reader: ReadHalf,
    writer: WriteHalf,
}

/// The receiving half of a [`WebSocket`].
#[derive(Debug)]
pub struct ReadHalf {
    shared: Arc<Shared>,
    stream: Link,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    spill: Vec<u8>,
    /// A message being put together by `recv`.
    message: Option<(DataKind, Vec<u8>)>,
    read_timeout: Option<Duration>,
    /// The socket's `SO_RCVTIMEO` as last set.
    socket_timeout: Option<Duration>,
    /// The close handshake completed or the connection failed: nothing more to read.
    done: bool,
}

/// The sending half of a [`WebSocket`]; cloneable, so that several threads may send (frames
/// from different threads are never interleaved inside one another).
#[derive(Clone, Debug)]
pub struct WriteHalf {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    proto: Mutex<Proto>,
    wire: Mutex<Wire>,
    base: WallClock,
    peer: SocketAddr,
    protocol: Option<String>,
    headers: Vec<(String, String)>,
}

/// The writing side of the socket and the buffer its writer last wrote from: swapped with
/// `Proto::pending`, so the two buffers alternate and a send allocates nothing.
#[derive(Debug)]
struct Wire {
    stream: Link,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Proto {
    conn: Connection,
    pending: Vec<u8>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn now(&self) -> Instant {
        Instant::from_nanos(self.base.elapsed().as_nanos() as u64)
    }

    /// Writes what is pending. `wait`: take the turn even if another thread is writing;
    /// otherwise leave the bytes to that thread.
    fn flush(&self, wait: bool) -> io::Result<()> {
        loop {
            let mut wire = if wait {
                lock(&self.wire)
            } else {
                match self.wire.try_lock() {
                    Ok(wire) => wire,
                    Err(TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(TryLockError::WouldBlock) => return Ok(()),
                }
            };
            loop {
                let Wire { stream, buf } = &mut *wire;
                std::mem::swap(buf, &mut lock(&self.proto).pending);
                if buf.is_empty() {
                    break;
                }
                let written = stream.write_all(buf);
                buf.clear();
                written?;
            }
            drop(wire);
            if lock(&self.proto).pending.is_empty() {
                return Ok(());
            }
        }
    }
}

pub(super) fn connect(options: &Connect) -> Result<WebSocket, ConnectError> {
    let mut config = Config::clone(&options.config);
    config.delivery = Delivery::Fragments;
    let options = Connect { config: Arc::new(config), ..options.clone() };
    let (mut link, deadline) = Link::open(&options)?;
    let base = WallClock::now();
    let handshake = Handshake::new(&options)?;
    let mut request = Vec::new();
    handshake.write_request(&mut request)?;
    let stream = link.stream();
    let left = deadline.saturating_duration_since(WallClock::now()).max(Duration::from_millis(1));
    stream.set_write_timeout(Some(left))?;
    link.write_all(&request)?;
    let mut buf = vec![0u8; READ_BUF].into_boxed_slice();
    let mut len = 0;
    let (upgraded, used) = loop {
        let left = deadline.saturating_duration_since(WallClock::now());
        if left.is_zero() {
            return Err(ConnectError::Timeout);
        }
        link.stream().set_read_timeout(Some(left))?;
        if len == buf.len() {
            return Err(ConnectError::InvalidResponse(
                bidir_protocol::http::ResponseError::Malformed,
            ));
        }
        let n = match link.read(&mut buf[len..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        len += n;
        let now = Instant::from_nanos(base.elapsed().as_nanos() as u64);
        if let Some(done) = handshake.on_bytes(&buf[..len], n == 0, now)? {
            break done;
        }
    };
    let stream = link.stream();
    stream.set_write_timeout(None)?;
    stream.set_read_timeout(None)?;
    let peer = stream.peer_addr()?;
    let shared = Arc::new(Shared {
        proto: Mutex::new(Proto { conn: upgraded.conn, pending: Vec::new() }),
        wire: Mutex::new(Wire { stream: link.try_clone()?, buf: Vec::new() }),
        base,
        peer,
        protocol: upgraded.protocol,
        headers: upgraded.headers,
    });
    let mut proto = lock(&shared.proto);
    if let Some(codec) = proto.conn.new_codec() {
        proto.conn.attach_codec(codec);
    }
    drop(proto);
    let reader = ReadHalf {
        shared: Arc::clone(&shared),
        stream: link,
        buf,
        start: used,
        end: len,
        spill: Vec::new(),
        message: None,
        read_timeout: options.read_timeout,
        socket_timeout: None,
        done: false,
    };
    Ok(WebSocket { reader, writer: WriteHalf { shared } })
}

impl WebSocket {
    /// Connects to `url` with default options; see [`Connect`] for more.
    ///
    /// # Errors
    ///
    /// As [`Connect::connect`].
    pub fn connect(url: &str) -> Result<Self, ConnectError> {
        Connect::new(url)?.connect()
    }

    /// The next message, ping, pong or the peer's close, waiting for it. Fragmented messages
    /// come whole. After [`Incoming::Close`], or an error, it returns [`Error::Closed`].
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] after the read timeout (the connection stays usable);
    /// [`Error::Protocol`] when the peer broke the protocol or passed a limit;
    /// [`Error::Io`]; [`Error::Closed`].
    pub fn recv(&mut self) -> Result<Incoming, Error> {
        self.reader.recv()
    }

    /// Like [`WebSocket::recv`], but data comes as it arrives, in
    /// [`Incoming::Fragment`]s: for messages too large to hold.
    ///
    /// # Errors
    ///
    /// As [`WebSocket::recv`].
    pub fn recv_frame(&mut self) -> Result<Incoming, Error> {
        self.reader.recv_frame()
    }

    /// Sends a whole message (compressed if permessage-deflate was negotiated and it is
    /// large enough).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once a close frame was sent or received; [`Error::Send`] while a
    /// fragmented message is being sent; [`Error::Io`].
    pub fn send(&mut self, message: Message<'_>) -> Result<(), Error> {
        self.writer.send(message)
    }

    /// Sends one frame of a fragmented message (or a whole one).
    ///
    /// # Errors
    ///
    /// As [`WebSocket::send`]; [`Error::Send`] for fragments out of order or invalid UTF-8.
    pub fn send_frame(&mut self, kind: FrameKind, payload: &[u8]) -> Result<(), Error> {
        self.writer.send_frame(kind, payload)
    }

    /// Sends a ping; its pong comes through [`WebSocket::recv`].
    ///
    /// # Errors
    ///
    /// As [`WebSocket::send`]; [`Error::Send`] past 125 bytes.
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.writer.ping(payload)
    }

    /// The closing handshake: sends a close frame, then reads until the peer's arrives and the
    /// server closes the TCP connection (RFC 6455 §7.1.1), discarding messages that arrive
    /// meanwhile, for at most the configured close timeout. Returns the peer's answer.
    ///
    /// # Errors
    ///
    /// [`Error::Send`] for a code that may not be sent or a reason over 123 bytes;
    /// [`Error::Closed`] when the connection was already closed; [`Error::Protocol`] with
    /// [`CloseTimeout`](bidir_protocol::Error::CloseTimeout) when the peer did not answer.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<CloseInfo<'static>, Error> {
        self.writer.close(code, reason)?;
        loop {
            if let Incoming::Close(close) = self.reader.recv_frame()? {
                return Ok(close);
            }
        }
    }

    /// Where the connection stands.
    pub fn state(&self) -> State {
        self.writer.state()
    }

    /// The subprotocol the server chose.
    pub fn protocol(&self) -> Option<&str> {
        self.writer.shared.protocol.as_deref()
    }

    /// The headers of the server's 101 answer.
    pub fn response_headers(&self) -> &[(String, String)] {
        &self.writer.shared.headers
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.writer.shared.peer
    }

    /// The negotiated permessage-deflate parameters, if any.
    pub fn deflate(&self) -> Option<bidir_protocol::deflate::DeflateParams> {
        lock(&self.writer.shared.proto).conn.deflate_params()
    }

    /// Sets how long [`WebSocket::recv`] waits (`None`: no limit).
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.reader.read_timeout = timeout;
    }

    /// Splits into a receiving and a sending half, for use on two threads.
    pub fn split(self) -> (ReadHalf, WriteHalf) {
        (self.reader, self.writer)
    }
}

impl WriteHalf {
    fn encode(
        &self,
        f: impl FnOnce(&mut Connection, Instant, &mut Vec<u8>) -> Result<(), SendError>,
    ) -> Result<(), Error> {
        let mut proto = lock(&self.shared.proto);
        let Proto { conn, pending } = &mut *proto;
        f(conn, self.shared.now(), pending).map_err(|e| match e {
            SendError::Closed => Error::Closed,
            other => Error::Send(other),
        })?;
        drop(proto);
        self.shared.flush(true).map_err(Error::Io)
    }

    /// As [`WebSocket::send`].
    ///
    /// # Errors
    ///
    /// As [`WebSocket::send`].
    pub fn send(&self, message: Message<'_>) -> Result<(), Error> {
        self.encode(|conn, _, out| conn.send(message, out))
    }

    /// As [`WebSocket::send_frame`].
    ///
    /// # Errors
    ///
    /// As [`WebSocket::send_frame`].
    pub fn send_frame(&self, kind: FrameKind, payload: &[u8]) -> Result<(), Error> {
        self.encode(|conn, _, out| conn.send_frame(kind, payload, out))
    }

    /// As [`WebSocket::ping`].
    ///
    /// # Errors
    ///
    /// As [`WebSocket::ping`].
    pub fn ping(&self, payload: &[u8]) -> Result<(), Error> {
        self.encode(|conn, _, out| conn.ping(payload, out))
    }

    /// Sends a close frame; the peer's close comes through the reading half's `recv`.
    ///
    /// # Errors
    ///
    /// As [`WebSocket::close`], without the wait.
    pub fn close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.encode(|conn, now, out| conn.close(now, code, reason, out))
    }

    /// Where the connection stands.
    pub fn state(&self) -> State {
        lock(&self.shared.proto).conn.state()
    }
}

/// Sends through the writing half; [`Sink::close`] only starts the closing handshake (the
/// inherent [`WebSocket::close`] also waits for the answer).
impl Sink for WebSocket {
    fn send(&mut self, msg: Message<'_>) -> Result<(), crate::SendError> {
        Sink::send(&mut &self.writer, msg)
    }

    fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), crate::SendError> {
        Sink::close(&mut &self.writer, code, reason)
    }
}

impl Sink for WriteHalf {
    fn send(&mut self, msg: Message<'_>) -> Result<(), crate::SendError> {
        Sink::send(&mut &*self, msg)
    }

    fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), crate::SendError> {
        Sink::close(&mut &*self, code, reason)
    }
}

impl Sink for &WriteHalf {
    fn send(&mut self, msg: Message<'_>) -> Result<(), crate::SendError> {
        WriteHalf::send(self, msg).map_err(sink_error)
    }

    fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), crate::SendError> {
        WriteHalf::close(self, code, reason).map_err(sink_error)
    }
}

/// A send's [`Error`] as a [`Sink`] reports it. Sends fail with `Closed`, `Send` or `Io`
/// only; `Timeout` and `Protocol` come from reads, and would mean the connection is gone.
fn sink_error(e: Error) -> crate::SendError {
    match e {
        Error::Send(e) => crate::SendError::Protocol(e),
        Error::Io(e) => crate::SendError::Io(e.kind()),
        _ => crate::SendError::Closed,
    }
}

impl ReadHalf {
    /// As [`WebSocket::recv`].
    ///
    /// # Errors
    ///
    /// As [`WebSocket::recv`].
    pub fn recv(&mut self) -> Result<Incoming, Error> {
        loop {
            match self.recv_frame()? {
                Incoming::Fragment { kind, payload, first, last } => {
                    let (kind, mut bytes) = match self.message.take() {
                        Some(partial) if !first => partial,
                        _ => (kind, Vec::new()),
                    };
                    if bytes.is_empty() {
                        bytes = payload;
                    } else {
                        bytes.extend_from_slice(&payload);
                    }
                    if !last {
                        self.message = Some((kind, bytes));
                        continue;
                    }
                    return Ok(match kind {
                        DataKind::Text => Incoming::Text(
                            String::from_utf8(bytes)
                                .map_err(|_| Error::Protocol(bidir_protocol::Error::InvalidUtf8))?,
                        ),
                        DataKind::Binary => Incoming::Binary(bytes),
                    });
                }
                other => return Ok(other),
            }
        }
    }

    /// As [`WebSocket::recv_frame`].
    ///
    /// # Errors
    ///
    /// As [`WebSocket::recv_frame`].
    pub fn recv_frame(&mut self) -> Result<Incoming, Error> {
        if self.done {
            return Err(Error::Closed);
        }
        let deadline = self.read_timeout.map(|t| WallClock::now() + t);
        loop {
            if let Some(result) = self.handle_buffered() {
                if matches!(result, Ok(Incoming::Close(_)) | Err(_)) {
                    self.done = true;
                }
                if matches!(result, Ok(Incoming::Close(_))) {
                    self.await_eof();
                }
                return result;
            }
            self.fill(deadline)?;
        }
    }

    /// Handles the bytes in the buffer up to the next event.
    fn handle_buffered(&mut self) -> Option<Result<Incoming, Error>> {
        let shared = Arc::clone(&self.shared);
        let mut proto = lock(&shared.proto);
        let Proto { conn, pending } = &mut *proto;
        let mut input = Input::new(&mut self.buf[self.start..self.end]);
        let event = conn.handle_bytes(shared.now(), &mut input, &mut self.spill);
        let result = match event {
            Ok(None) => None,
            Ok(Some(event)) => Some(Ok(Incoming::owned(event))),
            Err(e) => Some(Err(Error::Protocol(e))),
        };
        let consumed = input.consumed();
        self.start += consumed;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        conn.poll_transmit(pending);
        let queued = !pending.is_empty();
        drop(proto);
        if queued && let Err(e) = shared.flush(false) {
            return Some(Err(Error::Io(e)));
        }
        result
    }

    /// Reads more bytes, running the protocol's timers while waiting.
    fn fill(&mut self, deadline: Option<WallClock>) -> Result<(), Error> {
        loop {
            let now = self.shared.now();
            let timer = lock(&self.shared.proto).conn.poll_timeout();
            let mut wait =
                timer.map(|t| Duration::from_nanos(t.as_nanos().saturating_sub(now.as_nanos())));
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(WallClock::now());
                if left.is_zero() {
                    return Err(Error::Timeout);
                }
                wait = Some(wait.map_or(left, |w| w.min(left)));
            }
            if timer.is_some_and(|t| t <= now) {
                self.on_timer()?;
                continue;
            }
            if self.end == self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            }
            // A setsockopt per read would double the system calls: set it when it changes.
            let wait = wait.map(|w| w.max(Duration::from_millis(1)));
            if wait != self.socket_timeout {
                self.stream.stream().set_read_timeout(wait).map_err(Error::Io)?;
                self.socket_timeout = wait;
            }
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.done = true;
                    let mut proto = lock(&self.shared.proto);
                    let error = proto.conn.handle_eof().err();
                    drop(proto);
                    return Err(error.map_or(Error::Closed, Error::Protocol));
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.done = true;
                    return Err(Error::Io(e));
                }
            }
        }
    }

    fn on_timer(&mut self) -> Result<(), Error> {
        let mut proto = lock(&self.shared.proto);
        let now = self.shared.now();
        let Proto { conn, pending } = &mut *proto;
        let result = conn.handle_timeout(now);
        conn.poll_transmit(pending);
        drop(proto);
        self.shared.flush(false).map_err(Error::Io)?;
        result.map_err(|e| {
            self.done = true;
            Error::Protocol(e)
        })
    }

    /// After the closing handshake, waits (up to the close timeout) for the server to close
    /// the TCP connection, as a client should (RFC 6455 §7.1.1), then closes this side.
    fn await_eof(&mut self) {
        let timeout = lock(&self.shared.proto).conn.config().close_timeout;
        let deadline = WallClock::now() + timeout;
        let mut scratch = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(WallClock::now());
            if left.is_zero() || self.stream.stream().set_read_timeout(Some(left)).is_err() {
                break;
            }
            self.socket_timeout = Some(left);
            match self.stream.read(&mut scratch) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.stream.shutdown();
    }
}
