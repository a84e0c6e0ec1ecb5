//! bidir: a zero-copy WebSocket engine for Linux servers.
//!
//! The engine (per-core workers on epoll or io_uring, the synchronous `Handler` API, the
//! client) grows here in the next milestones. Today this crate re-exports the sans-IO protocol
//! core, [`protocol`], which everything else is built on.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub use bidir_protocol as protocol;

/// The README's code runs as a doctest, so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
