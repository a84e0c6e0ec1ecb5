//! An in-memory backend with virtual time, for deterministic tests and fuzzing of the engine
//! without sockets (the engine's counterpart of quinn's in-memory `Pair` and smoltcp's
//! simulated net).
//!
//! [`MemBackend`] implements the whole [`Backend`] contract (the seven rules of
//! [`crate::backend`]) over a simulated net that the test drives through [`MemNet`]: the
//! test plays every peer — it connects, writes bytes, half-closes, resets, reads what the
//! server wrote, sets how much a send may take, completes the connects the worker starts —
//! and a [`VirtualClock`] stands in for the system clock.
//!
//! # Determinism
//!
//! Every driver operation queues its effect as an event in one FIFO; [`Backend::poll`]
//! reports the events that were queued when it was called, in that order, then
//! [`Completion::Woken`] if a wake-up is pending. Nothing depends on a thread, a real clock
//! or a hash order: the same operations give the same completions, byte for byte.
//!
//! Events for a stream the worker has not registered yet (accepted but not added, or a
//! connect not yet completed) wait beside it and join the FIFO, in their order, when it is
//! registered; events for a stream the worker removed are dropped.
//!
//! # Time
//!
//! A `poll` that has nothing to report never blocks: with a timeout it advances the clock by
//! that timeout (time jumps to the worker's next timer, as if it had waited), but never past
//! the limit the driver set with [`MemNet::set_time_limit`]; without a timeout it returns at
//! once. So a test says "run for 30 virtual seconds" by setting the limit and polling until
//! the clock reaches it, in milliseconds of real time.
//!
//! # What it does not model
//!
//! No congestion, no coalescing of writes (each driver write arrives as its own receives, cut
//! at [`MemNet::set_chunk_size`]), no loss, no reordering. The server's sends are taken within
//! a budget the driver sets ([`MemNet::set_write_budget`]; unlimited by default), not by a
//! socket buffer that drains by itself. Listeners are not modelled: the net accepts from its
//! creation until [`Backend::close_listeners`]. Memory is not bounded: the bytes the server
//! wrote stay until the driver reads them.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, IoSlice};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::backend::{Backend, Completion, SyscallCounts, Token, Waker};

/// The most bytes one [`Completion::Received`] carries unless the driver says otherwise.
const DEFAULT_CHUNK: usize = 64 << 10;

/// A shared virtual time in nanoseconds since an arbitrary epoch (0 at creation), which the
/// engine reads instead of the system clock in tests. Clones share the same time; it is
/// thread-safe and moves only when told to (by the driver, or by a [`MemBackend`] poll that
/// simulates waiting).
#[derive(Clone, Debug, Default)]
pub struct VirtualClock(Arc<AtomicU64>);

impl VirtualClock {
    /// A clock at 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The time now, in nanoseconds.
    pub fn now_nanos(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// The time now, as a duration since the epoch.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.now_nanos())
    }

    /// Moves the time forward by `by` (saturating at `u64::MAX` nanoseconds).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| Some(t.saturating_add(by)));
    }

    /// Sets the time to `nanos`. It may go backwards: a test that does so checks how its
    /// subject takes a clock that does.
    pub fn set(&self, nanos: u64) {
        self.0.store(nanos, Ordering::Release);
    }

    /// Moves the time forward to `nanos`, never back.
    fn advance_to(&self, nanos: u64) {
        self.0.fetch_max(nanos, Ordering::AcqRel);
    }
}

/// Names a simulated peer: a client the driver connected, or the server end of a connect the
/// worker started. Ids are given in order from 0 and never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub usize);

/// The stream [`Completion::Accepted`] hands over: a handle on the simulated peer, to pass
/// back to [`Backend::add_stream`]. Dropping it unregistered closes the connection (the peer
/// sees [`MemNet::is_closed`]), as dropping an accepted socket does.
pub struct MemStream {
    net: Arc<Mutex<Net>>,
    peer: PeerId,
}

impl MemStream {
    /// The peer this stream leads to.
    pub fn peer(&self) -> PeerId {
        self.peer
    }
}

impl std::fmt::Debug for MemStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemStream").field("peer", &self.peer).finish_non_exhaustive()
    }
}

impl Drop for MemStream {
    fn drop(&mut self) {
        let mut net = lock(&self.net);
        if let Some(peer) = net.peers.get_mut(self.peer.0)
            && peer.state == State::Accepted
        {
            peer.close();
        }
    }
}

