//! A connection's life after the upgrade: settling after every event (queue what the protocol
//! produced, notice the end, schedule the next deadline), timers, the end of a stream,
//! retirement, and the server's shutdown.

use std::time::Instant as WallClock;

use bidir_protocol::{CloseCode, State};
use bidir_sys::Backend;

use super::Worker;
use super::connect::connect_failed;
use super::recv::{deliver_close, invoke};
use super::slot::{Conns, Open, Phase};
use crate::client::ConnectError;
use crate::cx::WorkerCx;
use crate::handler::CloseInfo;
use crate::meta::{Meta, NO_TICK};

impl Conns {
    /// After anything happened to an open connection: queue what the protocol produced,
    /// notice the end of the connection, and schedule its next timer.
    pub(super) fn settle(&mut self, cx: &mut WorkerCx, key: usize) {
        let Some(Open { mut conn, handler, meta, .. }) = self.open(key) else { return };
        if meta.abort {
            let info = CloseInfo::failed(CloseCode::ABNORMAL, "aborted");
            deliver_close(&mut conn, handler, meta, cx, info);
            drop(conn);
            self.kill(cx, key);
            return;
        }
        cx.transmit(&mut conn, meta);
        meta.share_queued();
        if conn.state() == State::Closed {
            let info = CloseInfo::failed(CloseCode::ABNORMAL, "closed");
            deliver_close(&mut conn, handler, meta, cx, info);
            close_subscriptions(meta, cx);
            drop(conn);
            cx.counters.open -= 1;
            let deadline = (cx.now + cx.config().linger).as_nanos();
            let slot = &mut self.slots[key];
            slot.phase = Phase::Linger { deadline };
            // Over TLS, close_notify goes out at the flush, even after nothing else.
            if slot.meta.out.is_empty() && slot.tls.is_none() {
                self.kill(cx, key);
            } else {
                cx.mark_dirty(&mut slot.meta);
                self.schedule(key, deadline);
            }
            return;
        }
        let deadline = conn.poll_timeout().map_or(u64::MAX, |d| d.as_nanos()).min(meta.user_timer);
        drop(conn);
        if deadline != u64::MAX {
            self.schedule(key, deadline);
        }
    }

    /// Makes sure slot `key` is woken by `deadline`: the wheel keeps one live entry per slot,
    /// replaced only by an earlier one (a later deadline is found when the entry fires).
    pub(super) fn schedule(&mut self, key: usize, deadline: u64) {
        let tick = self.wheel.tick_of(deadline);
        let meta = &mut self.slots[key].meta;
        if meta.timer_tick == NO_TICK || tick < meta.timer_tick {
            meta.timer_tick = self.wheel.insert(key, deadline);
        }
    }

    /// Hands every slot whose wheel entry is due to [`Conns::on_timer`].
    pub(super) fn fire_timers(&mut self, cx: &mut WorkerCx) {
        let now = cx.now.as_nanos();
        let mut due = Vec::new();
        self.wheel.advance(now, |entry| due.push(entry));
        for entry in due {
            let Some(slot) = self.slots.get_mut(entry.slot) else { continue };
            if slot.meta.timer_tick != entry.tick {
                continue; // stale: the slot was rescheduled earlier, or reused
            }
            slot.meta.timer_tick = NO_TICK;
            self.on_timer(cx, entry.slot);
        }
    }

    fn on_timer(&mut self, cx: &mut WorkerCx, key: usize) {
        let now = cx.now.as_nanos();
        let slot = &mut self.slots[key];
        let deadline = match &slot.phase {
            Phase::Handshake { deadline, .. } | Phase::Linger { deadline } => *deadline,
            Phase::Connecting(connecting) => connecting.deadline,
            Phase::Open { .. } => return self.on_open_timer(cx, key),
            Phase::Dead => return,
        };
        if now < deadline {
            self.schedule(key, deadline);
        } else if matches!(slot.phase, Phase::Connecting(_)) {
            self.fail_connect(cx, key, ConnectError::Timeout);
        } else {
            // A client that never finished its request, or a linger that ran out.
            self.kill(cx, key);
        }
    }

    /// An open connection's timer: the handler's, then the protocol's (heartbeat, pong and
    /// close deadlines).
    fn on_open_timer(&mut self, cx: &mut WorkerCx, key: usize) {
        let Some(Open { mut conn, handler, meta, .. }) = self.open(key) else { return };
        let now = cx.now.as_nanos();
        if meta.user_timer <= now {
            let round = cx.timers.round();
            while let Some(timer) = cx.timers.pop_due(key, now, round) {
                invoke(&mut conn, handler, meta, cx, |h, cx| h.on_timer(cx, timer));
            }
            meta.user_timer = cx.timers.earliest(key);
        }
        if let Err(e) = conn.handle_timeout(cx.now) {
            let reason = e.to_string();
            let info = CloseInfo::failed(e.close_code(), &reason);
            deliver_close(&mut conn, handler, meta, cx, info);
        }
        drop(conn);
        self.settle(cx, key);
    }

