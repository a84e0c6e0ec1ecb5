//! Client connections the worker opens ([`ServerHandle::connect`](crate::ServerHandle)): the
//! connect, the request, the server's answer, then the same life as an accepted connection.

use std::panic::{AssertUnwindSafe, catch_unwind};

use bidir_sys::{Backend, Token};

use super::Worker;
use super::slot::{Connecting, Conns, Phase, Slot};
use crate::Handler;
use crate::client::ConnectError;
use crate::client::engine::PendingConnect;
use crate::cx::WorkerCx;
use crate::meta::{ConnId, Meta, NO_TICK};

impl<B: Backend> Worker<B> {
    /// Opens a client connection: a slot in [`Phase::Connecting`] with the request queued
    /// (held back until the connect completes).
    pub(super) fn start_connect(&mut self, pending: PendingConnect) {
        let PendingConnect {
            addr,
            handshake,
            request,
            mut handler,
            target,
            connect_timeout,
            handshake_timeout,
            tls,
        } = pending;
        let refusal = if self.shutdown.is_some() {
            Some(ConnectError::ShuttingDown)
        } else if self.conns.is_full() {
            Some(ConnectError::TooManyConnections)
        } else {
            None
        };
        if let Some(error) = refusal {
            self.cx.counters.connect_failed += 1;
            connect_failed(handler.as_mut(), error);
            return;
        }
        let key = self.conns.slots.vacant_key();
        if let Err(e) = self.backend.connect(Token(key), addr) {
            self.cx.counters.connect_failed += 1;
            connect_failed(handler.as_mut(), ConnectError::from(e));
            return;
        }
        let generation = self.conns.next_generation();
        let deadline = (self.cx.now + connect_timeout).as_nanos();
        let tick = self.conns.wheel.insert(key, deadline);
        let id = ConnId { worker: self.cx.index, slot: key as u32, generation };
        let mut meta = Meta::new(id, addr, tick);
        // Over TLS the request waits for the TLS handshake (`Connecting::request`).
        let request = if tls.is_some() {
            request
        } else {
            meta.out.push_copy(&mut self.cx.pool, &request);
            Vec::new()
        };
        meta.request = target.into_boxed_str();
        meta.blocked = true; // until the connect completes
        let handler: Box<dyn Handler> = handler;
        let inserted = self.conns.slots.insert(Slot {
            meta,
            phase: Phase::Connecting(Box::new(Connecting {
                handshake,
                handler,
                buf: Vec::new(),
                connected: false,
                deadline,
                handshake_timeout,
                request,
            })),
            tls,
        });
        debug_assert_eq!(inserted, key);
    }
}

impl Conns {
    /// A client connection's connect completed or failed.
    pub(super) fn on_connected(
        &mut self,
        cx: &mut WorkerCx,
        key: usize,
        error: Option<std::io::Error>,
    ) {
        if let Some(e) = error {
            self.fail_connect(cx, key, ConnectError::from(e));
            return;
        }
        let Some(slot) = self.slots.get_mut(key) else { return };
        let Phase::Connecting(connecting) = &mut slot.phase else { return };
        connecting.connected = true;
        connecting.deadline = (cx.now + connecting.handshake_timeout).as_nanos();
        let deadline = connecting.deadline;
        slot.meta.blocked = false; // the request may go now
        cx.mark_dirty(&mut slot.meta);
        slot.meta.timer_tick = NO_TICK;
        self.schedule(key, deadline);
        self.tls_start(cx, key);
    }

    /// Handles the server's answer to a client connection's request: open the connection and
    /// call `on_open`, or report the failure. `eof`: the stream ended.
    pub(super) fn answer(&mut self, cx: &mut WorkerCx, key: usize, data: &mut [u8], eof: bool) {
        let slot = &mut self.slots[key];
        let Phase::Connecting(connecting) = &mut slot.phase else { return };
        connecting.buf.extend_from_slice(data);
        let (upgraded, used) = match connecting.handshake.on_bytes(&connecting.buf, eof, cx.now) {
            Ok(None) => return,
            Ok(Some(done)) => done,
            Err(e) => {
                self.fail_connect(cx, key, e);
                return;
            }
        };
        let refused =
            catch_unwind(AssertUnwindSafe(|| connecting.handler.on_response(&upgraded.headers)))
                .unwrap_or_else(|_| Err("the handler failed".to_owned()));
        if let Err(reason) = refused {
            self.fail_connect(cx, key, ConnectError::Rejected(reason));
            return;
        }
        let Phase::Connecting(connecting) = std::mem::replace(&mut slot.phase, Phase::Dead) else {
            unreachable!("checked above")
        };
        let Connecting { handler, buf, .. } = *connecting;
        let mut conn = upgraded.conn;
        super::codecs::adopt_codec(&mut conn, &mut slot.meta);
        if let Some(protocol) = &upgraded.protocol {
            slot.meta.request = format!("{}\n{protocol}", slot.meta.request).into_boxed_str();
        }
        slot.phase = Phase::Open { conn, handler, spill: Vec::new() };
        slot.meta.timer_tick = NO_TICK;
        cx.counters.connected += 1;
        cx.counters.open += 1;
        self.opened(cx, key, buf, used);
    }

    /// Ends a client connection that did not open: tells its handler why and retires the slot.
    /// Does nothing for slots in other phases.
    pub(super) fn fail_connect(&mut self, cx: &mut WorkerCx, key: usize, error: ConnectError) {
        if let Some(Slot { phase: Phase::Connecting(_), .. }) = self.slots.get(key) {
            self.retire(cx, key, error);
        }
    }
}

/// Calls [`Handler::on_connect_failed`], containing a panic.
pub(super) fn connect_failed(handler: &mut dyn Handler, error: ConnectError) {
    let _ = catch_unwind(AssertUnwindSafe(|| handler.on_connect_failed(error)));
}
