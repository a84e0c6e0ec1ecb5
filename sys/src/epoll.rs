//! The epoll backend, through mio (edge-triggered).
//!
//! Readiness becomes completions here: when a stream is readable the backend `read`s once into
//! its per-worker buffer and reports [`Completion::Received`]; when a listener is readable it
//! `accept4`s until the queue is empty; accepted streams come with the listener's options
//! ([`crate::socket::configure_listener`], set once per listener). Streams are registered once for both directions and
//! never re-registered: with edge triggering a writable event costs nothing until a write has
//! been cut short, so a request/response exchange costs one `read` and one `writev` per
//! message plus a share of one `epoll_wait`.
//!
//! Edge triggering reports new data, not remaining data. A read that fills the whole buffer may
//! have left bytes behind, so the stream is read again on the next poll without waiting for an
//! edge (that poll does not block); a shorter read drained the socket, and later data brings a
//! new edge. Reading once per stream per poll keeps one busy connection from starving the
//! others. The end of the stream is the exception: a FIN, reset or error is reported by one
//! edge, often the same edge as the last bytes, and no edge follows it; so once an event says
//! the stream is ending, the stream is read again on every poll until a read returns the end.

use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use mio::{Events, Interest, Poll};

use crate::backend::{Backend, Completion, SyscallCounts, Token, Waker};

const WAKER: mio::Token = mio::Token(usize::MAX);
/// Listener tokens count down from here; stream tokens must stay below.
const LISTENER_BASE: usize = usize::MAX - 1;
/// Streams tokens are below this.
const MAX_LISTENERS: usize = 1024;

/// How long to wait before retrying `accept4` after it ran out of descriptors or memory.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// The epoll backend. See the module documentation.
#[derive(Debug)]
pub struct Epoll {
    poll: Poll,
    events: Events,
    listeners: Vec<mio::net::TcpListener>,
    streams: Vec<Option<Stream>>,
    read_buf: Box<[u8]>,
    /// Streams whose last read filled the buffer: read again on the next poll.
    again: Vec<Token>,
    /// `accept4` hit a resource limit; retry soon even without a new edge.
    accept_retry: bool,
    waker: Arc<EpollWaker>,
    counts: SyscallCounts,
}

#[derive(Debug)]
struct Stream {
    io: mio::net::TcpStream,
    /// EOF or an error was reported: read nothing more.
    done: bool,
    /// The peer's FIN, a reset or an error was signalled: read again until the end is seen.
    /// Edge triggering reports the end once, often in the same edge as the last bytes, and a
    /// read that returns those bytes has not yet returned the end.
    ending: bool,
    /// A client connect is in progress: the first writable (or error) event settles it.
    connecting: bool,
}

