//! The application protocol's messages — calls both ways, answers, notifications, callback
//! invocations and releases, cancels, subscriptions, publishes and events — and their two
//! encodings: text, `bidir.json.v1` ([`json`]), and MessagePack, `bidir.bin.v1` ([`bin`]).
//! docs/rpc.md in the repository is the wire specification; every example in it is decoded and
//! re-encoded by this module's tests.
//!
//! Like the rest of this crate the codecs are sans-IO: they turn one WebSocket message into
//! [`Msg`]s and back, and know nothing of services, connections or threads. Arguments and
//! results stay raw, borrowed from the received message — JSON text ([`Raw`]) or MessagePack
//! bytes ([`bin::RawPack`]), the [`Blob`] parameter of [`Msg`] — and the layer above decodes
//! them into its own types, once ([`Blob::decode`]).
//!
//! Between a `bidir.bin.v1` WebSocket message and its MessagePack bytes sits the envelope
//! ([`envelope`]): a flags byte, compression, and AES-256-GCM ([`seal`], keyed by [`psk`]).

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
pub use serde_json::value::RawValue;

use crate::CloseCode;

pub mod bin;
pub mod envelope;
pub mod json;
pub mod key;
pub mod noise;
pub mod psk;
pub mod seal;

/// An argument blob: arguments, a result, event or error data, kept undecoded as the bytes of
/// one value of the message's encoding and decoded by the receiver with its own types.
/// [`Raw`] for `bidir.json.v1`, [`bin::RawPack`] for `bidir.bin.v1`.
pub trait Blob<'a>: Copy + fmt::Debug + PartialEq {
    /// Why a blob does not decode into the type asked for.
    type Error: std::error::Error;

    /// Decodes the value into `T`, borrowing from the message where `T` borrows.
    ///
    /// # Errors
    ///
    /// When the value does not fit `T` (the caller answers `bad_args`).
    fn decode<T: Deserialize<'a>>(&self) -> Result<T, Self::Error>;
}

/// A JSON value kept as its text, borrowed from the received message: arguments, results,
/// event data. Two are equal when their texts are.
#[derive(Clone, Copy)]
pub struct Raw<'a>(&'a RawValue);

impl Raw<'static> {
    /// `null`.
    pub const NULL: Self = Self(RawValue::NULL);
}

impl<'a> Raw<'a> {
    /// Wraps a value that is valid JSON by construction.
    pub fn new(value: &'a RawValue) -> Self {
        Self(value)
    }

    /// The value's JSON text.
    pub fn get(&self) -> &'a str {
        self.0.get()
    }

    /// The value itself: to keep it ([`RawValue::to_owned`]) or hand it on without parsing
    /// it again.
    pub fn value(&self) -> &'a RawValue {
        self.0
    }
}

impl<'a> Raw<'a> {
    /// Decodes the value into `T` (the inherent form of [`Blob::decode`]).
    ///
    /// # Errors
    ///
    /// When the value does not fit `T`.
    pub fn decode<T: Deserialize<'a>>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// Encodes `value` as a JSON blob, to pass to [`Raw::new`].
    ///
    /// # Errors
    ///
    /// When `value`'s `Serialize` fails (a map with keys that are not strings).
    pub fn encode<T: serde::Serialize + ?Sized>(
        value: &T,
    ) -> Result<Box<RawValue>, serde_json::Error> {
        serde_json::value::to_raw_value(value)
    }
}

impl<'a> Blob<'a> for Raw<'a> {
    type Error = serde_json::Error;

    fn decode<T: Deserialize<'a>>(&self) -> Result<T, serde_json::Error> {
        Raw::decode(self)
    }
}

impl PartialEq for Raw<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl fmt::Debug for Raw<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

/// The subprotocol name of the JSON encoding.
pub const JSON_PROTOCOL: &str = "bidir.json.v1";

/// The largest call or callback id: 2^53 − 1, the largest integer a JavaScript number holds
/// exactly.
pub const MAX_ID: u64 = (1 << 53) - 1;

/// The most messages one batch may carry; a larger batch closes the connection with 1009.
pub const MAX_BATCH: usize = 1024;

