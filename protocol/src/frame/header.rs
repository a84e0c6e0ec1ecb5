//! The frame header: a zero-copy view ([`FrameHeader`]) and its validated value ([`FrameRepr`]).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! ```
//! (RFC 6455 §5.2.)

use core::fmt;

use super::OpCode;
use crate::error::InvalidFrame;

/// The shortest header: flags byte and length byte.
pub const MIN_HEADER_LEN: usize = 2;
/// The longest header: 2 + 8 (64-bit length) + 4 (mask key).
pub const MAX_HEADER_LEN: usize = 14;
/// The largest payload a control frame may carry (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Byte offsets and bit masks of the header fields.
mod field {
    pub(super) const FLAGS: usize = 0;
    pub(super) const LEN: usize = 1;
    pub(super) const EXT_LEN: usize = 2;

    pub(super) const FIN: u8 = 0x80;
    pub(super) const RSV: u8 = 0x70;
    pub(super) const OPCODE: u8 = 0x0F;
    pub(super) const MASK: u8 = 0x80;
    pub(super) const LEN7: u8 = 0x7F;

    /// `len7` value announcing a 16-bit extended length.
    pub(super) const LEN_16: u8 = 126;
    /// `len7` value announcing a 64-bit extended length.
    pub(super) const LEN_64: u8 = 127;
}

/// Reserved bits RSV1–RSV3 as they sit in the first header byte (`0b0RRR_0000`).
///
/// An extension negotiated at the handshake may claim bits (permessage-deflate claims
/// [`Rsv::RSV1`]); any other set bit fails the connection (RFC 6455 §5.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rsv(u8);

impl Rsv {
    /// No reserved bit set.
    pub const NONE: Self = Self(0);
    /// RSV1, claimed by permessage-deflate for "compressed message" (RFC 7692 §6).
    pub const RSV1: Self = Self(0x40);
    /// RSV2.
    pub const RSV2: Self = Self(0x20);
    /// RSV3.
    pub const RSV3: Self = Self(0x10);

    /// The bits from the first header byte; bits outside `0x70` are dropped.
    pub const fn from_bits_truncate(bits: u8) -> Self {
        Self(bits & field::RSV)
    }

    /// The bits in header position (`0b0RRR_0000`).
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits of `self` that are not in `allowed`.
    pub const fn difference(self, allowed: Self) -> Self {
        Self(self.0 & !allowed.0)
    }

    /// Both sets of bits.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// The buffer is too short to hold the whole header; `needed` bytes would be enough to learn
/// more (it is exact once the first two bytes are present).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncated {
    /// The length the buffer must reach.
    pub needed: usize,
}

impl fmt::Display for Truncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "frame header truncated: {} bytes needed", self.needed)
    }
}

impl std::error::Error for Truncated {}