impl Epoll {
    /// A backend with a read buffer of `read_buf_len` bytes (the most one `read` takes) and
    /// room for `events` readiness events per `epoll_wait`.
    ///
    /// # Errors
    ///
    /// What `epoll_create1(2)` or `eventfd(2)` report.
    pub fn new(read_buf_len: usize, events: usize) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(EpollWaker(mio::Waker::new(poll.registry(), WAKER)?));
        Ok(Self {
            poll,
            events: Events::with_capacity(events.max(16)),
            listeners: Vec::new(),
            streams: Vec::new(),
            read_buf: vec![0; read_buf_len.max(1)].into_boxed_slice(),
            again: Vec::new(),
            accept_retry: false,
            waker,
            counts: SyscallCounts::default(),
        })
    }

    fn read(
        streams: &mut [Option<Stream>],
        read_buf: &mut [u8],
        again: &mut Vec<Token>,
        counts: &mut SyscallCounts,
        token: Token,
        on: &mut impl FnMut(Completion<'_>),
    ) {
        let Some(Some(stream)) = streams.get_mut(token.0) else { return };
        if stream.done {
            return;
        }
        counts.reads += 1;
        match (&stream.io).read(read_buf) {
            Ok(0) => {
                stream.done = true;
                on(Completion::Closed { token, error: None });
            }
            Ok(n) => {
                if n == read_buf.len() || stream.ending {
                    again.push(token);
                }
                on(Completion::Received { token, data: &mut read_buf[..n] });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => again.push(token),
            Err(e) => {
                stream.done = true;
                on(Completion::Closed { token, error: Some(e) });
            }
        }
    }

    /// Settles a connect in progress on its first event; `false` while it is still
    /// connecting or once it failed (nothing else to report for the event).
    fn settle_connect(
        stream: &mut Stream,
        token: Token,
        event: &mio::event::Event,
        on: &mut impl FnMut(Completion<'_>),
    ) -> bool {
        if !(event.is_writable() || event.is_error() || event.is_write_closed()) {
            return false;
        }
        let error = match stream.io.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match stream.io.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    if !event.is_error() && !event.is_write_closed() {
                        return false; // a spurious wake-up: still connecting
                    }
                    Some(io::Error::from(io::ErrorKind::ConnectionRefused))
                }
                Err(e) => Some(e),
            },
        };
        stream.connecting = false;
        let failed = error.is_some();
        stream.done = failed;
        on(Completion::Connected { token, error });
        !failed
    }

    fn accept(
        index: usize,
        listener: &mio::net::TcpListener,
        counts: &mut SyscallCounts,
        accept_retry: &mut bool,
        on: &mut impl FnMut(Completion<'_>),
    ) {
        loop {
            counts.accepts += 1;
            match listener.accept() {
                Ok((stream, peer)) => {
                    // mio's stream owns a nonblocking, close-on-exec descriptor; keep it. Its
                    // TCP_NODELAY came from the listener (`add_listener`).
                    let stream = TcpStream::from(std::os::fd::OwnedFd::from(stream));
                    on(Completion::Accepted { stream, peer, listener: index });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(_) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the connection stays queued and no new
                    // edge may come; try again shortly.
                    *accept_retry = true;
                    return;
                }
            }
        }
    }
}

impl Backend for Epoll {
    type Waker = EpollWaker;
    type Stream = TcpStream;

    fn add_listener(&mut self, listener: TcpListener) -> io::Result<()> {
        if self.listeners.len() >= MAX_LISTENERS {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many listeners"));
        }
        listener.set_nonblocking(true)?;
        crate::socket::configure_listener(&listener)?;
        let mut listener = mio::net::TcpListener::from_std(listener);
        let token = mio::Token(LISTENER_BASE - 1 - self.listeners.len());
        self.counts.other += 1;
        self.poll.registry().register(&mut listener, token, Interest::READABLE)?;
        self.listeners.push(listener);
        Ok(())
    }

    fn close_listeners(&mut self) {
        self.counts.other += self.listeners.len() as u64;
        self.listeners.clear();
    }

