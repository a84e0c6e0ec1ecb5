//! Raw TCP echo on io_uring: the floor under bidir's io_uring backend. Benchmark comparison
//! only (`bidir-load --raw`).
//!
//! No WebSocket: bytes go back as they arrive, with nothing parsed or framed. One thread, and
//! the operations bidir's io_uring backend uses (bidir-sys `src/uring/`), so that what bidir
//! costs over this server is what its WebSocket work and its engine cost:
//! - one multishot accept on the listener; TCP_NODELAY on each accepted socket;
//! - one multishot receive per connection into a provided-buffer ring shared by all
//!   connections (32 buffers of 64 KiB consumed incrementally, Linux 6.12 and later; before,
//!   whole 16 KiB buffers), each buffer given back after the batch of completions;
//! - one `send` (`MSG_NOSIGNAL | MSG_WAITALL`) in flight per connection, from a buffer of its
//!   own the received bytes are copied into; what arrives meanwhile gathers behind it and
//!   goes out in one send when it completes;
//! - one `io_uring_enter` per loop turn (submit and wait), the ring single-issuer with
//!   deferred task work.
//!
//! `FLOOR_MIN_WAIT_USEC=N` (an experiment, off by default; Linux 6.12 and later): an enter that
//! submits sends waits for one completion beyond them, returning after N microseconds with
//! whatever is there (`min_wait_usec`), so that one request-response costs one enter, not two
//! (issue 15 goal 2; in the 1 x 1 cell it did not pay: see `Server::enter`).
//! `FLOOR_WAIT_TIMEOUT` (any value): every wait carries a one-second timeout, as bidir's carry
//! its timers' next deadline.
//!
//! A connection closes (`close(2)`, as bidir drops its stream) once the peer has closed and
//! its last send has completed.

use std::alloc::{Layout, alloc_zeroed};
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{IoUring, cqueue, opcode, squeue, types};

const NAME: &str = "floor-echo";

/// What a completion is for: `user_data` is `op << 32 | descriptor`.
const OP_ACCEPT: u64 = 1;
const OP_RECV: u64 = 2;
const OP_SEND: u64 = 3;

/// Submission queue entries (the completion queue gets twice as many), as bidir's default.
const ENTRIES: u32 = 4096;
/// The provided buffers, as bidir's default `UringConfig`.
const BUFFERS: u16 = 32;
const BUFFER_SIZE: usize = 64 << 10;
/// Without incremental consumption, the buffers are cut to this size (as bidir does).
const PLAIN_BUFFER_SIZE: usize = 16 << 10;
const BGID: u16 = 0;
/// `IOU_PBUF_RING_INC` (Linux 6.12): receives pack into a buffer one after another.
const IOU_PBUF_RING_INC: u16 = 2;

/// The provided-buffer ring. Its memory lives as long as the process (the server runs until
/// it is killed), so the kernel can never write into freed memory.
struct Bufs {
    ring: *mut types::BufRingEntry,
    bufs: *mut u8,
    count: u16,
    size: usize,
    /// Our copy of the tail: entries offered so far.
    tail: u16,
    /// Incremental consumption is on.
    inc: bool,
    /// Per buffer, with `inc`: the bytes of it already received.
    offsets: Vec<u32>,
}

