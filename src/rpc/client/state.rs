//! What every part of a client shares: the connection's phase, the requests in flight, the
//! messages gathered for the worker, the callbacks, the topics and the calls to replay.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use bidir_protocol::rpc::json;
use bidir_protocol::rpc::{Msg, Raw};

use super::call::Slot;
use super::callback::CbState;
use super::conn::ClientConn;
use crate::client::{Connect, ConnectError};
use crate::rpc::CallError;
use crate::rpc::gather::Gathering;
use crate::{ConnHandle, Context, ServerHandle};

/// What a subscriber runs for each event of its topic.
pub(super) type OnEvent = Arc<dyn Fn(&RawValue) + Send + Sync>;

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
    pub(super) engine: ServerHandle,
    /// The engine was started for this client: it stops with it.
    pub(super) own_engine: bool,
    pub(super) timeout: Duration,
    /// `None`: no reconnection.
    pub(super) backoff: Option<Backoff>,
    pub(super) late_answers: AtomicU64,
    pub(super) reconnects: AtomicU64,
    pub(super) replayed: AtomicU64,
}

impl Inner {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the worker of the client's connection (or of its last one).
    pub(super) fn run_on_worker(&self, worker: usize, f: impl FnOnce() + Send + 'static) {
        self.engine.run_on(worker, f);
    }

    /// Sends request `id`'s cancel if it was sent, and forgets it: its answer will be dropped.
    pub(super) fn cancel(&self, id: u64) {
        let mut state = self.lock();
        if let Some(entry) = state.calls.remove(&id)
            && entry.unsent.is_none()
        {
            state.send(|out| json::encode(&Msg::Cancel { id }, out));
        }
    }

    /// Forgets request `id`: its answer, if one comes, is dropped as late.
    pub(super) fn forget(&self, id: u64) {
        let entry = self.lock().calls.remove(&id);
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
    pub(super) unsent: Option<String>,
    /// A call that passed callbacks: kept for replay once answered `ok`.
    pub(super) replay: Option<Replay>,
}

/// A call that passed callbacks, sent again on each new connection while one of them lives.
#[derive(Clone)]
pub(super) struct Replay {
    pub(super) method: Box<str>,
    pub(super) args: Box<RawValue>,
    pub(super) callbacks: Vec<u64>,
    /// A notification (no answer wanted).
    pub(super) notify: bool,
}

/// Messages gathered from user threads until the worker sends them (one flush posted per
/// gathering), in batches within the limits of [`Gathering`].
#[derive(Default)]
pub(super) struct Outgoing {
    gathering: Gathering,
    flush_posted: bool,
}

impl Outgoing {
    /// Sends everything gathered, oldest first.
    pub(super) fn flush(&mut self, cx: &mut Context<'_>) {
        self.gathering.send(cx);
        self.flush_posted = false;
    }
}

pub(super) struct State {
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
    pub(super) callbacks: HashMap<u64, Weak<CbState>>,
    pub(super) next_callback: u64,
    /// The calls to replay, by their first id: in the order they were made.
    pub(super) replay: BTreeMap<u64, Replay>,
    pub(super) topics: HashMap<String, OnEvent>,
}

impl State {
    pub(super) fn new() -> Self {
        Self {
            phase: Phase::Connecting,
            generation: 0,
            attempt: 0,
            opened_at: Instant::now(),
            opened_once: false,
            worker: 0,
            next_id: 0,
            calls: BTreeMap::new(),
            out: Outgoing::default(),
            callbacks: HashMap::new(),
            next_callback: 1,
            replay: BTreeMap::new(),
            topics: HashMap::new(),
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
        replay: Option<Replay>,
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
            Some(String::from_utf8(out).unwrap_or_default())
        };
        if self.calls.is_empty() {
            inner.changed.notify_all();
        }
        let deadline = Instant::now() + inner.timeout;
        self.calls.insert(id, Entry { deadline, slot, unsent, replay });
        Ok(id)
    }

    /// The next request id, taken (also the place of a replayed notification among calls).
    pub(super) fn reserve_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Whether callback `id` is alive: held by the application and not released.
    pub(super) fn is_live(&self, id: u64) -> bool {
        self.callbacks.get(&id).is_some_and(|cb| cb.strong_count() > 0)
    }

    /// Forgets the calls to replay whose callbacks are all gone.
    pub(super) fn prune_replay(&mut self) {
        let callbacks = &self.callbacks;
        let live = |id: &u64| callbacks.get(id).is_some_and(|cb| cb.strong_count() > 0);
        self.replay.retain(|_, r| r.callbacks.iter().any(live));
    }

    /// The connection `conn` opened: re-subscribes the topics, replays the calls that passed
    /// live callbacks (in the order they were made), then sends the requests made while
    /// disconnected, all in the first message(s).
    pub(super) fn open(&mut self, inner: &Inner, conn: ConnHandle) {
        self.phase = Phase::Open(conn);
        self.opened_at = Instant::now();
        let topics: Vec<String> = self.topics.keys().cloned().collect();
        for topic in topics {
            let write = |id, out: &mut Vec<u8>| {
                json::encode(&Msg::Subscribe { id, topic: (&*topic).into() }, out);
            };
            let _ = self.request(inner, write, None, None);
        }
        let replays: Vec<Replay> = self
            .replay
            .values()
            .filter(|r| r.callbacks.iter().any(|&id| self.is_live(id)))
            .cloned()
            .collect();
        for r in &replays {
            let (method, args) = (&*r.method, Raw::new(&r.args));
            if r.notify {
                self.send(|out| json::encode(&Msg::Notify { method: method.into(), args }, out));
            } else {
                let write = |id, out: &mut Vec<u8>| {
                    json::encode(&Msg::Call { id, method: method.into(), args }, out);
                };
                let _ = self.request(inner, write, None, None);
            }
        }
        inner.replayed.fetch_add(replays.len() as u64, Ordering::Relaxed);
        let unsent: Vec<String> = self.calls.values_mut().filter_map(|e| e.unsent.take()).collect();
        for text in unsent {
            self.send(|out| out.extend_from_slice(text.as_bytes()));
        }
    }

    /// The open connection ended: the requests sent on it are taken (they fail), the
    /// gathering is dropped; the next attempt is scheduled, or, without reconnection, every
    /// request is taken and the client is done.
    pub(super) fn lost(&mut self, inner: &Inner) -> Vec<Arc<Slot>> {
        self.out = Outgoing::default();
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
        let draws: std::collections::HashSet<Duration> =
            (0..20).map(|_| backoff.delay(3)).collect();
        assert!(draws.len() > 1, "no jitter");
    }
}
