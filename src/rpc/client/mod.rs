//! A client of `bidir.json.v1` or `bidir.bin.v1` ([`ClientBuilder::wire`]; docs/rpc.md):
//! calls, notifications, callback objects the server invokes, subscriptions, over one
//! connection run by an engine's worker, reconnected when it drops.
//!
//! ```no_run
//! use bidir::rpc::client::Client;
//!
//! let client = Client::connect("ws://127.0.0.1:9001/rpc")?;
//! let sum: i64 = client.call("Calc.Add", (2, 3))?;
//! client.subscribe("news", |event| println!("news: {event}"))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Threading: a client is used from any thread (`Client` is `Send + Sync + Clone`). Its
//! connection lives on one engine worker — a one-worker engine of its own, or the workers of
//! an engine given to [`ClientBuilder::engine`] — where the server's invocations of its
//! callbacks, its events and the continuations of [`Call::then`] run, one at a time. Calls
//! that would wait ([`Client::call`], [`Call::wait`], [`Client::subscribe`]) are refused with
//! [`CallError::WouldBlockWorker`] on a worker's thread, never a deadlock; continue with
//! [`Client::call_async`] and [`Call::then`] there. Messages sent from other threads are
//! gathered until the worker's next turn and go out together, as one batched message.
//!
//! Besides the worker, a client has a thread of its own that expires the calls' deadlines and
//! schedules reconnections; each reconnection attempt resolves the host and starts the
//! connection on a short-lived thread, so a stalled resolver never delays a timeout.
//!
//! Reconnection (on by default): when the connection drops, the calls in flight on it fail at
//! once with [`CallError::Disconnected`]; the client connects again after a delay that
//! doubles from the backoff's minimum to its maximum (jittered); calls and subscriptions made
//! meanwhile wait for the new connection, up to their timeout. On the new connection it first
//! subscribes again to its topics (a subscription made while disconnected is sent once), then
//! replays, in the order they were first made, the calls that passed a callback it still holds
//! and that the server answered `ok` (notifications that passed one: once sent) — the server's
//! lists get their callbacks back without the application calling `join` again — then sends
//! the calls made while disconnected, and last `release`s the callbacks those name that were
//! dropped meanwhile (the server builds a proxy for every callback a call names). The answers
//! to the replays are dropped ([`ClientStats::replayed`] counts them), except that a replay
//! the server refuses (`err`) is not replayed again. A call answered `ok` after every callback
//! it passed was dropped is not kept for replay.

mod call;
mod callback;
mod conn;
mod state;
mod supervisor;

pub use call::Call;
pub use callback::LocalCallback;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use bidir_protocol::CloseCode;
use bidir_protocol::rpc::{ErrorCode, Msg};

use self::call::Slot;
use self::callback::{CbState, encode_args};
use self::conn::ClientConn;
use self::state::{Backoff, Inner, Kind, OnEvent, Phase, Replay, State, settle_all};
use crate::client::{Connect, ConnectError};
use crate::cx::on_worker_thread;
use crate::rpc::{COMPRESS_ABOVE, CallError, DEFAULT_TIMEOUT, KeyMode, Psk, Value, ValueRef, Wire};
use crate::{Server, ServerConfig, ServerHandle};

/// The delays between reconnection attempts, by default: from 200 ms, doubling, up to 30 s.
pub const DEFAULT_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(200), Duration::from_secs(30));

/// How long a client's own engine waits, when it closes, for the server to answer its close.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A client of the application protocol: see the [module](self) for threading and
/// reconnection.
/// `Send + Sync + Clone` (clones share the connection); dropping the last clone closes it, as
/// [`Client::close`] does.
#[derive(Clone)]
pub struct Client {
    handle: Arc<Handle>,
}

/// What the last [`Client`] clone closes.
struct Handle {
    inner: Arc<Inner>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
}

/// A client's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Answers that came for no call in flight: after the call's timeout, or its cancel.
    pub late_answers: u64,
    /// Connections opened again after one dropped.
    pub reconnects: u64,
    /// Calls replayed on new connections for the callbacks they passed.
    pub replayed: u64,
    /// Messages from the server that failed authentication (each closed its connection).
    pub auth_failures: u64,
    /// Topics subscribed again after a reconnection whose missed events the server could not
    /// all send (no history, or not far enough back): each told to
    /// [`ClientBuilder::on_gap`].
    pub gaps: u64,
    /// Events dropped because they had come already (a topic's offset not past the last one
    /// received: an event both recovered and delivered live).
    pub duplicates: u64,
}

