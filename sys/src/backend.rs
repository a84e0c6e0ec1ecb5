//! The contract every I/O backend meets, so the engine's worker loop runs unchanged on epoll
//! (readiness) and io_uring (completion).
//!
//! # The model: completions
//!
//! The worker never asks "is this socket readable?": it asks the backend to [`poll`], and the
//! backend reports what *happened* as [`Completion`]s — a connection accepted, bytes received,
//! a socket writable again, a stream closed, a wake-up from another thread. A readiness
//! backend (epoll) performs the `accept4`/`read` itself when the kernel says a socket is ready
//! and reports the result; a completion backend (io_uring) reports the kernel's completions
//! directly. Either way the worker sees the same events.
//!
//! # Rules every backend keeps
//!
//! 1. **Received bytes are lent.** [`Completion::Received`]'s slice belongs to the backend (a
//!    per-worker read buffer, or a provided-buffer ring entry) and is valid only during the
//!    callback. The worker may modify it in place (unmasking) and must copy what it keeps.
//! 2. **Tokens are the worker's.** The worker names each stream with a [`Token`] when it
//!    [`add_stream`]s it and retires the token with [`remove_stream`]. Between the two, every
//!    completion for the stream carries its token; after `remove_stream` returns, none does.
//! 3. **Registration changes happen between polls.** The callback gets no access to the
//!    backend: the worker collects streams to add and remove and applies them after `poll`
//!    returns. So a token is never reused within one batch of completions, and a completion
//!    can never name a stream that the worker already retired.
//! 4. **Sends are taken now.** [`send`] gathers the slices into one write per call and returns
//!    the bytes the backend took — possibly fewer than offered, possibly 0. Taken bytes are the
//!    backend's (written by the kernel, or copied into a buffer the backend owns), so the
//!    worker drops the taken prefix at once and never lends its own memory to the kernel;
//!    after a short write it waits for [`Completion::Writable`] before sending the rest. A
//!    backend that copies sends may also take a whole buffer without copying it
//!    ([`send_owned`]): it swaps the worker's buffer for an empty one of its own, so the bytes
//!    change owner, never place.
//! 5. **EOF and errors end the stream.** [`Completion::Closed`] reports the peer's EOF
//!    (`error: None`) or a failure; the backend reads nothing more for that token. The worker
//!    still owns the token until it calls `remove_stream`, which closes the descriptor (after
//!    any operation in flight has completed, for a completion backend).
//! 6. **Connects complete later.** [`connect`] starts a nonblocking connect; exactly one
//!    [`Completion::Connected`] reports its outcome before any other completion for the token.
//! 7. **Wake-ups coalesce.** [`Waker::wake`] may be called from any thread any number of
//!    times; the next `poll` reports at least one [`Completion::Woken`] and returns promptly.
//!
//! Accepted streams are of the backend's own [`Backend::Stream`] type (a `TcpStream` for the
//! socket backends, a handle for [`crate::mem`]'s in-memory net), and arrive configured: the
//! backend applies the per-connection options to each listener it is given
//! ([`crate::socket::configure_listener`]), and the kernel copies them into every connection
//! the listener creates after (one connection already queued on a listener the caller opened
//! keeps what it was created with).
//!
//! [`poll`]: Backend::poll
//! [`add_stream`]: Backend::add_stream
//! [`remove_stream`]: Backend::remove_stream
//! [`send`]: Backend::send
//! [`connect`]: Backend::connect
//! [`send_owned`]: Backend::send_owned
//!
//! # Implementation notes
//!
//! | backend | module | readiness → completion | writes |
//! | --- | --- | --- | --- |
//! | epoll (mio, edge-triggered) | [`crate::epoll`] | `accept4`/`read` on readiness; one `read` per ready socket per poll, another next poll if the buffer filled or the stream is ending (FIN, reset) until the end is read | `writev`, synchronous |
//! | in memory | [`crate::mem`] | a FIFO of events the test's driver queues; virtual time | into the driver's per-peer buffer, within a budget the driver sets |
//! | io_uring | [`crate::uring`] | multishot accept and recv with a provided-buffer ring | a queue that is one buffer is taken whole (`send_owned`, a swap), else copied into a backend-owned buffer; one `send` (or `send_zc` above a threshold) SQE per socket, all submitted with the next wait (one `io_uring_enter` per loop turn); `Writable` when it is all sent |

use std::io::{self, IoSlice};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// Names a stream for the backend; chosen by the worker (its connection slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub usize);

/// What a backend reports from [`Backend::poll`]; `S` is the backend's [`Backend::Stream`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Completion<'a, S = TcpStream> {
    /// A connection was accepted; the stream is configured (for a socket: close-on-exec,
    /// `TCP_NODELAY`) but not yet registered: the worker adds it with a token of its choice
    /// after the poll, or drops it (which closes it).
    Accepted {
        /// The accepted stream.
        stream: S,
        /// The peer's address.
        peer: SocketAddr,
        /// Which listener accepted it: the index of its [`Backend::add_listener`] call, in the
        /// order of the calls (0 for the first); always 0 on [`crate::mem`]'s net.
        listener: usize,
    },
    /// Bytes arrived on a stream. Lent for the callback only (rule 1).
    Received {
        /// The stream.
        token: Token,
        /// The bytes; may be modified in place.
        data: &'a mut [u8],
    },
    /// A stream can take more bytes after a short write (rule 4).
    Writable {
        /// The stream.
        token: Token,
    },
    /// The stream ended: the peer's EOF (`None`) or a failure.
    Closed {
        /// The stream.
        token: Token,
        /// Why, if it failed.
        error: Option<io::Error>,
    },
    /// A stream started with [`Backend::connect`] connected (`error: None`; completions for
    /// it follow as for an added stream) or failed to (the worker removes the token).
    Connected {
        /// The stream.
        token: Token,
        /// Why the connection failed, if it did.
        error: Option<io::Error>,
    },
    /// Another thread called [`Waker::wake`].
    Woken,
}