    fn add_stream(&mut self, token: Token, stream: TcpStream) -> io::Result<()> {
        if token.0 >= LISTENER_BASE - MAX_LISTENERS {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "token out of range"));
        }
        let mut io = mio::net::TcpStream::from_std(stream);
        self.counts.other += 1;
        self.poll.registry().register(
            &mut io,
            mio::Token(token.0),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        if self.streams.len() <= token.0 {
            self.streams.resize_with(token.0 + 1, || None);
        }
        self.streams[token.0] = Some(Stream { io, done: false, ending: false, connecting: false });
        Ok(())
    }

    fn connect(&mut self, token: Token, addr: SocketAddr) -> io::Result<()> {
        let stream = crate::socket::connecting(addr)?;
        self.counts.other += 2; // socket, connect
        self.add_stream(token, stream)?;
        if let Some(Some(stream)) = self.streams.get_mut(token.0) {
            stream.connecting = true;
        }
        Ok(())
    }

    fn remove_stream(&mut self, token: Token) {
        if let Some(slot) = self.streams.get_mut(token.0)
            && slot.take().is_some()
        {
            // Closing the descriptor removes it from the epoll set; no epoll_ctl needed.
            self.counts.other += 1;
        }
        self.again.retain(|t| *t != token);
    }

    fn send(&mut self, token: Token, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let Some(Some(stream)) = self.streams.get(token.0) else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "unknown token"));
        };
        self.counts.writes += 1;
        match (&stream.io).write_vectored(bufs) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn waker(&self) -> Arc<EpollWaker> {
        Arc::clone(&self.waker)
    }

    fn poll<F: FnMut(Completion<'_>)>(
        &mut self,
        timeout: Option<Duration>,
        mut on: F,
    ) -> io::Result<()> {
        let timeout = if !self.again.is_empty() {
            Some(Duration::ZERO)
        } else if self.accept_retry {
            Some(timeout.map_or(ACCEPT_RETRY, |t| t.min(ACCEPT_RETRY)))
        } else {
            timeout
        };
        self.counts.waits += 1;
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let Self { events, listeners, streams, read_buf, again, accept_retry, counts, .. } = self;
        for token in std::mem::take(again) {
            Self::read(streams, read_buf, again, counts, token, &mut on);
        }
        if std::mem::take(accept_retry) {
            for (index, listener) in listeners.iter().enumerate() {
                Self::accept(index, listener, counts, accept_retry, &mut on);
            }
        }
        for event in events.iter() {
            match event.token() {
                WAKER => on(Completion::Woken),
                mio::Token(t) if (LISTENER_BASE - MAX_LISTENERS..LISTENER_BASE).contains(&t) => {
                    let index = LISTENER_BASE - 1 - t;
                    if let Some(listener) = listeners.get(index) {
                        Self::accept(index, listener, counts, accept_retry, &mut on);
                    }
                }
                mio::Token(t) => {
                    let token = Token(t);
                    if let Some(Some(stream)) = streams.get_mut(t)
                        && stream.connecting
                        && !Self::settle_connect(stream, token, event, &mut on)
                    {
                        continue;
                    }
                    let ending = event.is_read_closed() || event.is_error();
                    if ending && let Some(Some(stream)) = streams.get_mut(t) {
                        stream.ending = true;
                    }
                    if event.is_readable() || ending {
                        Self::read(streams, read_buf, again, counts, token, &mut on);
                    }
                    if event.is_writable()
                        && let Some(Some(stream)) = streams.get(t)
                        && !stream.done
                    {
                        on(Completion::Writable { token });
                    }
                }
            }
        }
        Ok(())
    }

    fn syscalls(&self) -> SyscallCounts {
        self.counts
    }
}

/// Wakes an [`Epoll`] from another thread through an eventfd.
#[derive(Debug)]
pub struct EpollWaker(mio::Waker);

