//! Per-worker counters and latency histograms, merged on demand by
//! [`ServerHandle::stats`](crate::ServerHandle::stats).
//!
//! Workers count in plain integers (no atomics on the hot path) and hand a snapshot over when
//! asked through their mailbox.

use hdrhistogram::Histogram;

use bidir_sys::SyscallCounts;

/// Counters of one worker, or of all of them merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Connections accepted (TCP).
    pub accepted: u64,
    /// Connections refused at accept because the server was at `max_connections`.
    pub refused: u64,
    /// Connections refused at accept because their peer was at
    /// [`ServerConfig::max_connections_per_peer`](crate::ServerConfig::max_connections_per_peer)
    /// or [`ServerConfig::max_handshake_rate_per_peer`](crate::ServerConfig::max_handshake_rate_per_peer).
    pub refused_per_peer: u64,
    /// WebSocket upgrades completed.
    pub upgraded: u64,
    /// Client connections opened (handshake completed).
    pub connected: u64,
    /// Client connections that failed to open.
    pub connect_failed: u64,
    /// Handshakes answered with an HTTP error or a plain HTTP response.
    pub http_responses: u64,
    /// Connections whose slot was released (any reason).
    pub closed: u64,
    /// Connections open now (upgraded and not yet closed).
    pub open: u64,
    /// Data messages received (whole messages, or last pieces in fragment delivery).
    pub messages_in: u64,
    /// Data messages queued for sending (publishes count once per subscriber).
    pub messages_out: u64,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// Sends refused or dropped: backpressure, closed connections, publishes to subscribers
    /// mid-fragment.
    pub dropped_sends: u64,
    /// Loop turns (one `epoll_wait` each).
    pub turns: u64,
    /// System calls by kind.
    pub syscalls: SyscallCounts,
    /// Receives that ran out of shared receive buffers and waited for some to come back
    /// (io_uring only; see `UringConfig::buffers`). Often non-zero means the ring is small
    /// for the load: bytes are not lost, but they wait.
    pub starved_receives: u64,
}

impl Counters {
    fn merge(&mut self, other: &Self) {
        self.accepted += other.accepted;
        self.refused += other.refused;
        self.refused_per_peer += other.refused_per_peer;
        self.upgraded += other.upgraded;
        self.connected += other.connected;
        self.connect_failed += other.connect_failed;
        self.http_responses += other.http_responses;
        self.closed += other.closed;
        self.open += other.open;
        self.messages_in += other.messages_in;
        self.messages_out += other.messages_out;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.dropped_sends += other.dropped_sends;
        self.turns += other.turns;
        self.syscalls.waits += other.syscalls.waits;
        self.syscalls.reads += other.syscalls.reads;
        self.syscalls.writes += other.syscalls.writes;
        self.syscalls.accepts += other.syscalls.accepts;
        self.syscalls.other += other.syscalls.other;
        self.starved_receives += other.starved_receives;
    }
}

/// A worker's snapshot.
#[derive(Clone, Debug)]
pub(crate) struct WorkerStats {
    pub(crate) counters: Counters,
    pub(crate) handler_ns: Histogram<u64>,
    pub(crate) turn_ns: Histogram<u64>,
}

pub(crate) fn histogram() -> Histogram<u64> {
    // 1 ns to 60 s at 3 significant digits: ~20 KiB per histogram.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

/// Server statistics: counters summed over workers and merged latency histograms.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Stats {
    /// Workers that answered.
    pub workers: usize,
    /// The counters.
    pub counters: Counters,
    /// Time spent in each handler call, in nanoseconds (when
    /// [`ServerConfig::handler_timing`](crate::ServerConfig::handler_timing) is on).
    pub handler_ns: Histogram<u64>,
    /// Busy time of each loop turn (from the return of the wait to the next wait), in
    /// nanoseconds.
    pub turn_ns: Histogram<u64>,
}

impl Stats {
    pub(crate) fn merge(parts: Vec<WorkerStats>) -> Self {
        let mut stats = Self {
            workers: parts.len(),
            counters: Counters::default(),
            handler_ns: histogram(),
            turn_ns: histogram(),
        };
        for part in parts {
            stats.counters.merge(&part.counters);
            stats.handler_ns.add(&part.handler_ns).expect("same bounds");
            stats.turn_ns.add(&part.turn_ns).expect("same bounds");
        }
        stats
    }

    /// Dropped sends (a shorthand for `counters.dropped_sends`).
    pub fn dropped_sends(&self) -> u64 {
        self.counters.dropped_sends
    }
}
