//! `bidir.bin.v1`'s messages: each WebSocket binary message (once the envelope is taken off)
//! is one protocol message — a MessagePack array whose first element is the message's integer
//! tag — or a batch, a MessagePack array of such arrays. docs/rpc.md ("`bidir.bin.v1`
//! messages") has the table of tags and fields; they are those of `bidir.json.v1`
//! ([`super::json`]) in the same order.
//!
//! ```text
//! [0, 7, "Chat.Join", ["ada", {"$cb": 1}]]               call
//! [[4, 1, "Said", ["bob", "hi"]], [5, 1]]                a batch: an invocation, a release
//! ```
//!
//! [`decode`] hands each message to a closure as it is read, borrowing strings and raw
//! arguments ([`RawPack`]: the bytes of one MessagePack value, skipped over without decoding)
//! from the input, without allocating; [`encode`] writes one. A declared length is never
//! allocated for: it is checked against the bytes that are there first. Bad input gets the
//! outcomes of `bidir.json.v1` (docs/rpc.md, "Bad input"):
//!
//! - bytes that are not one MessagePack value (truncated, a reserved marker, bytes after the
//!   value): [`FrameError`], close with 1007;
//! - a batch declaring more than [`MAX_BATCH`] messages: [`FrameError`], close with 1009,
//!   before any of its messages is read (the count comes first in MessagePack);
//! - a message of the wrong shape (unknown tag, a field missing or of the wrong type, a string
//!   that is not UTF-8, an id over [`MAX_ID`], a batch inside a batch): a [`MsgError`], with
//!   the id of the request when it can be read ([`MsgError::id`]: answer
//!   [`ErrorCode::BadRequest`]), else close with 1008. The other messages of a batch are read
//!   either way.
//!
//! Integers are accepted in any MessagePack width (other encoders pick their own) and written
//! in the shortest; error codes travel as their JSON names.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Blob, ErrorBody, ErrorCode, FieldWriter, MAX_BATCH, MAX_ID, Msg, Position, short};
pub use super::{FrameError, MsgError};

/// The subprotocol name of the MessagePack encoding.
pub const BIN_PROTOCOL: &str = "bidir.bin.v1";

/// A message of `bidir.bin.v1`: its blobs are MessagePack.
pub type BinMsg<'a> = Msg<'a, RawPack<'a>>;

/// A MessagePack value kept as its bytes, borrowed from the received message: arguments,
/// results, event and error data. Always exactly one well-formed value (checked when made).
/// Two are equal when their bytes are.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RawPack<'a>(&'a [u8]);

impl RawPack<'static> {
    /// `nil`.
    pub const NIL: Self = Self(&[0xc0]);
}

impl<'a> RawPack<'a> {
    /// `bytes` as a blob when they are exactly one well-formed MessagePack value (its
    /// structure is checked, not its strings' UTF-8: the decoder of the value does that).
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        let mut reader = Reader::new(bytes);
        (reader.skip().is_ok() && reader.at_end()).then_some(Self(bytes))
    }

    /// The value's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.0
    }

    /// Whether the value is an array (arguments must be).
    pub fn is_array(&self) -> bool {
        matches!(self.0.first(), Some(0x90..=0x9f | 0xdc | 0xdd))
    }

    /// Decodes the value into `T` (the inherent form of [`Blob::decode`]). Structs are read
    /// from maps (what [`RawPack::encode`] writes) or from arrays.
    ///
    /// # Errors
    ///
    /// When the value does not fit `T`.
    pub fn decode<T: Deserialize<'a>>(&self) -> Result<T, rmp_serde::decode::Error> {
        rmp_serde::from_slice(self.0)
    }

    /// Appends `value` to `out` as one MessagePack value, structs as maps keyed by field name
    /// (as JSON has them, so the same `Deserialize` reads both encodings, `{"$cb": id}`
    /// included); [`RawPack::new`] then takes the bytes appended.
    ///
    /// # Errors
    ///
    /// When `value`'s `Serialize` fails; `out` may then hold part of it.
    pub fn encode<T: Serialize + ?Sized>(
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), rmp_serde::encode::Error> {
        value.serialize(&mut rmp_serde::Serializer::new(out).with_struct_map())
    }
}

impl<'a> Blob<'a> for RawPack<'a> {
    type Error = rmp_serde::decode::Error;

    fn decode<T: Deserialize<'a>>(&self) -> Result<T, rmp_serde::decode::Error> {
        RawPack::decode(self)
    }
}

