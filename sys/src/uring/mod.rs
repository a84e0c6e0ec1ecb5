//! The io_uring backend: completions straight from the kernel, one `io_uring_enter` per loop
//! turn for every socket's receives and sends.
//!
//! - **Accept**: one multishot accept per listener; re-armed when the kernel ends it. Each
//!   accepted stream comes blocking, as io_uring wants it, and with the listener's options
//!   ([`crate::socket::configure_listener`], set once per listener): its handshake costs one
//!   `getpeername` (a multishot accept has one address buffer for all its connections, so the
//!   peer cannot come with the completion) and, at the end, the `close`.
//! - **Receive**: one multishot receive per stream, into a *provided buffer ring* shared by
//!   the worker's streams (so an idle connection holds no receive buffer). Each completion
//!   names the buffer the kernel filled; the bytes are lent to the worker for the callback
//!   and the buffer goes back to the ring right after. Where the kernel has incremental
//!   consumption (6.12) receives pack into a buffer one after another and the buffer goes
//!   back after its last piece: small messages from many streams share one buffer, and a
//!   large receive still fits in one completion. When the ring runs dry the kernel ends
//!   the multishot receive with `ENOBUFS`; the stream is re-armed only after the batch's
//!   buffers have been returned (re-arming at once would spin).
//! - **Send**: [`Backend::send`] copies the gathered slices into a send buffer the backend
//!   owns and submits one `send`; it returns the bytes it took at once, so the worker's queue never
//!   lends memory to the kernel. When the queue is one buffer, [`Backend::send_owned`] takes
//!   it instead of copying it: the queue's buffer and one of the backend's spare ones swap
//!   places, so the bytes change owner, not place, and neither side allocates in the steady
//!   state. While a send is in flight further sends take nothing (0); a short send is
//!   resubmitted from the buffer, in order; when the buffer is all sent the backend reports
//!   [`Completion::Writable`]. Sends of at least [`UringConfig::send_zc_threshold`] bytes go
//!   out as `IORING_OP_SEND_ZC`: the kernel sends from that buffer without copying it and
//!   says when it is done with it (a notification completion after the send's own); the
//!   buffer is reused only after every notification.
//! - **Connect**: `IORING_OP_CONNECT`, the address kept in a side table until it completes.
//! - **Wake-ups**: a `read` of the waker's eventfd, always armed; **timers**: the wait's own
//!   timeout (`IORING_ENTER_EXT_ARG`). A poll that must not wait (a zero timeout: the worker
//!   has work left, or busy polling) enters the kernel only when something is queued or the
//!   ring flags task work (`IORING_SETUP_TASKRUN_FLAG`): with deferred task work a completion
//!   that arrived is such work until the ring's owner enters.
//!
//! # Buffer ownership (the rule, enforced here)
//!
//! Every piece of memory the kernel may read or write while an operation is in flight is
//! owned by this backend, never by the worker: the provided buffers and their ring (freed in
//! `Drop`, after the ring itself is gone), each stream's send buffer (kept in the `Stream`
//! until the send's last completion — for a zero-copy send, its notification — is reaped),
//! connect addresses (kept in `connecting` until the connect completes), the eventfd's read
//! target. A stream removed while operations are in flight has its receive (and connect)
//! cancelled and is parked in `retired` with its buffers; a send in flight is let finish
//! (for at most `RETIRE_GRACE`), so bytes accepted for sending are not cut off; the
//! descriptor closes only when the last completion arrives, so its number cannot be reused
//! under an operation still running. A received buffer (or, with incremental consumption,
//! the received piece of it) is out of the ring from its completion until it is given back:
//! no other reference to it exists meanwhile.
//!
//! Every `unsafe` block below argues its case against this rule.
//!
//! # Counting
//!
//! [`SyscallCounts`] counts system calls only: `waits` are `io_uring_enter` calls (one per
//! loop turn, submitting and waiting at once, and one more when a wait reaped only the
//! backend's own completions, such as a send all sent: the worker is not woken for those),
//! `other` the socket, socket option,
//! cancel-on-full and close calls. Receives and sends are operations inside the ring, not
//! system calls, so `reads` and `writes` stay 0.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use io_uring::{IoUring as Ring, cqueue, opcode, squeue, types};

