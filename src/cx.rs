//! What a handler's [`Context`](crate::Context) reaches on its worker besides its own
//! connection: the send queues' buffer pool, the topics, the clock, the counters, and the
//! server-wide state every worker reads. The worker's loop, its backend and its connection
//! table are not here: they live in `worker/`, which only the server knows.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant as WallClock};

use bytes::Bytes;
use hdrhistogram::Histogram;

use bidir_protocol::{Config as ProtocolConfig, Instant, Message};
use bidir_sys::mem::VirtualClock;

use crate::config::{BackendInfo, ServerConfig};
use crate::handle::ConnHandle;
use crate::mailbox::{Command, Mailbox, Publish};
use crate::meta::{ConnId, Meta};
use crate::metrics::{self, Counters};
use crate::outq::Pool;
use crate::peers::PeerLimits;
use crate::pubsub::{Forward, Registry, Topics};
use crate::timer::Timers;

thread_local! {
    /// Set on a worker's thread: what must not block there can tell.
    static WORKER_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as a worker's, for good.
pub(crate) fn mark_worker_thread() {
    WORKER_THREAD.with(|w| w.set(true));
}

/// Runs `f` with the calling thread counted as a worker's (a test bed runs its worker on the
/// test's thread).
pub(crate) fn as_worker_thread<R>(f: impl FnOnce() -> R) -> R {
    let was = WORKER_THREAD.with(|w| w.replace(true));
    let r = f();
    WORKER_THREAD.with(|w| w.set(was));
    r
}

/// Whether the calling thread is a worker's: waiting there for something the worker must do
/// would never end.
pub(crate) fn on_worker_thread() -> bool {
    WORKER_THREAD.with(std::cell::Cell::get)
}

/// Server-wide state every worker reads.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) protocol: Arc<ProtocolConfig>,
    pub(crate) mailboxes: Vec<Arc<Mailbox>>,
    /// Open connections per worker, for [`ServerHandle::connections`](crate::ServerHandle).
    pub(crate) open: Vec<AtomicU64>,
    /// Set when a shutdown starts: publishes and sends are refused from then on.
    pub(crate) stopping: AtomicBool,
    /// The per-peer counts, when a per-peer limit is on.
    pub(crate) peers: Option<PeerLimits>,
    /// Subscribers of each topic per worker.
    pub(crate) registry: Arc<Registry>,
    /// The addresses listened on, as bound.
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) backend: BackendInfo,
    /// The worker the next client connection goes to (modulo the count).
    pub(crate) next_worker: AtomicUsize,
    /// The worker threads, joined by [`ServerHandle::join`](crate::ServerHandle::join).
    pub(crate) threads: Mutex<Vec<JoinHandle<()>>>,
    /// The topics that keep a history, and their logs (rpc topics; docs/rpc.md).
    pub(crate) histories: crate::history::Histories,
    /// The bridge to other nodes, when the server joined some
    /// ([`ServerBuilder::redis`](crate::ServerBuilder::redis)).
    #[cfg(feature = "redis")]
    pub(crate) bridge: Option<Arc<crate::nodes::Bridge>>,
}

impl Shared {
    /// Hands `msg` to every worker with subscribers of `topic` except `local` (which delivers
    /// its own), each with a copy of the payload (subscribers' queues then share a
    /// worker-local refcount). Returns the subscribers on every worker, as registered now.
    pub(crate) fn publish(
        &self,
        topic: &str,
        msg: Message<'_>,
        exclude: Option<ConnId>,
        local: Option<usize>,
    ) -> usize {
        let Some(counts) = self.registry.counts(topic) else { return 0 };
        let mut name: Option<Arc<str>> = None;
        let mut total = 0;
        for (worker, count) in counts.workers() {
            total += count;
            if Some(worker) != local {
                let topic = Arc::clone(name.get_or_insert_with(|| Arc::from(topic)));
                let payload = Bytes::copy_from_slice(msg.as_bytes());
                let publish = Publish { topic, kind: msg.kind(), payload, exclude };
                self.mailboxes[worker].push(Command::Publish(publish));
            }
        }
        total
    }
}

