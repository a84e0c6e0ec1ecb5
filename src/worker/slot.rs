//! The connection table: a slab of slots, each a connection's [`Meta`] and the [`Phase`] of
//! its life, with the timer wheel that schedules them and the codecs they borrow. Every way
//! into an open connection goes through [`Conns::open`], which lends the worker's codec to a
//! connection that shares it for as long as the borrow lasts.

use std::time::Duration;

use slab::Slab;

use bidir_protocol::Connection;

use super::codecs::{Codecs, Lent};
use crate::Handler;
use crate::client::handshake::Handshake;
use crate::meta::{ConnId, Meta};
use crate::timer::Wheel;
use crate::tls::Session;

/// One connection: the state a handler's context reaches, and where it is in its life.
pub(super) struct Slot {
    pub(super) meta: Meta,
    pub(super) phase: Phase,
    /// The connection's TLS session, on a TLS listener or a `wss://` client connection.
    pub(super) tls: Option<Box<Session>>,
}

// Most of a slot's life is `Open`: boxing it would add an allocation per connection to save
// memory only during the handshake.
#[allow(clippy::large_enum_variant)]
pub(super) enum Phase {
    /// Waiting for the HTTP upgrade request.
    Handshake { buf: Vec<u8>, deadline: u64 },
    /// A client connection: connecting (`connected` false), then waiting for the server's
    /// answer to the request queued in `out`.
    Connecting(Box<Connecting>),
    /// A WebSocket connection.
    Open { conn: Connection, handler: Box<dyn Handler>, spill: Vec<u8> },
    /// Done; flushing what is queued (an HTTP answer, a close reply) until `deadline`.
    Linger { deadline: u64 },
    /// Retired; the socket closes and the slot frees after this turn.
    Dead,
}

/// A client connection before its upgrade completes.
pub(super) struct Connecting {
    pub(super) handshake: Handshake,
    pub(super) handler: Box<dyn Handler>,
    /// The answer so far.
    pub(super) buf: Vec<u8>,
    pub(super) connected: bool,
    pub(super) deadline: u64,
    pub(super) handshake_timeout: Duration,
    /// Over TLS, the upgrade request, held until the TLS handshake is over (it is queued at
    /// once without TLS).
    pub(super) request: Vec<u8>,
}

/// A worker's connections.
pub(super) struct Conns {
    pub(super) slots: Slab<Slot>,
    pub(super) wheel: Wheel,
    pub(super) codecs: Codecs,
    /// The worker's receive scratch, lent as a connection's spill buffer while it has none,
    /// so that messages gathered or decompressed within one read need no allocation.
    pub(super) spill: Vec<u8>,
    /// The worker's buffer for one TLS record's plaintext at a time, while rustls opens the
    /// records (the handshake, TLS 1.2); the engine's record layer needs none.
    pub(super) tls_scratch: Vec<u8>,
    /// Slots retired this turn, to close after it.
    pub(super) retire: Vec<usize>,
    pub(super) next_generation: u32,
    /// This worker's share of [`ServerConfig::max_connections`](crate::ServerConfig).
    pub(super) max_slots: usize,
}

/// An open connection, borrowed from the table with the codec it shares lent to it.
pub(super) struct Open<'a> {
    pub(super) conn: Lent<'a>,
    pub(super) handler: &'a mut Box<dyn Handler>,
    pub(super) meta: &'a mut Meta,
    /// The connection's partial message, if any.
    pub(super) spill: &'a mut Vec<u8>,
    /// The worker's receive scratch ([`Conns::spill`]).
    pub(super) scratch: &'a mut Vec<u8>,
}

impl Conns {
    pub(super) fn new(timer_tick: Duration, max_slots: usize) -> Self {
        Self {
            slots: Slab::new(),
            wheel: Wheel::new(timer_tick),
            codecs: Codecs::default(),
            spill: Vec::new(),
            tls_scratch: Vec::new(),
            retire: Vec::new(),
            next_generation: 0,
            max_slots,
        }
    }

    /// The open connection in slot `key`, with the worker's codec lent to it if it shares one
    /// (returned when the borrow ends); `None` for a free slot or another phase.
    #[inline]
    pub(super) fn open(&mut self, key: usize) -> Option<Open<'_>> {
        let Self { slots, codecs, spill: scratch, .. } = self;
        let Slot { meta, phase, .. } = slots.get_mut(key)?;
        let Phase::Open { conn, handler, spill } = phase else { return None };
        let conn = codecs.lend(conn, meta.shares_codec);
        Some(Open { conn, handler, meta, spill, scratch })
    }

    /// [`Conns::open`] for the connection named `id`; `None` once it is gone.
    pub(super) fn open_id(&mut self, id: ConnId) -> Option<Open<'_>> {
        let key = id.slot as usize;
        if self.slots.get(key)?.meta.id != id {
            return None;
        }
        self.open(key)
    }

    /// The next generation for a new slot's [`ConnId`](crate::ConnId).
    pub(super) fn next_generation(&mut self) -> u32 {
        self.next_generation = self.next_generation.wrapping_add(1);
        self.next_generation
    }

    /// Whether the worker's share of connections is taken.
    pub(super) fn is_full(&self) -> bool {
        self.slots.len() >= self.max_slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slot is most of an idle connection's memory (docs/benchmarks.md keeps the budget).
    #[test]
    fn a_connection_slot_stays_small() {
        let size = size_of::<Slot>();
        assert!(size <= 416, "a slot grew to {size} bytes");
    }
}