use crate::backend::{Backend, Completion, SyscallCounts, Token, Waker};

mod bufs;
mod complete;

use bufs::{BufRing, IOU_PBUF_RING_INC, PLAIN_BUFFER_SIZE};

/// What a completion is for: the top 4 bits of its `user_data`.
const OP_RECV: u64 = 1;
const OP_SEND: u64 = 2;
const OP_CONNECT: u64 = 3;
const OP_ACCEPT: u64 = 4;
const OP_WAKE: u64 = 5;
const OP_CANCEL: u64 = 6;

/// Bits of `user_data`: op (4) | generation (28) | slot (32).
fn user_data(op: u64, slot: usize, generation: u32) -> u64 {
    (op << 60) | (u64::from(generation & 0x0FFF_FFFF) << 32) | (slot as u64 & 0xFFFF_FFFF)
}

fn decode(user_data: u64) -> (u64, usize, u32) {
    (user_data >> 60, (user_data & 0xFFFF_FFFF) as usize, ((user_data >> 32) & 0x0FFF_FFFF) as u32)
}

/// The most one send takes from the worker's queue; more waits for the next `Writable`.
const MAX_SEND: usize = 256 << 10;
/// Spare send buffers kept per worker (not per stream: an idle connection holds none), and
/// the largest capacity kept.
const SPARES: usize = 64;
const SPARE_CAPACITY: usize = 64 << 10;
/// The buffer group id of the worker's provided buffers.
const BGID: u16 = 0;
/// How long a removed stream's last send may take before it is cancelled.
const RETIRE_GRACE: Duration = Duration::from_secs(5);
/// How long to wait before accepting again after running out of descriptors or memory.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// Sizes of an io_uring backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UringConfig {
    /// Submission queue entries (the completion queue gets twice as many).
    pub entries: u32,
    /// Provided receive buffers in the ring (a power of two, at most 32768).
    pub buffers: u16,
    /// Size of each provided buffer: the most one receive completion carries. Where the
    /// kernel consumes buffers incrementally (Linux 6.12 and later) receives pack into a
    /// buffer one after another; before, each receive takes a whole buffer, and buffers
    /// larger than 16 KiB are cut into 16 KiB ones (as many as fit, up to 32768).
    pub buffer_size: usize,
    /// Sends of at least this many bytes use zero-copy `IORING_OP_SEND_ZC`; `None` (the
    /// default): never. Over loopback the kernel copies a zero-copy send anyway and pays for
    /// the pinning and the notification on top: measured, no size pays reliably there
    /// (3.8–6.9x the CPU up to 16 KiB, 0.7–1.6x at 64–256 KiB, 1.7x at 1 MiB;
    /// docs/benchmarks.md). Behind a network card it pays above some size, which
    /// `cargo run --release -p bidir-sys --example send_zc -- --peer HOST:PORT` measures.
    pub send_zc_threshold: Option<usize>,
}

impl Default for UringConfig {
    /// 4096 entries; 32 buffers of 64 KiB (2 MiB per worker, shared by all its
    /// connections), no zero-copy sends.
    fn default() -> Self {
        Self { entries: 4096, buffers: 32, buffer_size: 64 << 10, send_zc_threshold: None }
    }
}

/// A send in flight: its bytes, how many went out, the zero-copy notifications still to
/// come (the buffer is reused or freed only at 0). Boxed and pooled per worker, so a stream
/// with nothing in flight holds a pointer's worth of send state.
#[derive(Default)]
struct Sending {
    buf: Vec<u8>,
    sent: usize,
    notifs: u32,
}

impl Sending {
    /// `n` more bytes went out; whether some are still to go.
    fn advance(&mut self, n: usize) -> bool {
        self.sent += n;
        self.sent < self.buf.len()
    }

    /// All sent and no notification due: the kernel is done with the buffer.
    fn finished(&self) -> bool {
        self.sent >= self.buf.len() && self.notifs == 0
    }
}

