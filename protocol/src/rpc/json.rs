//! `bidir.json.v1`: each WebSocket text message is one protocol message — a JSON array whose
//! first element is the message's tag — or a batch, a JSON array of such arrays.
//!
//! ```text
//! ["call", 7, "Chat.Join", ["ada", {"$cb": 1}]]
//! [["cb", 1, "Said", ["bob", "hi"]], ["cb", 1, "Said", ["eve", "yo"]]]
//! ```
//!
//! [`decode`] hands each message to a closure as it is read, borrowing strings and raw
//! arguments from the text (no allocation for a message without escapes); [`encode`] writes one.
//! What a receiver does with bad input (docs/rpc.md, "Bad input"):
//!
//! - text that is not JSON: [`FrameError`], close with 1007;
//! - a batch over [`MAX_BATCH`] messages: [`FrameError`], close with 1009;
//! - a message of the wrong shape (unknown tag, a field missing or of the wrong type): a
//!   [`MsgError`]; if it is a request whose id can be read ([`MsgError::id`]), answer it with
//!   [`ErrorCode::BadRequest`] and go on, else close with 1008.
//!   The other messages of a batch are read either way.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde_json::error::Category;

use super::{
    BATCH_TOO_LARGE, ErrorBody, ErrorCode, FieldWriter, MAX_BATCH, MAX_ID, Msg, Position, Raw,
    RawValue, short,
};
pub use super::{FrameError, MsgError};

/// Reads one WebSocket text message: hands `each` every protocol message in it, in order (one,
/// or each of a batch), or the error of one that could not be read. Strings and raw values
/// borrow from `text`.
///
/// # Errors
///
/// [`FrameError`] when `text` is not JSON or carries a batch over [`MAX_BATCH`]; messages read
/// before the error have been handed to `each`.
pub fn decode<'a>(
    text: &'a str,
    mut each: impl FnMut(Result<Msg<'a>, MsgError>),
) -> Result<(), FrameError> {
    let mut bytes = text.bytes().filter(|b| !b.is_ascii_whitespace());
    if bytes.next() == Some(b'[') && bytes.next() == Some(b'[') {
        let mut de = serde_json::Deserializer::from_str(text);
        let read = de.deserialize_seq(BatchVisitor { each: &mut each, count: 0 });
        return read.and_then(|()| de.end()).map_err(|e| frame_error(&e));
    }
    match one(text) {
        Ok(msg) => each(Ok(msg)),
        Err(e) if matches!(e.classify(), Category::Syntax | Category::Eof | Category::Io) => {
            return Err(syntax(&e));
        }
        Err(e) => each(Err(message_error(text, &e)?)),
    }
    Ok(())
}

/// Why `text` is not a message: a [`MsgError`], or a [`FrameError`] when it is not even JSON
/// (the decoder reports a type error at the first byte before it sees the syntax: `{`).
fn message_error(text: &str, e: &serde_json::Error) -> Result<MsgError, FrameError> {
    if let Err(e) = serde_json::from_str::<IgnoredAny>(text) {
        return Err(syntax(&e));
    }
    Ok(MsgError { id: request_id(text), reason: short(e.to_string()) })
}

/// Writes `msg` in `bidir.json.v1` to `out`.
pub fn encode(msg: &Msg<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"[\"");
    out.extend_from_slice(msg.tag().as_bytes());
    out.push(b'"');
    msg.write_fields(&mut Writer(out));
    out.push(b']');
}

