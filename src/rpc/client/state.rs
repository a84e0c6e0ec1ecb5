//! What every part of a client shares: the connection's phase, the requests in flight, the
//! messages gathered for the worker, the callbacks, the topics and the calls to replay.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use bidir_protocol::rpc::{Msg, Position};

use super::call::Slot;
use super::callback::CbState;
use super::conn::ClientConn;
use crate::client::{Connect, ConnectError};
use crate::rpc::CallError;
use crate::rpc::gather::Gathering;
use crate::rpc::wire::{Egress, Value, ValueRef, Wire};
use crate::rpc::{KeyMode, Psk};
use crate::{ConnHandle, Context, ServerHandle};

/// What a subscriber runs for each event of its topic.
pub(super) type OnEvent = Arc<dyn Fn(ValueRef<'_>) + Send + Sync>;

/// The client's callbacks by id, held weakly: the application's
/// [`LocalCallback`](super::LocalCallback) clones own them.
pub(super) type Callbacks = HashMap<u64, Weak<CbState>>;

/// Whether callback `id` is live: held by the application and not released by the server.
fn is_live(callbacks: &Callbacks, id: u64) -> bool {
    callbacks.get(&id).is_some_and(|cb| cb.strong_count() > 0)
}

/// The reconnection delays: doubling from `min` after each failed attempt, capped at `max`,
/// each drawn at random from its upper half ("equal jitter"), so that clients cut off together
/// do not all come back in the same instant.
#[derive(Clone, Copy, Debug)]
pub(super) struct Backoff {
    pub(super) min: Duration,
    pub(super) max: Duration,
}

impl Backoff {
    /// The delay before the next attempt after `attempt` failed ones (a connection that did
    /// not last counts as failed).
    pub(super) fn delay(&self, attempt: u32) -> Duration {
        let full = self.min.saturating_mul(1 << attempt.min(20)).min(self.max).max(self.min);
        let half = full / 2;
        let mut random = [0; 8];
        let _ = getrandom::fill(&mut random);
        let nanos = half.as_nanos() as u64;
        half + Duration::from_nanos(u64::from_le_bytes(random) % (nanos + 1))
    }
}

/// The client's state and what does not change, shared by the user's handles, the connection's
/// handler on the worker and the supervisor thread.
pub(super) struct Inner {
    pub(super) state: Mutex<State>,
    /// Told when the phase changes or the first request comes: the supervisor and a caller
    /// waiting for the first connection wait on it.
    pub(super) changed: Condvar,
    pub(super) options: Connect,
    /// The encoding the client speaks.
    pub(super) wire: Wire,
    /// Encrypted with keys from this, exchanged in this mode on each connection.
    pub(super) key: Option<(KeyMode, Psk)>,
    pub(super) compress_above: Option<usize>,
    /// Messages that failed authentication, over every connection.
    pub(super) auth_failures: Arc<AtomicU64>,
    pub(super) engine: ServerHandle,
    /// The engine was started for this client: it stops with it.
    pub(super) own_engine: bool,
    pub(super) timeout: Duration,
    /// `None`: no reconnection.
    pub(super) backoff: Option<Backoff>,
    pub(super) late_answers: AtomicU64,
    pub(super) reconnects: AtomicU64,
    pub(super) replayed: AtomicU64,
    pub(super) on_gap: Option<super::OnGap>,
    pub(super) gaps: AtomicU64,
    pub(super) duplicates: AtomicU64,
}

impl Inner {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the worker of the client's connection (or of its last one).
    pub(super) fn run_on_worker(&self, worker: usize, f: impl FnOnce() + Send + 'static) {
        self.engine.run_on(worker, f);
    }

    /// Forgets request `id`: its answer, if one comes, is dropped as late. With `cancel`, a
    /// request already sent is cancelled on the server (`["cancel", id]`); one not sent yet
    /// never will be.
    pub(super) fn forget(&self, id: u64, cancel: bool) {
        let entry = {
            let mut state = self.lock();
            let entry = state.calls.remove(&id);
            if cancel && entry.as_ref().is_some_and(|e| e.unsent.is_none()) {
                let wire = state.wire;
                state.send(|out| wire.encode(Msg::Cancel { id }, out));
            }
            entry
        };
        // Its continuation (user code, maybe the last `Client`) is dropped outside the lock.
        drop(entry);
    }
}

/// Where the connection stands.
pub(super) enum Phase {
    /// An attempt to connect is under way.
    Connecting,
    Open(ConnHandle),
    /// The next attempt is due at `at`.
    Waiting {
        at: Instant,
    },
    /// The first connection could not be opened (taken by the caller of `connect`).
    Failed(Option<ConnectError>),
    /// For good: the client was closed, or its connection ended with reconnection off.
    Closed,
}

/// A request waiting for its answer (or for a connection to be sent on).
pub(super) struct Entry {
    pub(super) deadline: Instant,
    /// Where the answer goes; `None` for the client's own requests (re-subscriptions,
    /// replays), whose answers are dropped.
    pub(super) slot: Option<Arc<Slot>>,
    /// The encoded message while it waits for a connection.
    pub(super) unsent: Option<Vec<u8>>,
    pub(super) kind: Kind,
}

/// What a request's answer changes besides its slot.
pub(super) enum Kind {
    /// Nothing.
    Plain,
    /// A call that passed callbacks: kept for replay once answered `ok`, if one of them still
    /// lives then.
    Replayable(Replay),
    /// The replay of the call kept under this key: forgotten when the server refuses it now
    /// (`err`), since it would refuse it on every connection.
    Replayed(u64),
    /// The application's subscription to this topic: while it waits for a connection, the
    /// topic is not subscribed again on its own (that would send `sub` twice).
    Subscribe(Box<str>),
    /// The topic subscribed again on a new connection, from its last position: an answer
    /// that says the events missed were not all sent is a gap.
    Resubscribe(Box<str>),
}

/// A call that passed callbacks, sent again on each new connection while one of them lives.
pub(super) struct Replay {
    pub(super) method: Box<str>,
    pub(super) args: Value,
    pub(super) callbacks: Vec<u64>,
    /// A notification (no answer wanted).
    pub(super) notify: bool,
}

impl Replay {
    /// Whether one of its callbacks is live: only then is it worth sending again.
    pub(super) fn is_wanted(&self, callbacks: &Callbacks) -> bool {
        self.callbacks.iter().any(|&id| is_live(callbacks, id))
    }

    /// Its callbacks that are no longer live: the server, which builds a proxy for each
    /// callback a call names, must be told (`release`) after the call.
    fn dead<'a>(&'a self, callbacks: &'a Callbacks) -> impl Iterator<Item = u64> + 'a {
        self.callbacks.iter().copied().filter(|&id| !is_live(callbacks, id))
    }
}

/// What a client lets go of when it ends for good, taken under the lock and let go outside
/// it (handlers and dispatches are user code; the last reference to a callback locks the
/// state when it drops).
pub(super) struct Ended {
    callbacks: Vec<Arc<CbState>>,
    topics: HashMap<String, OnEvent>,
}

impl State {
    /// A `sub` answer for `topic`: `null`, or its history's position (docs/rpc.md). Keeps the
    /// position (the events recovered before it may have moved it already); returns `false`
    /// when the answer says the missed events were not all sent.
    pub(super) fn subscribed(&mut self, topic: &str, answer: &Value) -> bool {
        let Ok(Some(at)) = answer.decode::<Option<Subscribed>>() else { return true };
        let position = Position { offset: at.offset, epoch: at.epoch.into() };
        match self.positions.get_mut(topic) {
            Some(p) if p.epoch == position.epoch => p.offset = p.offset.max(position.offset),
            _ => {
                self.positions.insert(topic.to_owned(), position);
            }
        }
        at.recovered
    }

    /// An event of `topic` at `at`, its position kept unless it came already (its offset is
    /// not past the last one received in its epoch).
    pub(super) fn advance(&mut self, topic: &str, at: &Position<'_>) -> Advance {
        let advance = match self.positions.get_mut(topic) {
            Some(p) if p.epoch == at.epoch => {
                if at.offset <= p.offset {
                    return Advance::Duplicate;
                }
                p.offset = at.offset;
                return Advance::Next;
            }
            // The history was lost while subscribed (the server's node missed events).
            Some(_) => Advance::NewEpoch,
            None => Advance::Next,
        };
        let at = Position { offset: at.offset, epoch: at.epoch.clone().into_owned().into() };
        self.positions.insert(topic.to_owned(), at);
        advance
    }
}

/// What an event with a position is to its topic ([`State::advance`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Advance {
    /// The next one: delivered.
    Next,
    /// One received already: dropped.
    Duplicate,
    /// The first of a new epoch: delivered, and a gap (what the old one had after the last
    /// event received is lost).
    NewEpoch,
}