/// One stream's state (24 bytes: every connection has one).
struct Stream {
    io: TcpStream,
    generation: u32,
    /// Operations submitted whose last completion is not reaped yet.
    in_flight: u32,
    /// A multishot receive is armed.
    receiving: bool,
    /// EOF or an error was reported: nothing more is reported for it.
    done: bool,
    /// The worker waits for `Writable` (a send found one in flight).
    wants_writable: bool,
    /// The send in flight; `None` when idle.
    send: Option<Box<Sending>>,
    /// A connect is in flight (its address is in `IoUring::connecting`).
    connecting: bool,
}

// Every connection has a `Stream`: keep it small.
const _: () = assert!(size_of::<Option<Stream>>() <= 24);

impl Stream {
    fn new(io: TcpStream, generation: u32) -> Self {
        Self {
            io,
            generation,
            in_flight: 0,
            receiving: false,
            done: false,
            wants_writable: false,
            send: None,
            connecting: false,
        }
    }
}

/// A listener and its multishot accept.
struct Listener {
    io: TcpListener,
    accepting: bool,
}

/// The io_uring backend. See the module documentation.
pub struct IoUring {
    // Field order is drop order: the ring goes first, so the kernel is done with every buffer
    // before the buffers are freed.
    ring: Ring,
    bufs: BufRing,
    listeners: Vec<Listener>,
    streams: Vec<Option<Stream>>,
    /// Removed streams with operations still in flight: slot, stream, when it was removed,
    /// whether everything of it was cancelled.
    retired: Vec<(usize, Stream, std::time::Instant, bool)>,
    next_generation: u32,
    waker: Arc<UringWaker>,
    /// The eventfd read's target.
    wake_buf: Box<u64>,
    waking: bool,
    counts: SyscallCounts,
    /// Receives ended by `ENOBUFS` so far.
    starved: u64,
    /// Listeners whose multishot accept ended: re-arm before the next wait.
    rearm_accept: bool,
    /// Accepting failed for lack of descriptors or memory: wait a little before re-arming.
    accept_backoff: bool,
    /// Streams whose multishot receive ended (the ring ran dry): re-arm before the next wait,
    /// once the batch's buffers are back.
    rearm_recv: Vec<usize>,
    /// The addresses of connects in flight (slot, generation), kept until their completion.
    #[allow(clippy::vec_box, reason = "the kernel holds the address: it must not move")]
    connecting: Vec<(usize, u32, Box<socket2::SockAddr>)>,
    /// Finished send states with their (emptied) buffers, for the next sends.
    #[allow(clippy::vec_box, reason = "moved into and out of streams as the Box they hold")]
    spares: Vec<Box<Sending>>,
    /// See [`UringConfig::send_zc_threshold`].
    send_zc_threshold: Option<usize>,
    /// Completions being handled, and buffers to give back after them (kept for reuse).
    batch: Vec<cqueue::Entry>,
    returned: Vec<u16>,
}

impl std::fmt::Debug for IoUring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoUring")
            .field("listeners", &self.listeners.len())
            .field("streams", &self.streams.iter().filter(|s| s.is_some()).count())
            .field("retired", &self.retired.len())
            .field("incremental_buffers", &self.bufs.inc)
            .finish_non_exhaustive()
    }
}

/// Why io_uring cannot be used here, or `Ok` when every feature the backend needs is there:
/// the ring flags, multishot accept and receive, provided-buffer rings, `connect`, the
/// extended wait argument.
///
/// # Errors
///
/// The first missing feature, as an error naming it.
pub fn probe() -> io::Result<()> {
    // On a thread of its own: tearing a ring down may leave task work (a notification that
    // interrupts a blocking system call with EINTR) on the thread that made it, and the
    // caller's thread is the application's.
    std::thread::Builder::new()
        .name("bidir-uring-probe".into())
        .spawn(probe_here)?
        .join()
        .map_err(|_| io::Error::other("the io_uring probe panicked"))?
}

