//! Errors, layered by the rule they enforce, and the close code each one maps to.
//!
//! A normal close is not an error: it arrives as [`Event::Close`](crate::Event::Close). An
//! [`Error`] means the connection failed: the [`Connection`](crate::Connection) has queued the
//! close frame that [`CloseCode::from(&error)`](CloseCode) names, when one may be sent, and
//! accepts no more input.

use core::fmt;

use crate::frame::CloseCode;

/// Why a connection failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A frame header broke a rule of RFC 6455 §5.2–§5.5. Close code 1002.
    InvalidFrame(InvalidFrame),
    /// The peer broke a rule about the sequence of frames or the close payload. Close code 1002.
    PeerMisbehaved(PeerMisbehaved),
    /// A text message or a close reason is not valid UTF-8 (RFC 6455 §8.1). Close code 1007.
    ///
    /// Detected at the first invalid byte, even in the middle of a fragmented message.
    InvalidUtf8,
    /// A frame announced a payload longer than
    /// [`Config::max_frame_size`](crate::Config::max_frame_size). Close code 1009.
    FrameTooBig {
        /// The limit in force.
        limit: u64,
    },
    /// A message grew past [`Config::max_message_size`](crate::Config::max_message_size).
    /// Close code 1009.
    MessageTooBig {
        /// The limit in force.
        limit: u64,
    },
    /// A message was split into more frames than
    /// [`Config::max_fragments`](crate::Config::max_fragments) allows. Close code 1009.
    TooManyFragments {
        /// The limit in force.
        limit: u32,
    },
    /// Nothing was received within [`Config::pong_timeout`](crate::Config::pong_timeout) of a
    /// heartbeat ping. Reported as 1006; no close frame is sent to a peer that is not there.
    PongTimeout,
    /// The peer did not answer our close frame within
    /// [`Config::close_timeout`](crate::Config::close_timeout). Reported as 1006.
    CloseTimeout,
    /// A compressed message is not valid DEFLATE data (RFC 7692 §7.2.2). Close code 1007.
    InvalidCompressedData,
    /// The byte stream ended before the closing handshake completed. Reported as 1006.
    UnexpectedEof,
    /// The application failed while handling the connection (raised through
    /// [`Connection::fail`](crate::Connection::fail), e.g. by an engine whose handler
    /// panicked). Close code 1011.
    Internal,
}

impl Error {
    /// The close code that describes this failure, as [`From<&Error> for CloseCode`] gives it.
    pub fn close_code(&self) -> CloseCode {
        CloseCode::from(self)
    }

    /// Whether the failure is answered with a close frame (it is unless the peer is gone or
    /// silent).
    pub fn sends_close_frame(&self) -> bool {
        self.close_code().is_sendable()
    }
}

impl From<&Error> for CloseCode {
    #[inline]
    fn from(error: &Error) -> Self {
        match error {
            Error::InvalidFrame(_) | Error::PeerMisbehaved(_) => Self::PROTOCOL_ERROR,
            Error::InvalidUtf8 | Error::InvalidCompressedData => Self::INVALID_PAYLOAD,
            Error::FrameTooBig { .. }
            | Error::MessageTooBig { .. }
            | Error::TooManyFragments { .. } => Self::MESSAGE_TOO_BIG,
            Error::PongTimeout | Error::CloseTimeout | Error::UnexpectedEof => Self::ABNORMAL,
            Error::Internal => Self::INTERNAL_ERROR,
        }
    }
}

impl From<InvalidFrame> for Error {
    #[inline]
    fn from(e: InvalidFrame) -> Self {
        Self::InvalidFrame(e)
    }
}

impl From<PeerMisbehaved> for Error {
    #[inline]
    fn from(e: PeerMisbehaved) -> Self {
        Self::PeerMisbehaved(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidFrame(e) => write!(f, "invalid frame: {e}"),
            Self::PeerMisbehaved(e) => write!(f, "peer misbehaved: {e}"),
            Self::InvalidUtf8 => f.write_str("invalid UTF-8 in a text message or close reason"),
            Self::FrameTooBig { limit } => write!(f, "frame larger than the {limit}-byte limit"),
            Self::MessageTooBig { limit } => {
                write!(f, "message larger than the {limit}-byte limit")
            }
            Self::TooManyFragments { limit } => {
                write!(f, "message split into more than {limit} frames")
            }
            Self::InvalidCompressedData => f.write_str("invalid compressed data"),
            Self::PongTimeout => f.write_str("no answer to a heartbeat ping"),
            Self::CloseTimeout => f.write_str("no answer to our close frame"),
            Self::UnexpectedEof => f.write_str("connection ended before the closing handshake"),
            Self::Internal => f.write_str("internal error"),
        }
    }
}

impl std::error::Error for Error {}

