//! Time on a worker: a coarse per-worker timer wheel for the connections' deadlines, and the
//! handlers' own timers ([`Timers`]), whose earliest per connection is one of those deadlines.
//!
//! Connections have few, coarse deadlines (handshake, heartbeat, pong, close, linger) that
//! mostly move later as traffic arrives. The wheel keeps at most one live entry per
//! connection and never removes entries: when a deadline moves later the old entry stays,
//! fires, finds nothing due, and the connection is re-inserted at its new deadline; when it
//! moves earlier a new entry is added and the old one is recognised as stale when it fires.
//! So a busy connection costs nothing per message, and an idle one a few insertions per
//! heartbeat interval.
//!
//! A bucket that fired gives its storage to a small pool of spare vectors, which buckets
//! take from when they fill again; an empty bucket holds none. So the wheel's memory follows
//! the entries scheduled now, not the busiest second it ever saw in each of its buckets
//! (heavy connect/close churn used to leave every bucket at its peak size for good).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// A scheduled wake-up for a connection slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) slot: usize,
    /// The tick it was scheduled for; the slot compares it with its current one.
    pub(crate) tick: u64,
}

/// Hashed timer wheel of `SLOTS` buckets, `tick` apart.
#[derive(Debug)]
pub(crate) struct Wheel {
    tick_nanos: u64,
    buckets: Vec<Vec<Entry>>,
    /// Emptied buckets' storage, for buckets that fill again.
    /// INVARIANT: at most `SPARES` vectors, each of at most `SPARE_CAPACITY` entries.
    spares: Vec<Vec<Entry>>,
    /// The next tick to fire; every tick before it has fired.
    next: u64,
    len: usize,
}

const SLOTS: u64 = 1024;
/// Spare vectors kept: a few ticks' worth, since buckets fill and empty in turn.
const SPARES: usize = 8;
/// The largest spare kept, in entries (16 KiB); a larger one is freed.
const SPARE_CAPACITY: usize = 1024;

impl Wheel {
    pub(crate) fn new(tick: Duration) -> Self {
        Self {
            tick_nanos: (tick.as_nanos() as u64).max(1_000_000),
            buckets: (0..SLOTS).map(|_| Vec::new()).collect(),
            spares: Vec::new(),
            next: 0,
            len: 0,
        }
    }

    /// The tick on which `deadline_nanos` falls due (rounded up: timers never fire early).
    pub(crate) fn tick_of(&self, deadline_nanos: u64) -> u64 {
        deadline_nanos.div_ceil(self.tick_nanos).max(self.next)
    }

    /// Schedules `slot` for `deadline_nanos`; returns the tick to remember in the slot. A
    /// deadline beyond the wheel's horizon is parked at the horizon and re-scheduled then.
    pub(crate) fn insert(&mut self, slot: usize, deadline_nanos: u64) -> u64 {
        let tick = self.tick_of(deadline_nanos).min(self.next + SLOTS - 1);
        let bucket = &mut self.buckets[(tick % SLOTS) as usize];
        if bucket.capacity() == 0
            && let Some(spare) = self.spares.pop()
        {
            *bucket = spare;
        }
        bucket.push(Entry { slot, tick });
        self.len += 1;
        tick
    }

    /// Moves time to `now_nanos`, handing every entry due by then to `fire`.
    pub(crate) fn advance(&mut self, now_nanos: u64, mut fire: impl FnMut(Entry)) {
        let now_tick = now_nanos / self.tick_nanos;
        // Past a whole turn every bucket is due once; don't spin through the gap.
        if now_tick >= self.next + SLOTS {
            self.next = now_tick + 1 - SLOTS;
        }
        while self.next <= now_tick {
            let bucket = &mut self.buckets[(self.next % SLOTS) as usize];
            let mut entries = std::mem::take(bucket);
            self.len -= entries.len();
            for e in &entries {
                fire(*e);
            }
            if entries.capacity() <= SPARE_CAPACITY && self.spares.len() < SPARES {
                entries.clear();
                self.spares.push(entries);
            }
            self.next += 1;
        }
    }

