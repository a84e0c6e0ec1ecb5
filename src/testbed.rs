//! The engine under test without sockets: a [`TestBed`] runs one worker of a server on an
//! in-memory backend with a virtual clock, turn by turn on the caller's thread, while the
//! test plays its peers — as WebSocket clients or byte by byte.
//!
//! Everything is deterministic: the same operations give the same handler calls and the same
//! bytes, and time passes only when the test says so ([`TestBed::advance`]), so a heartbeat,
//! a handshake timeout or a shutdown grace of many seconds runs in microseconds. Handlers
//! are the application's own: test them exactly as they will run.
//!
//! ```
//! use std::time::Duration;
//!
//! use bidir::client::Incoming;
//! use bidir::testbed::TestBed;
//! use bidir::{Context, Handler, Message, Request, Server};
//!
//! struct Echo;
//! impl Handler for Echo {
//!     fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
//!         let _ = cx.send(msg);
//!     }
//! }
//!
//! let builder = Server::builder().route("/echo", |_req: &Request<'_>| Ok(Echo));
//! let mut bed = TestBed::new(builder)?;
//! let peer = bed.connect("/echo")?;
//! bed.send(peer, Message::Text("hello"))?;
//! assert_eq!(bed.recv(peer), [Incoming::Text("hello".into())]);
//! bed.advance(Duration::from_secs(3600)); // an hour of virtual time
//! bed.shutdown(Duration::from_secs(1));
//! assert!(bed.is_stopped());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The model
//!
//! - The server is one worker of what the builder describes: its routes, hooks and
//!   configuration (addresses are not bound, [`ServerConfig::workers`] is ignored). Its
//!   backend is `bidir_sys::mem`: what a peer writes arrives as receives of at most
//!   [`TestBed::set_chunk_size`] bytes, and what the server sends is taken within each peer's
//!   [`TestBed::set_write_budget`] (short writes and backpressure).
//! - The worker runs only inside the test bed's calls. Peer operations ([`TestBed::send`],
//!   [`TestBed::write`], [`TestBed::reset`], ...) only queue bytes or events; calls that
//!   read ([`TestBed::recv`], [`TestBed::read`]) and [`TestBed::run_until_idle`],
//!   [`TestBed::advance`] and [`TestBed::shutdown`] run the worker until it has nothing left
//!   to do at the current virtual time.
//! - A peer opened with [`TestBed::connect`] is a WebSocket client (the crate's own
//!   client handshake and protocol core: its frames are masked, the server's are checked).
//!   While it reads (the default, [`TestBed::set_reading`]) the test bed decodes what the
//!   server sends to it whenever the worker settles, answers pings and close frames as a
//!   live client does, and keeps the messages for [`TestBed::recv`]. A peer opened with
//!   [`TestBed::open`] only moves bytes ([`TestBed::write`], [`TestBed::read`]).
//! - Time is virtual: the worker's clock (and [`Context::now`](crate::Context::now)) moves
//!   only in [`TestBed::advance`] and [`TestBed::shutdown`], from timer to timer. The peers'
//!   own protocol timers do not run.
//! - Statistics ([`TestBed::stats`]) are the worker's; `turn_ns` reads the virtual clock
//!   (a turn takes no virtual time), `handler_ns` the real one.
//!
//! [`ServerConfig::workers`]: crate::ServerConfig::workers

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant as WallClock};

use bidir_protocol::{CloseCode, Connection, Input, Instant, Message};
use bidir_sys::Backend;
use bidir_sys::mem::{MemBackend, MemNet, PeerId, VirtualClock};

use crate::SendError;
use crate::client::handshake::Handshake;
use crate::client::{Connect, ConnectError, Incoming};
use crate::config::BackendInfo;
use crate::cx::{Clock, Shared};
use crate::mailbox::{Command, Mailbox};
use crate::metrics::Stats;
use crate::peers::PeerLimits;
use crate::server::{ServerBuilder, ServerHandle};
use crate::worker::Worker;

/// The host name [`TestBed::connect`] puts in its requests.
pub const HOST: &str = "testbed.invalid";

/// Turns one settling may take before the test bed gives up on a worker that never idles.
const MAX_TURNS: usize = 1_000_000;

