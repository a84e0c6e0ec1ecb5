//! Frames as zero-copy views over the caller's buffer (RFC 6455 §5).
//!
//! The vocabulary follows smoltcp's `wire` module:
//!
//! - [`FrameHeader<T>`] is a view over bytes: getters read fields straight from the buffer,
//!   setters write them. [`FrameHeader::new_checked`] proves the buffer holds the whole header;
//!   after it succeeds no getter panics. Use it on untrusted input. Never use it to emit: a
//!   reused buffer's stale bytes would decide the header length.
//! - [`FrameRepr`] is the validated value: [`FrameRepr::parse`] checks the header-only rules,
//!   [`FrameRepr::emit`] writes a header into a buffer of at least [`FrameRepr::buffer_len`]
//!   bytes and never panics on one.
//! - [`mask`] unmasks payloads in place; [`close`] parses and emits close payloads.
//!
//! The [`Deframer`](crate::Deframer) builds on these to cut a byte stream into frames.

pub mod close;
mod header;
pub mod mask;
mod opcode;

pub use close::{CloseCode, ClosePayload, MAX_CLOSE_REASON};
pub use header::{
    FrameHeader, FrameRepr, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, MIN_HEADER_LEN, Rsv, Truncated,
};
pub use opcode::{DataKind, OpCode};