/// Wakes a [`MemBackend`]: sets a flag that its next poll reports as [`Completion::Woken`].
#[derive(Debug, Default)]
pub struct MemWaker {
    woken: AtomicBool,
}

impl Waker for MemWaker {
    /// Never fails.
    fn wake(&self) -> io::Result<()> {
        self.woken.store(true, Ordering::Release);
        Ok(())
    }
}

/// Where a peer's connection stands, from the server's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Connected by the driver; its [`Completion::Accepted`] is not reported yet.
    Backlog,
    /// Reported as accepted; the worker holds its [`MemStream`] but has not added it.
    Accepted,
    /// A connect the worker started under this token; the driver has not completed it.
    Connecting(Token),
    /// Registered under this token.
    Open(Token),
    /// Closed by the server's side (removed, dropped, refused) or never connected.
    Gone,
}

/// What the driver queued for the server, before it is reported.
#[derive(Debug)]
enum Event {
    Accepted,
    Received(Vec<u8>),
    Writable,
    Closed(Option<io::ErrorKind>),
    Connected(Option<io::ErrorKind>),
}

#[derive(Debug)]
struct Peer {
    addr: SocketAddr,
    state: State,
    /// Events for a stream not registered yet, in order.
    parked: VecDeque<Event>,
    /// The driver shut its writing side, or reset: it sends nothing more.
    write_shut: bool,
    /// Sends fail with this (a reset, a failed connect).
    broken: Option<io::ErrorKind>,
    /// `Closed` (or a failed `Connected`) was reported: nothing more is (rule 5).
    done: bool,
    /// What the server wrote and the driver has not read.
    outbound: Vec<u8>,
    /// How many more bytes sends may take; `None`: unlimited.
    budget: Option<usize>,
    /// A send was cut short: the worker waits for `Writable`.
    wants_writable: bool,
}

impl Peer {
    fn new(addr: SocketAddr, state: State) -> Self {
        Self {
            addr,
            state,
            parked: VecDeque::new(),
            write_shut: false,
            broken: None,
            done: false,
            outbound: Vec::new(),
            budget: None,
            wants_writable: false,
        }
    }

    fn close(&mut self) {
        self.state = State::Gone;
        self.parked.clear();
    }
}

/// The simulated net, shared by the backend, the driver and accepted streams.
#[derive(Debug)]
struct Net {
    listening: bool,
    peers: Vec<Peer>,
    tokens: BTreeMap<Token, PeerId>,
    queue: VecDeque<(PeerId, Event)>,
    chunk: usize,
    send_owned: bool,
    time_limit: Option<u64>,
}

/// An event resolved for reporting, owned so the lock is released before the callback.
enum Ready {
    Accepted(MemStream, SocketAddr),
    Received(Token, Vec<u8>),
    Writable(Token),
    Closed(Token, Option<io::ErrorKind>),
    Connected(Token, Option<io::ErrorKind>),
}

