//! Cutting a byte stream into frames, in place.
//!
//! The [`Deframer`] reads from an [`Input`], the caller's buffer of received bytes, and yields
//! [`Chunk`]s: a frame's validated header and the byte range of (part of) its payload, already
//! unmasked in place. It never copies payload and never waits for a whole frame: a payload
//! split across reads comes out as several chunks, each as soon as its bytes are there. Only a
//! header split across reads is copied, into the deframer's own 14 bytes.
//!
//! Rules that need only the frame are enforced here: [`FrameRepr::parse`]'s, the masking
//! direction (§5.1), reserved bits no extension claimed (§5.2), and the frame size limit. Rules
//! about sequences of frames belong to the [`Connection`](crate::Connection).

use core::ops::Range;

use crate::Role;
use crate::error::{Error, InvalidFrame};
use crate::frame::{
    FrameHeader, FrameRepr, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, MIN_HEADER_LEN, OpCode, Rsv, mask,
};

/// The caller's buffer of received bytes and how far it has been consumed.
///
/// Consumers read from the front. Bytes before [`Input::consumed`] have been taken, possibly
/// rewritten in place (unmasked), and are not looked at again.
#[derive(Debug)]
pub struct Input<'b> {
    buf: &'b mut [u8],
    /// INVARIANT: `pos <= buf.len()`.
    pos: usize,
}

