//! The HTTP/1.1 opening handshake (RFC 6455 §4), parsed in place.
//!
//! Server side: [`Request::parse`] reads a request head from the caller's buffer into the
//! caller's header array; [`Request::upgrade`] validates it into an [`Upgrade`] or a
//! [`HandshakeError`] that says which status to answer with; [`Accept::write`] emits the 101.
//! [`write_response`] emits any other answer, for refusals and plain HTTP routes.
//!
//! Client side: [`ClientRequest::write`] emits the request; [`Response::parse`] and
//! [`Response::validate`] check the answer.
//!
//! Nothing here allocates on the success path, except the list of offered extension names in
//! [`Response::validate`]. Parsing never consumes bytes on `Partial`.

mod client;
pub mod header;
mod request;
mod response;

pub use client::{ClientRequest, Negotiated, Response, ResponseError};
pub use header::{ExtensionOffer, Extensions, InvalidExtension, Param, Params};
pub use httparse::{EMPTY_HEADER, Header};
pub use request::{Body, HandshakeError, Request, Upgrade};
pub use response::{Accept, AcceptKey, InvalidHeader, StatusCode, write_response};

/// The outcome of an incremental parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status<T> {
    /// The head is complete.
    Complete(T),
    /// More bytes are needed; nothing was consumed.
    Partial,
}

/// Default limit on a request or response head: 8 KiB, as nginx's default for large headers.
/// Browsers send well under 2 KiB unless cookies are large.
pub const DEFAULT_MAX_HEAD_LEN: usize = 8 << 10;