impl fmt::Debug for RawPack<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawPack(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// The tags, in the order of docs/rpc.md's table.
const CALL: u64 = 0;
const NOTE: u64 = 1;
const OK: u64 = 2;
const ERR: u64 = 3;
const CB: u64 = 4;
const RELEASE: u64 = 5;
const CANCEL: u64 = 6;
const SUB: u64 = 7;
const UNSUB: u64 = 8;
const PUB: u64 = 9;
const EVENT: u64 = 10;

/// Reads one WebSocket binary message: hands `each` every protocol message in it, in order
/// (one, or each of a batch), or the error of one that could not be read. Strings and raw
/// values borrow from `bytes`.
///
/// # Errors
///
/// [`FrameError`] when `bytes` are not one MessagePack value (1007) or declare a batch over
/// [`MAX_BATCH`] (1009); messages read before the error have been handed to `each`.
pub fn decode<'a>(
    bytes: &'a [u8],
    mut each: impl FnMut(Result<BinMsg<'a>, MsgError>),
) -> Result<(), FrameError> {
    let mut reader = Reader::new(bytes);
    if let Some(count) = reader.batch() {
        if count > MAX_BATCH {
            return Err(FrameError::batch_too_large());
        }
        for _ in 0..count {
            let msg = element(&mut reader)?;
            each(msg);
        }
    } else {
        let msg = element(&mut reader)?;
        each(msg);
    }
    if reader.at_end() {
        Ok(())
    } else {
        Err(FrameError::invalid("bytes after the message".to_owned()))
    }
}

/// Writes `msg` in `bidir.bin.v1` to `out`.
pub fn encode(msg: &BinMsg<'_>, out: &mut Vec<u8>) {
    let (tag, fields) = shape(msg);
    array(out, fields + 1);
    uint(out, tag);
    msg.write_fields(&mut Writer(out));
}

/// Writes `msgs` as one WebSocket message: a batch, or the message itself when there is one.
pub fn encode_batch(msgs: &[BinMsg<'_>], out: &mut Vec<u8>) {
    let mut batch = Batch::default();
    for msg in msgs {
        encode(msg, batch.next_message());
    }
    if let Some(bytes) = batch.bytes_out() {
        out.extend_from_slice(bytes);
    }
}

/// A message's tag and the number of fields after it.
fn shape(msg: &BinMsg<'_>) -> (u64, u32) {
    match msg {
        Msg::Call { .. } => (CALL, 3),
        Msg::Notify { .. } => (NOTE, 2),
        Msg::Result { .. } => (OK, 2),
        Msg::Error { error, .. } => (ERR, 3 + u32::from(error.data.is_some())),
        Msg::Invoke { id, .. } => (CB, 3 + u32::from(id.is_some())),
        Msg::Release { .. } => (RELEASE, 1),
        Msg::Cancel { .. } => (CANCEL, 1),
        Msg::Subscribe { since, .. } => (SUB, 2 + 2 * u32::from(since.is_some())),
        Msg::Unsubscribe { .. } => (UNSUB, 2),
        Msg::Publish { .. } => (PUB, 2),
        Msg::Event { at, .. } => (EVENT, 2 + 2 * u32::from(at.is_some())),
    }
}

/// Messages gathered for one WebSocket message, encoded as they come: sent alone when there is
/// one, as a batch when there are several. MessagePack puts an array's length first, so the
/// buffer starts with room for the longest header and [`Batch::bytes_out`] writes the shortest
/// that fits in front of the messages. Reusable: [`Batch::clear`] keeps the buffer. Cutting
/// gatherings at [`MAX_BATCH`] messages is the caller's business (a receiver refuses more).
#[derive(Debug, Default)]
pub struct Batch {
    out: Vec<u8>,
    count: usize,
}

/// Room for an array32 header: marker and 4 bytes of length.
const HEADER: usize = 5;

impl Batch {
    /// The buffer to write the next message into, with [`encode`].
    pub fn next_message(&mut self) -> &mut Vec<u8> {
        if self.out.is_empty() {
            self.out.resize(HEADER, 0);
        }
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

    /// The bytes encoded so far (at most the length of [`Batch::bytes_out`] plus 4).
    pub fn bytes(&self) -> usize {
        self.out.len()
    }

    /// The WebSocket message so far (`None` when empty): the message alone, or the batch.
    pub fn bytes_out(&mut self) -> Option<&[u8]> {
        let mut header = Vec::with_capacity(HEADER);
        match self.count {
            0 => return None,
            1 => {}
            n => array(&mut header, u32::try_from(n).unwrap_or(u32::MAX)),
        }
        let start = HEADER - header.len();
        self.out[start..HEADER].copy_from_slice(&header);
        Some(&self.out[start..])
    }

    /// Empties it, keeping its buffer.
    pub fn clear(&mut self) {
        self.out.clear();
        self.count = 0;
    }
}

fn array(out: &mut Vec<u8>, len: u32) {
    // Writing into a vector cannot fail.
    let _ = rmp::encode::write_array_len(out, len);
}

fn uint(out: &mut Vec<u8>, n: u64) {
    let _ = rmp::encode::write_uint(out, n);
}

fn string(out: &mut Vec<u8>, s: &str) {
    let _ = rmp::encode::write_str(out, s);
}

/// A message's fields in MessagePack.
struct Writer<'o>(&'o mut Vec<u8>);

impl<'a> FieldWriter<RawPack<'a>> for Writer<'_> {
    fn id(&mut self, n: u64) {
        uint(self.0, n);
    }

    fn text(&mut self, s: &str) {
        string(self.0, s);
    }

    fn blob(&mut self, value: &RawPack<'a>) {
        self.0.extend_from_slice(value.0);
    }
}

/// Reads the message at `reader` (the whole input, or one element of a batch) and leaves the
/// reader after it. A message of the wrong shape is skipped over to find where it ends: when
/// even that fails, the input is not MessagePack.
fn element<'a>(reader: &mut Reader<'a>) -> Result<Result<BinMsg<'a>, MsgError>, FrameError> {
    let start = reader.at;
    let reason = match message(reader) {
        Ok(msg) => return Ok(Ok(msg)),
        Err(reason) => reason,
    };
    reader.at = start;
    reader.skip().map_err(|e| FrameError::invalid(format!("invalid MessagePack: {e}")))?;
    let id = request_id(&reader.bytes[start..reader.at]);
    Ok(Err(MsgError { id, reason: short(reason.to_string()) }))
}

