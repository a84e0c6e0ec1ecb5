//! Compressing and decompressing message payloads (RFC 7692 §7.2): over zlib-rs where a
//! stream goes on (context takeover, a message in pieces); a whole message that stands alone
//! (no context takeover) in one call instead.
//!
//! Why: a zlib stream reset per message clears a 2^16-entry hash table (128 KiB, whatever the
//! memory level) before it compresses a byte, which dominated a server's CPU at 1 KiB. A
//! standalone message up to the window's size goes through [`quick`](super::quick) instead
//! (a table sized to the message, fixed codes, zlib's sync-flushed shape). Not libdeflate:
//! its fastest level was slower than the reset at 1 KiB, and its streams end with a final
//! block, after which Chromium fails the connection. Decompressing a standalone message in
//! one libdeflate call skips zlib's streaming state machine and its per-message table setup
//! (docs/deflate.md).

use core::fmt;

use libdeflater::{DecompressionError, Decompressor};
use zlib_rs::{Deflate, DeflateConfig, Inflate, Status};
use zlib_rs::{DeflateFlush, InflateFlush};

use super::quick::Quick;

/// The four bytes a sync flush ends with; senders strip them, receivers put them back
/// (RFC 7692 §7.2.1, §7.2.2).
pub(crate) const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// An empty final block with the fixed Huffman codes (BFINAL 1, BTYPE 01, end of block):
/// after [`TAIL`], it ends a standalone message's stream for a decompressor that needs one.
const FINAL: [u8; 2] = [0x03, 0x00];

/// Output grows by at most this much per call, so a decompression bomb is caught after a
/// bounded amount of work and memory past the limit.
const STEP: usize = 64 << 10;

/// The copy of a standalone message's payload is kept past the message only up to this
/// capacity (a connection's own codec keeps it while the connection lives).
const KEEP: usize = 64 << 10;

/// zlib state for one connection, or for many in turn (see
/// [`DeflateParams::is_stateless`](super::DeflateParams::is_stateless)).
///
/// Nothing is allocated until first use: a connection that never sends or receives a
/// compressed message costs only this struct.
pub struct Codec {
    level: i32,
    mem_level: i32,
    /// Compressors by window bits (index `bits - 9`), created on demand.
    deflate: [Option<Deflate>; 7],
    inflate: Option<Inflate>,
    /// The decompressor's window bits.
    inflate_bits: u8,
    /// Whole standalone messages ([`Codec::compress_message`], [`Codec::decompress_message`]).
    quick: Quick,
    unpack: Option<Decompressor>,
    /// A standalone message's payload with the tail and a final block appended.
    padded: Vec<u8>,
    /// The last standalone message's decompressed size per compressed byte, rounded up: the
    /// first guess at the next one's room.
    expand: usize,
    /// Scratch for a connection's compressed output, kept with the codec so that a codec
    /// shared by many connections keeps one buffer, not one each.
    pub(crate) scratch: Vec<u8>,
}

/// A compressed message could not be decompressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecompressError {
    /// The data is not a valid DEFLATE stream.
    InvalidData,
    /// The decompressed message would exceed the limit.
    TooBig,
}

impl fmt::Display for DecompressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InvalidData => "invalid compressed data",
            Self::TooBig => "decompressed message too big",
        })
    }
}

impl std::error::Error for DecompressError {}

impl Codec {
    /// A codec that compresses at `level` (0–9) with `mem_level` (1–9) and decompresses
    /// windows of up to `inflate_bits` (8–15). Values out of range are clamped.
    pub fn new(level: u8, mem_level: u8, inflate_bits: u8) -> Self {
        Self {
            level: i32::from(level.min(9)),
            mem_level: i32::from(mem_level.clamp(1, 9)),
            deflate: Default::default(),
            inflate: None,
            inflate_bits: inflate_bits.clamp(8, 15),
            quick: Quick::default(),
            unpack: None,
            padded: Vec::new(),
            expand: 4,
            scratch: Vec::new(),
        }
    }

    /// The compression level and memory level this codec compresses with.
    pub fn settings(&self) -> (u8, u8) {
        (self.level as u8, self.mem_level as u8)
    }

