//! The per-core worker: one thread, one backend, a slab of connections, a timer wheel, a
//! mailbox and a subscription table. Nothing here is shared with other workers except the
//! mailboxes; a connection never leaves its worker.
//!
//! # One loop turn
//!
//! 1. Wait in the backend (until I/O, a wake-up, or the next timer tick).
//! 2. Read the clock once; handle each completion: accept, handshake, deframe and call the
//!    handler, note writability and EOF.
//! 3. Register accepted streams; drain the mailbox (cross-thread sends, closes, publishes,
//!    stats, shutdown); deliver this worker's own publishes; fire due timers.
//! 4. Flush: every connection with queued frames gets one gathered write.
//! 5. Retire closed connections (close their sockets, free their slots).

use std::io::IoSlice;
use std::net::{SocketAddr, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant as WallClock};

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use slab::Slab;

use bidir_protocol::deflate::{self, Codec, DeflateConfig, DeflateParams};
use bidir_protocol::frame::{FrameHeader, FrameRepr, Rsv};
use bidir_protocol::http::{self, Accept as HttpAccept, HandshakeError, StatusCode};
use bidir_protocol::{
    CloseCode, Config as ProtocolConfig, Connection, DataKind, Error, Event, FrameKind, Input,
    Instant, Message, Role, State,
};
use bidir_sys::{Backend, Completion, SendOutcome, Token};

use crate::SendError;
use crate::client::ConnectError;
use crate::client::engine::PendingConnect;
use crate::client::handshake::Handshake;
use crate::config::{Backpressure, ServerConfig};
use crate::handle::{Command, ConnHandle, ConnId, ConnShared, Mailbox};
use crate::handler::{CloseInfo, Context, Handler, Payload};
use crate::metrics::{self, Counters, WorkerStats};
use crate::outq::{MAX_IOV, OutQueue, Pool, SHARE_THRESHOLD};
use crate::peers::{Admission, PeerLimits};
use crate::pubsub::Topics;
use crate::route::{Accepted, Request, Route, Router, WsHook};
use crate::timer::Wheel;

/// Server-wide state every worker reads.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) protocol: Arc<ProtocolConfig>,
    pub(crate) router: Router,
    pub(crate) mailboxes: Vec<Arc<Mailbox>>,
    /// Open connections per worker, for [`ServerHandle::connections`](crate::ServerHandle).
    pub(crate) open: Vec<AtomicU64>,
    /// Set when a shutdown starts: publishes and sends are refused from then on.
    pub(crate) stopping: AtomicBool,
    /// The per-peer counts, when a per-peer limit is on.
    pub(crate) peers: Option<PeerLimits>,
}

/// Per-connection state the [`Context`] reaches; the protocol state and handler live in
/// [`Phase::Open`].
pub(crate) struct Meta {
    pub(crate) id: ConnId,
    pub(crate) peer: SocketAddr,
    pub(crate) out: OutQueue,
    /// The upgrade request's target, then `\n` and the chosen subprotocol if there is one
    /// (one allocation for both; a target never contains a line break).
    pub(crate) request: Box<str>,
    /// Topic ids this connection subscribed to on this worker.
    pub(crate) topics: Vec<u32>,
    pub(crate) handle: Option<Arc<ConnShared>>,
    /// The handler asked to drop the connection.
    pub(crate) abort: bool,
    /// Listed in the worker's dirty list.
    dirty: bool,
    /// A write was cut short: wait for writability before writing again.
    blocked: bool,
    /// The queue reached the drain threshold since the last `on_drain`.
    above_drain: bool,
    /// `on_close` was called.
    close_reported: bool,
    /// The handler panicked: it is not called again.
    poisoned: bool,
    /// Retired: the socket closes after this turn.
    retired: bool,
    /// Counted in [`Shared::peers`]: released when the slot retires.
    peer_held: bool,
    /// permessage-deflate with no zlib state kept between messages (no context takeover, or
    /// compact context): the worker's codec is lent to this connection around each call
    /// instead of the connection owning one.
    shares_codec: bool,
    /// The wheel tick this slot is scheduled for, or `NO_TICK`.
    timer_tick: u64,
    /// The handler's timer ([`Context::set_timer`]), in worker nanoseconds, or `u64::MAX`.
    pub(crate) user_timer: u64,
}

const NO_TICK: u64 = u64::MAX;

impl Meta {
    /// A fresh slot's state: nothing queued, no target yet, scheduled at `timer_tick`.
    fn new(id: ConnId, peer: SocketAddr, timer_tick: u64) -> Self {
        Self {
            id,
            peer,
            out: OutQueue::default(),
            request: Box::from(""),
            topics: Vec::new(),
            handle: None,
            abort: false,
            dirty: false,
            blocked: false,
            above_drain: false,
            close_reported: false,
            poisoned: false,
            retired: false,
            peer_held: false,
            shares_codec: false,
            timer_tick,
            user_timer: u64::MAX,
        }
    }
}

// Most of a slot's life is `Open`: boxing it would add an allocation per connection to save
// memory only during the handshake.
#[allow(clippy::large_enum_variant)]
enum Phase {
    /// Waiting for the HTTP upgrade request.
    Handshake { buf: Vec<u8>, deadline: u64 },
    /// A client connection: connecting (`connected` false), then waiting for the server's
    /// answer to the request queued in `out`.
    Connecting(Box<Connecting>),
    /// A WebSocket connection.
    Open { conn: Connection, handler: Box<dyn Handler>, spill: Vec<u8> },
    /// Done; flushing what is queued (an HTTP answer, a close reply) until `deadline`.
    Linger { deadline: u64 },
    /// Retired; the socket closes and the slot frees after this turn.
    Dead,
}

struct Slot {
    meta: Meta,
    phase: Phase,
}

struct Connecting {
    handshake: Handshake,
    handler: Box<dyn Handler>,
    /// The answer so far.
    buf: Vec<u8>,
    connected: bool,
    deadline: u64,
    handshake_timeout: Duration,
}

/// The worker's state the handler's [`Context`] may use.
pub(crate) struct WorkerCx {
    pub(crate) index: u16,
    pub(crate) shared: Arc<Shared>,
    pub(crate) pool: Pool,
    pub(crate) topics: Topics,
    pub(crate) now: Instant,
    base: WallClock,
    dirty: Vec<usize>,
    scratch: Vec<u8>,
    /// Publishes made by handlers of this worker, delivered after the handler returns.
    local_publishes: Vec<(Arc<str>, DataKind, Bytes)>,
    /// The worker's permessage-deflate codecs, one per (level, memory level) in use, lent to
    /// connections that keep no zlib state of their own; a lent one is out of the list.
    #[allow(clippy::vec_box, reason = "lent to connections as the Box they hold")]
    codecs: Vec<Box<Codec>>,
    /// The worker's receive scratch, lent as a connection's spill buffer while it has none,
    /// so that messages gathered or decompressed within one read need no allocation.
    spill: Vec<u8>,
    /// Slots retired this turn, to close after it.
    retire: Vec<usize>,
    counters: Counters,
    handler_ns: Histogram<u64>,
    turn_ns: Histogram<u64>,
    timing: bool,
}

pub(crate) struct Worker<B: Backend> {
    backend: B,
    slots: Slab<Slot>,
    cx: WorkerCx,
    wheel: Wheel,
    mailbox: Arc<Mailbox>,
    commands: Vec<Command>,
    to_add: Vec<(usize, TcpStream)>,
    to_remove: Vec<usize>,
    next_generation: u32,
    max_slots: usize,
    shutdown: Option<u64>,
    listeners_open: bool,
}

