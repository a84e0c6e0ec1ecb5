//! The bridge's subscriber thread: one Redis subscription per topic this node has subscribers
//! of, and what other nodes publish on them handed to the workers.

use std::collections::HashMap;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use redis::{PushKind, Value};

use super::{Bridge, Listing, Local, MAX_BACKOFF, MIN_BACKOFF, pause, stopping};

/// How long a read waits for a message before the thread looks at listings and at the
/// server's state again: also how late a new topic's subscription may reach Redis.
const POLL: Duration = Duration::from_millis(20);
/// Channels per `SUBSCRIBE` when subscribing everything again.
const CHUNK: usize = 512;

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
    loop {
        if stopping(local) {
            return;
        }
        let changes = count(bridge, &mut channels, listings);
        let Some(c) = con.as_mut() else {
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
                        lose_histories(local);
                    }
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
        forget_histories(bridge, local, &removed);
        let added: Vec<&String> = added.iter().map(|(c, _)| c).collect();
        let removed: Vec<&String> = removed.iter().map(|(c, _)| c).collect();
        let sent = send(c, subscribe, &added, bridge.redis.sharded)
            .and_then(|()| send(c, unsubscribe, &removed, bridge.redis.sharded));
        let read = sent.and_then(|()| c.recv_response());
        match read {
            Ok(Value::Push { kind, data }) => {
                // Redis answers: a connection that keeps failing before this backs off.
                backoff = MIN_BACKOFF;
                let Some(local) = local.upgrade() else { return };
                received(bridge, &*local, &kind, data);
            }
            Ok(_) => {}
            Err(e) if e.is_timeout() => {}
            Err(_) => {
                if !channels.is_empty() {
                    missed = true;
                    lose_histories(local);
                }
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

/// This node may be missing other nodes' events from now on (and did, once it is back):
/// its topics' histories start again under new epochs, so that no client is told it
/// recovered everything across the gap.
fn lose_histories(local: &Weak<dyn Local>) {
    if let Some(local) = local.upgrade() {
        local.lose_histories();
    }
}

/// The rpc topics of `removed` channels no longer hear other nodes' events here: their
/// histories end (a later subscriber starts a new epoch), so that no position from before is
/// taken for a complete one.
fn forget_histories(bridge: &Bridge, local: &Weak<dyn Local>, removed: &[(String, bool)]) {
    let Some(local) = local.upgrade() else { return };
    for (channel, _) in removed {
        if let Some(topic) = bridge.rpc_topic_of(channel) {
            local.forget_history(topic);
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
fn received(bridge: &Bridge, local: &dyn Local, kind: &PushKind, data: Vec<Value>) {
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
            [_, Value::Int(n)],
        ) => counters.channels.store(u64::try_from(*n).unwrap_or(0), Ordering::Relaxed),
        _ => {}
    }
}
