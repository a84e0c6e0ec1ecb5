//! Topic history: the last events of the rpc topics that keep one, numbered, so that a client
//! that comes back gets what it missed (docs/rpc.md, "History and recovery"). The rpc layer
//! numbers and reads; the server's shared state holds the logs; the bridge to other nodes ends
//! them when this node may have missed events. Events are kept as their raw bytes (`Data`).
//!
//! On a server of its own, a topic's log numbers its events 1, 2, 3… in the order they are
//! handed to the workers and keeps them within its bounds (count and age). Its epoch is
//! random, new whenever the log starts again: positions of two epochs are never compared.
//! On a server joined to other nodes the history is Redis's, shared by every node
//! (docs/nodes.md): Redis numbers the events, and the log is this node's cache of the latest
//! ones, filled as they arrive, which a returning subscriber recovers from when it can.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bidir_protocol::rpc::Position;

/// How much of a topic's past a server keeps: its last `max_events` events, none older than
/// `max_age` (`ServerBuilder::history`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct History {
    max_events: usize,
    max_age: Duration,
}

impl History {
    /// The last `max_events` events (at least 1), none older than `max_age`.
    pub fn new(max_events: usize, max_age: Duration) -> Self {
        Self { max_events: max_events.max(1), max_age }
    }
}

/// The histories of a server's topics: which topics keep one (by prefix), and their logs.
#[derive(Debug, Default)]
pub(crate) struct Histories {
    /// Topic prefixes and their bounds; the longest matching prefix wins.
    rules: Vec<(String, History)>,
    logs: Mutex<HashMap<Arc<str>, Log>>,
}

/// One topic's log.
#[derive(Debug)]
pub(crate) struct Log {
    bounds: History,
    epoch: Arc<str>,
    /// The offset of the last event (0: none yet).
    last: u64,
    events: VecDeque<Kept>,
    /// A cache of Redis's history whose node lost its link to Redis: it may be missing
    /// events until it has caught up, so it recovers nobody.
    stale: bool,
}

#[derive(Debug)]
struct Kept {
    offset: u64,
    at: Instant,
    data: Data,
}

/// An event's data as kept: one JSON value (`json`) or one MessagePack value, checked when it
/// was published.
#[derive(Debug)]
pub(crate) struct Data {
    pub(crate) json: bool,
    pub(crate) bytes: Box<[u8]>,
}

/// What a subscriber coming back gets: the events after its position, if the log still has
/// them all, and the log's position now.
#[derive(Debug)]
pub(crate) struct Recovery<'a> {
    /// The events after the subscriber's position, oldest first (empty if not recovered).
    pub(crate) missed: Vec<(Position<'static>, &'a Data)>,
    /// Whether `missed` is everything the subscriber missed.
    pub(crate) recovered: bool,
    /// The log's epoch and last offset.
    pub(crate) epoch: Arc<str>,
    pub(crate) offset: u64,
}

impl Histories {
    /// Adds a rule: topics starting with `prefix` keep `history`.
    pub(crate) fn add(&mut self, prefix: &str, history: History) {
        self.rules.retain(|(p, _)| p != prefix);
        self.rules.push((prefix.to_owned(), history));
    }