impl<B: Backend> Worker<B> {
    pub(crate) fn new(index: usize, backend: B, shared: Arc<Shared>) -> Self {
        let config = &shared.config;
        let workers = shared.mailboxes.len().max(1);
        let max_slots = config.max_connections.div_ceil(workers);
        let mailbox = Arc::clone(&shared.mailboxes[index]);
        let wheel = Wheel::new(config.timer_tick);
        let timing = config.handler_timing;
        Self {
            backend,
            slots: Slab::new(),
            cx: WorkerCx {
                index: index as u16,
                shared,
                pool: Pool::default(),
                topics: Topics::default(),
                now: Instant::ZERO,
                base: WallClock::now(),
                dirty: Vec::new(),
                scratch: Vec::new(),
                local_publishes: Vec::new(),
                codecs: Vec::new(),
                spill: Vec::new(),
                retire: Vec::new(),
                counters: Counters::default(),
                handler_ns: metrics::histogram(),
                turn_ns: metrics::histogram(),
                timing,
            },
            wheel,
            mailbox,
            commands: Vec::new(),
            to_add: Vec::new(),
            to_remove: Vec::new(),
            next_generation: 0,
            max_slots,
            shutdown: None,
            listeners_open: true,
        }
    }

    /// Runs until shut down and every connection is gone.
    pub(crate) fn run(mut self) {
        loop {
            let timeout = self.poll_timeout();
            let mut woken = false;
            let mut clock_read = false;
            let Self {
                backend,
                slots,
                cx,
                wheel,
                to_add,
                next_generation,
                max_slots,
                shutdown,
                ..
            } = &mut self;
            let result = backend.poll(timeout, |completion| {
                if !clock_read {
                    cx.now = cx.read_clock();
                    clock_read = true;
                }
                match completion {
                    Completion::Accepted { stream, peer } => {
                        accept(
                            slots,
                            cx,
                            wheel,
                            to_add,
                            next_generation,
                            *max_slots,
                            shutdown.is_some(),
                            stream,
                            peer,
                        );
                    }
                    Completion::Received { token, data } => {
                        cx.counters.bytes_in += data.len() as u64;
                        on_received(slots, cx, wheel, token.0, data);
                    }
                    Completion::Writable { token } => {
                        if let Some(slot) = slots.get_mut(token.0) {
                            slot.meta.blocked = false;
                            cx.mark_dirty(&mut slot.meta);
                        }
                    }
                    Completion::Sent { token, len } => {
                        if let Some(slot) = slots.get_mut(token.0) {
                            cx.counters.bytes_out += len as u64;
                            slot.meta.out.consume(&mut cx.pool, len);
                            slot.meta.blocked = false;
                            cx.mark_dirty(&mut slot.meta);
                        }
                    }
                    Completion::Closed { token, error } => {
                        on_closed(slots, cx, wheel, token.0, error);
                    }
                    Completion::Connected { token, error } => {
                        on_connected(slots, cx, wheel, token.0, error);
                    }
                    Completion::Woken => woken = true,
                    _ => {}
                }
            });
            if let Err(e) = result {
                // The backend cannot wait any more: nothing sensible is left to do.
                panic!("worker {} backend failed: {e}", self.cx.index);
            }
            let turn_start = if clock_read {
                self.cx.now
            } else {
                self.cx.now = self.cx.read_clock();
                self.cx.now
            };
            self.cx.counters.turns += 1;

            for (key, stream) in std::mem::take(&mut self.to_add) {
                if let Err(_e) = self.backend.add_stream(Token(key), stream) {
                    self.kill(key);
                }
            }
            if woken {
                self.drain_mailbox();
            }
            self.deliver_local_publishes();
            self.fire_timers();
            if let Some(deadline) = self.shutdown {
                if self.listeners_open {
                    self.backend.close_listeners();
                    self.listeners_open = false;
                }
                if self.cx.now.as_nanos() >= deadline {
                    self.abandon_all();
                }
            }
            self.flush();
            self.to_remove.append(&mut self.cx.retire);
            for key in std::mem::take(&mut self.to_remove) {
                self.backend.remove_stream(Token(key));
                self.slots.remove(key);
            }
            self.publish_open_count();
            if self.cx.timing {
                let end = self.cx.read_clock();
                let busy = end.as_nanos().saturating_sub(turn_start.as_nanos()).max(1);
                let _ = self.cx.turn_ns.record(busy);
                self.cx.now = end;
            }
            if self.shutdown.is_some() && self.slots.is_empty() {
                return;
            }
        }
    }