impl Shared {
    /// Closes every connection subscribed to `topic` on any worker, with `code`.
    #[cfg(feature = "redis")]
    pub(crate) fn close_subscribers(
        &self,
        topic: &str,
        code: bidir_protocol::CloseCode,
        reason: &'static str,
    ) {
        let Some(counts) = self.registry.counts(topic) else { return };
        let topic: Arc<str> = Arc::from(topic);
        for (worker, _) in counts.workers() {
            let topic = Arc::clone(&topic);
            self.mailboxes[worker].push(Command::CloseSubscribers { topic, code, reason });
        }
    }

    /// The state of a server with `config`, one worker per mailbox, listening on `addrs`
    /// (none for a client-only engine or a test bed) on `backend`; the per-peer table when a
    /// per-peer limit is on. The worker threads are added once started.
    pub(crate) fn new(
        config: ServerConfig,
        mailboxes: Vec<Arc<Mailbox>>,
        addrs: Vec<SocketAddr>,
        backend: BackendInfo,
    ) -> Self {
        let peers =
            PeerLimits::new(config.max_connections_per_peer, config.max_handshake_rate_per_peer);
        Self {
            protocol: Arc::new(config.protocol.clone()),
            config,
            open: mailboxes.iter().map(|_| AtomicU64::new(0)).collect(),
            registry: Arc::new(Registry::new(mailboxes.len(), None)),
            mailboxes,
            stopping: AtomicBool::new(false),
            peers,
            addrs,
            backend,
            next_worker: AtomicUsize::new(0),
            threads: Mutex::new(Vec::new()),
            histories: crate::history::Histories::default(),
            #[cfg(feature = "redis")]
            bridge: None,
        }
    }

    /// The same state joined to other nodes through `redis`: the registry tells the bridge
    /// of every topic listed or unlisted (before any worker holds it).
    #[cfg(feature = "redis")]
    pub(crate) fn with_bridge(
        mut self,
        redis: crate::nodes::Redis,
        rpc_topic: crate::nodes::RpcTopic,
    ) -> Self {
        let (bridge, watch) = crate::nodes::Bridge::new(redis, rpc_topic);
        self.registry = Arc::new(Registry::new(self.mailboxes.len(), Some(watch)));
        self.bridge = Some(bridge);
        self
    }

    /// Hands a publish of `topic` to the other nodes, when the server joined some: queued
    /// for the bridge's publisher thread, never waiting for Redis.
    #[inline]
    pub(crate) fn forward(&self, topic: &str, what: Forward<'_>) {
        #[cfg(feature = "redis")]
        if let Some(bridge) = &self.bridge {
            bridge.forward(topic, what);
        }
        #[cfg(not(feature = "redis"))]
        let _ = (topic, what);
    }
}

/// The worker's state a handler's [`Context`](crate::Context) may use.
pub(crate) struct WorkerCx {
    pub(crate) index: u16,
    pub(crate) shared: Arc<Shared>,
    pub(crate) pool: Pool,
    pub(crate) topics: Topics,
    /// The handlers' timers.
    pub(crate) timers: Timers,
    /// The clock as read at the start of this loop turn.
    pub(crate) now: Instant,
    clock: Clock,
    /// Slots with frames queued since the last flush.
    pub(crate) dirty: Vec<usize>,
    /// Frames the protocol writes are encoded here, then queued.
    pub(crate) scratch: Vec<u8>,
    /// Publishes made by handlers of this worker, delivered after the handler returns.
    pub(crate) local_publishes: Vec<Publish>,
    pub(crate) counters: Counters,
    pub(crate) handler_ns: Histogram<u64>,
    pub(crate) turn_ns: Histogram<u64>,
    /// Handler and turn times are measured ([`ServerConfig::handler_timing`]).
    pub(crate) timing: bool,
}

impl WorkerCx {
    pub(crate) fn new(index: usize, shared: Arc<Shared>, clock: Clock) -> Self {
        let timing = shared.config.handler_timing;
        Self {
            index: index as u16,
            pool: Pool::default(),
            topics: Topics::new(Arc::clone(&shared.registry), index),
            shared,
            timers: Timers::default(),
            now: Instant::ZERO,
            clock,
            dirty: Vec::new(),
            scratch: Vec::new(),
            local_publishes: Vec::new(),
            counters: Counters::default(),
            handler_ns: metrics::histogram(),
            turn_ns: metrics::histogram(),
            timing,
        }
    }

