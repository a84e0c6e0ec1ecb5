//! The permessage-deflate path: arbitrary compressed payloads never panic, never produce more
//! than the limit, and whatever this side compresses decompresses to the same bytes, also
//! with context kept as plaintext windows (compact context), and whole standalone messages
//! (compressed in one call) read by either decompressor: zlib-rs's stream, and libdeflate's
//! one call, which must also stop arbitrary payloads at the limit.
#![no_main]

use arbitrary::Arbitrary;
use bidir_protocol::deflate::{Codec, DecompressError};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Case {
    /// Payloads as a peer would send them (compressed, tail stripped).
    wire: Vec<Vec<u8>>,
    /// Plain messages to compress and decompress.
    plain: Vec<Vec<u8>>,
    window_bits: u8,
    level: u8,
    reset: bool,
    /// Keep context as plaintext windows, priming both codecs per message.
    compact: bool,
    /// Without compact context: compress each message whole, on its own.
    whole: bool,
    limit: u16,
}

fuzz_target!(|case: Case| {
    let limit = usize::from(case.limit);
    let mut rx = Codec::new(1, 8, case.window_bits);
    for payload in &case.wire {
        let mut out = Vec::new();
        match rx.decompress(payload, limit, case.reset, &mut out) {
            Ok(()) => assert!(out.len() <= limit),
            Err(DecompressError::TooBig) => {
                assert!(out.len() > limit && out.len() <= limit + 1 + (64 << 10))
            }
            Err(_) => {}
        }
        let mut out = Vec::new();
        match rx.decompress_message(payload, limit, &mut out) {
            Ok(()) => assert!(out.len() <= limit),
            Err(DecompressError::TooBig) => assert_eq!(out.len(), limit + 1),
            Err(_) => assert!(out.is_empty()),
        }
    }
    let bits = 9 + case.window_bits % 7;
    let mut tx = Codec::new(case.level, 1 + case.level % 9, 15);
    let mut whole_tx = Codec::new(if case.level.is_multiple_of(2) { 1 } else { case.level }, 8, 15);
    let mut rx = Codec::new(1, 8, bits);
    let mut history: Vec<u8> = Vec::new();
    for message in &case.plain {
        let mut wire = Vec::new();
        let mut back = Vec::new();
        if case.compact {
            tx.prime_compressor(bits, &history);
            tx.compress(bits, message, true, false, &mut wire);
            rx.prime_decompressor(&history);
            rx.decompress(&wire, message.len(), false, &mut back).expect("own output decompresses");
            history.extend_from_slice(message);
            let excess = history.len().saturating_sub(1 << bits);
            history.drain(..excess);
        } else {
            if case.whole {
                // Level 1 compresses standalone messages in one call; others as streams.
                whole_tx.compress_message(bits, message, &mut wire);
            } else {
                tx.compress(bits, message, true, case.reset, &mut wire);
            }
            // A stream that keeps going reads standalone messages too.
            rx.decompress(&wire, message.len(), case.reset, &mut back)
                .expect("own output decompresses");
            if case.whole || case.reset {
                let mut alone = Vec::new();
                rx.decompress_message(&wire, message.len(), &mut alone)
                    .expect("own standalone output decompresses whole");
                assert_eq!(&alone, message);
            }
        }
        assert_eq!(&back, message);
    }
});
