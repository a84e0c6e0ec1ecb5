//! Acting on a connection from any thread: [`ConnHandle`], which pushes commands into the
//! connection's worker mailbox.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use bidir_protocol::{CloseCode, DataKind, Message};

use crate::SendError;
use crate::mailbox::{Command, Mailbox};
use crate::meta::{ConnId, ConnShared};
use crate::pubsub::Registry;

/// Sends to, or closes, one connection from any thread. `Send + Sync + Clone`.
///
/// Each call pushes a command into the connection's worker mailbox and wakes the worker once
/// per batch (an eventfd write only when the mailbox was empty), so many sends from one thread
/// cost one wake-up. Commands from one thread are applied in the order they were made.
#[derive(Clone)]
pub struct ConnHandle {
    pub(crate) id: ConnId,
    pub(crate) shared: Arc<ConnShared>,
    pub(crate) mailbox: Arc<Mailbox>,
    /// The server's subscriber counts, for [`ConnHandle::subscribe`].
    pub(crate) registry: Arc<Registry>,
}

impl ConnHandle {
    /// The connection's id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Whether the connection has closed (a send would be refused).
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Bytes queued for the connection and not yet written to its socket: sends from handles
    /// the worker has not applied yet, plus its send queue as of the worker's last loop turn.
    /// For pacing a producer thread (the blocking adapter waits on it).
    pub fn buffered_amount(&self) -> usize {
        self.shared.in_mailbox.load(Ordering::Relaxed) + self.shared.queued.load(Ordering::Relaxed)
    }

    /// Queues a message for the connection; the payload is copied.
    ///
    /// `Ok` means the worker accepted the command. A connection that closes before the worker
    /// applies it drops the message and counts it in [`Stats::dropped_sends`](crate::Stats), as
    /// does one over its backpressure limit.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] if the connection is known to be closed.
    pub fn send(&self, msg: Message<'_>) -> Result<(), SendError> {
        self.send_shared(msg.kind(), Bytes::copy_from_slice(msg.as_bytes()))
    }

    /// Queues a text message.
    ///
    /// # Errors
    ///
    /// As [`ConnHandle::send`].
    pub fn send_text(&self, text: &str) -> Result<(), SendError> {
        self.send(Message::Text(text))
    }

    /// Queues a binary message.
    ///
    /// # Errors
    ///
    /// As [`ConnHandle::send`].
    pub fn send_binary(&self, bytes: &[u8]) -> Result<(), SendError> {
        self.send(Message::Binary(bytes))
    }

    /// Queues a message without copying its payload.
    ///
    /// # Errors
    ///
    /// As [`ConnHandle::send`]; [`SendError::Protocol`] for text that is not UTF-8.
    pub fn send_shared(&self, kind: DataKind, payload: Bytes) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        if kind == DataKind::Text && simdutf8::basic::from_utf8(&payload).is_err() {
            return Err(SendError::Protocol(bidir_protocol::SendError::InvalidUtf8));
        }
        self.shared.in_mailbox.fetch_add(payload.len(), Ordering::Relaxed);
        self.mailbox.push(Command::Send { id: self.id, kind, payload });
        Ok(())
    }

    /// Starts the closing handshake with `code` and `reason`, after what was queued before.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] if the connection is known to be closed;
    /// [`SendError::Protocol`] for a code that may not be sent or a reason over 123 bytes.
    pub fn close(&self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        if !code.is_sendable() {
            return Err(SendError::Protocol(bidir_protocol::SendError::InvalidCloseCode(code)));
        }
        if reason.len() > bidir_protocol::frame::MAX_CLOSE_REASON {
            return Err(SendError::Protocol(bidir_protocol::SendError::ControlPayloadTooLong));
        }
        self.mailbox.push(Command::Close { id: self.id, code, reason: reason.to_owned() });
        Ok(())
    }
}

impl ConnHandle {
    /// Subscribes the connection to `topic`, as [`Context::subscribe`](crate::Context::subscribe)
    /// would, once the worker applies it: in order with this thread's other commands, so a
    /// publish made after it from this thread reaches the connection. A no-op if already
    /// subscribed, or if the connection closes first.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] if the connection is known to be closed.
    pub fn subscribe(&self, topic: &str) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        let topic: Arc<str> = Arc::from(topic);
        let reserved = self.registry.reserve(&topic, self.id.worker());
        self.mailbox.push(Command::Subscribe { id: self.id, topic, reserved });
        Ok(())
    }

    /// Unsubscribes the connection from `topic` once the worker applies it (in order with this
    /// thread's other commands).
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] if the connection is known to be closed.
    pub fn unsubscribe(&self, topic: &str) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        self.mailbox.push(Command::Unsubscribe { id: self.id, topic: Arc::from(topic) });
        Ok(())
    }
}

impl fmt::Debug for ConnHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnHandle")
            .field("id", &self.id)
            .field("closed", &self.is_closed())
            .finish()
    }
}