    /// How long the next wait may last. Uses the clock as last read (at the end of the turn
    /// with timing on, else at its start): timers are coarse, and a wait that ends a turn's
    /// length late costs nothing.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.cx.dirty.is_empty() || !self.cx.local_publishes.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = self.cx.now.as_nanos();
        let wheel = self.wheel.timeout(now);
        match self.shutdown {
            Some(deadline) => {
                let left = Duration::from_nanos(deadline.saturating_sub(now));
                Some(wheel.map_or(left, |w| w.min(left)))
            }
            None => wheel,
        }
    }

    fn publish_open_count(&self) {
        let open = self.cx.counters.open;
        self.cx.shared.open[usize::from(self.cx.index)].store(open, Ordering::Relaxed);
    }

    fn drain_mailbox(&mut self) {
        let mut commands = std::mem::take(&mut self.commands);
        self.mailbox.drain(&mut commands);
        for command in commands.drain(..) {
            match command {
                Command::Send { id, kind, payload } => {
                    let len = payload.len();
                    let delivered = self.with_open(id, |conn, meta, cx| {
                        let payload = Payload::Shared(payload);
                        let sent =
                            cx.send_payload(conn, meta, FrameKind::Message(kind), payload, true);
                        // Count the bytes in the queue before taking them out of the mailbox:
                        // a handle's `buffered_amount` may read high for a moment, never low.
                        if let Some(handle) = &meta.handle {
                            handle.queued.store(meta.out.len(), Ordering::Relaxed);
                            handle.in_mailbox.fetch_sub(len, Ordering::Relaxed);
                        }
                        sent.is_ok()
                    });
                    if delivered != Some(true) {
                        self.cx.counters.dropped_sends += 1;
                    }
                }
                Command::Close { id, code, reason } => {
                    let now = self.cx.now;
                    self.with_open(id, |conn, meta, cx| {
                        let _ =
                            cx.control(conn, meta, |conn, out| conn.close(now, code, &reason, out));
                    });
                }
                Command::Publish { topic, kind, payload } => self.deliver(&topic, kind, &payload),
                Command::Connect(pending) => self.start_connect(*pending),
                Command::Stats(reply) => {
                    let mut counters = self.cx.counters.clone();
                    counters.syscalls = self.backend.syscalls();
                    counters.starved_receives = self.backend.starved_receives();
                    let _ = reply.send(WorkerStats {
                        counters,
                        handler_ns: self.cx.handler_ns.clone(),
                        turn_ns: self.cx.turn_ns.clone(),
                    });
                }
                Command::Shutdown { deadline } => self.begin_shutdown(deadline),
            }
        }
        self.commands = commands;
    }

    /// Opens a client connection: a slot in [`Phase::Connecting`] with the request queued
    /// (held back until the connect completes).
    fn start_connect(&mut self, pending: PendingConnect) {
        let PendingConnect {
            addr,
            handshake,
            request,
            mut handler,
            target,
            connect_timeout,
            handshake_timeout,
        } = pending;
        let refusal = if self.shutdown.is_some() {
            Some(ConnectError::ShuttingDown)
        } else if self.slots.len() >= self.max_slots {
            Some(ConnectError::TooManyConnections)
        } else {
            None
        };
        if let Some(error) = refusal {
            self.cx.counters.connect_failed += 1;
            connect_failed(handler.as_mut(), error);
            return;
        }
        let key = self.slots.vacant_key();
        if let Err(e) = self.backend.connect(Token(key), addr) {
            self.cx.counters.connect_failed += 1;
            connect_failed(handler.as_mut(), ConnectError::from(e));
            return;
        }
        self.next_generation = self.next_generation.wrapping_add(1);
        let deadline = (self.cx.now + connect_timeout).as_nanos();
        let tick = self.wheel.insert(key, deadline);
        let id =
            ConnId { worker: self.cx.index, slot: key as u32, generation: self.next_generation };
        let mut meta = Meta::new(id, addr, tick);
        meta.out.push_copy(&mut self.cx.pool, &request);
        meta.request = target.into_boxed_str();
        meta.blocked = true; // until the connect completes
        let handler: Box<dyn Handler> = handler;
        let inserted = self.slots.insert(Slot {
            meta,
            phase: Phase::Connecting(Box::new(Connecting {
                handshake,
                handler,
                buf: Vec::new(),
                connected: false,
                deadline,
                handshake_timeout,
            })),
        });
        debug_assert_eq!(inserted, key);
    }

    /// Runs `f` on an open connection named by `id`, then settles it; `None` if it is gone.
    fn with_open<R>(
        &mut self,
        id: ConnId,
        f: impl FnOnce(&mut Connection, &mut Meta, &mut WorkerCx) -> R,
    ) -> Option<R> {
        let key = id.slot as usize;
        let slot = self.slots.get_mut(key)?;
        if slot.meta.id != id {
            return None;
        }
        let Phase::Open { conn, .. } = &mut slot.phase else { return None };
        self.cx.lend_codec(conn, &slot.meta);
        let r = f(conn, &mut slot.meta, &mut self.cx);
        self.cx.return_codec(conn, &slot.meta);
        settle(&mut self.slots, &mut self.cx, &mut self.wheel, key);
        Some(r)
    }

    fn deliver_local_publishes(&mut self) {
        for (topic, kind, frame) in std::mem::take(&mut self.cx.local_publishes) {
            self.deliver(&topic, kind, &frame);
        }
    }

    /// Queues a message for every subscriber of `topic` on this worker. The frame is encoded
    /// once, and compressed at most once per window size, for the subscribers that may get a
    /// standalone compressed message ([`Connection::broadcast_window`]: no context, or compact
    /// context, which is then told with [`Connection::broadcast_sent`]).
    fn deliver(&mut self, topic: &str, kind: DataKind, payload: &Bytes) {
        let members: Vec<usize> = self.cx.topics.members(topic).collect();
        let mut plain: Option<Bytes> = None;
        // Per window size: not tried yet, or the compressed frame (`None`: no smaller).
        let mut compressed: [Option<Option<Bytes>>; 7] = Default::default();
        for key in members {
            let Some(slot) = self.slots.get_mut(key) else { continue };
            let Phase::Open { conn, .. } = &mut slot.phase else { continue };
            if conn.role() == Role::Client {
                // Client frames are masked per connection: no shared encoding.
                let kind = FrameKind::Message(kind);
                let payload = Payload::Shared(payload.clone());
                if self.cx.send_payload(conn, &mut slot.meta, kind, payload, true).is_err() {
                    self.cx.counters.dropped_sends += 1;
                }
                settle(&mut self.slots, &mut self.cx, &mut self.wheel, key);
                continue;
            }
            let standalone = conn.broadcast_window(payload.len()).and_then(|bits| {
                compressed[usize::from(bits.clamp(9, 15) - 9)]
                    .get_or_insert_with(|| self.cx.compressed_frame(kind, payload, bits))
                    .clone()
            });
            let is_compressed = standalone.is_some();
            let frame = standalone.unwrap_or_else(|| {
                plain.get_or_insert_with(|| encode_frame(kind, payload)).clone()
            });
            if self.cx.push_frame(conn, &mut slot.meta, kind, &frame) {
                if is_compressed {
                    conn.broadcast_sent(payload);
                }
            } else {
                self.cx.counters.dropped_sends += 1;
            }
            settle(&mut self.slots, &mut self.cx, &mut self.wheel, key);
        }
    }

    fn fire_timers(&mut self) {
        let now = self.cx.now.as_nanos();
        let mut due = Vec::new();
        self.wheel.advance(now, |entry| due.push(entry));
        for entry in due {
            let Some(slot) = self.slots.get_mut(entry.slot) else { continue };
            if slot.meta.timer_tick != entry.tick {
                continue; // stale: the slot was rescheduled earlier, or reused
            }
            slot.meta.timer_tick = NO_TICK;
            on_timer(&mut self.slots, &mut self.cx, &mut self.wheel, entry.slot);
        }
    }

    fn begin_shutdown(&mut self, deadline: WallClock) {
        let deadline_nanos = self.cx.clock_of(deadline).as_nanos();
        self.shutdown = Some(self.shutdown.map_or(deadline_nanos, |d| d.min(deadline_nanos)));
        let keys: Vec<usize> = self.slots.iter().map(|(k, _)| k).collect();
        let now = self.cx.now;
        for key in keys {
            let Slot { meta, phase } = &mut self.slots[key];
            match phase {
                Phase::Handshake { .. } => kill(&mut self.slots, &mut self.cx, key),
                Phase::Connecting(_) => {
                    fail_connect(&mut self.slots, &mut self.cx, key, ConnectError::ShuttingDown);
                }
                Phase::Open { conn, .. } => {
                    let _ = self.cx.control(conn, meta, |conn, out| {
                        conn.close(now, CloseCode::GOING_AWAY, "server shutting down", out)
                    });
                    settle(&mut self.slots, &mut self.cx, &mut self.wheel, key);
                }
                Phase::Linger { .. } | Phase::Dead => {}
            }
        }
    }

    /// The shutdown deadline passed: drop whatever is left.
    fn abandon_all(&mut self) {
        let keys: Vec<usize> = self.slots.iter().map(|(k, _)| k).collect();
        for key in keys {
            fail_connect(&mut self.slots, &mut self.cx, key, ConnectError::ShuttingDown);
            report_close(
                &mut self.slots,
                &mut self.cx,
                key,
                CloseInfo::failed(CloseCode::ABNORMAL, "shutdown deadline passed"),
            );
            kill(&mut self.slots, &mut self.cx, key);
        }
    }

    fn kill(&mut self, key: usize) {
        kill(&mut self.slots, &mut self.cx, key);
    }

    /// One gathered write per connection with something queued.
    fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.cx.dirty);
        for key in dirty {
            let Some(slot) = self.slots.get_mut(key) else { continue };
            slot.meta.dirty = false;
            if matches!(slot.phase, Phase::Dead) || slot.meta.blocked {
                continue;
            }
            let mut failed = false;
            while !slot.meta.out.is_empty() {
                // One buffer: a backend that takes buffers gets it without a copy.
                if let Some(buf) = slot.meta.out.sole_owned() {
                    let len = buf.len() as u64;
                    match self.backend.send_owned(Token(key), buf) {
                        Some(Ok(true)) => {
                            self.cx.counters.bytes_out += len;
                            slot.meta.out.handed_over(&mut self.cx.pool);
                            continue;
                        }
                        Some(Ok(false)) => {
                            slot.meta.blocked = true;
                            break;
                        }
                        Some(Err(_)) => {
                            failed = true;
                            break;
                        }
                        None => {}
                    }
                }
                let mut iov = [IoSlice::new(&[]); MAX_IOV];
                let n = slot.meta.out.slices(&mut iov);
                let queued: usize = iov[..n].iter().map(|s| s.len()).sum();
                match self.backend.send(Token(key), &iov[..n]) {
                    Ok(SendOutcome::Written(written)) => {
                        self.cx.counters.bytes_out += written as u64;
                        slot.meta.out.consume(&mut self.cx.pool, written);
                        if written < queued {
                            slot.meta.blocked = true;
                            break;
                        }
                    }
                    Ok(SendOutcome::Submitted) => {
                        slot.meta.blocked = true;
                        break;
                    }
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                let error = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
                fail_connect(&mut self.slots, &mut self.cx, key, ConnectError::Io(error));
                report_close(
                    &mut self.slots,
                    &mut self.cx,
                    key,
                    CloseInfo::failed(CloseCode::ABNORMAL, "write failed"),
                );
                kill(&mut self.slots, &mut self.cx, key);
                continue;
            }
            let slot = &mut self.slots[key];
            if let Some(handle) = &slot.meta.handle {
                handle.queued.store(slot.meta.out.len(), Ordering::Relaxed);
            }
            if let Phase::Open { conn, .. } = &mut slot.phase
                && conn.has_pending_pong()
                && slot.meta.out.len() < self.cx.shared.config.max_backpressure
            {
                // Pongs held back while the queue was full: written on the next turn.
                self.cx.transmit(conn, &mut slot.meta);
            }
            match &slot.phase {
                Phase::Linger { .. } if slot.meta.out.is_empty() => {
                    kill(&mut self.slots, &mut self.cx, key);
                }
                Phase::Open { .. }
                    if slot.meta.above_drain
                        && slot.meta.out.len() < self.cx.shared.config.drain_threshold =>
                {
                    slot.meta.above_drain = false;
                    call_handler(&mut self.slots, &mut self.cx, key, |h, cx| h.on_drain(cx));
                    settle(&mut self.slots, &mut self.cx, &mut self.wheel, key);
                }
                _ => {}
            }
        }
    }
}

