//! The WebSocket protocol (RFC 6455) as a sans-IO library: it performs no I/O, reads no clock
//! and owns no threads. Callers pass received bytes, the current [`Instant`] and random seeds
//! in; they get events, and bytes to send, out. Every behaviour can therefore be tested in
//! memory with virtual time, and the same code serves the epoll engine, the io_uring engine,
//! blocking clients and fuzzers. One convenience reads the OS's random source: the `Bidir-Key`
//! entry points of [`rpc::key`], each next to a variant that takes the seed in.
//!
//! # Layers
//!
//! - [`http`]: the opening handshake, parsed in place from the caller's buffer.
//! - [`frame`]: zero-copy frame header views ([`FrameHeader`]) and validated values
//!   ([`FrameRepr`]), masking, close payloads.
//! - [`Deframer`]: cuts a byte stream into frames, unmasking in place.
//! - [`Connection`]: the state machine for either role: message assembly, UTF-8 validation,
//!   limits, ping/pong, the closing handshake, heartbeats and timeouts.
//!
//! # Zero copy
//!
//! Received bytes are parsed and unmasked where they lie. A message that arrives whole in one
//! buffer reaches the application as a borrowed slice of that buffer; only messages split across
//! frames or reads are gathered into the caller's per-connection spill buffer.
//!
//! # Panics and unsafe code
//!
//! No input from the network makes this crate panic; the fuzz targets in `fuzz/` hold it to
//! that. `unsafe` is denied everywhere except [`frame::mask`], which calls vector kernels after
//! checking the CPU supports them.
#![cfg_attr(not(fuzzing), warn(missing_docs))]
#![deny(unsafe_code)]

mod conn;
pub mod deflate;
mod deframer;
pub mod error;
pub mod frame;
pub mod http;
pub mod message;
pub mod rpc;
mod time;

#[cfg(fuzzing)]
pub mod fuzzing;

#[cfg(test)]
mod tests;

pub use conn::{
    Close, Config, Connection, Delivery, EncodedHeader, Event, EventMut, FrameKind, Role, State,
};
pub use deframer::{Chunk, Deframer, Input};
pub use error::{Error, InvalidFrame, PeerMisbehaved, SendError};
pub use frame::{CloseCode, DataKind, FrameHeader, FrameRepr, OpCode};
pub use message::{Fragment, Message};
pub use time::Instant;