impl Bufs {
    /// `count` buffers of `size` bytes, all offered, registered with `ring` (incrementally
    /// consumed with `flags` = `IOU_PBUF_RING_INC`).
    fn register(ring: &IoUring, count: u16, size: usize, flags: u16) -> io::Result<Self> {
        let ring_layout =
            Layout::from_size_align(usize::from(count) * size_of::<types::BufRingEntry>(), 4096)
                .map_err(io::Error::other)?;
        let bufs_layout =
            Layout::from_size_align(usize::from(count) * size, 64).map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size; the memory is never freed.
        let (entries, bufs) = unsafe { (alloc_zeroed(ring_layout), alloc_zeroed(bufs_layout)) };
        if entries.is_null() || bufs.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut this = Self {
            ring: entries.cast(),
            bufs,
            count,
            size,
            tail: 0,
            inc: flags & IOU_PBUF_RING_INC != 0,
            offsets: vec![0; usize::from(count)],
        };
        for bid in 0..count {
            this.offer(bid);
        }
        this.publish();
        // SAFETY: the entries stay allocated for the life of the process.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(this.ring as u64, count, BGID, flags)?;
        }
        Ok(this)
    }

    /// Writes buffer `bid` into the ring at our tail (visible to the kernel at `publish`).
    fn offer(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.count - 1));
        // SAFETY: `index < count`: the entry lies in the ring, past the published tail, so
        // the kernel does not read it now.
        let entry = unsafe { &mut *self.ring.add(index) };
        // SAFETY: `bid < count`: the buffer lies in the allocation.
        let addr = unsafe { self.bufs.add(usize::from(bid) * self.size) };
        entry.set_addr(addr as u64);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail overlays the first entry's reserved field, a u16 only we write;
        // the release store orders the entries before it.
        let tail = unsafe { &*types::BufRingEntry::tail(self.ring).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// Where a completion's `len` bytes in buffer `bid` start, and whether the kernel is
    /// done with the buffer.
    fn consume(&mut self, bid: u16, len: usize, flags: u32) -> (usize, bool) {
        if !self.inc {
            return (0, true);
        }
        let offset = &mut self.offsets[usize::from(bid)];
        let at = *offset as usize;
        if cqueue::buffer_more(flags) {
            *offset = (at + len).min(self.size) as u32;
            (at, false)
        } else {
            *offset = 0;
            (at, true)
        }
    }

    /// The `len` bytes received into buffer `bid` from `offset` on.
    ///
    /// # Safety
    ///
    /// A completion named `bid` with these bytes, and the buffer was not given back since.
    unsafe fn filled(&self, bid: u16, offset: usize, len: usize) -> &[u8] {
        assert!(bid < self.count && offset + len <= self.size);
        // SAFETY: inside buffer `bid`; the kernel is done with this range (the contract).
        unsafe {
            std::slice::from_raw_parts(self.bufs.add(usize::from(bid) * self.size + offset), len)
        }
    }
}

/// One connection.
#[derive(Default)]
struct Conn {
    fd: Option<OwnedFd>,
    /// A multishot receive is armed.
    receiving: bool,
    /// The peer closed or the connection failed: nothing more is echoed.
    done: bool,
    /// The send in flight (`sending[sent..]` still to go); `in_send` while it is.
    sending: Vec<u8>,
    sent: usize,
    in_send: bool,
    /// Bytes received while a send was in flight: the next send.
    pending: Vec<u8>,
}

struct Server {
    ring: IoUring,
    bufs: Bufs,
    listener: TcpListener,
    accepting: bool,
    /// By descriptor.
    conns: Vec<Conn>,
    /// Receives ended while data flowed (the buffers ran dry): re-armed before the next wait.
    rearm: Vec<usize>,
    returned: Vec<u16>,
    /// Sends pushed since the last `io_uring_enter`.
    sends: u32,
    /// `FLOOR_MIN_WAIT_USEC`: with sends to submit, wait for one completion beyond them
    /// (returning after this many microseconds with whatever is there); 0: off.
    min_wait_usec: u32,
    /// `FLOOR_WAIT_TIMEOUT`: every wait gets a one-second timeout, as bidir's waits get its
    /// timers' next deadline (so the kernel arms a timer for each sleep).
    timed: bool,
}

impl Server {
    fn push(&mut self, entry: &squeue::Entry) {
        // SAFETY: every buffer an entry points at (the buffer ring, a connection's `sending`)
        // stays put until the operation's completion: `sending` is not touched while
        // `in_send`, and connections are never dropped while an operation is in flight.
        while unsafe { self.ring.submission().push(entry) }.is_err() {
            if self.ring.submit().is_err() {
                let _ = self.ring.submitter().squeue_wait();
            }
        }
    }

