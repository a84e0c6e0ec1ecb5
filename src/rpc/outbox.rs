//! A connection's side of the rpc layer that other threads reach: what they send it
//! (invocations, releases, deferred answers), gathered until its worker sends them as one
//! message, and the requests in flight both ways.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bidir_protocol::rpc::json;

use super::Endpoint;
use super::pending::Waiter;
use crate::ConnHandle;

/// One connection's invocations on their way: encoded, waiting for the worker.
pub(super) struct Outbox {
    conn: ConnHandle,
    /// Messages for the worker to send, encoded as they come.
    pending: Mutex<json::Batch>,
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
            pending: Mutex::default(),
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

    /// Queues one message, encoded by `write` straight into the gathering; the first of a
    /// gathering asks the worker to send them all.
    pub(super) fn push(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        write(pending.next_message());
        if pending.len() == 1 {
            drop(pending);
            // Refused only once the connection is closed: every callback is released then.
            let _ = self.conn.post_to::<Endpoint, _>(|endpoint, cx| endpoint.send_invocations(cx));
        }
    }

    /// Sends everything gathered with `send`, as one message, and starts a new gathering.
    pub(super) fn flush(&self, send: impl FnOnce(&str)) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(text) = pending.text() {
            send(text);
        }
        pending.clear();
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
