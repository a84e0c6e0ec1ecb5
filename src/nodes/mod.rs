//! Several nodes over Redis: topics reach subscribers on every node (docs/nodes.md).
//!
//! Each node runs a bridge of two threads beside its workers, on the `redis` crate's
//! synchronous API (no async runtime):
//!
//! - **subscriber**: holds one Redis subscription per topic that has a subscriber on this
//!   node (counted over workers and connections by the server's registry, released when the
//!   last one goes), reads what other nodes publish and hands it to the workers with local
//!   subscribers, as a publish from another thread would be; reads topic histories kept in
//!   Redis, on a second connection (`stream`).
//! - **publisher**: sends this node's publishes to Redis, pipelined: everything queued while
//!   one batch was on its way goes out as the next one, in one round trip.
//!
//! A publish is delivered to this node's subscribers at once, by the workers, and reaches the
//! other nodes through Redis; each message carries its node's id, so the publishing node
//! skips its own message when Redis hands it back. Delivery across nodes is at most once:
//! nothing is ever delivered twice, and what may be missing is counted ([`NodeStats`]). An
//! event of a topic with a history is the exception: Redis numbers and keeps it, and every
//! node, the publishing one too, delivers it from Redis (`stream`).
//!
//! Built with the `redis` feature only.

mod cluster;
mod publisher;
mod stream;
mod subscriber;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use redis::{ConnectionInfo, IntoConnectionInfo, ProtocolVersion};

use bidir_protocol::Message;
use bidir_protocol::rpc::Position;

use crate::ConnId;
use crate::history::History;
use crate::pubsub::Forward;

pub(crate) use stream::{OnRead, Stored};

/// How a server joins the other nodes: the Redis it shares with them, and how it names
/// channels there. Given to [`ServerBuilder::redis`](crate::ServerBuilder::redis); off unless
/// given.
///
/// ```no_run
/// use bidir::nodes::Redis;
/// let redis = Redis::new("redis://127.0.0.1:6379")?.prefix("chat:");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Redis {
    info: ConnectionInfo,
    prefix: String,
    sharded: bool,
    max_queued_bytes: usize,
}

impl Redis {
    /// Redis at `url` (`redis://[user:password@]host[:port][/db]`, or `unix:///path`),
    /// spoken to in RESP3.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for a URL the `redis` crate cannot read. The server is
    /// not contacted here: a node starts while Redis is down, and its bridge connects (and
    /// reconnects) in the background.
    pub fn new(url: &str) -> io::Result<Self> {
        let info = url.into_connection_info().map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("redis URL {url:?}: {e}"))
        })?;
        let redis = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        Ok(Self {
            info: info.set_redis_settings(redis),
            prefix: "bidir:".to_owned(),
            sharded: false,
            max_queued_bytes: 16 << 20,
        })
    }

    /// What every channel's name starts with (default `bidir:`): nodes with the same prefix
    /// share topics; other prefixes on the same Redis are other applications. A topic `t`
    /// travels on the channel `{prefix}ws:t`, and an rpc topic on `{prefix}rpc:{TAG}t`, where
    /// `{TAG}` is a hash tag made of the topic (docs/nodes.md, "On the wire"). With
    /// [`Redis::sharded`] on a cluster, the prefix must have no `{` or `}`: a hash tag of its
    /// own would put every channel and key in one slot, or split a history's over two.
    pub fn prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.prefix);
        self
    }

    /// Sharded pub/sub (`SSUBSCRIBE` and `SPUBLISH`, Redis 7): in a Redis cluster a channel
    /// then lives on the shard that owns its hash slot, rather than being broadcast to every
    /// shard. The node reads the cluster's slot map at the address given and follows it: a
    /// subscriber thread and a publisher connection per shard, the map read again when it
    /// moves (docs/nodes.md, "Sharded pub/sub and Redis clusters"). A Redis that is not a
    /// cluster is one shard. Default `false`: plain `SUBSCRIBE` and `PUBLISH`, for a single
    /// Redis. Every node sharing a prefix must agree.
    pub fn sharded(mut self, sharded: bool) -> Self {
        self.sharded = sharded;
        self
    }

    /// The bytes of publishes that may wait for Redis while it is unreachable (default
    /// 16 MiB); a publish past it is dropped and counted in [`NodeStats::lost_publishes`].
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = bytes;
        self
    }

    /// A new connection to the Redis at `info` (this one's, or a shard's), with
    /// `read_timeout`.
    fn connect_to(
        &self,
        info: &ConnectionInfo,
        read_timeout: Duration,
    ) -> redis::RedisResult<redis::Connection> {
        // Keepalive probes: a link that died without a word (a half-open connection) fails
        // within about 25 s, and the node reconnects and catches up, instead of waiting.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_IDLE / 2)
            .with_retries(3);
        let tcp = info.tcp_settings().clone().set_keepalive(keepalive);
        let client = redis::Client::open(info.clone().set_tcp_settings(tcp))?;
        let con = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        con.set_read_timeout(Some(read_timeout))?;
        con.set_write_timeout(Some(WRITE_TIMEOUT))?;
        Ok(con)
    }
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The address, never the password.
        f.debug_struct("Redis")
            .field("addr", &self.info.addr().to_string())
            .field("prefix", &self.prefix)
            .field("sharded", &self.sharded)
            .finish_non_exhaustive()
    }
}

