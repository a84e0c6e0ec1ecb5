//! The bridge's publisher thread: this node's publishes to Redis, pipelined.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex, PoisonError, Weak};
use std::time::Duration;

use super::cluster::Topology;
use super::{Bridge, Local, MAX_BACKOFF, MIN_BACKOFF, pause, stopping, stream};

/// How long Redis may take to answer a batch before the connection is given up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// The most publishes one round trip carries.
const MAX_BATCH: usize = 1024;

/// Publishes waiting for the publisher thread, oldest first.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    queue: Mutex<Queue>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Item>,
    bytes: usize,
    /// Events queued for histories so far: the next one's number ([`Keep::seq`]) follows,
    /// given under the lock, so that numbers increase in the queue's order.
    kept: u64,
}

/// A publish: `message` on `channel`, or kept in its topic's history first.
#[derive(Debug)]
pub(super) struct Item {
    pub(super) channel: String,
    pub(super) message: Vec<u8>,
    pub(super) keep: Option<Keep>,
}

/// How long an event of a topic with a history is kept ([`stream::KEEP`]; where: its
/// channel's keys); its message is the header Redis completes with the event's position,
/// then the data.
#[derive(Debug)]
pub(super) struct Keep {
    pub(super) max_events: usize,
    pub(super) ttls: (u64, u64),
    /// This node's number for the event, increasing in the queue's order (given when it is
    /// queued): Redis keeps the last one it kept of each node per topic, so an event sent
    /// again after a failed round trip is kept once.
    pub(super) seq: u64,
    /// Round trips that failed for it so far.
    pub(super) tries: u8,
}

/// How many times an event for a history is sent again after a round trip that failed.
const MAX_TRIES: u8 = 3;
/// The most events of one topic one call of the script keeps.
const KEPT_PER_CALL: usize = 256;

impl Item {
    fn size(&self) -> usize {
        self.channel.len() + self.message.len()
    }
}

impl Outbox {
    /// Queues a publish unless that would put more than `max_bytes` in waiting; wakes the
    /// thread. Returns whether it was queued.
    pub(super) fn push(&self, mut item: Item, max_bytes: usize) -> bool {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let size = item.size();
        if queue.bytes + size > max_bytes {
            return false;
        }
        queue.bytes += size;
        if let Some(keep) = &mut item.keep {
            queue.kept += 1;
            keep.seq = queue.kept;
        }
        let was_empty = queue.items.is_empty();
        queue.items.push_back(item);
        drop(queue);
        if was_empty {
            self.ready.notify_one();
        }
        true
    }

    /// Puts events back at the front, in their order, to be sent again.
    fn requeue(&self, items: Vec<Item>) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.bytes += items.iter().map(Item::size).sum::<usize>();
        for item in items.into_iter().rev() {
            queue.items.push_front(item);
        }
    }

    pub(super) fn wake(&self) {
        self.ready.notify_one();
    }

    /// Waits up to `timeout` for something queued.
    fn wait(&self, timeout: Duration) {
        let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.items.is_empty() {
            let _ = self.ready.wait_timeout(queue, timeout);
        }
    }

    /// Up to `max` of the oldest publishes.
    fn take(&self, max: usize) -> Vec<Item> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let n = queue.items.len().min(max);
        let batch: Vec<_> = queue.items.drain(..n).collect();
        queue.bytes -= batch.iter().map(Item::size).sum::<usize>();
        batch
    }

    #[cfg(test)]
    pub(super) fn take_all(&self) -> Vec<Item> {
        self.take(usize::MAX)
    }

    fn is_empty(&self) -> bool {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).items.is_empty()
    }
}

