//! The mailbox, drained once per turn after a wake-up: what other threads asked of this
//! worker, applied in the order each thread made its calls.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use bidir_protocol::{CloseCode, Connection, DataKind, FrameKind};
use bidir_sys::Backend;

use super::Worker;
use super::recv::invoke;
use super::slot::Open;
use crate::SendError;
use crate::cx::WorkerCx;
use crate::mailbox::{Command, PostFn};
use crate::meta::{ConnId, Meta};
use crate::metrics::WorkerStats;
use crate::send::Payload;

impl<B: Backend> Worker<B> {
    pub(super) fn drain_mailbox(&mut self) {
        let mut commands = std::mem::take(&mut self.commands);
        self.mailbox.drain(&mut commands);
        for command in commands.drain(..) {
            match command {
                Command::Send { id, kind, payload } => {
                    let _ = self.apply_send(id, kind, payload);
                }
                Command::SendWithReceipt { id, kind, payload, receipt } => {
                    receipt.settle(self.apply_send(id, kind, payload));
                }
                Command::Close { id, code, reason } => self.close_open(id, code, &reason),
                #[cfg(feature = "redis")]
                Command::CloseSubscribers { topic, code, reason } => {
                    let slots = &self.conns.slots;
                    let ids: Vec<_> = (self.cx.topics.members(&topic))
                        .filter_map(|key| slots.get(key).map(|slot| slot.meta.id))
                        .collect();
                    for id in ids {
                        self.close_open(id, code, reason);
                    }
                }
                Command::Publish(publish) => self.deliver(&publish),
                Command::Subscribe { id, topic, reserved } => {
                    let applied = self.with_open(id, |_, meta, cx| {
                        let reserved = Arc::clone(&reserved);
                        cx.topics.subscribe_reserved(&topic, id.slot, &mut meta.topics, reserved);
                    });
                    if applied.is_none() {
                        let worker = usize::from(self.cx.index);
                        self.cx.shared.registry.release(&topic, worker, &reserved);
                    }
                }
                Command::Unsubscribe { id, topic } => {
                    self.with_open(id, |_, meta, cx| {
                        cx.topics.unsubscribe(&topic, id.slot, &mut meta.topics);
                    });
                }
                Command::Connect(pending) => self.start_connect(*pending),
                Command::Stats(reply) => {
                    let _ = reply.send(self.stats());
                }
                Command::Shutdown { deadline } => self.begin_shutdown(deadline),
                Command::Post { id, f } => self.apply_post(id, f),
                // A panic stays in the closure: the worker and its connections go on.
                Command::Run(f) => drop(catch_unwind(AssertUnwindSafe(f))),
            }
        }
        self.commands = commands;
    }

    /// Starts closing connection `id` with `code`, if it is open.
    fn close_open(&mut self, id: ConnId, code: CloseCode, reason: &str) {
        let now = self.cx.now;
        self.with_open(id, |conn, meta, cx| {
            let _ = cx.control(conn, meta, |conn, out| conn.close(now, code, reason, out));
        });
    }

    /// A snapshot of the counters (with the backend's) and the histograms.
    pub(crate) fn stats(&self) -> WorkerStats {
        let mut counters = self.cx.counters.clone();
        counters.syscalls = self.backend.syscalls();
        counters.starved_receives = self.backend.starved_receives();
        WorkerStats {
            counters,
            handler_ns: self.cx.handler_ns.clone(),
            turn_ns: self.cx.turn_ns.clone(),
        }
    }

    /// A send from a [`ConnHandle`](crate::ConnHandle): queued, or dropped and counted; a
    /// connection that is gone refuses it as [`SendError::Closed`].
    fn apply_send(&mut self, id: ConnId, kind: DataKind, payload: Bytes) -> Result<(), SendError> {
        let len = payload.len();
        let delivered = self.with_open(id, |conn, meta, cx| {
            let payload = Payload::Shared(payload);
            let sent = cx.send_payload(conn, meta, FrameKind::Message(kind), payload, true);
            // Count the bytes in the queue before taking them out of the mailbox: a handle's
            // `buffered_amount` may read high for a moment, never low.
            if let Some(handle) = &meta.handle {
                handle.queued.store(meta.out.len(), Ordering::Relaxed);
                handle.in_mailbox.fetch_sub(len, Ordering::Relaxed);
            }
            sent
        });
        let sent = delivered.unwrap_or(Err(SendError::Closed));
        if sent.is_err() {
            self.cx.counters.dropped_sends += 1;
        }
        sent
    }

    /// A post from a [`ConnHandle`](crate::ConnHandle): run with the handler if the
    /// connection is open and its handler may still be called (`on_close` not yet called, no
    /// panic); otherwise `f` is dropped unrun.
    fn apply_post(&mut self, id: ConnId, f: PostFn) {
        let Some(Open { mut conn, handler, meta, .. }) = self.conns.open_id(id) else { return };
        if !meta.close_reported {
            invoke(&mut conn, handler, meta, &mut self.cx, f);
        }
        drop(conn);
        self.conns.settle(&mut self.cx, id.slot as usize);
    }

    /// Runs `f` on the open connection named `id`, then settles it; `None` once it is gone.
    fn with_open<R>(
        &mut self,
        id: ConnId,
        f: impl FnOnce(&mut Connection, &mut Meta, &mut WorkerCx) -> R,
    ) -> Option<R> {
        let r = {
            let mut open = self.conns.open_id(id)?;
            f(&mut open.conn, open.meta, &mut self.cx)
        };
        self.conns.settle(&mut self.cx, id.slot as usize);
        Some(r)
    }
}