fn probe_here() -> io::Result<()> {
    let ring = build_ring(8)?;
    if !ring.params().is_feature_ext_arg() {
        return Err(io::Error::new(io::ErrorKind::Unsupported, "no IORING_FEAT_EXT_ARG"));
    }
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    for (code, name) in [
        (opcode::AcceptMulti::CODE, "accept"),
        (opcode::RecvMulti::CODE, "recv"),
        (opcode::Send::CODE, "send"),
        (opcode::Connect::CODE, "connect"),
        (opcode::Read::CODE, "read"),
        (opcode::AsyncCancel2::CODE, "async cancel"),
    ] {
        if !probe.is_supported(code) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("io_uring has no {name} operation"),
            ));
        }
    }
    let bufs = BufRing::new(1, 64)?;
    // SAFETY: the ring memory stays valid until it is unregistered just below.
    unsafe { ring.submitter().register_buf_ring_with_flags(bufs.ring.as_ptr() as u64, 1, 1, 0) }?;
    ring.submitter().unregister_buf_ring(1)?;
    Ok(())
}

/// The send of the rest of `stream`'s send buffer, zero-copy from `zc_threshold` bytes on.
/// `MSG_WAITALL`: the kernel keeps sending (waiting for room) until all is out or the
/// connection fails, so a short completion is rare (a signal); the caller still handles one.
fn send_entry(stream: &Stream, slot: usize, zc_threshold: Option<usize>) -> Option<squeue::Entry> {
    let sending = stream.send.as_ref()?;
    let rest = &sending.buf[sending.sent.min(sending.buf.len())..];
    let fd = types::Fd(stream.io.as_raw_fd());
    let flags = libc::MSG_NOSIGNAL | libc::MSG_WAITALL;
    let entry = if zc_threshold.is_some_and(|at| rest.len() >= at) {
        opcode::SendZc::new(fd, rest.as_ptr(), rest.len() as u32).flags(flags).build()
    } else {
        opcode::Send::new(fd, rest.as_ptr(), rest.len() as u32).flags(flags).build()
    };
    Some(entry.user_data(user_data(OP_SEND, slot, stream.generation)))
}

/// Whether the kernel has `IORING_OP_SEND_ZC` (6.0 and later); without it a threshold is
/// ignored and every send copies.
fn has_send_zc(ring: &Ring) -> bool {
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe).is_ok() && probe.is_supported(opcode::SendZc::CODE)
}

/// A single-issuer ring with deferred task work, which flags pending task work in the
/// submission ring (so a poll that must not wait can tell, from memory, whether entering the
/// kernel would find anything); else cooperative task work with the same flag.
fn build_ring(entries: u32) -> io::Result<Ring> {
    let cq = entries.saturating_mul(2);
    Ring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag()
        .setup_cqsize(cq)
        .build(entries)
        .or_else(|_| {
            Ring::builder()
                .setup_coop_taskrun()
                .setup_taskrun_flag()
                .setup_cqsize(cq)
                .build(entries)
        })
}

