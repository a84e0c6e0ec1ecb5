//! A connection's identity and the state the engine keeps for it beside its protocol state and
//! its handler: the send queue, the upgrade request, subscriptions, flags the worker's loop
//! reads, and what it shares with the connection's handles.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::outq::OutQueue;
use crate::pubsub::Subscriptions;

/// A connection's identity: its worker, its slot, and the slot's generation, so an id is never
/// confused with a later connection in the same slot.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) worker: u16,
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

impl ConnId {
    /// The worker the connection lives on.
    pub fn worker(&self) -> usize {
        usize::from(self.worker)
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnId({}/{}#{})", self.worker, self.slot, self.generation)
    }
}

/// State shared between a connection's worker and its handles.
#[derive(Debug, Default)]
pub(crate) struct ConnShared {
    closed: AtomicBool,
    /// Payload bytes pushed by handles and not yet applied by the worker.
    pub(crate) in_mailbox: AtomicUsize,
    /// The connection's send queue, as of the worker's last look.
    pub(crate) queued: AtomicUsize,
}

impl ConnShared {
    pub(crate) fn set_closed(&self) {
        self.closed.store(true, Ordering::Release);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// No timer wheel entry: [`Meta::timer_tick`] of an unscheduled slot.
pub(crate) const NO_TICK: u64 = u64::MAX;

/// Per-connection state a handler's [`Context`](crate::Context) reaches; the protocol state
/// and the handler live in the worker's slot beside it.
pub(crate) struct Meta {
    pub(crate) id: ConnId,
    pub(crate) peer: SocketAddr,
    pub(crate) out: OutQueue,
    /// The upgrade request's target, then `\n` and the chosen subprotocol if there is one
    /// (one allocation for both; a target never contains a line break).
    pub(crate) request: Box<str>,
    /// Topics this connection subscribed to on this worker.
    pub(crate) topics: Subscriptions,
    pub(crate) handle: Option<Arc<ConnShared>>,
    /// The handler asked to drop the connection.
    pub(crate) abort: bool,
    /// Listed in the worker's dirty list.
    pub(crate) dirty: bool,
    /// A write was cut short: wait for writability before writing again.
    pub(crate) blocked: bool,
    /// The queue reached the drain threshold since the last `on_drain`.
    pub(crate) above_drain: bool,
    /// `on_close` was called.
    pub(crate) close_reported: bool,
    /// The handler panicked: it is not called again.
    pub(crate) poisoned: bool,
    /// Retired: the socket closes after this turn.
    pub(crate) retired: bool,
    /// Counted in the server's per-peer limits: released when the slot retires.
    pub(crate) peer_held: bool,
    /// permessage-deflate with no zlib state kept between messages (no context takeover, or
    /// compact context): the worker's codec is lent to this connection around each call
    /// instead of the connection owning one.
    pub(crate) shares_codec: bool,
    /// Publishes to it go through its handler ([`Handler::on_publish`](crate::Handler)).
    pub(crate) intercepts_publishes: bool,
    /// The wheel tick this slot is scheduled for, or [`NO_TICK`].
    pub(crate) timer_tick: u64,
    /// The handler's timer ([`Context::set_timer`](crate::Context::set_timer)), in worker
    /// nanoseconds, or `u64::MAX`.
    pub(crate) user_timer: u64,
}

impl Meta {
    /// A fresh slot's state: nothing queued, no target yet, scheduled at `timer_tick`.
    pub(crate) fn new(id: ConnId, peer: SocketAddr, timer_tick: u64) -> Self {
        Self {
            id,
            peer,
            out: OutQueue::default(),
            request: Box::from(""),
            topics: Subscriptions::default(),
            handle: None,
            abort: false,
            dirty: false,
            blocked: false,
            above_drain: false,
            close_reported: false,
            poisoned: false,
            retired: false,
            peer_held: false,
            shares_codec: false,
            intercepts_publishes: false,
            timer_tick,
            user_timer: u64::MAX,
        }
    }

    /// Publishes the queue's length to the connection's handles, if it has any.
    pub(crate) fn share_queued(&self) {
        if let Some(handle) = &self.handle {
            handle.queued.store(self.out.len(), Ordering::Relaxed);
        }
    }
}