impl Waker for EpollWaker {
    fn wake(&self) -> io::Result<()> {
        self.0.wake()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Shutdown;

    fn pair(backend: &mut Epoll) -> (TcpStream, Token) {
        let listener = crate::socket::listener("127.0.0.1:0".parse().unwrap(), 16, false).unwrap();
        let addr = listener.local_addr().unwrap();
        backend.add_listener(listener).unwrap();
        let client = TcpStream::connect(addr).unwrap();
        let mut accepted = None;
        for _ in 0..100 {
            backend
                .poll(Some(Duration::from_millis(10)), |c| {
                    if let Completion::Accepted { stream, .. } = c {
                        accepted = Some(stream);
                    }
                })
                .unwrap();
            if accepted.is_some() {
                break;
            }
        }
        let token = Token(3);
        let accepted = accepted.expect("accepted");
        assert!(accepted.nodelay().unwrap(), "accepted streams arrive configured");
        backend.add_stream(token, accepted).unwrap();
        (client, token)
    }

    /// Polls until `f` has seen what it wants (it returns true) or ten seconds pass.
    fn poll_until(backend: &mut Epoll, mut f: impl FnMut(Completion<'_>) -> bool) {
        let mut done = false;
        for _ in 0..1000 {
            backend.poll(Some(Duration::from_millis(10)), |c| done |= f(c)).unwrap();
            if done {
                return;
            }
        }
        panic!("not seen in time");
    }

    #[test]
    fn accept_receive_send_and_eof() {
        let mut backend = Epoll::new(4096, 64).unwrap();
        let (mut client, token) = pair(&mut backend);
        client.write_all(b"hello").unwrap();
        poll_until(&mut backend, |c| match c {
            Completion::Received { token: t, data } => {
                assert_eq!((t, &*data), (token, &b"hello"[..]));
                true
            }
            _ => false,
        });
        let out = backend.send(token, &[IoSlice::new(b"wor"), IoSlice::new(b"ld")]).unwrap();
        assert_eq!(out, 5);
        let mut got = [0u8; 5];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"world");
        client.shutdown(Shutdown::Write).unwrap();
        poll_until(&mut backend, |c| matches!(c, Completion::Closed { error: None, .. }));
        backend.remove_stream(token);
        assert!(backend.send(token, &[IoSlice::new(b"x")]).is_err());
        let counts = backend.syscalls();
        assert!(counts.reads >= 2 && counts.writes == 1 && counts.accepts >= 1);
    }

    #[test]
    fn the_last_bytes_and_the_end_in_one_edge_are_both_reported() {
        for reset in [false, true] {
            let mut backend = Epoll::new(4096, 64).unwrap();
            let (mut client, token) = pair(&mut backend);
            client.write_all(b"partial").unwrap();
            if reset {
                socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO)).unwrap();
                drop(client);
            } else {
                client.shutdown(Shutdown::Write).unwrap();
            }
            std::thread::sleep(Duration::from_millis(20)); // both arrive before the first poll
            let mut received = 0;
            poll_until(&mut backend, |c| match c {
                Completion::Received { data, .. } => {
                    received += data.len();
                    false
                }
                Completion::Closed { token: t, error } => {
                    assert_eq!(t, token);
                    assert!(reset || error.is_none(), "{error:?}"); // a reset may report ECONNRESET
                    true
                }
                _ => false,
            });
            assert!(reset || received == 7, "reset {reset}: {received} bytes");
            backend.remove_stream(token);
        }
    }

    #[test]
    fn a_full_buffer_is_read_again_without_a_new_edge() {
        let mut backend = Epoll::new(1000, 64).unwrap();
        let (mut client, token) = pair(&mut backend);
        client.write_all(&[7u8; 2500]).unwrap();
        let mut total = 0;
        poll_until(&mut backend, |c| {
            if let Completion::Received { data, .. } = c {
                assert!(data.len() <= 1000);
                total += data.len();
            }
            total == 2500
        });
        backend.remove_stream(token);
    }

    #[test]
    fn short_writes_report_writable_later() {
        let mut backend = Epoll::new(4096, 64).unwrap();
        let (client, token) = pair(&mut backend);
        // Fill the socket buffers: the peer never reads.
        let chunk = vec![1u8; 1 << 20];
        let mut sent = 0usize;
        loop {
            match backend.send(token, &[IoSlice::new(&chunk)]).unwrap() {
                0 => break,
                n => sent += n,
            }
        }
        assert!(sent > 0);
        // Drain from another thread; the backend must report writability.
        let reader = std::thread::spawn(move || {
            let mut client = client;
            let mut buf = vec![0u8; 1 << 16];
            let mut got = 0;
            while got < sent {
                got += client.read(&mut buf).unwrap();
            }
            client // kept open: an EOF would end the stream before it is reported writable
        });
        poll_until(&mut backend, |c| matches!(c, Completion::Writable { token: t } if t == token));
        drop(reader.join().unwrap());
    }

    #[test]
    fn waker_wakes_from_another_thread() {
        let mut backend = Epoll::new(4096, 64).unwrap();
        let waker = backend.waker();
        std::thread::spawn(move || {
            waker.wake().unwrap();
            waker.wake().unwrap();
        });
        poll_until(&mut backend, |c| matches!(c, Completion::Woken));
    }

    #[test]
    fn closed_listeners_accept_nothing() {
        let mut backend = Epoll::new(4096, 64).unwrap();
        let listener = crate::socket::listener("127.0.0.1:0".parse().unwrap(), 16, false).unwrap();
        let addr = listener.local_addr().unwrap();
        backend.add_listener(listener).unwrap();
        backend.close_listeners();
        assert!(TcpStream::connect(addr).is_err());
    }
}