impl IoUring {
    /// A backend with `config`'s sizes, woken through `waker` (made beforehand, so other
    /// threads can hold it before the backend exists). Must be created on the thread that
    /// will use it: the ring is single-issuer.
    ///
    /// # Errors
    ///
    /// What `io_uring_setup(2)` or registering the buffer ring report; see [`probe`].
    pub fn new(config: UringConfig, waker: Arc<UringWaker>) -> io::Result<Self> {
        let ring = build_ring(config.entries.max(64))?;
        let send_zc_threshold = config.send_zc_threshold.filter(|_| has_send_zc(&ring));
        let mut bufs = BufRing::new(config.buffers, config.buffer_size)?;
        match bufs.register(&ring, IOU_PBUF_RING_INC) {
            Ok(()) => bufs.inc = true,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                // Before Linux 6.12: whole buffers per receive, so cut them smaller (the same
                // memory in more buffers).
                if config.buffer_size > PLAIN_BUFFER_SIZE {
                    let pieces = config.buffer_size / PLAIN_BUFFER_SIZE;
                    let count = (usize::from(config.buffers) * pieces).min(32768);
                    let count = 1 << count.ilog2(); // a power of two
                    bufs = BufRing::new(count as u16, PLAIN_BUFFER_SIZE)?;
                }
                bufs.register(&ring, 0)?;
            }
            Err(e) => return Err(e),
        }
        Ok(Self {
            ring,
            bufs,
            listeners: Vec::new(),
            streams: Vec::new(),
            retired: Vec::new(),
            next_generation: 1,
            waker,
            wake_buf: Box::new(0),
            waking: false,
            counts: SyscallCounts::default(),
            starved: 0,
            rearm_accept: false,
            accept_backoff: false,
            rearm_recv: Vec::new(),
            connecting: Vec::new(),
            spares: Vec::new(),
            send_zc_threshold,
            batch: Vec::new(),
            returned: Vec::new(),
        })
    }

    /// Whether the kernel consumes the provided receive buffers incrementally (Linux 6.12
    /// and later; see [`UringConfig::buffer_size`]).
    pub fn incremental_buffers(&self) -> bool {
        self.bufs.inc
    }

    /// Queues a submission, making room by submitting what is queued if the queue is full.
    fn push(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: every entry's buffers and addresses are owned by this backend and kept
            // until the operation's last completion (the module's ownership rule).
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return;
            }
            self.counts.other += 1;
            if self.ring.submit().is_err() {
                // The kernel cannot take entries now; waiting for completions frees room.
                let _ = self.ring.submitter().squeue_wait();
            }
        }
    }

    fn arm_recv(&mut self, token: usize) {
        let Some(Some(stream)) = self.streams.get_mut(token) else { return };
        if stream.receiving || stream.done {
            return;
        }
        stream.receiving = true;
        stream.in_flight += 1;
        let entry = opcode::RecvMulti::new(types::Fd(stream.io.as_raw_fd()), BGID)
            .build()
            .user_data(user_data(OP_RECV, token, stream.generation));
        self.push(&entry);
    }

    fn arm_accept(&mut self, index: usize) {
        let Some(listener) = self.listeners.get_mut(index) else { return };
        if listener.accepting {
            return;
        }
        listener.accepting = true;
        let entry = opcode::AcceptMulti::new(types::Fd(listener.io.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(user_data(OP_ACCEPT, index, 0));
        self.push(&entry);
    }

    fn arm_wake(&mut self) {
        if self.waking {
            return;
        }
        self.waking = true;
        let ptr: *mut u64 = &mut *self.wake_buf;
        let entry = opcode::Read::new(types::Fd(self.waker.fd.as_raw_fd()), ptr.cast(), 8)
            .build()
            .user_data(user_data(OP_WAKE, 0, 0));
        self.push(&entry);
    }

    /// Whether `token` can take a send now: `Ok(false)` while a send or the connect is in
    /// flight (the worker hears `Writable` when it can); an error for an unknown or ended
    /// stream.
    fn can_send(&mut self, token: Token) -> io::Result<bool> {
        let Some(Some(stream)) = self.streams.get_mut(token.0) else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "unknown token"));
        };
        if stream.done {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        if stream.send.is_some() || stream.connecting {
            stream.wants_writable = true;
            return Ok(false);
        }
        Ok(true)
    }

    /// Makes `sending` the stream's send in flight and submits it; `more_queued`: the worker
    /// holds more and waits for `Writable`.
    fn start_send(&mut self, token: Token, sending: Box<Sending>, more_queued: bool) {
        let Some(Some(stream)) = self.streams.get_mut(token.0) else { return };
        stream.send = Some(sending);
        stream.wants_writable |= more_queued;
        self.submit_send(token.0);
    }

    /// Submits the rest of a stream's send buffer.
    fn submit_send(&mut self, token: usize) {
        let Some(Some(stream)) = self.streams.get_mut(token) else { return };
        let Some(entry) = send_entry(stream, token, self.send_zc_threshold) else { return };
        stream.in_flight += 1;
        self.push(&entry);
    }

    /// A removed stream's send completed with `n` bytes: if it was short, the rest goes out
    /// too (what was accepted for sending is not cut off), unless its grace ran out.
    fn continue_retired_send(&mut self, slot: usize, generation: u32, n: usize) {
        let Some((_, stream, _, cancelled)) =
            self.retired.iter_mut().find(|(s, r, ..)| *s == slot && r.generation == generation)
        else {
            return;
        };
        let Some(sending) = &mut stream.send else { return };
        if !sending.advance(n) || *cancelled {
            return;
        }
        let Some(entry) = send_entry(stream, slot, self.send_zc_threshold) else { return };
        stream.in_flight += 1;
        self.push(&entry);
    }

    /// Keeps a finished send's state and buffer for the next send of any stream (within
    /// limits: a large buffer is freed).
    fn recycle(&mut self, mut sending: Box<Sending>) {
        if self.spares.len() >= SPARES {
            return;
        }
        sending.buf.clear();
        if sending.buf.capacity() > SPARE_CAPACITY {
            sending.buf = Vec::new();
        }
        sending.sent = 0;
        sending.notifs = 0;
        self.spares.push(sending);
    }

    /// Registers a stream under `token` with a fresh generation.
    fn insert(&mut self, token: Token, io: TcpStream) -> io::Result<()> {
        if token.0 > u32::MAX as usize {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "token out of range"));
        }
        if self.streams.len() <= token.0 {
            self.streams.resize_with(token.0 + 1, || None);
        }
        let generation = self.next_generation;
        self.next_generation = (self.next_generation + 1) & 0x0FFF_FFFF;
        if self.streams[token.0].is_some() {
            self.remove_stream(token);
        }
        self.streams[token.0] = Some(Stream::new(io, generation));
        Ok(())
    }
}

