//! The `bidir.bin.v1` envelope: the layer between one WebSocket binary message and the
//! MessagePack bytes [`bin`](super::bin) reads. docs/rpc.md, "bidir.bin.v1 envelope", is the
//! wire specification; in short:
//!
//! ```text
//! u8        flags: bit 0 COMPRESSED, bit 1 ENCRYPTED, the others 0
//! then, unencrypted:  body
//!       encrypted:    AES-256-GCM(body) ‖ 16-byte tag   (seal's nonce rule; AAD = the flags byte)
//! body, not compressed: the MessagePack bytes
//!       compressed:     varuint plain length ‖ LZ4 block ‖ CRC-32 LE of the plain bytes
//!                       (the CRC only when not encrypted: the tag covers the rest)
//! ```
//!
//! # Sending: pack once, seal per connection
//!
//! A published event goes to many connections, some encrypted (each under its own key and
//! counter), some not. [`pack`] does the work that is the same for all of them once: the
//! flags byte, compression and the CRC-32 an unencrypted receiver checks. [`seal`] then runs
//! per encrypted connection on its own copy: it drops the CRC (the tag authenticates the
//! plain bytes better than a checksum), encrypts in place and appends the tag. The CRC of a
//! message only encrypted connections receive is computed for nothing: about 1 µs per 16 KiB
//! with crc32fast, against tens of µs for the compression it guards.
//!
//! # Receiving
//!
//! [`Inbound`] is one connection's receiving side: it decrypts in place in the received
//! message, decompresses into its own scratch buffer when the message is compressed, and
//! hands back the MessagePack bytes; every malformed or refused message is a [`FrameError`]
//! with its close code (1007, 1008, 1009) and a reason.
//!
//! # Codec
//!
//! LZ4's block format (lz4_flex, pure Rust), chosen over raw deflate (zlib-rs) by measurement
//! (`protocol/benches/envelope.rs`, docs/rpc.md): on the protocol's batches it compresses 2–6
//! times and decompresses 2.5–7 times faster, for 10–20 % more bytes, and it keeps no state
//! between messages (no window per connection). Compression pays above [`COMPRESS_ABOVE`]
//! bytes.

use std::fmt;

use lz4_flex::block::DecompressError;

use super::FrameError;
use super::seal::{Opener, SealError, Sealer, TAG_LEN};

/// Envelope bit 0: the body is compressed.
pub const COMPRESSED: u8 = 1;
/// Envelope bit 1: the body is sealed with AES-256-GCM.
pub const ENCRYPTED: u8 = 2;
/// The default threshold: messages whose MessagePack bytes are longer than this are
/// compressed (when that makes them smaller). Measured: from about 450 bytes on, LZ4 halves
/// the protocol's batches for less CPU time per byte saved than a gigabit link takes to send
/// one (docs/rpc.md, "bidir.bin.v1 envelope").
pub const COMPRESS_ABOVE: usize = 512;
/// Length of the CRC-32 that ends a compressed, unencrypted body.
pub const CRC_LEN: usize = 4;
/// The most plain bytes one byte of an LZ4 block can stand for (a match-length byte of 255):
/// a body announcing more than this many times its length is refused before decompressing.
pub const MAX_EXPANSION: usize = 255;

/// The flag bits this version knows.
const KNOWN_FLAGS: u8 = COMPRESSED | ENCRYPTED;
/// The longest varuint of a `u64`.
const MAX_VARUINT: usize = 10;
/// An [`Inbound`]'s scratch buffer larger than this is freed before the next message, so a
/// connection that once received a large compressed message does not keep its size.
const KEEP_SCRATCH: usize = 64 << 10;

