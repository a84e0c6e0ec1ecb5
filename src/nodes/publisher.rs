//! The bridge's publisher thread: this node's publishes to Redis, pipelined.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex, PoisonError, Weak};
use std::time::Duration;

use super::{Bridge, Local, MAX_BACKOFF, MIN_BACKOFF, pause, stopping};

/// How long Redis may take to answer a batch before the connection is given up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// The most publishes one round trip carries.
const MAX_BATCH: usize = 1024;

/// Publishes waiting for the publisher thread: `(channel, message)`, oldest first.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    queue: Mutex<Queue>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<(String, Vec<u8>)>,
    bytes: usize,
}

impl Outbox {
    /// Queues a message unless that would put more than `max_bytes` in waiting; wakes the
    /// thread. Returns whether it was queued.
    pub(super) fn push(&self, channel: String, message: Vec<u8>, max_bytes: usize) -> bool {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let size = channel.len() + message.len();
        if queue.bytes + size > max_bytes {
            return false;
        }
        queue.bytes += size;
        let was_empty = queue.items.is_empty();
        queue.items.push_back((channel, message));
        drop(queue);
        if was_empty {
            self.ready.notify_one();
        }
        true
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

    /// Up to `max` of the oldest messages.
    fn take(&self, max: usize) -> Vec<(String, Vec<u8>)> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let n = queue.items.len().min(max);
        let batch: Vec<_> = queue.items.drain(..n).collect();
        queue.bytes -= batch.iter().map(|(c, m)| c.len() + m.len()).sum::<usize>();
        batch
    }

    #[cfg(test)]
    pub(super) fn take_all(&self) -> Vec<(String, Vec<u8>)> {
        self.take(usize::MAX)
    }

    fn is_empty(&self) -> bool {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).items.is_empty()
    }
}

/// Sends what is queued, a batch per round trip, until the server stops; then sends what is
/// left, if Redis is there, and returns.
pub(super) fn run(bridge: &Bridge, local: &Weak<dyn Local>) {
    let counters = &bridge.counters;
    let mut con: Option<redis::Connection> = None;
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
        let Some(c) = con.as_mut() else {
            match bridge.redis.connect(ANSWER_TIMEOUT) {
                Ok(c) => {
                    con = Some(c);
                    backoff = MIN_BACKOFF;
                }
                // What waits is lost only if the server stops before Redis is back.
                Err(_) if stop => {
                    let lost = bridge.outbox.take(usize::MAX).len() as u64;
                    counters.lost_publishes.fetch_add(lost, Ordering::Relaxed);
                    return;
                }
                Err(_) => {
                    pause(local, backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            continue;
        };
        let batch = bridge.outbox.take(MAX_BATCH);
        let mut pipe = redis::pipe();
        for (channel, message) in &batch {
            pipe.cmd(command).arg(channel).arg(message).ignore();
        }
        match pipe.exec(c) {
            Ok(()) => {
                counters.published.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                // Some of the batch may have reached Redis: sending it again could deliver it
                // twice, so it is counted lost instead. The connection is given up only when it
                // failed; an error reply (a Redis without SPUBLISH) keeps it.
                counters.lost_publishes.fetch_add(batch.len() as u64, Ordering::Relaxed);
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    con = None;
                }
            }
        }
    }
}