impl WorkerCx {
    fn read_clock(&self) -> Instant {
        Instant::from_nanos(self.base.elapsed().as_nanos() as u64)
    }

    fn clock_of(&self, at: WallClock) -> Instant {
        Instant::from_nanos(at.saturating_duration_since(self.base).as_nanos() as u64)
    }

    pub(crate) fn wall_now(&self) -> WallClock {
        self.base + Duration::from_nanos(self.now.as_nanos())
    }

    fn mark_dirty(&mut self, meta: &mut Meta) {
        if !meta.dirty {
            meta.dirty = true;
            self.dirty.push(meta.id.slot as usize);
        }
    }

    /// Applies the backpressure policy; `Err` when the send must be refused.
    pub(crate) fn admit(
        &mut self,
        conn: &mut Connection,
        meta: &mut Meta,
    ) -> Result<(), SendError> {
        if meta.abort {
            return Err(SendError::Closed);
        }
        if meta.out.len() < self.shared.config.max_backpressure {
            return Ok(());
        }
        self.counters.dropped_sends += 1;
        if let Backpressure::Close(code) = self.shared.config.backpressure {
            let now = self.now;
            let _ =
                self.control(conn, meta, |conn, out| conn.close(now, code, "backpressure", out));
        }
        Err(SendError::Backpressure)
    }

    /// Queues one data frame. `text_checked`: the payload is known to be UTF-8 already.
    pub(crate) fn send_payload(
        &mut self,
        conn: &mut Connection,
        meta: &mut Meta,
        kind: FrameKind,
        payload: Payload<'_>,
        text_checked: bool,
    ) -> Result<(), SendError> {
        self.admit(conn, meta)?;
        let bytes = payload.bytes();
        let is_text = match kind {
            FrameKind::Message(k) | FrameKind::First(k) => k == DataKind::Text,
            FrameKind::Continue | FrameKind::Last => false,
        };
        let needs_validation =
            !text_checked && (is_text || matches!(kind, FrameKind::Continue | FrameKind::Last));
        let compress = match kind {
            FrameKind::Message(_) => conn.will_compress(bytes.len()),
            FrameKind::First(_) => conn.will_compress(usize::MAX),
            FrameKind::Continue | FrameKind::Last => false,
        };
        if needs_validation || compress {
            // Let the protocol validate text (and text fragments as they join) and compress.
            self.scratch.clear();
            conn.send_frame(kind, bytes, &mut self.scratch).map_err(protocol_error)?;
            meta.out.push_copy(&mut self.pool, &self.scratch);
        } else {
            let header = conn.encode_header(kind, bytes.len()).map_err(protocol_error)?;
            meta.out.push_copy(&mut self.pool, header.as_bytes());
            match payload {
                // A client's payload is masked: always a copy.
                _ if let Some(key) = header.mask() => {
                    meta.out.push_masked(&mut self.pool, bytes, key)
                }
                Payload::Shared(shared) if shared.len() >= SHARE_THRESHOLD => {
                    meta.out.push_shared(&mut self.pool, shared);
                }
                _ => meta.out.push_copy(&mut self.pool, bytes),
            }
        }
        if matches!(kind, FrameKind::Message(_) | FrameKind::Last) {
            self.counters.messages_out += 1;
        }
        self.queued(meta);
        Ok(())
    }

    /// Queues a pre-encoded (server, unmasked) frame of a whole message; `false` if refused.
    fn push_frame(
        &mut self,
        conn: &mut Connection,
        meta: &mut Meta,
        kind: DataKind,
        frame: &Bytes,
    ) -> bool {
        if conn.check_send(FrameKind::Message(kind)).is_err() || self.admit(conn, meta).is_err() {
            return false;
        }
        if frame.len() >= SHARE_THRESHOLD {
            meta.out.push_shared(&mut self.pool, frame.clone());
        } else {
            meta.out.push_copy(&mut self.pool, frame);
        }
        self.counters.messages_out += 1;
        self.queued(meta);
        true
    }

    /// Queues the frames the protocol produced by itself (pongs, a heartbeat ping, a close
    /// reply). Past the backpressure limit pongs wait in the connection, where a ping flood
    /// collapses to one pong for the latest ping, until [`Worker::flush`] has drained the queue
    /// below the limit; the heartbeat and the close frame, one each at most, go at once. So
    /// what a peer that never reads can make the engine queue on its own is bounded.
    fn transmit(&mut self, conn: &mut Connection, meta: &mut Meta) {
        self.scratch.clear();
        let wrote = if meta.out.len() < self.shared.config.max_backpressure {
            conn.poll_transmit(&mut self.scratch)
        } else {
            conn.poll_transmit_congested(&mut self.scratch)
        };
        if wrote {
            meta.out.push_copy(&mut self.pool, &self.scratch);
            self.mark_dirty(meta);
        }
    }

