//! What a connection reports to the application.

use crate::frame::CloseCode;
use crate::message::{Fragment, Message};

/// Something the peer did, decoded from received bytes.
///
/// Payloads are borrowed from the input buffer or the caller's spill buffer and live until the
/// next call that feeds the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A whole data message ([`Delivery::Messages`](crate::Delivery::Messages)).
    Message(Message<'a>),
    /// A piece of a data message ([`Delivery::Fragments`](crate::Delivery::Fragments)).
    Fragment(Fragment<'a>),
    /// A ping; already answered when [`Config::auto_pong`](crate::Config::auto_pong) is on.
    Ping(&'a [u8]),
    /// A pong, solicited or not.
    Pong(&'a [u8]),
    /// The peer's close frame. The closing handshake is complete from the protocol's point of
    /// view: either we had sent our close already, or our reply is queued for
    /// [`Connection::poll_transmit`](crate::Connection::poll_transmit). The transport may be
    /// shut once that reply is written.
    ///
    /// This is the clean ending; every unclean one is an [`Error`](crate::Error).
    Close(Close<'a>),
}

/// An event whose whole binary message may be changed where it lies: what
/// [`Connection::handle_bytes_mut`](crate::Connection::handle_bytes_mut) returns.
#[derive(Debug, PartialEq, Eq)]
pub enum EventMut<'a> {
    /// A whole binary message, writable (a receiver decrypts it in place, say).
    Binary(&'a mut [u8]),
    /// Every other event, as [`Connection::handle_bytes`](crate::Connection::handle_bytes)
    /// reports it.
    Other(Event<'a>),
}

/// A received close frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Close<'a> {
    /// The peer's status code; `None` when its close frame had no payload.
    pub code: Option<CloseCode>,
    /// The peer's reason, possibly empty.
    pub reason: &'a str,
    /// Whether we sent our close frame first.
    pub initiated_locally: bool,
}

impl Close<'_> {
    /// The code to report: the peer's, or [`CloseCode::NO_STATUS`] (1005) when it sent none.
    pub fn code_or_no_status(&self) -> CloseCode {
        self.code.unwrap_or(CloseCode::NO_STATUS)
    }
}
