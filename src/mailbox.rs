//! A worker's inbox: the commands other threads send it ([`ConnHandle`](crate::ConnHandle),
//! [`ServerHandle`](crate::ServerHandle), other workers' publishes), taken once per loop turn
//! with one wake-up per batch.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use bytes::Bytes;

use bidir_protocol::{CloseCode, DataKind};

use crate::client::engine::PendingConnect;
use crate::meta::ConnId;
use crate::metrics::WorkerStats;

/// Work for a worker from other threads.
pub(crate) enum Command {
    Send {
        id: ConnId,
        kind: DataKind,
        payload: Bytes,
    },
    Close {
        id: ConnId,
        code: CloseCode,
        reason: String,
    },
    /// A message for a topic's subscribers; the worker encodes (and compresses) it once.
    Publish {
        topic: Arc<str>,
        kind: DataKind,
        payload: Bytes,
    },
    /// Open a client connection ([`ServerHandle::connect`](crate::ServerHandle::connect)).
    Connect(Box<PendingConnect>),
    Stats(mpsc::Sender<WorkerStats>),
    Shutdown {
        deadline: Instant,
    },
}

/// A worker's multi-producer inbox, with a wake-up per batch.
pub(crate) struct Mailbox {
    queue: Mutex<Vec<Command>>,
    waker: Arc<dyn bidir_sys::Waker>,
}

impl Mailbox {
    pub(crate) fn new(waker: Arc<dyn bidir_sys::Waker>) -> Self {
        Self { queue: Mutex::new(Vec::new()), waker }
    }

    /// Queues a command; wakes the worker if the mailbox was empty (a non-empty mailbox has a
    /// wake-up pending already).
    pub(crate) fn push(&self, command: Command) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = queue.is_empty();
        queue.push(command);
        drop(queue);
        if was_empty {
            // A failed eventfd write means the counter is saturated: a wake-up is pending.
            let _ = self.waker.wake();
        }
    }

    /// Whether nothing is queued (a test bed's worker is idle only then).
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// Takes every queued command (swapping buffers, so the lock is held for a moment).
    pub(crate) fn drain(&self, into: &mut Vec<Command>) {
        debug_assert!(into.is_empty());
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut *queue, into);
    }
}
