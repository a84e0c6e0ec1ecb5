//! [`Sink`]: one way to send on a connection, whichever side holds it, so that a layer above
//! the engine (an application protocol) is written once over all of them.
//!
//! The implementations for [`Context`] and [`ConnHandle`] are here; the blocking client's
//! and the blocking adapter's are in their own modules (`client/blocking.rs`, `blocking.rs`),
//! which depend on this one and not the other way, so no module cycle goes through it.

use bytes::Bytes;

use bidir_protocol::{CloseCode, DataKind, Message};

use crate::{ConnHandle, Context, SendError};

/// Sends messages on one connection and closes it: implemented by a handler's [`Context`], a
/// [`ConnHandle`] (and `&ConnHandle`), the blocking client's `client::WebSocket` and
/// `client::WriteHalf` (and `&WriteHalf`), and the blocking adapter's `blocking::Socket` (and
/// `&Socket`); `&mut S` for any of them.
///
/// # Contract
///
/// - **Ordering**: messages sent through one sink reach the peer in the order they were sent,
///   and a [`close`](Sink::close) comes after every message sent before it. Sinks of one
///   connection used from several threads keep each thread's order, not a global one.
/// - **`Ok`** means accepted, not delivered: queued on the worker ([`Context`]), pushed into
///   its mailbox ([`ConnHandle`], `Socket`), or handed to the kernel (the blocking client). A
///   message accepted by a `ConnHandle` or a `Socket` can still be dropped by the worker (the
///   connection closed, or it is over its backpressure limit), counted in
///   [`Stats::dropped_sends`](crate::Stats).
/// - **Blocking**: [`Context`] and [`ConnHandle`] never block; a `Socket` waits while its
///   outbox is over its listener's `max_outbox`; the blocking client waits for the socket to
///   take the bytes.
/// - **Errors**: one [`SendError`] for all, so that the layer above can tell a closed
///   connection ([`SendError::Closed`]) from a full queue ([`SendError::Backpressure`], the
///   engine's sides only), a refused frame ([`SendError::Protocol`]: a close code that may
///   not be sent, a reason over 123 bytes, text that is not UTF-8) and a failed socket
///   ([`SendError::Io`], the blocking client only). Nothing was sent when an error is
///   returned.
/// - **Close** starts the closing handshake and returns; the peer's answer comes the way each
///   side reports an end — [`Handler::on_close`](crate::Handler::on_close), or
///   `client::Incoming::Close` from `recv` — as a [`CloseInfo`](crate::CloseInfo). (The
///   blocking client's inherent `WebSocket::close` also waits for it; this one does not.)
///
/// The trait is object safe: `&mut dyn Sink` works too.
pub trait Sink {
    /// Sends a whole message.
    ///
    /// # Errors
    ///
    /// [`SendError`], as the trait's contract says.
    fn send(&mut self, msg: Message<'_>) -> Result<(), SendError>;

    /// Sends a text message.
    ///
    /// # Errors
    ///
    /// As [`Sink::send`].
    fn send_text(&mut self, text: &str) -> Result<(), SendError> {
        self.send(Message::Text(text))
    }

    /// Sends a binary message.
    ///
    /// # Errors
    ///
    /// As [`Sink::send`].
    fn send_binary(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        self.send(Message::Binary(bytes))
    }

    /// Sends a message whose payload is shared, not copied, where the sink can queue it as
    /// is (the engine's sides); the blocking client masks what it sends, so it copies here as
    /// in [`Sink::send`], no more. Text is validated as UTF-8.
    ///
    /// # Errors
    ///
    /// As [`Sink::send`]; [`SendError::Protocol`] for text that is not UTF-8.
    fn send_shared(&mut self, kind: DataKind, payload: Bytes) -> Result<(), SendError> {
        let msg = match kind {
            DataKind::Text => Message::Text(
                simdutf8::basic::from_utf8(&payload)
                    .map_err(|_| SendError::Protocol(bidir_protocol::SendError::InvalidUtf8))?,
            ),
            DataKind::Binary => Message::Binary(&payload),
        };
        self.send(msg)
    }

    /// Starts the closing handshake with `code` and `reason` (at most 123 bytes), after the
    /// messages sent before it.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] if the connection is already closing or closed;
    /// [`SendError::Protocol`] for a code that may not be sent
    /// ([`CloseCode::is_sendable`]: not 1005, 1006, 1015 or a reserved one) or a reason over
    /// 123 bytes.
    fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError>;
}

impl<S: Sink + ?Sized> Sink for &mut S {
    fn send(&mut self, msg: Message<'_>) -> Result<(), SendError> {
        (**self).send(msg)
    }

    fn send_shared(&mut self, kind: DataKind, payload: Bytes) -> Result<(), SendError> {
        (**self).send_shared(kind, payload)
    }

    fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        (**self).close(code, reason)
    }
}

impl Sink for Context<'_> {
    fn send(&mut self, msg: Message<'_>) -> Result<(), SendError> {
        Context::send(self, msg)
    }

    fn send_shared(&mut self, kind: DataKind, payload: Bytes) -> Result<(), SendError> {
        Context::send_shared(self, kind, payload)
    }

    fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        Context::close(self, code, reason)
    }
}

/// `Sink` for `$target` through the `&self` methods of `$ty` (a type and a reference to it).
macro_rules! sink_by_ref {
    ($($target:ty => $ty:ty),* $(,)?) => {$(
        impl Sink for $target {
            fn send(&mut self, msg: Message<'_>) -> Result<(), SendError> {
                <$ty>::send(self, msg)
            }

            fn send_shared(&mut self, kind: DataKind, payload: Bytes) -> Result<(), SendError> {
                <$ty>::send_shared(self, kind, payload)
            }

            fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
                <$ty>::close(self, code, reason)
            }
        }
    )*};
}

pub(crate) use sink_by_ref;

sink_by_ref! {
    ConnHandle => ConnHandle,
    &ConnHandle => ConnHandle,
}