/// How long a link to Redis may be silent before keepalive probes check it.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a write to Redis may block before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// The first wait before connecting again; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A node's bridge to the others, as counted now ([`ServerHandle::nodes`]).
///
/// [`ServerHandle::nodes`]: crate::ServerHandle::nodes
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// This node's id: random, new at every start, carried by every message it publishes.
    pub node: u64,
    /// Whether the subscriber's connections to Redis are up (one per shard on a cluster).
    pub connected: bool,
    /// Redis channels this node is subscribed to, as Redis confirmed them: one per topic
    /// with a subscriber on this node (an rpc topic is one channel for both encodings).
    pub channels: u64,
    /// Publishes sent to Redis.
    pub published: u64,
    /// Messages from other nodes handed to this node's subscribers.
    pub received: u64,
    /// Publishes that may not have reached Redis: dropped while it was unreachable and the
    /// queue was full ([`Redis::max_queued_bytes`]), or in a batch whose connection failed
    /// before Redis answered (they are not sent again, which could deliver them twice; an
    /// event for a topic's history is sent again, up to 3 times, since Redis keeps it once).
    pub lost_publishes: u64,
    /// Times the subscriber connected again after losing Redis.
    pub reconnects: u64,
    /// Times this node's subscriptions were down while it had subscribers (Redis lost,
    /// restarted or unreachable): what other nodes published meanwhile did not reach them.
    pub gaps: u64,
    /// Messages on this node's channels that were not a node's (a stranger publishing on the
    /// prefix), dropped.
    pub malformed: u64,
    /// Topic histories this node could not catch up after a gap (Redis no longer kept all
    /// it missed): their subscribers here were closed with 1012, to subscribe again and be
    /// told what they missed (docs/nodes.md, "History across nodes").
    pub history_gaps: u64,
}

/// The counters behind [`NodeStats`], moved by the bridge's threads.
#[derive(Debug, Default)]
struct Counters {
    /// Subscriber connections up, and shards (one but on a cluster in sharded mode).
    links: AtomicU64,
    shards: AtomicU64,
    channels: AtomicU64,
    published: AtomicU64,
    received: AtomicU64,
    lost_publishes: AtomicU64,
    reconnects: AtomicU64,
    gaps: AtomicU64,
    malformed: AtomicU64,
    history_gaps: AtomicU64,
}