impl Backend for IoUring {
    type Waker = UringWaker;
    type Stream = TcpStream;

    fn add_listener(&mut self, listener: TcpListener) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        crate::socket::configure_listener(&listener)?;
        self.listeners.push(Listener { io: listener, accepting: false });
        self.arm_accept(self.listeners.len() - 1);
        Ok(())
    }

    fn close_listeners(&mut self) {
        for listener in &self.listeners {
            let entry = opcode::AsyncCancel2::new(
                types::CancelBuilder::fd(types::Fd(listener.io.as_raw_fd())).all(),
            )
            .build()
            .user_data(user_data(OP_CANCEL, 0, 0));
            // SAFETY: a cancel request references no memory.
            let _ = unsafe { self.ring.submission().push(&entry) };
        }
        // The cancels go in before the descriptors close (an accept holds its own file
        // reference in the kernel, so closing is safe either way).
        let _ = self.ring.submit();
        // That reference keeps the socket listening after the close, until the kernel has
        // finished the cancelled accept (later still when the ring itself is torn down):
        // shutting the listeners down stops them listening now, so the port is free for a
        // successor once the worker stops.
        for listener in &self.listeners {
            crate::socket::stop_listening(&listener.io);
        }
        self.counts.other += 1 + 2 * self.listeners.len() as u64;
        self.listeners.clear();
    }

    fn add_stream(&mut self, token: Token, stream: TcpStream) -> io::Result<()> {
        // Its blocking mode stays as it is: the accept made it blocking, and the socket
        // operations used here (multishot receive, send) wait for readiness inside io_uring
        // whatever the descriptor's O_NONBLOCK says.
        self.insert(token, stream)?;
        self.arm_recv(token.0);
        Ok(())
    }

    fn connect(&mut self, token: Token, addr: SocketAddr) -> io::Result<()> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM.cloexec(),
            None,
        )?;
        socket.set_tcp_nodelay(true)?;
        self.counts.other += 1;
        self.insert(token, socket.into())?;
        let Some(Some(stream)) = self.streams.get_mut(token.0) else {
            return Err(io::Error::other("stream vanished"));
        };
        let to = Box::new(socket2::SockAddr::from(addr));
        let entry =
            opcode::Connect::new(types::Fd(stream.io.as_raw_fd()), to.as_ptr().cast(), to.len())
                .build()
                .user_data(user_data(OP_CONNECT, token.0, stream.generation));
        stream.connecting = true;
        self.connecting.push((token.0, stream.generation, to));
        stream.in_flight += 1;
        self.push(&entry);
        Ok(())
    }

    fn remove_stream(&mut self, token: Token) {
        let Some(slot) = self.streams.get_mut(token.0) else { return };
        let Some(stream) = slot.take() else { return };
        if stream.in_flight == 0 {
            self.counts.other += 1;
            return; // dropping it closes the descriptor
        }
        // Stop receiving and connecting now; a send in flight finishes (what was accepted for
        // sending is not cut off), for at most RETIRE_GRACE.
        let generation = stream.generation;
        let targets = [
            (stream.receiving, user_data(OP_RECV, token.0, generation)),
            (stream.connecting, user_data(OP_CONNECT, token.0, generation)),
        ];
        self.retired.push((token.0, stream, std::time::Instant::now(), false));
        for (active, target) in targets {
            if active {
                let entry = opcode::AsyncCancel::new(target)
                    .build()
                    .user_data(user_data(OP_CANCEL, token.0, generation));
                self.push(&entry);
            }
        }
    }

    fn send(&mut self, token: Token, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        if !self.can_send(token)? {
            return Ok(0);
        }
        let mut sending = self.spares.pop().unwrap_or_default();
        for slice in bufs {
            let room = MAX_SEND.saturating_sub(sending.buf.len());
            if room == 0 {
                break;
            }
            sending.buf.extend_from_slice(&slice[..slice.len().min(room)]);
        }
        let taken = sending.buf.len();
        if taken == 0 {
            self.spares.push(sending);
            return Ok(0);
        }
        let queued: usize = bufs.iter().map(|s| s.len()).sum();
        self.start_send(token, sending, taken < queued);
        Ok(taken)
    }

    fn send_owned(&mut self, token: Token, buf: &mut Vec<u8>) -> Option<io::Result<bool>> {
        if buf.len() > u32::MAX as usize {
            return None; // more than one send SQE carries: the copying path cuts it
        }
        match self.can_send(token) {
            Ok(true) => {}
            other => return Some(other),
        }
        if buf.is_empty() {
            return Some(Ok(true));
        }
        // The worker's buffer becomes the send buffer; it gets a spare in exchange.
        let mut sending = self.spares.pop().unwrap_or_default();
        std::mem::swap(&mut sending.buf, buf);
        self.start_send(token, sending, false);
        Some(Ok(true))
    }

    fn waker(&self) -> Arc<UringWaker> {
        Arc::clone(&self.waker)
    }

    fn poll<F: FnMut(Completion<'_>)>(
        &mut self,
        timeout: Option<Duration>,
        mut on: F,
    ) -> io::Result<()> {
        // A wait that reaped only the backend's own completions (a send all sent with no more
        // queued behind it, a cancel) has nothing for the worker: wait again rather than run a
        // loop turn for nothing. In a request-response exchange on one connection the reply's
        // send completes at once, so this keeps it to one worker turn per request.
        let deadline = timeout.filter(|t| !t.is_zero()).map(|t| std::time::Instant::now() + t);
        let mut timeout = timeout;
        loop {
            let mut reported = false;
            let waited = self.poll_once(timeout, |c| {
                reported = true;
                on(c);
            })?;
            if reported || !waited || timeout == Some(Duration::ZERO) {
                return Ok(());
            }
            let Some(deadline) = deadline else { continue };
            match deadline.checked_duration_since(std::time::Instant::now()) {
                Some(left) if !left.is_zero() => timeout = Some(left),
                _ => return Ok(()),
            }
        }
    }

    fn syscalls(&self) -> SyscallCounts {
        self.counts
    }

    fn starved_receives(&self) -> u64 {
        self.starved
    }
}

