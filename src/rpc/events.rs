//! Events: publishing to a topic's subscribers on this node (both encodings, numbered and kept
//! when the topic has a history) and to the other nodes, and delivering what other nodes
//! publish.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Serialize;

use bidir_protocol::rpc::{Msg, Position};

use super::wire::{self, CodecError, Value, ValueRef, Wire};
use crate::cx::Shared;
use crate::history::{self, Data};
use crate::pubsub::Forward;
use crate::{Context, ServerHandle};

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
    server.shared.forward(topic, forwarded(json.as_ref()));
    Ok(emit(&server.shared, None, topic, [Some(json.as_ref()), Some(bin.as_ref())]))
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
    cx.forward(topic, forwarded(json.as_ref()));
    let shared = Arc::clone(&cx.worker.shared);
    Ok(emit(&shared, Some((cx, true)), topic, [Some(json.as_ref()), Some(bin.as_ref())]))
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
    cx.forward(topic, forwarded(data));
    let shared = Arc::clone(&cx.worker.shared);
    let other = translated(data, true);
    emit(&shared, Some((cx, exclude)), topic, both_wires(data, other.as_ref()));
}

/// The data as carried to other nodes.
pub(super) fn forwarded(data: ValueRef<'_>) -> Forward<'_> {
    let (json, data) = data.raw();
    Forward::Rpc { json, data }
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
/// history numbers and keeps it first, and hands it to every worker through its mailbox while
/// holding the logs, so that each gets the topic's events in offset order. Returns the
/// subscribers reached, the skipped connection not counted.
fn emit(
    shared: &Shared,
    from: Option<(&mut Context<'_>, bool)>,
    topic: &str,
    values: [Option<ValueRef<'_>>; 2],
) -> usize {
    let Some(bounds) = shared.histories.bounds(topic) else {
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
    };
    let Some(kept) = values.iter().flatten().next() else { return 0 };
    let (json, bytes) = kept.raw();
    let kept = Data { json, bytes: bytes.into() };
    let (exclude, own) = match from {
        Some((cx, true)) => {
            (Some(cx.id()), Wire::ALL.iter().any(|w| cx.is_subscribed(&engine_topic(*w, topic))))
        }
        _ => (None, false),
    };
    let mut logs = shared.histories.lock();
    let at = history::log(&mut logs, topic, bounds).push(kept, Instant::now());
    let reached: usize = events(topic, &values, Some(&at))
        .iter()
        .map(|(engine, event)| shared.publish(engine, event.message(), exclude, None))
        .sum();
    drop(logs);
    reached.saturating_sub(usize::from(own))
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

/// An event of `topic` another node published, with its data in JSON (`json`) or
/// MessagePack: encoded for the encodings this node has subscribers of, and handed to the
/// workers that have them. Returns `false` if `data` is not one well-formed value.
#[cfg(feature = "redis")]
pub(crate) fn deliver_from_node(shared: &Shared, topic: &str, json: bool, data: &[u8]) -> bool {
    let Some(data) = ValueRef::from_raw(json, data) else { return false };
    let wanted = shared.registry.counts(&engine_topic(other_wire(data.wire()), topic)).is_some();
    let other = translated(data, wanted);
    emit(shared, None, topic, both_wires(data, other.as_ref()));
    true
}