/// One message of the protocol. Ids are chosen by the side that sends the request (a call, a
/// callback invocation that wants an answer, a subscribe): each side numbers its own requests,
/// and an answer names the id of the request it answers, so many calls can be in flight in
/// both directions at once. Callback ids are chosen by the side that owns the callback.
///
/// `R` is the encoding's argument blob: [`Raw`] (JSON text, the default) or [`bin::RawPack`]
/// (MessagePack bytes); the rest of a message is the same in both encodings.
#[derive(Clone, Debug, PartialEq)]
pub enum Msg<'a, R = Raw<'a>> {
    /// A call, answered by [`Msg::Result`] or [`Msg::Error`] with the same id.
    Call {
        /// The caller's id for it.
        id: u64,
        /// `Service.method`.
        method: Cow<'a, str>,
        /// The arguments, an array in the method's parameter order.
        args: R,
    },
    /// A call that wants no answer.
    Notify {
        /// `Service.method`.
        method: Cow<'a, str>,
        /// The arguments, an array.
        args: R,
    },
    /// The answer to a request: its value.
    Result {
        /// The request's id.
        id: u64,
        /// What the method returned.
        value: R,
    },
    /// The answer to a request: why it failed.
    Error {
        /// The request's id.
        id: u64,
        /// The failure.
        error: ErrorBody<'a, R>,
    },
    /// A call of a method of a callback object the receiver owns.
    Invoke {
        /// The callback's id, chosen by its owner when it passed it.
        callback: u64,
        /// The callback's method.
        method: Cow<'a, str>,
        /// The arguments, an array.
        args: R,
        /// The sender's id for the call when it wants an answer.
        id: Option<u64>,
    },
    /// Callback `callback` is done with: from its holder, it will not be invoked again (the
    /// owner frees it); from its owner, it is gone (invocations are refused from now on).
    Release {
        /// The callback's id.
        callback: u64,
    },
    /// The sender gave up on its request: no answer is needed (one may still cross).
    Cancel {
        /// The request's id.
        id: u64,
    },
    /// Subscribe to a topic; answered with a result (`null`, or the history's position for a
    /// topic that keeps one) or an error (refused).
    Subscribe {
        /// The request's id.
        id: u64,
        /// The topic.
        topic: Cow<'a, str>,
        /// The last event the subscriber got, to be sent what followed it (a topic with
        /// history; docs/rpc.md, "History and recovery").
        since: Option<Position<'a>>,
    },
    /// Unsubscribe from a topic; answered with a result (`true` if it was subscribed).
    Unsubscribe {
        /// The request's id.
        id: u64,
        /// The topic.
        topic: Cow<'a, str>,
    },
    /// A client's publish to a topic's subscribers (when the server allows it).
    Publish {
        /// The topic.
        topic: Cow<'a, str>,
        /// The event's value.
        data: R,
    },
    /// An event of a topic the receiver subscribed to.
    Event {
        /// The topic.
        topic: Cow<'a, str>,
        /// The event's value.
        data: R,
        /// Where it stands in the topic's history, for a topic that keeps one.
        at: Option<Position<'a>>,
    },
}

/// Where an event stands in its topic's history: its offset (1, 2, 3… in publish order) in
/// the history's epoch (which changes when the history is lost, so that offsets of two epochs
/// are never compared).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position<'a> {
    /// The event's offset, from 1; at most 2^53 - 1.
    pub offset: u64,
    /// The history's epoch: a short string, opaque.
    pub epoch: Cow<'a, str>,
}

/// How an encoding writes the fields of a message: each codec implements it, and
/// [`Msg::write_fields`] walks the fields in their one wire order (docs/rpc.md).
pub(crate) trait FieldWriter<R> {
    /// An id (request, callback).
    fn id(&mut self, n: u64);
    /// A string (method, error code and message, topic).
    fn text(&mut self, s: &str);
    /// An argument blob (args, value, data).
    fn blob(&mut self, blob: &R);
}