/// A frame header breaks a rule of RFC 6455 §5. Each variant names one rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidFrame {
    /// §5.2: opcodes 0x3–0x7 and 0xB–0xF are reserved.
    ReservedOpcode(u8),
    /// §5.2: RSV bits must be 0 unless a negotiated extension defines them (the bits set).
    ReservedBits(u8),
    /// §5.5: control frames must not be fragmented.
    FragmentedControlFrame,
    /// §5.5: control frames carry at most 125 bytes (the announced length).
    ControlFrameTooLong(u64),
    /// §5.2: "the minimal number of bytes MUST be used to encode the length".
    NonMinimalLength,
    /// §5.2: the most significant bit of a 64-bit length must be 0.
    LengthMsbSet,
    /// §5.1: a client must mask every frame it sends; the server got an unmasked one.
    UnmaskedFrame,
    /// §5.1: a server must not mask frames; the client got a masked one.
    MaskedFrame,
}

impl fmt::Display for InvalidFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            Self::ReservedBits(bits) => {
                write!(f, "reserved bits {bits:#04x} set without an extension")
            }
            Self::FragmentedControlFrame => f.write_str("fragmented control frame"),
            Self::ControlFrameTooLong(len) => write!(f, "control frame of {len} bytes (max 125)"),
            Self::NonMinimalLength => f.write_str("payload length not minimally encoded"),
            Self::LengthMsbSet => f.write_str("most significant bit of the 64-bit length set"),
            Self::UnmaskedFrame => f.write_str("unmasked frame from a client"),
            Self::MaskedFrame => f.write_str("masked frame from a server"),
        }
    }
}

impl std::error::Error for InvalidFrame {}

/// The peer broke a rule about frame sequences or close payloads (RFC 6455 §5.4, §5.5.1, §7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerMisbehaved {
    /// §5.4: a continuation frame arrived with no fragmented message in progress.
    UnexpectedContinuation,
    /// §5.4: a new text or binary frame arrived while a fragmented message was in progress.
    ExpectedContinuation,
    /// §5.5.1: a close payload of one byte (a code needs two).
    ClosePayloadTooShort,
    /// §7.4: a close code that may not be sent (the code).
    InvalidCloseCode(u16),
}

impl fmt::Display for PeerMisbehaved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnexpectedContinuation => {
                f.write_str("continuation frame outside a fragmented message")
            }
            Self::ExpectedContinuation => f.write_str("new message inside a fragmented message"),
            Self::ClosePayloadTooShort => f.write_str("one-byte close payload"),
            Self::InvalidCloseCode(code) => write!(f, "close code {code} may not be sent"),
        }
    }
}

impl std::error::Error for PeerMisbehaved {}

/// A send was refused; nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is closing or closed: after a close frame is sent, no data may follow
    /// (RFC 6455 §5.5.1).
    Closed,
    /// A fragmented message is in progress; finish it before starting another.
    FragmentInProgress,
    /// A continuation was sent with no fragmented message in progress.
    NoFragmentInProgress,
    /// A control payload longer than 125 bytes, or a close reason longer than 123.
    ControlPayloadTooLong,
    /// A close code that may not be sent (1005, 1006, 1015, reserved ranges).
    InvalidCloseCode(CloseCode),
    /// Text fragments that are not valid UTF-8 once joined.
    InvalidUtf8,
    /// A piece of a compressed fragmented message must go through
    /// [`Connection::send_frame`](crate::Connection::send_frame), which compresses it.
    CompressedFragmentInProgress,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("connection is closing or closed"),
            Self::FragmentInProgress => f.write_str("a fragmented message is in progress"),
            Self::NoFragmentInProgress => f.write_str("no fragmented message is in progress"),
            Self::ControlPayloadTooLong => f.write_str("control payload longer than 125 bytes"),
            Self::InvalidCloseCode(code) => write!(f, "close code {code} may not be sent"),
            Self::InvalidUtf8 => f.write_str("text fragments are not valid UTF-8"),
            Self::CompressedFragmentInProgress => {
                f.write_str("a compressed fragmented message continues through send_frame")
            }
        }
    }
}

impl std::error::Error for SendError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes() {
        assert_eq!(CloseCode::from(&Error::from(InvalidFrame::MaskedFrame)), CloseCode(1002));
        assert_eq!(
            CloseCode::from(&Error::from(PeerMisbehaved::UnexpectedContinuation)),
            CloseCode(1002)
        );
        assert_eq!(Error::InvalidUtf8.close_code(), CloseCode(1007));
        assert_eq!(Error::FrameTooBig { limit: 1 }.close_code(), CloseCode(1009));
        assert_eq!(Error::MessageTooBig { limit: 1 }.close_code(), CloseCode(1009));
        assert_eq!(Error::TooManyFragments { limit: 1 }.close_code(), CloseCode(1009));
        for local in [Error::PongTimeout, Error::CloseTimeout, Error::UnexpectedEof] {
            assert_eq!(local.close_code(), CloseCode::ABNORMAL);
            assert!(!local.sends_close_frame());
        }
        assert!(Error::InvalidUtf8.sends_close_frame());
        assert_eq!(Error::Internal.close_code(), CloseCode(1011));
    }

    #[test]
    fn errors_stay_small() {
        assert!(size_of::<Error>() <= 16, "{}", size_of::<Error>());
    }
}