/// Options of a [`Client`]: [`Client::builder`].
pub struct ClientBuilder {
    options: Connect,
    wire: Wire,
    key: Option<(KeyMode, Psk)>,
    compress_above: Option<usize>,
    timeout: Duration,
    backoff: Option<Backoff>,
    heartbeat: Option<Duration>,
    engine: Option<ServerHandle>,
    on_gap: Option<OnGap>,
}

/// What the application is told of a topic whose missed events were not recovered.
pub(super) type OnGap = Arc<dyn Fn(&str) + Send + Sync>;

impl ClientBuilder {
    /// Called (on the client's worker) with a topic subscribed again after a reconnection
    /// whose missed events the server could not all send: the topic keeps no history there,
    /// the history does not reach back far enough, or it was lost (another node, a restart).
    /// Events from then on arrive as usual; what came before is for the application to
    /// reload. A topic with a history recovers by itself otherwise: the client keeps the
    /// position of the last event it got and subscribes from there (docs/rpc.md, "History
    /// and recovery"). Counted in [`ClientStats::gaps`] in any case.
    pub fn on_gap(mut self, on_gap: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.on_gap = Some(Arc::new(on_gap));
        self
    }

    /// How long a call waits for its answer, from the call. Default [`DEFAULT_TIMEOUT`] (30
    /// s). An answer that comes later is dropped and counted
    /// ([`ClientStats::late_answers`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Reconnects after a drop, waiting from `min` (doubling after each failed attempt) up to
    /// `max` between attempts, each delay drawn from its upper half at random. A connection
    /// that closes within `max` of opening counts as a failed attempt, so a server that drops
    /// every new connection is not retried at the minimum delay. On by default with
    /// [`DEFAULT_BACKOFF`].
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = Some(Backoff { min, max: max.max(min) });
        self
    }

    /// Turns reconnection off: once the connection drops, every call fails with
    /// [`CallError::Disconnected`], and the callbacks are released.
    pub fn no_reconnect(mut self) -> Self {
        self.backoff = None;
        self
    }

    /// Sends a heartbeat ping after this long without receiving anything, and drops the
    /// connection (then reconnects) when nothing comes back within the protocol's pong
    /// timeout. Default 30 s; `None` turns heartbeats off.
    pub fn heartbeat(mut self, interval: Option<Duration>) -> Self {
        self.heartbeat = interval;
        self
    }

    /// Adds a header to the upgrade request (authorization, cookies); sent again on every
    /// reconnection.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.options = self.options.header(name, value);
        self
    }

    /// The encoding to speak: [`Wire::Json`] (`bidir.json.v1`, the default) or [`Wire::Bin`]
    /// (`bidir.bin.v1`). Only it is offered; a server that does not speak it refuses the
    /// connection.
    pub fn wire(mut self, wire: Wire) -> Self {
        self.wire = wire;
        self
    }

    /// Encrypts every message with keys of each connection's own, derived from `psk` in the
    /// upgrade in `mode` (docs/rpc.md, "Keys"): [`KeyMode::Psk`] (HKDF over both sides'
    /// nonces) or [`KeyMode::Ecdhe`] (an X25519 exchange authenticated by `psk`, so a leaked
    /// `psk` does not decrypt recorded connections). Implies [`Wire::Bin`]. A server with
    /// another key refuses the upgrade ([`ConnectError::Refused`], 403); an answer that does
    /// not prove the key fails the connect ([`ConnectError::Rejected`]) — before any message
    /// either way. A message that fails authentication closes the connection with 1008.
    pub fn key(mut self, mode: KeyMode, psk: Psk) -> Self {
        self.key = Some((mode, psk));
        self.wire = Wire::Bin;
        self
    }

    /// Compresses `bidir.bin.v1` messages longer than `bytes` with LZ4 when that makes them
    /// smaller; `None`: never. Default [`COMPRESS_ABOVE`] (512): it pays on links of a
    /// gigabit or slower, not on loopback or faster local networks
    /// ([`Services::compress_above`](crate::rpc::Services::compress_above)).
    pub fn compress_above(mut self, bytes: Option<usize>) -> Self {
        self.compress_above = bytes;
        self
    }

    /// Changes the other options of the connection (timeouts, limits, deflate); the
    /// subprotocol of the client's encoding ([`ClientBuilder::wire`]) is offered whatever `f`
    /// does, and no other.
    pub fn options(mut self, f: impl FnOnce(Connect) -> Connect) -> Self {
        self.options = f(self.options);
        self
    }

    /// Runs the connection on `engine`'s workers (a server's, or a client engine shared by
    /// many clients: `Server::builder().start()` with no address), instead of a one-worker
    /// engine of its own. Closing the client then closes its connection, not the engine.
    /// Connect from a thread that is not one of that engine's workers: the connection opens
    /// on one of them, which cannot happen while its thread waits in [`ClientBuilder::connect`]
    /// (the connect would end with [`ConnectError::Timeout`]).
    pub fn engine(mut self, engine: ServerHandle) -> Self {
        self.engine = Some(engine);
        self
    }

    /// Connects, blocking until the connection is open. A failure of this first connection is
    /// returned, not retried.
    ///
    /// # Errors
    ///
    /// [`ConnectError`]: the connection or the handshake failed or timed out, the server
    /// refused (it must speak the client's encoding), or the client's engine could not start
    /// ([`ConnectError::Io`]).
    pub fn connect(self) -> Result<Client, ConnectError> {
        let mut options = self.options;
        options.protocols = vec![self.wire.protocol().to_owned()];
        let mut config = (*options.config).clone();
        config.ping_interval = self.heartbeat;
        options = options.config(config);
        let wait = options.connect_timeout + options.handshake_timeout + Duration::from_secs(1);
        let (engine, own_engine) = match self.engine {
            Some(engine) => (engine, false),
            None => (own_engine()?, true),
        };
        let inner = Arc::new(Inner {
            state: Mutex::new(State::new(self.wire)),
            changed: Condvar::new(),
            options,
            wire: self.wire,
            key: self.key,
            compress_above: self.compress_above,
            auth_failures: Arc::default(),
            engine,
            own_engine,
            timeout: self.timeout,
            backoff: self.backoff,
            late_answers: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            on_gap: self.on_gap,
            gaps: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
        });
        let client = Client {
            handle: Arc::new(Handle {
                inner: Arc::clone(&inner),
                supervisor: Mutex::new(None),
                closed: AtomicBool::new(false),
            }),
        };
        ClientConn::start(&inner, 0)?;
        client.wait_open(wait)?;
        let supervised = Arc::clone(&inner);
        let supervisor = std::thread::Builder::new()
            .name("bidir-rpc-client".into())
            .spawn(move || supervisor::run(&supervised))?;
        *client.handle.supervisor.lock().unwrap_or_else(PoisonError::into_inner) = Some(supervisor);
        Ok(client)
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", self.options.url())
            .field("timeout", &self.timeout)
            .field("backoff", &self.backoff)
            .field("heartbeat", &self.heartbeat)
            .finish_non_exhaustive()
    }
}

