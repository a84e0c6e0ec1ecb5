//! A one-call DEFLATE encoder for standalone messages: greedy LZ77 over a hash table
//! sized to the message, the fixed Huffman codes (RFC 1951 §3.2.6), and a sync flush at the
//! end, so the output has exactly the shape of a zlib stream's sync-flushed message.
//!
//! Why: a zlib stream reset per message clears a 2^16-entry table (128 KiB) before it
//! compresses a byte, and a whole-buffer compressor such as libdeflate clears as much and
//! then builds Huffman tables; for a message of a few KiB both cost several times the
//! compression itself. Here the table has about one entry per input byte (2 KiB for 1 KiB),
//! and the codes are fixed, as zlib-ng's fastest level (`deflate_quick`) has them.

/// Messages up to this size (the largest window) are compressed here; positions fit the
/// `u16` table.
pub(crate) const MAX_INPUT: usize = 32 << 10;

const MIN_MATCH: usize = 4;
const MAX_MATCH: usize = 258;

/// The encoder's reusable table (kept between calls, cleared per message only as far as the
/// message needs).
#[derive(Default)]
pub(crate) struct Quick {
    /// Per hash: the last position with that hash, plus one (0: none).
    table: Vec<u16>,
}

impl Quick {
    /// Appends `input` (at most [`MAX_INPUT`] bytes, not empty) compressed as one block with
    /// the fixed codes, with no distance beyond `max_dist`, followed by the start of a sync
    /// flush (an empty stored block's header, padded to a byte) without its `00 00 ff ff`: a
    /// permessage-deflate payload that refers to nothing before it.
    pub(crate) fn compress(&mut self, input: &[u8], max_dist: usize, out: &mut Vec<u8>) {
        debug_assert!(!input.is_empty() && input.len() <= MAX_INPUT);
        let bits = input.len().next_power_of_two().trailing_zeros().clamp(8, 14);
        self.table.clear();
        self.table.resize(1 << bits, 0);
        let mut w = Bits::new(out, input.len());
        w.put(0b010, 3); // BFINAL 0, BTYPE 01: the fixed codes
        let mut i = 0;
        while i + MIN_MATCH <= input.len() {
            let v = read4(input, i);
            let slot = (v.wrapping_mul(0x9E37_79B1) >> (32 - bits)) as usize;
            let candidate = usize::from(self.table[slot]);
            self.table[slot] = (i + 1) as u16;
            if let Some(prev) = candidate.checked_sub(1)
                && i - prev <= max_dist
                && read4(input, prev) == v
            {
                let len = match_length(input, prev, i);
                w.length(len);
                w.distance(i - prev);
                i += len;
            } else {
                w.literal(input[i]);
                i += 1;
            }
        }
        for &byte in &input[i..] {
            w.literal(byte);
        }
        w.put(0, 7); // end of block (symbol 256)
        w.put(0, 3); // the sync flush's stored block header: BFINAL 0, BTYPE 00
        w.finish();
    }
}

/// How far the bytes at `i` repeat those at `prev` (< `i`), from [`MIN_MATCH`] (already
/// compared) up to [`MAX_MATCH`] or the end of the input; eight bytes per step.
fn match_length(input: &[u8], prev: usize, i: usize) -> usize {
    let most = MAX_MATCH.min(input.len() - i);
    let mut len = MIN_MATCH;
    while len + 8 <= most {
        let a = u64::from_le_bytes(input[prev + len..prev + len + 8].try_into().expect("8"));
        let b = u64::from_le_bytes(input[i + len..i + len + 8].try_into().expect("8"));
        if a != b {
            return len + ((a ^ b).trailing_zeros() / 8) as usize;
        }
        len += 8;
    }
    while len < most && input[prev + len] == input[i + len] {
        len += 1;
    }
    len
}

fn read4(input: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([input[at], input[at + 1], input[at + 2], input[at + 3]])
}

/// A little-endian bit writer appending to a byte vector.
struct Bits<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    len: u32,
}

impl<'a> Bits<'a> {
    fn new(out: &'a mut Vec<u8>, input: usize) -> Self {
        // Nine bits per literal at worst, plus the headers.
        out.reserve(input + input / 8 + 16);
        Self { out, acc: 0, len: 0 }
    }

    /// Writes the `n` (at most 16) low bits of `bits`, first bit first.
    fn put(&mut self, bits: u32, n: u32) {
        self.acc |= u64::from(bits) << self.len;
        self.len += n;
        if self.len >= 32 {
            self.out.extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.len -= 32;
        }
    }

    /// A Huffman code of `n` bits, most significant bit first (RFC 1951 §3.1.1).
    fn code(&mut self, code: u32, n: u32) {
        self.put(code.reverse_bits() >> (32 - n), n);
    }