    /// How long until the next tick, if anything is scheduled.
    pub(crate) fn timeout(&self, now_nanos: u64) -> Option<Duration> {
        (self.len > 0)
            .then(|| Duration::from_nanos((self.next * self.tick_nanos).saturating_sub(now_nanos)))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Entries the wheel has storage for, in its buckets and spares.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.buckets.iter().chain(&self.spares).map(Vec::capacity).sum()
    }
}

/// A handler's timer on its connection, from [`Context::set_timer`](crate::Context::set_timer)
/// and handed back to [`Handler::on_timer`](crate::Handler::on_timer). Unique among the timers
/// of one worker for the server's lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(u64);

/// The handlers' timers of one worker, by connection slot.
///
/// An armed timer costs an entry in an ordered set and one in a hash map (about 80 bytes), and
/// arming, cancelling or firing it an O(log n) step over the worker's armed timers. Each
/// connection's earliest timer is its deadline in the wheel, as its other deadlines are: so
/// timers are exactly as coarse as the wheel's tick.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    /// (slot, deadline, id), in firing order within a slot.
    armed: BTreeSet<(usize, u64, u64)>,
    /// Where each armed timer is, for cancelling by id.
    by_id: HashMap<u64, (usize, u64)>,
    next_id: u64,
}

impl Timers {
    /// Arms a timer for `slot` due at `deadline_nanos`.
    pub(crate) fn arm(&mut self, slot: usize, deadline_nanos: u64) -> TimerId {
        let id = self.next_id;
        self.next_id += 1;
        self.armed.insert((slot, deadline_nanos, id));
        self.by_id.insert(id, (slot, deadline_nanos));
        TimerId(id)
    }

    /// Disarms `slot`'s timer `id`; `false` if it is not armed (fired, cancelled, or another
    /// connection's).
    pub(crate) fn cancel(&mut self, slot: usize, id: TimerId) -> bool {
        match self.by_id.get(&id.0) {
            Some(&(owner, deadline)) if owner == slot => {
                self.by_id.remove(&id.0);
                self.armed.remove(&(slot, deadline, id.0));
                true
            }
            _ => false,
        }
    }

    /// `slot`'s earliest deadline, or `u64::MAX` if none is armed.
    pub(crate) fn earliest(&self, slot: usize) -> u64 {
        self.armed.range((slot, 0, 0)..=(slot, u64::MAX, u64::MAX)).next().map_or(u64::MAX, |t| t.1)
    }

    /// Disarms and returns `slot`'s earliest timer if it is due at `now_nanos` and was armed
    /// before `armed_before` (so a timer armed while timers fire waits for the next round).
    pub(crate) fn pop_due(
        &mut self,
        slot: usize,
        now_nanos: u64,
        armed_before: u64,
    ) -> Option<TimerId> {
        let due = self
            .armed
            .range((slot, 0, 0)..=(slot, now_nanos, u64::MAX))
            .find(|t| t.2 < armed_before)
            .copied()?;
        self.armed.remove(&due);
        self.by_id.remove(&due.2);
        Some(TimerId(due.2))
    }

    /// The id the next armed timer gets: timers armed from here on are not due in a firing
    /// round that started now.
    pub(crate) fn round(&self) -> u64 {
        self.next_id
    }