/// A peer of a [`TestBed`]: a client connection the test plays. Ids are given in order from
/// 0 and are only meaningful to the test bed that gave them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer(usize);

/// One worker on an in-memory backend, run by the test (see the [module docs](self)).
///
/// Not `Send` (handlers need not be); other threads reach the worker through
/// [`TestBed::handle`] and through the [`ConnHandle`](crate::ConnHandle)s handlers give out,
/// and what they post is applied when the test bed next runs the worker.
pub struct TestBed {
    worker: Worker<MemBackend>,
    net: MemNet,
    clock: VirtualClock,
    shared: Arc<Shared>,
    /// The standard instant the worker's clock counts from (virtual 0).
    base: WallClock,
    peers: Vec<PeerState>,
    stopped: bool,
}

/// The test's side of one peer.
struct PeerState {
    id: PeerId,
    addr: SocketAddr,
    /// The client connection, once upgraded.
    ws: Option<Client>,
    reading: bool,
}

/// An upgraded peer's client protocol state and what it received.
struct Client {
    conn: Connection,
    protocol: Option<String>,
    /// Received bytes not decoded yet (the tail of a partial frame).
    buf: Vec<u8>,
    spill: Vec<u8>,
    inbox: Vec<Incoming>,
    error: Option<bidir_protocol::Error>,
}

impl TestBed {
    /// A test bed running one worker of the server `builder` describes; its addresses are
    /// ignored (nothing is bound).
    ///
    /// # Errors
    ///
    /// The error of an address given to the builder that did not resolve.
    pub fn new(builder: ServerBuilder) -> io::Result<Self> {
        let (config, router, histories) = builder.into_parts()?;
        let clock = VirtualClock::new();
        let (backend, net) = MemBackend::new(clock.clone());
        let mailbox = Arc::new(Mailbox::new(backend.waker()));
        let backend_info =
            BackendInfo { io_uring: false, fallback_reason: Some("in-memory test bed".into()) };
        let mut shared = Shared::new(config, vec![mailbox], Vec::new(), backend_info);
        shared.histories = histories;
        let shared = Arc::new(shared);
        // The per-peer rate windows count seconds from their own base: start there.
        let base = shared.peers.as_ref().map_or_else(WallClock::now, PeerLimits::base);
        let clock_seam = Clock::Virtual { base, clock: clock.clone() };
        let worker = Worker::new(0, backend, Arc::clone(&shared), Arc::new(router), clock_seam);
        Ok(Self { worker, net, clock, shared, base, peers: Vec::new(), stopped: false })
    }

    // ---------------------------------------------------------------------------------------
    // Peers.

    /// Opens a WebSocket connection to `path` (with its query, if any) on host [`HOST`],
    /// performing the opening handshake; runs the worker until it answered.
    ///
    /// # Errors
    ///
    /// As [`TestBed::upgrade`]; [`ConnectError::Url`] for a path that makes no URL;
    /// [`ConnectError::Io`] (`ConnectionRefused`) once the server shut down.
    pub fn connect(&mut self, path: &str) -> Result<Peer, ConnectError> {
        self.connect_with(&Connect::new(&format!("ws://{HOST}{path}"))?)
    }

    /// [`TestBed::connect`] with the URL's host and path, headers, subprotocols and deflate
    /// offer of `options` (its timeouts do not apply).
    ///
    /// # Errors
    ///
    /// As [`TestBed::connect`].
    pub fn connect_with(&mut self, options: &Connect) -> Result<Peer, ConnectError> {
        let peer = self.open()?;
        self.upgrade(peer, options)?;
        Ok(peer)
    }