/// A one-worker engine that runs only client connections.
fn own_engine() -> Result<ServerHandle, ConnectError> {
    let config = ServerConfig { workers: Some(1), pin_workers: false, ..Default::default() };
    Ok(Server::builder().config(config).start()?)
}

impl Client {
    /// Connects to `url` (`ws://…`) with the default options, offering `bidir.json.v1`;
    /// blocks until the connection is open.
    ///
    /// # Errors
    ///
    /// As [`ClientBuilder::connect`], and [`ConnectError::Url`].
    pub fn connect(url: &str) -> Result<Self, ConnectError> {
        Self::builder(url)?.connect()
    }

    /// Options for a client of `url`: answer timeout, reconnection, heartbeats, headers, the
    /// engine to run on.
    ///
    /// # Errors
    ///
    /// [`ConnectError::Url`] for a URL that cannot be connected to.
    pub fn builder(url: &str) -> Result<ClientBuilder, ConnectError> {
        Ok(ClientBuilder {
            options: Connect::new(url)?,
            wire: Wire::Json,
            key: None,
            compress_above: Some(COMPRESS_ABOVE),
            timeout: DEFAULT_TIMEOUT,
            backoff: Some(Backoff { min: DEFAULT_BACKOFF.0, max: DEFAULT_BACKOFF.1 }),
            heartbeat: Some(Duration::from_secs(30)),
            engine: None,
            on_gap: None,
        })
    }