/// Writes `msgs` as one WebSocket message: a batch, or the message itself when there is one.
pub fn encode_batch(msgs: &[Msg<'_>], out: &mut Vec<u8>) {
    let mut batch = Batch::default();
    for msg in msgs {
        encode(msg, batch.next_message());
    }
    if let Some(text) = batch.text() {
        out.extend_from_slice(text.as_bytes());
    }
}

/// Messages gathered for one WebSocket message, encoded as they come: sent alone when there is
/// one, as a batch when there are several. Reusable: [`Batch::clear`] keeps the buffer.
#[derive(Debug, Default)]
pub struct Batch {
    out: Vec<u8>,
    count: usize,
    /// The batch's closing bracket is written ([`Batch::text`]).
    closed: bool,
}

impl Batch {
    /// The buffer to write the next message into, with [`encode`].
    pub fn next_message(&mut self) -> &mut Vec<u8> {
        if self.closed {
            self.out.pop();
            self.closed = false;
        }
        self.out.push(if self.count == 0 { b'[' } else { b',' });
        self.count += 1;
        &mut self.out
    }

    /// How many messages it holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The bytes encoded so far (about the length of [`Batch::text`]).
    pub fn bytes(&self) -> usize {
        self.out.len()
    }

    /// The WebSocket message's text so far (`None` when empty).
    pub fn text(&mut self) -> Option<&str> {
        let text = match self.count {
            0 => return None,
            1 => &self.out[1..],
            _ => {
                if !self.closed {
                    self.out.push(b']');
                    self.closed = true;
                }
                &self.out[..]
            }
        };
        // Only the encoder writes here, and it writes UTF-8.
        std::str::from_utf8(text).ok()
    }

    /// Empties it, keeping its buffer.
    pub fn clear(&mut self) {
        self.out.clear();
        self.count = 0;
        self.closed = false;
    }
}

/// A message's fields in JSON, each after a comma.
struct Writer<'o>(&'o mut Vec<u8>);

impl FieldWriter<Raw<'_>> for Writer<'_> {
    fn id(&mut self, n: u64) {
        let _ = write!(self.0, ",{n}");
    }

    fn text(&mut self, s: &str) {
        self.0.push(b',');
        // Writing a string into a vector cannot fail.
        let _ = serde_json::to_writer(&mut *self.0, s);
    }

    fn blob(&mut self, value: &Raw<'_>) {
        self.0.push(b',');
        self.0.extend_from_slice(value.get().as_bytes());
    }
}

fn one(text: &str) -> Result<Msg<'_>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let msg = Msg::deserialize(&mut de)?;
    de.end()?;
    Ok(msg)
}

fn frame_error(e: &serde_json::Error) -> FrameError {
    if e.classify() == Category::Data && e.to_string().starts_with(BATCH_TOO_LARGE) {
        FrameError::batch_too_large()
    } else {
        syntax(e)
    }
}

fn syntax(e: &serde_json::Error) -> FrameError {
    FrameError::invalid(format!("invalid JSON: {e}"))
}

/// The id of the request `text` was meant to be, if its tag and id can be read even though the
/// rest could not: the second look taken only after a message failed to decode.
fn request_id(text: &str) -> Option<u64> {
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_seq(IdVisitor).ok().flatten()
}

/// Reads the elements of a batch, decoding each on its own so one bad message spoils only
/// itself.
struct BatchVisitor<'f, F> {
    each: &'f mut F,
    count: usize,
}

impl<'de, F: FnMut(Result<Msg<'de>, MsgError>)> Visitor<'de> for BatchVisitor<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a batch of messages")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(element) = seq.next_element::<&'de RawValue>()? {
            self.count += 1;
            if self.count > MAX_BATCH {
                return Err(de::Error::custom(BATCH_TOO_LARGE));
            }
            let text = element.get();
            let msg = if text.trim_start().starts_with("[[") {
                Err(MsgError { id: None, reason: "a batch inside a batch".to_owned() })
            } else {
                one(text)
                    .map_err(|e| MsgError { id: request_id(text), reason: short(e.to_string()) })
            };
            (self.each)(msg);
        }
        Ok(())
    }
}

/// A string, borrowed from the text when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

impl<'de> Deserialize<'de> for Msg<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(MsgVisitor)
    }
}

struct MsgVisitor;

