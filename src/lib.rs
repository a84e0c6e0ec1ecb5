//! bidir: a zero-copy WebSocket engine for Linux servers.
//!
//! Per-core workers run their own event loop (io_uring by default, epoll through mio where the
//! kernel has no usable io_uring), parse HTTP upgrades and WebSocket frames in place, and call
//! plain synchronous [`Handler`]s; frames queued during a loop turn go out in one write per
//! socket. No async runtime is involved.
//!
//! ```no_run
//! use bidir::{Context, Handler, Message, Request, Server};
//!
//! struct Echo;
//! impl Handler for Echo {
//!     fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
//!         let _ = cx.send(msg); // queued, coalesced, never blocks
//!     }
//! }
//!
//! Server::builder()
//!     .bind("0.0.0.0:9001")
//!     .route("/echo", |_req: &Request<'_>| Ok(Echo))
//!     .run()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! `run` serves until Ctrl-C (SIGINT) or SIGTERM, then closes every connection with 1001 and
//! returns ([`ServerBuilder::run`]); [`ServerBuilder::start`] returns a [`ServerHandle`] to
//! stop it another way.
//!
//! # Threading
//!
//! Each worker owns a `SO_REUSEPORT` listener, a slab of connections, a timer wheel, a
//! mailbox and a subscription table; the kernel spreads new connections over the workers and
//! a connection never leaves its worker. Handlers run on their connection's worker, one call
//! at a time, and must not block. Other threads reach connections through [`ConnHandle`] and
//! the server through [`ServerHandle`]; both push commands into a worker's mailbox with one
//! wake-up per batch.
//!
//! # Layers
//!
//! - [`protocol`] (`bidir-protocol`): the sans-IO protocol core — handshake, frames,
//!   messages, close, heartbeats, permessage-deflate (RFC 7692).
//! - `bidir-sys`: the OS layer — the backend contract, the io_uring and epoll backends, an
//!   in-memory backend for tests, sockets, CPU pinning, signals.
//! - this crate: workers, routing, the handler API ([`Handler`], [`Context`], [`Sink`]),
//!   backpressure, timers, pub/sub, cross-thread handles, clients ([`client`]), the
//!   thread-per-connection adapter ([`blocking`]), metrics.
//!
//! docs/architecture.md in the repository walks through the data path.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod batch;
pub mod blocking;
pub mod client;
mod config;
mod cx;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod handle;
mod handler;
mod history;
mod mailbox;
mod meta;
mod metrics;
#[cfg(feature = "redis")]
pub mod nodes;
mod origin;
mod outq;
mod peers;
mod pubsub;
mod receipt;
mod route;
pub mod rpc;
mod send;
mod server;
mod sink;
pub mod testbed;
mod timer;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(not(feature = "tls"))]
#[path = "notls.rs"]
mod tls;
mod worker;

pub use bidir_macros::{callback, service};
pub use bidir_protocol as protocol;
pub use bidir_protocol::deflate::DeflateConfig;
pub use bidir_protocol::{CloseCode, DataKind, Fragment, FrameKind, Message, State};
pub use bidir_sys::UringConfig;
pub use bidir_sys::signal::Signals;
pub use bytes::Bytes;
pub use hdrhistogram;

pub use batch::Batch;
pub use config::{BackendChoice, BackendInfo, Backpressure, ServerConfig};
pub use handle::ConnHandle;
pub use handler::{CloseInfo, Context, Handler};
pub use meta::ConnId;
pub use metrics::{Counters, Stats};
pub use origin::{InvalidOrigin, OriginPolicy, OriginRefused};
pub use receipt::{Outcome, Receipt};
pub use route::{Accept, HttpResponse, IntoAccept, Request, TOKEN_PROTOCOL_PREFIX};
pub use server::{Server, ServerBuilder, ServerHandle};
pub use sink::Sink;
pub use timer::TimerId;

use std::{fmt, io};

/// Why a send was refused; nothing was queued. The one error of every [`Sink`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is closing or closed.
    Closed,
    /// The connection's queue is over
    /// [`ServerConfig::max_backpressure`](crate::ServerConfig::max_backpressure).
    Backpressure,
    /// The protocol refused the frame (fragment order, control payload length, close code,
    /// invalid UTF-8 in text).
    Protocol(protocol::SendError),
    /// Writing to the socket failed: only where the send writes itself (the blocking
    /// [`client`]); the connection is unusable afterwards. The kind, not the `io::Error`, so
    /// that the error stays `Copy` and comparable: a failed send names its cause by kind
    /// (broken pipe, connection reset); the blocking client's own methods give the whole
    /// [`io::Error`].
    Io(io::ErrorKind),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("connection is closing or closed"),
            Self::Backpressure => f.write_str("send queue is over its limit"),
            Self::Protocol(e) => write!(f, "{e}"),
            Self::Io(kind) => write!(f, "socket error: {kind}"),
        }
    }
}

impl std::error::Error for SendError {}

/// The README's code runs as a doctest, so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