fn lock(net: &Mutex<Net>) -> MutexGuard<'_, Net> {
    // A test that panicked while holding the lock left the net consistent: every change
    // under it is made whole before anything can panic.
    net.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Net {
    /// Queues `event` for `peer`, or parks it while the peer is not registered; drops it for
    /// a peer the server closed.
    fn push(&mut self, peer: PeerId, event: Event) {
        let Some(p) = self.peers.get_mut(peer.0) else { return };
        match p.state {
            State::Open(_) => self.queue.push_back((peer, event)),
            State::Backlog | State::Accepted | State::Connecting(_) => p.parked.push_back(event),
            State::Gone => {}
        }
    }

    /// Registers `peer` under `token` and moves its parked events to the FIFO.
    fn open(&mut self, peer: PeerId, token: Token) {
        let Some(p) = self.peers.get_mut(peer.0) else { return };
        p.state = State::Open(token);
        self.tokens.insert(token, peer);
        let parked = std::mem::take(&mut p.parked);
        self.queue.extend(parked.into_iter().map(|e| (peer, e)));
    }

    fn token_free(&self, token: Token) -> io::Result<()> {
        if self.tokens.contains_key(&token) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "token in use"));
        }
        Ok(())
    }

    /// The live stream under `token`, for a send.
    fn sendable(&mut self, token: Token) -> io::Result<&mut Peer> {
        let Some(&peer) = self.tokens.get(&token) else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "unknown token"));
        };
        let p = &mut self.peers[peer.0];
        if let State::Connecting(_) = p.state {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "still connecting"));
        }
        if let Some(kind) = p.broken {
            return Err(io::Error::from(kind));
        }
        Ok(p)
    }

    /// Pops the next event and resolves it against the peer's state now: `None` when the
    /// queue is empty, `Some(None)` for an event that is no longer due (its stream was
    /// removed or has ended).
    fn next(&mut self, shared: &Arc<Mutex<Self>>) -> Option<Option<Ready>> {
        let (id, event) = self.queue.pop_front()?;
        let peer = &mut self.peers[id.0];
        if let Event::Accepted = event {
            if peer.state != State::Backlog {
                return Some(None);
            }
            peer.state = State::Accepted;
            let stream = MemStream { net: Arc::clone(shared), peer: id };
            return Some(Some(Ready::Accepted(stream, peer.addr)));
        }
        let State::Open(token) = peer.state else { return Some(None) };
        if peer.done {
            return Some(None);
        }
        Some(Some(match event {
            Event::Accepted => return Some(None),
            Event::Received(data) => Ready::Received(token, data),
            Event::Writable => Ready::Writable(token),
            Event::Closed(error) => {
                peer.done = true;
                Ready::Closed(token, error)
            }
            Event::Connected(error) => {
                peer.done = error.is_some();
                Ready::Connected(token, error)
            }
        }))
    }
}

/// The driver's side of a [`MemBackend`]'s simulated net: the test plays the peers through
/// it. Clones share the net; it is `Send + Sync`, so a test may drive from several threads
/// (determinism then is the test's business).
///
/// Operations on an unknown [`PeerId`] do nothing and answer `false` (or nothing).
#[derive(Clone, Debug)]
pub struct MemNet {
    net: Arc<Mutex<Net>>,
    clock: VirtualClock,
}