/// A read/write view of a frame header at the start of a buffer.
///
/// Getters need only `T: AsRef<[u8]>`; setters need `AsMut` too. The view does not validate
/// anything by itself: [`FrameHeader::new_checked`] only proves that the buffer holds the whole
/// header, so that no getter panics; [`FrameRepr::parse`] checks the RFC rules.
///
/// # Panics
///
/// Getters on a view made with [`FrameHeader::new_unchecked`] over a buffer shorter than
/// [`FrameHeader::header_len`] panic. Use [`FrameHeader::new_checked`] on untrusted input.
/// Setters assume the buffer is long enough for the header they write; size it with
/// [`FrameRepr::buffer_len`] and emit with [`FrameRepr::emit`] rather than calling them one by one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> FrameHeader<T> {
    /// A view over `buffer` without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view over `buffer` that has been checked to hold the whole header.
    ///
    /// # Errors
    ///
    /// [`Truncated`] if the buffer ends before the header does; nothing is consumed, the caller
    /// waits for more bytes.
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
    }

    /// Checks that the buffer holds the whole header, so that no getter panics.
    ///
    /// # Errors
    ///
    /// [`Truncated`] with the length to wait for.
    pub fn check_len(&self) -> Result<(), Truncated> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(Truncated { needed: MIN_HEADER_LEN });
        }
        let needed = self.header_len();
        if len < needed { Err(Truncated { needed }) } else { Ok(()) }
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Length of the whole header: 2, 4 or 10 bytes, plus 4 if masked.
    ///
    /// # Panics
    ///
    /// If the buffer is shorter than [`MIN_HEADER_LEN`].
    #[inline]
    pub fn header_len(&self) -> usize {
        let b = self.buffer.as_ref()[field::LEN];
        let ext = match b & field::LEN7 {
            field::LEN_64 => 8,
            field::LEN_16 => 2,
            _ => 0,
        };
        let mask = if b & field::MASK != 0 { 4 } else { 0 };
        MIN_HEADER_LEN + ext + mask
    }

    /// The FIN bit: this is the final frame of a message.
    #[inline]
    pub fn fin(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & field::FIN != 0
    }

    /// The reserved bits RSV1–RSV3.
    #[inline]
    pub fn rsv(&self) -> Rsv {
        Rsv::from_bits_truncate(self.buffer.as_ref()[field::FLAGS])
    }

    /// The raw 4-bit opcode, reserved values included.
    #[inline]
    pub fn opcode_bits(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS] & field::OPCODE
    }

    /// The opcode, or `None` for a reserved value.
    #[inline]
    pub fn opcode(&self) -> Option<OpCode> {
        OpCode::from_bits(self.opcode_bits())
    }

    /// The MASK bit: the payload is masked with [`FrameHeader::mask_key`].
    #[inline]
    pub fn is_masked(&self) -> bool {
        self.buffer.as_ref()[field::LEN] & field::MASK != 0
    }

    /// The 7-bit length field: the length itself, or 126/127 for an extended length.
    #[inline]
    pub fn len7(&self) -> u8 {
        self.buffer.as_ref()[field::LEN] & field::LEN7
    }

    /// The payload length in bytes as written, without the minimal-encoding and MSB checks of
    /// [`FrameRepr::parse`].
    #[inline]
    pub fn payload_len(&self) -> u64 {
        let b = self.buffer.as_ref();
        match self.len7() {
            field::LEN_16 => u64::from(u16::from_be_bytes([b[2], b[3]])),
            field::LEN_64 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[field::EXT_LEN..field::EXT_LEN + 8]);
                u64::from_be_bytes(n)
            }
            n => u64::from(n),
        }
    }

    /// The masking key, if the MASK bit is set.
    #[inline]
    pub fn mask_key(&self) -> Option<[u8; 4]> {
        if !self.is_masked() {
            return None;
        }
        let at = self.mask_offset();
        let b = self.buffer.as_ref();
        Some([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    fn mask_offset(&self) -> usize {
        match self.len7() {
            field::LEN_64 => 10,
            field::LEN_16 => 4,
            _ => 2,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> FrameHeader<T> {
    /// Sets or clears FIN.
    #[inline]
    pub fn set_fin(&mut self, fin: bool) {
        let b = &mut self.buffer.as_mut()[field::FLAGS];
        *b = (*b & !field::FIN) | if fin { field::FIN } else { 0 };
    }

    /// Sets the reserved bits.
    #[inline]
    pub fn set_rsv(&mut self, rsv: Rsv) {
        let b = &mut self.buffer.as_mut()[field::FLAGS];
        *b = (*b & !field::RSV) | rsv.bits();
    }

    /// Sets the opcode.
    #[inline]
    pub fn set_opcode(&mut self, opcode: OpCode) {
        let b = &mut self.buffer.as_mut()[field::FLAGS];
        *b = (*b & !field::OPCODE) | opcode.bits();
    }

    /// Writes the payload length in its minimal form (7, 16 or 64 bits), keeping the MASK bit.
    ///
    /// This changes [`FrameHeader::header_len`], so it invalidates an earlier `check_len`.
    #[inline]
    pub fn set_payload_len(&mut self, len: u64) {
        let b = self.buffer.as_mut();
        let mask = b[field::LEN] & field::MASK;
        if len < u64::from(field::LEN_16) {
            b[field::LEN] = mask | len as u8;
        } else if let Ok(len) = u16::try_from(len) {
            b[field::LEN] = mask | field::LEN_16;
            b[field::EXT_LEN..field::EXT_LEN + 2].copy_from_slice(&len.to_be_bytes());
        } else {
            b[field::LEN] = mask | field::LEN_64;
            b[field::EXT_LEN..field::EXT_LEN + 8].copy_from_slice(&len.to_be_bytes());
        }
    }

    /// Sets the MASK bit and writes the key, or clears the bit. Call after
    /// [`FrameHeader::set_payload_len`]: the key's position depends on the length form.
    #[inline]
    pub fn set_mask_key(&mut self, key: Option<[u8; 4]>) {
        let at = self.mask_offset();
        let b = self.buffer.as_mut();
        match key {
            Some(key) => {
                b[field::LEN] |= field::MASK;
                b[at..at + 4].copy_from_slice(&key);
            }
            None => b[field::LEN] &= !field::MASK,
        }
    }
}

impl<T: AsRef<[u8]>> fmt::Debug for FrameHeader<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.check_len().is_err() {
            return f
                .debug_struct("FrameHeader")
                .field("truncated", &self.buffer.as_ref())
                .finish();
        }
        f.debug_struct("FrameHeader")
            .field("fin", &self.fin())
            .field("rsv", &self.rsv())
            .field("opcode", &self.opcode_bits())
            .field("mask", &self.mask_key())
            .field("payload_len", &self.payload_len())
            .finish()
    }
}

/// A validated frame header.
///
/// [`FrameRepr::parse`] enforces the rules that depend on the header alone (RFC 6455 §5.2,
/// §5.5): a defined opcode, control frames final and at most 125 bytes, a minimally encoded
/// length with the most significant bit clear. The rules that depend on the connection
/// (masking direction, reserved bits an extension may claim, continuation order, size limits)
/// are the [`Deframer`](crate::Deframer)'s and the [`Connection`](crate::Connection)'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameRepr {
    /// Final frame of its message.
    pub fin: bool,
    /// Reserved bits.
    pub rsv: Rsv,
    /// The opcode.
    pub opcode: OpCode,
    /// Masking key; clients must mask, servers must not (RFC 6455 §5.1).
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_len: u64,
}

impl FrameRepr {
    /// Validates the header.
    ///
    /// # Errors
    ///
    /// The [`InvalidFrame`] rule that the header breaks.
    ///
    /// # Panics
    ///
    /// If the header has not passed [`FrameHeader::check_len`].
    #[inline(always)]
    pub fn parse<T: AsRef<[u8]>>(header: &FrameHeader<T>) -> Result<Self, InvalidFrame> {
        let b = header.buffer.as_ref();
        let (flags, len) = (b[field::FLAGS], b[field::LEN]);
        let bits = flags & field::OPCODE;
        let opcode = OpCode::from_bits(bits).ok_or(InvalidFrame::ReservedOpcode(bits))?;
        let fin = flags & field::FIN != 0;
        let (payload_len, mask_at) = match len & field::LEN7 {
            field::LEN_16 => {
                let n = u64::from(u16::from_be_bytes([b[2], b[3]]));
                if n < u64::from(field::LEN_16) {
                    return Err(InvalidFrame::NonMinimalLength);
                }
                (n, 4)
            }
            field::LEN_64 => {
                let n = u64::from_be_bytes(b[2..10].try_into().expect("checked header"));
                if n >> 63 != 0 {
                    return Err(InvalidFrame::LengthMsbSet);
                }
                if n <= u64::from(u16::MAX) {
                    return Err(InvalidFrame::NonMinimalLength);
                }
                (n, 10)
            }
            n => (u64::from(n), 2),
        };
        if opcode.is_control() {
            if !fin {
                return Err(InvalidFrame::FragmentedControlFrame);
            }
            if payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(InvalidFrame::ControlFrameTooLong(payload_len));
            }
        }
        let mask = if len & field::MASK != 0 {
            Some(b[mask_at..mask_at + 4].try_into().expect("checked header"))
        } else {
            None
        };
        Ok(Self { fin, rsv: Rsv::from_bits_truncate(flags), opcode, mask, payload_len })
    }

    /// Length of the header this value emits.
    pub const fn buffer_len(&self) -> usize {
        let ext = if self.payload_len < field::LEN_16 as u64 {
            0
        } else if self.payload_len <= u16::MAX as u64 {
            2
        } else {
            8
        };
        let mask = if self.mask.is_some() { 4 } else { 0 };
        MIN_HEADER_LEN + ext + mask
    }

    /// Writes the header into the start of `header`'s buffer; bytes past
    /// [`FrameRepr::buffer_len`] are left alone.
    ///
    /// # Panics
    ///
    /// If the buffer is shorter than [`FrameRepr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, header: &mut FrameHeader<T>) {
        let b = header.buffer.as_mut();
        assert!(b.len() >= self.buffer_len(), "frame header buffer too short");
        b[field::FLAGS] = 0;
        b[field::LEN] = 0;
        header.set_fin(self.fin);
        header.set_rsv(self.rsv);
        header.set_opcode(self.opcode);
        header.set_payload_len(self.payload_len);
        header.set_mask_key(self.mask);
    }

    /// Emits the header into a fresh array; returns it with the used length.
    pub fn to_bytes(&self) -> ([u8; MAX_HEADER_LEN], usize) {
        let mut buf = [0u8; MAX_HEADER_LEN];
        self.emit(&mut FrameHeader::new_unchecked(&mut buf[..]));
        (buf, self.buffer_len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6455 §5.7 examples (headers and payloads).
    /// A single-frame unmasked text message ("Hello").
    static UNMASKED_HELLO: [u8; 7] = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    /// A single-frame masked text message ("Hello").
    static MASKED_HELLO: [u8; 11] =
        [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    /// A fragmented unmasked text message: "Hel" then "lo".
    static FRAGMENTED_HELLO: [[u8; 5]; 2] =
        [[0x01, 0x03, 0x48, 0x65, 0x6c], [0x80, 0x02, 0x6c, 0x6f, 0x00]];
    /// Unmasked ping with body "Hello".
    static PING_HELLO: [u8; 7] = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    /// Masked pong with body "Hello".
    static MASKED_PONG_HELLO: [u8; 11] =
        [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    /// 256 bytes binary message in a single unmasked frame (header only).
    static BINARY_256_HEADER: [u8; 4] = [0x82, 0x7E, 0x01, 0x00];
    /// 64 KiB binary message in a single unmasked frame (header only).
    static BINARY_64K_HEADER: [u8; 10] =
        [0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00];

    fn parse(bytes: &[u8]) -> Result<FrameRepr, InvalidFrame> {
        FrameRepr::parse(&FrameHeader::new_checked(bytes).unwrap())
    }

    #[test]
    fn deconstruct_rfc_examples() {
        let h = FrameHeader::new_checked(&UNMASKED_HELLO[..]).unwrap();
        assert_eq!(h.header_len(), 2);
        assert!(h.fin());
        assert_eq!(h.opcode(), Some(OpCode::Text));
        assert_eq!(h.payload_len(), 5);
        assert_eq!(h.mask_key(), None);

        let h = FrameHeader::new_checked(&MASKED_HELLO[..]).unwrap();
        assert_eq!(h.header_len(), 6);
        assert_eq!(h.mask_key(), Some([0x37, 0xfa, 0x21, 0x3d]));
        let r = FrameRepr::parse(&h).unwrap();
        assert_eq!(r.payload_len, 5);

        let first = parse(&FRAGMENTED_HELLO[0]).unwrap();
        assert!(!first.fin);
        assert_eq!(first.opcode, OpCode::Text);
        assert_eq!(first.payload_len, 3);
        let last = parse(&FRAGMENTED_HELLO[1]).unwrap();
        assert!(last.fin);
        assert_eq!(last.opcode, OpCode::Continuation);
        assert_eq!(last.payload_len, 2);

        assert_eq!(parse(&PING_HELLO).unwrap().opcode, OpCode::Ping);
        let pong = parse(&MASKED_PONG_HELLO).unwrap();
        assert_eq!((pong.opcode, pong.mask), (OpCode::Pong, Some([0x37, 0xfa, 0x21, 0x3d])));

        let r = parse(&BINARY_256_HEADER).unwrap();
        assert_eq!((r.opcode, r.payload_len, r.buffer_len()), (OpCode::Binary, 256, 4));
        let r = parse(&BINARY_64K_HEADER).unwrap();
        assert_eq!((r.payload_len, r.buffer_len()), (65536, 10));
    }

    #[test]
    fn construct_rfc_examples_from_poisoned_buffers() {
        let cases: [(&[u8], FrameRepr); 4] = [
            (
                &UNMASKED_HELLO[..2],
                FrameRepr {
                    fin: true,
                    rsv: Rsv::NONE,
                    opcode: OpCode::Text,
                    mask: None,
                    payload_len: 5,
                },
            ),
            (
                &MASKED_HELLO[..6],
                FrameRepr {
                    fin: true,
                    rsv: Rsv::NONE,
                    opcode: OpCode::Text,
                    mask: Some([0x37, 0xfa, 0x21, 0x3d]),
                    payload_len: 5,
                },
            ),
            (
                &BINARY_256_HEADER,
                FrameRepr {
                    fin: true,
                    rsv: Rsv::NONE,
                    opcode: OpCode::Binary,
                    mask: None,
                    payload_len: 256,
                },
            ),
            (
                &BINARY_64K_HEADER,
                FrameRepr {
                    fin: true,
                    rsv: Rsv::NONE,
                    opcode: OpCode::Binary,
                    mask: None,
                    payload_len: 65536,
                },
            ),
        ];
        for (bytes, repr) in cases {
            let mut buf = vec![0xa5; repr.buffer_len()];
            repr.emit(&mut FrameHeader::new_unchecked(&mut buf[..]));
            assert_eq!(&buf[..], bytes);
        }
        let mut buf = [0xa5; 8];
        let repr = FrameRepr {
            fin: false,
            rsv: Rsv::RSV1,
            opcode: OpCode::Text,
            mask: None,
            payload_len: 3,
        };
        repr.emit(&mut FrameHeader::new_unchecked(&mut buf[..]));
        assert_eq!(&buf[..], &[0x41, 0x03, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5]);
    }

    #[test]
    fn truncated_headers_report_what_they_need() {
        assert_eq!(FrameHeader::new_checked(&[][..]).unwrap_err().needed, 2);
        assert_eq!(FrameHeader::new_checked(&[0x81][..]).unwrap_err().needed, 2);
        assert_eq!(FrameHeader::new_checked(&[0x81, 0x85, 0x37][..]).unwrap_err().needed, 6);
        assert_eq!(FrameHeader::new_checked(&[0x82, 0x7e, 0x01][..]).unwrap_err().needed, 4);
        assert_eq!(FrameHeader::new_checked(&[0x82, 0xff, 0, 0, 0][..]).unwrap_err().needed, 14);
        assert!(FrameHeader::new_checked(&MASKED_HELLO[..6]).is_ok());
    }

    #[test]
    fn lengths_must_be_minimal() {
        // 125 in the 16-bit form.
        assert_eq!(parse(&[0x82, 0x7e, 0x00, 0x7d]), Err(InvalidFrame::NonMinimalLength));
        // 126 in the 16-bit form is minimal.
        assert_eq!(parse(&[0x82, 0x7e, 0x00, 0x7e]).unwrap().payload_len, 126);
        // 65535 in the 64-bit form.
        assert_eq!(
            parse(&[0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0xff, 0xff]),
            Err(InvalidFrame::NonMinimalLength)
        );
        // 65536 in the 64-bit form is minimal.
        assert_eq!(parse(&[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]).unwrap().payload_len, 65536);
        // Most significant bit set.
        assert_eq!(
            parse(&[0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(InvalidFrame::LengthMsbSet)
        );
    }

    #[test]
    fn control_frame_rules() {
        assert_eq!(parse(&[0x09, 0x00]), Err(InvalidFrame::FragmentedControlFrame));
        assert_eq!(parse(&[0x89, 0x7e, 0x00, 0x7e]), Err(InvalidFrame::ControlFrameTooLong(126)));
        assert_eq!(parse(&[0x88, 0x7d]).unwrap().payload_len, 125);
        assert_eq!(parse(&[0x83, 0x00]), Err(InvalidFrame::ReservedOpcode(3)));
        assert_eq!(parse(&[0x8b, 0x00]), Err(InvalidFrame::ReservedOpcode(0xb)));
    }

    #[test]
    fn rsv_bits_are_reported_not_judged() {
        let r = parse(&[0xf1, 0x00]).unwrap();
        assert_eq!(r.rsv, Rsv::RSV1.union(Rsv::RSV2).union(Rsv::RSV3));
        assert_eq!(r.rsv.difference(Rsv::RSV1), Rsv::RSV2.union(Rsv::RSV3));
        assert!(r.rsv.contains(Rsv::RSV1));
    }

    #[test]
    fn setters_keep_other_fields() {
        let mut buf = [0u8; MAX_HEADER_LEN];
        let mut h = FrameHeader::new_unchecked(&mut buf[..]);
        h.set_opcode(OpCode::Binary);
        h.set_mask_key(Some([1, 2, 3, 4]));
        h.set_payload_len(70000);
        h.set_mask_key(Some([1, 2, 3, 4]));
        h.set_fin(true);
        assert!(h.fin() && h.is_masked());
        assert_eq!(h.payload_len(), 70000);
        assert_eq!(h.mask_key(), Some([1, 2, 3, 4]));
        assert_eq!(h.header_len(), 14);
        h.set_mask_key(None);
        assert_eq!(h.header_len(), 10);
        assert_eq!(h.opcode(), Some(OpCode::Binary));
    }
}
