//! Engine configuration: workers, limits, timeouts, and what happens past each limit.

use std::num::NonZeroU32;
use std::time::Duration;

use bidir_protocol::deflate::DeflateConfig;
use bidir_protocol::{CloseCode, Config as ProtocolConfig};
use bidir_sys::UringConfig;

use crate::origin::OriginPolicy;

/// What a send does when the connection's queue is over
/// [`ServerConfig::max_backpressure`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backpressure {
    /// Refuse the new message: the send returns [`SendError::Backpressure`](crate::SendError)
    /// and the connection stays open. For feeds where a slow reader may miss updates.
    Drop,
    /// Close the connection with this code (1008 "policy violation" or 1013 "try again
    /// later" are the usual choices); what was queued before is still sent.
    Close(CloseCode),
}

/// Server-wide settings. Every default is chosen for a server facing the open internet; each
/// field gives its reason.
///
/// ```
/// let mut config = bidir::ServerConfig::default();
/// config.max_connections = 50_000;
/// config.protocol.max_message_size = 16 << 20;
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Protocol limits and timeouts for every route that does not set its own
    /// ([`Accept::config`](crate::Accept::config)).
    pub protocol: ProtocolConfig,
    /// permessage-deflate (RFC 7692) for routes that do not choose for themselves
    /// ([`Accept::compression`](crate::Accept::compression)). Default `None`: off, because
    /// compression costs CPU per message that many applications do not want to pay.
    ///
    /// [`DeflateConfig::shared`] keeps no zlib state per connection (one codec per worker, no
    /// context takeover either way); [`DeflateConfig::dedicated`] keeps a window per
    /// connection for the best ratio. docs/deflate.md gives the memory and speed of each.
    pub compression: Option<DeflateConfig>,
    /// The I/O backend. Default [`BackendChoice::Auto`] — or what the `BIDIR_BACKEND`
    /// environment variable names (`epoll`, `io_uring`, `auto`), so a test suite or a
    /// deployment can switch without a rebuild.
    pub backend: BackendChoice,
    /// Sizes of the io_uring backend's rings and provided buffers, and when it sends zero-copy.
    pub uring: UringConfig,
    /// Worker threads. Default: one per CPU the process may use.
    pub workers: Option<usize>,
    /// Pin each worker to its own CPU. Default `true`: a connection's state stays in one core's
    /// caches. Turn off when sharing the machine with other pinned work.
    pub pin_workers: bool,
    /// Most connections held at once, server-wide (divided evenly among workers). Default
    /// 100 000. Past it, new connections are closed as soon as accepted, before any work is
    /// spent on them. Raise the process's descriptor limit to match: the server raises its soft
    /// limit to the hard limit at start.
    pub max_connections: usize,
    /// Join another process's listeners on the same address instead of failing. Default
    /// `false`: [`ServerBuilder::start`](crate::ServerBuilder::start) fails with
    /// [`io::ErrorKind::AddrInUse`](std::io::ErrorKind::AddrInUse) when another process already
    /// listens there, so a stale server cannot silently keep answering part of the traffic.
    ///
    /// Every worker listens with `SO_REUSEPORT`, and Linux lets the listeners of one user
    /// share an address: with `true`, the kernel spreads new connections over this server's
    /// and the other's listeners. That is the zero-downtime restart: start the new server with
    /// `share_port = true` beside the old one, then shut the old one down gracefully; the old
    /// one's queued but unaccepted connections are lost when it closes its listeners, so
    /// clients should retry a refused connect. Processes of another user cannot join either
    /// way.
    ///
    /// The check probes the address just before binding it: two servers started within the
    /// same instant may both pass it.
    pub share_port: bool,
    /// What [`ServerBuilder::run`](crate::ServerBuilder::run) does on `SIGINT` (Ctrl-C) or
    /// `SIGTERM`: with `Some(grace)`, a graceful shutdown with that grace
    /// ([`ServerHandle::shutdown`](crate::ServerHandle::shutdown): close 1001 to every
    /// connection, drain, drop what is left at the deadline), after which `run` returns
    /// `Ok(())`. Default `Some(10 s)`: clients see a clean close rather than 1006, and 10 s is
    /// within the time a supervisor waits before it kills (systemd: 90 s, Kubernetes: 30 s).
    ///
    /// `None` opts out: `run` leaves the signals alone (they end the process the usual way)
    /// and returns only when the workers stop. [`ServerBuilder::start`](crate::ServerBuilder::start)
    /// never touches signals; see [`Signals`](crate::Signals) to handle them by hand.
    pub shutdown_on_signal: Option<Duration>,
    /// Most connections one peer may hold at once, counted server-wide (over every worker)
    /// from accept until the connection ends, whether or not it ever upgraded. Default `None`:
    /// no limit, and nothing counted. A peer is an IPv4 address, or the /64 prefix of an IPv6
    /// one (a host usually holds a whole /64).
    ///
    /// A connection past the limit is closed as soon as it is accepted, before any work is
    /// spent on it: the client sees the TCP connection end (a reset if it had sent its
    /// request), with no HTTP answer; [`Counters::refused_per_peer`](crate::Counters) counts
    /// it. Many clients behind one NAT or proxy share an address: size the limit for them.
    pub max_connections_per_peer: Option<NonZeroU32>,
    /// Most connections one peer may open per second (each a handshake to come), counted
    /// server-wide in windows of one second. Default `None`: no limit. Refused as for
    /// [`ServerConfig::max_connections_per_peer`], which also says what a peer is. Across a
    /// window's edge a peer may open up to twice the limit within a second.
    pub max_handshake_rate_per_peer: Option<NonZeroU32>,
    /// `listen(2)` backlog per worker listener. Default 1024.
    pub backlog: u32,
    /// Size of each worker's read buffer, the most one `read` takes. Default 256 KiB: large
    /// enough that a burst of small messages is one read, small enough to stay in L2.
    pub read_buffer_size: usize,
    /// Largest HTTP request head accepted during the handshake. Default 8 KiB (nginx's
    /// default); more gets 431.
    pub max_handshake_size: usize,
    /// Time a new connection has to complete its HTTP upgrade. Default 10 s: a slowloris
    /// client that trickles header bytes loses its slot after that.
    pub handshake_timeout: Duration,
    /// Bytes a connection may have queued for sending before [`ServerConfig::backpressure`]
    /// applies. Default 1 MiB: at least one maximal message (so an echo of it always fits),
    /// and at most 1 GiB for 1000 stalled readers. A send is accepted when the queue is under
    /// the limit, even if that message takes it over.
    pub max_backpressure: usize,
    /// What a send does past [`ServerConfig::max_backpressure`]. Default
    /// [`Backpressure::Drop`].
    pub backpressure: Backpressure,
    /// [`Handler::on_drain`](crate::Handler::on_drain) fires when the queue, having reached
    /// this many bytes, falls below it again. Default 64 KiB.
    pub drain_threshold: usize,
    /// How long a closed connection may take to flush its queue (the close reply, the last
    /// messages) before its socket is dropped. Default 5 s.
    pub linger: Duration,
    /// Granularity of the per-worker timer wheel. Default 100 ms: timeouts are coarse by
    /// design, and a coarse wheel wakes an idle worker rarely.
    pub timer_tick: Duration,
    /// Which web pages may open a WebSocket, on routes without a policy of their own
    /// ([`ServerBuilder::origins`](crate::ServerBuilder::origins)). Default
    /// [`OriginPolicy::same_host`]: a request with an `Origin` header passes only when the
    /// origin's host and port are the request's host, so a page on another site cannot use
    /// the user's cookies here (cross-site WebSocket hijacking); a request without `Origin`
    /// (not from a browser) passes. Refused requests get 403 before the accept hook runs.
    pub origins: OriginPolicy,
    /// Time every handler call and loop turn into [`Stats`](crate::Stats)'s histograms.
    /// Default `true`; it costs two clock reads (about 40 ns) per handler call.
    pub handler_timing: bool,
    /// For latency-critical deployments: after a turn that handled an event, the worker keeps
    /// polling without sleeping for up to this long before it waits in the kernel again. An
    /// event that arrives meanwhile is picked up without a wake-up (the sender's CPU need not
    /// wake this thread, and this thread is not scheduled back in), which takes microseconds
    /// off each exchange on a quiet connection (measured at one connection, one message in
    /// flight: p50 0.7–0.8× on either backend; docs/benchmarks.md). The price is a core kept
    /// busy while traffic lasts: on io_uring the poll reads the ring and enters the kernel
    /// only when it flags work, on epoll each poll is an `epoll_wait` that does not wait.
    /// Default `None` (off): the worker sleeps as soon as it has nothing to do.
    pub busy_poll: Option<Duration>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            protocol: ProtocolConfig::default(),
            compression: None,
            backend: BackendChoice::from_env(),
            uring: UringConfig::default(),
            workers: None,
            pin_workers: true,
            max_connections: 100_000,
            share_port: false,
            max_connections_per_peer: None,
            max_handshake_rate_per_peer: None,
            shutdown_on_signal: Some(Duration::from_secs(10)),
            backlog: 1024,
            read_buffer_size: 256 << 10,
            max_handshake_size: 8 << 10,
            handshake_timeout: Duration::from_secs(10),
            max_backpressure: 1 << 20,
            backpressure: Backpressure::Drop,
            drain_threshold: 64 << 10,
            linger: Duration::from_secs(5),
            timer_tick: Duration::from_millis(100),
            handler_timing: true,
            busy_poll: None,
            origins: OriginPolicy::same_host(),
        }
    }
}