impl MemNet {
    fn lock(&self) -> MutexGuard<'_, Net> {
        lock(&self.net)
    }

    /// The clock the backend advances while it simulates waiting.
    pub fn clock(&self) -> &VirtualClock {
        &self.clock
    }

    /// A client at `addr` connects: the backend reports [`Completion::Accepted`] for it
    /// after the events queued before.
    ///
    /// # Errors
    ///
    /// `ConnectionRefused` once the backend closed its listeners.
    pub fn connect_peer(&self, addr: SocketAddr) -> io::Result<PeerId> {
        let mut net = self.lock();
        if !net.listening {
            return Err(io::Error::from(io::ErrorKind::ConnectionRefused));
        }
        let id = PeerId(net.peers.len());
        net.peers.push(Peer::new(addr, State::Backlog));
        net.queue.push_back((id, Event::Accepted));
        Ok(id)
    }

    /// The peer sends `data`: reported as [`Completion::Received`]s of at most the chunk size
    /// each, in order. `false` (and nothing sent) when the peer shut its writing side, reset,
    /// or the server closed the connection.
    pub fn write(&self, peer: PeerId, data: &[u8]) -> bool {
        let mut net = self.lock();
        let chunk = net.chunk;
        match net.peers.get(peer.0) {
            Some(p) if !p.write_shut && p.state != State::Gone => {}
            _ => return false,
        }
        for piece in data.chunks(chunk) {
            net.push(peer, Event::Received(piece.to_vec()));
        }
        true
    }

    /// The peer shuts its writing side (a FIN): after the bytes written before, the server
    /// sees [`Completion::Closed`] with no error. The peer can still read. `false` when it
    /// had already shut or reset, or the server closed the connection.
    pub fn shutdown_write(&self, peer: PeerId) -> bool {
        self.end(peer, None)
    }

    /// The peer resets the connection: after the bytes written before, the server sees
    /// [`Completion::Closed`] with `ConnectionReset`; the server's sends fail with it from
    /// now on. `false` as for [`MemNet::shutdown_write`].
    pub fn reset(&self, peer: PeerId) -> bool {
        self.end(peer, Some(io::ErrorKind::ConnectionReset))
    }

    fn end(&self, peer: PeerId, error: Option<io::ErrorKind>) -> bool {
        let mut net = self.lock();
        let Some(p) = net.peers.get_mut(peer.0) else { return false };
        if p.write_shut || p.state == State::Gone {
            return false;
        }
        p.write_shut = true;
        if error.is_some() {
            p.broken = error;
        }
        net.push(peer, Event::Closed(error));
        true
    }

    /// Takes what the server wrote to `peer` so far (also after the server closed it: what
    /// was sent before a close is not lost).
    pub fn read(&self, peer: PeerId) -> Vec<u8> {
        let mut net = self.lock();
        net.peers.get_mut(peer.0).map(|p| std::mem::take(&mut p.outbound)).unwrap_or_default()
    }

    /// How many bytes the server's next sends to `peer` may take in all (`None`, the
    /// default: unlimited). A send beyond it is cut short (0 when the budget is spent); when
    /// one was, raising the budget above 0 reports [`Completion::Writable`].
    pub fn set_write_budget(&self, peer: PeerId, budget: Option<usize>) {
        let mut net = self.lock();
        let Some(p) = net.peers.get_mut(peer.0) else { return };
        p.budget = budget;
        if budget != Some(0) && std::mem::take(&mut p.wants_writable) {
            net.push(peer, Event::Writable);
        }
    }

    /// The most bytes one [`Completion::Received`] carries, for writes from now on (default
    /// 64 KiB; at least 1): small values exercise partial reads.
    pub fn set_chunk_size(&self, bytes: usize) {
        self.lock().chunk = bytes.max(1);
    }

    /// Whether [`Backend::send_owned`] takes buffers (default `false`: it answers `None`, as
    /// the epoll backend does). When on, it takes a buffer that fits the budget whole,
    /// answers "wait for `Writable`" when the budget is spent, and `None` (send the copying
    /// way) when only part of it fits.
    pub fn set_send_owned(&self, on: bool) {
        self.lock().send_owned = on;
    }

    /// The virtual time, in nanoseconds, that a waiting poll does not advance the clock past
    /// (`None`, the default: no limit). A driver that polls until the clock reaches the limit
    /// runs the worker for that long in virtual time.
    pub fn set_time_limit(&self, nanos: Option<u64>) {
        self.lock().time_limit = nanos;
    }

    /// The connects the worker started and the driver has not completed, in order: the peer
    /// that stands for each server, and the address the worker asked for.
    pub fn connects(&self) -> Vec<(PeerId, SocketAddr)> {
        let net = self.lock();
        let connecting = net.peers.iter().enumerate();
        connecting
            .filter(|(_, p)| matches!(p.state, State::Connecting(_)))
            .map(|(i, p)| (PeerId(i), p.addr))
            .collect()
    }

    /// Completes the worker's connect to `peer`: [`Completion::Connected`] reports the
    /// outcome before anything the driver already wrote as that server (which is delivered
    /// after it on success, dropped on failure). From then on `peer` is a peer like an
    /// accepted one. `false` when `peer` is not connecting (unknown, completed, or removed
    /// by the worker).
    pub fn complete_connect(&self, peer: PeerId, outcome: Result<(), io::ErrorKind>) -> bool {
        let mut net = self.lock();
        let Some(p) = net.peers.get_mut(peer.0) else { return false };
        let State::Connecting(token) = p.state else { return false };
        let error = outcome.err();
        if error.is_some() {
            p.broken = error;
            p.parked.clear();
        }
        p.parked.push_front(Event::Connected(error));
        net.open(peer, token);
        true
    }

    /// The peer registered under `token`, connecting or open.
    pub fn peer_of(&self, token: Token) -> Option<PeerId> {
        self.lock().tokens.get(&token).copied()
    }

    /// The token `peer` is registered under, connecting or open.
    pub fn token_of(&self, peer: PeerId) -> Option<Token> {
        match self.lock().peers.get(peer.0)?.state {
            State::Open(token) | State::Connecting(token) => Some(token),
            _ => None,
        }
    }

    /// Whether the worker has `peer` registered (added, or its connect completed).
    pub fn is_open(&self, peer: PeerId) -> bool {
        self.lock().peers.get(peer.0).is_some_and(|p| matches!(p.state, State::Open(_)))
    }

    /// Whether the server's side closed the connection to `peer`: removed, dropped when
    /// accepted, or refused when the listeners closed. The peer would read EOF after the bytes
    /// [`MemNet::read`] still returns.
    pub fn is_closed(&self, peer: PeerId) -> bool {
        self.lock().peers.get(peer.0).is_some_and(|p| p.state == State::Gone)
    }

    /// Whether the backend still accepts (it has not closed its listeners).
    pub fn is_listening(&self) -> bool {
        self.lock().listening
    }

    /// Events queued and not yet reported (those waiting for a stream to be registered are
    /// not counted); 0 means the next poll reports nothing but a pending wake-up.
    pub fn queued(&self) -> usize {
        self.lock().queue.len()
    }
}