    /// Calls `method` (`Service.method`) with `args` — a tuple of its parameters, `(a,)` for
    /// one, `()` for none — and waits for the answer, up to the answer timeout.
    ///
    /// # Errors
    ///
    /// As [`Call::wait_timeout`]; [`CallError::WouldBlockWorker`] at once (nothing sent) on a
    /// worker's thread.
    pub fn call<A: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        args: A,
    ) -> Result<R, CallError> {
        if on_worker_thread() {
            return Err(CallError::WouldBlockWorker);
        }
        self.call_async(method, args).block(self.handle.inner.timeout)
    }

    /// Calls `method` with `args` without waiting: read the answer from the [`Call`]. While
    /// the client is disconnected the call waits for the next connection (up to its timeout).
    /// Callable on any thread, a worker's included.
    pub fn call_async<A: Serialize, R: DeserializeOwned>(&self, method: &str, args: A) -> Call<R> {
        let inner = &self.handle.inner;
        let (args, passed) = match encode_args(&args, inner) {
            Ok(encoded) => encoded,
            Err(e) => return Call::failed(e, Arc::clone(inner)),
        };
        let kind = replay_of(method, &args, &passed, false).map_or(Kind::Plain, Kind::Replayable);
        let slot = Arc::new(Slot::new());
        let wire = inner.wire;
        let write = |id, out: &mut Vec<u8>| {
            wire.encode(Msg::Call { id, method: method.into(), args: args.as_ref() }, out);
        };
        let sent = inner.lock().request(inner, write, Some(Arc::clone(&slot)), kind);
        drop(passed);
        match sent {
            Ok(id) => Call::new(id, slot, Arc::clone(inner)),
            Err(e) => Call::failed(e, Arc::clone(inner)),
        }
    }

    /// Calls `method` with `args` wanting no answer. Callable on any thread.
    ///
    /// # Errors
    ///
    /// [`CallError::Disconnected`] while there is no connection (nothing is kept for the next
    /// one); [`CallError::Json`] for arguments that cannot be written.
    pub fn notify<A: Serialize>(&self, method: &str, args: A) -> Result<(), CallError> {
        let inner = &self.handle.inner;
        let (args, passed) = encode_args(&args, inner)?;
        let sent = {
            let mut state = inner.lock();
            let (wire, args_ref) = (inner.wire, args.as_ref());
            let sent = state.send(|out| {
                wire.encode(Msg::Notify { method: method.into(), args: args_ref }, out);
            });
            if sent && let Some(replay) = replay_of(method, &args, &passed, true) {
                let key = state.reserve_id();
                state.replay.insert(key, replay);
            }
            sent
        };
        drop(passed);
        if sent { Ok(()) } else { Err(CallError::Disconnected) }
    }

    /// Makes a callback object whose invocations by the server run `dispatch` on the
    /// client's worker: the method's name and its arguments (an array, in the client's
    /// encoding) in; the answer out — `Ok(None)` for no value (null when the server wants
    /// one), else a [`Value`] made with [`Wire::value`] — or an error code and
    /// message the server's call fails with. A panic in `dispatch` answers
    /// [`ErrorCode::Internal`]. Pass it to the server as an argument of a call.
    pub fn callback_with<T: ?Sized>(
        &self,
        dispatch: impl Fn(&str, ValueRef<'_>) -> Result<Option<Value>, (ErrorCode, String)>
        + Send
        + Sync
        + 'static,
    ) -> LocalCallback<T> {
        let inner = &self.handle.inner;
        let mut state = inner.lock();
        let id = state.next_callback;
        state.next_callback += 1;
        let cb = Arc::new(CbState {
            id,
            released: AtomicBool::new(state.is_closed()),
            dispatch: Box::new(dispatch),
            inner: Arc::clone(inner),
        });
        state.callbacks.insert(id, Arc::downgrade(&cb));
        drop(state);
        LocalCallback::new(cb)
    }

    /// Subscribes to `topic`: `on_event` runs on the client's worker with each event's data,
    /// in the order they come, until [`Client::unsubscribe`]. Subscribing again replaces the
    /// handler (events go to the new one as soon as the call is made). Kept across
    /// reconnections (subscribed again on each new connection; events published while
    /// disconnected are missed). Made while disconnected, it waits for the next connection,
    /// up to the answer timeout.
    ///
    /// # Errors
    ///
    /// The server's refusal ([`CallError::Remote`], e.g. [`ErrorCode::Unauthorized`]), or as
    /// [`Client::call`]. A failed subscription leaves the topic as it was: a handler it
    /// replaced is put back — the server still holds the subscription it answered before (or
    /// gets it again on the next connection) — and a topic that was new is forgotten (events
    /// of a topic the client does not hold, should the server subscribe after a timeout, are
    /// dropped). Unless the topic was subscribed or unsubscribed again meanwhile: the last
    /// call stands.
    pub fn subscribe(
        &self,
        topic: &str,
        on_event: impl Fn(ValueRef<'_>) + Send + Sync + 'static,
    ) -> Result<(), CallError> {
        if on_worker_thread() {
            return Err(CallError::WouldBlockWorker);
        }
        let inner = &self.handle.inner;
        let on_event: OnEvent = Arc::new(on_event);
        let slot = Arc::new(Slot::new());
        let (sent, replaced) = {
            let mut state = inner.lock();
            let replaced = state.topics.insert(topic.to_owned(), Arc::clone(&on_event));
            let wire = inner.wire;
            let write = |id, out: &mut Vec<u8>| {
                wire.encode(Msg::Subscribe { id, topic: topic.into(), since: None }, out);
            };
            let kind = Kind::Subscribe(topic.into());
            (state.request(inner, write, Some(Arc::clone(&slot)), kind), replaced)
        };
        let answer = match sent {
            // `null`, or a topic's position (kept by the connection when it came).
            Ok(id) => Call::<serde::de::IgnoredAny>::new(id, slot, Arc::clone(inner))
                .block(inner.timeout)
                .map(|_| ()),
            Err(e) => Err(e),
        };
        let dropped = if answer.is_err() {
            let mut state = inner.lock();
            let ours = state.topics.get(topic).is_some_and(|h| Arc::ptr_eq(h, &on_event));
            match (ours, replaced) {
                (false, replaced) => replaced,
                (true, Some(previous)) => state.topics.insert(topic.to_owned(), previous),
                (true, None) => state.topics.remove(topic),
            }
        } else {
            replaced
        };
        // User code (what the handlers captured) is dropped outside the lock.
        drop(dropped);
        answer
    }

    /// Unsubscribes from `topic`; returns whether it was subscribed. While disconnected the
    /// topic is only forgotten (it is not subscribed again).
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub fn unsubscribe(&self, topic: &str) -> Result<bool, CallError> {
        if on_worker_thread() {
            return Err(CallError::WouldBlockWorker);
        }
        let inner = &self.handle.inner;
        let slot = Arc::new(Slot::new());
        let (removed, sent) = {
            let mut state = inner.lock();
            let removed = state.topics.remove(topic);
            state.positions.remove(topic);
            let sent = match state.phase {
                Phase::Open(_) => {
                    let wire = inner.wire;
                    let write = |id, out: &mut Vec<u8>| {
                        wire.encode(Msg::Unsubscribe { id, topic: topic.into() }, out);
                    };
                    Some(state.request(inner, write, Some(Arc::clone(&slot)), Kind::Plain))
                }
                _ => None,
            };
            (removed, sent)
        };
        match sent {
            Some(Ok(id)) => Call::<bool>::new(id, slot, Arc::clone(inner)).block(inner.timeout),
            Some(Err(e)) => Err(e),
            None => Ok(removed.is_some()),
        }
    }

    /// Publishes `data` to `topic`'s subscribers, where the server allows clients to
    /// (`["pub", topic, data]`; a server that does not drops it). Callable on any thread.
    ///
    /// # Errors
    ///
    /// [`CallError::Disconnected`] while there is no connection; [`CallError::Json`] for data
    /// that cannot be written.
    pub fn publish<T: Serialize>(&self, topic: &str, data: &T) -> Result<(), CallError> {
        let wire = self.handle.inner.wire;
        let data = wire.value(data).map_err(|e| CallError::Json(e.0))?;
        let sent = self.handle.inner.lock().send(|out| {
            wire.encode(Msg::Publish { topic: topic.into(), data: data.as_ref() }, out);
        });
        if sent { Ok(()) } else { Err(CallError::Disconnected) }
    }

    /// Whether the connection is open now.
    pub fn is_connected(&self) -> bool {
        matches!(self.handle.inner.lock().phase, Phase::Open(_))
    }

    /// The client's counters.
    pub fn stats(&self) -> ClientStats {
        let inner = &self.handle.inner;
        ClientStats {
            late_answers: inner.late_answers.load(Ordering::Relaxed),
            reconnects: inner.reconnects.load(Ordering::Relaxed),
            replayed: inner.replayed.load(Ordering::Relaxed),
            auth_failures: inner.auth_failures.load(Ordering::Relaxed),
            gaps: inner.gaps.load(Ordering::Relaxed),
            duplicates: inner.duplicates.load(Ordering::Relaxed),
        }
    }

    /// Closes the client for every clone: calls waiting fail with
    /// [`CallError::Disconnected`] (continuations run on the worker first), callbacks are
    /// released, topics and replays are forgotten, the connection closes (1000), the client's
    /// thread ends and its own engine stops; later calls fail with
    /// [`CallError::Disconnected`]. Blocks until then, except on the client's own worker,
    /// where its engine's thread is left to end by itself, and on the client's own thread
    /// (a continuation that held the last clone dropped there, when the engine could not
    /// take it), which ends once this returns. Idempotent; dropping the last clone does it.
    ///
    /// Handlers that capture a `Client` (an `on_event`, a callback's dispatch) keep it alive:
    /// close it explicitly then.
    pub fn close(&self) {
        self.handle.close();
    }

    /// Waits until the first connection opens or fails, up to `wait`.
    fn wait_open(&self, wait: Duration) -> Result<(), ConnectError> {
        let inner = &self.handle.inner;
        let deadline = Instant::now() + wait;
        let mut state = inner.lock();
        loop {
            match &mut state.phase {
                Phase::Open(_) => return Ok(()),
                Phase::Failed(error) => {
                    let error = error.take().unwrap_or(ConnectError::Closed);
                    drop(state);
                    self.close();
                    return Err(error);
                }
                _ => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(state);
                self.close();
                return Err(ConnectError::Timeout);
            }
            state = inner.changed.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", self.handle.inner.options.url())
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl Handle {
    fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = &self.inner;
        let (taken, phase, ended) = {
            let mut state = inner.lock();
            state.generation += 1;
            let phase = std::mem::replace(&mut state.phase, Phase::Closed);
            let taken = state.take_all();
            let ended = state.end();
            inner.changed.notify_all();
            (taken, phase, ended)
        };
        let supervisor = self.supervisor.lock().unwrap_or_else(PoisonError::into_inner).take();
        // On the supervisor's own thread (it dropped a continuation holding the last clone),
        // joining would wait for itself: it sees the client closed and ends after this.
        if let Some(supervisor) = supervisor
            && supervisor.thread().id() != std::thread::current().id()
        {
            let _ = supervisor.join();
        }
        ended.release();
        settle_all(taken, &CallError::Disconnected, inner, false);
        if let Phase::Open(conn) = phase {
            let _ = conn.close(CloseCode::NORMAL, "client closed");
        }
        if inner.own_engine {
            inner.engine.shutdown(CLOSE_GRACE);
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.close();
    }
}

/// What to replay of a call that passed `passed`, if any.
fn replay_of(method: &str, args: &Value, passed: &[Arc<CbState>], notify: bool) -> Option<Replay> {
    (!passed.is_empty()).then(|| Replay {
        method: method.into(),
        args: args.clone(),
        callbacks: passed.iter().map(|cb| cb.id).collect(),
        notify,
    })
}

/// The client behind the declared services' proxies (`<Trait>Client::new(&client)`).
impl crate::rpc::Caller for Client {
    type Call<R> = Call<R>;
    type Local<T: ?Sized> = LocalCallback<T>;

    fn call<A: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        args: A,
    ) -> Result<R, CallError> {
        Self::call(self, method, args)
    }

    fn call_async<A: Serialize, R: DeserializeOwned>(&self, method: &str, args: A) -> Call<R> {
        Self::call_async(self, method, args)
    }
}

impl Client {
    /// Registers `object` as a callback object of the declared interface `T`
    /// (`#[bidir::callback]`), to pass as an argument: its methods run on the client's worker
    /// when the server invokes or calls them; as [`Client::callback_with`] otherwise.
    pub fn callback<T>(&self, object: Arc<T>) -> LocalCallback<T>
    where
        T: ?Sized + crate::rpc::CallbackInterface + Send + Sync + 'static,
    {
        self.callback_with(move |method, args| object.dispatch(method, args))
    }
}
