//! Events: publishing to a topic's subscribers on this node (both encodings, numbered and kept
//! when the topic has a history) and to the other nodes, and delivering what other nodes
//! publish.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Serialize;

use bidir_protocol::rpc::{Msg, Position};

use super::Endpoint;
use super::wire::{self, CodecError, Value, ValueRef, Wire};
use crate::cx::Shared;
use crate::history::{self, Data};
use crate::pubsub::Forward;
use crate::{ConnId, Context, ServerHandle};

/// Publishes `data` as an event of `topic` to every client subscribed to it, on every worker:
/// encoded once per encoding (`["event", topic, data]`), handed to the workers that have
/// subscribers, delivered on their next loop turn (see [`ServerHandle::publish`] for what
/// subscribers over their backpressure limit miss). Callable from any thread, and from a
/// method through [`Context::server`]. rpc topics are apart from the engine's own: plain
/// WebSocket subscribers of `topic` do not get these events. A topic with a history
/// ([`ServerBuilder::history`](crate::ServerBuilder::history)) numbers and keeps the event
/// first. On a server joined to other nodes
/// ([`ServerBuilder::redis`](crate::ServerBuilder::redis)) the event also reaches their
/// subscribers, each node encoding it once for its own (docs/nodes.md).
///
/// Returns the subscribers of `topic` on this node as registered at the call.
///
/// # Errors
///
/// What serde reports for `data` it cannot write; nothing is published then.
pub fn publish<T: Serialize + ?Sized>(
    server: &ServerHandle,
    topic: &str,
    data: &T,
) -> Result<usize, CodecError> {
    let (json, bin) = (Wire::Json.value(data)?, Wire::Bin.value(data)?);
    if server.shared.stopping.load(Ordering::Relaxed) {
        return Ok(0);
    }
    Ok(spread(&server.shared, None, topic, json.as_ref(), Some(&bin)))
}

/// [`publish`] from a method, to every subscriber but the calling connection (a chat message
/// goes to the others). Returns the subscribers reached on this node, the caller not counted.
///
/// # Errors
///
/// As [`publish`].
pub fn broadcast<T: Serialize + ?Sized>(
    cx: &mut Context<'_>,
    topic: &str,
    data: &T,
) -> Result<usize, CodecError> {
    let (json, bin) = (Wire::Json.value(data)?, Wire::Bin.value(data)?);
    let shared = Arc::clone(&cx.worker.shared);
    Ok(spread(&shared, Some((cx, true)), topic, json.as_ref(), Some(&bin)))
}

/// `data` translated into the encoding it is not in, if `wanted` (none where it cannot be
/// written in it).
pub(super) fn translated(data: ValueRef<'_>, wanted: bool) -> Option<Value> {
    let other = other_wire(data.wire());
    wanted.then(|| data.decode::<wire::Any>().and_then(|any| other.value(&any)).ok()).flatten()
}

/// The encoding that `wire` is not.
fn other_wire(wire: Wire) -> Wire {
    match wire {
        Wire::Json => Wire::Bin,
        Wire::Bin => Wire::Json,
    }
}

/// A client's publish (allowed already), from its connection's handler: to the other nodes as
/// it came, and to this node's subscribers of both encodings, skipping the publisher if
/// `exclude`.
pub(super) fn publish_from(cx: &mut Context<'_>, topic: &str, data: ValueRef<'_>, exclude: bool) {
    let shared = Arc::clone(&cx.worker.shared);
    let other = translated(data, true);
    spread(&shared, Some((cx, exclude)), topic, data, other.as_ref());
}