    /// Queues a control frame the protocol writes.
    pub(crate) fn control(
        &mut self,
        conn: &mut Connection,
        meta: &mut Meta,
        write: impl FnOnce(&mut Connection, &mut Vec<u8>) -> Result<(), bidir_protocol::SendError>,
    ) -> Result<(), SendError> {
        if meta.abort {
            return Err(SendError::Closed);
        }
        self.scratch.clear();
        write(conn, &mut self.scratch).map_err(protocol_error)?;
        meta.out.push_copy(&mut self.pool, &self.scratch);
        self.queued(meta);
        Ok(())
    }

    fn queued(&mut self, meta: &mut Meta) {
        if meta.out.len() >= self.shared.config.drain_threshold {
            meta.above_drain = true;
        }
        self.mark_dirty(meta);
    }

    pub(crate) fn handle(&mut self, meta: &mut Meta) -> ConnHandle {
        let shared = meta.handle.get_or_insert_with(Default::default);
        ConnHandle {
            id: meta.id,
            shared: Arc::clone(shared),
            mailbox: Arc::clone(&self.shared.mailboxes[usize::from(self.index)]),
        }
    }

    /// Publishes to this worker (after the handler returns) and to every other worker.
    pub(crate) fn publish_everywhere(&mut self, topic: &str, msg: Message<'_>) -> usize {
        let topic: Arc<str> = Arc::from(topic);
        for (i, mailbox) in self.shared.mailboxes.iter().enumerate() {
            if i != usize::from(self.index) {
                // A copy per worker: subscribers' queues then share a worker-local refcount.
                let payload = Bytes::copy_from_slice(msg.as_bytes());
                mailbox.push(Command::Publish {
                    topic: Arc::clone(&topic),
                    kind: msg.kind(),
                    payload,
                });
            }
        }
        let local = self.topics.count(&topic);
        self.local_publishes.push((topic, msg.kind(), Bytes::copy_from_slice(msg.as_bytes())));
        local
    }

    /// A whole message compressed on its own with the worker's codec, as one server frame.
    /// `None` when compressing does not make the message smaller: it then goes out plain.
    fn compressed_frame(&mut self, kind: DataKind, payload: &[u8], bits: u8) -> Option<Bytes> {
        let mut compressed = Vec::with_capacity(payload.len() / 2 + 64);
        let config = self.shared.config.compression.as_ref();
        let settings = config.map_or((1, 8), |c| (c.level, c.mem_level));
        let at = self.codec_index(settings);
        self.codecs[at].compress(bits, payload, true, true, &mut compressed);
        if compressed.len() >= payload.len() {
            return None;
        }
        Some(server_frame(Rsv::RSV1, kind, &compressed))
    }

    /// Where the worker's shared codec with `settings` (level, memory level) is in
    /// `codecs`, created on first use.
    fn codec_index(&mut self, settings: (u8, u8)) -> usize {
        let settings = (settings.0.min(9), settings.1.clamp(1, 9));
        match self.codecs.iter().position(|c| c.settings() == settings) {
            Some(at) => at,
            None => {
                self.codecs.push(Box::new(Codec::new(settings.0, settings.1, 15)));
                self.codecs.len() - 1
            }
        }
    }

    /// Lends the worker's codec with the connection's settings to a connection that shares
    /// one, for one call.
    fn lend_codec(&mut self, conn: &mut Connection, meta: &Meta) {
        if meta.shares_codec
            && let Some(settings) = conn.codec_settings()
        {
            let at = self.codec_index(settings);
            conn.attach_codec(self.codecs.swap_remove(at));
        }
    }

    /// Takes the lent codec back.
    fn return_codec(&mut self, conn: &mut Connection, meta: &Meta) {
        if meta.shares_codec
            && let Some(codec) = conn.detach_codec()
        {
            self.codecs.push(codec);
        }
    }
}

fn protocol_error(e: bidir_protocol::SendError) -> SendError {
    match e {
        bidir_protocol::SendError::Closed => SendError::Closed,
        other => SendError::Protocol(other),
    }
}

/// A whole message as one unmasked (server) frame.
pub(crate) fn encode_frame(kind: DataKind, payload: &[u8]) -> Bytes {
    server_frame(Rsv::NONE, kind, payload)
}

/// A whole message as one unmasked frame with reserved bits `rsv` (RSV1: compressed).
fn server_frame(rsv: Rsv, kind: DataKind, payload: &[u8]) -> Bytes {
    let repr = FrameRepr {
        fin: true,
        rsv,
        opcode: kind.opcode(),
        mask: None,
        payload_len: payload.len() as u64,
    };
    let mut frame = BytesMut::zeroed(repr.buffer_len());
    repr.emit(&mut FrameHeader::new_unchecked(&mut frame[..]));
    frame.extend_from_slice(payload);
    frame.freeze()
}

#[allow(clippy::too_many_arguments)]
fn accept(
    slots: &mut Slab<Slot>,
    cx: &mut WorkerCx,
    wheel: &mut Wheel,
    to_add: &mut Vec<(usize, TcpStream)>,
    next_generation: &mut u32,
    max_slots: usize,
    shutting_down: bool,
    stream: TcpStream,
    peer: SocketAddr,
) {
    cx.counters.accepted += 1;
    if shutting_down || slots.len() >= max_slots {
        cx.counters.refused += 1;
        return; // dropping the stream closes it
    }
    let peer_held = match &cx.shared.peers {
        None => false,
        Some(peers) => match peers.admit(peer.ip(), cx.wall_now()) {
            Admission::Refused => {
                cx.counters.refused_per_peer += 1;
                return;
            }
            Admission::Held => true,
            Admission::Opened => false,
        },
    };
    if bidir_sys::socket::configure_stream(&stream).is_err() {
        if let (true, Some(peers)) = (peer_held, &cx.shared.peers) {
            peers.release(peer.ip(), cx.wall_now());
        }
        return;
    }
    let entry = slots.vacant_entry();
    let key = entry.key();
    *next_generation = next_generation.wrapping_add(1);
    let deadline = (cx.now + cx.shared.config.handshake_timeout).as_nanos();
    let tick = wheel.insert(key, deadline);
    let slot = entry.insert(Slot {
        meta: Meta::new(
            ConnId { worker: cx.index, slot: key as u32, generation: *next_generation },
            peer,
            tick,
        ),
        phase: Phase::Handshake { buf: Vec::new(), deadline },
    });
    slot.meta.peer_held = peer_held;
    to_add.push((key, stream));
}

fn on_received(
    slots: &mut Slab<Slot>,
    cx: &mut WorkerCx,
    wheel: &mut Wheel,
    key: usize,
    data: &mut [u8],
) {
    let Some(slot) = slots.get_mut(key) else { return };
    match &mut slot.phase {
        Phase::Handshake { .. } => handshake(slots, cx, wheel, key, data),
        Phase::Connecting(_) => answer(slots, cx, wheel, key, data, false),
        Phase::Open { .. } => feed(slots, cx, wheel, key, data),
        Phase::Linger { .. } | Phase::Dead => {} // input after the end is discarded
    }
}

fn on_closed(
    slots: &mut Slab<Slot>,
    cx: &mut WorkerCx,
    wheel: &mut Wheel,
    key: usize,
    error: Option<std::io::Error>,
) {
    let Some(slot) = slots.get_mut(key) else { return };
    if matches!(slot.phase, Phase::Connecting(_)) {
        // The answer may end at EOF (a refusal without Content-Length).
        answer(slots, cx, wheel, key, &mut [], true);
        let Some(slot) = slots.get_mut(key) else { return };
        if !matches!(slot.phase, Phase::Open { .. }) {
            fail_connect(slots, cx, key, error.map_or(ConnectError::Closed, ConnectError::Io));
            return;
        }
    }
    let Some(slot) = slots.get_mut(key) else { return };
    if let Phase::Open { conn, .. } = &mut slot.phase {
        let eof = conn.handle_eof();
        let reason = match (&error, eof) {
            (Some(e), _) => Some(e.to_string()),
            (None, Err(e)) => Some(e.to_string()),
            (None, Ok(())) => None,
        };
        if let Some(reason) = reason {
            report_close(slots, cx, key, CloseInfo::failed(CloseCode::ABNORMAL, &reason));
        }
    }
    kill(slots, cx, key);
}