impl IoUring {
    /// Whether entering the kernel now without waiting would do nothing: no submission
    /// queued, no task work flagged (a receive that arrived is such work until the ring's
    /// owner enters), no completion held back by an overflow.
    fn nothing_pending(&mut self) -> bool {
        let sq = self.ring.submission();
        sq.is_empty() && !sq.taskrun() && !sq.cq_overflow()
    }

    /// One wait and the completions it reaped; `false` when it ended without a completion
    /// (the timeout, a signal), so there is no point waiting again.
    fn poll_once(
        &mut self,
        timeout: Option<Duration>,
        mut on: impl FnMut(Completion<'_>),
    ) -> io::Result<bool> {
        self.arm_wake();
        for token in std::mem::take(&mut self.rearm_recv) {
            self.arm_recv(token);
        }
        let mut timeout = timeout;
        if !self.retired.is_empty() {
            timeout = Some(timeout.map_or(RETIRE_GRACE, |t| t.min(RETIRE_GRACE)));
        }
        if self.accept_backoff {
            timeout = Some(timeout.map_or(ACCEPT_RETRY, |t| t.min(ACCEPT_RETRY)));
        } else if std::mem::take(&mut self.rearm_accept) {
            for i in 0..self.listeners.len() {
                self.arm_accept(i);
            }
        }
        let mut overdue = Vec::new();
        if !self.retired.is_empty() {
            let now = std::time::Instant::now();
            for (slot, stream, since, cancelled) in &mut self.retired {
                if !*cancelled && now.duration_since(*since) >= RETIRE_GRACE {
                    *cancelled = true;
                    overdue.push((*slot, stream.io.as_raw_fd(), stream.generation));
                }
            }
        }
        for (slot, fd, generation) in overdue {
            // A peer that reads nothing keeps a send pending forever: cancel it.
            let entry = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all())
                .build()
                .user_data(user_data(OP_CANCEL, slot, generation));
            self.push(&entry);
        }
        let ready = !self.ring.completion().is_empty();
        let no_wait = timeout == Some(Duration::ZERO);
        if no_wait && !ready && self.nothing_pending() {
            // A poll that must not wait, with nothing to submit and nothing for the kernel
            // to run or report: no system call (busy polling spins here, in memory).
            return Ok(false);
        }
        self.counts.waits += 1;
        let result = match timeout {
            // `submit` enters with GETEVENTS when the ring flags task work to run.
            _ if ready || no_wait => self.ring.submit(),
            Some(t) => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submit_and_wait(1),
        };
        let mut waited = match result {
            Ok(_) => true,
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => false,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => return Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => true, // CQ full: reap first
            Err(e) => return Err(e),
        };
        if std::mem::take(&mut self.accept_backoff) {
            self.rearm_accept = true; // waited: try again next turn
        }
        // Both vectors are kept between polls: no allocation per loop turn.
        let mut batch = std::mem::take(&mut self.batch);
        let mut returned = std::mem::take(&mut self.returned);
        let mut reaped = false;
        loop {
            batch.extend(self.ring.completion());
            if batch.is_empty() {
                break;
            }
            reaped = true;
            for cqe in batch.drain(..) {
                self.complete(&cqe, &mut on, &mut returned);
            }
            for bid in returned.drain(..) {
                self.bufs.give_back(bid);
            }
            self.bufs.publish();
        }
        self.batch = batch;
        self.returned = returned;
        waited &= reaped;
        Ok(waited)
    }
}

/// Wakes an [`IoUring`] from another thread: an eventfd the ring always has a read on.
#[derive(Debug)]
pub struct UringWaker {
    fd: OwnedFd,
}

impl UringWaker {
    /// A new eventfd.
    ///
    /// # Errors
    ///
    /// What `eventfd(2)` reports.
    pub fn new() -> io::Result<Self> {
        // Blocking: the ring's read on it waits for a write (a nonblocking one would complete
        // at once with EAGAIN).
        let fd = syscall!(eventfd(0, libc::EFD_CLOEXEC))?;
        // SAFETY: `eventfd` returned a new descriptor that nobody else owns.
        Ok(Self { fd: unsafe { OwnedFd::from_raw_fd(fd as RawFd) } })
    }
}

impl Waker for UringWaker {
    fn wake(&self) -> io::Result<()> {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd.
        match syscall!(write(self.fd.as_raw_fd(), (&raw const one).cast(), 8)) {
            Ok(_) => Ok(()),
            // The counter is saturated: a wake-up is pending anyway.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }
}