    fn arm_accept(&mut self) {
        if self.accepting {
            return;
        }
        self.accepting = true;
        let entry = opcode::AcceptMulti::new(types::Fd(self.listener.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(OP_ACCEPT << 32);
        self.push(&entry);
    }

    fn arm_recv(&mut self, fd: usize) {
        let conn = &mut self.conns[fd];
        let Some(io) = &conn.fd else { return };
        if conn.receiving || conn.done {
            return;
        }
        conn.receiving = true;
        let entry = opcode::RecvMulti::new(types::Fd(io.as_raw_fd()), BGID)
            .build()
            .user_data(OP_RECV << 32 | fd as u64);
        self.push(&entry);
    }

    fn submit_send(&mut self, fd: usize) {
        let conn = &mut self.conns[fd];
        let Some(io) = &conn.fd else { return };
        let rest = &conn.sending[conn.sent..];
        let entry = opcode::Send::new(types::Fd(io.as_raw_fd()), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL | libc::MSG_WAITALL)
            .build()
            .user_data(OP_SEND << 32 | fd as u64);
        conn.in_send = true;
        self.sends += 1;
        self.push(&entry);
    }

    /// Closes a connection once nothing of it is in flight.
    fn maybe_close(&mut self, fd: usize) {
        let conn = &mut self.conns[fd];
        if conn.done && !conn.receiving && !conn.in_send {
            conn.fd = None;
            conn.pending.clear();
        }
    }

    fn on_accept(&mut self, result: i32, more: bool) {
        if !more {
            self.accepting = false;
        }
        if result < 0 {
            return;
        }
        // SAFETY: a successful accept completion carries a new descriptor nobody else owns.
        let io = unsafe { OwnedFd::from_raw_fd(result) };
        let on = 1i32;
        // SAFETY: `on` is a valid int for TCP_NODELAY.
        unsafe {
            libc::setsockopt(
                io.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&on as *const i32).cast(),
                size_of::<i32>() as libc::socklen_t,
            );
        }
        let fd = result as usize;
        if self.conns.len() <= fd {
            self.conns.resize_with(fd + 1, Conn::default);
        }
        let conn = &mut self.conns[fd];
        *conn = Conn { sending: std::mem::take(&mut conn.sending), ..Conn::default() };
        conn.fd = Some(io);
        self.arm_recv(fd);
    }

    fn on_recv(&mut self, fd: usize, result: i32, flags: u32) {
        let more = cqueue::more(flags);
        let piece = cqueue::buffer_select(flags).filter(|&bid| bid < self.bufs.count).map(|bid| {
            let (offset, finished) = self.bufs.consume(bid, result.max(0) as usize, flags);
            if finished {
                self.returned.push(bid);
            }
            (bid, offset)
        });
        let conn = &mut self.conns[fd];
        if !more {
            conn.receiving = false;
        }
        match result {
            n if n > 0 => {
                if let Some((bid, offset)) = piece
                    && !conn.done
                {
                    // SAFETY: this completion named the buffer and these bytes; it goes back
                    // to the ring only after the batch.
                    let data = unsafe { self.bufs.filled(bid, offset, n as usize) };
                    if conn.in_send {
                        conn.pending.extend_from_slice(data);
                    } else {
                        conn.sending.clear();
                        conn.sending.extend_from_slice(data);
                        conn.sent = 0;
                        self.submit_send(fd);
                    }
                }
                if !more {
                    self.rearm.push(fd);
                }
            }
            e if -e == libc::ENOBUFS => self.rearm.push(fd),
            _ => conn.done = true, // end of stream or an error
        }
        self.maybe_close(fd);
    }

    fn on_send(&mut self, fd: usize, result: i32) {
        let conn = &mut self.conns[fd];
        conn.in_send = false;
        if result < 0 {
            conn.done = true;
        } else {
            conn.sent += result as usize;
            if conn.sent < conn.sending.len() {
                return self.submit_send(fd); // a short send: the rest, in order
            }
            if !conn.pending.is_empty() && !conn.done {
                std::mem::swap(&mut conn.sending, &mut conn.pending);
                conn.pending.clear();
                conn.sent = 0;
                return self.submit_send(fd);
            }
        }
        self.maybe_close(fd);
    }

    /// Submits and waits. A send usually completes inline, in the enter that submits it, so
    /// waiting for one completion returns at once with the send's, and a second enter sleeps
    /// until the next request. With `min_wait_usec`, one enter waits for one completion
    /// beyond the sends; should a send not complete inline, the kernel returns once
    /// `min_wait_usec` passed with any completion at all (the one-second timeout only makes
    /// the kernel treat `min_wait_usec` as a minimum rather than the whole wait).
    ///
    /// Measured in the 1 x 1 cell (alternating rounds, medians): enters per message 1.75 ->
    /// 0.87, but server CPU per message 0.98x-1.19x and p50 1.04x-1.14x against plain waits,
    /// and still 1.035x / 1.034x against waits that all carry a timeout (`FLOOR_WAIT_TIMEOUT`,
    /// as bidir's do): the enter saved is one that returned at once (cheap); the sleep and the
    /// wake-up, the real cost, stay. Hence off by default, and not in bidir's backend.
    fn enter(&mut self) -> io::Result<usize> {
        let sends = std::mem::take(&mut self.sends);
        let timeout = types::Timespec::new().sec(1);
        let args = types::SubmitArgs::new().timespec(&timeout);
        if self.min_wait_usec == 0 || sends == 0 {
            if self.timed {
                return self.ring.submitter().submit_with_args(1, &args);
            }
            return self.ring.submit_and_wait(1);
        }
        let args = args.min_wait_usec(self.min_wait_usec);
        self.ring.submitter().submit_with_args(1 + sends as usize, &args)
    }

    fn run(&mut self) -> io::Result<()> {
        let mut batch = Vec::new();
        loop {
            self.arm_accept();
            for fd in std::mem::take(&mut self.rearm) {
                self.arm_recv(fd);
            }
            match self.enter() {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::EBUSY | libc::ETIME)
                    ) => {}
                Err(e) => return Err(e),
            }
            loop {
                batch.extend(self.ring.completion());
                if batch.is_empty() {
                    break;
                }
                for cqe in batch.drain(..) {
                    let cqe: cqueue::Entry = cqe;
                    let (op, fd) =
                        (cqe.user_data() >> 32, (cqe.user_data() & 0xFFFF_FFFF) as usize);
                    match op {
                        OP_ACCEPT => self.on_accept(cqe.result(), cqueue::more(cqe.flags())),
                        OP_RECV => self.on_recv(fd, cqe.result(), cqe.flags()),
                        OP_SEND => self.on_send(fd, cqe.result()),
                        _ => {}
                    }
                }
                for bid in self.returned.drain(..) {
                    self.bufs.offer(bid);
                }
                self.bufs.publish();
            }
        }
    }
}

