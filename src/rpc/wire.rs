//! The two encodings of the application protocol as the runtime carries them: which one a
//! connection speaks ([`Wire`]), and a value in it — owned ([`Value`]: an answer, a call's
//! arguments kept for a replay) or borrowed from a received message ([`ValueRef`]). Methods,
//! callbacks and subscribers decode these with their own serde types, whichever the encoding.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use bidir_protocol::rpc::bin::{self, BIN_PROTOCOL, RawPack};
use bidir_protocol::rpc::envelope::{self, Inbound};
use bidir_protocol::rpc::seal::{Opener, Sealer};
use bidir_protocol::rpc::{JSON_PROTOCOL, Msg, MsgError, Raw, json};
use bidir_protocol::{CloseCode, Message};

use super::gather::Gathering;
use crate::Context;

/// The encoding a connection speaks, negotiated as its subprotocol: `bidir.json.v1` (text
/// messages) or `bidir.bin.v1` (MessagePack in binary messages; docs/rpc.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Wire {
    /// `bidir.json.v1`.
    #[default]
    Json,
    /// `bidir.bin.v1`.
    Bin,
}

impl Wire {
    /// Both encodings, JSON first.
    pub const ALL: [Self; 2] = [Self::Json, Self::Bin];

    /// The subprotocol's name.
    pub fn protocol(self) -> &'static str {
        match self {
            Self::Json => JSON_PROTOCOL,
            Self::Bin => BIN_PROTOCOL,
        }
    }

    /// The encoding a subprotocol names, if it is one of these.
    pub fn from_protocol(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.protocol() == name)
    }

    /// `value` written in this encoding (structs as maps keyed by field name in MessagePack,
    /// as JSON has them).
    ///
    /// # Errors
    ///
    /// What serde reports for a value it cannot write (a JSON map with keys that are not
    /// strings).
    pub fn value<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, CodecError> {
        match self {
            Self::Json => serde_json::value::to_raw_value(value)
                .map(Value::Json)
                .map_err(|e| CodecError(e.to_string())),
            Self::Bin => {
                let mut out = Vec::new();
                RawPack::encode(value, &mut out).map_err(|e| CodecError(e.to_string()))?;
                Ok(Value::Pack(out.into_boxed_slice()))
            }
        }
    }

    /// A call's or an invocation's arguments as the array the wire wants: `args` a tuple of
    /// them, `()` (which serde writes as null) for none.
    ///
    /// # Errors
    ///
    /// Why serde cannot write them, or that they are not a tuple (an array).
    pub(crate) fn args<A: Serialize + ?Sized>(self, args: &A) -> Result<Value, CodecError> {
        let value = self.value(args)?;
        match value.as_ref() {
            v if v == ValueRef::null(self) => match self {
                Self::Json => RawValue::from_string("[]".to_owned())
                    .map(Value::Json)
                    .map_err(|e| CodecError(e.to_string())),
                Self::Bin => Ok(Value::Pack(Box::new([0x90]))),
            },
            v if v.is_array() => Ok(value),
            _ => Err(CodecError("the arguments must be a tuple (an array)".to_owned())),
        }
    }

    /// Writes `msg` in this encoding. Its blobs are in this encoding by construction (a blob
    /// of the other one, a bug, is written as null).
    pub(crate) fn encode(self, msg: Msg<'_, ValueRef<'_>>, out: &mut Vec<u8>) {
        match self {
            Self::Json => json::encode(&msg.map_blobs(ValueRef::json), out),
            Self::Bin => bin::encode(&msg.map_blobs(ValueRef::pack), out),
        }
    }

    /// Reads one received WebSocket message of this encoding (after the envelope, for
    /// `bidir.bin.v1`): each protocol message it carries goes to `each`.
    ///
    /// # Errors
    ///
    /// The message cannot be read at all: close with the error's code. A text message on
    /// `bidir.bin.v1`, or a binary one on `bidir.json.v1`, is refused with 1003.
    pub(crate) fn decode<'a>(
        self,
        msg: Message<'a>,
        mut each: impl FnMut(Result<Msg<'a, ValueRef<'a>>, MsgError>),
    ) -> Result<(), (CloseCode, String)> {
        let read = match (self, msg) {
            (Self::Json, Message::Text(text)) => {
                json::decode(text, |m| each(m.map(|m| m.map_blobs(ValueRef::Json))))
            }
            (Self::Bin, Message::Binary(bytes)) => {
                bin::decode(bytes, |m| each(m.map(|m| m.map_blobs(ValueRef::Pack))))
            }
            (Self::Json, _) => return Err(unsupported("bidir.json.v1 is text")),
            (Self::Bin, _) => return Err(unsupported("bidir.bin.v1 is binary")),
        };
        read.map_err(|e| (e.close_code(), e.reason().to_owned()))
    }
}

