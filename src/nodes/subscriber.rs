//! The bridge's subscriber thread: one Redis subscription per topic this node has subscribers
//! of, and what other nodes publish on them handed to the workers.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::{PoisonError, Weak};
use std::time::{Duration, Instant};

use redis::{PushKind, Value};

use super::stream::{self, Read, Then};
use super::{Bridge, Listing, Local, MAX_BACKOFF, MIN_BACKOFF, Namespace, pause, stopping};

/// How long a read waits for a message before the thread looks at listings and at the
/// server's state again: also how late a new topic's subscription may reach Redis.
const POLL: Duration = Duration::from_millis(20);
/// Channels per `SUBSCRIBE` when subscribing everything again.
const CHUNK: usize = 512;
/// How long a subscriber's read of a history may wait for Redis.
const READ_WAIT: Duration = Duration::from_secs(2);

/// Subscribes and reads until the server stops.
pub(super) fn run(bridge: &Bridge, local: &Weak<dyn Local>, listings: &Receiver<Listing>) {
    let counters = &bridge.counters;
    // Topics with a subscriber here, by channel: an rpc topic's two encodings count apart.
    let mut channels: HashMap<String, u32> = HashMap::new();
    let mut con: Option<redis::Connection> = None;
    let mut backoff = MIN_BACKOFF;
    let mut ever_connected = false;
    // Whether this node had subscriptions while it had no connection: a gap, counted when
    // it connects again.
    let mut missed = false;
    let (subscribe, unsubscribe) = if bridge.redis.sharded {
        ("SSUBSCRIBE", "SUNSUBSCRIBE")
    } else {
        ("SUBSCRIBE", "UNSUBSCRIBE")
    };
    // Channels Redis confirmed; reads of histories waiting for theirs, and the connection
    // they are read on.
    let mut confirmed: HashSet<String> = HashSet::new();
    let mut waiting: Vec<Read> = Vec::new();
    let mut reader: Option<redis::Connection> = None;
    loop {
        if stopping(local) {
            return;
        }
        waiting.append(&mut bridge.reads.lock().unwrap_or_else(PoisonError::into_inner));
        let changes = count(bridge, &mut channels, listings);
        let Some(c) = con.as_mut() else {
            expire(&mut waiting);
            match bridge.redis.connect(POLL) {
                Ok(mut c) => {
                    let all: Vec<&String> = channels.keys().collect();
                    if send(&mut c, subscribe, &all, bridge.redis.sharded).is_err() {
                        missed |= !channels.is_empty();
                        pause(local, backoff);
                        continue;
                    }
                    if ever_connected {
                        counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    if std::mem::take(&mut missed) {
                        counters.gaps.fetch_add(1, Ordering::Relaxed);
                    }
                    catch_up(bridge, local, &mut waiting);
                    ever_connected = true;
                    counters.connected.store(true, Ordering::Relaxed);
                    con = Some(c);
                }
                Err(_) => {
                    missed |= !channels.is_empty();
                    pause(local, backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            continue;
        };
        let (added, removed): (Vec<_>, Vec<_>) = changes.into_iter().partition(|(_, on)| *on);
        let removed = forget_histories(bridge, local, removed);
        let added: Vec<&String> = added.iter().map(|(c, _)| c).collect();
        let removed: Vec<&String> = removed.iter().collect();
        let sent = send(c, subscribe, &added, bridge.redis.sharded)
            .and_then(|()| send(c, unsubscribe, &removed, bridge.redis.sharded));
        read_histories(bridge, local, &confirmed, &mut waiting, &mut reader);
        let read = sent.and_then(|()| c.recv_response());
        match read {
            Ok(Value::Push { kind, data }) => {
                // Redis answers: a connection that keeps failing before this backs off.
                backoff = MIN_BACKOFF;
                let Some(local) = local.upgrade() else { return };
                received(bridge, &*local, &kind, data, &mut confirmed);
            }
            Ok(_) => {}
            Err(e) if e.is_timeout() => {}
            Err(_) => {
                if !channels.is_empty() {
                    missed = true;
                    if let Some(local) = local.upgrade() {
                        local.stale_histories();
                    }
                }
                // Caught up again on the next connection.
                waiting.retain(|read| matches!(read.then, Then::Post(_)));
                confirmed.clear();
                con = None;
                counters.connected.store(false, Ordering::Relaxed);
                counters.channels.store(0, Ordering::Relaxed);
                // Lost, or refused (an error reply: a Redis without sharded pub/sub): wait
                // before connecting again, longer each time until Redis answers.
                pause(local, backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
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

/// Reads for this node's caches of histories, after its link to Redis was down: what it
/// missed is delivered from Redis once their channels are confirmed again.
fn catch_up(bridge: &Bridge, local: &Weak<dyn Local>, waiting: &mut Vec<Read>) {
    let Some(local) = local.upgrade() else { return };
    for (topic, epoch, last, history) in local.kept_histories() {
        waiting.push(Read {
            channel: bridge.channel(Namespace::Rpc, &topic),
            topic: topic.to_string(),
            since: Some(last),
            history,
            asked: Instant::now(),
            then: Then::CatchUp { epoch, last },
        });
    }
}

/// Reads the histories whose channels Redis confirmed, in one round trip on `reader`
/// (connected if need be), and hands their outcomes on; the others wait.
fn read_histories(
    bridge: &Bridge,
    local: &Weak<dyn Local>,
    confirmed: &HashSet<String>,
    waiting: &mut Vec<Read>,
    reader: &mut Option<redis::Connection>,
) {
    expire(waiting);
    let (ready, wait): (Vec<Read>, Vec<Read>) =
        std::mem::take(waiting).into_iter().partition(|read| confirmed.contains(&read.channel));
    *waiting = wait;
    if ready.is_empty() {
        return;
    }
    if reader.is_none() {
        *reader = bridge.redis.connect(READ_WAIT).ok();
    }
    let Some(con) = reader.as_mut() else {
        waiting.extend(ready);
        return;
    };
    let (outcomes, failed) = stream::run(con, &bridge.redis.prefix, ready);
    if failed.is_some() {
        *reader = None;
    }
    for (read, stored) in outcomes {
        match read.then {
            Then::Post(then) => then(stored),
            Then::CatchUp { epoch, last } => {
                let Some(local) = local.upgrade() else { return };
                if !local.catch_up(&read.topic, &epoch, last, stored) {
                    bridge.counters.history_gaps.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
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

/// A push from Redis: a message for this node's subscribers, or a subscription's
/// confirmation (which says how many channels the connection has).
fn received(
    bridge: &Bridge,
    local: &dyn Local,
    kind: &PushKind,
    data: Vec<Value>,
    confirmed: &mut HashSet<String>,
) {
    let counters = &bridge.counters;
    match (kind, data.as_slice()) {
        (
            PushKind::Message | PushKind::SMessage,
            [Value::BulkString(channel), Value::BulkString(message)],
        ) => {
            bridge.deliver(local, channel, message);
        }
        (
            PushKind::Subscribe
            | PushKind::SSubscribe
            | PushKind::Unsubscribe
            | PushKind::SUnsubscribe,
            [channel, Value::Int(n)],
        ) => {
            counters.channels.store(u64::try_from(*n).unwrap_or(0), Ordering::Relaxed);
            if let Value::BulkString(channel) = channel {
                let channel = String::from_utf8_lossy(channel).into_owned();
                if matches!(kind, PushKind::Subscribe | PushKind::SSubscribe) {
                    confirmed.insert(channel);
                } else {
                    confirmed.remove(&channel);
                }
            }
        }
        _ => {}
    }
}
