//! The bridge's subscriber thread: one Redis subscription per topic this node has subscribers
//! of, and what other nodes publish on them handed to the workers. In sharded mode on a
//! cluster, a thread per shard, each holding the subscriptions of the channels its shard owns,
//! and this thread dispatching to them (and starting them again when the cluster's map
//! moved).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use redis::{ConnectionInfo, PushKind, Value};

use super::cluster::Topology;
use super::stream::{self, Read, Then};
use super::{
    Bridge, Listing, Local, MAX_BACKOFF, MIN_BACKOFF, Namespace, pause, pause_unless, stopping,
};

/// How long a read waits for a message before the thread looks at listings and at the
/// server's state again: also how late a new topic's subscription may reach Redis.
const POLL: Duration = Duration::from_millis(20);
/// Channels per `SUBSCRIBE` when subscribing everything again.
const CHUNK: usize = 512;
/// How long a subscriber's read of a history may wait for Redis.
const READ_WAIT: Duration = Duration::from_secs(2);
/// The most topics whose histories one round trip reads (each read once, however many
/// subscribers wait for it).
const TOPICS_PER_READ: usize = 128;
/// How many times a read of a history whose round trip failed is tried again.
const MAX_TRIES: u8 = 3;

/// Subscribes and reads until the server stops: on the one Redis, or on each shard of a
/// cluster in sharded mode.
pub(super) fn run(bridge: &Bridge, local: &Weak<dyn Local>, listings: &Receiver<Listing>) {
    let (stop, moved) = (AtomicBool::new(false), AtomicBool::new(false));
    if !bridge.redis.sharded {
        let topology = Topology::single(&bridge.redis);
        bridge.counters.shards.store(1, Ordering::Relaxed);
        let reads = &bridge.reads;
        let shard = Shard { bridge, local, topology: &topology, index: 0, listings, reads };
        shard.run(&stop, &moved);
        return;
    }
    // The topics listed, as counted so far: each new set of shard threads is told them all.
    let mut topics: HashMap<Arc<str>, u32> = HashMap::new();
    let mut backoff = MIN_BACKOFF;
    let mut started = false;
    while !stopping(local) {
        let Ok(topology) = Topology::read(&bridge.redis, &bridge.map) else {
            expire(&mut lock(&bridge.reads));
            pause(local, backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        };
        backoff = MIN_BACKOFF;
        if std::mem::replace(&mut started, true) && !topics.is_empty() {
            // The shards are subscribed again from scratch: a gap, caught up from histories.
            bridge.counters.gaps.fetch_add(1, Ordering::Relaxed);
            if let Some(local) = local.upgrade() {
                local.stale_histories(&|_| true);
            }
        }
        let routes: Vec<_> = topology.shards().iter().map(|_| mpsc::channel()).collect();
        let queues: Vec<Mutex<Vec<Read>>> = routes.iter().map(|_| Mutex::default()).collect();
        let (senders, receivers): (Vec<_>, Vec<_>) = routes.into_iter().unzip();
        for (topic, &n) in &topics {
            let shard = topology.shard_of(&bridge.channel_of(topic));
            for _ in 0..n {
                let _ = senders[shard].send((Arc::clone(topic), true));
            }
        }
        moved.store(false, Ordering::Relaxed);
        stop.store(false, Ordering::Relaxed);
        bridge.counters.shards.store(senders.len() as u64, Ordering::Relaxed);
        std::thread::scope(|scope| {
            for (index, listings) in receivers.into_iter().enumerate() {
                let (topology, reads, stop, moved) = (&topology, &queues[index], &stop, &moved);
                scope.spawn(move || {
                    let shard =
                        Shard { bridge, local, topology, index, listings: &listings, reads };
                    shard.run(stop, moved);
                });
            }
            while !stopping(local) && !moved.load(Ordering::Relaxed) {
                match listings.recv_timeout(POLL) {
                    Ok((topic, listed)) => {
                        let n = topics.entry(Arc::clone(&topic)).or_insert(0);
                        *n = if listed { *n + 1 } else { n.saturating_sub(1) };
                        if *n == 0 {
                            topics.remove(&topic);
                        }
                        let shard = topology.shard_of(&bridge.channel_of(&topic));
                        let _ = senders[shard].send((topic, listed));
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                let reads = std::mem::take(&mut *lock(&bridge.reads));
                for read in reads {
                    lock(&queues[topology.shard_of(&read.channel)]).push(read);
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
        // Reads not done yet wait for the next shards.
        for queue in queues {
            lock(&bridge.reads).extend(queue.into_inner().unwrap_or_else(PoisonError::into_inner));
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One Redis (a cluster's shard, or the only one) as the subscriber sees it.
struct Shard<'a> {
    bridge: &'a Bridge,
    local: &'a Weak<dyn Local>,
    /// Which channels are this shard's (`index`).
    topology: &'a Topology,
    index: usize,
    listings: &'a Receiver<Listing>,
    /// Reads of histories of this shard's channels.
    reads: &'a Mutex<Vec<Read>>,
}

impl Shard<'_> {
    fn info(&self) -> &ConnectionInfo {
        &self.topology.shards()[self.index]
    }

    /// Whether rpc topic `topic`'s channel is on this shard.
    fn is_mine(&self, topic: &str) -> bool {
        self.topology.shard_of(&self.bridge.channel(Namespace::Rpc, topic)) == self.index
    }

    /// Subscribes and reads until the server stops or `stop` is set; sets `moved` when the
    /// cluster's map no longer matches (a channel refused or taken back, or the shard gone).
    /// Reads not done yet go back to the bridge.
    fn run(&self, stop: &AtomicBool, moved: &AtomicBool) {
        let (bridge, local) = (self.bridge, self.local);
        let counters = &bridge.counters;
        // Topics with a subscriber here, by channel: an rpc topic's two encodings count apart.
        let mut channels: HashMap<String, u32> = HashMap::new();
        let mut con: Option<redis::Connection> = None;
        let mut backoff = MIN_BACKOFF;
        let mut ever_connected = false;
        // Whether this node had subscriptions while it had no connection: a gap, counted
        // when it connects again.
        let mut missed = false;
        let (subscribe, unsubscribe) = if bridge.redis.sharded {
            ("SSUBSCRIBE", "SUNSUBSCRIBE")
        } else {
            ("SUBSCRIBE", "UNSUBSCRIBE")
        };
        // Channels Redis confirmed (and how many it counted); reads of histories waiting for
        // theirs, and the connection they are read on.
        let mut confirmed: HashSet<String> = HashSet::new();
        // Channels unsubscribed whose end Redis has not confirmed yet (an end then is no
        // move of the cluster's map).
        let mut ending: HashMap<String, u32> = HashMap::new();
        let mut reported = 0;
        let mut waiting: Vec<Read> = Vec::new();
        let mut reader: Option<redis::Connection> = None;
        let done = || stopping(local) || stop.load(Ordering::Relaxed);
        while !done() {
            waiting.append(&mut lock(self.reads));
            let changes = count(bridge, &mut channels, self.listings);
            let Some(c) = con.as_mut() else {
                expire(&mut waiting);
                match bridge.redis.connect_to(self.info(), POLL) {
                    Ok(mut c) => {
                        let all: Vec<&String> = channels.keys().collect();
                        if send(&mut c, subscribe, &all, bridge.redis.sharded).is_err() {
                            missed |= !channels.is_empty();
                            pause_unless(&done, backoff);
                            continue;
                        }
                        if ever_connected {
                            counters.reconnects.fetch_add(1, Ordering::Relaxed);
                        }
                        if std::mem::take(&mut missed) {
                            counters.gaps.fetch_add(1, Ordering::Relaxed);
                        }
                        self.catch_up(&mut waiting);
                        ever_connected = true;
                        counters.links.fetch_add(1, Ordering::Relaxed);
                        con = Some(c);
                    }
                    Err(_) => {
                        missed |= !channels.is_empty();
                        pause_unless(&done, backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        // A shard that stays gone: the cluster's map is read again.
                        if backoff == MAX_BACKOFF {
                            moved.store(true, Ordering::Relaxed);
                        }
                    }
                }
                continue;
            };
            let (added, removed): (Vec<_>, Vec<_>) = changes.into_iter().partition(|(_, on)| *on);
            let removed = forget_histories(bridge, local, removed);
            let added: Vec<&String> = added.iter().map(|(c, _)| c).collect();
            let removed: Vec<&String> = removed.iter().collect();
            // A channel counts as confirmed only from its latest subscription's confirmation.
            for channel in &removed {
                confirmed.remove(*channel);
                *ending.entry((*channel).clone()).or_insert(0) += 1;
            }
            let sent = send(c, subscribe, &added, bridge.redis.sharded)
                .and_then(|()| send(c, unsubscribe, &removed, bridge.redis.sharded));
            self.read_histories(&confirmed, &mut waiting, &mut reader);
            let read = sent.and_then(|()| c.recv_response());
            match read {
                Ok(Value::Push { kind, data }) => {
                    // Redis answers: a connection that keeps failing before this backs off.
                    backoff = MIN_BACKOFF;
                    let Some(local) = local.upgrade() else { break };
                    let Some((channel, subscribed, n)) = received(bridge, &*local, &kind, data)
                    else {
                        continue;
                    };
                    // Redis says how many channels the connection has now.
                    counters.channels.fetch_add(n.wrapping_sub(reported), Ordering::Relaxed);
                    reported = n;
                    if subscribed {
                        confirmed.insert(channel);
                    } else if let Some(pending) = ending.get_mut(&channel) {
                        *pending -= 1;
                        if *pending == 0 {
                            ending.remove(&channel);
                        }
                    } else {
                        // Not asked, for one this node still wants: its slot moved to another
                        // shard.
                        if channels.contains_key(&channel) {
                            moved.store(true, Ordering::Relaxed);
                        }
                        confirmed.remove(&channel);
                    }
                }
                // A channel this shard does not own.
                Ok(Value::ServerError(e))
                    if matches!(e.code(), "MOVED" | "ASK" | "CLUSTERDOWN") =>
                {
                    moved.store(true, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) if e.is_timeout() => {}
                Err(_) => {
                    if !channels.is_empty() {
                        missed = true;
                        if let Some(local) = local.upgrade() {
                            let mine = |topic: &str| self.is_mine(topic);
                            local.stale_histories(&mine);
                        }
                    }
                    // Caught up again on the next connection; reads on a new one too.
                    waiting.retain(|read| matches!(read.then, Then::Post(_)));
                    confirmed.clear();
                    ending.clear();
                    con = None;
                    reader = None;
                    counters.links.fetch_sub(1, Ordering::Relaxed);
                    counters.channels.fetch_sub(std::mem::take(&mut reported), Ordering::Relaxed);
                    // Lost, or refused (an error reply: a Redis without sharded pub/sub): wait
                    // before connecting again, longer each time until Redis answers.
                    pause_unless(&done, backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if con.is_some() {
            counters.links.fetch_sub(1, Ordering::Relaxed);
            counters.channels.fetch_sub(reported, Ordering::Relaxed);
        }
        waiting.retain(|read| matches!(read.then, Then::Post(_)));
        lock(&bridge.reads).append(&mut waiting);
    }

    /// Reads for this node's caches of this shard's histories, after its link to Redis was
    /// down: what it missed is delivered from Redis once their channels are confirmed again.
    fn catch_up(&self, waiting: &mut Vec<Read>) {
        let Some(local) = self.local.upgrade() else { return };
        for (topic, epoch, last, history) in local.kept_histories() {
            if !self.is_mine(&topic) {
                continue;
            }
            waiting.push(Read {
                channel: self.bridge.channel(Namespace::Rpc, &topic),
                topic: topic.to_string(),
                since: Some(last),
                history,
                asked: Instant::now(),
                tries: 0,
                then: Then::CatchUp { epoch, last },
            });
        }
    }

    /// Hands what Redis kept of a cache's topic over for catching up (`None`: it could not
    /// be read); counts a cache that could not catch up.
    fn caught_up(&self, topic: &str, epoch: &str, last: u64, stored: Option<stream::Stored>) {
        let Some(local) = self.local.upgrade() else { return };
        if !local.catch_up(topic, epoch, last, stored) {
            self.bridge.counters.history_gaps.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reads the histories whose channels Redis confirmed, in one round trip on `reader`
    /// (connected if need be), and hands their outcomes on; the others wait.
    fn read_histories(
        &self,
        confirmed: &HashSet<String>,
        waiting: &mut Vec<Read>,
        reader: &mut Option<redis::Connection>,
    ) {
        if waiting.is_empty() {
            return;
        }
        expire(waiting);
        // Those confirmed, of at most `TOPICS_PER_READ` topics; the others wait.
        let mut topics: HashSet<String> = HashSet::new();
        let mut ready = Vec::new();
        for read in std::mem::take(waiting) {
            let room = topics.len() < TOPICS_PER_READ || topics.contains(&read.topic);
            if confirmed.contains(&read.channel) && room {
                topics.insert(read.topic.clone());
                ready.push(read);
            } else {
                waiting.push(read);
            }
        }
        if ready.is_empty() {
            return;
        }
        if reader.is_none() {
            *reader = self.bridge.redis.connect_to(self.info(), READ_WAIT).ok();
        }
        let Some(con) = reader.as_mut() else {
            // Tried again on the next turn; a catch-up that cannot be read at all fails.
            for mut read in ready {
                read.tries += 1;
                match read.then {
                    Then::CatchUp { epoch, last } if read.tries > MAX_TRIES => {
                        self.caught_up(&read.topic, &epoch, last, None);
                    }
                    _ => waiting.push(read),
                }
            }
            return;
        };
        let (outcomes, failed) =
            stream::run(con, &self.bridge.redis.prefix, self.bridge.node, ready);
        if failed.is_some() {
            *reader = None;
        }
        for (mut read, stored) in outcomes {
            // A round trip that failed (a connection from before Redis restarted) is tried
            // again on a new connection, a few times.
            if failed.is_some() && read.tries < MAX_TRIES {
                read.tries += 1;
                waiting.push(read);
                continue;
            }
            match read.then {
                Then::Post(then) => {
                    if let (Some(local), Some(s)) = (self.local.upgrade(), &stored) {
                        local.seed_history(&read.topic, &s.epoch, s.top, read.history);
                    }
                    then(stored);
                }
                Then::CatchUp { epoch, last } => self.caught_up(&read.topic, &epoch, last, stored),
            }
        }
    }
}

/// The rpc topics of `removed` channels no longer hear their events here: their caches end,
/// so that no position from before is taken for a complete one. Returns the channels to
/// unsubscribe: not those a subscriber came back to meanwhile (its listing is on its way).
fn forget_histories(
    bridge: &Bridge,
    local: &Weak<dyn Local>,
    removed: Vec<(String, bool)>,
) -> Vec<String> {
    let Some(local) = local.upgrade() else { return Vec::new() };
    removed
        .into_iter()
        .map(|(channel, _)| channel)
        .filter(|channel| bridge.rpc_topic_of(channel).is_none_or(|t| local.forget_history(t)))
        .collect()
}

/// Subscribers' reads that waited too long are told Redis could not be asked.
fn expire(waiting: &mut Vec<Read>) {
    let (late, wait): (Vec<Read>, Vec<Read>) = std::mem::take(waiting)
        .into_iter()
        .partition(|read| matches!(read.then, Then::Post(_)) && read.asked.elapsed() > READ_WAIT);
    *waiting = wait;
    for read in late {
        if let Then::Post(then) = read.then {
            then(None);
        }
    }
}

/// Applies the registry's listings to the channel counts; returns the channels that gained
/// their first topic (`true`) or lost their last one.
fn count(
    bridge: &Bridge,
    channels: &mut HashMap<String, u32>,
    listings: &Receiver<Listing>,
) -> Vec<(String, bool)> {
    let mut changes = Vec::new();
    while let Ok((topic, listed)) = listings.try_recv() {
        let channel = bridge.channel_of(&topic);
        if listed {
            let n = channels.entry(channel.clone()).or_insert(0);
            *n += 1;
            if *n == 1 {
                changes.push((channel, true));
            }
        } else if let Some(n) = channels.get_mut(&channel) {
            *n -= 1;
            if *n == 0 {
                channels.remove(&channel);
                changes.push((channel, false));
            }
        }
    }
    changes
}

/// Sends `command` for `channels` without waiting: Redis confirms each channel with a push.
/// A sharded subscription names one channel per command (in a cluster, the channels of one
/// command must share a hash slot).
fn send(
    con: &mut redis::Connection,
    command: &str,
    channels: &[&String],
    sharded: bool,
) -> redis::RedisResult<()> {
    let per = if sharded { 1 } else { CHUNK };
    for chunk in channels.chunks(per) {
        let mut cmd = redis::cmd(command);
        for channel in chunk {
            cmd.arg(channel.as_str());
        }
        con.send_packed_command(&cmd.get_packed_command())?;
    }
    Ok(())
}

/// A push from Redis: a message, handed to this node's subscribers, or a channel's
/// subscription confirmed (`true`) or ended (asked, or its slot moved away), with how many
/// channels the connection has now.
fn received(
    bridge: &Bridge,
    local: &dyn Local,
    kind: &PushKind,
    data: Vec<Value>,
) -> Option<(String, bool, u64)> {
    let subscribed = match (kind, data.as_slice()) {
        (
            PushKind::Message | PushKind::SMessage,
            [Value::BulkString(channel), Value::BulkString(message)],
        ) => {
            bridge.deliver(local, channel, message);
            return None;
        }
        (PushKind::Subscribe | PushKind::SSubscribe, _) => true,
        (PushKind::Unsubscribe | PushKind::SUnsubscribe, _) => false,
        _ => return None,
    };
    let [Value::BulkString(channel), Value::Int(n)] = data.as_slice() else { return None };
    Some((String::from_utf8_lossy(channel).into_owned(), subscribed, u64::try_from(*n).ok()?))
}
