//! The synchronous handler API: one [`Handler`] per connection, called on the connection's
//! worker thread with a [`Context`] to act on the connection.

use std::any::Any;
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use bidir_protocol::{CloseCode, DataKind, Fragment, FrameKind, Message, State};

use crate::client::ConnectError;
use crate::cx::WorkerCx;
use crate::handle::ConnHandle;
use crate::meta::{ConnId, Meta};
use crate::pubsub::Forward;
use crate::send::Payload;
use crate::timer::TimerId;
use crate::{Backpressure, SendError, ServerHandle};

/// Reacts to one connection's events. Created by the route's accept hook, one instance per
/// connection, and called only on that connection's worker thread, one call at a time.
///
/// Calls must not block: a worker serves thousands of connections, and every one of them
/// waits while a handler runs. Hand long work to another thread and answer through
/// [`Context::handle`].
///
/// Payloads (`msg`, `fragment`, `payload`) are borrowed from the worker's buffers and live only
/// during the call; copy what you keep.
///
/// Every method has a default that does nothing, so a handler implements only what it needs.
///
/// `Any` is a supertrait (every `'static` type is `Any`, so this asks nothing more of an
/// implementation): it lets [`ConnHandle::post_to`] reach the concrete handler type behind
/// the `&mut dyn Handler` the engine holds. A boxed handler (`Box<dyn Handler>`, `Box<dyn
/// Handler + Send>`) is itself a `Handler`, so one accept hook may choose the handler's type
/// per connection; the engine unwraps such a box, so `post_to` sees the type inside it.
pub trait Handler: Any {
    /// The upgrade completed; the connection is open. Called once, before any other method.
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let _ = cx;
    }

    /// A client connection's handshake answer arrived — a valid 101 — with the server's
    /// response `headers`, before the connection opens: `Err(reason)` fails it, with
    /// [`ConnectError::Rejected`] to [`Handler::on_connect_failed`] and nothing sent (the
    /// socket is closed). What a handler checks the server's proof of a key with. Not called
    /// for server connections. The default accepts.
    ///
    /// # Errors
    ///
    /// The reason the answer is refused.
    fn on_response(&mut self, headers: &[(String, String)]) -> Result<(), String> {
        let _ = headers;
        Ok(())
    }

    /// A whole message arrived (the route's delivery is
    /// [`Delivery::Messages`](crate::protocol::Delivery::Messages), the default).
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        let _ = (cx, msg);
    }

    /// A whole binary message arrived, writable where it lies in the engine's receive buffer:
    /// a handler that transforms what it receives (decrypts it) does so in place instead of
    /// copying it first. The engine does not read the bytes again. The default hands the
    /// message to [`Handler::on_message`] as [`Message::Binary`].
    fn on_binary_mut(&mut self, cx: &mut Context<'_>, payload: &mut [u8]) {
        self.on_message(cx, Message::Binary(payload));
    }

    /// A message published to a topic this connection subscribed to, for a connection that
    /// asked to see them ([`Context::intercept_publishes`]): the handler sends what it makes
    /// of it — an encrypted connection seals it with its own key — where the engine would
    /// queue the message as it is. Called on the connection's worker, in publish order, in
    /// place of that queuing. The default sends it unchanged.
    fn on_publish(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        let _ = cx.send(msg);
    }

    /// A piece of a message arrived (the route's delivery is
    /// [`Delivery::Fragments`](crate::protocol::Delivery::Fragments)): for messages too large
    /// to hold, processed as they stream in.
    fn on_frame(&mut self, cx: &mut Context<'_>, fragment: Fragment<'_>) {
        let _ = (cx, fragment);
    }

    /// A ping arrived; it has been answered already unless the route turned
    /// [`auto_pong`](crate::protocol::Config::auto_pong) off.
    fn on_ping(&mut self, cx: &mut Context<'_>, payload: &[u8]) {
        let _ = (cx, payload);
    }

    /// A pong arrived.
    fn on_pong(&mut self, cx: &mut Context<'_>, payload: &[u8]) {
        let _ = (cx, payload);
    }

    /// A timer set with [`Context::set_timer`] fell due; `timer` is the id it returned. Timers
    /// are as coarse as [`ServerConfig::timer_tick`](crate::ServerConfig) (never early, up to
    /// a tick late, or later while the worker is busy); timers due in the same turn fire in
    /// deadline order, and one set during this call fires in a later round, never in this one.
    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        let _ = (cx, timer);
    }

    /// The send queue fell below [`ServerConfig::drain_threshold`](crate::ServerConfig) after
    /// having reached it: a good time to send more.
    fn on_drain(&mut self, cx: &mut Context<'_>) {
        let _ = cx;
    }

    /// The connection ended. Called exactly once, last; sends fail from here on.
    fn on_close(&mut self, cx: &mut Context<'_>, close: CloseInfo<'_>) {
        let _ = (cx, close);
    }

    /// A client connection ([`ServerHandle::connect`](crate::ServerHandle::connect)) could not
    /// be opened: the connect or the handshake failed, timed out, or the server refused (the
    /// error carries its answer). Called instead of every other method; the handler is dropped
    /// afterwards.
    fn on_connect_failed(&mut self, error: ConnectError) {
        let _ = error;
    }
}

