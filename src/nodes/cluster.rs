//! A Redis cluster's slot map, for sharded pub/sub (`Redis::sharded`): which shard owns a
//! channel or a key, so that each node subscribes, publishes and reads on the owner
//! (docs/nodes.md, "Sharded pub/sub"). A Redis that is not a cluster is one shard owning
//! every slot.

use std::sync::{Mutex, PoisonError};

use redis::{ConnectionAddr, ConnectionInfo, Value};

use super::Redis;

/// A cluster's hash slots.
const SLOTS: u16 = 16384;

/// The hash slot of a channel or key: CRC16 (XMODEM) of its hash tag — what lies between its
/// first `{` and the next `}`, if not empty — or of the whole name.
pub(super) fn slot(name: &[u8]) -> u16 {
    let tagged = name.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &name[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(name)) % SLOTS
}

/// The hash tag an rpc topic's channel and history keys carry, `{` and `}` included, so
/// that in a cluster they share a slot whatever the topic's characters: 16 hex digits of
/// the topic's FNV-1a hash.
pub(super) fn tag(topic: &str) -> String {
    format!("{{{:016x}}}", hash(topic))
}

/// The hash [`tag`] writes: FNV-1a, 64 bits.
pub(super) fn hash(topic: &str) -> u64 {
    let step = |h: u64, b: u8| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    topic.bytes().fold(0xcbf2_9ce4_8422_2325, step)
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc = 0u16;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 == 0 { crc << 1 } else { (crc << 1) ^ 0x1021 };
        }
    }
    crc
}

/// Which shard owns which slots.
#[derive(Clone, Debug)]
pub(super) struct Topology {
    /// `(first, last, shard)` slot ranges.
    ranges: Vec<(u16, u16, usize)>,
    /// Each shard's primary.
    shards: Vec<ConnectionInfo>,
}

impl Topology {
    /// One shard, `redis`'s address, owning every slot.
    pub(super) fn single(redis: &Redis) -> Self {
        Self { ranges: vec![(0, SLOTS - 1, 0)], shards: vec![redis.info.clone()] }
    }

    /// The slot map (`CLUSTER SLOTS`) as the first shard of the last map read (`known`,
    /// shared by the bridge's threads) that answers tells it, else `redis`'s address (the
    /// seed may be the shard that failed), or one shard if Redis is not a cluster. Kept in
    /// `known` for the next time.
    pub(super) fn read(redis: &Redis, known: &Mutex<Option<Self>>) -> redis::RedisResult<Self> {
        let last = known.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let shards = last.as_ref().map_or(&[][..], |k| &k.shards[..]);
        let mut failed = None;
        for info in shards.iter().chain([&redis.info]) {
            match Self::read_at(redis, info) {
                Ok(topology) => {
                    *known.lock().unwrap_or_else(PoisonError::into_inner) = Some(topology.clone());
                    return Ok(topology);
                }
                Err(e) => failed = Some(e),
            }
        }
        Err(failed.expect("the seed was asked"))
    }

    fn read_at(redis: &Redis, info: &ConnectionInfo) -> redis::RedisResult<Self> {
        let mut con = redis.connect_to(info, super::CONNECT_TIMEOUT)?;
        match redis::cmd("CLUSTER").arg("SLOTS").query::<Value>(&mut con) {
            Ok(slots) => {
                Ok(Self::parse(redis, info, &slots).unwrap_or_else(|| Self::single(redis)))
            }
            // "ERR This instance has cluster support disabled".
            Err(e) if e.code() == Some("ERR") => Ok(Self::single(redis)),
            Err(e) => Err(e),
        }
    }

