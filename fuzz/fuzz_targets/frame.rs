//! Frame headers and the deframer.
//!
//! - Any header that parses emits back to the same bytes (round trip).
//! - Deframing never panics, keeps its invariants, and gives the same frames and the same
//!   error however the input is split across reads.
#![no_main]

use bidir_protocol::fuzzing;
use bidir_protocol::{Deframer, FrameHeader, FrameRepr, Input, Role};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<(FrameRepr, Vec<u8>)>,
    error: Option<bidir_protocol::Error>,
}

fn deframe(role: Role, data: &[u8], cuts: &[u8]) -> Outcome {
    let mut d = Deframer::new(role, 1 << 16);
    let mut data = data.to_vec();
    let mut frames: Vec<(FrameRepr, Vec<u8>)> = vec![];
    let mut at = 0;
    let mut i = 0;
    while at < data.len() {
        let n = match cuts.get(i) {
            Some(&c) => usize::from(c).max(1),
            None => data.len(),
        }
        .min(data.len() - at);
        i += 1;
        let mut input = Input::new(&mut data[at..at + n]);
        while let Some(chunk) = d.next(&mut input) {
            match chunk {
                Ok(c) => {
                    assert!(c.payload.end <= n);
                    let bytes = input.get(c.payload.clone()).to_vec();
                    if c.is_first() {
                        frames.push((c.frame, bytes));
                    } else {
                        let last = frames.last_mut().expect("continuation of a frame");
                        assert_eq!(last.0, c.frame);
                        last.1.extend(bytes);
                    }
                }
                Err(e) => return Outcome { frames, error: Some(e) },
            }
            fuzzing::check_deframer(&d);
        }
        assert!(input.is_empty());
        at += n;
    }
    Outcome { frames, error: None }
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, rest)) = input.split_first() else { return };
    let cut_len = usize::from(flags & 0x0f).min(rest.len());
    let (cuts, data) = rest.split_at(cut_len);

    if let Ok(header) = FrameHeader::new_checked(data)
        && let Ok(repr) = FrameRepr::parse(&header)
    {
        let mut buf = vec![0xa5; repr.buffer_len()];
        repr.emit(&mut FrameHeader::new_unchecked(&mut buf[..]));
        assert_eq!(&buf[..], &data[..header.header_len()]);
        let again = FrameRepr::parse(&FrameHeader::new_checked(&buf[..]).unwrap()).unwrap();
        assert_eq!(again, repr);
    }

    let role = if flags & 0x80 != 0 { Role::Client } else { Role::Server };
    let whole = deframe(role, data, &[]);
    let split = deframe(role, data, cuts);
    // Errors come from headers only, so every frame before one is complete either way.
    assert_eq!(whole, split);
});