/// Implements [`Handler`] for a box of handlers by forwarding every method to the one inside.
macro_rules! forward_handler {
    ($(#[$doc:meta])* $boxed:ty) => {
        $(#[$doc])*
        impl Handler for $boxed {
            fn on_open(&mut self, cx: &mut Context<'_>) {
                (**self).on_open(cx);
            }
            fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
                (**self).on_message(cx, msg);
            }
            fn on_response(&mut self, headers: &[(String, String)]) -> Result<(), String> {
                (**self).on_response(headers)
            }
            fn on_binary_mut(&mut self, cx: &mut Context<'_>, payload: &mut [u8]) {
                (**self).on_binary_mut(cx, payload);
            }
            fn on_publish(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
                (**self).on_publish(cx, msg);
            }
            fn on_frame(&mut self, cx: &mut Context<'_>, fragment: Fragment<'_>) {
                (**self).on_frame(cx, fragment);
            }
            fn on_ping(&mut self, cx: &mut Context<'_>, payload: &[u8]) {
                (**self).on_ping(cx, payload);
            }
            fn on_pong(&mut self, cx: &mut Context<'_>, payload: &[u8]) {
                (**self).on_pong(cx, payload);
            }
            fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
                (**self).on_timer(cx, timer);
            }
            fn on_drain(&mut self, cx: &mut Context<'_>) {
                (**self).on_drain(cx);
            }
            fn on_close(&mut self, cx: &mut Context<'_>, close: CloseInfo<'_>) {
                (**self).on_close(cx, close);
            }
            fn on_connect_failed(&mut self, error: ConnectError) {
                (**self).on_connect_failed(error);
            }
        }
    };
}

forward_handler!(
    /// Forwards every method to the boxed handler: an accept hook may return handlers of
    /// several types (one per subprotocol, say) as `Box<dyn Handler>`.
    Box<dyn Handler>
);
forward_handler!(
    /// As for `Box<dyn Handler>`: what [`ServerHandle::connect`](crate::ServerHandle::connect),
    /// which needs a `Send` handler, takes when the type is chosen at run time.
    Box<dyn Handler + Send>
);

/// Boxes a handler for the worker's table, unwrapping one that is boxed already, so that the
/// table holds the concrete type ([`ConnHandle::post_to`] downcasts to it) behind one
/// indirection, not two.
pub(crate) fn boxed<H: Handler>(handler: H) -> Box<dyn Handler> {
    let mut slot = Some(handler);
    if let Some(inner) = take_as::<_, Box<dyn Handler>>(&mut slot) {
        return inner;
    }
    if let Some(inner) = take_as::<_, Box<dyn Handler + Send>>(&mut slot) {
        return inner;
    }
    Box::new(slot.expect("take_as takes only what it returns"))
}

/// [`boxed`] for a handler that must stay `Send` (a client connection's, until its worker
/// takes it).
pub(crate) fn boxed_send<H: Handler + Send>(handler: H) -> Box<dyn Handler + Send> {
    let mut slot = Some(handler);
    if let Some(inner) = take_as::<_, Box<dyn Handler + Send>>(&mut slot) {
        return inner;
    }
    Box::new(slot.expect("take_as takes only what it returns"))
}

/// Takes the value out of `slot` if its type is `B`; leaves it there otherwise.
fn take_as<H: Any, B: Any>(slot: &mut Option<H>) -> Option<B> {
    let any: &mut dyn Any = slot;
    any.downcast_mut::<Option<B>>().and_then(Option::take)
}