/// Step 1 of sending, once per message (shared by every subscriber of a published event).
///
/// `msg` is one placeholder byte followed by the MessagePack bytes. Sets `msg[0]` to the
/// flags: `0`, or [`COMPRESSED`] when `compress_above` is `Some(n)`, the MessagePack bytes are
/// longer than `n` and compressing makes them smaller — the body is then the compressed
/// layout (varuint plain length, LZ4 block, CRC-32 LE of the plain bytes). The message is
/// then ready for an unencrypted connection, or for [`seal`] (which removes the CRC).
///
/// `scratch` is reused between calls; when the message is compressed, `msg` and `scratch`
/// exchange their buffers (no copy), so either may come back with the other's capacity. A
/// compressed message has room reserved for [`seal`]'s tag.
///
/// # Panics
///
/// When `msg` is empty (no placeholder byte).
pub fn pack(msg: &mut Vec<u8>, compress_above: Option<usize>, scratch: &mut Vec<u8>) {
    assert!(!msg.is_empty(), "pack takes a placeholder byte before the MessagePack bytes");
    msg[0] = 0;
    let plain = &msg[1..];
    if compress_above.is_some_and(|n| plain.len() > n) && compress(plain, scratch) {
        std::mem::swap(msg, scratch);
    }
}

/// Writes the whole compressed message of `plain` — the flags byte, the plain length, the LZ4
/// block, the CRC — to `out` (cleared first), and says whether its body is shorter than
/// `plain`.
fn compress(plain: &[u8], out: &mut Vec<u8>) -> bool {
    let bound = lz4_flex::block::get_maximum_output_size(plain.len());
    out.clear();
    out.reserve(1 + MAX_VARUINT + bound + CRC_LEN.max(TAG_LEN));
    out.push(COMPRESSED);
    write_varuint(out, plain.len() as u64);
    let at = out.len();
    out.resize(at + bound, 0);
    let n = lz4_flex::block::compress_into(plain, &mut out[at..])
        .expect("room for LZ4's largest output");
    out.truncate(at + n);
    out.extend_from_slice(&crc32fast::hash(plain).to_le_bytes());
    out.len() - 1 < plain.len()
}

/// Step 2 of sending, per connection, only on encrypted connections: `msg` is what [`pack`]
/// made (the connection's own copy). Drops the CRC of a compressed message, encrypts
/// `msg[1..]` in place with `sealer` (its next counter; the additional data is the envelope
/// byte with [`ENCRYPTED`] set), appends the 16-byte tag and sets the bit.
///
/// # Errors
///
/// [`SealError`] from the sealer (its counter exhausted): `msg` and the counter are
/// unchanged, and the connection must close (it cannot send another message).
///
/// # Panics
///
/// When `msg` is not a message from [`pack`]: empty, or with [`ENCRYPTED`] or an unknown bit
/// already set (sealed twice).
pub fn seal(sealer: &mut Sealer, msg: &mut Vec<u8>) -> Result<(), SealError> {
    let flags = *msg.first().expect("seal takes a message from pack");
    assert_eq!(flags & !COMPRESSED, 0, "seal takes a message from pack, once");
    let crc_len = if flags & COMPRESSED == 0 { 0 } else { CRC_LEN };
    let crc_at = msg.len().checked_sub(crc_len).expect("a compressed message ends with its CRC");
    let mut crc = [0; CRC_LEN];
    crc[..crc_len].copy_from_slice(&msg[crc_at..]);
    msg.truncate(crc_at);
    let envelope = flags | ENCRYPTED;
    if let Err(e) = sealer.seal_in_place_from(&[envelope], msg, 1) {
        msg.extend_from_slice(&crc[..crc_len]);
        return Err(e);
    }
    msg[0] = envelope;
    Ok(())
}

/// The receiving side of one connection: the peer's direction's [`Opener`] when the
/// connection is encrypted, the message limit, and a scratch buffer for decompressed
/// messages. Messages must be opened in the order they arrived (the opener expects the next
/// counter); after an error the connection must close with the error's code.
pub struct Inbound {
    opener: Option<Opener>,
    max_message: usize,
    /// The plain bytes of the last compressed message; freed before the next message when
    /// larger than [`KEEP_SCRATCH`].
    scratch: Vec<u8>,
}