    /// The bounds of `topic`'s history, if it keeps one.
    pub(crate) fn bounds(&self, topic: &str) -> Option<History> {
        self.rules
            .iter()
            .filter(|(prefix, _)| topic.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, history)| *history)
    }

    /// The logs, locked: a publish numbers, keeps and hands its event to the workers while
    /// holding them, so that every worker gets a topic's events in offset order; a recovery
    /// reads the log and subscribes while holding them, so that no event falls between.
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Log>> {
        self.logs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops `topic`'s cache unless `wanted` (asked under the logs' lock): this node stops
    /// hearing of its events (its last subscriber here left), and a cache that misses events
    /// must recover nobody. Returns whether it is dropped.
    #[cfg(feature = "redis")]
    pub(crate) fn forget(&self, topic: &str, wanted: impl FnOnce() -> bool) -> bool {
        let mut logs = self.lock();
        if wanted() {
            return false;
        }
        logs.remove(topic);
        true
    }

    /// Starts `topic`'s cache at `top` in `epoch`, unless it has one.
    #[cfg(feature = "redis")]
    pub(crate) fn seed(&self, topic: &str, epoch: &str, top: u64, bounds: History) {
        get_or(&mut self.lock(), topic, || Log { last: top, ..Log::at(bounds, Arc::from(epoch)) });
    }

    /// The caches of shared histories: topic, epoch, last offset and bounds.
    #[cfg(feature = "redis")]
    pub(crate) fn kept(&self) -> Vec<(Arc<str>, Arc<str>, u64, History)> {
        let logs = self.lock();
        logs.iter().map(|(t, l)| (Arc::clone(t), Arc::clone(&l.epoch), l.last, l.bounds)).collect()
    }

    /// This node's link to Redis is down (for the topics `which` says): their caches may miss
    /// events from now on, and recover nobody until they have caught up ([`Log::caught_up`]).
    #[cfg(feature = "redis")]
    pub(crate) fn stale(&self, which: &dyn Fn(&str) -> bool) {
        for (_, log) in self.lock().iter_mut().filter(|(topic, _)| which(topic)) {
            log.stale = true;
        }
    }
}

/// `topic`'s cache of a shared history in `logs`, made in `epoch` if it has none yet.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn cache<'a>(
    logs: &'a mut HashMap<Arc<str>, Log>,
    topic: &str,
    bounds: History,
    epoch: &str,
) -> &'a mut Log {
    get_or(logs, topic, || Log::at(bounds, Arc::from(epoch)))
}

/// `topic`'s log in `logs`, made with `bounds` if it has none yet.
pub(crate) fn log<'a>(
    logs: &'a mut HashMap<Arc<str>, Log>,
    topic: &str,
    bounds: History,
) -> &'a mut Log {
    get_or(logs, topic, || Log::new(bounds))
}

/// `topic`'s log in `logs`, made by `make` if it has none yet (the topic's name is copied
/// only then).
fn get_or<'a>(
    logs: &'a mut HashMap<Arc<str>, Log>,
    topic: &str,
    make: impl FnOnce() -> Log,
) -> &'a mut Log {
    if !logs.contains_key(topic) {
        logs.insert(Arc::from(topic), make());
    }
    logs.get_mut(topic).expect("inserted above")
}

impl History {
    /// The most events kept.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn max_events(&self) -> usize {
        self.max_events
    }

    /// The oldest an event kept may be.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn max_age(&self) -> Duration {
        self.max_age
    }
}

impl Log {
    fn new(bounds: History) -> Self {
        Self::at(bounds, new_epoch())
    }

    /// An empty log of epoch `epoch`.
    fn at(bounds: History, epoch: Arc<str>) -> Self {
        Self { bounds, epoch, last: 0, events: VecDeque::new(), stale: false }
    }

    /// This cache missed nothing while its node's link to Redis was down: it recovers again.
    #[cfg(feature = "redis")]
    pub(crate) fn caught_up(&mut self) {
        self.stale = false;
    }

