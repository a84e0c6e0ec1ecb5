//! Topic histories shared by every node, kept in Redis (docs/nodes.md, "History across
//! nodes"): a topic's events in a stream, numbered by Redis in the script that also publishes
//! them, and read back for a subscriber that returns or a node that lost its link.
//!
//! A topic `t` keeps two keys (`{TAG}` its hash tag, as in its channel's name):
//! `{prefix}top:{TAG}t`, a hash of its `epoch` (8 hex digits, chosen by the node that first
//! needs one), `top` (the last offset given) and, per node that published, `n:<node id>` (the
//! number of its last event kept), and `{prefix}log:{TAG}t`,
//! a stream of its events with ids `0-<offset>`, each with fields `t` (Redis's clock when
//! kept, in ms), `d` (the data's kind byte, 3 JSON or 4 MessagePack, then the data) and `h`
//! (the message's header: kind, node, skipped connection). The
//! stream holds at most the history's count (`MAXLEN`) and expires when nothing was added
//! for the history's age; the hash lives a day longer, so that a quiet topic keeps its
//! epoch. A new epoch (the hash gone: expired, evicted, deleted) starts an empty stream.

use std::time::{Duration, Instant};

use redis::Value;

use bidir_protocol::rpc::Position;

use crate::ConnId;
use crate::history::History;

/// Numbers, keeps and publishes events of one topic, in their order, each once: a node's
/// event sent again (its number not past the last one kept of that node) is skipped. KEYS:
/// the hash, the stream. ARGV: an epoch for a topic that has none, the most events kept, the
/// stream's and the hash's time to live (ms), the channel, the publish command, the node's id
/// (hex); then, for each event, its message's header (kind, node, excluded connection), its
/// data and its number. Returns how many were kept.
pub(super) const KEEP: &str = r"
local node = 'n:' .. ARGV[7]
local seen = tonumber(redis.call('HGET', KEYS[1], node) or '0')
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
  redis.call('DEL', KEYS[2])
end
local top = tonumber(redis.call('HGET', KEYS[1], 'top'))
local t = redis.call('TIME')
local ms = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
local kept = 0
for i = 8, #ARGV, 3 do
  local number = tonumber(ARGV[i + 2])
  if number > seen then
    top = top + 1
    seen = number
    kept = kept + 1
    local id = string.format('%d', top)
    redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], '0-' .. id, 't', ms, 'd', ARGV[i + 1], 'h', ARGV[i])
    local at = string.format('%016x%02x', top, #epoch) .. epoch
    redis.call(ARGV[6], ARGV[5], ARGV[i] .. at .. ARGV[i + 1])
  end
end
if kept > 0 then
  redis.call('HSET', KEYS[1], 'top', string.format('%d', top), node, string.format('%d', seen))
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return kept
";

/// Reads a topic's history after an offset. KEYS: the hash, the stream. ARGV: the offset
/// (empty: only the position), the most events read, an epoch for a topic that has none, the
/// hash's time to live (ms). Returns `{epoch, top, now_ms, entries}`.
const READ: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[3]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('DEL', KEYS[2])
end
local top = tonumber(redis.call('HGET', KEYS[1], 'top'))
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local entries = {}
if ARGV[1] ~= '' then
  entries = redis.call('XRANGE', KEYS[2], '(0-' .. ARGV[1], '+', 'COUNT', ARGV[2])
end
return {epoch, top, now, entries}
";

/// How much longer than the history's age a topic's hash lives.
const EPOCH_KEPT: Duration = Duration::from_secs(24 * 60 * 60);

/// A topic's keys: its hash and its stream, after the hash tag of its channel's name.
pub(super) fn keys(prefix: &str, topic: &str) -> (String, String) {
    let tagged = format!("{}{topic}", super::cluster::tag(topic));
    (format!("{prefix}top:{tagged}"), format!("{prefix}log:{tagged}"))
}

/// The keys of the topic whose channel is `channel` (`{prefix}rpc:{TAG}topic`), as [`keys`]
/// names them.
pub(super) fn keys_of_channel(prefix: &str, channel: &str) -> (String, String) {
    let tagged = channel.get(prefix.len() + "rpc:".len()..).unwrap_or_default();
    (format!("{prefix}top:{tagged}"), format!("{prefix}log:{tagged}"))
}

/// The times to live of a topic's stream and hash, in ms (at most a century: Redis refuses
/// an expiry past its clock's range).
pub(super) fn ttls(history: History) -> (u64, u64) {
    const CENTURY_MS: u64 = 100 * 365 * 24 * 60 * 60 * 1000;
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).clamp(1, CENTURY_MS);
    (ms(history.max_age()), ms(history.max_age().saturating_add(EPOCH_KEPT)))
}