impl Inbound {
    /// The receiving side of a connection: encrypted when `opener` is given (then every
    /// message must be), with plain messages of at most `max_message` bytes (the MessagePack
    /// bytes, after decompression; the route's message limit).
    pub fn new(opener: Option<Opener>, max_message: usize) -> Self {
        Self { opener, max_message, scratch: Vec::new() }
    }

    /// Opens one received binary message: checks the flags, decrypts in place in `wire` (no
    /// copy), then, when it is compressed, decompresses into this `Inbound`'s scratch (at
    /// most the announced plain length is allocated, and only once it is known to be within
    /// `max_message`) and checks the CRC. Returns the MessagePack bytes, a view of `wire` or
    /// of the scratch.
    ///
    /// # Errors
    ///
    /// A [`FrameError`] to close with:
    /// - 1007: an empty message, unknown flag bits, a malformed or truncated compressed body,
    ///   garbage LZ4, a plain length that differs from what decodes, a wrong CRC;
    /// - 1008: a message without [`ENCRYPTED`] on an encrypted connection ("unencrypted
    ///   message"), one that fails authentication ("authentication failed": wrong key,
    ///   replayed, reordered, dropped, truncated or altered), one with [`ENCRYPTED`] on a
    ///   connection without a key;
    /// - 1009: plain bytes over `max_message`, announced or not, refused before any
    ///   decompression.
    ///
    /// `wire`'s contents are unspecified after an error.
    pub fn open<'a>(&'a mut self, wire: &'a mut [u8]) -> Result<&'a [u8], FrameError> {
        if self.scratch.capacity() > KEEP_SCRATCH {
            self.scratch = Vec::new();
        }
        let (&mut flags, body) =
            wire.split_first_mut().ok_or_else(|| FrameError::invalid("empty message".into()))?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(FrameError::invalid(format!("unknown envelope flags {flags:#04x}")));
        }
        let body: &[u8] = match (&mut self.opener, flags & ENCRYPTED != 0) {
            (Some(opener), true) => {
                let len = opener.open_in_place(&[flags], body)?;
                &body[..len]
            }
            (Some(_), false) => return Err(FrameError::policy("unencrypted message")),
            (None, true) => return Err(FrameError::policy("encrypted message without a key")),
            (None, false) => body,
        };
        if flags & COMPRESSED == 0 {
            if body.len() > self.max_message {
                return Err(FrameError::too_big(OVER_LIMIT));
            }
            return Ok(body);
        }
        let checked = flags & ENCRYPTED == 0;
        decompress(body, checked, self.max_message, &mut self.scratch)
    }

    /// How many messages were authenticated so far: 0 on a connection without a key.
    pub fn opened(&self) -> u64 {
        self.opener.as_ref().map_or(0, Opener::opened)
    }

    /// Whether this connection is encrypted (every message must be).
    pub fn is_encrypted(&self) -> bool {
        self.opener.is_some()
    }
}

impl fmt::Debug for Inbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbound")
            .field("opener", &self.opener)
            .field("max_message", &self.max_message)
            .finish_non_exhaustive()
    }
}

const OVER_LIMIT: &str = "message over the size limit";