    /// The epoch and the offset of the last event.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn top(&self) -> (&Arc<str>, u64) {
        (&self.epoch, self.last)
    }

    /// Keeps an event Redis numbered `at` (a cache of a shared history): after the last one,
    /// or as the first of a new run if it is not the next (the cache then holds only from it
    /// on). Returns `false`, keeping nothing, for an event kept already, or one that does not
    /// follow in a stale cache: not to be delivered now.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn put(&mut self, at: &Position<'_>, data: Data, now: Instant) -> bool {
        let next = *at.epoch == *self.epoch && at.offset == self.last.saturating_add(1);
        if *at.epoch == *self.epoch && at.offset <= self.last {
            return false;
        }
        // A stale cache takes only the next event: what does not follow is in what Redis
        // kept, delivered in order when the cache catches up.
        if self.stale && !next {
            return false;
        }
        if !next {
            self.epoch = Arc::from(&*at.epoch);
            self.events.clear();
        }
        self.keep(at.offset, data, now);
        true
    }

    /// Whether this cache can recover a subscriber at `since` by itself (none: a first
    /// subscription, which needs only the position): it is live, and holds every event
    /// after `since` in its epoch.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn covers(&mut self, since: Option<&Position<'_>>, now: Instant) -> bool {
        self.trim(now);
        !self.stale && since.is_none_or(|since| self.holds_after(since))
    }

    /// The events after `offset`, oldest first, and whether they follow it with none
    /// missing.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn after(&self, offset: u64) -> (impl Iterator<Item = (u64, &Data)>, bool) {
        let events = self.events.iter().filter(move |k| k.offset > offset);
        (events.map(|k| (k.offset, &k.data)), self.first() <= offset.saturating_add(1))
    }

    /// Numbers and keeps an event; returns its position.
    pub(crate) fn push(&mut self, data: Data, now: Instant) -> Position<'static> {
        self.keep(self.last + 1, data, now);
        Position { offset: self.last, epoch: self.epoch.to_string().into() }
    }

    /// Keeps event `offset`, the last one now, within the bounds.
    fn keep(&mut self, offset: u64, data: Data, now: Instant) {
        self.trim(now);
        if self.events.len() == self.bounds.max_events {
            self.events.pop_front();
        }
        self.last = offset;
        self.events.push_back(Kept { offset, at: now, data });
    }

    /// The offset of the oldest event kept (past the last one if none is).
    fn first(&self) -> u64 {
        self.events.front().map_or(self.last.saturating_add(1), |k| k.offset)
    }

    /// Whether every event after `since` is here: same epoch, `since` not ahead of the log
    /// (another node's position, or a client's guess), and the oldest event kept at most the
    /// one right after it.
    fn holds_after(&self, since: &Position<'_>) -> bool {
        *since.epoch == *self.epoch
            && since.offset <= self.last
            && self.first() <= since.offset.saturating_add(1)
    }

    /// What follows `since` (none: a first subscription, which recovers nothing and needs
    /// nothing).
    pub(crate) fn recover(&mut self, since: Option<&Position<'_>>, now: Instant) -> Recovery<'_> {
        self.trim(now);
        let (epoch, offset) = (Arc::clone(&self.epoch), self.last);
        let Some(since) = since else {
            return Recovery { missed: Vec::new(), recovered: true, epoch, offset };
        };
        let recovered = self.holds_after(since);
        let missed = if recovered {
            let epoch: std::borrow::Cow<'static, str> = self.epoch.to_string().into();
            self.events
                .iter()
                .filter(|k| k.offset > since.offset)
                .map(|k| (Position { offset: k.offset, epoch: epoch.clone() }, &k.data))
                .collect()
        } else {
            Vec::new()
        };
        Recovery { missed, recovered, epoch, offset }
    }

    /// Drops what is past the age bound.
    fn trim(&mut self, now: Instant) {
        while self.events.front().is_some_and(|k| now.duration_since(k.at) > self.bounds.max_age) {
            self.events.pop_front();
        }
    }
}

