//! Frame opcodes (RFC 6455 §5.2, §11.8).

use core::fmt;

/// A frame opcode that RFC 6455 defines.
///
/// The reserved values (`0x3`–`0x7` for data, `0xB`–`0xF` for control) have no variant: a frame
/// that carries one is rejected by [`FrameRepr::parse`](super::FrameRepr::parse).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    /// `0x0`: continues a fragmented data message.
    Continuation = 0x0,
    /// `0x1`: first frame of a text message (UTF-8).
    Text = 0x1,
    /// `0x2`: first frame of a binary message.
    Binary = 0x2,
    /// `0x8`: starts or answers the closing handshake.
    Close = 0x8,
    /// `0x9`: keep-alive or round-trip probe; the peer answers with a pong.
    Ping = 0x9,
    /// `0xA`: answer to a ping, or an unsolicited heartbeat.
    Pong = 0xA,
}

impl OpCode {
    /// The opcode for the 4-bit value `bits`, or `None` for a reserved or out-of-range value.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    /// The 4-bit wire value.
    pub const fn bits(self) -> u8 {
        self as u8
    }

    /// Whether this is a control opcode (close, ping, pong): the high bit of the nibble is set
    /// (RFC 6455 §5.5).
    pub const fn is_control(self) -> bool {
        self.bits() & 0x8 != 0
    }

    /// Whether this opcode starts or continues a data message.
    pub const fn is_data(self) -> bool {
        !self.is_control()
    }
}

impl fmt::Display for OpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Continuation => "continuation",
            Self::Text => "text",
            Self::Binary => "binary",
            Self::Close => "close",
            Self::Ping => "ping",
            Self::Pong => "pong",
        })
    }
}

/// The kind of a data message: what its first frame's opcode says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataKind {
    /// UTF-8 text; receivers validate it (RFC 6455 §8.1).
    Text,
    /// Arbitrary bytes.
    Binary,
}

impl DataKind {
    /// The opcode of a message's first frame.
    pub const fn opcode(self) -> OpCode {
        match self {
            Self::Text => OpCode::Text,
            Self::Binary => OpCode::Binary,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_nibble_round_trips_or_is_reserved() {
        for bits in 0u8..=0xFF {
            match OpCode::from_bits(bits) {
                Some(op) => assert_eq!(op.bits(), bits),
                None => assert!(matches!(bits, 0x3..=0x7 | 0xB..=0xFF)),
            }
        }
    }

    #[test]
    fn control_and_data() {
        assert!(
            OpCode::Close.is_control() && OpCode::Ping.is_control() && OpCode::Pong.is_control()
        );
        assert!(
            OpCode::Text.is_data() && OpCode::Binary.is_data() && OpCode::Continuation.is_data()
        );
        assert_eq!(DataKind::Text.opcode(), OpCode::Text);
        assert_eq!(DataKind::Binary.opcode(), OpCode::Binary);
    }
}