/// Decompresses a compressed body (varuint, LZ4 block, and the CRC when `checked`) into
/// `out`, which then holds exactly the plain bytes.
fn decompress<'s>(
    body: &[u8],
    checked: bool,
    max_message: usize,
    out: &'s mut Vec<u8>,
) -> Result<&'s [u8], FrameError> {
    let invalid = |reason: &str| FrameError::invalid(reason.to_owned());
    let (plain_len, rest) = read_varuint(body).ok_or_else(|| invalid("malformed plain length"))?;
    let plain_len = match usize::try_from(plain_len) {
        Ok(n) if n <= max_message => n,
        _ => return Err(FrameError::too_big(OVER_LIMIT)),
    };
    let (block, crc) = if checked {
        let at =
            rest.len().checked_sub(CRC_LEN).ok_or_else(|| invalid("truncated compressed body"))?;
        let (block, crc) = rest.split_at(at);
        (block, Some(u32::from_le_bytes(crc.try_into().expect("split at the CRC"))))
    } else {
        (rest, None)
    };
    if plain_len > block.len().saturating_mul(MAX_EXPANSION) {
        return Err(invalid("plain length beyond what the body can hold"));
    }
    // Every byte up to plain_len is written by the decoder (it must produce exactly that
    // many), so only the growth is zeroed.
    out.resize(plain_len, 0);
    match lz4_flex::block::decompress_into(block, out) {
        Ok(n) if n == plain_len => {}
        Ok(_) => return Err(invalid("plain length differs from the announced one")),
        Err(DecompressError::OutputTooSmall { .. }) => {
            return Err(invalid("body inflates beyond the announced length"));
        }
        Err(_) => return Err(invalid("invalid compressed data")),
    }
    if crc.is_some_and(|crc| crc != crc32fast::hash(out)) {
        return Err(invalid("checksum mismatch"));
    }
    Ok(out)
}