/// How a connection ended: the one close type of every side. A server's or an engine
/// client's [`Handler::on_close`] borrows it (`CloseInfo<'_>`: the reason is lent for the
/// call, nothing copied); the blocking client and the blocking adapter hand it out owned
/// (`CloseInfo<'static>`, in [`Incoming::Close`](crate::client::Incoming::Close)).
///
/// One type with a [`Cow`] reason rather than a borrowed and an owned twin (tungstenite's
/// `CloseFrame<'t>` made the same choice): code written over one side's close reads the
/// other's, and [`CloseInfo::into_owned`] keeps a borrowed one past its call. The protocol
/// core's [`Close`](bidir_protocol::Close) stays apart: it is the sans-IO layer's event for a
/// received close frame only (its code an `Option`), and converts into this one with `From`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseInfo<'a> {
    /// The code: the peer's (1005 if it sent none), the error's (1002, 1007, 1009, 1011), or
    /// 1006 when the connection ended without a close frame.
    pub code: CloseCode,
    /// The peer's reason, or a description of the failure.
    pub reason: Cow<'a, str>,
    /// Whether the closing handshake completed: both close frames were exchanged.
    pub clean: bool,
    /// Whether this side sent its close frame first (it started the closing handshake). Only
    /// a completed handshake tells: `false` whenever `clean` is.
    pub initiated_locally: bool,
}

impl<'a> CloseInfo<'a> {
    /// A connection that ended without completing the closing handshake: `code` is the
    /// failure's (1002, 1007, 1009, 1011, or 1006 when no close frame came), `reason`
    /// describes it.
    pub fn failed(code: CloseCode, reason: &'a str) -> Self {
        Self { code, reason: Cow::Borrowed(reason), clean: false, initiated_locally: false }
    }

    /// The same close with its reason owned, to keep past the call that lent it.
    pub fn into_owned(self) -> CloseInfo<'static> {
        let Self { code, reason, clean, initiated_locally } = self;
        CloseInfo { code, reason: Cow::Owned(reason.into_owned()), clean, initiated_locally }
    }
}

/// A completed closing handshake, as the protocol core reports it: the peer's code (1005 when
/// its frame had none) and reason, borrowed.
impl<'a> From<bidir_protocol::Close<'a>> for CloseInfo<'a> {
    fn from(close: bidir_protocol::Close<'a>) -> Self {
        Self {
            code: close.code_or_no_status(),
            reason: Cow::Borrowed(close.reason),
            clean: true,
            initiated_locally: close.initiated_locally,
        }
    }
}

/// The handler's view of its connection and worker: send, close, subscribe, publish.
///
/// Sends are queued and written once per loop turn, coalesced into one gathered write per
/// socket; they never block. Ordering: frames go out in the order they were queued.
pub struct Context<'a> {
    pub(crate) conn: &'a mut bidir_protocol::Connection,
    pub(crate) meta: &'a mut Meta,
    pub(crate) worker: &'a mut WorkerCx,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("id", &self.meta.id)
            .field("peer", &self.meta.peer)
            .field("state", &self.state())
            .field("buffered", &self.buffered_amount())
            .finish_non_exhaustive()
    }
}