/// Handles handshake bytes: parse, route, answer.
fn handshake(
    slots: &mut Slab<Slot>,
    cx: &mut WorkerCx,
    wheel: &mut Wheel,
    key: usize,
    data: &[u8],
) {
    let slot = &mut slots[key];
    let Phase::Handshake { buf, .. } = &mut slot.phase else { return };
    buf.extend_from_slice(data);
    let mut head_bytes = std::mem::take(buf);
    let shared = Arc::clone(&cx.shared);
    let max = shared.config.max_handshake_size;
    let mut headers = [http::EMPTY_HEADER; 64];
    let (head, head_len) = match http::Request::parse(&head_bytes, &mut headers, max) {
        Ok(http::Status::Complete(parsed)) => parsed,
        Ok(http::Status::Partial) => {
            let Phase::Handshake { buf, .. } = &mut slots[key].phase else { return };
            *buf = head_bytes;
            return;
        }
        Err(e) => {
            cx.scratch.clear();
            e.write_response(&mut cx.scratch);
            respond(slots, cx, wheel, key);
            return;
        }
    };
    cx.scratch.clear();
    // Ambiguous framing gets 400 on every route (RFC 9112 §6.3). A well-framed body is never
    // read: the answer closes the connection, so the body is not taken for the next request.
    if let Err(e) = head.body() {
        e.write_response(&mut cx.scratch);
        respond(slots, cx, wheel, key);
        return;
    }
    let req = Request { head, peer: slot.meta.peer };
    let accepted = match shared.router.find(&req) {
        Route::WebSocket(hook, origins) => match head.upgrade() {
            Err(e) => {
                e.write_response(&mut cx.scratch);
                None
            }
            // The Origin policy applies once the upgrade is valid and before the accept hook:
            // a page from a site the route does not allow costs no application code.
            Ok(upgrade) => match origins.unwrap_or(&shared.config.origins).check(&req) {
                Err(refused) => {
                    let body = refused.to_string();
                    write_status(&mut cx.scratch, StatusCode::FORBIDDEN, &[], body.as_bytes());
                    None
                }
                Ok(()) => run_accept_hook(hook, &req, &upgrade, &shared.config, &mut cx.scratch),
            },
        },
        Route::Http(hook) => {
            match catch_unwind(AssertUnwindSafe(|| hook(&req))) {
                Ok(response) => write_http(&mut cx.scratch, &response),
                Err(_) => {
                    write_status(&mut cx.scratch, StatusCode::INTERNAL_SERVER_ERROR, &[], b"")
                }
            }
            None
        }
        Route::UpgradeRequired => {
            HandshakeError::NotWebSocket.write_response(&mut cx.scratch);
            None
        }
        Route::NotFound => {
            write_status(&mut cx.scratch, StatusCode::NOT_FOUND, &[], b"not found");
            None
        }
    };
    let Some((accepted, target, deflate)) = accepted else {
        respond(slots, cx, wheel, key);
        return;
    };
    // Upgrade: answer 101, open the protocol connection, call on_open, then feed any bytes
    // that followed the request (a client may pipeline its first frames).
    let Accepted { handler, protocol, config, .. } = accepted;
    let config = config.unwrap_or_else(|| Arc::clone(&shared.protocol));
    let slot = &mut slots[key];
    slot.meta.out.push_copy(&mut cx.pool, &cx.scratch);
    cx.mark_dirty(&mut slot.meta);
    slot.meta.request = match protocol {
        Some(p) => format!("{target}\n{p}").into_boxed_str(),
        None => target.into_boxed_str(),
    };
    let mut conn = Connection::server(cx.now, config);
    if let Some((params, config)) = deflate {
        open_deflate(&mut conn, &mut slot.meta, params, &config);
    }
    slot.phase = Phase::Open { conn, handler, spill: Vec::new() };
    cx.counters.upgraded += 1;
    cx.counters.open += 1;
    slot.meta.timer_tick = NO_TICK; // the handshake deadline no longer applies
    call_handler(slots, cx, key, |h, cx| h.on_open(cx));
    let mut rest = head_bytes.split_off(head_len);
    drop(head_bytes);
    if rest.is_empty() {
        settle(slots, cx, wheel, key);
    } else {
        feed(slots, cx, wheel, key, &mut rest);
    }
}

/// What an accepted upgrade opens with: the hook's answer, the target in origin-form, and
/// permessage-deflate when negotiated.
type Upgraded = (Accepted, String, Option<(DeflateParams, DeflateConfig)>);

/// Runs a WebSocket route's accept hook on a valid upgrade and writes the answer to `out`:
/// 101 when the hook accepts (returned, to open the connection), else the hook's refusal or a
/// 500 for a panicking hook or an answer that cannot be written.
fn run_accept_hook(
    hook: &WsHook,
    req: &Request<'_>,
    upgrade: &http::Upgrade<'_, '_>,
    config: &ServerConfig,
    out: &mut Vec<u8>,
) -> Option<Upgraded> {
    let accepted = match catch_unwind(AssertUnwindSafe(|| hook(req))) {
        Err(_) => {
            write_status(out, StatusCode::INTERNAL_SERVER_ERROR, &[], b"accept hook failed");
            return None;
        }
        Ok(Err(refusal)) => {
            write_http(out, &refusal);
            return None;
        }
        Ok(Ok(accepted)) => accepted,
    };
    let offered = accepted.protocol.as_deref().is_none_or(|p| req.protocols().any(|o| o == p));
    let headers: Vec<(&str, &str)> =
        accepted.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let compression = match &accepted.compression {
        Some(route) => route.clone(),
        None => config.compression.clone(),
    };
    let deflate = compression.and_then(|config| {
        deflate::negotiate(req.extensions(), &config).map(|params| (params, config))
    });
    let extensions = deflate.as_ref().map(|(params, _)| params.answer());
    let answer = HttpAccept {
        key: upgrade.accept_key(),
        protocol: accepted.protocol.as_deref(),
        extensions: extensions.as_deref(),
        headers: &headers,
    };
    if offered && answer.write(out).is_ok() {
        Some((accepted, origin_target(req), deflate))
    } else {
        write_status(out, StatusCode::INTERNAL_SERVER_ERROR, &[], b"invalid handshake answer");
        None
    }
}

/// The target in origin-form (path and query), also for an absolute-form request, for
/// [`Context::target`](crate::Context::target).
fn origin_target(req: &Request<'_>) -> String {
    match req.query() {
        Some(query) => format!("{}?{query}", req.path()),
        None => req.path().to_owned(),
    }
}

/// Turns permessage-deflate on for a new connection: with the worker's codec lent call by call
/// when the connection keeps no zlib state between messages (no context, or compact context),
/// else with a codec of its own.
fn open_deflate(
    conn: &mut Connection,
    meta: &mut Meta,
    params: DeflateParams,
    config: &DeflateConfig,
) {
    conn.enable_deflate(params, config);
    adopt_codec(conn, meta);
}

