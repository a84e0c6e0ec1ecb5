//! One connection of a client, on its worker: answers, invocations of the client's
//! callbacks, events, and the connection's opening and end.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bidir_protocol::rpc::key::{self, KeyExchange};
use bidir_protocol::rpc::{ErrorBody, ErrorCode, Msg, MsgError, Position};
use bidir_protocol::{CloseCode, Message};

use super::state::{Advance, Inner, Kind, Phase, settle_all};
use crate::client::ConnectError;
use crate::rpc::CallError;
use crate::rpc::gather::Gathering;
use crate::rpc::pending::Answer;
use crate::rpc::wire::{Egress, Ingress, Reader, Received, Value, ValueRef};
use crate::{CloseInfo, Context, Handler};

/// The handler of one connection attempt (`generation`) of a client.
pub(super) struct ClientConn {
    inner: Arc<Inner>,
    generation: u64,
    /// The answers to the server's invocations in the message being read.
    answers: Gathering,
    ingress: Ingress,
    egress: Egress,
    /// The key exchange this attempt offered, finished with the server's answer.
    exchange: Option<KeyExchange>,
}

impl ClientConn {
    /// Starts connection attempt `generation`, offering a fresh key exchange if the client
    /// has a key.
    pub(super) fn start(inner: &Arc<Inner>, generation: u64) -> Result<(), ConnectError> {
        let wire = inner.wire;
        let failures = Arc::clone(&inner.auth_failures);
        let mut conn = Self {
            inner: Arc::clone(inner),
            generation,
            answers: Gathering::new(wire),
            ingress: Ingress::new(wire, None, failures),
            egress: Egress::new(wire, inner.compress_above, None),
            exchange: None,
        };
        let Some((mode, psk)) = &inner.key else {
            return inner.engine.connect(&inner.options, conn);
        };
        let exchange =
            KeyExchange::start(*mode, psk).map_err(|e| ConnectError::Rejected(e.to_string()))?;
        let options = inner.options.clone().header(key::HEADER, exchange.offer());
        conn.exchange = Some(exchange);
        inner.engine.connect(&options, conn)
    }

    /// Sends what user threads gathered.
    pub(super) fn flush(&mut self, cx: &mut Context<'_>) {
        self.inner.lock().out.flush(cx, &mut self.egress);
    }

    fn answer(&mut self, id: u64, answer: Result<Option<Value>, (ErrorCode, String)>) {
        let wire = self.egress.wire();
        self.answers.push(|out| match answer {
            Ok(value) => {
                let value = value.as_ref().map_or(ValueRef::null(wire), Value::as_ref);
                wire.encode(Msg::Result { id, value }, out);
            }
            Err((code, message)) => {
                let error = ErrorBody { code, message: message.into(), data: None };
                wire.encode(Msg::Error { id, error }, out);
            }
        });
    }