    /// A `CLUSTER SLOTS` answer from the node at `asked`: `[[first, last, [host, port, …],
    /// replicas…], …]`.
    fn parse(redis: &Redis, asked: &ConnectionInfo, slots: &Value) -> Option<Self> {
        let Value::Array(ranges) = slots else { return None };
        let seed_host = match asked.addr() {
            ConnectionAddr::Tcp(host, _) => host.clone(),
            _ => return None,
        };
        let mut topology = Self { ranges: Vec::new(), shards: Vec::new() };
        let mut addrs: Vec<(String, u16)> = Vec::new();
        for range in ranges {
            let Value::Array(parts) = range else { return None };
            let [Value::Int(first), Value::Int(last), Value::Array(primary), ..] = &parts[..]
            else {
                return None;
            };
            let (host, port) = match &primary[..] {
                [host, Value::Int(port), ..] => (text(host)?, u16::try_from(*port).ok()?),
                _ => return None,
            };
            // An empty host (or "?") is the address the node asked was reached at.
            let host = if host.is_empty() || host == "?" { seed_host.clone() } else { host };
            let shard = match addrs.iter().position(|a| *a == (host.clone(), port)) {
                Some(shard) => shard,
                None => {
                    let info = redis.info.clone().set_addr(ConnectionAddr::Tcp(host.clone(), port));
                    topology.shards.push(info);
                    addrs.push((host, port));
                    addrs.len() - 1
                }
            };
            let (first, last) = (u16::try_from(*first).ok()?, u16::try_from(*last).ok()?);
            topology.ranges.push((first, last, shard));
        }
        (!topology.shards.is_empty()).then_some(topology)
    }

    /// The shard that owns `name`'s slot (the first one if no range names it).
    pub(super) fn shard_of(&self, name: &str) -> usize {
        let slot = slot(name.as_bytes());
        self.ranges
            .iter()
            .find(|(first, last, _)| (*first..=*last).contains(&slot))
            .map_or(0, |r| r.2)
    }

    /// Each shard's primary, by index.
    pub(super) fn shards(&self) -> &[ConnectionInfo] {
        &self.shards
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_cluster_slots() {
        // Known values from the Redis cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"), "an empty tag hashes the whole name");
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        // Any topic, even empty or full of braces, gives its channel and keys one slot.
        for topic in ["", "}", "{", "a}b{c", "room/1"] {
            let tag = tag(topic);
            assert_eq!(tag.len(), 18);
            let (channel, key) = (format!("p:rpc:{tag}{topic}"), format!("p:log:{tag}{topic}"));
            assert_eq!(slot(channel.as_bytes()), slot(key.as_bytes()), "{topic:?}");
        }
        assert_ne!(tag("a"), tag("b"));
    }

    #[test]
    fn a_slot_map_reads_with_the_seed_host_for_an_empty_one() {
        let redis = Redis::new("redis://10.0.0.5:7000").unwrap();
        let node = |host: &str, port: i64| {
            Value::Array(vec![Value::BulkString(host.as_bytes().to_vec()), Value::Int(port)])
        };
        let slots = Value::Array(vec![
            Value::Array(vec![Value::Int(0), Value::Int(5460), node("", 7000)]),
            Value::Array(vec![Value::Int(5461), Value::Int(10922), node("10.0.0.6", 7001)]),
            Value::Array(vec![Value::Int(10923), Value::Int(16383), node("", 7000)]),
        ]);
        let t = Topology::parse(&redis, &redis.info, &slots).unwrap();
        assert_eq!(t.shards().len(), 2);
        assert_eq!(t.shards()[0].addr(), &ConnectionAddr::Tcp("10.0.0.5".into(), 7000));
        assert_eq!(t.shards()[1].addr(), &ConnectionAddr::Tcp("10.0.0.6".into(), 7001));
        assert_eq!(t.shard_of("foo"), 0, "slot 12182");
        let second =
            (0..).map(|n| format!("t{n}")).find(|n| (5461..=10922).contains(&slot(n.as_bytes())));
        assert_eq!(t.shard_of(&second.unwrap()), 1);
        assert!(Topology::parse(&redis, &redis.info, &Value::Array(vec![])).is_none());
    }
}