    fn literal(&mut self, byte: u8) {
        let b = u32::from(byte);
        if b < 144 { self.code(0x30 + b, 8) } else { self.code(0x190 + b - 144, 9) }
    }

    /// A match length, 4 to 258: symbols 257–285 (7 or 8 bits) and their extra bits.
    fn length(&mut self, len: usize) {
        let (index, extra, value) = match len - 3 {
            255 => (28, 0, 0),
            x @ 0..8 => (x as u32, 0, 0),
            x => {
                let log = usize::BITS - 1 - x.leading_zeros();
                let index = 4 * (log - 1) + ((x >> (log - 2)) & 3) as u32;
                (index, log - 2, (x & ((1 << (log - 2)) - 1)) as u32)
            }
        };
        let symbol = 257 + index;
        if symbol < 280 {
            self.code(symbol - 256, 7)
        } else {
            self.code(0xc0 + symbol - 280, 8)
        }
        if extra > 0 {
            self.put(value, extra);
        }
    }

    /// A distance, 1 to 32 768: a 5-bit code and its extra bits.
    fn distance(&mut self, dist: usize) {
        let x = dist - 1;
        let (code, extra, value) = if x < 4 {
            (x as u32, 0, 0)
        } else {
            let log = usize::BITS - 1 - x.leading_zeros();
            let code = 2 * log + ((x >> (log - 1)) & 1) as u32;
            (code, log - 1, (x & ((1 << (log - 1)) - 1)) as u32)
        };
        self.code(code, 5);
        if extra > 0 {
            self.put(value, extra);
        }
    }

    /// Writes the last bits, padded with zeros to a byte.
    fn finish(self) {
        let bytes = self.len.div_ceil(8) as usize;
        self.out.extend_from_slice(&self.acc.to_le_bytes()[..bytes]);
    }
}

#[cfg(test)]
mod tests {
    use libdeflater::Decompressor;

    use super::*;

    /// Through libdeflate (a strict decoder) after appending the tail and a final block.
    fn inflate(wire: &[u8], len: usize) -> Vec<u8> {
        let mut padded = wire.to_vec();
        padded.extend_from_slice(&[0, 0, 0xff, 0xff, 0x03, 0x00]);
        let mut out = vec![0; len + 1];
        let n = Decompressor::new().deflate_decompress(&padded, &mut out).expect("valid DEFLATE");
        out.truncate(n);
        out
    }

    #[test]
    fn every_length_and_distance_code_round_trips() {
        let mut q = Quick::default();
        // A match of each length 4..=258 at distances spread over 1..=8 KiB.
        let mut x = 12345u32;
        let mut noise = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        };
        for len in (4..=258).step_by(7).chain([255, 256, 257, 258]) {
            for dist in [1, 2, 3, 4, 5, 7, 9, 100, 257, 1000, 4097, 6000] {
                let mut msg: Vec<u8> = (0..dist.max(len)).map(|_| noise()).collect();
                let start = msg.len() - dist;
                for k in 0..len {
                    msg.push(msg[start + k]);
                }
                msg.extend((0..5).map(|_| noise()));
                if msg.len() > MAX_INPUT {
                    continue;
                }
                let mut wire = vec![];
                q.compress(&msg, 32 << 10, &mut wire);
                assert!(inflate(&wire, msg.len()) == msg, "len {len} dist {dist}");
            }
        }
    }

    #[test]
    fn text_shrinks_every_byte_value_survives_and_distances_stay_in_the_window() {
        let mut q = Quick::default();
        let json = br#"{"id":42,"name":"sensor","values":[1.5,2.25,3.0],"ok":true},"#.repeat(100);
        for len in [1, 3, 4, 5, 100, 1024, 4096, MAX_INPUT] {
            let msg = &json[..len.min(json.len())];
            let mut wire = vec![];
            q.compress(msg, 32 << 10, &mut wire);
            assert!(inflate(&wire, msg.len()) == msg, "{len}");
            assert!(msg.len() < 1000 || wire.len() * 8 < msg.len(), "{len}: {}", wire.len());
        }
        let all: Vec<u8> = (0..=255).chain(0..=255).collect();
        let mut wire = vec![];
        q.compress(&all, 32 << 10, &mut wire);
        assert_eq!(inflate(&wire, all.len()), all);
        // With a 512-byte window, a repeat 600 bytes back goes out as literals.
        let mut x = 99u32;
        let mut msg: Vec<u8> = (0..600)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        msg.extend_from_within(..100);
        let (mut near, mut far) = (vec![], vec![]);
        q.compress(&msg, 512, &mut near);
        q.compress(&msg, 32 << 10, &mut far);
        assert!(near.len() > far.len() + 50, "{} against {}", near.len(), far.len());
        assert_eq!(inflate(&near, msg.len()), msg);
    }
}
