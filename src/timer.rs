//! A coarse per-worker timer wheel.
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
}