/// Which I/O backend the workers use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendChoice {
    /// io_uring when this kernel has everything the backend needs (probed once at start:
    /// ring flags, multishot accept and receive, provided-buffer rings), else epoll;
    /// [`ServerHandle::backend`](crate::ServerHandle::backend) says which and why.
    #[default]
    Auto,
    /// epoll, through mio: any Linux.
    Epoll,
    /// io_uring; starting fails if the kernel lacks a feature.
    IoUring,
}

impl BackendChoice {
    /// `BIDIR_BACKEND` (`epoll`, `io_uring` or `iouring`, `auto`), or `Auto`.
    pub fn from_env() -> Self {
        match std::env::var("BIDIR_BACKEND").as_deref() {
            Ok("epoll") => Self::Epoll,
            Ok("io_uring" | "iouring" | "uring") => Self::IoUring,
            _ => Self::Auto,
        }
    }
}

/// The backend the workers run on, and why it is not io_uring when it is not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendInfo {
    /// The workers run on io_uring (else epoll).
    pub io_uring: bool,
    /// Why [`BackendChoice::Auto`] fell back to epoll.
    pub fallback_reason: Option<String>,
}

impl BackendInfo {
    /// `"io_uring"` or `"epoll"`.
    pub fn name(&self) -> &'static str {
        if self.io_uring { "io_uring" } else { "epoll" }
    }
}