/// Appends `n` as an unsigned LEB128 varuint: 7 bits a byte, least significant first, the
/// high bit set on every byte but the last; the shortest form.
fn write_varuint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads a varuint from the start of `bytes`: its value and the bytes after it. `None` when
/// it does not end within `bytes`, is longer than 10 bytes, overflows 64 bits or is not in
/// its shortest form (a last byte of 0 after others).
fn read_varuint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut n = 0u64;
    for (i, &b) in bytes.iter().take(MAX_VARUINT).enumerate() {
        let bits = u64::from(b & 0x7f);
        if i == MAX_VARUINT - 1 && bits > 1 {
            return None;
        }
        n |= bits << (7 * i);
        if b & 0x80 == 0 {
            return (i == 0 || b != 0).then_some((n, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CloseCode;
    use crate::rpc::seal::{Backend, KEY_LEN};

    const KEY: [u8; KEY_LEN] = [0x42; KEY_LEN];
    const LIMIT: usize = 1 << 20;

    /// Compressible MessagePack-like bytes: a repeated chat line with a counter in it.
    fn text(len: usize) -> Vec<u8> {
        let line = b"\x94\x04\x07\xa4Said\x92\xa3ada\xaehello everyone";
        (0..len).map(|i| line[i % line.len()] ^ (i / 97) as u8).collect()
    }

    /// Bytes that do not compress (a xorshift stream).
    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// The placeholder byte (poisoned: pack must overwrite it) and `plain`.
    fn message(plain: &[u8]) -> Vec<u8> {
        let mut msg = vec![0xa5];
        msg.extend_from_slice(plain);
        msg
    }

    fn packed(plain: &[u8], above: Option<usize>) -> Vec<u8> {
        let mut msg = message(plain);
        pack(&mut msg, above, &mut Vec::new());
        msg
    }

    fn keyed() -> (Sealer, Inbound) {
        (Sealer::new(&KEY), Inbound::new(Some(Opener::new(&KEY)), LIMIT))
    }

    fn plain_inbound() -> Inbound {
        Inbound::new(None, LIMIT)
    }

    fn open_err(inbound: &mut Inbound, mut wire: Vec<u8>) -> (u16, String) {
        let e = inbound.open(&mut wire).unwrap_err();
        assert!(e.reason().len() <= 123);
        (e.close_code().0, e.reason().to_owned())
    }

    /// A compressed unencrypted message by hand: flags, varuint, block, CRC.
    fn compressed(plain_len: u64, block: &[u8], crc: u32) -> Vec<u8> {
        let mut wire = vec![COMPRESSED];
        write_varuint(&mut wire, plain_len);
        wire.extend_from_slice(block);
        wire.extend_from_slice(&crc.to_le_bytes());
        wire
    }

    #[test]
    fn round_trips_at_every_size_around_the_threshold_plain_and_sealed() {
        let sizes = (0..8).chain(COMPRESS_ABOVE - 8..COMPRESS_ABOVE + 8).chain([4096, 300 << 10]);
        let (mut sealer, mut keyed_in) = keyed();
        let mut plain_in = plain_inbound();
        let mut scratch = Vec::new();
        for len in sizes {
            for (plain, compressible) in [(text(len), true), (noise(len), false)] {
                let mut msg = message(&plain);
                pack(&mut msg, Some(COMPRESS_ABOVE), &mut scratch);
                let shrinks = compressible && len > COMPRESS_ABOVE;
                assert_eq!(msg[0], if shrinks { COMPRESSED } else { 0 }, "{len}");
                assert_eq!(msg.len() < 1 + plain.len(), shrinks, "{len}");
                let mut wire = msg.clone();
                assert_eq!(plain_in.open(&mut wire).unwrap(), plain, "{len}");
                let mut wire = msg;
                seal(&mut sealer, &mut wire).unwrap();
                assert_eq!(wire[0], if shrinks { COMPRESSED | ENCRYPTED } else { ENCRYPTED });
                assert_eq!(keyed_in.open(&mut wire).unwrap(), plain, "{len}");
            }
        }
        assert_eq!(keyed_in.opened(), sealer.sealed());
        assert_eq!(plain_in.opened(), 0);
    }

    /// The examples of docs/rpc.md, "bidir.bin.v1 envelope", and the CRC's check value.
    #[test]
    fn the_specifications_examples_open() {
        let note = [0x93, 0x01, 0xa3, 0x41, 0x2e, 0x62, 0x90];
        let mut stored = [&[0][..], &note].concat();
        assert_eq!(plain_inbound().open(&mut stored).unwrap(), note);
        let mut compressed = [&[1, 7, 0x70][..], &note, &[0xef, 0x4b, 0x28, 0x09]].concat();
        assert_eq!(plain_inbound().open(&mut compressed).unwrap(), note);
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn compressed_layout_is_varuint_lz4_block_crc() {
        let plain = text(2000);
        let msg = packed(&plain, Some(COMPRESS_ABOVE));
        assert_eq!(msg[..3], [COMPRESSED, 0xd0, 0x0f]); // 2000 = 0x50 | 0x80, 0x0f
        let (block, crc) = msg[3..].split_at(msg.len() - 3 - CRC_LEN);
        assert_eq!(lz4_flex::block::decompress(block, 2000).unwrap(), plain);
        assert_eq!(crc, crc32fast::hash(&plain).to_le_bytes());
        assert!(msg.capacity() >= msg.len() + TAG_LEN - CRC_LEN, "room for the tag");
    }

    #[test]
    fn without_a_threshold_or_at_it_the_message_is_stored() {
        let plain = text(COMPRESS_ABOVE);
        assert_eq!(packed(&plain, None), [&[0][..], &plain].concat());
        assert_eq!(packed(&plain, Some(COMPRESS_ABOVE)), [&[0][..], &plain].concat());
        assert_eq!(packed(&plain, Some(COMPRESS_ABOVE - 1))[0], COMPRESSED);
        assert_eq!(packed(&[], Some(0)), [0]);
        // Incompressible bytes grow under LZ4 and the CRC: stored.
        assert_eq!(packed(&noise(4096), Some(0))[0], 0);
    }

    #[test]
    fn seal_drops_the_crc_and_authenticates_the_flags() {
        let plain = text(2000);
        let msg = packed(&plain, Some(0));
        let mut wire = msg.clone();
        seal(&mut Sealer::new(&KEY), &mut wire).unwrap();
        assert_eq!(wire.len(), msg.len() - CRC_LEN + TAG_LEN);
        // The flags byte is the AAD: clearing COMPRESSED fails authentication.
        let (_, mut inbound) = keyed();
        let mut flipped = wire.clone();
        flipped[0] = ENCRYPTED;
        assert_eq!(open_err(&mut inbound, flipped), (1008, "authentication failed".into()));
        let (_, mut inbound) = keyed();
        assert_eq!(inbound.open(&mut wire).unwrap(), plain);
    }

    #[test]
    fn encrypted_tamper_replay_reorder_truncation_fail_authentication() {
        let auth = (1008, "authentication failed".to_owned());
        for above in [None, Some(0)] {
            let mut sealer = Sealer::new(&KEY);
            let wires: Vec<Vec<u8>> = (0..3)
                .map(|i| {
                    let mut wire = packed(&text(600 + i), above);
                    seal(&mut sealer, &mut wire).unwrap();
                    wire
                })
                .collect();
            for i in 1..wires[0].len() {
                let mut tampered = wires[0].clone();
                tampered[i] ^= 0x10;
                assert_eq!(open_err(&mut keyed().1, tampered), auth, "byte {i}");
            }
            let mut truncated = wires[0].clone();
            truncated.pop();
            assert_eq!(open_err(&mut keyed().1, truncated), auth);
            assert_eq!(open_err(&mut keyed().1, vec![ENCRYPTED; 1 + TAG_LEN - 1]), auth);
            // Reordered: the second message first.
            assert_eq!(open_err(&mut keyed().1, wires[1].clone()), auth);
            // Replayed: the first message twice.
            let mut inbound = keyed().1;
            inbound.open(&mut wires[0].clone()).unwrap();
            assert_eq!(open_err(&mut inbound, wires[0].clone()), auth);
            assert_eq!(inbound.opened(), 1, "a failure does not advance the counter");
            inbound.open(&mut wires[1].clone()).unwrap();
            assert_eq!(inbound.opened(), 2);
        }
    }

    #[test]
    fn encryption_policy_is_enforced_both_ways() {
        let (mut sealer, mut inbound) = keyed();
        let unencrypted = (1008, "unencrypted message".to_owned());
        assert_eq!(open_err(&mut inbound, packed(&text(10), None)), unencrypted);
        assert_eq!(open_err(&mut inbound, packed(&text(900), Some(0))), unencrypted);
        let mut wire = packed(&text(10), None);
        seal(&mut sealer, &mut wire).unwrap();
        let (code, reason) = open_err(&mut plain_inbound(), wire);
        assert_eq!((code, reason.as_str()), (1008, "encrypted message without a key"));
        assert!(keyed().1.is_encrypted() && !plain_inbound().is_encrypted());
    }

    /// Every bit flip either closes the connection or delivers the very bytes sent: LZ4
    /// ignores a few bits (the match-length half of the last token), which the CRC, computed
    /// over the plain bytes, rightly lets through.
    #[test]
    fn bit_flips_in_a_compressed_unencrypted_message_are_caught() {
        let plain = text(3000);
        let msg = packed(&plain, Some(0));
        let mut caught = 0;
        for i in 1..msg.len() {
            for bit in [0x01, 0x10, 0x80] {
                let mut wire = msg.clone();
                wire[i] ^= bit;
                match plain_inbound().open(&mut wire) {
                    Err(e) => {
                        assert!(matches!(e.close_code().0, 1007 | 1009), "{i}: {e}");
                        caught += 1;
                    }
                    Ok(got) => assert_eq!(got, plain, "flip of {bit:#x} at {i}"),
                }
            }
        }
        assert!(caught >= 3 * (msg.len() - 1) - 3, "{caught} of {}", 3 * (msg.len() - 1));
        let mut wire = msg.clone();
        *wire.last_mut().unwrap() ^= 1;
        assert_eq!(open_err(&mut plain_inbound(), wire), (1007, "checksum mismatch".into()));
    }

    #[test]
    fn a_tiny_body_announcing_a_gigabyte_is_refused_without_allocating() {
        let mut inbound = plain_inbound();
        let bomb = compressed(1 << 30, &[0x1f, 0x00], 0);
        assert_eq!(open_err(&mut inbound, bomb), (1009, OVER_LIMIT.into()));
        assert_eq!(inbound.scratch.capacity(), 0);
        // Under a limit that allows it, the body still cannot hold it: 1007, nothing allocated.
        let mut inbound = Inbound::new(None, 2 << 30);
        let (code, reason) = open_err(&mut inbound, compressed(1 << 30, &[0x1f, 0x00], 0));
        assert_eq!((code, reason.as_str()), (1007, "plain length beyond what the body can hold"));
        assert_eq!(inbound.scratch.capacity(), 0);
        // The same under encryption: the length is read after authentication.
        let (mut sealer, mut inbound) = keyed();
        let mut wire = vec![COMPRESSED];
        write_varuint(&mut wire, u64::MAX);
        wire.push(0);
        sealer.seal_in_place_from(&[COMPRESSED | ENCRYPTED], &mut wire, 1).unwrap();
        wire[0] |= ENCRYPTED;
        assert_eq!(open_err(&mut inbound, wire), (1009, OVER_LIMIT.into()));
    }

    #[test]
    fn a_body_inflating_past_or_short_of_its_announced_length_is_refused() {
        let plain = text(2000);
        let block = lz4_flex::block::compress(&plain);
        let crc = crc32fast::hash(&plain);
        let past = compressed(1999, &block, crc);
        let (code, reason) = open_err(&mut plain_inbound(), past);
        assert_eq!((code, reason.as_str()), (1007, "body inflates beyond the announced length"));
        let short = compressed(2001, &block, crc);
        let (code, reason) = open_err(&mut plain_inbound(), short);
        assert_eq!((code, reason.as_str()), (1007, "plain length differs from the announced one"));
        let mut inbound = plain_inbound();
        assert_eq!(inbound.open(&mut compressed(2000, &block, crc)).unwrap(), plain);
    }

    #[test]
    fn plain_messages_over_the_limit_are_refused() {
        let mut inbound = Inbound::new(None, 100);
        assert_eq!(inbound.open(&mut packed(&text(100), None)).unwrap().len(), 100);
        assert_eq!(open_err(&mut inbound, packed(&text(101), None)), (1009, OVER_LIMIT.into()));
        let exact = packed(&text(150), Some(0));
        assert_eq!(exact[0], COMPRESSED);
        assert_eq!(open_err(&mut inbound, exact), (1009, OVER_LIMIT.into()));
    }

    #[test]
    fn malformed_envelopes_close_with_1007() {
        let cases: [(Vec<u8>, &str); 8] = [
            (vec![], "empty message"),
            (vec![0x04, 0x90], "unknown envelope flags 0x04"),
            (vec![0x80], "unknown envelope flags 0x80"),
            (vec![COMPRESSED], "malformed plain length"),
            (vec![COMPRESSED, 0x80], "malformed plain length"),
            (vec![COMPRESSED, 0x81, 0x00, 0, 0, 0, 0], "malformed plain length"),
            (vec![COMPRESSED, 0x01, 0, 0, 0], "truncated compressed body"),
            (compressed(1, &[0x10], 0), "invalid compressed data"),
        ];
        for (wire, reason) in cases {
            assert_eq!(
                open_err(&mut plain_inbound(), wire.clone()),
                (1007, reason.into()),
                "{wire:x?}"
            );
            // Unknown bits are checked before the encryption policy.
            if reason.starts_with("unknown") {
                assert_eq!(open_err(&mut keyed().1, wire).0, 1007);
            }
        }
        // An empty plain message: stored, or an announced 0 that decodes to nothing.
        assert_eq!(plain_inbound().open(&mut [0]).unwrap(), b"");
        let empty = compressed(0, &lz4_flex::block::compress(b""), crc32fast::hash(b""));
        assert_eq!(plain_inbound().open(&mut empty.clone()).unwrap(), b"");
    }

    #[test]
    fn every_error_closes_with_its_code() {
        let auth: FrameError = crate::rpc::seal::AuthError.into();
        assert_eq!(
            (auth.close_code(), auth.reason()),
            (CloseCode::POLICY_VIOLATION, "authentication failed")
        );
        assert_eq!(FrameError::too_big(OVER_LIMIT).close_code(), CloseCode::MESSAGE_TOO_BIG);
        assert_eq!(FrameError::invalid("x".into()).close_code(), CloseCode::INVALID_PAYLOAD);
    }

    /// Sealing a sealed message is a caller's bug, not a second layer of encryption.
    #[test]
    fn a_sealed_message_cannot_be_sealed_again() {
        let plain = text(100);
        let mut wire = packed(&plain, None);
        let mut sealer = Sealer::with_backend(&KEY, Backend::Software);
        seal(&mut sealer, &mut wire).unwrap();
        assert_eq!(wire.len(), 1 + plain.len() + TAG_LEN);
        let again = std::panic::catch_unwind(move || seal(&mut Sealer::new(&KEY), &mut wire));
        assert!(again.is_err(), "sealing twice is a caller bug");
    }

    #[test]
    fn large_scratch_is_released_before_the_next_message() {
        let mut inbound = plain_inbound();
        let big = packed(&text(200 << 10), Some(0));
        assert_eq!(inbound.open(&mut big.clone()).unwrap().len(), 200 << 10);
        assert!(inbound.scratch.capacity() >= 200 << 10);
        inbound.open(&mut packed(&text(10), None)).unwrap();
        assert_eq!(inbound.scratch.capacity(), 0);
    }

    #[test]
    fn varuints_are_leb128_in_the_shortest_form() {
        for (n, bytes) in [
            (0u64, &[0x00][..]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (u64::MAX, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        ] {
            let mut out = Vec::new();
            write_varuint(&mut out, n);
            assert_eq!(out, bytes);
            assert_eq!(read_varuint(&[bytes, b"rest"].concat()), Some((n, &b"rest"[..])));
        }
        assert_eq!(read_varuint(&[0x80, 0x00]), None, "not the shortest form");
        assert_eq!(read_varuint(&[0xff; 9]), None, "does not end");
        assert_eq!(
            read_varuint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            None
        );
        assert_eq!(read_varuint(&[0x80; 11]), None, "longer than 10 bytes");
    }

    proptest::proptest! {
        #[test]
        fn pack_seal_open_round_trips(
            plain in proptest::collection::vec(0u8..4, 0..3000),
            above in proptest::option::of(0usize..2000),
            encrypted in proptest::bool::ANY,
        ) {
            let mut msg = message(&plain);
            pack(&mut msg, above, &mut Vec::new());
            let (mut sealer, mut inbound) = if encrypted { keyed() } else { (Sealer::new(&KEY), plain_inbound()) };
            if encrypted {
                seal(&mut sealer, &mut msg).unwrap();
            }
            proptest::prop_assert_eq!(inbound.open(&mut msg).unwrap(), &plain[..]);
        }

        #[test]
        fn arbitrary_wire_bytes_never_panic(
            wire in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            keyed_side in proptest::bool::ANY,
        ) {
            let mut inbound = if keyed_side { keyed().1 } else { plain_inbound() };
            let mut wire = wire;
            if let Err(e) = inbound.open(&mut wire) {
                proptest::prop_assert!(matches!(e.close_code().0, 1007..=1009), "{e}");
                proptest::prop_assert!(e.reason().len() <= 123);
            }
        }
    }
}
