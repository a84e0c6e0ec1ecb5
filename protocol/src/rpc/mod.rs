//! The application protocol's messages — calls both ways, answers, notifications, callback
//! invocations and releases, cancels, subscriptions, publishes and events — and their text
//! encoding, `bidir.json.v1` ([`json`]). docs/rpc.md in the repository is the wire
//! specification; every example in it is decoded and re-encoded by this module's tests.
//!
//! Like the rest of this crate the codec is sans-IO: it turns one WebSocket message into
//! [`Msg`]s and back, and knows nothing of services, connections or threads. Arguments and
//! results stay raw JSON ([`RawValue`]) borrowed from the received message: the layer above
//! decodes them into its own types, once.

use std::borrow::Cow;
use std::fmt;

pub use serde_json::value::RawValue;

pub mod json;
pub mod psk;
pub mod seal;

/// A JSON value kept as its text, borrowed from the received message: arguments, results,
/// event data. Two are equal when their texts are.
#[derive(Clone, Copy)]
pub struct Raw<'a>(&'a RawValue);

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
#[derive(Clone, Debug, PartialEq)]
pub enum Msg<'a> {
    /// A call, answered by [`Msg::Result`] or [`Msg::Error`] with the same id.
    Call {
        /// The caller's id for it.
        id: u64,
        /// `Service.method`.
        method: Cow<'a, str>,
        /// The arguments, a JSON array in the method's parameter order.
        args: Raw<'a>,
    },
    /// A call that wants no answer.
    Notify {
        /// `Service.method`.
        method: Cow<'a, str>,
        /// The arguments, a JSON array.
        args: Raw<'a>,
    },
    /// The answer to a request: its value.
    Result {
        /// The request's id.
        id: u64,
        /// What the method returned.
        value: Raw<'a>,
    },
    /// The answer to a request: why it failed.
    Error {
        /// The request's id.
        id: u64,
        /// The failure.
        error: ErrorBody<'a>,
    },
    /// A call of a method of a callback object the receiver owns.
    Invoke {
        /// The callback's id, chosen by its owner when it passed it.
        callback: u64,
        /// The callback's method.
        method: Cow<'a, str>,
        /// The arguments, a JSON array.
        args: Raw<'a>,
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
    /// Subscribe to a topic; answered with a result (`null`) or an error (refused).
    Subscribe {
        /// The request's id.
        id: u64,
        /// The topic.
        topic: Cow<'a, str>,
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
        data: Raw<'a>,
    },
    /// An event of a topic the receiver subscribed to.
    Event {
        /// The topic.
        topic: Cow<'a, str>,
        /// The event's value.
        data: Raw<'a>,
    },
}

impl Msg<'_> {
    /// The message's tag on the wire.
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
pub struct ErrorBody<'a> {
    /// The kind of failure.
    pub code: ErrorCode,
    /// For people: what went wrong.
    pub message: Cow<'a, str>,
    /// The service's own error value, for [`ErrorCode::Service`].
    pub data: Option<Raw<'a>>,
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