/// Sends what is queued, a batch per round trip (per shard on a cluster in sharded mode),
/// until the server stops; then sends what is left, if Redis is there, and returns.
pub(super) fn run(bridge: &Bridge, local: &Weak<dyn Local>) {
    let counters = &bridge.counters;
    // The shards (one but on a cluster), and a connection to each with the SHA-1 of the
    // script that keeps events, loaded on it.
    let mut topology: Option<Topology> = None;
    let mut links: Vec<Option<(redis::Connection, String)>> = Vec::new();
    let mut backoff = MIN_BACKOFF;
    let command = if bridge.redis.sharded { "SPUBLISH" } else { "PUBLISH" };
    loop {
        let stop = stopping(local);
        if stop && bridge.outbox.is_empty() {
            return;
        }
        if bridge.outbox.is_empty() {
            bridge.outbox.wait(Duration::from_millis(100));
            continue;
        }
        if topology.is_none() {
            let map = if bridge.redis.sharded {
                Topology::read(&bridge.redis, &bridge.map)
            } else {
                Ok(Topology::single(&bridge.redis))
            };
            match map {
                Ok(map) => {
                    links = map.shards().iter().map(|_| None).collect();
                    topology = Some(map);
                }
                Err(_) => {
                    if !wait_for_redis(bridge, local, stop, &mut backoff) {
                        return;
                    }
                    continue;
                }
            }
        }
        let map = topology.as_ref().expect("read above");
        if connect(bridge, map, &mut links).is_err() {
            if !wait_for_redis(bridge, local, stop, &mut backoff) {
                return;
            }
            // A shard that stays gone: the cluster's map is read again.
            if backoff == MAX_BACKOFF {
                topology = None;
            }
            continue;
        }
        backoff = MIN_BACKOFF;
        let mut shards: Vec<Vec<Item>> = links.iter().map(|_| Vec::new()).collect();
        for item in bridge.outbox.take(MAX_BATCH) {
            shards[map.shard_of(&item.channel)].push(item);
        }
        let mut moved = false;
        for (link, batch) in links.iter_mut().zip(shards) {
            let Some((c, keep)) = link.as_mut().filter(|_| !batch.is_empty()) else { continue };
            let prefix = &bridge.redis.prefix;
            let Err(e) = pipeline(prefix, bridge.node, command, keep, &batch).exec(c) else {
                counters.published.fetch_add(batch.len() as u64, Ordering::Relaxed);
                continue;
            };
            // Some of the batch may have reached Redis. A plain publish sent again could be
            // delivered twice, so it is counted lost instead; an event for a history is sent
            // again (Redis keeps it once), unless Redis refused it as such. The connection is
            // given up only when it failed, or lost the script (it is loaded again); the
            // cluster's map when a shard refused a channel; an error reply (a Redis without
            // SPUBLISH) keeps them.
            let refused = matches!(e.code(), Some("MOVED" | "ASK" | "CLUSTERDOWN"));
            moved |= refused;
            let failed = e.is_io_error() || e.is_connection_dropped() || e.is_timeout();
            let again = failed || refused || e.code() == Some("NOSCRIPT");
            if again {
                *link = None;
            }
            let (mut resend, lost): (Vec<Item>, Vec<Item>) = batch
                .into_iter()
                .partition(|i| again && i.keep.as_ref().is_some_and(|k| k.tries < MAX_TRIES));
            for item in &mut resend {
                item.keep.as_mut().expect("kept").tries += 1;
            }
            counters.lost_publishes.fetch_add(lost.len() as u64, Ordering::Relaxed);
            bridge.outbox.requeue(resend);
        }
        if moved {
            topology = None;
        }
    }
}

/// Redis could not be reached: waits before trying again, longer each time. Returns `false`,
/// counting what waits as lost, if the server is stopping.
fn wait_for_redis(
    bridge: &Bridge,
    local: &Weak<dyn Local>,
    stop: bool,
    backoff: &mut Duration,
) -> bool {
    if stop {
        let lost = bridge.outbox.take(usize::MAX).len() as u64;
        bridge.counters.lost_publishes.fetch_add(lost, Ordering::Relaxed);
        return false;
    }
    pause(local, *backoff);
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    true
}

/// Connects the shards of `map` that have no connection, loading the script on each.
fn connect(
    bridge: &Bridge,
    map: &Topology,
    links: &mut [Option<(redis::Connection, String)>],
) -> redis::RedisResult<()> {
    for (info, link) in map.shards().iter().zip(links.iter_mut()).filter(|(_, l)| l.is_none()) {
        let mut c = bridge.redis.connect_to(info, ANSWER_TIMEOUT)?;
        let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(stream::KEEP).query(&mut c)?;
        *link = Some((c, sha));
    }
    Ok(())
}

/// One shard's batch as a pipeline: `command` (`PUBLISH` or `SPUBLISH`) for each plain
/// publish, the script `keep` for each run of events kept in one topic's history (up to
/// [`KEPT_PER_CALL`]), in the batch's order.
fn pipeline(prefix: &str, node: u64, command: &str, keep: &str, batch: &[Item]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    // The epoch of a topic that has none yet: one per batch is enough, since a topic gets one
    // once (new each time, so that positions of its history's lives never match).
    let epoch = batch.iter().any(|i| i.keep.is_some()).then(crate::history::new_epoch);
    let node = format!("{node:016x}");
    let mut rest = batch;
    while let Some((first, _)) = rest.split_first() {
        let Some(how) = &first.keep else {
            pipe.cmd(command).arg(&first.channel).arg(&first.message).ignore();
            rest = &rest[1..];
            continue;
        };
        let run = rest
            .iter()
            .take(KEPT_PER_CALL)
            .take_while(|i| i.keep.is_some() && i.channel == first.channel)
            .count();
        let (top, log) = stream::keys_of_channel(prefix, &first.channel);
        let cmd = pipe.cmd("EVALSHA").arg(keep).arg(2).arg(top).arg(log);
        cmd.arg(epoch.as_deref()).arg(how.max_events).arg(how.ttls.0).arg(how.ttls.1);
        cmd.arg(&first.channel).arg(command).arg(&node);
        for item in &rest[..run] {
            let (header, data) = item.message.split_at(super::HISTORY_HEADER);
            cmd.arg(header).arg(data).arg(item.keep.as_ref().map_or(0, |k| k.seq));
        }
        cmd.ignore();
        rest = &rest[run..];
    }
    pipe
}