/// A history message's header after the node's: whether a connection is excluded, then its
/// id (worker, slot, generation, little-endian).
pub(super) const EXCLUDE: usize = 1 + 2 + 4 + 4;

pub(super) fn exclude_bytes(exclude: Option<ConnId>) -> [u8; EXCLUDE] {
    let mut bytes = [0; EXCLUDE];
    if let Some(id) = exclude {
        bytes[0] = 1;
        bytes[1..3].copy_from_slice(&id.worker.to_le_bytes());
        bytes[3..7].copy_from_slice(&id.slot.to_le_bytes());
        bytes[7..].copy_from_slice(&id.generation.to_le_bytes());
    }
    bytes
}

/// A history message's body, after the node's id: the excluded connection, the position
/// Redis gave (16 hex digits of offset, 2 of the epoch's length, the epoch), the data's
/// kind (`true`: JSON) and the data.
pub(super) fn read_kept(body: &[u8]) -> Option<(Option<ConnId>, Position<'_>, bool, &[u8])> {
    let (exclude, rest) = body.split_at_checked(EXCLUDE)?;
    let exclude = excluded(exclude);
    let (offset, rest) = rest.split_at_checked(16)?;
    let offset = u64::from_str_radix(std::str::from_utf8(offset).ok()?, 16).ok()?;
    let (len, rest) = rest.split_at_checked(2)?;
    let len = usize::from_str_radix(std::str::from_utf8(len).ok()?, 16).ok()?;
    let (epoch, rest) = rest.split_at_checked(len)?;
    let epoch = std::str::from_utf8(epoch).ok()?;
    let (json, data) = data_of(rest)?;
    Some((exclude, Position { offset, epoch: epoch.into() }, json, data))
}

/// The connection [`exclude_bytes`] names, if any.
fn excluded(bytes: &[u8]) -> Option<ConnId> {
    let bytes: &[u8; EXCLUDE] = bytes.try_into().ok()?;
    (bytes[0] == 1).then(|| ConnId {
        worker: u16::from_le_bytes([bytes[1], bytes[2]]),
        slot: u32::from_le_bytes([bytes[3], bytes[4], bytes[5], bytes[6]]),
        generation: u32::from_le_bytes([bytes[7], bytes[8], bytes[9], bytes[10]]),
    })
}

/// Kept data (its kind byte, then the data): whether it is JSON, and the data.
fn data_of(kept: &[u8]) -> Option<(bool, &[u8])> {
    match kept.split_first()? {
        (3, data) => Some((true, data)),
        (4, data) => Some((false, data)),
        _ => None,
    }
}

/// A topic's history as Redis has it.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) epoch: String,
    /// The last offset given.
    pub(crate) top: u64,
    /// The events after the offset asked for, oldest first.
    pub(crate) events: Vec<StoredEvent>,
}

/// One event of a [`Stored`] history.
#[derive(Clone, Debug)]
pub(crate) struct StoredEvent {
    pub(crate) offset: u64,
    /// How long Redis has kept it.
    pub(crate) age: Duration,
    /// Its data in JSON (`true`) or MessagePack.
    pub(crate) json: bool,
    pub(crate) data: Vec<u8>,
    /// The connection of this node it skips (a broadcast's caller).
    pub(crate) exclude: Option<ConnId>,
}