/// A `sub` answer for a topic with a history.
#[derive(Debug)]
struct Subscribed {
    epoch: String,
    offset: u64,
    recovered: bool,
}

impl<'de> serde::Deserialize<'de> for Subscribed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let field = |name| map.get(name).ok_or_else(|| D::Error::missing_field(name));
        Ok(Self {
            epoch: field("epoch")?.as_str().ok_or_else(|| D::Error::custom("epoch"))?.to_owned(),
            offset: field("offset")?.as_u64().ok_or_else(|| D::Error::custom("offset"))?,
            recovered: field("recovered")?
                .as_bool()
                .ok_or_else(|| D::Error::custom("recovered"))?,
        })
    }
}

impl Ended {
    /// Marks the callbacks released — they will not be invoked
    /// ([`LocalCallback::is_released`](super::LocalCallback::is_released)) — and drops the
    /// topics' handlers.
    pub(super) fn release(self) {
        for cb in &self.callbacks {
            cb.released.store(true, Ordering::Release);
        }
        drop(self.topics);
    }
}

/// Messages gathered from user threads until the worker sends them (one flush posted per
/// gathering), in batches within the limits of [`Gathering`].
pub(super) struct Outgoing {
    gathering: Gathering,
    flush_posted: bool,
}

impl Outgoing {
    fn new(wire: Wire) -> Self {
        Self { gathering: Gathering::new(wire), flush_posted: false }
    }