fn unsupported(reason: &str) -> (CloseCode, String) {
    (CloseCode::UNSUPPORTED_DATA, reason.to_owned())
}

/// A value that could not be written in an encoding, or read as the type asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecError(pub(crate) String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

/// A value in one of the encodings, owned: what a method or a callback answers, a call's
/// arguments. Made by [`Wire::value`]; decoded with [`Value::decode`].
#[derive(Clone)]
pub enum Value {
    /// JSON text.
    Json(Box<RawValue>),
    /// MessagePack bytes: exactly one value.
    Pack(Box<[u8]>),
}

impl Value {
    /// Borrows it.
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Self::Json(v) => ValueRef::Json(Raw::new(v)),
            // One well-formed value by construction (written by serde).
            Self::Pack(v) => RawPack::new(v).map_or(ValueRef::Pack(RawPack::NIL), ValueRef::Pack),
        }
    }

    /// Decodes it into `T`.
    ///
    /// # Errors
    ///
    /// When the value does not fit `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, CodecError> {
        self.as_ref().decode()
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_ref().fmt(f)
    }
}

/// A value in one of the encodings, borrowed from a received message (arguments, a result,
/// event or error data), decoded by its receiver with its own types.
#[derive(Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    /// JSON text.
    Json(Raw<'a>),
    /// MessagePack bytes.
    Pack(RawPack<'a>),
}

impl ValueRef<'static> {
    /// Null (nil) in `wire`.
    pub fn null(wire: Wire) -> Self {
        match wire {
            Wire::Json => Self::Json(Raw::NULL),
            Wire::Bin => Self::Pack(RawPack::NIL),
        }
    }
}

impl<'a> ValueRef<'a> {
    /// The encoding it is in.
    pub fn wire(&self) -> Wire {
        match self {
            Self::Json(_) => Wire::Json,
            Self::Pack(_) => Wire::Bin,
        }
    }

    /// Decodes it into `T`, borrowing from the message where `T` borrows.
    ///
    /// # Errors
    ///
    /// When the value does not fit `T`.
    pub fn decode<T: Deserialize<'a>>(&self) -> Result<T, CodecError> {
        match self {
            Self::Json(v) => v.decode().map_err(|e| CodecError(e.to_string())),
            Self::Pack(v) => v.decode().map_err(|e| CodecError(e.to_string())),
        }
    }

    /// Its bytes, and whether they are JSON (else MessagePack): how it is kept (topic
    /// history) and carried (to other nodes) outside the rpc layer.
    pub(crate) fn raw(&self) -> (bool, &'a [u8]) {
        match self {
            Self::Json(v) => (true, v.get().as_bytes()),
            Self::Pack(v) => (false, v.bytes()),
        }
    }

    /// [`ValueRef::raw`]'s inverse: `None` unless `bytes` are exactly one well-formed value.
    pub(crate) fn from_raw(json: bool, bytes: &'a [u8]) -> Option<Self> {
        if json {
            serde_json::from_slice::<&RawValue>(bytes).ok().map(|v| Self::Json(Raw::new(v)))
        } else {
            RawPack::new(bytes).map(Self::Pack)
        }
    }

    /// Copies it.
    pub fn to_owned(&self) -> Value {
        match self {
            Self::Json(v) => Value::Json(v.value().to_owned()),
            Self::Pack(v) => Value::Pack(v.bytes().into()),
        }
    }

    /// The value as JSON text: itself, or MessagePack translated (error data, which
    /// [`CallError::Remote`](super::CallError::Remote) carries as JSON whatever the wire).
    pub fn to_json(&self) -> String {
        match self {
            Self::Json(v) => v.get().to_owned(),
            Self::Pack(v) => v
                .decode::<serde_json::Value>()
                .unwrap_or_else(|e| serde_json::Value::String(e.to_string()))
                .to_string(),
        }
    }

    /// A call's arguments as the method's parameter tuple `A`; no arguments is `()` (serde
    /// reads `()` from null, not from an empty array).
    pub(crate) fn decode_args<A: DeserializeOwned>(&self) -> Result<A, CodecError> {
        let empty = match self {
            Self::Json(v) => {
                let text = v.get();
                text.len() >= 2 && text[1..text.len() - 1].trim().is_empty()
            }
            Self::Pack(v) => v.bytes() == [0x90],
        };
        if !empty {
            return self.decode();
        }
        ValueRef::null(self.wire()).decode()
    }

    fn is_array(&self) -> bool {
        match self {
            Self::Json(v) => v.get().starts_with('['),
            Self::Pack(v) => v.is_array(),
        }
    }

    fn json(self) -> Raw<'a> {
        match self {
            Self::Json(v) => v,
            Self::Pack(_) => Raw::NULL,
        }
    }

    fn pack(self) -> RawPack<'a> {
        match self {
            Self::Pack(v) => v,
            Self::Json(_) => RawPack::NIL,
        }
    }
}