    /// The server answered request `id`: its slot settles here, on the worker; an answer for
    /// no request in flight (timed out, cancelled) is dropped and counted. A call that passed
    /// callbacks is kept for replay when answered `ok` while one of them lives; a replay
    /// answered `err` is replayed no more.
    fn settle(&self, id: u64, answer: Answer) {
        let (slot, worker, gap) = {
            let mut state = self.inner.lock();
            let Some(entry) = state.calls.remove(&id) else {
                drop(state);
                self.inner.late_answers.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let mut gap = None;
            match (entry.kind, &answer) {
                (Kind::Replayable(replay), Ok(_)) if replay.is_wanted(&state.callbacks) => {
                    state.replay.insert(id, replay);
                }
                (Kind::Replayed(key), Err(_)) => {
                    state.replay.remove(&key);
                }
                (Kind::Subscribe(topic), Ok(value)) => {
                    state.subscribed(&topic, value);
                }
                (Kind::Resubscribe(topic), Ok(value)) if !state.subscribed(&topic, value) => {
                    gap = Some(topic);
                }
                _ => {}
            }
            (entry.slot, state.worker, gap)
        };
        if let Some(topic) = gap {
            self.gap(&topic);
        }
        if let Some(slot) = slot {
            slot.settle(answer, &self.inner, worker, true);
        }
    }

    /// Runs an invocation of callback `callback`; answers it when it has an id. One of a
    /// callback the client does not hold (never had, or released since) is answered
    /// `released`, and released again in any case: the server holds a proxy for it — built
    /// anew, say, when a call named it again just as the server let go of the old one — that
    /// it drops, running its release hook, instead of invoking it into the void forever.
    fn invoke(&mut self, callback: u64, method: &str, args: ValueRef<'_>, id: Option<u64>) {
        let found = {
            let state = self.inner.lock();
            state.callbacks.get(&callback).and_then(std::sync::Weak::upgrade)
        };
        let Some(cb) = found.filter(|cb| !cb.released.load(Ordering::Acquire)) else {
            if let Some(id) = id {
                self.answer(id, Err((ErrorCode::Released, format!("no callback {callback}"))));
            }
            let wire = self.egress.wire();
            self.answers.push(|out| wire.encode(Msg::Release { callback }, out));
            return;
        };
        let run = || (cb.dispatch)(method, args);
        let answer = catch_unwind(AssertUnwindSafe(run)).unwrap_or_else(|_| {
            Err((ErrorCode::Internal, format!("callback {callback}: {method} failed")))
        });
        // Maybe the last reference, whose release goes out with the others gathered.
        drop(cb);
        if let Some(id) = id {
            self.answer(id, answer);
        }
    }

    /// The server released callback `callback`: it will not invoke it again.
    fn released(&self, callback: u64) {
        let cb = {
            let mut state = self.inner.lock();
            let cb = state.callbacks.remove(&callback).and_then(|cb| cb.upgrade());
            state.prune_replay();
            cb
        };
        if let Some(cb) = cb {
            cb.released.store(true, Ordering::Release);
        }
    }

    /// Events of `topic` were missed and not recovered: counted and told.
    fn gap(&self, topic: &str) {
        self.inner.gaps.fetch_add(1, Ordering::Relaxed);
        if let Some(on_gap) = &self.inner.on_gap {
            let _ = catch_unwind(AssertUnwindSafe(|| on_gap(topic)));
        }
    }

    /// An event: to its topic's handler, unless it came already (by its position).
    fn event(&self, topic: &str, data: ValueRef<'_>, at: Option<&Position<'_>>) {
        let (on_event, advance) = {
            let mut state = self.inner.lock();
            let Some(on_event) = state.topics.get(topic).cloned() else { return };
            (on_event, at.map_or(Advance::Next, |at| state.advance(topic, at)))
        };
        match advance {
            Advance::Next => {}
            Advance::Duplicate => {
                self.inner.duplicates.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Advance::NewEpoch => self.gap(topic),
        }
        let _ = catch_unwind(AssertUnwindSafe(|| on_event(data)));
    }
}

impl Reader for ClientConn {
    fn ingress(&mut self) -> &mut Ingress {
        &mut self.ingress
    }

    fn send_answers(&mut self, cx: &mut Context<'_>) {
        self.egress.flush(cx, &mut self.answers);
    }

    fn handle(
        &mut self,
        cx: &mut Context<'_>,
        msg: Result<Msg<'_, ValueRef<'_>>, MsgError>,
    ) -> bool {
        match msg {
            Ok(Msg::Result { id, value }) => self.settle(id, Ok(value.to_owned())),
            Ok(Msg::Error { id, error }) => self.settle(id, Err(CallError::remote(error))),
            Ok(Msg::Invoke { callback, method, args, id }) => {
                self.invoke(callback, &method, args, id);
            }
            Ok(Msg::Release { callback }) => self.released(callback),
            Ok(Msg::Event { topic, data, at }) => self.event(&topic, data, at.as_ref()),
            // The client serves no methods and takes no subscriptions.
            Ok(Msg::Call { id, method, .. }) => {
                self.answer(id, Err((ErrorCode::UnknownService, format!("no method {method}"))));
            }
            Ok(Msg::Subscribe { id, .. } | Msg::Unsubscribe { id, .. }) => {
                self.answer(id, Err((ErrorCode::Unauthorized, "a client has no topics".into())));
            }
            // Notifications, cancels of nothing, publishes: ignored (docs/rpc.md).
            Ok(Msg::Notify { .. } | Msg::Cancel { .. } | Msg::Publish { .. }) => {}
            Err(MsgError { id: Some(id), reason }) => {
                self.answer(id, Err((ErrorCode::BadRequest, reason)));
            }
            Err(MsgError { id: None, reason }) => {
                let _ = cx.close(CloseCode::POLICY_VIOLATION, &reason);
                return false;
            }
        }
        true
    }
}

impl Handler for ClientConn {
    fn on_response(&mut self, headers: &[(String, String)]) -> Result<(), String> {
        let Some(exchange) = self.exchange.take() else { return Ok(()) };
        let answer = headers.iter().find(|(name, _)| name.eq_ignore_ascii_case(key::HEADER));
        let Some((_, answer)) = answer else {
            return Err(format!("no {} in the answer", key::HEADER));
        };
        let keys = exchange.finish(answer.as_bytes()).map_err(|e| e.to_string())?;
        let (sealer, opener) = keys.client();
        let (wire, failures) = (self.inner.wire, Arc::clone(&self.inner.auth_failures));
        self.egress = Egress::new(wire, self.inner.compress_above, Some(sealer));
        self.ingress = Ingress::new(wire, Some(opener), failures);
        Ok(())
    }

    fn on_open(&mut self, cx: &mut Context<'_>) {
        self.ingress.open(cx);
        let mut state = self.inner.lock();
        if state.generation != self.generation || !matches!(state.phase, Phase::Connecting) {
            drop(state);
            let _ = cx.close(CloseCode::NORMAL, "client closed");
            return;
        }
        if state.opened_once {
            self.inner.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        state.opened_once = true;
        state.worker = cx.id().worker();
        state.open(&self.inner, cx.handle());
        state.out.flush(cx, &mut self.egress);
        self.inner.changed.notify_all();
    }

    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        self.receive(cx, Received::Message(msg));
    }

    fn on_binary_mut(&mut self, cx: &mut Context<'_>, payload: &mut [u8]) {
        self.receive(cx, Received::Binary(payload));
    }

    fn on_close(&mut self, _cx: &mut Context<'_>, _close: CloseInfo<'_>) {
        let (taken, ended) = {
            let mut state = self.inner.lock();
            if state.generation != self.generation || !matches!(state.phase, Phase::Open(_)) {
                return;
            }
            let taken = state.lost(&self.inner);
            // Without reconnection the callbacks end with the connection, on both sides, and
            // nothing is kept for a next one.
            let ended = state.is_closed().then(|| state.end());
            (taken, ended)
        };
        if let Some(ended) = ended {
            ended.release();
        }
        settle_all(taken, &CallError::Disconnected, &self.inner, true);
    }

    fn on_connect_failed(&mut self, error: ConnectError) {
        Self::attempt_failed(&self.inner, self.generation, error);
    }
}

impl ClientConn {
    /// Connection attempt `generation` failed: the first connection's error goes to the
    /// caller of `connect`; after a drop, the next attempt is scheduled.
    pub(super) fn attempt_failed(inner: &Inner, generation: u64, error: ConnectError) {
        let mut state = inner.lock();
        if state.generation != generation || !matches!(state.phase, Phase::Connecting) {
            return;
        }
        state.phase = match (state.opened_once, inner.backoff) {
            (true, Some(backoff)) => {
                state.attempt = state.attempt.saturating_add(1);
                Phase::Waiting { at: Instant::now() + backoff.delay(state.attempt) }
            }
            _ => Phase::Failed(Some(error)),
        };
        inner.changed.notify_all();
    }
}