/// The in-memory backend. See the module documentation.
#[derive(Debug)]
pub struct MemBackend {
    net: Arc<Mutex<Net>>,
    clock: VirtualClock,
    waker: Arc<MemWaker>,
    counts: SyscallCounts,
}

impl MemBackend {
    /// A backend over a new simulated net that listens from the start, and the driver's side
    /// of that net; `clock` is the time the backend advances while it simulates waiting.
    pub fn new(clock: VirtualClock) -> (Self, MemNet) {
        let net = Arc::new(Mutex::new(Net {
            listening: true,
            peers: Vec::new(),
            tokens: BTreeMap::new(),
            queue: VecDeque::new(),
            chunk: DEFAULT_CHUNK,
            send_owned: false,
            time_limit: None,
        }));
        let driver = MemNet { net: Arc::clone(&net), clock: clock.clone() };
        let waker = Arc::new(MemWaker::default());
        (Self { net, clock, waker, counts: SyscallCounts::default() }, driver)
    }

    /// Another handle on the driver's side of this backend's net.
    pub fn net(&self) -> MemNet {
        MemNet { net: Arc::clone(&self.net), clock: self.clock.clone() }
    }

    /// Reports one resolved event (the lock is not held: the callback may drop a stream).
    fn report<F: FnMut(Completion<'_, MemStream>)>(&mut self, ready: Ready, on: &mut F) {
        match ready {
            Ready::Accepted(stream, peer) => {
                self.counts.accepts += 1;
                on(Completion::Accepted { stream, peer, listener: 0 });
            }
            Ready::Received(token, mut data) => {
                self.counts.reads += 1;
                on(Completion::Received { token, data: &mut data });
            }
            Ready::Writable(token) => on(Completion::Writable { token }),
            Ready::Closed(token, error) => {
                self.counts.reads += 1;
                on(Completion::Closed { token, error: error.map(io::Error::from) });
            }
            Ready::Connected(token, error) => {
                on(Completion::Connected { token, error: error.map(io::Error::from) });
            }
        }
    }

    /// Nothing to report: the time a real wait would have taken passes, up to the limit.
    fn wait(&self, timeout: Option<Duration>) {
        let Some(timeout) = timeout else { return };
        let limit = lock(&self.net).time_limit;
        let now = self.clock.now_nanos();
        let to = now.saturating_add(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX));
        self.clock.advance_to(limit.map_or(to, |limit| to.min(limit)));
    }
}

impl Backend for MemBackend {
    type Waker = MemWaker;
    type Stream = MemStream;

    /// Drops `listener` (it is never accepted from: the simulated net accepts without one)
    /// and accepts again if [`Backend::close_listeners`] had stopped it.
    fn add_listener(&mut self, listener: TcpListener) -> io::Result<()> {
        drop(listener);
        lock(&self.net).listening = true;
        Ok(())
    }

    /// Stops accepting: [`MemNet::connect_peer`] is refused from now on, and peers connected
    /// but not yet reported as accepted are closed (their connection was in the backlog).
    fn close_listeners(&mut self) {
        self.counts.other += 1;
        let mut net = lock(&self.net);
        net.listening = false;
        for peer in &mut net.peers {
            if peer.state == State::Backlog {
                peer.close();
            }
        }
    }