fn main() {
    let addr = bidir_bench_peers::startup(NAME);
    let fail = |what: &str, e: io::Error| -> ! {
        eprintln!("{NAME}: {what}: {e}");
        std::process::exit(1);
    };
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(ENTRIES * 2)
        .build(ENTRIES)
        .unwrap_or_else(|e| fail("io_uring_setup", e));
    let bufs = Bufs::register(&ring, BUFFERS, BUFFER_SIZE, IOU_PBUF_RING_INC)
        .or_else(|_| {
            let count = (usize::from(BUFFERS) * BUFFER_SIZE / PLAIN_BUFFER_SIZE) as u16;
            Bufs::register(&ring, count, PLAIN_BUFFER_SIZE, 0)
        })
        .unwrap_or_else(|e| fail("the provided-buffer ring", e));
    let min_wait_usec = std::env::var("FLOOR_MIN_WAIT_USEC")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|_| ring.params().is_feature_min_timeout())
        .unwrap_or(0);
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| fail(&format!("bind {addr}"), e));
    eprintln!(
        "{NAME}: listening on tcp://{addr} (raw echo), incremental buffers: {}, min wait: {min_wait_usec} us",
        bufs.inc
    );
    let mut server = Server {
        ring,
        bufs,
        listener,
        accepting: false,
        conns: Vec::new(),
        rearm: Vec::new(),
        returned: Vec::new(),
        sends: 0,
        min_wait_usec,
        timed: std::env::var_os("FLOOR_WAIT_TIMEOUT").is_some(),
    };
    if let Err(e) = server.run() {
        fail("io_uring_enter", e);
    }
}