impl<'b> Input<'b> {
    /// An input over received bytes, none consumed.
    pub fn new(buf: &'b mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }

    /// Bytes not consumed yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The bytes in `range`, e.g. a [`Chunk::payload`].
    ///
    /// # Panics
    ///
    /// If `range` is out of the buffer's bounds.
    pub fn get(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// The bytes in `range`, writable.
    ///
    /// # Panics
    ///
    /// If `range` is out of the buffer's bounds.
    pub fn get_mut(&mut self, range: Range<usize>) -> &mut [u8] {
        &mut self.buf[range]
    }

    /// Marks every byte consumed, unread.
    pub fn skip_all(&mut self) {
        self.pos = self.buf.len();
    }

    pub(crate) fn unconsumed(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Consumes `n` bytes; returns their range.
    pub(crate) fn advance(&mut self, n: usize) -> Range<usize> {
        debug_assert!(n <= self.remaining());
        let start = self.pos;
        self.pos += n;
        start..self.pos
    }

    pub(crate) fn bytes_mut(&mut self, range: Range<usize>) -> &mut [u8] {
        &mut self.buf[range]
    }
}

/// Part or all of one frame's payload, unmasked in place in the [`Input`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The frame's validated header. `frame.mask` is the key that was removed.
    pub frame: FrameRepr,
    /// Where the bytes are in the input.
    pub payload: Range<usize>,
    /// Offset of the first byte within the frame's payload.
    pub offset: u64,
    /// Whether this chunk ends the frame.
    pub is_last: bool,
}

impl Chunk {
    /// Whether this chunk starts the frame.
    pub fn is_first(&self) -> bool {
        self.offset == 0
    }

    /// Whether this chunk is the whole frame.
    pub fn is_whole(&self) -> bool {
        self.is_first() && self.is_last
    }
}

/// The frame whose payload is being read.
#[derive(Clone, Copy, Debug)]
struct Current {
    frame: FrameRepr,
    /// INVARIANT: `read <= frame.payload_len`.
    read: u64,
}

/// Incremental, in-place frame parser. 64 bytes of state.
#[derive(Clone, Debug)]
pub struct Deframer {
    /// Bytes of a header split across inputs.
    /// INVARIANT: `partial_len <= MAX_HEADER_LEN`, and it is 0 while `current` is `Some`. It
    /// holds a whole header only when that header was refused (the error repeats).
    partial: [u8; MAX_HEADER_LEN],
    partial_len: u8,
    current: Option<Current>,
    expect_masked: bool,
    allowed_rsv: Rsv,
    max_frame_size: u64,
}

impl Deframer {
    /// A deframer for the given side: a server expects masked frames, a client unmasked ones.
    /// Frames with a longer payload than `max_frame_size` are refused at their header.
    pub fn new(role: Role, max_frame_size: usize) -> Self {
        Self {
            partial: [0; MAX_HEADER_LEN],
            partial_len: 0,
            current: None,
            expect_masked: role == Role::Server,
            allowed_rsv: Rsv::NONE,
            max_frame_size: max_frame_size as u64,
        }
    }

    /// Changes the largest payload accepted, for frames whose header is yet to come.
    pub fn set_max_frame_size(&mut self, max_frame_size: usize) {
        self.max_frame_size = max_frame_size as u64;
    }

    /// Lets frames carry these reserved bits (an extension negotiated them).
    pub fn allow_rsv(&mut self, rsv: Rsv) {
        self.allowed_rsv = self.allowed_rsv.union(rsv);
    }

    /// Whether the deframer is between frames with no partial header: a stream may end here.
    pub fn is_at_boundary(&self) -> bool {
        self.current.is_none() && self.partial_len == 0
    }

    #[cfg(fuzzing)]
    pub(crate) fn check_invariants(&self) {
        assert!(usize::from(self.partial_len) <= MAX_HEADER_LEN);
        if let Some(current) = self.current {
            assert_eq!(self.partial_len, 0);
            assert!(current.read <= current.frame.payload_len);
            assert!(current.frame.payload_len <= self.max_frame_size);
        }
    }

    /// Consumes bytes from `input` up to the next chunk and returns it.
    ///
    /// Returns `None` once `input` is exhausted: its bytes were consumed into the state (a
    /// partial header is kept; payload bytes always come out as chunks). Zero-length frames
    /// yield one empty chunk.
    ///
    /// # Errors
    ///
    /// A header that breaks a rule fails with its [`Error`] without consuming it, so calling
    /// again returns the same error; a connection that gets one is done.
    #[inline]
    pub fn next(&mut self, input: &mut Input<'_>) -> Option<Result<Chunk, Error>> {
        if self.current.is_none()
            && self.partial_len == 0
            && let Some(chunk) = self.next_small(input)
        {
            return Some(Ok(chunk));
        }
        let (frame, read) = match self.current {
            Some(current) => (current.frame, current.read),
            None => match self.read_header(input)? {
                Ok(frame) => (frame, 0),
                Err(e) => return Some(Err(e)),
            },
        };
        let remaining = frame.payload_len - read;
        if remaining > 0 && input.is_empty() {
            self.current = Some(Current { frame, read });
            return None;
        }
        let n = remaining.min(input.remaining() as u64) as usize;
        let payload = input.advance(n);
        if let Some(key) = frame.mask {
            mask::apply_mask(input.bytes_mut(payload.clone()), key, (read & 3) as usize);
        }
        let is_last = n as u64 == remaining;
        self.current = if is_last { None } else { Some(Current { frame, read: read + n as u64 }) };
        Some(Ok(Chunk { frame, payload, offset: read, is_last }))
    }

    /// The fast path for the common case: a valid frame with a 7- or 16-bit length lying whole
    /// in the input. Anything else, errors included, is left to the general path (which the
    /// `frame` fuzz target checks it against: a whole input takes this path, one cut byte by
    /// byte the other).
    #[inline(always)]
    fn next_small(&mut self, input: &mut Input<'_>) -> Option<Chunk> {
        let rest = input.unconsumed();
        let [flags, len, ..] = *rest else { return None };
        let masked = len & 0x80 != 0;
        let (length_len, payload_len) = match len & 0x7f {
            127 => return None,
            126 => {
                let [_, _, hi, lo, ..] = *rest else { return None };
                let n = u16::from_be_bytes([hi, lo]);
                if n < 126 {
                    return None;
                }
                (2, usize::from(n))
            }
            n => (0, usize::from(n)),
        };
        let key_at = 2 + length_len;
        let header_len = key_at + if masked { 4 } else { 0 };
        if masked != self.expect_masked || rest.len() < header_len + payload_len {
            return None;
        }
        let opcode = OpCode::from_bits(flags & 0x0f)?;
        let fin = flags & 0x80 != 0;
        let rsv = Rsv::from_bits_truncate(flags);
        let control_ok = !opcode.is_control() || (fin && payload_len <= MAX_CONTROL_PAYLOAD);
        if !control_ok
            || !rsv.difference(self.allowed_rsv).is_empty()
            || payload_len as u64 > self.max_frame_size
        {
            return None;
        }
        let mask =
            masked.then(|| [rest[key_at], rest[key_at + 1], rest[key_at + 2], rest[key_at + 3]]);
        input.advance(header_len);
        let payload = input.advance(payload_len);
        if let Some(key) = mask {
            mask::apply_mask(input.bytes_mut(payload.clone()), key, 0);
        }
        let frame = FrameRepr { fin, rsv, opcode, mask, payload_len: payload_len as u64 };
        Some(Chunk { frame, payload, offset: 0, is_last: true })
    }

    /// Reads a header, from the input in place or through `partial`. `None`: need more bytes.
    #[inline(always)]
    fn read_header(&mut self, input: &mut Input<'_>) -> Option<Result<FrameRepr, Error>> {
        if self.partial_len == 0 {
            let rest = input.unconsumed();
            return match FrameHeader::new_checked(rest) {
                Ok(header) => {
                    let len = header.header_len();
                    let frame = self.validate(&header);
                    if frame.is_ok() {
                        input.advance(len);
                    }
                    Some(frame)
                }
                Err(_) => {
                    // A truncated header is shorter than MAX_HEADER_LEN: keep it.
                    let n = rest.len();
                    self.partial[..n].copy_from_slice(rest);
                    self.partial_len = n as u8;
                    input.advance(n);
                    None
                }
            };
        }
        // Complete the split header a few bytes at a time; it is at most 14 bytes.
        loop {
            let have = usize::from(self.partial_len);
            let needed = if have < MIN_HEADER_LEN {
                MIN_HEADER_LEN
            } else {
                FrameHeader::new_unchecked(&self.partial[..have]).header_len()
            };
            if have == needed {
                let frame = self.validate(&FrameHeader::new_unchecked(&self.partial[..have]));
                if frame.is_ok() {
                    self.partial_len = 0;
                }
                return Some(frame);
            }
            let take = (needed - have).min(input.remaining());
            if take == 0 {
                return None;
            }
            let range = input.advance(take);
            self.partial[have..have + take].copy_from_slice(input.get(range));
            self.partial_len += take as u8;
        }
    }

    #[inline(always)]
    fn validate(&self, header: &FrameHeader<&[u8]>) -> Result<FrameRepr, Error> {
        let frame = FrameRepr::parse(header)?;
        if frame.mask.is_some() != self.expect_masked {
            return Err(if self.expect_masked {
                InvalidFrame::UnmaskedFrame
            } else {
                InvalidFrame::MaskedFrame
            }
            .into());
        }
        let stray = frame.rsv.difference(self.allowed_rsv);
        if !stray.is_empty() {
            return Err(InvalidFrame::ReservedBits(stray.bits()).into());
        }
        if frame.payload_len > self.max_frame_size {
            return Err(Error::FrameTooBig { limit: self.max_frame_size });
        }
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::OpCode;

    type Frames = Vec<(OpCode, bool, Vec<u8>)>;

    /// Runs the deframer over `bytes` fed in the given piece sizes (cycled); collects every
    /// chunk's (opcode, fin, payload) and the error, if any.
    fn deframe(role: Role, bytes: &[u8], pieces: &[usize]) -> (Frames, Option<Error>) {
        let mut d = Deframer::new(role, 1 << 20);
        let mut out: Frames = vec![];
        let mut data = bytes.to_vec();
        let mut at = 0;
        let mut i = 0;
        while at < data.len() {
            let n = pieces[i % pieces.len()].min(data.len() - at).max(1);
            i += 1;
            let mut input = Input::new(&mut data[at..at + n]);
            while let Some(chunk) = d.next(&mut input) {
                match chunk {
                    Ok(c) => {
                        let bytes = input.get(c.payload.clone()).to_vec();
                        match out.last_mut() {
                            Some(last) if !c.is_first() => last.2.extend(bytes),
                            _ => out.push((c.frame.opcode, c.frame.fin, bytes)),
                        }
                    }
                    Err(e) => return (out, Some(e)),
                }
            }
            assert!(input.is_empty());
            at += n;
        }
        (out, None)
    }

    const MASKED_HELLO: [u8; 11] =
        [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];

    #[test]
    fn masked_hello_in_every_split() {
        for piece in 1..=MASKED_HELLO.len() {
            let (frames, err) = deframe(Role::Server, &MASKED_HELLO, &[piece]);
            assert_eq!(err, None);
            assert_eq!(frames, vec![(OpCode::Text, true, b"Hello".to_vec())], "piece {piece}");
        }
    }

    #[test]
    fn many_frames_in_one_buffer() {
        let mut bytes = vec![];
        bytes.extend([0x01, 0x03, b'H', b'e', b'l']); // text, not fin
        bytes.extend([0x89, 0x00]); // empty ping in between
        bytes.extend([0x80, 0x02, b'l', b'o']); // continuation, fin
        bytes.extend([0x82, 0x7e, 0x01, 0x00]);
        bytes.extend([7u8; 256]);
        for pieces in [&[usize::MAX][..], &[1], &[3, 1, 7], &[13, 2]] {
            let (frames, err) = deframe(Role::Client, &bytes, pieces);
            assert_eq!(err, None);
            assert_eq!(
                frames,
                vec![
                    (OpCode::Text, false, b"Hel".to_vec()),
                    (OpCode::Ping, true, vec![]),
                    (OpCode::Continuation, true, b"lo".to_vec()),
                    (OpCode::Binary, true, vec![7; 256]),
                ]
            );
        }
    }

    #[test]
    fn masking_direction_is_enforced() {
        let (_, err) = deframe(Role::Server, &[0x81, 0x00], &[2]);
        assert_eq!(err, Some(InvalidFrame::UnmaskedFrame.into()));
        let (_, err) = deframe(Role::Client, &MASKED_HELLO, &[11]);
        assert_eq!(err, Some(InvalidFrame::MaskedFrame.into()));
    }

    #[test]
    fn reserved_bits_need_an_extension() {
        let frame = [0xc1, 0x80, 0, 0, 0, 0];
        let (_, err) = deframe(Role::Server, &frame, &[6]);
        assert_eq!(err, Some(InvalidFrame::ReservedBits(0x40).into()));
        let mut d = Deframer::new(Role::Server, 1 << 20);
        d.allow_rsv(Rsv::RSV1);
        let mut data = frame;
        let chunk = d.next(&mut Input::new(&mut data)).unwrap().unwrap();
        assert_eq!(chunk.frame.rsv, Rsv::RSV1);
        assert!(chunk.is_whole());
    }

    #[test]
    fn frame_size_limit_is_checked_at_the_header() {
        let mut d = Deframer::new(Role::Client, 100);
        let mut data = [0x82, 0x7e, 0x00, 0xc8]; // announces 200 bytes, none sent
        let mut input = Input::new(&mut data);
        assert_eq!(d.next(&mut input), Some(Err(Error::FrameTooBig { limit: 100 })));
        assert_eq!(input.consumed(), 0);
        // The error repeats and nothing is consumed.
        assert_eq!(d.next(&mut input), Some(Err(Error::FrameTooBig { limit: 100 })));
    }

    #[test]
    fn boundary_tracking() {
        let mut d = Deframer::new(Role::Client, 1 << 20);
        assert!(d.is_at_boundary());
        let mut data = [0x82, 0x03, 1];
        let mut input = Input::new(&mut data[..1]);
        assert!(d.next(&mut input).is_none());
        assert!(!d.is_at_boundary());
        let mut input = Input::new(&mut data[1..]);
        let c = d.next(&mut input).unwrap().unwrap();
        assert_eq!((c.payload.len(), c.offset, c.is_last), (1, 0, false));
        assert!(!d.is_at_boundary());
        assert!(d.next(&mut input).is_none());
    }
}