impl<'de> Visitor<'de> for MsgVisitor {
    type Value = Msg<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message: an array starting with its tag")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Msg<'de>, A::Error> {
        let Text(tag) = field(&mut seq, "tag")?;
        let msg = match &*tag {
            "call" => Msg::Call {
                id: id(&mut seq, "id")?,
                method: text(&mut seq, "method")?,
                args: args(&mut seq)?,
            },
            "note" => Msg::Notify { method: text(&mut seq, "method")?, args: args(&mut seq)? },
            "ok" => Msg::Result { id: id(&mut seq, "id")?, value: value(&mut seq, "value")? },
            "err" => {
                let id = id(&mut seq, "id")?;
                let code = ErrorCode::from_wire(&text(&mut seq, "error code")?);
                let message = text(&mut seq, "error message")?;
                let data = seq.next_element::<&'de RawValue>()?.map(Raw);
                Msg::Error { id, error: ErrorBody { code, message, data } }
            }
            "cb" => Msg::Invoke {
                callback: id(&mut seq, "callback id")?,
                method: text(&mut seq, "method")?,
                args: args(&mut seq)?,
                id: seq.next_element::<u64>()?.map(checked::<A::Error>).transpose()?,
            },
            "release" => Msg::Release { callback: id(&mut seq, "callback id")? },
            "cancel" => Msg::Cancel { id: id(&mut seq, "id")? },
            "sub" => Msg::Subscribe {
                id: id(&mut seq, "id")?,
                topic: text(&mut seq, "topic")?,
                since: position(&mut seq)?,
            },
            "unsub" => {
                Msg::Unsubscribe { id: id(&mut seq, "id")?, topic: text(&mut seq, "topic")? }
            }
            "pub" => {
                Msg::Publish { topic: text(&mut seq, "topic")?, data: value(&mut seq, "data")? }
            }
            "event" => Msg::Event {
                topic: text(&mut seq, "topic")?,
                data: value(&mut seq, "data")?,
                at: position(&mut seq)?,
            },
            other => {
                return Err(de::Error::custom(format_args!("unknown message type {other:?}")));
            }
        };
        // Later versions may append fields: ignored.
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(msg)
    }
}

fn field<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(
    seq: &mut A,
    what: &'static str,
) -> Result<T, A::Error> {
    seq.next_element()?.ok_or_else(|| de::Error::custom(format_args!("missing {what}")))
}

fn text<'de, A: SeqAccess<'de>>(
    seq: &mut A,
    what: &'static str,
) -> Result<Cow<'de, str>, A::Error> {
    field::<Text<'de>, A>(seq, what).map(|Text(s)| s)
}

/// An optional offset and its epoch, after a message's other fields.
fn position<'de, A: SeqAccess<'de>>(seq: &mut A) -> Result<Option<Position<'de>>, A::Error> {
    let Some(offset) = seq.next_element::<u64>()? else { return Ok(None) };
    let offset = checked::<A::Error>(offset)?;
    Ok(Some(Position { offset, epoch: text(seq, "epoch")? }))
}

fn id<'de, A: SeqAccess<'de>>(seq: &mut A, what: &'static str) -> Result<u64, A::Error> {
    checked(field(seq, what)?)
}

fn checked<E: de::Error>(id: u64) -> Result<u64, E> {
    if id > MAX_ID { Err(E::custom("id over 2^53 - 1")) } else { Ok(id) }
}

fn value<'de, A: SeqAccess<'de>>(seq: &mut A, what: &'static str) -> Result<Raw<'de>, A::Error> {
    field::<&'de RawValue, A>(seq, what).map(Raw)
}

fn args<'de, A: SeqAccess<'de>>(seq: &mut A) -> Result<Raw<'de>, A::Error> {
    let args = value(seq, "args")?;
    if args.get().starts_with('[') {
        Ok(args)
    } else {
        Err(de::Error::custom("args must be an array"))
    }
}

/// Reads only a request's tag and id, whatever the other fields hold.
struct IdVisitor;

impl<'de> Visitor<'de> for IdVisitor {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<u64>, A::Error> {
        let Some(Text(tag)) = seq.next_element::<Text<'de>>()? else { return Ok(None) };
        // Where the request's id is: second for calls and subscriptions, fifth for invocations.
        let skip = match &*tag {
            "call" | "sub" | "unsub" => 0,
            "cb" => 3,
            _ => return Ok(None),
        };
        for _ in 0..skip {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(None);
            }
        }
        let id = seq.next_element::<u64>().ok().flatten().filter(|&id| id <= MAX_ID);
        while let Ok(Some(_)) = seq.next_element::<IgnoredAny>() {}
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CloseCode;