/// Gives a connection with permessage-deflate on its codec: the worker's, lent call by call,
/// or its own.
fn adopt_codec(conn: &mut Connection, meta: &mut Meta) {
    if conn.deflate_params().is_none() {
        return;
    }
    if conn.shares_codec() {
        meta.shares_codec = true;
    } else if let Some(codec) = conn.new_codec() {
        conn.attach_codec(codec);
    }
}

/// A client connection's connect completed or failed.
fn on_connected(
    slots: &mut Slab<Slot>,
    cx: &mut WorkerCx,
    wheel: &mut Wheel,
    key: usize,
    error: Option<std::io::Error>,
) {
    if let Some(e) = error {
        fail_connect(slots, cx, key, ConnectError::from(e));
        return;
    }
    let Some(slot) = slots.get_mut(key) else { return };
    let Phase::Connecting(connecting) = &mut slot.phase else { return };
    connecting.connected = true;
    connecting.deadline = (cx.now + connecting.handshake_timeout).as_nanos();
    let deadline = connecting.deadline;
    slot.meta.blocked = false; // the request may go now
    cx.mark_dirty(&mut slot.meta);
    slot.meta.timer_tick = NO_TICK;
    schedule(slot, wheel, deadline);
}

/// Handles the server's answer to a client connection's request: open the connection and
/// call `on_open`, or report the failure. `eof`: the stream ended.
fn answer(
    slots: &mut Slab<Slot>,
    cx: &mut WorkerCx,
    wheel: &mut Wheel,
    key: usize,
    data: &mut [u8],
    eof: bool,
) {
    let slot = &mut slots[key];
    let Phase::Connecting(connecting) = &mut slot.phase else { return };
    connecting.buf.extend_from_slice(data);
    let (upgraded, used) = match connecting.handshake.on_bytes(&connecting.buf, eof, cx.now) {
        Ok(None) => return,
        Ok(Some(done)) => done,
        Err(e) => {
            fail_connect(slots, cx, key, e);
            return;
        }
    };
    let Phase::Connecting(connecting) = std::mem::replace(&mut slot.phase, Phase::Dead) else {
        unreachable!("checked above")
    };
    let Connecting { handler, buf, .. } = *connecting;
    let mut conn = upgraded.conn;
    adopt_codec(&mut conn, &mut slot.meta);
    if let Some(protocol) = &upgraded.protocol {
        slot.meta.request = format!("{}\n{protocol}", slot.meta.request).into_boxed_str();
    }
    slot.phase = Phase::Open { conn, handler, spill: Vec::new() };
    slot.meta.timer_tick = NO_TICK;
    cx.counters.connected += 1;
    cx.counters.open += 1;
    call_handler(slots, cx, key, |h, cx| h.on_open(cx));
    let mut rest = buf;
    rest.drain(..used);
    if rest.is_empty() {
        settle(slots, cx, wheel, key);
    } else {
        feed(slots, cx, wheel, key, &mut rest);
    }
}

/// Ends a client connection that did not open: tells its handler why and retires the slot.
/// Does nothing for slots in other phases.
fn fail_connect(slots: &mut Slab<Slot>, cx: &mut WorkerCx, key: usize, error: ConnectError) {
    if let Some(Slot { phase: Phase::Connecting(_), .. }) = slots.get(key) {
        retire(slots, cx, key, error);
    }
}

/// Calls [`Handler::on_connect_failed`], containing a panic.
fn connect_failed(handler: &mut dyn Handler, error: ConnectError) {
    let _ = catch_unwind(AssertUnwindSafe(|| handler.on_connect_failed(error)));
}

fn write_http(out: &mut Vec<u8>, response: &crate::HttpResponse) {
    let headers: Vec<(&str, &str)> =
        response.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    write_status(out, response.status, &headers, &response.body);
}

fn write_status(out: &mut Vec<u8>, status: StatusCode, headers: &[(&str, &str)], body: &[u8]) {
    if http::write_response(out, status, headers, body).is_err() {
        out.clear();
        http::write_response(
            out,
            StatusCode::INTERNAL_SERVER_ERROR,
            &[],
            b"invalid response header",
        )
        .expect("static response is valid");
    }
}

/// Queues the HTTP answer in `cx.scratch` and lets the slot linger until it is written.
fn respond(slots: &mut Slab<Slot>, cx: &mut WorkerCx, wheel: &mut Wheel, key: usize) {
    let slot = &mut slots[key];
    slot.meta.out.push_copy(&mut cx.pool, &cx.scratch);
    cx.mark_dirty(&mut slot.meta);
    cx.counters.http_responses += 1;
    let deadline = (cx.now + cx.shared.config.linger).as_nanos();
    slot.phase = Phase::Linger { deadline };
    schedule(slot, wheel, deadline);
}

/// Feeds received bytes to an open connection and its handler.
fn feed(slots: &mut Slab<Slot>, cx: &mut WorkerCx, wheel: &mut Wheel, key: usize, data: &mut [u8]) {
    let slot = &mut slots[key];
    let Slot { meta, phase } = slot;
    let Phase::Open { conn, handler, spill } = phase else { return };
    cx.lend_codec(conn, meta);
    // While the connection holds no partial message, the worker's scratch serves as its spill
    // buffer: messages gathered or decompressed within this read need no allocation.
    let lent_spill = spill.capacity() == 0;
    if lent_spill {
        std::mem::swap(spill, &mut cx.spill);
    }
    let mut input = Input::new(data);
    loop {
        if meta.abort {
            input.skip_all();
            break;
        }
        let event = match conn.handle_bytes(cx.now, &mut input, spill) {
            Ok(Some(event)) => event,
            Ok(None) => break,
            Err(e) => {
                let reason = e.to_string();
                deliver_close(conn, handler, meta, cx, CloseInfo::failed(e.close_code(), &reason));
                break;
            }
        };
        // Queue what the protocol answered (a pong, a close reply) before the handler's own
        // frames, so answers keep the order of what they answer.
        cx.transmit(conn, meta);
        match event {
            Event::Message(msg) => {
                cx.counters.messages_in += 1;
                invoke(conn, handler, meta, cx, |h, cx| h.on_message(cx, msg));
            }
            Event::Fragment(fragment) => {
                if fragment.last {
                    cx.counters.messages_in += 1;
                }
                invoke(conn, handler, meta, cx, |h, cx| h.on_frame(cx, fragment));
            }
            Event::Ping(payload) => invoke(conn, handler, meta, cx, |h, cx| h.on_ping(cx, payload)),
            Event::Pong(payload) => invoke(conn, handler, meta, cx, |h, cx| h.on_pong(cx, payload)),
            Event::Close(close) => {
                deliver_close(conn, handler, meta, cx, CloseInfo::from(close));
            }
            _ => {}
        }
    }
    if spill.is_empty() {
        if lent_spill {
            std::mem::swap(spill, &mut cx.spill); // the scratch goes back to the worker
        } else if spill.capacity() > 0 {
            *spill = Vec::new(); // an idle connection owns no receive buffer
        }
    }
    // A partial message keeps the buffer it is in; the worker starts a new scratch.
    cx.return_codec(conn, meta);
    settle(slots, cx, wheel, key);
}

