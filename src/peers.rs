//! Per-peer limits: how many connections one peer may hold and how many it may open per
//! second, counted server-wide.
//!
//! With `SO_REUSEPORT` the kernel spreads one peer's connections over every worker, so a
//! per-worker count would let a peer hold `workers` times its limit. The table is shared: a
//! fixed number of shards, each a mutex over a map from [`PeerKey`] to its counts, touched
//! once when a connection is accepted and once when its slot retires — and not at all when
//! both limits are off (the server then builds no table).
//!
//! Memory is bounded by the peers that hold a connection plus those that opened one in the
//! current second: an entry whose peer holds nothing is dropped at release when its second is
//! over, and a shard sweeps such entries out the first time it is used in a new second.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant as WallClock;

/// Shards of the table: enough that workers accepting at once rarely meet on a lock.
const SHARDS: usize = 64;

/// The limits and the counts behind them.
pub(crate) struct PeerLimits {
    /// Most connections one peer holds at once, or `None`: not counted.
    max_connections: Option<NonZeroU32>,
    /// Most connections one peer opens per second, or `None`: not counted.
    max_rate: Option<NonZeroU32>,
    /// The start of second 0 of the rate windows.
    base: WallClock,
    /// Keyed at random per server, so that a peer cannot choose addresses that crowd one shard.
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

#[derive(Default)]
struct Shard {
    peers: HashMap<PeerKey, Counts>,
    /// The second of the last sweep.
    second: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counts {
    /// Connections held (only when the connection limit is on).
    open: u32,
    /// The second `opened` counts in.
    second: u64,
    /// Connections admitted in `second`.
    opened: u32,
}

/// Whether [`PeerLimits::admit`] let a connection in, and whether it must be released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Over a limit: close the connection at once.
    Refused,
    /// Admitted and counted as held: [`PeerLimits::release`] it exactly once when it ends.
    Held,
    /// Admitted; only its opening was counted (no connection limit), nothing to release.
    Opened,
}

/// What a peer is counted by: an IPv4 address, or the /64 prefix of an IPv6 one (a host is
/// usually given a whole /64 and may use any address in it, so counting single IPv6
/// addresses would not limit it). An IPv4-mapped IPv6 address counts as the IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum PeerKey {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
}

impl PeerKey {
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.octets()),
                None => {
                    let octets = v6.octets();
                    let mut prefix = [0; 8];
                    prefix.copy_from_slice(&octets[..8]);
                    Self::V6Prefix(prefix)
                }
            },
        }
    }
}

impl PeerLimits {
    /// The table for these limits ([`ServerConfig::max_connections_per_peer`] and
    /// [`ServerConfig::max_handshake_rate_per_peer`]), or `None` when both are off.
    ///
    /// [`ServerConfig::max_connections_per_peer`]: crate::ServerConfig::max_connections_per_peer
    /// [`ServerConfig::max_handshake_rate_per_peer`]: crate::ServerConfig::max_handshake_rate_per_peer
    pub(crate) fn new(
        max_connections: Option<NonZeroU32>,
        max_rate: Option<NonZeroU32>,
    ) -> Option<Self> {
        if max_connections.is_none() && max_rate.is_none() {
            return None;
        }
        Some(Self {
            max_connections,
            max_rate,
            base: WallClock::now(),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        })
    }

    /// Counts a connection from `ip` accepted at `now`, unless that takes the peer over a
    /// limit: then nothing is counted and the answer is [`Admission::Refused`].
    pub(crate) fn admit(&self, ip: IpAddr, now: WallClock) -> Admission {
        let key = PeerKey::of(ip);
        let second = self.second_of(now);
        let mut shard = self.shard(key);
        shard.sweep(second);
        let counts = shard.peers.entry(key).or_insert(Counts { open: 0, second, opened: 0 });
        if counts.second != second {
            counts.second = second;
            counts.opened = 0;
        }
        let over_connections = self.max_connections.is_some_and(|max| counts.open >= max.get());
        let over_rate = self.max_rate.is_some_and(|max| counts.opened >= max.get());
        if over_connections || over_rate {
            // Not a new entry: one that is over a limit of at least 1 has counted something.
            return Admission::Refused;
        }
        counts.opened += 1;
        if self.max_connections.is_some() {
            counts.open += 1;
            Admission::Held
        } else {
            Admission::Opened
        }
    }

    /// Gives back a connection [`PeerLimits::admit`] answered [`Admission::Held`] for.
    pub(crate) fn release(&self, ip: IpAddr, now: WallClock) {
        let key = PeerKey::of(ip);
        let second = self.second_of(now);
        let mut shard = self.shard(key);
        let Some(counts) = shard.peers.get_mut(&key) else {
            debug_assert!(false, "released a peer that holds nothing");
            return;
        };
        counts.open = counts.open.saturating_sub(1);
        // An entry still counting this second's openings stays for the rate limit; the
        // shard's next sweep drops it.
        if counts.open == 0 && (self.max_rate.is_none() || counts.second != second) {
            shard.peers.remove(&key);
        }
    }