/// Hands an event of `topic` to its subscribers on every node, `data` in its encoding and
/// `other` in the other one (none: not for that one's subscribers). A topic with a history on
/// a server joined to other nodes is kept in Redis, which numbers it and hands it to every
/// node, this one too; any other event is delivered here at once and forwarded. Returns the
/// subscribers here, the connection `from` skips not counted.
fn spread(
    shared: &Shared,
    from: Option<(&mut Context<'_>, bool)>,
    topic: &str,
    data: ValueRef<'_>,
    other: Option<&Value>,
) -> usize {
    #[cfg(feature = "redis")]
    if let (Some(bridge), Some(history)) = (&shared.bridge, shared.histories.bounds(topic)) {
        let (exclude, own) = skipped(from, topic);
        let (json, bytes) = data.raw();
        bridge.keep(topic, json, bytes, history, exclude);
        let counts = Wire::ALL.map(|w| shared.registry.counts(&engine_topic(w, topic)));
        let subscribers: usize = counts.iter().flatten().map(|c| c.total()).sum();
        return subscribers.saturating_sub(usize::from(own));
    }
    let (json, bytes) = data.raw();
    shared.forward(topic, Forward::Rpc { json, data: bytes });
    emit(shared, from, topic, both_wires(data, other), None)
}

/// The connection a publish from a handler skips, if it does, and whether it is subscribed
/// (its subscription is then not counted among those reached).
fn skipped(from: Option<(&mut Context<'_>, bool)>, topic: &str) -> (Option<ConnId>, bool) {
    match from {
        Some((cx, true)) => {
            (Some(cx.id()), Wire::ALL.iter().any(|w| cx.is_subscribed(&engine_topic(*w, topic))))
        }
        _ => (None, false),
    }
}

/// An event's data in both encodings, in [`Wire::ALL`]'s order: `data` for its own and
/// `other` for the other.
fn both_wires<'a>(data: ValueRef<'a>, other: Option<&'a Value>) -> [Option<ValueRef<'a>>; 2] {
    let other = other.map(Value::as_ref);
    match data.wire() {
        Wire::Json => [Some(data), other],
        Wire::Bin => [other, Some(data)],
    }
}

/// Hands an event of `topic` to this node's subscribers, `values` in each encoding (none: no
/// subscriber of that one gets it). From a handler (`from`: its context, and whether to skip
/// its own connection) the handler's worker gets it after the handler returns. A topic with a
/// history numbers and keeps it first — or, numbered by Redis already (`kept`: its position
/// and the connection it skips), keeps it in this node's cache, unless it has it already —
/// and hands it to every worker through its mailbox while holding the logs, so that each gets
/// the topic's events in offset order. Returns the subscribers reached, the skipped
/// connection not counted.
fn emit(
    shared: &Shared,
    from: Option<(&mut Context<'_>, bool)>,
    topic: &str,
    values: [Option<ValueRef<'_>>; 2],
    kept: Option<(&Position<'_>, Option<ConnId>)>,
) -> usize {
    // Joined to other nodes, only Redis numbers: an event without a position (from a node
    // whose topic keeps no history) is delivered as it is.
    let bounds = shared.histories.bounds(topic).filter(|_| kept.is_some() || !in_redis(shared));
    if bounds.is_none() && kept.is_none() {
        return match from {
            Some((cx, exclude)) => events(topic, &values, None)
                .iter()
                .map(|(engine, event)| cx.publish_here(engine, event.message(), exclude))
                .sum(),
            None => events(topic, &values, None)
                .iter()
                .map(|(engine, event)| shared.publish(engine, event.message(), None, None))
                .sum(),
        };
    }
    let Some(first) = values.iter().flatten().next() else { return 0 };
    let (json, bytes) = first.raw();
    let data = Data { json, bytes: bytes.into() };
    let (exclude, own) = skipped(from, topic);
    let now = Instant::now();
    let publish = |events: Vec<(String, wire::Event)>, exclude| -> usize {
        let each = events.iter();
        each.map(|(engine, event)| shared.publish(engine, event.message(), exclude, None)).sum()
    };
    let reached = if let Some((at, skip)) = kept {
        // Numbered by Redis already: encoded before the logs are taken.
        let encoded = events(topic, &values, Some(at));
        let mut logs = shared.histories.lock();
        // (Another node keeps a history of a topic this one does not: delivered as it is.)
        if let Some(bounds) = bounds
            && !history::cache(&mut logs, topic, bounds, &at.epoch).put(at, data, now)
        {
            return 0;
        }
        publish(encoded, skip)
    } else {
        let Some(bounds) = bounds else { return 0 };
        let mut logs = shared.histories.lock();
        let at = history::log(&mut logs, topic, bounds).push(data, now);
        publish(events(topic, &values, Some(&at)), exclude)
    };
    reached.saturating_sub(usize::from(own))
}

/// Whether topic histories are Redis's (the server joined other nodes).
fn in_redis(shared: &Shared) -> bool {
    #[cfg(feature = "redis")]
    return shared.bridge.is_some();
    #[cfg(not(feature = "redis"))]
    {
        let _ = shared;
        false
    }
}

/// `["event", topic, data, offset, epoch]` (no position: `["event", topic, data]`) in each
/// encoding `values` has, with the engine topic its subscribers are on.
fn events(
    topic: &str,
    values: &[Option<ValueRef<'_>>; 2],
    at: Option<&Position<'_>>,
) -> Vec<(String, wire::Event)> {
    Wire::ALL
        .into_iter()
        .zip(values)
        .filter_map(|(wire, value)| {
            let data = (*value)?;
            let msg = Msg::Event { topic: topic.into(), data, at: at.cloned() };
            Some((engine_topic(wire, topic), wire::Event::encode(wire, msg)))
        })
        .collect()
}

/// The engine topic an rpc topic is carried on: the protocol's name before it, so events
/// encoded for one protocol reach only its subscribers.
pub(super) fn engine_topic(wire: Wire, topic: &str) -> String {
    format!("{}:{topic}", wire.protocol())
}

/// The rpc topic an engine topic carries, if it carries one ([`engine_topic`]'s inverse): the
/// bridge to other nodes gives an rpc topic's two encodings one Redis channel.
#[cfg(feature = "redis")]
pub(crate) fn node_topic(engine_topic: &str) -> Option<&str> {
    Wire::ALL.into_iter().find_map(|wire| {
        engine_topic.strip_prefix(wire.protocol()).and_then(|rest| rest.strip_prefix(':'))
    })
}

/// An event of `topic` from Redis, with its data in JSON (`json`) or MessagePack: another
/// node's, or any node's numbered by Redis (`kept`: its position and the connection it skips).
/// Encoded for the encodings this node has subscribers of, and handed to the workers that
/// have them. Returns `false` if `data` is not one well-formed value.
#[cfg(feature = "redis")]
pub(crate) fn deliver_from_node(
    shared: &Shared,
    topic: &str,
    json: bool,
    data: &[u8],
    kept: Option<(&Position<'_>, Option<ConnId>)>,
) -> bool {
    let Some(data) = ValueRef::from_raw(json, data) else { return false };
    let wanted = shared.registry.counts(&engine_topic(other_wire(data.wire()), topic)).is_some();
    let other = translated(data, wanted);
    emit(shared, None, topic, both_wires(data, other.as_ref()), kept);
    true
}

/// What Redis kept of `topic` after `last` in `epoch`, for this node's cache of it, which
/// may have missed events while the node's link was down: delivered if it is all there;
/// otherwise the cache ends and the topic's subscribers here are closed (1012), to subscribe
/// again and recover or be told what they missed. Returns whether it was all there.
#[cfg(feature = "redis")]
pub(crate) fn catch_up(
    shared: &Shared,
    topic: &str,
    epoch: &str,
    last: u64,
    stored: Option<crate::nodes::Stored>,
) -> bool {
    let whole = stored.filter(|s| {
        s.epoch == epoch
            && s.top.checked_sub(last) == Some(s.events.len() as u64)
            && s.events.first().is_none_or(|e| e.offset == last + 1)
    });
    let Some(stored) = whole else {
        shared.histories.forget(topic, || false);
        for wire in Wire::ALL {
            let reason = "missed events: subscribe again";
            shared.close_subscribers(
                &engine_topic(wire, topic),
                bidir_protocol::CloseCode::SERVICE_RESTART,
                reason,
            );
        }
        return false;
    };
    for e in stored.events {
        let at = Position { offset: e.offset, epoch: epoch.into() };
        deliver_from_node(shared, topic, e.json, &e.data, Some((&at, e.exclude)));
    }
    if let Some(log) = shared.histories.lock().get_mut(topic) {
        log.caught_up();
    }
    true
}

/// Ends this node's cache of `topic`, unless it has subscribers again.
#[cfg(feature = "redis")]
pub(crate) fn forget_history(shared: &Shared, topic: &str) -> bool {
    shared.histories.forget(topic, || {
        Wire::ALL.into_iter().any(|w| shared.registry.counts(&engine_topic(w, topic)).is_some())
    })
}

impl Endpoint {
    /// Subscribes this connection to `topic` (allowed already) and answers `sub` `id`: with
    /// `null`, or for a topic with a history, with its position after sending the events that
    /// followed `since` (docs/rpc.md, "History and recovery"). The logs are held from before
    /// the subscription until the answer is queued: an event published meanwhile is either in
    /// what is sent here or delivered after it (or both, which the client drops by offset).
    /// On a server joined to other nodes, a subscriber this node's cache cannot answer is
    /// subscribed once Redis has ([`Endpoint::subscribed_from`]).
    pub(super) fn subscribe(
        &mut self,
        cx: &mut Context<'_>,
        id: u64,
        topic: &str,
        since: Option<&Position<'_>>,
    ) {
        let engine = engine_topic(self.egress.wire(), topic);
        let shared = Arc::clone(&cx.worker.shared);
        let Some(bounds) = shared.histories.bounds(topic) else {
            cx.subscribe(&engine);
            return self.answer_value(id, &());
        };
        let now = Instant::now();
        let mut logs = shared.histories.lock();
        #[cfg(feature = "redis")]
        if let Some(bridge) = &shared.bridge
            && !logs.get_mut(topic).is_some_and(|log| log.covers(since, now))
        {
            drop(logs);
            let (handle, name) = (cx.handle(), topic.to_owned());
            let since =
                since.map(|p| Position { offset: p.offset, epoch: p.epoch.to_string().into() });
            let from = since.as_ref().map(|p| p.offset);
            let pin = bridge.pin(Arc::from(engine));
            self.subscribing.push((name.clone(), id));
            let then: crate::nodes::OnRead = Box::new(move |stored| {
                let _ = handle.post_to::<Self, _>(move |endpoint, cx| {
                    endpoint.subscribed_from(cx, id, &name, since.as_ref(), stored);
                    drop(pin);
                    wire::Reader::send_answers(endpoint, cx);
                });
            });
            return bridge.read_history(topic, from, bounds, then);
        }
        let log = history::log(&mut logs, topic, bounds);
        cx.subscribe(&engine);
        let recovery = log.recover(since, now);
        for (at, data) in recovery.missed {
            self.queue_event(topic, at, data.json, &data.bytes);
        }
        self.answer_position(id, &recovery.epoch, recovery.offset, recovery.recovered);
    }

    /// Subscribes this connection to `topic` once Redis told what its history has after
    /// `since` (`None`: Redis could not be asked): sends the events missed, if Redis still
    /// has them all (within the age bound), then those this node has after them, and answers
    /// `sub` `id` with the position.
    #[cfg(feature = "redis")]
    fn subscribed_from(
        &mut self,
        cx: &mut Context<'_>,
        id: u64,
        topic: &str,
        since: Option<&Position<'_>>,
        stored: Option<crate::nodes::Stored>,
    ) {
        let shared = Arc::clone(&cx.worker.shared);
        let max_age = shared.histories.bounds(topic).map(|b| b.max_age());
        let logs = shared.histories.lock();
        let Some(i) = self.subscribing.iter().position(|(t, i)| t == topic && *i == id) else {
            // Unsubscribed meanwhile: answered, not subscribed.
            return self.answer_value(id, &());
        };
        self.subscribing.swap_remove(i);
        cx.subscribe(&engine_topic(self.egress.wire(), topic));
        let cache = logs.get(topic);
        let Some(stored) = stored else {
            // The position this node knows, if any.
            let (epoch, offset) =
                cache.map_or((String::new(), 0), |l| (l.top().0.to_string(), l.top().1));
            return self.answer_position(id, &epoch, offset, since.is_none());
        };
        let fresh: Vec<_> =
            stored.events.iter().filter(|e| max_age.is_some_and(|age| e.age <= age)).collect();
        let mut recovered = since.is_none_or(|p| {
            *p.epoch == *stored.epoch
                && stored.top.checked_sub(p.offset) == Some(fresh.len() as u64)
                && fresh.first().is_none_or(|e| e.offset == p.offset + 1)
        });
        if recovered {
            for e in fresh {
                let at = Position { offset: e.offset, epoch: stored.epoch.clone().into() };
                self.queue_event(topic, at, e.json, &e.data);
            }
        }
        // What arrived here after Redis answered.
        let mut offset = stored.top;
        if let Some(cache) = cache.filter(|c| **c.top().0 == *stored.epoch) {
            let (after, follows) = cache.after(stored.top);
            recovered &= follows;
            for (o, data) in after {
                let at = Position { offset: o, epoch: stored.epoch.clone().into() };
                self.queue_event(topic, at, data.json, &data.bytes);
                offset = o;
            }
        }
        self.answer_position(id, &stored.epoch, offset, recovered);
    }

    /// Queues an event of `topic` at `at`, its data as kept (well-formed: checked when
    /// published or read), in this connection's encoding.
    fn queue_event(&mut self, topic: &str, at: Position<'_>, json: bool, bytes: &[u8]) {
        let wire = self.egress.wire();
        let Some(data) = ValueRef::from_raw(json, bytes) else { return };
        let other = (data.wire() != wire).then(|| translated(data, true));
        let data = match &other {
            None => data,
            Some(Some(translated)) => translated.as_ref(),
            Some(None) => return,
        };
        let msg = Msg::Event { topic: topic.into(), data, at: Some(at) };
        self.answers.push(|out| wire.encode(msg, out));
    }

    /// Answers `sub` `id` with a history's position.
    fn answer_position(&mut self, id: u64, epoch: &str, offset: u64, recovered: bool) {
        let position =
            serde_json::json!({ "epoch": epoch, "offset": offset, "recovered": recovered });
        self.answer_value(id, &position);
    }
}