/// Calls one handler method with a context, timing it and containing a panic: a panicking
/// handler fails its connection with 1011 and is not called again.
fn invoke(
    conn: &mut Connection,
    handler: &mut Box<dyn Handler>,
    meta: &mut Meta,
    cx: &mut WorkerCx,
    f: impl FnOnce(&mut dyn Handler, &mut Context<'_>),
) {
    if meta.poisoned {
        return;
    }
    let start = cx.timing.then(WallClock::now);
    let outcome = {
        let mut context = Context { conn: &mut *conn, meta: &mut *meta, worker: &mut *cx };
        catch_unwind(AssertUnwindSafe(|| f(handler.as_mut(), &mut context)))
    };
    if let Some(start) = start {
        let _ = cx.handler_ns.record((start.elapsed().as_nanos() as u64).max(1));
    }
    if outcome.is_err() {
        meta.poisoned = true;
        meta.close_reported = true;
        conn.fail(Error::Internal);
    }
}

/// Reports the end of the connection to its handler, once.
fn deliver_close(
    conn: &mut Connection,
    handler: &mut Box<dyn Handler>,
    meta: &mut Meta,
    cx: &mut WorkerCx,
    info: CloseInfo<'_>,
) {
    if meta.close_reported {
        return;
    }
    meta.close_reported = true;
    invoke(conn, handler, meta, cx, |h, cx| h.on_close(cx, info));
}

/// [`deliver_close`] for a slot, if it is open.
fn report_close(slots: &mut Slab<Slot>, cx: &mut WorkerCx, key: usize, info: CloseInfo<'_>) {
    let Some(slot) = slots.get_mut(key) else { return };
    let Slot { meta, phase } = slot;
    if let Phase::Open { conn, handler, .. } = phase {
        deliver_close(conn, handler, meta, cx, info);
    }
}

/// [`invoke`] for a slot, if it is open.
fn call_handler(
    slots: &mut Slab<Slot>,
    cx: &mut WorkerCx,
    key: usize,
    f: impl FnOnce(&mut dyn Handler, &mut Context<'_>),
) {
    let Some(slot) = slots.get_mut(key) else { return };
    let Slot { meta, phase } = slot;
    if let Phase::Open { conn, handler, .. } = phase {
        cx.lend_codec(conn, meta);
        invoke(conn, handler, meta, cx, f);
        cx.return_codec(conn, meta);
    }
}

/// After anything happened to an open connection: queue what the protocol produced, notice
/// the end of the connection, and schedule its next timer.
fn settle(slots: &mut Slab<Slot>, cx: &mut WorkerCx, wheel: &mut Wheel, key: usize) {
    let Some(slot) = slots.get_mut(key) else { return };
    let Slot { meta, phase } = &mut *slot;
    let Phase::Open { conn, handler, .. } = phase else { return };
    if meta.abort {
        deliver_close(conn, handler, meta, cx, CloseInfo::failed(CloseCode::ABNORMAL, "aborted"));
        kill(slots, cx, key);
        return;
    }
    cx.transmit(conn, meta);
    if let Some(handle) = &meta.handle {
        handle.queued.store(meta.out.len(), Ordering::Relaxed);
    }
    if conn.state() == State::Closed {
        deliver_close(conn, handler, meta, cx, CloseInfo::failed(CloseCode::ABNORMAL, "closed"));
        close_subscriptions(meta, cx);
        cx.counters.open -= 1;
        let deadline = (cx.now + cx.shared.config.linger).as_nanos();
        slot.phase = Phase::Linger { deadline };
        if slot.meta.out.is_empty() {
            kill(slots, cx, key);
        } else {
            schedule(slot, wheel, deadline);
        }
        return;
    }
    let deadline = conn.poll_timeout().map_or(u64::MAX, |d| d.as_nanos()).min(meta.user_timer);
    if deadline != u64::MAX {
        schedule(slot, wheel, deadline);
    }
}

fn schedule(slot: &mut Slot, wheel: &mut Wheel, deadline: u64) {
    let tick = wheel.tick_of(deadline);
    if slot.meta.timer_tick == NO_TICK || tick < slot.meta.timer_tick {
        slot.meta.timer_tick = wheel.insert(slot.meta.id.slot as usize, deadline);
    }
}

fn on_timer(slots: &mut Slab<Slot>, cx: &mut WorkerCx, wheel: &mut Wheel, key: usize) {
    let now = cx.now.as_nanos();
    let slot = &mut slots[key];
    match &mut slot.phase {
        Phase::Handshake { deadline, .. } => {
            if now >= *deadline {
                kill(slots, cx, key); // a client that never finished its request
            } else {
                let deadline = *deadline;
                schedule(slot, wheel, deadline);
            }
        }
        Phase::Connecting(connecting) => {
            if now >= connecting.deadline {
                fail_connect(slots, cx, key, ConnectError::Timeout);
            } else {
                let deadline = connecting.deadline;
                schedule(slot, wheel, deadline);
            }
        }
        Phase::Linger { deadline } => {
            if now >= *deadline {
                kill(slots, cx, key);
            } else {
                let deadline = *deadline;
                schedule(slot, wheel, deadline);
            }
        }
        Phase::Open { conn, handler, .. } => {
            if slot.meta.user_timer <= now {
                slot.meta.user_timer = u64::MAX;
                cx.lend_codec(conn, &slot.meta);
                invoke(conn, handler, &mut slot.meta, cx, |h, cx| h.on_timer(cx));
                cx.return_codec(conn, &slot.meta);
            }
            if let Err(e) = conn.handle_timeout(cx.now) {
                let reason = e.to_string();
                deliver_close(
                    conn,
                    handler,
                    &mut slot.meta,
                    cx,
                    CloseInfo::failed(e.close_code(), &reason),
                );
            }
            settle(slots, cx, wheel, key);
        }
        Phase::Dead => {}
    }
}

fn close_subscriptions(meta: &mut Meta, cx: &mut WorkerCx) {
    cx.topics.unsubscribe_all(meta);
    if let Some(handle) = &meta.handle {
        handle.set_closed();
    }
}

/// Retires a slot: its queue is dropped and its socket closes after this turn.
fn kill(slots: &mut Slab<Slot>, cx: &mut WorkerCx, key: usize) {
    retire(slots, cx, key, ConnectError::Closed);
}

/// [`kill`], telling a client connection that never opened why (`connect_error`), after
/// the slot is retired: it is gone whatever the handler does.
fn retire(slots: &mut Slab<Slot>, cx: &mut WorkerCx, key: usize, connect_error: ConnectError) {
    let Some(slot) = slots.get_mut(key) else { return };
    if slot.meta.retired {
        return;
    }
    close_subscriptions(&mut slot.meta, cx);
    slot.meta.out.clear(&mut cx.pool);
    slot.meta.retired = true;
    slot.meta.timer_tick = NO_TICK;
    if std::mem::take(&mut slot.meta.peer_held)
        && let Some(peers) = &cx.shared.peers
    {
        peers.release(slot.meta.peer.ip(), cx.wall_now());
    }
    cx.counters.closed += 1;
    cx.retire.push(key);
    match std::mem::replace(&mut slot.phase, Phase::Dead) {
        Phase::Open { .. } => cx.counters.open -= 1,
        Phase::Connecting(mut connecting) => {
            cx.counters.connect_failed += 1;
            connect_failed(connecting.handler.as_mut(), connect_error);
        }
        Phase::Handshake { .. } | Phase::Linger { .. } | Phase::Dead => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slot is most of an idle connection's memory (docs/benchmarks.md keeps the budget).
    #[test]
    fn a_connection_slot_stays_small() {
        let size = size_of::<Slot>();
        assert!(size <= 408, "a slot grew to {size} bytes");
    }
}