    fn deflater(&mut self, bits: u8) -> &mut Deflate {
        let (level, mem_level) = (self.level, self.mem_level);
        self.deflate[usize::from(bits - 9)].get_or_insert_with(|| {
            let config = DeflateConfig {
                level,
                window_bits: -i32::from(bits),
                mem_level,
                ..Default::default()
            };
            Deflate::new_with_config(config)
        })
    }

    /// Resets the compressor for `window_bits` (9–15; clamped) and loads `history`, the
    /// last bytes this side sent (at most the window is used), as its dictionary: the next
    /// [`Codec::compress`] without reset may refer to them, exactly as a compressor that
    /// kept its context would. This lets a connection keep only its window of plaintext
    /// between messages instead of a whole compressor.
    pub fn prime_compressor(&mut self, window_bits: u8, history: &[u8]) {
        let deflate = self.deflater(window_bits.clamp(9, 15));
        deflate.reset();
        if !history.is_empty() {
            deflate
                .set_dictionary(history)
                .expect("a freshly reset raw compressor accepts a dictionary");
        }
    }

    /// Resets the decompressor and loads `history`, the last bytes received (at most 32 KiB
    /// are used), as its window: the next [`Codec::decompress`] without reset may meet
    /// references to them. The receiving counterpart of [`Codec::prime_compressor`].
    pub fn prime_decompressor(&mut self, history: &[u8]) {
        let bits = self.inflate_bits;
        let inflate = self.inflate.get_or_insert_with(|| Inflate::new(false, bits));
        inflate.reset(false);
        if !history.is_empty() {
            // The window is 15 bits after a reset, so any history up to 32 KiB fits.
            let keep = history.len().min(1 << 15);
            inflate
                .set_dictionary(&history[history.len() - keep..])
                .expect("a raw decompressor accepts a dictionary at a block boundary");
        }
    }

    /// Compresses `input`, one piece of a message, with a window of `window_bits` (9–15;
    /// clamped), appending the compressed bytes to `out`. The output is sync-flushed, so a
    /// receiver can decode everything so far; the `last` piece of a message has the trailing
    /// `00 00 ff ff` removed, as a message's payload must.
    ///
    /// With `reset`, the compressor forgets the previous messages first (no context takeover,
    /// or a codec shared between connections).
    pub fn compress(
        &mut self,
        window_bits: u8,
        input: &[u8],
        last: bool,
        reset: bool,
        out: &mut Vec<u8>,
    ) {
        let deflate = self.deflater(window_bits.clamp(9, 15));
        if reset {
            deflate.reset();
        }
        let start = out.len();
        let mut consumed = 0;
        loop {
            let room = (input.len() - consumed) / 2 + 64;
            let at = out.len();
            out.resize(at + room, 0);
            let (in_before, out_before) = (deflate.total_in(), deflate.total_out());
            let status = deflate
                .compress(&input[consumed..], &mut out[at..], DeflateFlush::SyncFlush)
                .expect("a valid compressor with room to write cannot fail");
            consumed += (deflate.total_in() - in_before) as usize;
            let written = (deflate.total_out() - out_before) as usize;
            out.truncate(at + written);
            // A sync flush is complete once the input is gone and the output stopped filling
            // the room; "no progress possible" (a flush with nothing new) also means done.
            if consumed == input.len() && (written < room || status == Status::BufError) {
                break;
            }
        }
        if last && out.len() - start >= TAIL.len() && out[out.len() - TAIL.len()..] == TAIL {
            out.truncate(out.len() - TAIL.len());
        }
        // A flush with nothing new since the last one writes nothing (zlib skips duplicate
        // flushes), yet the peer appends the tail to every message: an empty stored block
        // (RFC 7692 section 7.2.3.6) keeps its decompressor on a block boundary.
        if last && out.len() == start {
            out.push(0x00);
        }
    }

    /// Compresses `input`, a whole message that refers to nothing before it (no context
    /// takeover), with a window of `window_bits` (9–15; clamped), appending the payload to
    /// `out`. At level 1 (the default), where the message fits in the window (no distance can
    /// then pass it): in one call, with a hash table sized to the message and the fixed codes,
    /// as zlib-rs's level 1 codes it, in the shape [`Codec::compress`] gives a message
    /// (sync-flushed, the tail stripped). Other levels, longer messages and the empty one (a
    /// single `0x00`, §7.2.3.6) go through [`Codec::compress`] with a reset.
    pub fn compress_message(&mut self, window_bits: u8, input: &[u8], out: &mut Vec<u8>) {
        let bits = window_bits.clamp(9, 15);
        if input.is_empty() || input.len() > 1 << bits || self.level != 1 {
            return self.compress(bits, input, true, true, out);
        }
        self.quick.compress(input, 1 << bits, out);
    }

