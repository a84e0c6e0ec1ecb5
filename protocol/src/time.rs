//! Time as the caller supplies it.
//!
//! This crate never reads a clock. Every input that depends on time takes an [`Instant`] that the
//! caller read from its own monotonic clock (the engine reads it once per loop turn; tests use a
//! virtual clock). Durations are plain [`core::time::Duration`]s.

use core::ops::{Add, Sub};
use core::time::Duration;

/// A point on the caller's monotonic clock, in nanoseconds since an origin the caller chooses.
///
/// Only differences between instants from the same clock are meaningful. Arithmetic saturates
/// instead of overflowing, so a deadline far in the future is simply "never" in practice.
///
/// Contract: the instants passed to one [`Connection`](crate::Connection) never go backwards.
/// If they do, timers fire late (never early) and nothing panics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The clock's origin.
    pub const ZERO: Self = Self(0);

    /// An instant `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Self;

    /// Saturates at the end of the clock's range.
    fn add(self, rhs: Duration) -> Self {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(nanos))
    }
}

impl Sub for Instant {
    type Output = Duration;

    /// Saturates at zero, like [`Instant::saturating_duration_since`].
    fn sub(self, rhs: Self) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_nanos(10);
        assert_eq!(t + Duration::from_nanos(5), Instant::from_nanos(15));
        assert_eq!(
            Instant::from_nanos(u64::MAX - 1) + Duration::from_secs(1),
            Instant::from_nanos(u64::MAX)
        );
        assert_eq!(Instant::from_nanos(3) - Instant::from_nanos(10), Duration::ZERO);
        assert_eq!(Instant::from_nanos(10) - Instant::from_nanos(3), Duration::from_nanos(7));
        assert_eq!(Instant::ZERO + Duration::MAX, Instant::from_nanos(u64::MAX));
    }
}