    fn decode_all(text: &str) -> Result<Vec<Result<Msg<'_>, MsgError>>, FrameError> {
        let mut all = Vec::new();
        decode(text, |m| all.push(m))?;
        Ok(all)
    }

    fn raw(text: &str) -> Raw<'_> {
        Raw(serde_json::from_str(text).unwrap())
    }

    fn round_trip(msg: &Msg<'_>) {
        let mut out = Vec::new();
        encode(msg, &mut out);
        let text = String::from_utf8(out).unwrap();
        let back = decode_all(&text).unwrap();
        assert_eq!(back, [Ok(msg.clone())], "{text}");
    }

    #[test]
    fn every_message_round_trips() {
        let args = raw(r#"["ada",{"$cb":1}]"#);
        let error = ErrorBody {
            code: ErrorCode::Service,
            message: "full \"room\"".into(),
            data: Some(raw(r#"{"max":8}"#)),
        };
        for msg in [
            Msg::Call { id: 7, method: "Chat.Join".into(), args },
            Msg::Notify { method: "Chat.Ping".into(), args: raw("[]") },
            Msg::Result { id: 7, value: raw("null") },
            Msg::Error { id: 7, error },
            Msg::Error {
                id: 8,
                error: ErrorBody { code: ErrorCode::Timeout, message: "".into(), data: None },
            },
            Msg::Invoke { callback: 1, method: "Said".into(), args, id: None },
            Msg::Invoke { callback: 1, method: "Ask".into(), args, id: Some(MAX_ID) },
            Msg::Release { callback: 1 },
            Msg::Cancel { id: 9 },
            Msg::Subscribe { id: 10, topic: "room/1".into(), since: None },
            Msg::Subscribe {
                id: 11,
                topic: "room/1".into(),
                since: Some(Position { offset: MAX_ID, epoch: "e1".into() }),
            },
            Msg::Unsubscribe { id: 11, topic: "room/1".into() },
            Msg::Publish { topic: "room/1".into(), data: raw(r#"{"text":"hi"}"#) },
            Msg::Event { topic: "room/1".into(), data: raw("42"), at: None },
            Msg::Event {
                topic: "room/1".into(),
                data: raw("42"),
                at: Some(Position { offset: 1, epoch: "e1".into() }),
            },
        ] {
            round_trip(&msg);
        }
    }

    #[test]
    fn strings_borrow_unless_escaped() {
        let all = decode_all(r#"["call",1,"A.b",[]]"#).unwrap();
        let Ok(Msg::Call { method, .. }) = &all[0] else { panic!("{all:?}") };
        assert!(matches!(method, Cow::Borrowed("A.b")));
        let all = decode_all(r#"["call",1,"A.\u0062",[]]"#).unwrap();
        let Ok(Msg::Call { method, .. }) = &all[0] else { panic!("{all:?}") };
        assert!(matches!(method, Cow::Owned(m) if m == "A.b"));
    }

    #[test]
    fn a_batch_is_read_message_by_message() {
        let text = r#" [ ["cb",1,"Said",["bob","hi"]], ["nope"], ["call","x","A.b",[]],
                        ["call",3,5,[]], ["release",1] ] "#;
        let all = decode_all(text).unwrap();
        assert_eq!(all.len(), 5);
        assert!(matches!(all[0], Ok(Msg::Invoke { callback: 1, id: None, .. })));
        assert!(
            matches!(&all[1], Err(MsgError { id: None, reason }) if reason.contains("unknown"))
        );
        assert!(matches!(all[2], Err(MsgError { id: None, .. })), "an id that is no number");
        assert!(matches!(all[3], Err(MsgError { id: Some(3), .. })), "a method that is no string");
        assert_eq!(all[4], Ok(Msg::Release { callback: 1 }));
        let mut out = Vec::new();
        encode_batch(&[Msg::Release { callback: 1 }, Msg::Cancel { id: 2 }], &mut out);
        assert_eq!(out, br#"[["release",1],["cancel",2]]"#);
        // A gathering read, added to, read again, and reused.
        let mut batch = Batch::default();
        assert_eq!(batch.text(), None);
        encode(&Msg::Release { callback: 1 }, batch.next_message());
        assert_eq!(batch.text(), Some(r#"["release",1]"#));
        encode(&Msg::Cancel { id: 2 }, batch.next_message());
        assert_eq!(batch.text(), Some(r#"[["release",1],["cancel",2]]"#));
        encode(&Msg::Cancel { id: 3 }, batch.next_message());
        assert_eq!(batch.text(), Some(r#"[["release",1],["cancel",2],["cancel",3]]"#));
        batch.clear();
        assert!(batch.is_empty() && batch.text().is_none());
    }

    #[test]
    fn bad_input_gets_its_documented_outcome() {
        // Not JSON: 1007, whether alone or in a batch.
        for text in ["", "[", "{", r#"["call",1,"A.b",[1,]]"#, r#"[["release",1],"#, "[1] x"] {
            let e = decode_all(text).unwrap_err();
            assert_eq!(e.close_code(), CloseCode::INVALID_PAYLOAD, "{text:?}: {e}");
            assert!(e.reason().len() <= 123);
        }
        // JSON, not a message: an error without an id (close 1008).
        for text in ["{}", "[]", "42", r#"["call"]"#, r#"[[["release",1]]]"#, r#"["release",-1]"#] {
            let all = decode_all(text).unwrap();
            assert!(matches!(all[..], [Err(MsgError { id: None, .. })]), "{text:?}: {all:?}");
        }
        // A request whose id can be read: answered with bad_request.
        for (text, want) in [
            (r#"["call",4,"A.b",{"x":1}]"#, 4),
            (r#"["call",5,"A.b"]"#, 5),
            (r#"["sub",6,7]"#, 6),
            (r#"["cb",1,"m","not args",9]"#, 9),
        ] {
            let all = decode_all(text).unwrap();
            assert!(
                matches!(all[..], [Err(MsgError { id: Some(id), .. })] if id == want),
                "{text}"
            );
        }
        // Ids past what JavaScript holds exactly.
        let all = decode_all(r#"["cancel",9007199254740992]"#).unwrap();
        assert!(matches!(&all[..], [Err(e)] if e.reason.contains("2^53")));
        // A batch over the limit: 1009, after the messages before it.
        let text = format!("[{}]", vec![r#"["cancel",1]"#; MAX_BATCH + 1].join(","));
        let mut read = 0;
        let e = decode(&text, |_| read += 1).unwrap_err();
        assert_eq!((e.close_code(), read), (CloseCode::MESSAGE_TOO_BIG, MAX_BATCH));
    }

    #[test]
    fn unknown_error_codes_and_trailing_fields_are_tolerated() {
        let all = decode_all(r#"["err",1,"quota","over quota",null,"later"]"#).unwrap();
        let Ok(Msg::Error { error, .. }) = &all[0] else { panic!("{all:?}") };
        assert_eq!(error.code, ErrorCode::Unknown);
        for (code, wire) in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_wire(wire), code);
            assert_eq!(code.as_str(), wire);
        }
    }

    /// docs/rpc.md is the wire specification: each of its `json` examples decodes without an
    /// error and encodes back to the same JSON (whitespace aside).
    #[test]
    fn the_specification_examples_round_trip() {
        let spec = include_str!("../../../docs/rpc.md");
        let mut examples = 0;
        for block in spec.split("```json\n").skip(1) {
            let text = block.split("```").next().unwrap().trim();
            let mut msgs = Vec::new();
            decode(text, |m| msgs.push(m.unwrap_or_else(|e| panic!("{text}: {e}")))).unwrap();
            let mut out = Vec::new();
            encode_batch(&msgs, &mut out);
            // Raw values keep their own spacing: compare without whitespace outside strings.
            let compact = |text: &str| -> String {
                let parts = text.split('"').enumerate().map(|(i, part)| match i % 2 {
                    0 => part.split_whitespace().collect::<String>(),
                    _ => part.to_owned(),
                });
                parts.collect::<Vec<_>>().join("\"")
            };
            assert_eq!(compact(std::str::from_utf8(&out).unwrap()), compact(text));
            examples += 1;
        }
        assert!(examples >= 18, "{examples} examples");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = decode(&text, |_| {});
        }

        #[test]
        fn arbitrary_messages_round_trip(
            id in 0..=MAX_ID,
            method in "[A-Za-z.\"\\\\\u{e9}]{0,20}",
            n in proptest::collection::vec(-1000i64..1000, 0..5),
        ) {
            let args = serde_json::to_string(&n).unwrap();
            let args = raw(&args);
            round_trip(&Msg::Call { id, method: method.clone().into(), args });
            round_trip(&Msg::Invoke { callback: id, method: method.into(), args, id: Some(id) });
        }
    }
}