/// Why a message is not one, or why the bytes are not MessagePack (told apart afterwards).
type Bad = Cow<'static, str>;

fn message<'a>(reader: &mut Reader<'a>) -> Result<BinMsg<'a>, Bad> {
    let Some(len) = reader.array_len() else {
        return Err("not a message: an array starting with its tag".into());
    };
    // Only inside a batch: at the top, an array that starts with an array is the batch.
    if len > 0 && reader.peek_array() {
        return Err("a batch inside a batch".into());
    }
    let mut fields = Fields { reader, left: len };
    let msg = match fields.uint("tag")? {
        CALL => {
            Msg::Call { id: fields.id("id")?, method: fields.text("method")?, args: fields.args()? }
        }
        NOTE => Msg::Notify { method: fields.text("method")?, args: fields.args()? },
        OK => Msg::Result { id: fields.id("id")?, value: fields.value("value")? },
        ERR => {
            let id = fields.id("id")?;
            let code = ErrorCode::from_wire(&fields.text("error code")?);
            let message = fields.text("error message")?;
            let data = fields.optional(|f| f.value("data"))?;
            Msg::Error { id, error: ErrorBody { code, message, data } }
        }
        CB => Msg::Invoke {
            callback: fields.id("callback id")?,
            method: fields.text("method")?,
            args: fields.args()?,
            id: fields.optional(|f| f.id("id"))?,
        },
        RELEASE => Msg::Release { callback: fields.id("callback id")? },
        CANCEL => Msg::Cancel { id: fields.id("id")? },
        SUB => Msg::Subscribe {
            id: fields.id("id")?,
            topic: fields.text("topic")?,
            since: fields.optional(Fields::position)?,
        },
        UNSUB => Msg::Unsubscribe { id: fields.id("id")?, topic: fields.text("topic")? },
        PUB => Msg::Publish { topic: fields.text("topic")?, data: fields.value("data")? },
        EVENT => Msg::Event {
            topic: fields.text("topic")?,
            data: fields.value("data")?,
            at: fields.optional(Fields::position)?,
        },
        other => return Err(format!("unknown message type {other}").into()),
    };
    // Later versions may append fields: ignored.
    for _ in 0..fields.left {
        fields.reader.skip()?;
    }
    Ok(msg)
}

/// The fields of one message, read in order.
struct Fields<'r, 'a> {
    reader: &'r mut Reader<'a>,
    /// Elements of the message's array not read yet.
    left: u32,
}