    /// A peer that connects from the next address in 127.0.0.1 and does nothing yet: the
    /// worker accepts it when it next runs. Drive it with bytes ([`TestBed::write`],
    /// [`TestBed::read`]) or upgrade it ([`TestBed::upgrade`]).
    ///
    /// # Errors
    ///
    /// `ConnectionRefused` once the server shut down (it no longer accepts).
    pub fn open(&mut self) -> io::Result<Peer> {
        let port = 10_000 + (self.peers.len() % 50_000) as u16;
        self.open_from(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
    }

    /// [`TestBed::open`] from `addr` (for per-peer limits and the peer address handlers see).
    ///
    /// # Errors
    ///
    /// As [`TestBed::open`].
    pub fn open_from(&mut self, addr: SocketAddr) -> io::Result<Peer> {
        let id = self.net.connect_peer(addr)?;
        self.peers.push(PeerState { id, addr, ws: None, reading: true });
        Ok(Peer(self.peers.len() - 1))
    }

    /// Performs the client's opening handshake on a peer from [`TestBed::open`]: writes the
    /// request `options` describe, runs the worker, and reads the answer. On success the peer
    /// speaks WebSocket from then on; frames the server sent right after its answer are
    /// kept for [`TestBed::recv`]. The key and masking seed are derived from the peer's id,
    /// so runs are reproducible.
    ///
    /// # Errors
    ///
    /// [`ConnectError::Refused`] with the server's status, headers and body;
    /// [`ConnectError::InvalidResponse`] or [`ConnectError::Deflate`] for an answer that does
    /// not fit the request; [`ConnectError::Closed`] when the server closed the connection
    /// first; [`ConnectError::Timeout`] when the worker has nothing left to do and has not
    /// answered (e.g. the peer's write budget holds the answer back);
    /// [`ConnectError::InvalidRequest`] for headers that cannot be sent.
    ///
    /// # Panics
    ///
    /// For a peer of another test bed, or one already upgraded.
    pub fn upgrade(&mut self, peer: Peer, options: &Connect) -> Result<(), ConnectError> {
        let state = self.peer(peer);
        assert!(state.ws.is_none(), "{peer:?} is upgraded already");
        let id = state.id;
        let mut nonce = [0x6e; 16];
        nonce[..8].copy_from_slice(&(peer.0 as u64).to_le_bytes());
        let mut seed = [0x73; 32];
        seed[..8].copy_from_slice(&(peer.0 as u64).to_le_bytes());
        let handshake = Handshake::with_keys(options, nonce, seed);
        let mut request = Vec::new();
        handshake.write_request(&mut request)?;
        if !self.net.write(id, &request) {
            return Err(ConnectError::Closed);
        }
        self.run_until_idle();
        let answer = self.net.read(id);
        let eof = self.net.is_closed(id);
        let Some((upgraded, used)) = handshake.on_bytes(&answer, eof, self.now_instant())? else {
            return Err(ConnectError::Timeout);
        };
        let mut conn = upgraded.conn;
        if let Some(codec) = conn.new_codec() {
            conn.attach_codec(codec);
        }
        let mut client = Client {
            conn,
            protocol: upgraded.protocol,
            buf: answer[used..].to_vec(),
            spill: Vec::new(),
            inbox: Vec::new(),
            error: None,
        };
        let answers = client.decode(self.now_instant(), Vec::new());
        self.peers[peer.0].ws = Some(client);
        if !answers.is_empty() {
            self.net.write(id, &answers);
        }
        Ok(())
    }

    /// Sends a message from an upgraded peer (masked, as a client must). Nothing runs until
    /// the worker next does.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] when the peer's side is closing or closed, or the connection is
    /// gone (nothing is sent); [`SendError::Protocol`] for what the protocol refuses.
    ///
    /// # Panics
    ///
    /// For a peer of another test bed, or one not upgraded.
    pub fn send(&mut self, peer: Peer, msg: Message<'_>) -> Result<(), SendError> {
        self.encode(peer, |conn, _, out| conn.send(msg, out))
    }

    /// Sends a ping from an upgraded peer.
    ///
    /// # Errors
    ///
    /// As [`TestBed::send`].
    ///
    /// # Panics
    ///
    /// As [`TestBed::send`].
    pub fn ping(&mut self, peer: Peer, payload: &[u8]) -> Result<(), SendError> {
        self.encode(peer, |conn, _, out| conn.ping(payload, out))
    }

    /// Starts the closing handshake from an upgraded peer.
    ///
    /// # Errors
    ///
    /// As [`TestBed::send`], and the protocol's refusal of `code` or a reason too long.
    ///
    /// # Panics
    ///
    /// As [`TestBed::send`].
    pub fn close(&mut self, peer: Peer, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.encode(peer, |conn, now, out| conn.close(now, code, reason, out))
    }

    fn encode(
        &mut self,
        peer: Peer,
        f: impl FnOnce(&mut Connection, Instant, &mut Vec<u8>) -> Result<(), bidir_protocol::SendError>,
    ) -> Result<(), SendError> {
        let now = self.now_instant();
        let state = &mut self.peers[peer.0];
        let client = state.ws.as_mut().unwrap_or_else(|| panic!("{peer:?} is not upgraded"));
        let mut out = Vec::new();
        f(&mut client.conn, now, &mut out).map_err(|e| match e {
            bidir_protocol::SendError::Closed => SendError::Closed,
            e => SendError::Protocol(e),
        })?;
        if self.net.write(state.id, &out) { Ok(()) } else { Err(SendError::Closed) }
    }

    /// Runs the worker until it is idle, then returns what an upgraded peer received since
    /// the last call: messages, pings (already answered), pongs, and the server's close
    /// frame (already answered). A peer that does not read ([`TestBed::set_reading`]) reads
    /// once here. Empty for a peer that is not upgraded (see [`TestBed::read`]).
    ///
    /// # Panics
    ///
    /// For a peer of another test bed.
    pub fn recv(&mut self, peer: Peer) -> Vec<Incoming> {
        self.run_until_idle();
        if !self.peer(peer).reading && self.pump(peer) {
            self.run_until_idle();
        }
        self.peers[peer.0].ws.as_mut().map(|c| std::mem::take(&mut c.inbox)).unwrap_or_default()
    }

    /// The raw bytes the server wrote to `peer` that nothing has read yet: everything for a
    /// peer that is not upgraded, and what a WebSocket peer that does not read has not
    /// decoded. Runs the worker until it is idle first.
    ///
    /// # Panics
    ///
    /// For a peer of another test bed.
    pub fn read(&mut self, peer: Peer) -> Vec<u8> {
        self.run_until_idle();
        self.net.read(self.peer(peer).id)
    }

    /// Writes raw bytes from `peer` (they arrive cut at the chunk size); `false` (nothing
    /// sent) when the peer shut its side or the server closed the connection.
    ///
    /// # Panics
    ///
    /// For a peer of another test bed.
    pub fn write(&mut self, peer: Peer, bytes: &[u8]) -> bool {
        self.net.write(self.peer(peer).id, bytes)
    }

    /// The peer shuts its writing side (TCP FIN) after what it wrote; it may still read.
    /// `false` when it had already, or reset, or the server closed the connection.
    ///
    /// # Panics
    ///
    /// For a peer of another test bed.
    pub fn shutdown_write(&mut self, peer: Peer) -> bool {
        self.net.shutdown_write(self.peer(peer).id)
    }

    /// The peer resets the connection (TCP RST) after what it wrote: the server's sends
    /// fail from then on. `false` as for [`TestBed::shutdown_write`].
    ///
    /// # Panics
    ///
    /// For a peer of another test bed.
    pub fn reset(&mut self, peer: Peer) -> bool {
        self.net.reset(self.peer(peer).id)
    }

    /// Whether an upgraded peer reads what the server sends whenever the worker settles
    /// (default `true`). One that does not models a client that stopped reading: the bytes
    /// wait (with [`TestBed::set_write_budget`], the server's queue grows), no ping or close
    /// is answered, and [`TestBed::recv`] reads once when called.
    ///
    /// # Panics
    ///
    /// For a peer of another test bed.
    pub fn set_reading(&mut self, peer: Peer, reading: bool) {
        let _ = self.peer(peer);
        self.peers[peer.0].reading = reading;
    }

    /// How many bytes the server's sends to `peer` may take from now on, in all (`None`,
    /// the default: unlimited): a socket buffer that the test drains. A send past it is cut
    /// short and the worker waits for the peer to be writable, which raising the budget
    /// above 0 reports.
    ///
    /// # Panics
    ///
    /// For a peer of another test bed.
    pub fn set_write_budget(&mut self, peer: Peer, bytes: Option<usize>) {
        self.net.set_write_budget(self.peer(peer).id, bytes);
    }

    /// The most bytes one receive carries, for what peers write from now on (default 64
    /// KiB, at least 1): `1` delivers every byte in its own read.
    pub fn set_chunk_size(&mut self, bytes: usize) {
        self.net.set_chunk_size(bytes);
    }

    /// Whether the server closed the connection to `peer` (its socket is gone; what it sent
    /// before can still be read).
    ///
    /// # Panics
    ///
    /// For a peer of another test bed.
    pub fn is_closed(&self, peer: Peer) -> bool {
        self.net.is_closed(self.peer(peer).id)
    }

    /// The address `peer` connects from, which handlers see as
    /// [`Context::peer_addr`](crate::Context::peer_addr).
    ///
    /// # Panics
    ///
    /// For a peer of another test bed.
    pub fn peer_addr(&self, peer: Peer) -> SocketAddr {
        self.peer(peer).addr
    }

    /// The subprotocol the server chose for an upgraded peer.
    ///
    /// # Panics
    ///
    /// For a peer of another test bed.
    pub fn protocol(&self, peer: Peer) -> Option<&str> {
        self.peer(peer).ws.as_ref()?.protocol.as_deref()
    }

    /// The protocol error an upgraded peer's client found in what the server sent (the
    /// server broke the protocol, or passed the client's limits), if any. Its client sent
    /// the matching close frame and decodes nothing more.
    ///
    /// # Panics
    ///
    /// For a peer of another test bed.
    pub fn client_error(&self, peer: Peer) -> Option<&bidir_protocol::Error> {
        self.peer(peer).ws.as_ref()?.error.as_ref()
    }

    fn peer(&self, peer: Peer) -> &PeerState {
        self.peers.get(peer.0).unwrap_or_else(|| panic!("{peer:?} is not a peer of this test bed"))
    }

    // ---------------------------------------------------------------------------------------
    // Running the worker.

    /// One loop turn of the worker at the current virtual time (a wait takes no time);
    /// `false` once the worker has stopped (after a shutdown, every connection gone).
    pub fn turn(&mut self) -> bool {
        if self.stopped {
            return false;
        }
        self.net.set_time_limit(Some(self.clock.now_nanos()));
        self.stopped = !crate::cx::as_worker_thread(|| self.worker.turn());
        !self.stopped
    }

    /// Runs the worker at the current virtual time until nothing is left to do: every event
    /// handled, every command from other threads applied, every queue flushed as far as the
    /// budgets allow, and the reading peers' answers (pongs, close replies) handled in turn.
    ///
    /// # Panics
    ///
    /// When the worker is still busy after a million turns (a handler that keeps the
    /// worker busy forever, e.g. one that always sends from `on_drain`).
    pub fn run_until_idle(&mut self) {
        let mut turns = 0;
        loop {
            // At least one turn: it reads the clock as it stands.
            while self.turn() && (self.net.queued() > 0 || !self.worker.is_idle()) {
                turns += 1;
                assert!(turns < MAX_TURNS, "the worker is still busy after {turns} turns");
            }
            let mut answered = false;
            for i in 0..self.peers.len() {
                if self.peers[i].reading {
                    answered |= self.pump(Peer(i));
                }
            }
            if !answered || self.stopped {
                return;
            }
            turns += 1;
        }
    }

    /// Lets `by` pass in virtual time: the worker runs until idle, then the clock jumps to
    /// its next timer (heartbeats, handshake, close and linger timeouts, handler timers, the
    /// shutdown deadline) and it runs again, until `by` has passed.
    ///
    /// # Panics
    ///
    /// As [`TestBed::run_until_idle`].
    pub fn advance(&mut self, by: Duration) {
        let target = self.clock.now_nanos().saturating_add(by.as_nanos() as u64);
        self.advance_until(target, |_| false);
    }

    /// Runs until `target` on the virtual clock, or until `done`.
    fn advance_until(&mut self, target: u64, done: impl Fn(&Self) -> bool) {
        self.run_until_idle();
        while self.clock.now_nanos() < target && !done(self) {
            if !self.stopped && self.worker.poll_timeout().is_some() {
                // Nothing to report: the wait moves the clock to the next timer, or to `target`.
                self.net.set_time_limit(Some(target));
                self.stopped = !crate::cx::as_worker_thread(|| self.worker.turn());
            } else {
                self.clock.set(target);
            }
            self.run_until_idle();
        }
    }

    /// The virtual time since the test bed was made.
    pub fn now(&self) -> Duration {
        self.clock.now()
    }

    fn now_instant(&self) -> Instant {
        Instant::from_nanos(self.clock.now_nanos())
    }

    /// Starts a graceful shutdown as [`ServerHandle::shutdown`] does (no more accepts, 1001
    /// to every connection, queues flushed, what is left dropped after `grace`) and runs the
    /// worker, letting virtual time pass, until it has stopped: reading peers answer the
    /// close, the others hold their connection until `grace` has passed. Returns at once if
    /// the worker has stopped already.
    pub fn shutdown(&mut self, grace: Duration) {
        self.begin_shutdown(grace);
        let deadline = self.clock.now_nanos().saturating_add(grace.as_nanos() as u64);
        // One tick past the deadline: the worker drops what is left on the turn after it.
        self.advance_until(deadline.saturating_add(1), Self::is_stopped);
    }

    /// Starts the shutdown of [`TestBed::shutdown`] and runs the worker until idle, without
    /// letting time pass: the test then drives the peers (reads, budgets, answers) and
    /// [`TestBed::advance`]s to the end.
    pub fn begin_shutdown(&mut self, grace: Duration) {
        self.shared.stopping.store(true, std::sync::atomic::Ordering::Relaxed);
        let deadline = self.base + self.clock.now() + grace;
        self.shared.mailboxes[0].push(Command::Shutdown { deadline });
        self.run_until_idle();
    }

    /// Whether the worker has stopped: shut down, with every connection gone.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    // ---------------------------------------------------------------------------------------
    // Observing.

    /// The worker's counters and histograms, as [`ServerHandle::stats`] gives them (one
    /// worker), at once.
    pub fn stats(&self) -> Stats {
        Stats::merge(vec![self.worker.stats()])
    }

    /// A handle on the server, for what other threads do: publish, count connections,
    /// start a shutdown. What it posts is applied when the test bed next runs the worker;
    /// a client connection it opens ([`ServerHandle::connect`]) finds no server to answer
    /// in the test bed and fails at its timeout; [`ServerHandle::stats`] waits for that (up to its 1 s), so call it from
    /// another thread while this one runs the worker, or use [`TestBed::stats`].
    /// [`ServerHandle::shutdown`] returns at once (there is no thread to join); the worker
    /// stops when the test bed runs it. Its [`ServerHandle::backend`] names no real
    /// backend (`io_uring: false`, with the reason "in-memory test bed").
    pub fn handle(&self) -> ServerHandle {
        ServerHandle { shared: Arc::clone(&self.shared) }
    }

    /// Reads what the server sent to an upgraded peer, decodes it, and writes the peer's
    /// answers; `true` when it wrote any (the worker has more to do).
    fn pump(&mut self, peer: Peer) -> bool {
        let now = self.now_instant();
        let state = &mut self.peers[peer.0];
        let Some(client) = &mut state.ws else { return false };
        let bytes = self.net.read(state.id);
        if bytes.is_empty() {
            return false;
        }
        let answers = client.decode(now, bytes);
        !answers.is_empty() && self.net.write(state.id, &answers)
    }
}

impl Client {
    /// Decodes `bytes` after what was left undecoded; returns the frames the client answers
    /// with (pongs, its close reply, its close on a protocol error).
    fn decode(&mut self, now: Instant, bytes: Vec<u8>) -> Vec<u8> {
        if self.buf.is_empty() {
            self.buf = bytes;
        } else {
            self.buf.extend_from_slice(&bytes);
        }
        let mut input = Input::new(&mut self.buf);
        loop {
            match self.conn.handle_bytes(now, &mut input, &mut self.spill) {
                Ok(Some(event)) => self.inbox.push(Incoming::owned(event)),
                Ok(None) => break,
                Err(e) => {
                    self.error.get_or_insert(e);
                    break;
                }
            }
        }
        let consumed = input.consumed();
        self.buf.drain(..consumed);
        let mut out = Vec::new();
        self.conn.poll_transmit(&mut out);
        out
    }
}

impl fmt::Debug for TestBed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestBed")
            .field("now", &self.now())
            .field("peers", &self.peers.len())
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}
