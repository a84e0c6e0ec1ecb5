//! The permessage-deflate path: arbitrary compressed payloads never panic, never produce more
//! than the limit, and whatever this side compresses decompresses to the same bytes.
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
    }
    let bits = 9 + case.window_bits % 7;
    let mut tx = Codec::new(case.level, 1 + case.level % 9, 15);
    let mut rx = Codec::new(1, 8, bits);
    for message in &case.plain {
        let mut wire = Vec::new();
        tx.compress(bits, message, true, case.reset, &mut wire);
        let mut back = Vec::new();
        rx.decompress(&wire, message.len(), case.reset, &mut back)
            .expect("own output decompresses");
        assert_eq!(&back, message);
    }
});