impl<'a> Fields<'_, 'a> {
    fn next(&mut self, what: &'static str) -> Result<&mut Reader<'a>, Bad> {
        if self.left == 0 {
            return Err(format!("missing {what}").into());
        }
        self.left -= 1;
        Ok(self.reader)
    }

    /// An optional last field: `None` when the array has ended.
    fn optional<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, Bad>,
    ) -> Result<Option<T>, Bad> {
        if self.left == 0 { Ok(None) } else { read(self).map(Some) }
    }

    /// An offset and its epoch.
    fn position(&mut self) -> Result<Position<'a>, Bad> {
        Ok(Position { offset: self.id("offset")?, epoch: self.text("epoch")? })
    }

    fn uint(&mut self, what: &'static str) -> Result<u64, Bad> {
        self.next(what)?.uint().ok_or_else(|| format!("{what} must be an unsigned integer").into())
    }

    fn id(&mut self, what: &'static str) -> Result<u64, Bad> {
        let id = self.uint(what)?;
        if id > MAX_ID { Err("id over 2^53 - 1".into()) } else { Ok(id) }
    }

    fn text(&mut self, what: &'static str) -> Result<Cow<'a, str>, Bad> {
        let bytes =
            self.next(what)?.str().ok_or_else(|| Bad::from(format!("{what} must be a string")))?;
        match simdutf8::basic::from_utf8(bytes) {
            Ok(s) => Ok(Cow::Borrowed(s)),
            Err(_) => Err(format!("{what} is not UTF-8").into()),
        }
    }

    fn value(&mut self, what: &'static str) -> Result<RawPack<'a>, Bad> {
        let reader = self.next(what)?;
        let start = reader.at;
        reader.skip()?;
        Ok(RawPack(&reader.bytes[start..reader.at]))
    }

    fn args(&mut self) -> Result<RawPack<'a>, Bad> {
        let args = self.value("args")?;
        if args.is_array() { Ok(args) } else { Err("args must be an array".into()) }
    }
}

/// The id of the request `bytes` (one well-formed value) were meant to be, if its tag and id
/// can be read even though the rest could not: the second look taken only after a message
/// failed to decode.
fn request_id(bytes: &[u8]) -> Option<u64> {
    let mut reader = Reader::new(bytes);
    let len = reader.array_len()?;
    // Where the request's id is: second for calls and subscriptions, fifth for invocations.
    let skip = match reader.uint()? {
        CALL | SUB | UNSUB => 0,
        CB => 3,
        _ => return None,
    };
    if len < skip + 2 {
        return None;
    }
    for _ in 0..skip {
        reader.skip().ok()?;
    }
    reader.uint().filter(|&id| id <= MAX_ID)
}