/// The value as JSON text ([`ValueRef::to_json`]).
impl fmt::Display for ValueRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Json(v) => f.write_str(v.get()),
            Self::Pack(_) => f.write_str(&self.to_json()),
        }
    }
}

impl fmt::Debug for ValueRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Json(v) => v.fmt(f),
            Self::Pack(v) => v.fmt(f),
        }
    }
}

/// How a connection's gathered messages go out: `bidir.json.v1` text as it is,
/// `bidir.bin.v1` in its envelope — compressed above a size, sealed with the connection's key.
#[derive(Debug)]
pub(crate) struct Egress {
    wire: Wire,
    /// Compress messages longer than this many bytes; `None`: never.
    compress_above: Option<usize>,
    /// The key of the direction this side sends, on an encrypted connection.
    sealer: Option<Sealer>,
    /// The binary message being enveloped, and the compressor's buffer.
    msg: Vec<u8>,
    scratch: Vec<u8>,
}

impl Egress {
    pub(crate) fn new(wire: Wire, compress_above: Option<usize>, sealer: Option<Sealer>) -> Self {
        Self { wire, compress_above, sealer, msg: Vec::new(), scratch: Vec::new() }
    }

    pub(crate) fn wire(&self) -> Wire {
        self.wire
    }

    pub(crate) fn is_encrypted(&self) -> bool {
        self.sealer.is_some()
    }

    /// Sends everything `gathering` holds on `cx`, one WebSocket message per batch, and
    /// empties it. Sends are refused only past the backpressure limit (counted) or once
    /// closing.
    pub(crate) fn flush(&mut self, cx: &mut Context<'_>, gathering: &mut Gathering) {
        gathering.flush(|msg| match msg {
            Message::Text(text) => {
                let _ = cx.send_text(text);
            }
            Message::Binary(bytes) => {
                self.msg.clear();
                self.msg.push(0);
                self.msg.extend_from_slice(bytes);
                envelope::pack(&mut self.msg, self.compress_above, &mut self.scratch);
                self.send_packed(cx);
            }
        });
    }

    /// Sends an event packed once for every subscriber ([`Event`]): sealed with this
    /// connection's key on its own copy.
    pub(crate) fn send_event(&mut self, cx: &mut Context<'_>, packed: &[u8]) {
        self.msg.clear();
        self.msg.extend_from_slice(packed);
        self.send_packed(cx);
    }

    fn send_packed(&mut self, cx: &mut Context<'_>) {
        if let Some(sealer) = &mut self.sealer
            && envelope::seal(sealer, &mut self.msg).is_err()
        {
            // 2^64 - 1 messages under one key: never reused, the connection ends.
            let _ = cx.close(CloseCode::POLICY_VIOLATION, "the key is used up");
            return;
        }
        let _ = cx.send_binary(&self.msg);
    }
}

/// How a connection's received messages are read: its encoding, and for `bidir.bin.v1` the
/// envelope (decrypted in place, decompressed within the message limit).
#[derive(Debug, Default)]
pub(crate) struct Ingress {
    wire: Wire,
    /// `bidir.bin.v1`'s receiving side; `None` until the connection opens (its limit is the
    /// connection's).
    inbound: Option<Inbound>,
    opener: Option<Opener>,
    /// Where messages that fail authentication are counted.
    failures: Arc<AtomicU64>,
}

impl Ingress {
    pub(crate) fn new(wire: Wire, opener: Option<Opener>, failures: Arc<AtomicU64>) -> Self {
        Self { wire, inbound: None, opener, failures }
    }

    /// Takes the connection's message limit, once it is open.
    pub(crate) fn open(&mut self, cx: &Context<'_>) {
        if self.wire == Wire::Bin {
            self.inbound = Some(Inbound::new(self.opener.take(), cx.max_message_size()));
        }
    }