impl<'a, R> Msg<'a, R> {
    /// The same message with each blob passed through `f`: how a layer that serves both
    /// encodings carries one message type (its own blob enum) and hands each codec its own.
    pub fn map_blobs<S>(self, mut f: impl FnMut(R) -> S) -> Msg<'a, S> {
        match self {
            Self::Call { id, method, args } => Msg::Call { id, method, args: f(args) },
            Self::Notify { method, args } => Msg::Notify { method, args: f(args) },
            Self::Result { id, value } => Msg::Result { id, value: f(value) },
            Self::Error { id, error: ErrorBody { code, message, data } } => {
                Msg::Error { id, error: ErrorBody { code, message, data: data.map(f) } }
            }
            Self::Invoke { callback, method, args, id } => {
                Msg::Invoke { callback, method, args: f(args), id }
            }
            Self::Release { callback } => Msg::Release { callback },
            Self::Cancel { id } => Msg::Cancel { id },
            Self::Subscribe { id, topic, since } => Msg::Subscribe { id, topic, since },
            Self::Unsubscribe { id, topic } => Msg::Unsubscribe { id, topic },
            Self::Publish { topic, data } => Msg::Publish { topic, data: f(data) },
            Self::Event { topic, data, at } => Msg::Event { topic, data: f(data), at },
        }
    }
}

impl<R> Msg<'_, R> {
    /// Writes the fields after the tag, in their wire order, through `w`.
    pub(crate) fn write_fields(&self, w: &mut impl FieldWriter<R>) {
        match self {
            Self::Call { id, method, args } => {
                w.id(*id);
                w.text(method);
                w.blob(args);
            }
            Self::Notify { method, args } => {
                w.text(method);
                w.blob(args);
            }
            Self::Result { id, value } => {
                w.id(*id);
                w.blob(value);
            }
            Self::Error { id, error } => {
                w.id(*id);
                w.text(error.code.as_str());
                w.text(&error.message);
                if let Some(data) = &error.data {
                    w.blob(data);
                }
            }
            Self::Invoke { callback, method, args, id } => {
                w.id(*callback);
                w.text(method);
                w.blob(args);
                if let Some(id) = id {
                    w.id(*id);
                }
            }
            Self::Release { callback } => w.id(*callback),
            Self::Cancel { id } => w.id(*id),
            Self::Subscribe { id, topic, since } => {
                w.id(*id);
                w.text(topic);
                if let Some(since) = since {
                    w.id(since.offset);
                    w.text(&since.epoch);
                }
            }
            Self::Unsubscribe { id, topic } => {
                w.id(*id);
                w.text(topic);
            }
            Self::Publish { topic, data } => {
                w.text(topic);
                w.blob(data);
            }
            Self::Event { topic, data, at } => {
                w.text(topic);
                w.blob(data);
                if let Some(at) = at {
                    w.id(at.offset);
                    w.text(&at.epoch);
                }
            }
        }
    }

    /// The message's tag in `bidir.json.v1`.
    pub fn tag(&self) -> &'static str {
        match self {
            Self::Call { .. } => "call",
            Self::Notify { .. } => "note",
            Self::Result { .. } => "ok",
            Self::Error { .. } => "err",
            Self::Invoke { .. } => "cb",
            Self::Release { .. } => "release",
            Self::Cancel { .. } => "cancel",
            Self::Subscribe { .. } => "sub",
            Self::Unsubscribe { .. } => "unsub",
            Self::Publish { .. } => "pub",
            Self::Event { .. } => "event",
        }
    }
}

/// Why a request failed, as an error answer carries it.
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorBody<'a, R = Raw<'a>> {
    /// The kind of failure.
    pub code: ErrorCode,
    /// For people: what went wrong.
    pub message: Cow<'a, str>,
    /// The service's own error value, for [`ErrorCode::Service`].
    pub data: Option<R>,
}