    /// Decompresses one whole compressed message that refers to nothing before it (the peer
    /// takes no context over), appending at most `limit` bytes to `out`; nothing carries over
    /// to the next message. In one call to libdeflate, after appending the tail and an empty
    /// final block to a copy of the payload; a payload that ends with its own final block
    /// (§7.2.3.4) ends there. The window is not checked against the negotiated bits: a
    /// distance up to 32 KiB is accepted, at no cost in memory.
    ///
    /// # Errors
    ///
    /// As [`Codec::decompress`]: [`DecompressError::TooBig`] once the output would pass
    /// `limit`, after work and memory bounded by about `limit` (the room offered grows four
    /// times per try, up to `limit` + 1; `out` then holds `limit` + 1 bytes);
    /// [`DecompressError::InvalidData`] for a corrupt or incomplete stream.
    pub fn decompress_message(
        &mut self,
        input: &[u8],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), DecompressError> {
        if input.is_empty() {
            return Ok(());
        }
        let mut padded = std::mem::take(&mut self.padded);
        padded.clear();
        padded.extend_from_slice(input);
        padded.extend_from_slice(&TAIL);
        padded.extend_from_slice(&FINAL);
        let result = self.unpack_into(&padded, input.len(), limit, out);
        if padded.capacity() <= KEEP {
            self.padded = padded;
        }
        result
    }

    fn unpack_into(
        &mut self,
        padded: &[u8],
        compressed: usize,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), DecompressError> {
        let most = limit.saturating_add(1);
        let start = out.len();
        let mut room = compressed.saturating_mul(self.expand).saturating_add(64).min(most);
        let unpack = self.unpack.get_or_insert_with(Decompressor::new);
        loop {
            out.resize(start + room, 0);
            match unpack.deflate_decompress(padded, &mut out[start..]) {
                Ok(written) => {
                    out.truncate(start + written);
                    if written > limit {
                        return Err(DecompressError::TooBig);
                    }
                    // Room for the next message like this one, a quarter more to spare.
                    self.expand = (written + written / 4) / compressed + 1;
                    return Ok(());
                }
                Err(DecompressionError::InsufficientSpace) if room < most => {
                    room = room.saturating_mul(4).min(most);
                }
                Err(DecompressionError::InsufficientSpace) => return Err(DecompressError::TooBig),
                Err(DecompressionError::BadData) => {
                    out.truncate(start);
                    return Err(DecompressError::InvalidData);
                }
            }
        }
    }

    /// Decompresses one whole compressed message (its payload, without the tail, which is
    /// added here), appending at most `limit` bytes to `out`. With `reset`, the decompressor
    /// forgets previous messages first, as a codec shared between connections must (a reset
    /// decompressor accepts 15-bit windows). A decompressor that is not shared need not reset
    /// even when the peer does not take context over: such a peer never refers to what came
    /// before.
    ///
    /// # Errors
    ///
    /// [`DecompressError::TooBig`] as soon as the output would pass `limit` (the work done is
    /// bounded: a small input cannot make this allocate more than `limit` plus 64 KiB);
    /// [`DecompressError::InvalidData`] for a corrupt stream. The decompressor is reset after
    /// an error; `out` may hold partial output.
    pub fn decompress(
        &mut self,
        input: &[u8],
        limit: usize,
        reset: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), DecompressError> {
        let bits = self.inflate_bits;
        let inflate = self.inflate.get_or_insert_with(|| Inflate::new(false, bits));
        if reset {
            inflate.reset(false);
        }
        // An empty payload carries no block at all; appending the tail to it would leave the
        // decompressor inside a half-read stored block header. Some peers send empty
        // messages this way, so it reads as the empty message it means.
        if input.is_empty() {
            return Ok(());
        }
        let result = Self::inflate_all(inflate, input, limit, out);
        if result.is_err() {
            inflate.reset(false);
        }
        result
    }