    /// A short write's rest may go now.
    pub(super) fn on_writable(&mut self, cx: &mut WorkerCx, key: usize) {
        if let Some(slot) = self.slots.get_mut(key) {
            slot.meta.blocked = false;
            cx.mark_dirty(&mut slot.meta);
        }
    }

    /// The stream ended: the peer's EOF (`error: None`) or a failure.
    pub(super) fn on_closed(
        &mut self,
        cx: &mut WorkerCx,
        key: usize,
        error: Option<std::io::Error>,
    ) {
        let Some(slot) = self.slots.get_mut(key) else { return };
        if matches!(slot.phase, Phase::Connecting(_)) {
            // The answer may end at EOF (a refusal without Content-Length).
            self.answer(cx, key, &mut [], true);
            let Some(slot) = self.slots.get_mut(key) else { return };
            if !matches!(slot.phase, Phase::Open { .. }) {
                let error = error.map_or(ConnectError::Closed, ConnectError::Io);
                self.fail_connect(cx, key, error);
                return;
            }
        }
        if let Some(Open { mut conn, handler, meta, .. }) = self.open(key) {
            let eof = conn.handle_eof();
            let reason = match (&error, eof) {
                (Some(e), _) => Some(e.to_string()),
                (None, Err(e)) => Some(e.to_string()),
                (None, Ok(())) => None,
            };
            if let Some(reason) = reason {
                let info = CloseInfo::failed(CloseCode::ABNORMAL, &reason);
                deliver_close(&mut conn, handler, meta, cx, info);
            }
        }
        self.kill(cx, key);
    }

    /// Retires a slot: its queue is dropped and its socket closes after this turn.
    pub(super) fn kill(&mut self, cx: &mut WorkerCx, key: usize) {
        self.retire(cx, key, ConnectError::Closed);
    }

    /// [`Conns::kill`], telling a client connection that never opened why (`connect_error`),
    /// after the slot is retired: it is gone whatever the handler does.
    pub(super) fn retire(&mut self, cx: &mut WorkerCx, key: usize, connect_error: ConnectError) {
        let Some(slot) = self.slots.get_mut(key) else { return };
        if slot.meta.retired {
            return;
        }
        close_subscriptions(&mut slot.meta, cx);
        if slot.meta.user_timer != u64::MAX {
            cx.timers.clear(key);
        }
        slot.meta.out.clear(&mut cx.pool);
        slot.meta.retired = true;
        slot.meta.timer_tick = NO_TICK;
        if std::mem::take(&mut slot.meta.peer_held)
            && let Some(peers) = &cx.shared.peers
        {
            peers.release(slot.meta.peer.ip(), cx.wall_now());
        }
        cx.counters.closed += 1;
        self.retire.push(key);
        match std::mem::replace(&mut slot.phase, Phase::Dead) {
            Phase::Open { .. } => cx.counters.open -= 1,
            Phase::Connecting(mut connecting) => {
                cx.counters.connect_failed += 1;
                connect_failed(connecting.handler.as_mut(), connect_error);
            }
            Phase::Handshake { .. } | Phase::Linger { .. } | Phase::Dead => {}
        }
    }

    /// The shutdown deadline passed: drop whatever is left.
    pub(super) fn abandon_all(&mut self, cx: &mut WorkerCx) {
        let keys: Vec<usize> = self.slots.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.fail_connect(cx, key, ConnectError::ShuttingDown);
            let info = CloseInfo::failed(CloseCode::ABNORMAL, "shutdown deadline passed");
            self.report_close(cx, key, info);
            self.kill(cx, key);
        }
    }
}

impl<B: Backend> Worker<B> {
    /// Starts the shutdown: no more accepts, every open connection closing with 1001,
    /// handshakes dropped, connects failed; what is left at `deadline` is dropped.
    pub(super) fn begin_shutdown(&mut self, deadline: WallClock) {
        let deadline_nanos = self.cx.clock_of(deadline).as_nanos();
        self.shutdown = Some(self.shutdown.map_or(deadline_nanos, |d| d.min(deadline_nanos)));
        let keys: Vec<usize> = self.conns.slots.iter().map(|(k, _)| k).collect();
        let now = self.cx.now;
        for key in keys {
            match &self.conns.slots[key].phase {
                Phase::Handshake { .. } => self.conns.kill(&mut self.cx, key),
                Phase::Connecting(_) => {
                    self.conns.fail_connect(&mut self.cx, key, ConnectError::ShuttingDown);
                }
                Phase::Open { .. } => {
                    if let Some(Open { mut conn, meta, .. }) = self.conns.open(key) {
                        let _ = self.cx.control(&mut conn, meta, |conn, out| {
                            conn.close(now, CloseCode::GOING_AWAY, "server shutting down", out)
                        });
                    }
                    self.conns.settle(&mut self.cx, key);
                }
                Phase::Linger { .. } | Phase::Dead => {}
            }
        }
    }
}

/// Leaves every topic and tells the connection's handles it is closed.
fn close_subscriptions(meta: &mut Meta, cx: &mut WorkerCx) {
    cx.topics.unsubscribe_all(meta.id.slot, &mut meta.topics);
    if let Some(handle) = &meta.handle {
        handle.set_closed();
    }
}
