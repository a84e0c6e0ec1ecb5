//! A connection's side of the rpc layer that other threads reach: what they send it
//! (invocations, releases, deferred answers), gathered until its worker sends them as one
//! message, and the requests in flight both ways.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::Endpoint;
use super::pending::Waiter;
use crate::ConnHandle;

/// One connection's invocations on their way: encoded, waiting for the worker.
pub(super) struct Outbox {
    conn: ConnHandle,
    pending: Mutex<Vec<Vec<u8>>>,
    /// Invocations refused because their callback was released, over every connection.
    refused: Arc<AtomicU64>,
    /// The client's requests answered later and not yet answered or cancelled.
    in_flight: Mutex<HashSet<u64>>,
    /// The server's requests to the client (callback calls), by id, waiting for answers.
    requests: Mutex<HashMap<u64, Arc<Waiter>>>,
    next_request: AtomicU64,
}

impl Outbox {
    pub(super) fn new(conn: ConnHandle, refused: Arc<AtomicU64>) -> Self {
        Self {
            conn,
            pending: Mutex::new(Vec::new()),
            refused,
            in_flight: Mutex::default(),
            requests: Mutex::default(),
            next_request: AtomicU64::new(0),
        }
    }

    /// Counts request `id` as answered later, if fewer than `max` are.
    pub(super) fn begin(&self, id: u64, max: usize) -> Result<(), &'static str> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        if in_flight.contains(&id) {
            Err("the id of a call in flight")
        } else if in_flight.len() >= max {
            Err("too many calls in flight")
        } else {
            in_flight.insert(id);
            Ok(())
        }
    }

    /// Request `id` is answered: `false` if it was cancelled meanwhile (no answer then).
    pub(super) fn finish(&self, id: u64) -> bool {
        self.in_flight.lock().unwrap_or_else(PoisonError::into_inner).remove(&id)
    }

    /// The client gave up on request `id`.
    pub(super) fn cancel(&self, id: u64) {
        self.finish(id);
    }

    /// Whether request `id` still waits for its answer on an open connection.
    pub(super) fn is_waiting(&self, id: u64) -> bool {
        !self.conn.is_closed()
            && self.in_flight.lock().unwrap_or_else(PoisonError::into_inner).contains(&id)
    }

    /// Queues one encoded message; the first of a gathering asks the worker to send them all.
    pub(super) fn push(&self, encoded: Vec<u8>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.push(encoded);
        if pending.len() == 1 {
            drop(pending);
            // Refused only once the connection is closed: every callback is released then.
            let _ = self.conn.post_to::<Endpoint, _>(|endpoint, cx| endpoint.send_invocations(cx));
        }
    }

    /// Everything queued, as one message's text (a batch when there are several).
    pub(super) fn take(&self) -> Option<String> {
        let pending =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        let text = match pending.len() {
            0 => return None,
            1 => pending.into_iter().next().unwrap_or_default(),
            _ => {
                let mut batch =
                    Vec::with_capacity(pending.iter().map(|m| m.len() + 1).sum::<usize>() + 1);
                batch.push(b'[');
                for (i, msg) in pending.iter().enumerate() {
                    if i > 0 {
                        batch.push(b',');
                    }
                    batch.extend_from_slice(msg);
                }
                batch.push(b']');
                batch
            }
        };
        // The encoder writes UTF-8 only.
        String::from_utf8(text).ok()
    }
}

impl Outbox {
    pub(super) fn conn(&self) -> &ConnHandle {
        &self.conn
    }

    /// Counts one refused invocation.
    pub(super) fn refuse(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Registers a request of the server's: its id, for the answer to find `waiter`.
    pub(super) fn request(&self, waiter: Arc<Waiter>) -> u64 {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        self.requests.lock().unwrap_or_else(PoisonError::into_inner).insert(id, waiter);
        id
    }

    /// The request an answer names, taken: `None` for an unknown id (timed out, or never
    /// sent).
    pub(super) fn answered(&self, id: u64) -> Option<Arc<Waiter>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner).remove(&id)
    }

    /// Every request still waiting, taken (the connection ended).
    pub(super) fn abandon(&self) -> Vec<Arc<Waiter>> {
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        requests.drain().map(|(_, w)| w).collect()
    }
}