/// A new epoch: 8 hex digits. The process draws a random start once, and each epoch after it
/// moves by an odd step, so that no two of a process's epochs match before 2^32 of them,
/// and two processes' start apart — without a system call per epoch (the Redis bridge asks
/// for one per batch it sends).
pub(crate) fn new_epoch() -> Arc<str> {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let mut bytes = [0u8; 4];
        if getrandom::fill(&mut bytes).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            bytes = (nanos ^ std::process::id()).to_le_bytes();
        }
        AtomicU32::new(u32::from_le_bytes(bytes))
    });
    Arc::from(format!("{:08x}", next.fetch_add(0x9e37_79b9, Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(n: u64) -> Data {
        Data { json: true, bytes: n.to_string().into_bytes().into() }
    }

    #[test]
    fn a_log_numbers_keeps_and_recovers_within_its_bounds() {
        let now = Instant::now();
        let mut log = Log::new(History::new(3, Duration::from_secs(60)));
        let positions: Vec<_> = (1..=5).map(|n| log.push(value(n), now)).collect();
        assert_eq!(positions.iter().map(|p| p.offset).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        let epoch = positions[0].epoch.clone();
        // 3, 4, 5 are kept: a subscriber at 2 gets them all; one at 1 missed 2, not kept.
        let at = |offset| Position { offset, epoch: epoch.clone() };
        let r = log.recover(Some(&at(2)), now);
        assert!(r.recovered);
        let text = |d: &Data| String::from_utf8(d.bytes.to_vec()).unwrap();
        let missed: Vec<_> = r.missed.iter().map(|(p, d)| (p.offset, text(d))).collect();
        assert_eq!(missed, [(3, "3".to_owned()), (4, "4".into()), (5, "5".into())]);
        assert_eq!(r.offset, 5);
        assert!(!log.recover(Some(&at(1)), now).recovered, "2 is gone");
        let r = log.recover(Some(&at(5)), now);
        assert!(r.recovered && r.missed.is_empty(), "up to date");
        assert!(!log.recover(Some(&at(6)), now).recovered, "ahead of the log");
        let other = Position { offset: 4, epoch: "other".into() };
        assert!(!log.recover(Some(&other), now).recovered, "another epoch");
        // Age: everything older than the bound is gone.
        let later = now + Duration::from_secs(61);
        assert!(!log.recover(Some(&at(4)), later).recovered);
        assert!(log.recover(Some(&at(5)), later).recovered, "nothing after 5 was lost");
    }

    #[test]
    fn the_longest_prefix_decides_and_a_new_log_starts_a_new_epoch() {
        let mut h = Histories::default();
        h.add("room/", History::new(10, Duration::from_secs(1)));
        h.add("room/vip/", History::new(100, Duration::from_secs(1)));
        assert_eq!(h.bounds("room/vip/1"), Some(History::new(100, Duration::from_secs(1))));
        assert_eq!(h.bounds("room/1"), Some(History::new(10, Duration::from_secs(1))));
        assert_eq!(h.bounds("news"), None);
        let epoch = {
            let mut logs = h.lock();
            let log = log(&mut logs, "room/1", h.bounds("room/1").unwrap());
            log.push(value(1), Instant::now()).epoch.into_owned()
        };
        let mut logs = h.lock();
        logs.clear();
        let log = log(&mut logs, "room/1", History::new(10, Duration::from_secs(1)));
        let p = log.push(value(2), Instant::now());
        assert_eq!(p.offset, 1);
        assert_ne!(p.epoch, epoch);
    }

    #[test]
    #[cfg(feature = "redis")]
    fn a_cache_keeps_what_redis_numbered_and_covers_only_what_it_holds() {
        let now = Instant::now();
        let mut cache = Log::at(History::new(3, Duration::from_secs(60)), Arc::from("e1"));
        let at = |offset, epoch: &'static str| Position { offset, epoch: epoch.into() };
        // It starts where it first hears the topic: 7, not 1.
        assert!(cache.put(&at(7, "e1"), value(7), now));
        assert!(cache.put(&at(8, "e1"), value(8), now));
        assert!(!cache.put(&at(8, "e1"), value(8), now), "kept already");
        assert!(cache.covers(Some(&at(6, "e1")), now), "7 and 8 follow 6");
        assert!(!cache.covers(Some(&at(5, "e1")), now), "6 was never heard here");
        assert!(!cache.covers(Some(&at(9, "e1")), now), "ahead: Redis is asked");
        assert!(!cache.covers(Some(&at(7, "e2")), now), "another epoch");
        assert!(cache.covers(None, now));
        let (after, follows) = cache.after(7);
        assert_eq!((after.map(|(o, _)| o).collect::<Vec<_>>(), follows), (vec![8], true));
        assert!(!cache.after(5).1, "6 is missing");
        // Stale (its node's link was down): it covers nobody and takes only the next event.
        cache.stale = true;
        assert!(!cache.covers(None, now));
        assert!(!cache.put(&at(11, "e1"), value(11), now), "10 is missing");
        assert!(cache.put(&at(9, "e1"), value(9), now));
        cache.caught_up();
        assert!(cache.covers(Some(&at(8, "e1")), now));
        // Not the next: it starts again from there, in the event's epoch.
        assert!(cache.put(&at(3, "e2"), value(3), now));
        assert_eq!(cache.top(), (&Arc::from("e2"), 3));
        assert!(cache.covers(Some(&at(2, "e2")), now) && !cache.covers(Some(&at(1, "e2")), now));
    }
}