    /// Sends everything gathered through `egress`, oldest first.
    pub(super) fn flush(&mut self, cx: &mut Context<'_>, egress: &mut Egress) {
        egress.flush(cx, &mut self.gathering);
        self.flush_posted = false;
    }
}

pub(super) struct State {
    /// The encoding every message is written in.
    pub(super) wire: Wire,
    pub(super) phase: Phase,
    /// Numbers the connection attempts: events of an older one are ignored.
    pub(super) generation: u64,
    /// Failed attempts in a row; a connection that did not last counts as one.
    pub(super) attempt: u32,
    /// When the open connection opened.
    opened_at: Instant,
    pub(super) opened_once: bool,
    /// The worker of the connection (or of the last one): continuations run there.
    pub(super) worker: usize,
    next_id: u64,
    /// Requests by id. Ids grow with time and every deadline is its request's creation plus
    /// the same timeout, so the first entry is always the next to expire.
    pub(super) calls: BTreeMap<u64, Entry>,
    pub(super) out: Outgoing,
    pub(super) callbacks: Callbacks,
    pub(super) next_callback: u64,
    /// The calls to replay, by their first id: in the order they were made.
    pub(super) replay: BTreeMap<u64, Replay>,
    pub(super) topics: HashMap<String, OnEvent>,
    /// The position of the last event received, per topic with a history.
    pub(super) positions: HashMap<String, Position<'static>>,
}

impl State {
    pub(super) fn new(wire: Wire) -> Self {
        Self {
            wire,
            phase: Phase::Connecting,
            generation: 0,
            attempt: 0,
            opened_at: Instant::now(),
            opened_once: false,
            worker: 0,
            next_id: 0,
            calls: BTreeMap::new(),
            out: Outgoing::new(wire),
            callbacks: HashMap::new(),
            next_callback: 1,
            replay: BTreeMap::new(),
            topics: HashMap::new(),
            positions: HashMap::new(),
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed | Phase::Failed(_))
    }