/// The kinds of error answer. On the wire each is a string; a code this version does not know
/// decodes as [`ErrorCode::Unknown`], so newer peers can add codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The method ran and returned its own error (in [`ErrorBody::data`]).
    Service,
    /// No service of that name.
    UnknownService,
    /// The service has no method of that name.
    UnknownMethod,
    /// The arguments do not fit the method's parameters.
    BadArgs,
    /// The message could be read as a request but not understood (a field of the wrong type).
    BadRequest,
    /// No answer came in time.
    Timeout,
    /// The connection ended before the answer.
    Disconnected,
    /// The callback was released.
    Released,
    /// The caller cancelled the request.
    Cancelled,
    /// Over the connection's limit of requests in flight.
    TooManyCalls,
    /// Not allowed (a subscription the server refuses, a publish from a client).
    Unauthorized,
    /// The receiver failed (a panicking method).
    Internal,
    /// A code this version does not know.
    Unknown,
}

impl ErrorCode {
    const ALL: [(Self, &'static str); 12] = [
        (Self::Service, "service"),
        (Self::UnknownService, "unknown_service"),
        (Self::UnknownMethod, "unknown_method"),
        (Self::BadArgs, "bad_args"),
        (Self::BadRequest, "bad_request"),
        (Self::Timeout, "timeout"),
        (Self::Disconnected, "disconnected"),
        (Self::Released, "released"),
        (Self::Cancelled, "cancelled"),
        (Self::TooManyCalls, "too_many_calls"),
        (Self::Unauthorized, "unauthorized"),
        (Self::Internal, "internal"),
    ];

    /// The code's wire string (`"unknown"` for [`ErrorCode::Unknown`]).
    pub fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(c, _)| *c == self).map_or("unknown", |(_, s)| s)
    }

    /// The code for a wire string; [`ErrorCode::Unknown`] for one this version does not know.
    pub fn from_wire(s: &str) -> Self {
        Self::ALL.iter().find(|(_, w)| *w == s).map_or(Self::Unknown, |(c, _)| *c)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message that cannot be read at all: the connection closes with
/// [`FrameError::close_code`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameError {
    code: CloseCode,
    reason: String,
}

impl FrameError {
    /// 1007 for a message that is not in the encoding (not JSON, not MessagePack) or whose
    /// `bidir.bin.v1` envelope is malformed; 1009 for a batch over [`MAX_BATCH`] or a message
    /// announcing a plain length over the limit; 1008 for a message refused by the
    /// connection's encryption (unencrypted where a key is in use, failing authentication,
    /// encrypted where none is).
    pub fn close_code(&self) -> CloseCode {
        self.code
    }

    /// What was wrong, short enough for a close frame's reason (at most 123 bytes).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Undecodable input: 1007 with `reason`.
    fn invalid(reason: String) -> Self {
        Self { code: CloseCode::INVALID_PAYLOAD, reason: short(reason) }
    }

    /// Over a size limit: 1009 with `reason`.
    fn too_big(reason: &str) -> Self {
        Self { code: CloseCode::MESSAGE_TOO_BIG, reason: short(reason.to_owned()) }
    }

    /// Against the connection's policy (its encryption): 1008 with `reason`.
    fn policy(reason: &str) -> Self {
        Self { code: CloseCode::POLICY_VIOLATION, reason: short(reason.to_owned()) }
    }

    fn batch_too_large() -> Self {
        Self::too_big(BATCH_TOO_LARGE)
    }
}

/// A message that failed authentication closes with 1008 "authentication failed".
impl From<seal::AuthError> for FrameError {
    fn from(e: seal::AuthError) -> Self {
        Self::policy(&e.to_string())
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason, self.code.0)
    }
}

impl std::error::Error for FrameError {}

/// One message of the wrong shape. With an [`id`](MsgError::id) it was a request the sender
/// waits for: answer it with [`ErrorCode::BadRequest`]; without,
/// close the connection with 1008 (policy violation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsgError {
    /// The id of the request it was, when that much could be read.
    pub id: Option<u64>,
    /// What was wrong (at most 123 bytes).
    pub reason: String,
}

impl fmt::Display for MsgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for MsgError {}

const BATCH_TOO_LARGE: &str = "batch over 1024 messages";

/// A reason cut to fit a close frame (123 bytes), at a character boundary.
fn short(mut reason: String) -> String {
    if reason.len() > 123 {
        let mut end = 120;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push_str("...");
    }
    reason
}