/// A cursor over MessagePack bytes. Every length read is checked against the bytes left before
/// it is used, and nothing is allocated.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn at_end(&self) -> bool {
        self.at == self.bytes.len()
    }

    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.left() {
            return None;
        }
        let taken = &self.bytes[self.at..self.at + n];
        self.at += n;
        Some(taken)
    }

    /// A big-endian unsigned integer of `N` bytes.
    fn be<const N: usize>(&mut self) -> Option<u64> {
        let bytes = self.take(N)?;
        Some(bytes.iter().fold(0, |n, &b| n << 8 | u64::from(b)))
    }

    /// A length of `N` bytes, as a count of bytes or elements.
    fn len<const N: usize>(&mut self) -> Option<usize> {
        self.be::<N>().and_then(|n| usize::try_from(n).ok())
    }

    fn peek_array(&self) -> bool {
        matches!(self.bytes.get(self.at), Some(0x90..=0x9f | 0xdc | 0xdd))
    }

    /// At a batch — an array whose first element is an array — its length, the reader after
    /// its header; else the reader stays where it is.
    fn batch(&mut self) -> Option<usize> {
        let start = self.at;
        if let Some(len) = self.array_len()
            && len > 0
            && self.peek_array()
        {
            return usize::try_from(len).ok();
        }
        self.at = start;
        None
    }

    fn array_len(&mut self) -> Option<u32> {
        let len = match self.byte()? {
            m @ 0x90..=0x9f => u64::from(m & 0x0f),
            0xdc => self.be::<2>()?,
            0xdd => self.be::<4>()?,
            _ => return None,
        };
        u32::try_from(len).ok()
    }

    /// An integer that is not negative, in any width.
    fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x00..=0x7f => Some(u64::from(m)),
            m @ (0xcc | 0xd0) => self.int::<1>(m == 0xd0),
            m @ (0xcd | 0xd1) => self.int::<2>(m == 0xd1),
            m @ (0xce | 0xd2) => self.int::<4>(m == 0xd2),
            m @ (0xcf | 0xd3) => self.int::<8>(m == 0xd3),
            _ => None,
        }
    }

    /// The `N`-byte integer after its marker: `None` when it is `signed` and negative.
    fn int<const N: usize>(&mut self, signed: bool) -> Option<u64> {
        let n = self.be::<N>()?;
        let negative = signed && n >> (N * 8 - 1) == 1;
        (!negative).then_some(n)
    }

    /// A string's bytes (UTF-8 is the caller's check).
    fn str(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            m @ 0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 => self.len::<1>()?,
            0xda => self.len::<2>()?,
            0xdb => self.len::<4>()?,
            _ => return None,
        };
        self.take(len)
    }

    /// Steps over one value, however nested, without recursion: counts the values still to
    /// step over, and since each takes at least a byte, a count over the bytes left is
    /// truncation, found before any of it is read.
    fn skip(&mut self) -> Result<(), Bad> {
        const TRUNCATED: &str = "truncated";
        let mut pending: usize = 1;
        while pending > 0 {
            pending -= 1;
            let marker = self.byte().ok_or(TRUNCATED)?;
            let (values, bytes) = match marker {
                0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => (0, 0),
                0x80..=0x8f => (2 * usize::from(marker & 0x0f), 0),
                0x90..=0x9f => (usize::from(marker & 0x0f), 0),
                0xa0..=0xbf => (0, usize::from(marker & 0x1f)),
                0xc1 => return Err(format!("reserved marker 0xc1 at byte {}", self.at - 1).into()),
                0xc4 | 0xd9 => (0, self.len::<1>().ok_or(TRUNCATED)?),
                0xc5 | 0xda => (0, self.len::<2>().ok_or(TRUNCATED)?),
                0xc6 | 0xdb => (0, self.len::<4>().ok_or(TRUNCATED)?),
                // Extensions: a length, then a type byte and the data.
                0xc7 => (0, self.len::<1>().ok_or(TRUNCATED)? + 1),
                0xc8 => (0, self.len::<2>().ok_or(TRUNCATED)? + 1),
                0xc9 => (0, self.len::<4>().ok_or(TRUNCATED)?.saturating_add(1)),
                0xca => (0, 4),
                0xcb => (0, 8),
                0xcc | 0xd0 => (0, 1),
                0xcd | 0xd1 => (0, 2),
                0xce | 0xd2 => (0, 4),
                0xcf | 0xd3 => (0, 8),
                0xd4..=0xd8 => (0, 1 + (1 << (marker - 0xd4))),
                0xdc => (self.len::<2>().ok_or(TRUNCATED)?, 0),
                0xdd => (self.len::<4>().ok_or(TRUNCATED)?, 0),
                0xde => (2 * self.len::<2>().ok_or(TRUNCATED)?, 0),
                0xdf => (self.len::<4>().ok_or(TRUNCATED)?.saturating_mul(2), 0),
            };
            self.take(bytes).ok_or(TRUNCATED)?;
            pending = pending.saturating_add(values);
            if pending > self.left() {
                return Err(TRUNCATED.into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CloseCode;
    use crate::rpc::{Raw, json};

    /// The MessagePack of a JSON text (objects as maps), to write inputs legibly.
    fn pack(json: &str) -> Vec<u8> {
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        let mut out = Vec::new();
        RawPack::encode(&value, &mut out).unwrap();
        out
    }

    fn blob(bytes: &[u8]) -> RawPack<'_> {
        RawPack::new(bytes).unwrap()
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<Result<BinMsg<'_>, MsgError>>, FrameError> {
        let mut all = Vec::new();
        decode(bytes, |m| all.push(m))?;
        Ok(all)
    }

    /// The error of the one message `json` packs to, which must be bad.
    fn error_of(json: &str) -> MsgError {
        let bytes = pack(json);
        match &decode_all(&bytes).unwrap()[..] {
            [Err(e)] => e.clone(),
            other => panic!("{json}: {other:?}"),
        }
    }

    fn round_trip(msg: &BinMsg<'_>) {
        let mut out = Vec::new();
        encode(msg, &mut out);
        let back = decode_all(&out).unwrap();
        assert_eq!(back, [Ok(msg.clone())], "{out:02x?}");
    }

    #[test]
    fn every_message_round_trips() {
        let (args, data, null, answer) =
            (pack(r#"["ada",{"$cb":1}]"#), pack(r#"{"max":8}"#), pack("null"), pack("42"));
        let (args, data, null, answer) = (blob(&args), blob(&data), blob(&null), blob(&answer));
        let error =
            ErrorBody { code: ErrorCode::Service, message: "full".into(), data: Some(data) };
        for msg in [
            Msg::Call { id: 7, method: "Chat.Join".into(), args },
            Msg::Notify { method: "Chat.Ping".into(), args },
            Msg::Result { id: 7, value: null },
            Msg::Error { id: 7, error },
            Msg::Error {
                id: MAX_ID,
                error: ErrorBody { code: ErrorCode::Timeout, message: "".into(), data: None },
            },
            Msg::Invoke { callback: 1, method: "Said".into(), args, id: None },
            Msg::Invoke { callback: 1, method: "Ask".into(), args, id: Some(MAX_ID) },
            Msg::Release { callback: 1 },
            Msg::Cancel { id: 300 },
            Msg::Subscribe { id: 70_000, topic: "room/1".into(), since: None },
            Msg::Subscribe {
                id: 70_001,
                topic: "room/1".into(),
                since: Some(Position { offset: MAX_ID, epoch: "e1".into() }),
            },
            Msg::Unsubscribe { id: 1 << 40, topic: "x".repeat(40).into() },
            Msg::Publish { topic: "room/1".into(), data },
            Msg::Event { topic: "room/1".into(), data: answer, at: None },
            Msg::Event {
                topic: "room/1".into(),
                data: answer,
                at: Some(Position { offset: 1, epoch: "e1".into() }),
            },
        ] {
            round_trip(&msg);
        }
    }

    #[test]
    fn the_wire_form_is_the_plans_table() {
        let mut out = Vec::new();
        let args = pack(r#"["bob","hi"]"#);
        encode(
            &Msg::Invoke { callback: 1, method: "Said".into(), args: blob(&args), id: None },
            &mut out,
        );
        assert_eq!(out, pack(r#"[4,1,"Said",["bob","hi"]]"#));
        out.clear();
        let error = ErrorBody { code: ErrorCode::BadArgs, message: "no".into(), data: None };
        encode(&Msg::Error { id: 9, error }, &mut out);
        assert_eq!(out, pack(r#"[3,9,"bad_args","no"]"#));
        // Integers in other widths, signed forms included, read as the same message.
        let all = decode_all(&[0x92, 0xd3, 0, 0, 0, 0, 0, 0, 0, 6, 0xcf, 0, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(all.unwrap(), [Ok(Msg::Cancel { id: 5 })]);
        // Strings borrow from the input.
        let bytes = pack(r#"[0,1,"A.b",[]]"#);
        let all = decode_all(&bytes).unwrap();
        assert!(matches!(&all[0], Ok(Msg::Call { method: Cow::Borrowed("A.b"), .. })));
    }

    #[test]
    fn a_batch_is_read_message_by_message() {
        let mut bytes = pack(
            r#"[[4,1,"Said",["bob","hi"]], [11], [0,"x","A.b",[]], [0,3,5,[]], [[5,1]], [5,1]]"#,
        );
        // A method name that is not UTF-8, in a call whose id can be read.
        bytes[0] += 1;
        bytes.extend_from_slice(&[0x94, 0x00, 0x04, 0xa1, 0xff, 0x90]);
        let all = decode_all(&bytes).unwrap();
        assert_eq!(all.len(), 7);
        assert!(matches!(all[0], Ok(Msg::Invoke { callback: 1, id: None, .. })));
        assert!(
            matches!(&all[1], Err(MsgError { id: None, reason }) if reason.contains("unknown"))
        );
        assert!(matches!(all[2], Err(MsgError { id: None, .. })), "an id that is no number");
        assert!(matches!(all[3], Err(MsgError { id: Some(3), .. })), "a method that is no string");
        assert!(matches!(&all[4], Err(MsgError { id: None, reason }) if reason.contains("batch")));
        assert_eq!(all[5], Ok(Msg::Release { callback: 1 }));
        assert!(
            matches!(&all[6], Err(MsgError { id: Some(4), reason }) if reason.contains("UTF-8"))
        );

        let mut out = Vec::new();
        encode_batch(&[Msg::Release { callback: 1 }, Msg::Cancel { id: 2 }], &mut out);
        assert_eq!(out, pack("[[5,1],[6,2]]"));
        // A gathering read, added to, read again (past 15 messages: a longer header), reused.
        let mut batch = Batch::default();
        assert_eq!(batch.bytes_out(), None);
        encode(&Msg::Release { callback: 1 }, batch.next_message());
        assert_eq!(batch.bytes_out(), Some(&pack("[5,1]")[..]));
        encode(&Msg::Cancel { id: 2 }, batch.next_message());
        assert_eq!(batch.bytes_out(), Some(&pack("[[5,1],[6,2]]")[..]));
        for _ in 2..20 {
            encode(&Msg::Cancel { id: 2 }, batch.next_message());
        }
        let want = format!("[[5,1]{}]", ",[6,2]".repeat(19));
        assert_eq!(batch.bytes_out(), Some(&pack(&want)[..]));
        assert_eq!(decode_all(batch.bytes_out().unwrap()).unwrap().len(), 20);
        batch.clear();
        assert!(batch.is_empty() && batch.bytes_out().is_none());
    }

    #[test]
    fn bad_input_gets_its_documented_outcome() {
        let call = pack(r#"[0,1,"A.b",[1,2]]"#);
        let invalid: &[&[u8]] = &[
            b"",
            &[0xc1],
            &call[..call.len() - 1],
            &[call.as_slice(), &[0]].concat(),
            // Declared lengths far past the input: refused before anything is allocated.
            &[0xdd, 0xff, 0xff, 0xff, 0xff],
            &[0x94, 0x00, 0x01, 0xdb, 0xff, 0xff, 0xff, 0xff],
            &[0x94, 0x00, 0x01, 0xa1, 0x41, 0xdf, 0xff, 0xff, 0xff, 0xff],
            &[0x94, 0x00, 0x01, 0xa1, 0x41, 0xc9, 0xff, 0xff, 0xff, 0xff, 0x01],
            &[0x92, 0x92, 0x05, 0x01, 0x92, 0x05],
        ];
        for bytes in invalid {
            let e = decode_all(bytes).unwrap_err();
            assert_eq!(e.close_code(), CloseCode::INVALID_PAYLOAD, "{bytes:02x?}: {e}");
            assert!(e.reason().len() <= 123);
        }
        // A truncated batch: the messages before the cut were read.
        let mut read = 0;
        assert!(decode(&[0x92, 0x92, 0x05, 0x01, 0x92, 0x05], |_| read += 1).is_err());
        assert_eq!(read, 1);
        // MessagePack, not a message: an error without an id (close 1008).
        for json in ["{}", "[]", "42", r#"["call",1,"A.b",[]]"#, "[[[5,1]]]", "[5,-1]", "[200]"] {
            assert_eq!(error_of(json).id, None, "{json}");
        }
        // A request whose id can be read: answered with bad_request.
        for (json, want) in [
            (r#"[0,4,"A.b",{"x":1}]"#, 4),
            (r#"[0,5,"A.b"]"#, 5),
            ("[7,6,7]", 6),
            (r#"[4,1,"m","not args",9]"#, 9),
        ] {
            assert_eq!(error_of(json).id, Some(want), "{json}");
        }
        // Ids past what JavaScript holds exactly.
        assert!(error_of("[6,9007199254740992]").reason.contains("2^53"));
        assert_eq!(error_of(r#"[0,9007199254740992,"A.b",[]]"#).id, None);
        // A batch over the limit: 1009 before any message, however few bytes follow.
        let over = format!("[{}]", vec!["[6,1]"; MAX_BATCH + 1].join(","));
        let mut read = 0;
        let e = decode(&pack(&over), |_| read += 1).unwrap_err();
        assert_eq!((e.close_code(), read), (CloseCode::MESSAGE_TOO_BIG, 0));
        let e = decode_all(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x92]).unwrap_err();
        assert_eq!(e.close_code(), CloseCode::MESSAGE_TOO_BIG);
        let full = format!("[{}]", vec!["[6,1]"; MAX_BATCH].join(","));
        assert_eq!(decode_all(&pack(&full)).unwrap().len(), MAX_BATCH);
    }

    #[test]
    fn unknown_error_codes_and_trailing_fields_are_tolerated() {
        let bytes = pack(r#"[3,1,"quota","over quota",null,"later",{"x":[1]}]"#);
        let all = decode_all(&bytes).unwrap();
        let Ok(Msg::Error { error, .. }) = &all[0] else { panic!("{all:?}") };
        assert_eq!(
            (error.code, error.data.map(|d| d.bytes())),
            (ErrorCode::Unknown, Some(&[0xc0][..]))
        );
    }

    #[test]
    fn blobs_decode_into_the_same_types_as_json() {
        #[derive(Debug, PartialEq, Deserialize, Serialize)]
        struct Reading<'a> {
            id: u32,
            name: &'a str,
            values: Vec<f64>,
            ok: bool,
        }
        let reading = Reading { id: 42, name: "sensor", values: vec![1.5, 2.25, 3.0], ok: true };
        let mut bytes = Vec::new();
        RawPack::encode(&(&reading, 7u8), &mut bytes).unwrap();
        let packed = RawPack::new(&bytes).unwrap();
        assert!(packed.is_array());
        assert_eq!(packed.decode::<(Reading<'_>, u8)>().unwrap(), (reading, 7));
        let json = Raw::encode(&(&packed.decode::<(Reading<'_>, u8)>().unwrap().0,)).unwrap();
        assert_eq!(json.get(), r#"[{"id":42,"name":"sensor","values":[1.5,2.25,3.0],"ok":true}]"#);
        // Structs are maps keyed by field name, as in JSON.
        let (as_map, _): (serde_json::Value, u8) = packed.decode().unwrap();
        assert_eq!([as_map], serde_json::from_str::<[serde_json::Value; 1]>(json.get()).unwrap());
        let both: (Reading<'_>,) = Blob::decode(&Raw::new(&json)).unwrap();
        assert_eq!(both.0.name, "sensor");
        assert!(packed.decode::<(String,)>().is_err());
        // A blob is exactly one value.
        for bad in [&[][..], &[0x92, 0x01], &[0x01, 0x02], &[0xc1]] {
            assert!(RawPack::new(bad).is_none(), "{bad:02x?}");
        }
    }

    /// docs/rpc.md's `json` examples, their tags made integers, are `bidir.bin.v1` messages: each
    /// decodes to the message the JSON decodes to (blobs aside), and encodes back to its bytes.
    #[test]
    fn the_specification_examples_in_messagepack() {
        use serde_json::Value;
        let spec = include_str!("../../../docs/rpc.md");
        let tags = ["call", "note", "ok", "err", "cb", "release", "cancel", "sub", "unsub", "pub"];
        let retag = |m: &mut Value| {
            let tag = m[0].as_str().unwrap();
            let n = tags.iter().position(|t| *t == tag).unwrap_or(10);
            m[0] = Value::from(n);
        };
        let mut examples = 0;
        for block in spec.split("```json\n").skip(1) {
            let text = block.split("```").next().unwrap().trim();
            let mut value: Value = serde_json::from_str(text).unwrap();
            match value[0].as_array_mut() {
                Some(_) => value.as_array_mut().unwrap().iter_mut().for_each(retag),
                None => retag(&mut value),
            }
            let bytes = pack(&value.to_string());
            let mut from_json = Vec::new();
            json::decode(text, |m| from_json.push(m.unwrap())).unwrap();
            let msgs: Vec<_> =
                decode_all(&bytes).unwrap().into_iter().map(Result::unwrap).collect();
            let kinds: Vec<_> = msgs.iter().map(Msg::tag).collect();
            assert_eq!(kinds, from_json.iter().map(Msg::tag).collect::<Vec<_>>(), "{text}");
            let mut out = Vec::new();
            encode_batch(&msgs, &mut out);
            assert_eq!(out, bytes, "{text}");
            examples += 1;
        }
        assert!(examples >= 18, "{examples} examples");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut read = 0;
            let outcome = decode(&bytes, |m| {
                read += 1;
                if let Err(e) = m {
                    assert!(e.reason.len() <= 123);
                }
            });
            assert!(read <= MAX_BATCH);
            if let Err(e) = outcome {
                assert!(e.reason().len() <= 123);
            }
        }

        #[test]
        fn arbitrary_messages_round_trip(
            id in 0..=MAX_ID,
            method in "[A-Za-z.\"\\\\\u{e9}]{0,40}",
            n in proptest::collection::vec(proptest::num::i64::ANY, 0..20),
        ) {
            let mut args = Vec::new();
            RawPack::encode(&n, &mut args).unwrap();
            let args = blob(&args);
            round_trip(&Msg::Call { id, method: method.clone().into(), args });
            round_trip(&Msg::Invoke { callback: id, method: method.clone().into(), args, id: Some(id) });
            round_trip(&Msg::Event { topic: method.into(), data: args, at: None });
        }
    }
}