    /// Disarms every timer of `slot` (its connection is gone).
    pub(crate) fn clear(&mut self, slot: usize) {
        let gone: Vec<_> =
            self.armed.range((slot, 0, 0)..=(slot, u64::MAX, u64::MAX)).copied().collect();
        for t in gone {
            self.armed.remove(&t);
            self.by_id.remove(&t.2);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.armed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn fires_at_the_right_tick_never_early() {
        let mut w = Wheel::new(Duration::from_millis(100));
        let t = w.insert(1, 250 * MS);
        assert_eq!(t, 3);
        let mut fired = vec![];
        w.advance(299 * MS, |e| fired.push(e));
        assert!(fired.is_empty());
        w.advance(300 * MS, |e| fired.push(e));
        assert_eq!(fired, [Entry { slot: 1, tick: 3 }]);
        assert_eq!(w.len(), 0);
        assert_eq!(w.timeout(300 * MS), None);
    }

    #[test]
    fn past_deadlines_fire_on_the_next_advance() {
        let mut w = Wheel::new(Duration::from_millis(100));
        w.advance(1000 * MS, |_| {});
        w.insert(7, 10 * MS);
        let mut fired = vec![];
        w.advance(1000 * MS, |e| fired.push(e.slot));
        w.advance(1100 * MS, |e| fired.push(e.slot));
        assert_eq!(fired, [7]);
    }

    #[test]
    fn far_deadlines_park_at_the_horizon() {
        let mut w = Wheel::new(Duration::from_millis(100));
        let tick = w.insert(2, 3600 * 1000 * MS);
        assert_eq!(tick, SLOTS - 1);
        let mut fired = vec![];
        w.advance((SLOTS - 1) * 100 * MS, |e| fired.push(e));
        assert_eq!(fired.len(), 1);
    }

    #[test]
    fn a_long_sleep_fires_everything_once() {
        let mut w = Wheel::new(Duration::from_millis(100));
        for i in 0..100 {
            w.insert(i, (i as u64 + 1) * 100 * MS);
        }
        let mut fired = vec![];
        w.advance(10_000_000 * MS, |e| fired.push(e.slot));
        fired.sort();
        assert_eq!(fired, (0..100).collect::<Vec<_>>());
        assert_eq!(w.len(), 0);
    }

    /// A burst of churn fills every bucket once; when it is over, the wheel keeps no more
    /// than its spares.
    #[test]
    fn storage_follows_the_entries_scheduled_now() {
        let mut w = Wheel::new(Duration::from_millis(100));
        // 400 insertions per tick for a whole turn, each due 10 s later (a handshake timeout).
        for tick in 0..SLOTS {
            for i in 0..400 {
                w.insert(i, (tick + 100) * 100 * MS);
            }
            w.advance(tick * 100 * MS, |_| {});
        }
        assert!(w.capacity() >= 100 * 400, "the live entries are stored");
        w.advance((2 * SLOTS + 100) * 100 * MS, |_| {});
        assert_eq!(w.len(), 0);
        assert!(w.capacity() <= SPARES * SPARE_CAPACITY, "{} entries kept", w.capacity());
    }

    #[test]
    fn timeout_points_at_the_next_tick() {
        let mut w = Wheel::new(Duration::from_millis(100));
        w.insert(0, 5000 * MS);
        // Tick 0 has not fired yet: wake at once.
        assert_eq!(w.timeout(30 * MS), Some(Duration::ZERO));
        w.advance(30 * MS, |_| {});
        assert_eq!(w.timeout(30 * MS), Some(Duration::from_millis(70)));
    }

    #[test]
    fn handler_timers_fire_in_deadline_order_and_cancel_by_id() {
        let mut t = Timers::default();
        let late = t.arm(3, 300);
        let early = t.arm(3, 100);
        let other = t.arm(4, 50);
        assert_eq!(t.earliest(3), 100);
        assert!(!t.cancel(4, late), "another slot's timer is not cancelled");
        let round = t.round();
        assert_eq!(t.pop_due(3, 200, round), Some(early));
        assert_eq!(t.pop_due(3, 200, round), None, "the late one is not due");
        assert!(t.cancel(3, late));
        assert!(!t.cancel(3, late), "cancelled once");
        assert_eq!(t.earliest(3), u64::MAX);
        assert_eq!(t.earliest(4), 50);
        t.clear(4);
        assert!(!t.cancel(4, other));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_timer_armed_while_firing_waits_for_the_next_round() {
        let mut t = Timers::default();
        t.arm(1, 10);
        let round = t.round();
        assert!(t.pop_due(1, 10, round).is_some());
        let again = t.arm(1, 0);
        assert_eq!(t.pop_due(1, 10, round), None);
        assert_eq!(t.pop_due(1, 10, t.round()), Some(again));
    }
}