/// What is done with a read's outcome (`None`: Redis could not be asked), on the subscriber
/// thread.
pub(crate) type OnRead = Box<dyn FnOnce(Option<Stored>) + Send>;

/// A read of a topic's history, waiting for the subscriber thread.
pub(super) struct Read {
    /// The rpc topic.
    pub(super) topic: String,
    /// Its channel: read once this node's subscription to it is confirmed, so that every
    /// event after what the read sees reaches this node.
    pub(super) channel: String,
    /// The events after this offset (none: only the position).
    pub(super) since: Option<u64>,
    pub(super) history: History,
    pub(super) asked: Instant,
    /// Round trips that failed for it so far.
    pub(super) tries: u8,
    pub(super) then: Then,
}

/// What a read is for.
pub(super) enum Then {
    /// A subscriber's: its outcome goes to this function.
    Post(OnRead),
    /// This node's cache of the topic, at `last` in `epoch` when its link to Redis was lost.
    CatchUp { epoch: std::sync::Arc<str>, last: u64 },
}

/// Reads `reads` in one round trip on `con`, one read per topic (from the earliest offset
/// its reads ask for), each read with its outcome: `None` for those whose read failed, and
/// the error if the round trip itself failed (the connection is then to be given up). An
/// event skips a connection (`StoredEvent::exclude`) only if it is `node`'s.
pub(super) fn run(
    con: &mut redis::Connection,
    prefix: &str,
    node: u64,
    reads: Vec<Read>,
) -> (Vec<(Read, Option<Stored>)>, Option<redis::RedisError>) {
    // Topics in the order first asked, each read from the earliest offset asked.
    let mut topics: Vec<(&str, Option<u64>, History)> = Vec::new();
    for read in &reads {
        match topics.iter_mut().find(|(t, _, _)| *t == read.topic) {
            Some((_, since, _)) => {
                *since = match (*since, read.since) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            None => topics.push((&read.topic, read.since, read.history)),
        }
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    // The epoch of a topic that has none yet (one per round trip, as for publishes).
    let epoch = crate::history::new_epoch();
    for (topic, since, history) in &topics {
        let (top, log) = keys(prefix, topic);
        let since = since.map(|s| s.to_string()).unwrap_or_default();
        pipe.cmd("EVAL").arg(READ).arg(2).arg(top).arg(log).arg(since);
        pipe.arg(history.max_events()).arg(&*epoch).arg(ttls(*history).1);
    }
    let answers = match pipe.query::<Vec<redis::RedisResult<Value>>>(con) {
        Ok(answers) => answers,
        Err(e) => return (reads.into_iter().map(|read| (read, None)).collect(), Some(e)),
    };
    let stored: Vec<(String, Option<Stored>)> = topics
        .iter()
        .zip(answers)
        .map(|((topic, _, _), answer)| {
            ((*topic).to_owned(), answer.ok().and_then(|a| stored(a, node)))
        })
        .collect();
    let outcomes = reads
        .into_iter()
        .map(|read| {
            let found = stored.iter().find(|(topic, _)| *topic == read.topic);
            let outcome = found.and_then(|(_, s)| s.as_ref()).map(|s| s.after(read.since));
            (read, outcome)
        })
        .collect();
    (outcomes, None)
}

impl Stored {
    /// This history as a read after `since` sees it (none: only the position).
    fn after(&self, since: Option<u64>) -> Self {
        let events = match since {
            Some(since) => self.events.iter().filter(|e| e.offset > since).cloned().collect(),
            None => Vec::new(),
        };
        Self { epoch: self.epoch.clone(), top: self.top, events }
    }
}

/// [`READ`]'s answer.
fn stored(answer: Value, node: u64) -> Option<Stored> {
    let Value::Array(parts) = answer else { return None };
    let Ok([epoch, Value::Int(top), Value::Int(now), Value::Array(entries)]) =
        <[Value; 4]>::try_from(parts)
    else {
        return None;
    };
    let epoch = match epoch {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok()?,
        Value::SimpleString(text) => text,
        _ => return None,
    };
    let events = entries.iter().map(|entry| event(entry, now, node)).collect::<Option<_>>()?;
    Some(Stored { epoch, top: u64::try_from(top).ok()?, events })
}

/// One stream entry: `[id, [field, value, …]]`.
fn event(entry: &Value, now: i64, node: u64) -> Option<StoredEvent> {
    let Value::Array(entry) = entry else { return None };
    let [Value::BulkString(id), Value::Array(fields)] = &entry[..] else { return None };
    let offset = std::str::from_utf8(id).ok()?.strip_prefix("0-")?.parse().ok()?;
    let (mut at, mut kept, mut exclude) = (None, None, None);
    for pair in fields.chunks_exact(2) {
        let [Value::BulkString(name), Value::BulkString(value)] = pair else { continue };
        match &name[..] {
            b"t" => at = std::str::from_utf8(value).ok()?.parse::<i64>().ok(),
            b"d" => kept = Some(value),
            // The message's header: kind, node, skipped connection.
            b"h" => {
                let from =
                    value.get(1..9).and_then(|id| id.try_into().ok()).map(u64::from_le_bytes);
                exclude = value.get(9..).filter(|_| from == Some(node)).and_then(excluded);
            }
            _ => {}
        }
    }
    let (json, data) = data_of(kept?)?;
    let age = Duration::from_millis(u64::try_from(now.saturating_sub(at?)).unwrap_or(0));
    Some(StoredEvent { offset, age, json, data: data.to_vec(), exclude })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_and_its_topic_name_the_same_keys() {
        let b = super::super::tests::bridge();
        let channel = b.channel(super::super::Namespace::Rpc, "room/1");
        assert_eq!(keys_of_channel("p:", &channel), keys("p:", "room/1"));
        assert!(keys("p:", "room/1").0.starts_with("p:top:{"));
    }

    #[test]
    fn a_history_message_reads_back() {
        let id = ConnId { worker: 3, slot: 70_000, generation: 9 };
        let mut body = exclude_bytes(Some(id)).to_vec();
        body.extend_from_slice(b"000000000000002a08abcdef01");
        body.push(3);
        body.extend_from_slice(b"[1]");
        let (exclude, at, json, data) = read_kept(&body).unwrap();
        assert_eq!(
            (exclude, at.offset, &*at.epoch, json, data),
            (Some(id), 42, "abcdef01", true, &b"[1]"[..])
        );
        let mut none = exclude_bytes(None).to_vec();
        none.extend_from_slice(&body[EXCLUDE..]);
        assert_eq!(read_kept(&none).unwrap().0, None);
        assert!(read_kept(&body[..EXCLUDE + 20]).is_none(), "cut in its epoch");
        let mut bad = body.clone();
        bad[EXCLUDE + 26] = 7;
        assert!(read_kept(&bad).is_none(), "an unknown data kind");
    }

    #[test]
    fn a_read_answer_parses_with_ages() {
        let entry = |offset: u64, t: &str| {
            Value::Array(vec![
                Value::BulkString(format!("0-{offset}").into_bytes()),
                Value::Array(vec![
                    Value::BulkString(b"t".to_vec()),
                    Value::BulkString(t.as_bytes().to_vec()),
                    Value::BulkString(b"d".to_vec()),
                    Value::BulkString(b"\x04\x01".to_vec()),
                ]),
            ])
        };
        let answer = Value::Array(vec![
            Value::BulkString(b"0badcafe".to_vec()),
            Value::Int(8),
            Value::Int(10_000),
            Value::Array(vec![entry(7, "9000"), entry(8, "9990")]),
        ]);
        let s = stored(answer, 1).unwrap();
        assert_eq!((s.epoch.as_str(), s.top), ("0badcafe", 8));
        let events: Vec<_> =
            s.events.iter().map(|e| (e.offset, e.age.as_millis(), e.json)).collect();
        assert_eq!(events, [(7, 1000, false), (8, 10, false)]);
        assert!(stored(Value::Array(vec![Value::Int(1)]), 1).is_none());
    }
}