    /// Reads one received message — a binary one opened where it lies — and hands each
    /// protocol message it carries to `handle` until that answers `false` (it closed the
    /// connection); a message that cannot be read closes the connection with its code
    /// (docs/rpc.md): text on `bidir.bin.v1` or binary on `bidir.json.v1` with 1003.
    fn read(
        &mut self,
        cx: &mut Context<'_>,
        msg: Received<'_>,
        handle: impl FnMut(&mut Context<'_>, Result<Msg<'_, ValueRef<'_>>, MsgError>) -> bool,
    ) {
        let (payload, inbound) = match (msg, &mut self.inbound) {
            (Received::Binary(payload), Some(inbound)) => (payload, inbound),
            (msg, _) => return decode(self.wire, cx, msg.message(), handle),
        };
        let encrypted = inbound.is_encrypted();
        match inbound.open(payload) {
            Ok(body) => decode(Wire::Bin, cx, Message::Binary(body), handle),
            Err(e) => {
                if encrypted && e.close_code() == CloseCode::POLICY_VIOLATION {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                }
                let _ = cx.close(e.close_code(), e.reason());
            }
        }
    }
}

/// A received WebSocket message as a handler gets it: a binary one writable where it lies.
pub(crate) enum Received<'a> {
    Message(Message<'a>),
    Binary(&'a mut [u8]),
}

impl Received<'_> {
    fn message(&self) -> Message<'_> {
        match self {
            Self::Message(msg) => *msg,
            Self::Binary(payload) => Message::Binary(payload),
        }
    }
}

/// The handler of either side of an rpc connection, as it reads: what the server's and the
/// client's share.
pub(crate) trait Reader {
    fn ingress(&mut self) -> &mut Ingress;

    /// One protocol message, or why it cannot be read; `false` once the handler closed the
    /// connection.
    fn handle(
        &mut self,
        cx: &mut Context<'_>,
        msg: Result<Msg<'_, ValueRef<'_>>, MsgError>,
    ) -> bool;

    /// Sends what the messages read gathered.
    fn send_answers(&mut self, cx: &mut Context<'_>);

    /// Reads one received message, then sends the answers it gathered as one message.
    fn receive(&mut self, cx: &mut Context<'_>, msg: Received<'_>) {
        // Out while it reads: the messages it hands over may borrow from it.
        let mut ingress = std::mem::take(self.ingress());
        ingress.read(cx, msg, |cx, msg| self.handle(cx, msg));
        *self.ingress() = ingress;
        self.send_answers(cx);
    }
}

/// Hands each protocol message of `msg` to `handle` until it answers `false`; closes with
/// the code of a message that cannot be read.
fn decode(
    wire: Wire,
    cx: &mut Context<'_>,
    msg: Message<'_>,
    mut handle: impl FnMut(&mut Context<'_>, Result<Msg<'_, ValueRef<'_>>, MsgError>) -> bool,
) {
    let mut open = true;
    let read = wire.decode(msg, |msg| {
        if open {
            open = handle(cx, msg);
        }
    });
    if let Err((code, reason)) = read {
        let _ = cx.close(code, &reason);
    }
}

/// Any value, to translate one from an encoding to the other (a client's publish reaches the
/// subscribers of both).
pub(crate) type Any = serde_json::Value;

/// A message encoded once for every subscriber speaking its encoding: an event.
pub(crate) struct Event {
    wire: Wire,
    /// JSON text, or MessagePack packed in its envelope (compressed above
    /// [`envelope::COMPRESS_ABOVE`]), unsealed: an encrypted subscriber seals its own copy.
    bytes: Vec<u8>,
}

impl Event {
    pub(crate) fn encode(wire: Wire, msg: Msg<'_, ValueRef<'_>>) -> Self {
        let mut bytes = Vec::new();
        if wire == Wire::Bin {
            bytes.push(0);
        }
        wire.encode(msg, &mut bytes);
        if wire == Wire::Bin {
            envelope::pack(&mut bytes, Some(envelope::COMPRESS_ABOVE), &mut Vec::new());
        }
        Self { wire, bytes }
    }

    /// The WebSocket message.
    pub(crate) fn message(&self) -> Message<'_> {
        match self.wire {
            // The JSON codec writes UTF-8.
            Wire::Json => Message::Text(std::str::from_utf8(&self.bytes).unwrap_or_default()),
            Wire::Bin => Message::Binary(&self.bytes),
        }
    }
}