    /// # Errors
    ///
    /// `InvalidInput` for a stream of another net or not (or no longer) waiting to be added;
    /// `AlreadyExists` when `token` is in use. The stream is closed then.
    fn add_stream(&mut self, token: Token, stream: MemStream) -> io::Result<()> {
        self.counts.other += 1;
        if !Arc::ptr_eq(&stream.net, &self.net) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a stream of another net"));
        }
        let mut net = lock(&self.net);
        if net.peers[stream.peer.0].state != State::Accepted {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not an accepted stream"));
        }
        net.token_free(token)?; // on error, `stream` drops after the lock and closes
        net.open(stream.peer, token);
        Ok(())
    }

    /// Records a connect to `addr` that the driver completes
    /// ([`MemNet::connects`], [`MemNet::complete_connect`]); sends on the token fail with
    /// `NotConnected` until then.
    ///
    /// # Errors
    ///
    /// `AlreadyExists` when `token` is in use.
    fn connect(&mut self, token: Token, addr: SocketAddr) -> io::Result<()> {
        self.counts.other += 1;
        let mut net = lock(&self.net);
        net.token_free(token)?;
        let id = PeerId(net.peers.len());
        net.peers.push(Peer::new(addr, State::Connecting(token)));
        net.tokens.insert(token, id);
        Ok(())
    }

    /// Closes the peer's connection ([`MemNet::is_closed`]); nothing more is reported for
    /// `token`, and events already queued for it are dropped.
    fn remove_stream(&mut self, token: Token) {
        let mut net = lock(&self.net);
        let Some(peer) = net.tokens.remove(&token) else { return };
        net.peers[peer.0].close();
        self.counts.other += 1;
    }

    /// Takes what fits the peer's budget into the bytes [`MemNet::read`] returns.
    ///
    /// # Errors
    ///
    /// `NotConnected` for an unknown token or a connect not completed; the reset's
    /// `ConnectionReset` (or the failed connect's error) once the stream broke.
    fn send(&mut self, token: Token, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.counts.writes += 1;
        let mut net = lock(&self.net);
        let peer = net.sendable(token)?;
        let offered: usize = bufs.iter().map(|b| b.len()).sum();
        let mut room = peer.budget.unwrap_or(usize::MAX).min(offered);
        let taken = room;
        for buf in bufs {
            let n = buf.len().min(room);
            peer.outbound.extend_from_slice(&buf[..n]);
            room -= n;
        }
        if let Some(budget) = &mut peer.budget {
            *budget -= taken;
        }
        peer.wants_writable |= taken < offered;
        Ok(taken)
    }

    /// `None` unless the driver turned it on ([`MemNet::set_send_owned`]); then: the whole
    /// buffer when it fits the budget (`Some(Ok(true))`, `buf` left empty with its
    /// capacity), `Some(Ok(false))` and a later [`Completion::Writable`] when the budget is
    /// spent, `None` when only part fits.
    fn send_owned(&mut self, token: Token, buf: &mut Vec<u8>) -> Option<io::Result<bool>> {
        let mut net = lock(&self.net);
        if !net.send_owned {
            return None;
        }
        self.counts.writes += 1;
        let peer = match net.sendable(token) {
            Ok(peer) => peer,
            Err(e) => return Some(Err(e)),
        };
        match peer.budget {
            Some(0) if !buf.is_empty() => {
                peer.wants_writable = true;
                Some(Ok(false))
            }
            Some(budget) if budget < buf.len() => None,
            budget => {
                peer.budget = budget.map(|b| b - buf.len());
                peer.outbound.append(buf);
                Some(Ok(true))
            }
        }
    }

    fn waker(&self) -> Arc<MemWaker> {
        Arc::clone(&self.waker)
    }

    /// Reports the events queued when called, in order, then [`Completion::Woken`] if a
    /// wake-up is pending. When it reported nothing it simulates the wait: the clock advances
    /// by `timeout`, at most to the driver's time limit (`None`: no change). Never blocks;
    /// never fails.
    fn poll<F: FnMut(Completion<'_, MemStream>)>(
        &mut self,
        timeout: Option<Duration>,
        mut on: F,
    ) -> io::Result<()> {
        self.counts.waits += 1;
        let mut reported = false;
        let due = lock(&self.net).queue.len();
        for _ in 0..due {
            let next = {
                let mut net = lock(&self.net);
                net.next(&self.net)
            };
            match next {
                Some(Some(ready)) => {
                    reported = true;
                    self.report(ready, &mut on);
                }
                Some(None) => {}
                None => break,
            }
        }
        if self.waker.woken.swap(false, Ordering::AcqRel) {
            reported = true;
            on(Completion::Woken);
        }
        if !reported {
            self.wait(timeout);
        }
        Ok(())
    }

    /// What an epoll backend would have counted as system calls: `waits` per poll, `reads`
    /// per receive and end reported, `writes` per send, `accepts` per stream accepted,
    /// `other` per registration, removal, connect and listener close.
    fn syscalls(&self) -> SyscallCounts {
        self.counts
    }
}

#[cfg(test)]
mod tests;