    fn inflate_all(
        inflate: &mut Inflate,
        input: &[u8],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), DecompressError> {
        let start = out.len();
        // The room offered per call is zeroed first (no unsafe here): start near the likely
        // size, a few times the compressed size, and double while it fills up.
        let mut step = (input.len() * 4).clamp(256, STEP);
        for piece in [input, &TAIL[..]] {
            let mut consumed = 0;
            loop {
                let produced = out.len() - start;
                let room = step.min(limit - produced + 1).max(1);
                let at = out.len();
                out.resize(at + room, 0);
                let (in_before, out_before) = (inflate.total_in(), inflate.total_out());
                let status = inflate
                    .decompress(&piece[consumed..], &mut out[at..], InflateFlush::SyncFlush)
                    .map_err(|_| DecompressError::InvalidData)?;
                consumed += (inflate.total_in() - in_before) as usize;
                let written = (inflate.total_out() - out_before) as usize;
                out.truncate(at + written);
                if out.len() - start > limit {
                    return Err(DecompressError::TooBig);
                }
                match status {
                    // A final block (BFINAL) ends the stream: what follows must be our tail.
                    Status::StreamEnd => {
                        inflate.reset(false);
                        return Ok(());
                    }
                    _ if consumed == piece.len() && written < room => break,
                    Status::BufError if written == 0 => break,
                    _ => step = (step * 2).min(STEP),
                }
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec")
            .field("level", &self.level)
            .field("mem_level", &self.mem_level)
            .field("compressors", &self.deflate.iter().filter(|d| d.is_some()).count())
            .field("decompressor", &self.inflate.is_some())
            .field("whole_decompressor", &self.unpack.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflate(codec: &mut Codec, input: &[u8]) -> Vec<u8> {
        let mut out = vec![];
        codec.decompress(input, 1 << 20, false, &mut out).unwrap();
        out
    }

    /// RFC 7692 §7.2.3's examples.
    #[test]
    fn rfc_examples_decompress() {
        let mut c = Codec::new(1, 8, 15);
        // §7.2.3.1: "Hello" in one compressed message.
        assert_eq!(inflate(&mut c, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]), b"Hello");
        // §7.2.3.2: the same again, referring to the previous message (context takeover).
        assert_eq!(inflate(&mut c, &[0xf2, 0x00, 0x11, 0x00, 0x00]), b"Hello");
        // §7.2.3.3: a DEFLATE block with no compression.
        let mut c = Codec::new(1, 8, 15);
        assert_eq!(
            inflate(&mut c, &[0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00]),
            b"Hello"
        );
        // §7.2.3.4: a block with BFINAL set.
        let mut c = Codec::new(1, 8, 15);
        assert_eq!(inflate(&mut c, &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00]), b"Hello");
        // §7.2.3.5: two DEFLATE blocks in one message.
        let mut c = Codec::new(1, 8, 15);
        let two = [0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate(&mut c, &two), b"Hello");
        // §7.2.3.6: an empty message is a single 0x00.
        let mut c = Codec::new(1, 8, 15);
        assert_eq!(inflate(&mut c, &[0x00]), b"");
        let mut out = vec![];
        c.compress(15, b"", true, true, &mut out);
        assert_eq!(out, [0x00]);
    }

    #[test]
    fn round_trips_with_every_window_and_context_rule() {
        let text: Vec<u8> =
            (0..20_000).map(|i| b"the quick brown fox jumps "[i % 26] ^ (i / 997) as u8).collect();
        for bits in 9..=15u8 {
            for reset in [false, true] {
                let mut tx = Codec::new(1, 8, 15);
                let mut rx = Codec::new(1, 8, bits);
                for round in 0..3 {
                    let msg = &text[round * 1000..round * 1000 + 5000];
                    let mut wire = vec![];
                    tx.compress(bits, msg, true, reset, &mut wire);
                    assert!(wire.len() < msg.len(), "compressed something");
                    let mut back = vec![];
                    rx.decompress(&wire, 1 << 20, reset, &mut back).unwrap();
                    assert!(back == msg, "bits {bits} reset {reset} round {round}");
                }
            }
        }
    }

    #[test]
    fn a_message_compressed_in_pieces_decompresses_whole() {
        let msg: Vec<u8> = b"{\"price\": 101.25, \"symbol\": \"XYZ\"} ".repeat(300);
        for reset_each_piece in [false, true] {
            let mut tx = Codec::new(6, 8, 15);
            let mut wire = vec![];
            let pieces: Vec<&[u8]> = msg.chunks(1000).collect();
            for (i, piece) in pieces.iter().enumerate() {
                // Resetting between pieces (a shared codec) still makes a valid stream.
                tx.compress(
                    15,
                    piece,
                    i == pieces.len() - 1,
                    reset_each_piece || i == 0,
                    &mut wire,
                );
            }
            let mut rx = Codec::new(1, 8, 15);
            let mut back = vec![];
            rx.decompress(&wire, 1 << 20, true, &mut back).unwrap();
            assert!(back == msg);
        }
    }

    /// Found by the `inflate` fuzz target: a flush with nothing new writes nothing, so a
    /// second empty message once went out as an empty payload and broke the peer's stream.
    #[test]
    fn empty_messages_keep_the_stream_in_step() {
        for level in [0, 1, 9] {
            let mut tx = Codec::new(level, 8, 15);
            let mut rx = Codec::new(1, 8, 15);
            for msg in [&b""[..], b"", b"abc", b"", b"", b"abcabc", b""] {
                let mut wire = vec![];
                tx.compress(15, msg, true, false, &mut wire);
                assert!(!wire.is_empty(), "level {level}: a message always has a block");
                let mut back = vec![];
                rx.decompress(&wire, msg.len(), false, &mut back).unwrap();
                assert_eq!(back, msg, "level {level}");
            }
            // A fragmented message whose last piece adds nothing.
            let mut wire = vec![];
            tx.compress(15, b"tail", false, false, &mut wire);
            tx.compress(15, b"", true, false, &mut wire);
            let mut back = vec![];
            rx.decompress(&wire, 4, false, &mut back).unwrap();
            assert_eq!(back, b"tail");
        }
        // A peer's empty payload reads as an empty message and leaves the stream usable.
        let mut rx = Codec::new(1, 8, 15);
        let mut out = vec![];
        rx.decompress(&[], 0, false, &mut out).unwrap();
        assert!(out.is_empty());
        assert_eq!(inflate(&mut rx, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]), b"Hello");
    }

    #[test]
    fn bombs_stop_at_the_limit() {
        let zeros = vec![0u8; 8 << 20];
        let mut tx = Codec::new(9, 9, 15);
        let mut bomb = vec![];
        tx.compress(15, &zeros, true, true, &mut bomb);
        assert!(bomb.len() < 20 << 10, "8 MiB of zeros compress to {} bytes", bomb.len());
        let mut rx = Codec::new(1, 8, 15);
        let mut out = vec![];
        assert_eq!(rx.decompress(&bomb, 1 << 20, false, &mut out), Err(DecompressError::TooBig));
        assert!(out.len() <= (1 << 20) + 1 + STEP);
        assert!(out.capacity() <= 4 << 20, "grew to {}", out.capacity());
        // The codec recovers for the next message.
        let mut wire = vec![];
        tx.compress(15, b"fine", true, true, &mut wire);
        let mut out = vec![];
        rx.decompress(&wire, 10, true, &mut out).unwrap();
        assert_eq!(out, b"fine");
        // Exactly at the limit is fine.
        let mut out = vec![];
        rx.decompress(&wire, 4, true, &mut out).unwrap();
        let mut out = vec![];
        assert_eq!(rx.decompress(&wire, 3, true, &mut out), Err(DecompressError::TooBig));
    }

    fn json_like(len: usize) -> Vec<u8> {
        let record = br#"{"id":42,"name":"sensor","values":[1.5,2.25,3.0],"ok":true},"#;
        (0..len).map(|i| record[i % record.len()] ^ u8::from(i % 257 == 0)).collect()
    }

    #[test]
    fn whole_messages_round_trip_through_either_decompressor() {
        for bits in 9..=15u8 {
            let mut tx = Codec::new(1, 8, 15);
            // A live stream that never resets, as a peer keeping context would decompress.
            let mut stream = Codec::new(1, 8, bits);
            let mut whole = Codec::new(1, 8, bits);
            for len in [0, 1, 100, 1000, 5000, 20_000, 40_000] {
                let msg = json_like(len);
                let mut wire = vec![];
                tx.compress_message(bits, &msg, &mut wire);
                assert!(len < 1000 || wire.len() < msg.len() / 4, "{len}: {}", wire.len());
                let mut back = vec![];
                stream.decompress(&wire, len, false, &mut back).unwrap();
                assert!(back == msg, "bits {bits} len {len}: streamed");
                let mut back = b"kept".to_vec();
                whole.decompress_message(&wire, len, &mut back).unwrap();
                assert!(back[4..] == msg[..], "bits {bits} len {len}: whole");
            }
        }
    }

    /// The same shape as zlib-rs's fastest level (fixed codes, sync-flushed), no larger.
    #[test]
    fn whole_messages_compress_as_well_as_the_fastest_stream() {
        for len in [1 << 10, 16 << 10] {
            let msg = json_like(len);
            let (mut whole, mut stream) = (vec![], vec![]);
            Codec::new(1, 8, 15).compress_message(15, &msg, &mut whole);
            Codec::new(1, 8, 15).compress(15, &msg, true, true, &mut stream);
            assert!(whole.len() <= stream.len(), "{len}: {} > {}", whole.len(), stream.len());
        }
    }

    /// RFC 7692 §7.2.3's examples that stand alone, and a stream split in sync-flushed runs.
    #[test]
    fn standalone_messages_decompress_whole() {
        let mut c = Codec::new(1, 8, 15);
        let mut inflate = |input: &[u8]| {
            let mut out = vec![];
            c.decompress_message(input, 1 << 20, &mut out).map(|()| out)
        };
        assert_eq!(inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]).unwrap(), b"Hello");
        let stored = [0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00];
        assert_eq!(inflate(&stored).unwrap(), b"Hello");
        let bfinal = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(inflate(&bfinal).unwrap(), b"Hello");
        let two = [0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate(&two).unwrap(), b"Hello");
        assert_eq!(inflate(&[0x00]).unwrap(), b"");
        assert_eq!(inflate(&[]).unwrap(), b"");
        // Cut inside a block, or not DEFLATE at all.
        assert_eq!(inflate(&[0xf2, 0x48, 0xcd]), Err(DecompressError::InvalidData));
        assert_eq!(inflate(&[0xff, 0xff, 0xff, 0xff, 0xff]), Err(DecompressError::InvalidData));
        // Pieces compressed one by one, each sync-flushed, make one standalone message.
        let msg = json_like(30_000);
        let mut tx = Codec::new(1, 8, 15);
        let mut wire = vec![];
        let pieces: Vec<&[u8]> = msg.chunks(7000).collect();
        for (i, piece) in pieces.iter().enumerate() {
            tx.compress(15, piece, i == pieces.len() - 1, i == 0, &mut wire);
        }
        assert!(inflate(&wire).unwrap() == msg);
    }

    #[test]
    fn standalone_bombs_stop_at_the_limit() {
        let mut tx = Codec::new(9, 9, 15);
        let mut bomb = vec![];
        tx.compress(15, &vec![0u8; 8 << 20], true, true, &mut bomb);
        let mut rx = Codec::new(1, 8, 15);
        for limit in [0, 1000, 1 << 20] {
            let mut out = vec![];
            assert_eq!(rx.decompress_message(&bomb, limit, &mut out), Err(DecompressError::TooBig));
            assert_eq!(out.len(), limit + 1);
            assert!(out.capacity() <= (2 * (limit + 1)).max(8), "grew to {}", out.capacity());
        }
        // The next message is unaffected; exactly at the limit is fine, a byte less is not.
        let mut wire = vec![];
        tx.compress_message(15, b"fine", &mut wire);
        let mut out = vec![];
        rx.decompress_message(&wire, 4, &mut out).unwrap();
        assert_eq!(out, b"fine");
        assert_eq!(rx.decompress_message(&wire, 3, &mut vec![]), Err(DecompressError::TooBig));
    }

    #[test]
    fn garbage_is_invalid_data() {
        let mut rx = Codec::new(1, 8, 15);
        let mut out = vec![];
        assert_eq!(
            rx.decompress(&[0xff, 0xff, 0xff, 0xff, 0xff], 1 << 20, false, &mut out),
            Err(DecompressError::InvalidData)
        );
    }
}