    /// Queues a message written by `write` for the open connection: `false` (nothing queued)
    /// without one. The first of a gathering asks the worker to send them all.
    pub(super) fn send(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> bool {
        let Phase::Open(conn) = &self.phase else { return false };
        self.out.gathering.push(write);
        if !self.out.flush_posted {
            self.out.flush_posted = true;
            // Refused only once the connection is closed: `on_close` resets the gathering.
            let _ = conn.post_to::<ClientConn, _>(|conn, cx| conn.flush(cx));
        }
        true
    }

    /// Registers a request and sends it (written by `write` with its id), or keeps it for the
    /// next connection.
    ///
    /// # Errors
    ///
    /// [`CallError::Disconnected`] when no connection will come.
    pub(super) fn request(
        &mut self,
        inner: &Inner,
        write: impl Fn(u64, &mut Vec<u8>),
        slot: Option<Arc<Slot>>,
        kind: Kind,
    ) -> Result<u64, CallError> {
        if self.is_closed() {
            return Err(CallError::Disconnected);
        }
        let id = self.reserve_id();
        let unsent = if self.send(|out| write(id, out)) {
            None
        } else {
            let mut out = Vec::new();
            write(id, &mut out);
            Some(out)
        };
        if self.calls.is_empty() {
            inner.changed.notify_all();
        }
        let deadline = Instant::now() + inner.timeout;
        self.calls.insert(id, Entry { deadline, slot, unsent, kind });
        Ok(id)
    }

    /// The next request id, taken (also the place of a replayed notification among calls).
    pub(super) fn reserve_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Forgets the calls to replay whose callbacks are all gone.
    pub(super) fn prune_replay(&mut self) {
        let callbacks = &self.callbacks;
        self.replay.retain(|_, r| r.is_wanted(callbacks));
    }

    /// The connection `conn` opened: re-subscribes the topics, replays the calls that passed
    /// live callbacks (in the order they were made), then sends the requests made while
    /// disconnected, and last releases the callbacks those name that died meanwhile (the
    /// server builds a proxy for each callback named), all in the first message(s).
    pub(super) fn open(&mut self, inner: &Inner, conn: ConnHandle) {
        self.phase = Phase::Open(conn);
        self.opened_at = Instant::now();
        self.resubscribe(inner);
        let mut dead = BTreeSet::new();
        // Taken for the loop, put back after: no replay is copied.
        let replays = std::mem::take(&mut self.replay);
        let mut replayed = 0;
        for (&key, r) in &replays {
            if !r.is_wanted(&self.callbacks) {
                continue;
            }
            let (wire, method, args) = (self.wire, &*r.method, r.args.as_ref());
            if r.notify {
                self.send(|out| wire.encode(Msg::Notify { method: method.into(), args }, out));
            } else {
                let write = |id, out: &mut Vec<u8>| {
                    wire.encode(Msg::Call { id, method: method.into(), args }, out);
                };
                let _ = self.request(inner, write, None, Kind::Replayed(key));
            }
            dead.extend(r.dead(&self.callbacks));
            replayed += 1;
        }
        self.replay = replays;
        inner.replayed.fetch_add(replayed, Ordering::Relaxed);
        let callbacks = &self.callbacks;
        let unsent: Vec<Vec<u8>> = self
            .calls
            .values_mut()
            .filter_map(|e| {
                let bytes = e.unsent.take()?;
                if let Kind::Replayable(r) = &e.kind {
                    dead.extend(r.dead(callbacks));
                }
                Some(bytes)
            })
            .collect();
        for bytes in unsent {
            self.send(|out| out.extend_from_slice(&bytes));
        }
        let wire = self.wire;
        for callback in dead {
            self.send(|out| wire.encode(Msg::Release { callback }, out));
        }
    }

    /// Subscribes again to every topic but those whose subscription waits to be sent.
    fn resubscribe(&mut self, inner: &Inner) {
        let queued: HashSet<Box<str>> = self
            .calls
            .values()
            .filter(|e| e.unsent.is_some())
            .filter_map(|e| match &e.kind {
                Kind::Subscribe(topic) => Some(topic.clone()),
                _ => None,
            })
            .collect();
        // Taken for the loop, put back after: no topic is copied.
        let topics = std::mem::take(&mut self.topics);
        for topic in topics.keys().filter(|t| !queued.contains(t.as_str())) {
            let wire = self.wire;
            let since = self.positions.get(topic.as_str()).cloned();
            let write = |id, out: &mut Vec<u8>| {
                let since = since.clone();
                wire.encode(Msg::Subscribe { id, topic: (&**topic).into(), since }, out);
            };
            let _ = self.request(inner, write, None, Kind::Resubscribe(topic.as_str().into()));
        }
        self.topics = topics;
    }

    /// The open connection ended: the requests sent on it are taken (they fail), the
    /// gathering is dropped; the next attempt is scheduled, or, without reconnection, every
    /// request is taken and the client is done.
    pub(super) fn lost(&mut self, inner: &Inner) -> Vec<Arc<Slot>> {
        self.out = Outgoing::new(self.wire);
        // A server that closes connections as soon as they open (overloaded, refusing this
        // client) is not hammered at the minimum delay: only a connection that lasted the
        // backoff's maximum starts the delays over.
        let reconnect = inner.backoff.map(|b| {
            let lasted = self.opened_at.elapsed() >= b.max;
            self.attempt = if lasted { 0 } else { self.attempt.saturating_add(1) };
            Instant::now() + b.delay(self.attempt)
        });
        let sent: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, e)| e.unsent.is_none() || reconnect.is_none())
            .map(|(&id, _)| id)
            .collect();
        let taken = sent.into_iter().filter_map(|id| self.calls.remove(&id)?.slot).collect();
        self.phase = match reconnect {
            Some(at) => Phase::Waiting { at },
            None => Phase::Closed,
        };
        inner.changed.notify_all();
        taken
    }

    /// Takes every request (the client is closing).
    pub(super) fn take_all(&mut self) -> Vec<Arc<Slot>> {
        std::mem::take(&mut self.calls).into_values().filter_map(|e| e.slot).collect()
    }

    /// The client ends for good (closed, or its connection ended without reconnection):
    /// forgets the replays, takes the topics and the live callbacks, to let go of outside the
    /// lock ([`Ended::release`]).
    pub(super) fn end(&mut self) -> Ended {
        self.replay.clear();
        let callbacks = self.callbacks.drain().filter_map(|(_, cb)| cb.upgrade()).collect();
        self.positions.clear();
        Ended { callbacks, topics: std::mem::take(&mut self.topics) }
    }

    /// Takes the requests whose deadline is past `now`.
    pub(super) fn expired(&mut self, now: Instant) -> Vec<Arc<Slot>> {
        let mut expired = Vec::new();
        while let Some(entry) = self.calls.first_entry() {
            if entry.get().deadline > now {
                break;
            }
            expired.extend(entry.remove().slot);
        }
        expired
    }

    /// When the supervisor must look again: the first deadline, or the next attempt.
    pub(super) fn next_wake(&self) -> Option<Instant> {
        let deadline = self.calls.first_key_value().map(|(_, e)| e.deadline);
        let attempt = match self.phase {
            Phase::Waiting { at } => Some(at),
            _ => None,
        };
        deadline.into_iter().chain(attempt).min()
    }
}

/// The answers a client is waiting for, settled outside the lock.
pub(super) fn settle_all(slots: Vec<Arc<Slot>>, error: &CallError, inner: &Inner, here: bool) {
    let worker = inner.lock().worker;
    for slot in slots {
        slot.settle(Err(error.clone()), inner, worker, here);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_bounds_and_jitters() {
        let backoff = Backoff { min: Duration::from_millis(100), max: Duration::from_secs(1) };
        for (attempt, full) in [(0, 100), (1, 200), (2, 400), (3, 800), (4, 1000), (60, 1000)] {
            let full = Duration::from_millis(full);
            for _ in 0..50 {
                let delay = backoff.delay(attempt);
                assert!(delay >= full / 2 && delay <= full, "{attempt}: {delay:?}");
            }
        }
        let draws: HashSet<Duration> = (0..20).map(|_| backoff.delay(3)).collect();
        assert!(draws.len() > 1, "no jitter");
    }
}