impl Context<'_> {
    /// Queues a whole message. The payload is copied.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] once a close frame was sent or received;
    /// [`SendError::Backpressure`] when the queue is over
    /// [`ServerConfig::max_backpressure`](crate::ServerConfig) (the connection also starts
    /// closing when the policy is [`Backpressure::Close`]);
    /// [`SendError::Protocol`] while a fragmented message is being sent.
    pub fn send(&mut self, msg: Message<'_>) -> Result<(), SendError> {
        let Self { conn, meta, worker } = self;
        // A `Message` is valid by construction: text is a `&str`.
        worker.send_payload(
            conn,
            meta,
            FrameKind::Message(msg.kind()),
            Payload::Borrowed(msg.as_bytes()),
            true,
        )
    }

    /// Queues a text message.
    ///
    /// # Errors
    ///
    /// As [`Context::send`].
    pub fn send_text(&mut self, text: &str) -> Result<(), SendError> {
        self.send(Message::Text(text))
    }

    /// Queues a binary message.
    ///
    /// # Errors
    ///
    /// As [`Context::send`].
    pub fn send_binary(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        self.send(Message::Binary(bytes))
    }

    /// Queues a message whose payload is shared, not copied (large payloads, the same bytes
    /// sent to many connections). Text must be UTF-8: it is validated.
    ///
    /// # Errors
    ///
    /// As [`Context::send`], and [`SendError::Protocol`] for text that is not UTF-8.
    pub fn send_shared(&mut self, kind: DataKind, payload: Bytes) -> Result<(), SendError> {
        if kind == DataKind::Text && simdutf8::basic::from_utf8(&payload).is_err() {
            return Err(SendError::Protocol(bidir_protocol::SendError::InvalidUtf8));
        }
        let Self { conn, meta, worker } = self;
        worker.send_payload(conn, meta, FrameKind::Message(kind), Payload::Shared(payload), true)
    }

    /// Queues one frame of a message sent in pieces: [`FrameKind::First`], then any number of
    /// [`FrameKind::Continue`], then [`FrameKind::Last`]. Other messages cannot be sent until
    /// the last piece; control frames (ping, close) can.
    ///
    /// # Errors
    ///
    /// As [`Context::send`]; [`SendError::Protocol`] for pieces out of order or text that is
    /// not UTF-8 once joined.
    pub fn send_frame(&mut self, kind: FrameKind, payload: &[u8]) -> Result<(), SendError> {
        let Self { conn, meta, worker } = self;
        worker.send_payload(conn, meta, kind, Payload::Borrowed(payload), false)
    }

    /// Queues a ping (at most 125 bytes of payload). Like a message, it is refused past the
    /// backpressure limit, so pinging a peer that does not read cannot grow the queue.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`], [`SendError::Backpressure`] past
    /// [`ServerConfig::max_backpressure`](crate::ServerConfig::max_backpressure), or
    /// [`SendError::Protocol`] for a payload over 125 bytes.
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        let Self { conn, meta, worker } = self;
        worker.admit(conn, meta)?;
        worker.control(conn, meta, |conn, out| conn.ping(payload, out))
    }

    /// Starts the closing handshake with `code` and `reason` (at most 123 bytes). Frames queued
    /// before it are still sent; [`Handler::on_close`] follows when the peer answers (or the
    /// close timeout passes).
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] if already closing; [`SendError::Protocol`] for a code that may
    /// not be sent (1005, 1006, 1015, reserved) or a reason over 123 bytes.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        let Self { conn, meta, worker } = self;
        let now = worker.now;
        worker.control(conn, meta, |conn, out| conn.close(now, code, reason, out))
    }

    /// Drops the connection at once: no close frame, queued frames discarded.
    /// [`Handler::on_close`] follows with 1006.
    pub fn abort(&mut self) {
        self.meta.abort = true;
    }

    /// Where the connection is in its life.
    pub fn state(&self) -> State {
        if self.meta.abort { State::Closed } else { self.conn.state() }
    }

    /// Bytes queued and not yet written to the socket.
    pub fn buffered_amount(&self) -> usize {
        self.meta.out.len()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.meta.peer
    }

    /// The request target (path and query) of the upgrade request, in origin-form: an
    /// absolute-form target (`http://host/path?query`) is given without scheme and authority.
    pub fn target(&self) -> &str {
        self.meta.request.split_once('\n').map_or(&self.meta.request, |(target, _)| target)
    }

    /// The path of the upgrade request.
    pub fn path(&self) -> &str {
        let t = self.target();
        t.split_once('?').map_or(t, |(p, _)| p)
    }

    /// The subprotocol chosen at the upgrade, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.meta.request.split_once('\n').map(|(_, protocol)| protocol)
    }

    /// The connection's identity, unique in the server's lifetime.
    pub fn id(&self) -> ConnId {
        self.meta.id
    }

    /// Round-trip time measured by the last heartbeat ping and its pong.
    pub fn rtt(&self) -> Option<Duration> {
        self.conn.rtt()
    }

    /// The server this connection belongs to (for a client connection, the engine that opened
    /// it): publish, open client connections, read stats, shut down — here or from any thread
    /// the handle is given to. A shutdown started here does not wait for this worker (it
    /// cannot: the handler is running on it); the connections close as with any shutdown.
    pub fn server(&self) -> ServerHandle {
        ServerHandle { shared: Arc::clone(&self.worker.shared) }
    }

    /// The largest message this connection receives, in bytes (its protocol configuration's
    /// `max_message_size`): what a layer that decompresses must bound its output by.
    pub fn max_message_size(&self) -> usize {
        self.conn.config().max_message_size
    }

    /// A handle for sending to or closing this connection from any thread.
    pub fn handle(&mut self) -> ConnHandle {
        self.worker.handle(self.meta)
    }

    /// Subscribes this connection to `topic`; a no-op if already subscribed.
    pub fn subscribe(&mut self, topic: &str) {
        self.worker.topics.subscribe(topic, self.meta.id.slot, &mut self.meta.topics);
    }

    /// Unsubscribes this connection from `topic`; returns whether it was subscribed.
    pub fn unsubscribe(&mut self, topic: &str) -> bool {
        self.worker.topics.unsubscribe(topic, self.meta.id.slot, &mut self.meta.topics)
    }

    /// Has every publish to the topics this connection subscribes to go through its handler's
    /// [`Handler::on_publish`] from now on, instead of being queued as it is: for a handler
    /// that must send each message its own way (a per-connection key). Each publish is then
    /// sent as the handler chooses, at the cost of a handler call per subscriber.
    pub fn intercept_publishes(&mut self) {
        self.meta.intercepts_publishes = true;
    }

    /// Whether this connection is subscribed to `topic`.
    pub fn is_subscribed(&self, topic: &str) -> bool {
        self.worker.topics.is_subscribed(topic, &self.meta.topics)
    }

    /// Sends `msg` to every connection subscribed to `topic`, on every worker (this one
    /// included, if subscribed); only workers with subscribers are woken. The frame is encoded
    /// once per worker and shared. Subscribers over their backpressure limit, or in the middle
    /// of sending a fragmented message, miss it (counted in
    /// [`Stats::dropped_sends`](crate::Stats)). This worker's subscribers get it after the
    /// handler returns, other workers' on their next loop turn.
    ///
    /// With [`ServerBuilder::redis`](crate::ServerBuilder::redis), it also goes to the other
    /// nodes' subscribers, through Redis (docs/nodes.md).
    ///
    /// Returns the subscribers of `topic` on every worker of this node as registered at the
    /// call (a subscribe or unsubscribe racing with it on another worker may or may not
    /// count); other nodes' are not counted.
    pub fn publish(&mut self, topic: &str, msg: Message<'_>) -> usize {
        self.forward(topic, Forward::Message(msg));
        self.worker.publish_everywhere(topic, msg, None)
    }

    /// [`Context::publish`] to every subscriber but this connection (socket.io's `broadcast`,
    /// uWebSockets' `ws.publish`): a chat message goes to the others, not back to its sender.
    /// Returns the subscribers reached on this node, this connection not counted.
    pub fn broadcast(&mut self, topic: &str, msg: Message<'_>) -> usize {
        self.forward(topic, Forward::Message(msg));
        self.publish_here(topic, msg, true)
    }

    /// Hands a publish to the other nodes, when the server joined some.
    pub(crate) fn forward(&self, topic: &str, what: Forward<'_>) {
        self.worker.shared.forward(topic, what);
    }

    /// Publishes to this node's subscribers only (the rpc layer forwards its events to other
    /// nodes itself), skipping this connection if `exclude_self`; returns the subscribers
    /// reached.
    pub(crate) fn publish_here(
        &mut self,
        topic: &str,
        msg: Message<'_>,
        exclude_self: bool,
    ) -> usize {
        if !exclude_self {
            return self.worker.publish_everywhere(topic, msg, None);
        }
        let own = usize::from(self.is_subscribed(topic));
        self.worker.publish_everywhere(topic, msg, Some(self.meta.id)).saturating_sub(own)
    }

    /// Arms a timer: [`Handler::on_timer`] is called with the returned id once `after` has
    /// passed (rounded up to the worker's timer tick). A connection may have any number armed
    /// (a per-call answer timeout each, say); each fires once, unless cancelled, and all are
    /// disarmed when the connection ends. Cost: about 80 bytes and an O(log n) step over the
    /// worker's armed timers, per timer.
    pub fn set_timer(&mut self, after: Duration) -> TimerId {
        let deadline = (self.worker.now + after).as_nanos();
        self.meta.user_timer = self.meta.user_timer.min(deadline);
        self.worker.timers.arm(self.meta.id.slot as usize, deadline)
    }

    /// Disarms timer `timer` of this connection; `false` if it is not armed (it fired, was
    /// cancelled, or is another connection's).
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        let slot = self.meta.id.slot as usize;
        let cancelled = self.worker.timers.cancel(slot, timer);
        if cancelled {
            self.meta.user_timer = self.worker.timers.earliest(slot);
        }
        cancelled
    }

    /// The worker's clock, read once per loop turn.
    pub fn now(&self) -> std::time::Instant {
        self.worker.wall_now()
    }

    /// The policy applied past the backpressure limit.
    pub fn backpressure_policy(&self) -> Backpressure {
        self.worker.shared.config.backpressure
    }
}