/// Wakes a backend's [`Backend::poll`] from another thread.
pub trait Waker: Send + Sync + 'static {
    /// Makes the backend report [`Completion::Woken`] soon. Cheap when repeated before the
    /// backend polls (the wake-ups coalesce).
    ///
    /// # Errors
    ///
    /// What writing to the wake-up descriptor reports.
    fn wake(&self) -> io::Result<()>;
}

/// An I/O backend for one worker thread. See the module documentation for the contract.
pub trait Backend {
    /// The backend's waker.
    type Waker: Waker;

    /// What [`Completion::Accepted`] hands over and [`Backend::add_stream`] takes back: a
    /// `TcpStream` for the socket backends, a handle on a simulated peer for an in-memory
    /// one. Dropping an accepted stream without adding it closes the connection.
    type Stream;

    /// Starts accepting connections from `listener` (nonblocking).
    ///
    /// # Errors
    ///
    /// What registering the listener reports.
    fn add_listener(&mut self, listener: TcpListener) -> io::Result<()>;

    /// Stops accepting and closes every listener; connections already accepted stay.
    fn close_listeners(&mut self);

    /// Registers an accepted stream under `token`; completions for it follow.
    ///
    /// # Errors
    ///
    /// What registering the stream reports; the stream is closed then.
    fn add_stream(&mut self, token: Token, stream: Self::Stream) -> io::Result<()>;

    /// Opens a client stream to `addr` under `token`: the connect starts now and
    /// [`Completion::Connected`] reports its outcome. Until then nothing may be sent on it.
    ///
    /// # Errors
    ///
    /// What creating the socket or starting the connect reports at once; the token is not
    /// registered then.
    fn connect(&mut self, token: Token, addr: SocketAddr) -> io::Result<()>;

    /// Retires `token` and closes its stream. Unknown tokens are ignored.
    fn remove_stream(&mut self, token: Token);

    /// Writes `bufs` to the stream in one gathered write and returns how many bytes were taken
    /// (rule 4): fewer than offered when the stream can take no more now, 0 meaning "wait for
    /// [`Completion::Writable`]"; the worker keeps the rest.
    ///
    /// # Errors
    ///
    /// A failure other than "would block" (e.g. `EPIPE`): the stream is done; the worker
    /// should remove it.
    fn send(&mut self, token: Token, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Sends all of `buf` by taking it: swaps it for an empty buffer of the backend's (so the
    /// caller keeps a buffer with capacity for its next bytes) when the stream can take a
    /// send now. `Some(Ok(true))`: taken, `buf` is now empty; `Some(Ok(false))`: a send is in
    /// flight, `buf` is untouched and [`Completion::Writable`] follows; `None`: this backend
    /// does not take buffers (the default), use [`Backend::send`].
    ///
    /// # Errors
    ///
    /// As [`Backend::send`].
    fn send_owned(&mut self, token: Token, buf: &mut Vec<u8>) -> Option<io::Result<bool>> {
        let _ = (token, buf);
        None
    }

    /// A waker for this backend, to hand to other threads.
    fn waker(&self) -> std::sync::Arc<Self::Waker>;

    /// Waits up to `timeout` (`None`: indefinitely) for something to happen, then reports
    /// every completion to `on` and returns. Returns early, with nothing reported, if
    /// interrupted by a signal.
    ///
    /// # Errors
    ///
    /// What waiting reports, other than an interruption.
    fn poll<F: FnMut(Completion<'_, Self::Stream>)>(
        &mut self,
        timeout: Option<Duration>,
        on: F,
    ) -> io::Result<()>;

    /// Counts of system calls made so far, for the engine's metrics.
    fn syscalls(&self) -> SyscallCounts;

    /// Receives that ended because the shared receive buffers ran out (io_uring's provided
    /// buffer ring: `ENOBUFS`), each re-armed once buffers came back. 0 for backends that
    /// read into per-call buffers.
    fn starved_receives(&self) -> u64 {
        0
    }
}

/// System calls a backend made, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallCounts {
    /// Waits: `epoll_wait`, or `io_uring_enter` that waited.
    pub waits: u64,
    /// `read`/`recv` calls.
    pub reads: u64,
    /// `writev`/`send` calls.
    pub writes: u64,
    /// `accept4` calls.
    pub accepts: u64,
    /// Registration changes (`epoll_ctl`), socket options, sockets and closes.
    pub other: u64,
}

impl SyscallCounts {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.waits + self.reads + self.writes + self.accepts + self.other
    }
}