    /// The start of second 0 of the rate windows: a test bed's virtual clock starts there,
    /// so that its seconds are the table's.
    pub(crate) fn base(&self) -> WallClock {
        self.base
    }

    fn second_of(&self, now: WallClock) -> u64 {
        now.saturating_duration_since(self.base).as_secs()
    }

    fn shard(&self, key: PeerKey) -> MutexGuard<'_, Shard> {
        let index = self.hasher.hash_one(key) as usize % SHARDS;
        // A panic while holding the lock leaves counts that are still consistent.
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Entries in the table (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().peers.len()).sum()
    }
}

impl Shard {
    /// In a new second, drops the entries of peers that hold nothing: their rate windows are
    /// over.
    fn sweep(&mut self, second: u64) {
        if self.second != second {
            self.second = second;
            self.peers.retain(|_, counts| counts.open > 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    use super::*;

    fn limits(connections: u32, rate: u32) -> PeerLimits {
        PeerLimits::new(NonZeroU32::new(connections), NonZeroU32::new(rate)).unwrap()
    }

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn no_limit_builds_no_table() {
        assert!(PeerLimits::new(None, None).is_none());
        let defaults = crate::ServerConfig::default();
        let (connections, rate) =
            (defaults.max_connections_per_peer, defaults.max_handshake_rate_per_peer);
        assert!(PeerLimits::new(connections, rate).is_none());
    }

    #[test]
    fn connections_are_limited_per_peer_and_released() {
        let table = limits(2, 0);
        let now = table.base;
        assert_eq!(table.admit(A, now), Admission::Held);
        assert_eq!(table.admit(A, now), Admission::Held);
        assert_eq!(table.admit(A, now), Admission::Refused);
        // Another peer has its own count.
        assert_eq!(table.admit(B, now), Admission::Held);
        table.release(A, now);
        assert_eq!(table.admit(A, now), Admission::Held);
        assert_eq!(table.admit(A, now), Admission::Refused);
        table.release(A, now);
        table.release(A, now);
        table.release(B, now);
        assert_eq!(table.len(), 0, "entries go when their peers hold nothing");
    }

    #[test]
    fn openings_are_limited_per_second() {
        let table = limits(0, 3);
        let now = table.base;
        for _ in 0..3 {
            assert_eq!(table.admit(A, now), Admission::Opened);
        }
        assert_eq!(table.admit(A, now + Duration::from_millis(999)), Admission::Refused);
        assert_eq!(table.admit(B, now), Admission::Opened);
        let next = now + Duration::from_secs(1);
        assert_eq!(table.admit(A, next), Admission::Opened);
        assert_eq!(table.admit(A, next), Admission::Opened);
        assert!(table.len() <= 2);
    }

    #[test]
    fn a_sweep_in_a_new_second_drops_peers_that_hold_nothing() {
        let mut shard = Shard::default();
        let key = |i: u8| PeerKey::V4([10, 0, 0, i]);
        for i in 0..100 {
            let open = u32::from(i % 2);
            shard.peers.insert(key(i), Counts { open, second: 0, opened: 1 });
        }
        shard.sweep(0);
        assert_eq!(shard.peers.len(), 100, "not in the same second");
        shard.sweep(1);
        assert_eq!(shard.peers.len(), 50);
        assert!(shard.peers.values().all(|c| c.open == 1));
    }

    #[test]
    fn both_limits_together() {
        let table = limits(2, 3);
        let now = table.base;
        assert_eq!(table.admit(A, now), Admission::Held);
        assert_eq!(table.admit(A, now), Admission::Held);
        assert_eq!(table.admit(A, now), Admission::Refused, "two held");
        table.release(A, now);
        assert_eq!(table.admit(A, now), Admission::Held);
        table.release(A, now);
        assert_eq!(table.admit(A, now), Admission::Refused, "three opened this second");
        // Released in this second, the entry stays: its openings still count.
        table.release(A, now);
        assert_eq!(table.len(), 1);
        assert_eq!(table.admit(A, now), Admission::Refused);
        // A release in a later second drops an entry that holds nothing.
        let later = now + Duration::from_secs(2);
        assert_eq!(table.admit(A, later), Admission::Held);
        table.release(A, later + Duration::from_secs(1));
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn ipv6_peers_are_counted_by_their_64_prefix() {
        let one: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(PeerKey::of(one.into()), PeerKey::of(same_64.into()));
        assert_ne!(PeerKey::of(one.into()), PeerKey::of(other_64.into()));
        let mapped = Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped();
        assert_eq!(PeerKey::of(mapped.into()), PeerKey::of(A));

        let table = limits(1, 0);
        let now = table.base;
        assert_eq!(table.admit(one.into(), now), Admission::Held);
        assert_eq!(table.admit(same_64.into(), now), Admission::Refused);
        assert_eq!(table.admit(other_64.into(), now), Admission::Held);
    }
}
