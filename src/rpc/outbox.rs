//! A connection's side of the rpc layer that other threads reach: what they send it
//! (invocations, releases, deferred answers), gathered until its worker sends them as one
//! message, and the requests in flight both ways.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::Endpoint;
use super::gather::Gathering;
use super::pending::Waiter;
use super::wire::{Egress, Wire};
use crate::{ConnHandle, Context};

/// Invocations are refused while this much waits for the worker: a thread invoking faster
/// than the connection's worker sends cannot grow the gathering without bound.
const MAX_PENDING_BYTES: usize = 16 << 20;

/// One connection's invocations on their way: encoded, waiting for the worker.
pub(super) struct Outbox {
    conn: ConnHandle,
    /// The connection's encoding, which everything queued is written in.
    wire: Wire,
    pending: Mutex<Gathering>,
    /// Invocations refused because their callback was released, over every connection.
    refused: Arc<AtomicU64>,
    /// The client's requests answered later and not yet answered or cancelled.
    in_flight: Mutex<HashSet<u64>>,
    /// The server's requests to the client (callback calls), by id, waiting for answers;
    /// `None` once the connection ended (no request can wait for an answer then).
    requests: Mutex<Option<HashMap<u64, Arc<Waiter>>>>,
    next_request: AtomicU64,
}

impl Outbox {
    pub(super) fn new(conn: ConnHandle, refused: Arc<AtomicU64>, wire: Wire) -> Self {
        Self {
            conn,
            wire,
            pending: Mutex::new(Gathering::new(wire)),
            refused,
            in_flight: Mutex::default(),
            requests: Mutex::new(Some(HashMap::new())),
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
        self.push_within(usize::MAX, write);
    }

    /// [`Outbox::push`] unless `limit` bytes are waiting already: `false` then.
    pub(super) fn push_within(&self, limit: usize, write: impl FnOnce(&mut Vec<u8>)) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.bytes() >= limit {
            return false;
        }
        pending.push(write);
        let first = pending.len() == 1;
        drop(pending);
        if first {
            // Refused only once the connection is closed: every callback is released then.
            let _ = self.conn.post_to::<Endpoint, _>(|endpoint, cx| endpoint.send_invocations(cx));
        }
        true
    }

    /// Sends everything gathered on `cx` through `egress`, a message per batch, in order, and
    /// starts a new gathering.
    pub(super) fn send(&self, cx: &mut Context<'_>, egress: &mut Egress) {
        egress.flush(cx, &mut self.pending.lock().unwrap_or_else(PoisonError::into_inner));
    }

    pub(super) fn conn(&self) -> &ConnHandle {
        &self.conn
    }

    /// The connection's encoding.
    pub(super) fn wire(&self) -> Wire {
        self.wire
    }

    /// Queues an invocation, unless too much waits for the worker already.
    pub(super) fn push_invocation(&self, write: impl FnOnce(&mut Vec<u8>)) -> bool {
        self.push_within(MAX_PENDING_BYTES, write)
    }

    /// Counts one refused invocation.
    pub(super) fn refuse(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Registers a request of the server's: its id, for the answer to find `waiter`; `None`
    /// once the connection ended.
    pub(super) fn request(&self, waiter: Arc<Waiter>) -> Option<u64> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        requests.as_mut()?.insert(id, waiter);
        Some(id)
    }

    /// The request an answer names, taken: `None` for an unknown id (timed out, or never
    /// sent).
    pub(super) fn answered(&self, id: u64) -> Option<Arc<Waiter>> {
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        requests.as_mut()?.remove(&id)
    }

    /// Every request still waiting, taken (the connection ended).
    pub(super) fn abandon(&self) -> Vec<Arc<Waiter>> {
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        requests.take().into_iter().flat_map(HashMap::into_values).collect()
    }
}
