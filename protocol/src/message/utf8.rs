//! Incremental UTF-8 validation across fragments (RFC 6455 §8.1).
//!
//! A text message may be split anywhere, including inside a code point. [`Utf8Validator`]
//! carries the up to three bytes of an incomplete code point from one piece to the next and
//! fails at the first byte that can never start or continue valid UTF-8, so a bad fragment is
//! rejected before the rest of the message arrives ("fail fast", which Autobahn's 6.4.x cases
//! check).

use core::fmt;

/// The bytes are not valid UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utf8Error;

impl fmt::Display for Utf8Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid UTF-8")
    }
}

impl std::error::Error for Utf8Error {}

/// Validates a UTF-8 stream given in pieces.
///
/// Feed every piece in order with [`Utf8Validator::feed`], then call
/// [`Utf8Validator::finish`] at the end of the message. Six bytes of state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Utf8Validator {
    /// The start of an incomplete code point.
    /// INVARIANT: `partial[..len]` is a proper prefix of some valid UTF-8 sequence; `len <= 3`.
    partial: [u8; 4],
    len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a stream.
    pub const fn new() -> Self {
        Self { partial: [0; 4], len: 0 }
    }

    /// Validates the next piece.
    ///
    /// # Errors
    ///
    /// [`Utf8Error`] as soon as the stream so far cannot be the prefix of valid UTF-8. After an
    /// error the validator's state is unspecified; [`Utf8Validator::reset`] it before reuse.
    pub fn feed(&mut self, mut piece: &[u8]) -> Result<(), Utf8Error> {
        if self.len > 0 {
            let have = usize::from(self.len);
            let want = sequence_len(self.partial[0]) - have;
            let take = want.min(piece.len());
            self.partial[have..have + take].copy_from_slice(&piece[..take]);
            let filled = have + take;
            piece = &piece[take..];
            match simdutf8::compat::from_utf8(&self.partial[..filled]) {
                Ok(_) => self.len = 0,
                Err(e) if e.error_len().is_some() => return Err(Utf8Error),
                Err(_) => {
                    // Still incomplete: only possible when the piece ran out.
                    debug_assert!(piece.is_empty());
                    self.len = filled as u8;
                    return Ok(());
                }
            }
        }
        if simdutf8::basic::from_utf8(piece).is_ok() {
            return Ok(());
        }
        let e = simdutf8::compat::from_utf8(piece).expect_err("basic and compat disagree");
        if e.error_len().is_some() {
            return Err(Utf8Error);
        }
        let tail = &piece[e.valid_up_to()..];
        self.partial[..tail.len()].copy_from_slice(tail);
        self.len = tail.len() as u8;
        Ok(())
    }

    /// Ends the stream.
    ///
    /// # Errors
    ///
    /// [`Utf8Error`] if the stream ends inside a code point. The validator is reset either way.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let complete = self.len == 0;
        self.reset();
        if complete { Ok(()) } else { Err(Utf8Error) }
    }

    /// Forgets any incomplete code point, ready for a new stream.
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Whether the stream so far ends on a code point boundary.
    pub fn is_complete(&self) -> bool {
        self.len == 0
    }
}

/// Length of the sequence that a lead byte starts; callers only pass lead bytes that the
/// validator accepted as the start of an incomplete sequence.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate_split(bytes: &[u8], cuts: &[usize]) -> Result<(), Utf8Error> {
        let mut v = Utf8Validator::new();
        let mut at = 0;
        for &cut in cuts {
            v.feed(&bytes[at..cut])?;
            at = cut;
        }
        v.feed(&bytes[at..])?;
        v.finish()
    }

    const SAMPLES: &[&[u8]] = &[
        b"",
        b"Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!",
        "κόσμε".as_bytes(),
        b"\xf0\x90\x80\x80",
        b"\xf4\x8f\xbf\xbf",
        b"\xef\xbf\xbf",
        // Invalid: over U+10FFFF, surrogate, overlong, lone continuation, truncated.
        b"\xf4\x90\x80\x80",
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
        b"\xc0\xaf",
        b"\x80",
        b"\xce\xba\xe1\xbd",
        b"\xe0\x80\xaf",
        b"ab\xff",
    ];

    /// Every sample, cut at every single position and every pair of positions, agrees with
    /// `core::str::from_utf8` on the whole.
    #[test]
    fn agrees_with_std_at_every_split() {
        for &s in SAMPLES {
            let expected = core::str::from_utf8(s).is_ok();
            assert_eq!(validate_split(s, &[]).is_ok(), expected, "{s:x?}");
            for i in 0..=s.len() {
                assert_eq!(validate_split(s, &[i]).is_ok(), expected, "{s:x?} at {i}");
                for j in i..=s.len() {
                    assert_eq!(validate_split(s, &[i, j]).is_ok(), expected, "{s:x?} at {i},{j}");
                }
            }
        }
    }

    /// Fails at the first fragment that cannot be completed, before the message ends
    /// (Autobahn 6.4.x).
    #[test]
    fn fails_fast() {
        let mut v = Utf8Validator::new();
        v.feed("κόσμε".as_bytes()).unwrap();
        assert_eq!(v.feed(b"\xf4\x90\x80\x80"), Err(Utf8Error));

        let mut v = Utf8Validator::new();
        v.feed(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5").unwrap();
        // 0xF4 alone may still become valid; 0xF4 0x90 never can.
        v.feed(b"\xf4").unwrap();
        assert_eq!(v.feed(b"\x90"), Err(Utf8Error));
    }

    #[test]
    fn incomplete_end_is_an_error_and_resets() {
        let mut v = Utf8Validator::new();
        v.feed(b"a\xe2\x82").unwrap();
        assert!(!v.is_complete());
        assert_eq!(v.finish(), Err(Utf8Error));
        assert!(v.is_complete());
        v.feed(b"ok").unwrap();
        assert_eq!(v.finish(), Ok(()));
    }

    /// Exhaustive over every 1-, 2- and 3-byte input fed one byte at a time.
    #[test]
    fn byte_at_a_time_matches_std_on_short_inputs() {
        let mut buf = Vec::with_capacity(3);
        for a in 0u8..=255 {
            for b in [
                0x00u8, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc2, 0xe0, 0xed, 0xf0,
                0xf4, 0xff,
            ] {
                for c in [None, Some(0x80u8), Some(0xbf), Some(0x41)] {
                    buf.clear();
                    buf.extend([a, b]);
                    buf.extend(c);
                    let cuts: Vec<usize> = (1..buf.len()).collect();
                    assert_eq!(
                        validate_split(&buf, &cuts).is_ok(),
                        core::str::from_utf8(&buf).is_ok(),
                        "{buf:x?}"
                    );
                }
            }
        }
    }
}
