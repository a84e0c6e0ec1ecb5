//! Received bytes: dispatched by the slot's phase, deframed in place for an open connection,
//! and handed to its handler — every handler call goes through [`invoke`], which times it and
//! contains a panic.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant as WallClock;

use bidir_protocol::{Connection, Error, Event, EventMut, Input};

use super::slot::{Conns, Open, Phase};
use crate::cx::WorkerCx;
use crate::handler::{CloseInfo, Context, Handler};
use crate::meta::Meta;
use crate::route::Router;

impl Conns {
    pub(super) fn on_received(
        &mut self,
        cx: &mut WorkerCx,
        router: &Router,
        key: usize,
        data: &mut [u8],
    ) {
        let Some(slot) = self.slots.get_mut(key) else { return };
        if slot.tls.is_some() {
            self.tls_received(cx, router, key, data);
        } else {
            self.dispatch(cx, router, key, data);
        }
    }

    /// Handles a connection's received plaintext by the slot's phase.
    pub(super) fn dispatch(
        &mut self,
        cx: &mut WorkerCx,
        router: &Router,
        key: usize,
        data: &mut [u8],
    ) {
        let Some(slot) = self.slots.get_mut(key) else { return };
        match &mut slot.phase {
            Phase::Handshake { .. } => self.handshake(cx, router, key, data),
            Phase::Connecting(_) => self.answer(cx, key, data, false),
            Phase::Open { .. } => self.feed(cx, key, data),
            Phase::Linger { .. } | Phase::Dead => {} // input after the end is discarded
        }
    }

    /// A connection just opened (upgraded, or a client's answer came): calls `on_open`, then
    /// feeds what followed the handshake in `bytes` (after its first `used`): a peer may
    /// pipeline its first frames.
    pub(super) fn opened(
        &mut self,
        cx: &mut WorkerCx,
        key: usize,
        mut bytes: Vec<u8>,
        used: usize,
    ) {
        self.call(cx, key, |h, cx| h.on_open(cx));
        bytes.drain(..used);
        if bytes.is_empty() {
            self.settle(cx, key);
        } else {
            self.feed(cx, key, &mut bytes);
        }
    }

    /// Feeds received bytes to an open connection and its handler.
    pub(super) fn feed(&mut self, cx: &mut WorkerCx, key: usize, data: &mut [u8]) {
        let Some(Open { conn: mut lent, handler, meta, spill, scratch }) = self.open(key) else {
            return;
        };
        // While the connection holds no partial message, the worker's scratch serves as its
        // spill buffer: messages gathered or decompressed within this read need no allocation.
        let lent_spill = spill.capacity() == 0;
        if lent_spill {
            std::mem::swap(spill, scratch);
        }
        let conn = &mut *lent;
        let mut input = Input::new(data);
        loop {
            if meta.abort {
                input.skip_all();
                break;
            }
            let event = match conn.handle_bytes_mut(cx.now, &mut input, spill) {
                Ok(Some(EventMut::Binary(payload))) => {
                    cx.transmit(conn, meta);
                    cx.counters.messages_in += 1;
                    invoke(conn, handler, meta, cx, |h, cx| h.on_binary_mut(cx, payload));
                    continue;
                }
                Ok(Some(EventMut::Other(event))) => event,
                Ok(None) => break,
                Err(e) => {
                    let reason = e.to_string();
                    let info = CloseInfo::failed(e.close_code(), &reason);
                    deliver_close(conn, handler, meta, cx, info);
                    break;
                }
            };
            // Queue what the protocol answered (a pong, a close reply) before the handler's
            // own frames, so answers keep the order of what they answer.
            cx.transmit(conn, meta);
            match event {
                Event::Message(msg) => {
                    cx.counters.messages_in += 1;
                    invoke(conn, handler, meta, cx, |h, cx| h.on_message(cx, msg));
                }
                Event::Fragment(fragment) => {
                    if fragment.last {
                        cx.counters.messages_in += 1;
                    }
                    invoke(conn, handler, meta, cx, |h, cx| h.on_frame(cx, fragment));
                }
                Event::Ping(payload) => {
                    invoke(conn, handler, meta, cx, |h, cx| h.on_ping(cx, payload));
                }
                Event::Pong(payload) => {
                    invoke(conn, handler, meta, cx, |h, cx| h.on_pong(cx, payload));
                }
                Event::Close(close) => {
                    let info = CloseInfo::from(close);
                    deliver_close(conn, handler, meta, cx, info);
                }
                _ => {}
            }
        }
        if spill.is_empty() {
            if lent_spill {
                std::mem::swap(spill, scratch); // the scratch goes back to the worker
            } else if spill.capacity() > 0 {
                *spill = Vec::new(); // an idle connection owns no receive buffer
            }
        }
        // A partial message keeps the buffer it is in; the worker starts a new scratch.
        drop(lent);
        self.settle(cx, key);
    }

    /// [`invoke`] for a slot, if it is open.
    pub(super) fn call(
        &mut self,
        cx: &mut WorkerCx,
        key: usize,
        f: impl FnOnce(&mut dyn Handler, &mut Context<'_>),
    ) {
        if let Some(Open { mut conn, handler, meta, .. }) = self.open(key) {
            invoke(&mut conn, handler, meta, cx, f);
        }
    }

    /// [`deliver_close`] for a slot, if it is open.
    pub(super) fn report_close(&mut self, cx: &mut WorkerCx, key: usize, info: CloseInfo<'_>) {
        if let Some(Open { mut conn, handler, meta, .. }) = self.open(key) {
            deliver_close(&mut conn, handler, meta, cx, info);
        }
    }
}

/// Calls one handler method with a context, timing it and containing a panic: a panicking
/// handler fails its connection with 1011 and is not called again. Inlined: it is on every
/// message's path, and the closure it calls is the handler method itself.
#[inline]
pub(super) fn invoke(
    conn: &mut Connection,
    handler: &mut Box<dyn Handler>,
    meta: &mut Meta,
    cx: &mut WorkerCx,
    f: impl FnOnce(&mut dyn Handler, &mut Context<'_>),
) {
    if meta.poisoned {
        return;
    }
    let start = cx.timing.then(WallClock::now);
    let outcome = {
        let mut context = Context { conn: &mut *conn, meta: &mut *meta, worker: &mut *cx };
        catch_unwind(AssertUnwindSafe(|| f(handler.as_mut(), &mut context)))
    };
    if let Some(start) = start {
        let _ = cx.handler_ns.record((start.elapsed().as_nanos() as u64).max(1));
    }
    if outcome.is_err() {
        meta.poisoned = true;
        meta.close_reported = true;
        conn.fail(Error::Internal);
    }
}

/// Reports the end of the connection to its handler, once.
pub(super) fn deliver_close(
    conn: &mut Connection,
    handler: &mut Box<dyn Handler>,
    meta: &mut Meta,
    cx: &mut WorkerCx,
    info: CloseInfo<'_>,
) {
    if meta.close_reported {
        return;
    }
    meta.close_reported = true;
    invoke(conn, handler, meta, cx, |h, cx| h.on_close(cx, info));
}