    pub(crate) fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    /// The worker's clock now, in nanoseconds since the worker started.
    pub(crate) fn read_clock(&self) -> Instant {
        self.clock.read()
    }

    /// `at` on the worker's clock (0 if it is before the worker started).
    pub(crate) fn clock_of(&self, at: WallClock) -> Instant {
        Instant::from_nanos(at.saturating_duration_since(self.clock.base()).as_nanos() as u64)
    }

    /// Until when a busy-polling worker polls without sleeping, `spin` after `since` on its
    /// clock ([`ServerConfig::busy_poll`]); never on a virtual clock, which does not move
    /// while the worker spins.
    pub(crate) fn spin_until(&self, since: Instant, spin: Duration) -> Option<WallClock> {
        match self.clock {
            Clock::System { base } => Some(base + Duration::from_nanos(since.as_nanos()) + spin),
            Clock::Virtual { .. } => None,
        }
    }

    /// [`WorkerCx::now`] as a standard instant.
    pub(crate) fn wall_now(&self) -> WallClock {
        self.clock.base() + Duration::from_nanos(self.now.as_nanos())
    }

    /// Lists the slot for this turn's flush.
    pub(crate) fn mark_dirty(&mut self, meta: &mut Meta) {
        if !meta.dirty {
            meta.dirty = true;
            self.dirty.push(meta.id.slot as usize);
        }
    }

    /// A handle to the connection, sharing its closed flag and queue length.
    pub(crate) fn handle(&mut self, meta: &mut Meta) -> ConnHandle {
        let shared = meta.handle.get_or_insert_with(Default::default);
        ConnHandle {
            id: meta.id,
            shared: Arc::clone(shared),
            mailbox: Arc::clone(&self.shared.mailboxes[usize::from(self.index)]),
            registry: Arc::clone(&self.shared.registry),
        }
    }

    /// Publishes to this worker's subscribers (after the handler returns) and to the other
    /// workers that have some; returns the subscribers on every worker, `exclude` included.
    pub(crate) fn publish_everywhere(
        &mut self,
        topic: &str,
        msg: Message<'_>,
        exclude: Option<ConnId>,
    ) -> usize {
        let index = usize::from(self.index);
        let total = self.shared.publish(topic, msg, exclude, Some(index));
        if self.topics.count(topic) > 0 {
            self.local_publishes.push(Publish {
                topic: Arc::from(topic),
                kind: msg.kind(),
                payload: Bytes::copy_from_slice(msg.as_bytes()),
                exclude,
            });
        }
        total
    }
}

/// Where a worker reads the time: the only place it does (the handler timing aside, which
/// measures real durations). Its instants count nanoseconds from `base`, the standard instant
/// that stands for the worker's 0, so that deadlines given as standard instants (a
/// shutdown's) and the instants a handler sees ([`Context::now`](crate::Context::now)) map
/// onto it both ways.
#[derive(Debug)]
pub(crate) enum Clock {
    /// The system's monotonic clock: 0 is when the worker was built.
    System { base: WallClock },
    /// A virtual clock the test moves (a `testbed::TestBed`): its nanoseconds
    /// are the worker's, and `base` stands for its 0.
    Virtual { base: WallClock, clock: VirtualClock },
}

impl Clock {
    /// The system clock, starting now.
    pub(crate) fn system() -> Self {
        Self::System { base: WallClock::now() }
    }

    /// The time now. One predictable branch over reading the system clock directly.
    #[inline]
    pub(crate) fn read(&self) -> Instant {
        match self {
            Self::System { base } => Instant::from_nanos(base.elapsed().as_nanos() as u64),
            Self::Virtual { clock, .. } => Instant::from_nanos(clock.now_nanos()),
        }
    }

    /// The standard instant that stands for the worker's 0.
    pub(crate) fn base(&self) -> WallClock {
        match self {
            Self::System { base } | Self::Virtual { base, .. } => *base,
        }
    }
}