/// What the bridge needs of the server it belongs to (the server's shared state implements it,
/// in server.rs): the bridge itself knows nothing of workers, histories or the rpc layer.
pub(crate) trait Local: Send + Sync {
    /// Whether the server is stopping.
    fn stopping(&self) -> bool;
    /// Hands a message of engine topic `topic` to this node's subscribers.
    fn publish(&self, topic: &str, msg: Message<'_>);
    /// An rpc event of `topic`, its data in JSON (`json`) or MessagePack, to this node's
    /// subscribers: another node's, or any node's numbered by Redis (`kept`: its position,
    /// and the connection it skips, which is this node's if the event is). `false` if `data`
    /// is not one value.
    fn publish_rpc(
        &self,
        topic: &str,
        json: bool,
        data: &[u8],
        kept: Option<(&Position<'_>, Option<ConnId>)>,
    ) -> bool;
    /// This node's link to Redis is down (to the shard of the topics `which` says): the
    /// histories it caches may miss events.
    fn stale_histories(&self, which: &dyn Fn(&str) -> bool);
    /// `topic`'s history is at `top` in `epoch`, as Redis said in a read made once this node
    /// heard the topic: a cache starts there if there is none, so that the events after it
    /// are kept, and caught up after a link loss, even before any arrives.
    fn seed_history(&self, topic: &str, epoch: &str, top: u64, history: History);
    /// The histories this node caches: topic, epoch, last offset and bounds.
    fn kept_histories(&self) -> Vec<(Arc<str>, Arc<str>, u64, History)>;
    /// What Redis kept of `topic` after `last` in `epoch`, for a cache that may have missed
    /// it (`None`: Redis could not say): delivered, or the topic's subscribers here closed
    /// to come back. Returns whether it was caught up.
    fn catch_up(&self, topic: &str, epoch: &str, last: u64, stored: Option<Stored>) -> bool;
    /// This node no longer hears of rpc topic `topic`'s events: its cache ends, unless a
    /// subscriber came meanwhile (`false`: the channel is still wanted).
    fn forget_history(&self, topic: &str) -> bool;
}

/// The rpc topic an engine topic carries, if it carries one.
pub(crate) type RpcTopic = for<'a> fn(&'a str) -> Option<&'a str>;

/// A topic gained its first subscriber on this node (`true`) or lost its last one.
pub(crate) type Listing = (Arc<str>, bool);

/// A function that hears what other nodes publish to a topic ([`Bridge::listen`]).
pub(crate) type Listener = dyn Fn(Message<'_>) + Send + Sync;

/// A node's bridge: shared by the server (which queues publishes and reads the counters) and
/// the bridge's two threads.
pub(crate) struct Bridge {
    redis: Redis,
    node: u64,
    /// Which engine topics are rpc topics (an rpc topic's two encodings share a channel).
    rpc_topic: RpcTopic,
    counters: Counters,
    outbox: publisher::Outbox,
    /// The topics' listings, until the subscriber thread takes them.
    listings: Mutex<Option<Receiver<Listing>>>,
    /// Reads of topic histories, until the subscriber thread takes them.
    reads: Mutex<Vec<stream::Read>>,
    /// The last cluster map read (sharded mode), whose shards are asked for the next one.
    map: Mutex<Option<cluster::Topology>>,
    /// Where [`Bridge::listen`] lists its topics, as the registry does.
    watch: Sender<Listing>,
    /// What other nodes publish to these topics goes to these functions too.
    listeners: RwLock<HashMap<Arc<str>, Vec<Arc<Listener>>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Bridge {
    /// A bridge to `redis`, and where the server's registry tells it of listed topics.
    pub(crate) fn new(redis: Redis, rpc_topic: RpcTopic) -> (Arc<Self>, Sender<Listing>) {
        let (tx, rx) = mpsc::channel();
        let mut id = [0; 8];
        // A node id need not be secret, only distinct: the clock stands in if the OS has no
        // randomness to give.
        if getrandom::fill(&mut id).is_err() {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            id = (now.map_or(0, |d| d.as_nanos() as u64) ^ u64::from(std::process::id()))
                .to_le_bytes();
        }
        let bridge = Self {
            redis,
            node: u64::from_le_bytes(id),
            rpc_topic,
            counters: Counters::default(),
            outbox: publisher::Outbox::default(),
            listings: Mutex::new(Some(rx)),
            reads: Mutex::default(),
            map: Mutex::default(),
            watch: tx.clone(),
            listeners: RwLock::default(),
            threads: Mutex::default(),
        };
        (Arc::new(bridge), tx)
    }

    /// Starts the two threads; they stop once the server is stopping (or gone), the
    /// publisher after sending what was queued.
    pub(crate) fn start(self: &Arc<Self>, local: &Weak<dyn Local>) -> io::Result<()> {
        let listings = self.listings.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(listings) = listings else { return Ok(()) };
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        let (bridge, weak) = (Arc::clone(self), Weak::clone(local));
        threads.push(
            std::thread::Builder::new()
                .name("bidir-redis-sub".into())
                .spawn(move || subscriber::run(&bridge, &weak, &listings))?,
        );
        let (bridge, weak) = (Arc::clone(self), Weak::clone(local));
        threads.push(
            std::thread::Builder::new()
                .name("bidir-redis-pub".into())
                .spawn(move || publisher::run(&bridge, &weak))?,
        );
        Ok(())
    }

    /// Wakes the threads to stop and waits for them.
    pub(crate) fn join(&self) {
        self.outbox.wake();
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for thread in threads {
            let _ = thread.join();
        }
    }

    /// Queues a publish for the other nodes.
    pub(crate) fn forward(&self, topic: &str, what: Forward<'_>) {
        let (kind, payload, namespace) = match what {
            Forward::Message(msg) => {
                let kind = match msg.kind() {
                    bidir_protocol::DataKind::Text => Kind::Text,
                    bidir_protocol::DataKind::Binary => Kind::Binary,
                };
                (kind, msg.as_bytes(), Namespace::Ws)
            }
            Forward::Rpc { json: true, data } => (Kind::RpcJson, data, Namespace::Rpc),
            Forward::Rpc { json: false, data } => (Kind::RpcPack, data, Namespace::Rpc),
        };
        let channel = self.channel(namespace, topic);
        let mut message = self.message(kind, payload.len());
        message.extend_from_slice(payload);
        self.queue(publisher::Item { channel, message, keep: None });
    }

    /// Queues an event of rpc topic `topic`, its data in JSON (`json`) or MessagePack, for
    /// the topic's history in Redis, which numbers it and publishes it to every node, this
    /// one included: its subscribers but `exclude` get it then.
    pub(crate) fn keep(
        &self,
        topic: &str,
        json: bool,
        data: &[u8],
        history: History,
        exclude: Option<ConnId>,
    ) {
        let channel = self.channel(Namespace::Rpc, topic);
        let mut message = self.message(Kind::History, stream::EXCLUDE + 1 + data.len());
        message.extend_from_slice(&stream::exclude_bytes(exclude));
        message.push(if json { Kind::RpcJson } else { Kind::RpcPack } as u8);
        message.extend_from_slice(data);
        let keep = publisher::Keep {
            max_events: history.max_events(),
            ttls: stream::ttls(history),
            seq: 0,
            tries: 0,
        };
        self.queue(publisher::Item { channel, message, keep: Some(keep) });
    }

    /// A message of `kind` from this node, its header written, with room for `rest` bytes
    /// more.
    fn message(&self, kind: Kind, rest: usize) -> Vec<u8> {
        let mut message = Vec::with_capacity(HEADER + rest);
        message.push(kind as u8);
        message.extend_from_slice(&self.node.to_le_bytes());
        message
    }

    fn queue(&self, item: publisher::Item) {
        if !self.outbox.push(item, self.redis.max_queued_bytes) {
            self.counters.lost_publishes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Holds the channel of engine topic `topic` until the guard drops: for a subscriber
    /// whose history is read ([`Bridge::read_history`]) before it is subscribed, so that this
    /// node hears the topic's events from before the read on. Drop it once it is subscribed.
    pub(crate) fn pin(&self, topic: Arc<str>) -> Pin {
        let _ = self.watch.send((Arc::clone(&topic), true));
        Pin { watch: self.watch.clone(), topic }
    }

    /// Reads rpc topic `topic`'s history in Redis after `since` (none: only its position),
    /// once this node hears the topic's events (its channel held by a subscriber or a
    /// [`Pin`]), and hands the outcome to `then` on the bridge's thread: `None` if Redis
    /// could not be asked within 2 s.
    pub(crate) fn read_history(
        &self,
        topic: &str,
        since: Option<u64>,
        history: History,
        then: OnRead,
    ) {
        let read = stream::Read {
            topic: topic.to_owned(),
            channel: self.channel(Namespace::Rpc, topic),
            since,
            history,
            asked: std::time::Instant::now(),
            tries: 0,
            then: stream::Then::Post(then),
        };
        self.reads.lock().unwrap_or_else(PoisonError::into_inner).push(read);
    }

    /// Calls `listener` with what other nodes publish to `topic`, holding the topic's Redis
    /// channel for good.
    pub(crate) fn listen(&self, topic: &str, listener: Arc<Listener>) {
        let topic: Arc<str> = Arc::from(topic);
        let mut listeners = self.listeners.write().unwrap_or_else(PoisonError::into_inner);
        listeners.entry(Arc::clone(&topic)).or_default().push(listener);
        drop(listeners);
        let _ = self.watch.send((topic, true));
    }

    /// The counters now.
    pub(crate) fn stats(&self) -> NodeStats {
        let c = &self.counters;
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        NodeStats {
            node: self.node,
            connected: {
                let shards = get(&c.shards);
                shards > 0 && get(&c.links) >= shards
            },
            channels: get(&c.channels),
            published: get(&c.published),
            received: get(&c.received),
            lost_publishes: get(&c.lost_publishes),
            reconnects: get(&c.reconnects),
            gaps: get(&c.gaps),
            malformed: get(&c.malformed),
            history_gaps: get(&c.history_gaps),
        }
    }

    /// The Redis channel of engine topic `topic`: an rpc topic's two encodings share one.
    fn channel_of(&self, topic: &str) -> String {
        match (self.rpc_topic)(topic) {
            Some(topic) => self.channel(Namespace::Rpc, topic),
            None => self.channel(Namespace::Ws, topic),
        }
    }

    /// The rpc topic of a channel of this prefix, if it is one.
    fn rpc_topic_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        rpc_topic(channel.strip_prefix(self.redis.prefix.as_str())?)
    }

    /// `topic`'s channel: `{prefix}ws:{topic}`, or `{prefix}rpc:{TAG}{topic}` — an rpc topic
    /// after its hash tag, so that in a cluster its channel and its history's keys share a
    /// slot.
    fn channel(&self, namespace: Namespace, topic: &str) -> String {
        match namespace {
            Namespace::Ws => format!("{}ws:{topic}", self.redis.prefix),
            Namespace::Rpc => format!("{}rpc:{}{topic}", self.redis.prefix, cluster::tag(topic)),
        }
    }

    /// A message from Redis on `channel`, delivered to this node's subscribers unless this
    /// node sent it.
    fn deliver(&self, local: &dyn Local, channel: &[u8], message: &[u8]) {
        let Some(delivery) = self.read(channel, message) else {
            self.counters.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Delivery { node, topic, kind, payload } = delivery;
        // An event numbered by Redis reaches every node, the publishing one too; any other
        // message was delivered here when it was published.
        let own = node == self.node;
        if own && kind != Kind::History {
            return;
        }
        let msg = match kind {
            Kind::Text => match simdutf8::basic::from_utf8(payload) {
                Ok(text) => Message::Text(text),
                Err(_) => return self.malformed(),
            },
            Kind::Binary => Message::Binary(payload),
            Kind::RpcJson | Kind::RpcPack => {
                let delivered = local.publish_rpc(topic, kind == Kind::RpcJson, payload, None);
                return self.delivered_rpc(delivered, own);
            }
            Kind::History => {
                let delivered =
                    stream::read_kept(payload).is_some_and(|(exclude, at, json, data)| {
                        let exclude = exclude.filter(|_| own);
                        local.publish_rpc(topic, json, data, Some((&at, exclude)))
                    });
                return self.delivered_rpc(delivered, own);
            }
        };
        local.publish(topic, msg);
        let listeners = self.listeners.read().unwrap_or_else(PoisonError::into_inner);
        for listener in listeners.get(topic).into_iter().flatten() {
            listener(msg);
        }
        self.counters.received.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an rpc event handed to this node's subscribers (`delivered`), or one that was
    /// not a well-formed value.
    fn delivered_rpc(&self, delivered: bool, own: bool) {
        if !delivered {
            self.malformed();
        } else if !own {
            self.counters.received.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn malformed(&self) {
        self.counters.malformed.fetch_add(1, Ordering::Relaxed);
    }

    /// A bridge message's parts, if it is one and on a channel of this prefix whose namespace
    /// matches its kind.
    fn read<'a>(&self, channel: &'a [u8], message: &'a [u8]) -> Option<Delivery<'a>> {
        let channel = std::str::from_utf8(channel).ok()?;
        let rest = channel.strip_prefix(self.redis.prefix.as_str())?;
        let (&kind, rest_msg) = message.split_first()?;
        let kind = Kind::from_byte(kind)?;
        let node = u64::from_le_bytes(rest_msg.get(..8)?.try_into().ok()?);
        let topic = match kind {
            Kind::Text | Kind::Binary => rest.strip_prefix("ws:")?,
            Kind::RpcJson | Kind::RpcPack | Kind::History => rpc_topic(rest)?,
        };
        Some(Delivery { node, topic, kind, payload: &rest_msg[8..] })
    }
}

impl fmt::Debug for Bridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bridge").field("redis", &self.redis).field("node", &self.node).finish()
    }
}

/// A node message's header: its kind, then the sending node's id (little-endian).
const HEADER: usize = 1 + 8;
/// A history message's header, before Redis adds the position: [`HEADER`], then the
/// connection the event skips.
const HISTORY_HEADER: usize = HEADER + stream::EXCLUDE;

/// Holds a topic's channel for a read of its history ([`Bridge::read_history`]) until
/// dropped.
pub(crate) struct Pin {
    watch: Sender<Listing>,
    topic: Arc<str>,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let _ = self.watch.send((Arc::clone(&self.topic), false));
    }
}

/// What a node message carries, its first byte (docs/nodes.md, "On the wire").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    /// A WebSocket text message, for the engine's topic.
    Text = 1,
    /// A WebSocket binary message.
    Binary = 2,
    /// An rpc event's data in JSON.
    RpcJson = 3,
    /// An rpc event's data in MessagePack.
    RpcPack = 4,
    /// An rpc event kept in its topic's history: the connection it skips, its position, then
    /// its data's kind (3 or 4) and data (`stream::read_kept`).
    History = 5,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Text,
            2 => Self::Binary,
            3 => Self::RpcJson,
            4 => Self::RpcPack,
            5 => Self::History,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy)]
enum Namespace {
    Ws,
    Rpc,
}

struct Delivery<'a> {
    node: u64,
    topic: &'a str,
    kind: Kind,
    payload: &'a [u8],
}

/// The rpc topic of a channel's name after the prefix (`rpc:{TAG}topic`), if its tag is the
/// topic's.
fn rpc_topic(rest: &str) -> Option<&str> {
    let rest = rest.strip_prefix("rpc:{")?;
    let (hash, topic) = rest.split_at_checked(16)?;
    let topic = topic.strip_prefix('}')?;
    (u64::from_str_radix(hash, 16).ok()? == cluster::hash(topic)).then_some(topic)
}

/// Sleeps `for_` in steps, returning early once the server stops.
fn pause(local: &Weak<dyn Local>, for_: Duration) {
    pause_unless(&|| stopping(local), for_);
}

/// Sleeps `for_` in steps, returning early once `done`.
fn pause_unless(done: &dyn Fn() -> bool, for_: Duration) {
    let step = Duration::from_millis(25);
    let mut left = for_;
    while !left.is_zero() && !done() {
        let nap = left.min(step);
        std::thread::sleep(nap);
        left -= nap;
    }
}

/// Whether the server is stopping, or gone.
fn stopping(local: &Weak<dyn Local>) -> bool {
    local.upgrade().is_none_or(|l| l.stopping())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn bridge() -> Arc<Bridge> {
        Bridge::new(Redis::new("redis://127.0.0.1:1").unwrap().prefix("p:"), crate::rpc::node_topic)
            .0
    }

    #[test]
    fn a_message_reads_back_as_it_was_forwarded() {
        let b = bridge();
        b.forward("room", Forward::Message(Message::Text("hi")));
        let publisher::Item { channel, message, .. } = b.outbox.take_all().pop().unwrap();
        assert_eq!(channel, "p:ws:room");
        assert_eq!(message.len(), HEADER + 2);
        let d = b.read(channel.as_bytes(), &message).unwrap();
        assert_eq!((d.node, d.topic, d.kind, d.payload), (b.node, "room", Kind::Text, &b"hi"[..]));
    }

    #[test]
    fn strangers_and_mismatched_namespaces_are_refused() {
        let b = bridge();
        let mut msg = vec![Kind::RpcJson as u8];
        msg.extend_from_slice(&7u64.to_le_bytes());
        msg.extend_from_slice(b"1");
        let channel = b.channel(Namespace::Rpc, "t");
        assert!(b.read(channel.as_bytes(), &msg).is_some());
        assert!(b.read(b"p:ws:t", &msg).is_none(), "an rpc event on a ws channel");
        assert!(b.read(format!("q{}", &channel[1..]).as_bytes(), &msg).is_none(), "another prefix");
        assert!(b.read(b"p:rpc:{0000000000000000}t", &msg).is_none(), "another topic's tag");
        assert!(b.read(channel.as_bytes(), &msg[..8]).is_none(), "a short header");
        msg[0] = 9;
        assert!(b.read(channel.as_bytes(), &msg).is_none(), "an unknown kind");
    }

    #[test]
    fn rpc_topics_share_one_channel_for_both_encodings() {
        let b = bridge();
        let room = format!("p:rpc:{}room", cluster::tag("room"));
        assert_eq!(b.channel_of("bidir.json.v1:room"), room);
        assert_eq!(b.channel_of("bidir.bin.v1:room"), room);
        assert_eq!(b.rpc_topic_of(&room), Some("room"));
        assert_eq!(b.channel_of("room"), "p:ws:room");
    }

    #[test]
    fn the_queue_is_bounded_and_counts_what_it_drops() {
        let redis = Redis::new("redis://127.0.0.1:1").unwrap().max_queued_bytes(40);
        let b = Bridge::new(redis, crate::rpc::node_topic).0;
        b.forward("t", Forward::Message(Message::Binary(&[0; 20])));
        b.forward("t", Forward::Message(Message::Binary(&[0; 20])));
        assert_eq!(b.stats().lost_publishes, 1);
        assert_eq!(b.outbox.take_all().len(), 1);
    }

    #[test]
    fn a_url_redis_cannot_read_is_refused_with_its_reason() {
        let e = Redis::new("http://nope").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        // Built without TLS to Redis (docs/nodes.md, "Security").
        assert_eq!(Redis::new("rediss://h:1").unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert!(format!("{:?}", Redis::new("redis://:secret@h:1").unwrap()).contains("h:1"));
        assert!(!format!("{:?}", Redis::new("redis://:secret@h:1").unwrap()).contains("secret"));
    }
}
