//! Acting on a connection from any thread: [`ConnHandle`], which pushes commands into the
//! connection's worker mailbox.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use bidir_protocol::{CloseCode, DataKind, Message};

use crate::mailbox::{Command, Mailbox};
use crate::meta::{ConnId, ConnShared};
use crate::pubsub::Registry;
use crate::receipt::{Receipt, Settle};
use crate::{Context, Handler, SendError};

/// Sends to, or closes, one connection from any thread. `Send + Sync + Clone`.
///
/// Each call pushes a command into the connection's worker mailbox and wakes the worker once
/// per batch (an eventfd write only when the mailbox was empty), so many sends from one thread
/// cost one wake-up. Commands from one thread — sends, closes, posts, and what a
/// [`Batch`](crate::Batch) commits — are applied in the order they were made, also across
/// connections of the same worker.
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
        self.mailbox.push(self.send_command(kind, payload)?);
        Ok(())
    }

    /// [`ConnHandle::send`], with a [`Receipt`] that tells whether the worker queued the
    /// message on the connection or dropped it, and why ([`Outcome`](crate::Outcome) says
    /// what "queued" guarantees). A plain send costs nothing of this; this one costs a small
    /// allocation and, when the worker settles it, a lock and a condition-variable notify.
    ///
    /// # Errors
    ///
    /// As [`ConnHandle::send`]: a send refused here has no receipt.
    pub fn send_with_receipt(&self, msg: Message<'_>) -> Result<Receipt, SendError> {
        self.send_shared_with_receipt(msg.kind(), Bytes::copy_from_slice(msg.as_bytes()))
    }

    /// [`ConnHandle::send_shared`] with a [`Receipt`], as [`ConnHandle::send_with_receipt`].
    ///
    /// # Errors
    ///
    /// As [`ConnHandle::send_shared`].
    pub fn send_shared_with_receipt(
        &self,
        kind: DataKind,
        payload: Bytes,
    ) -> Result<Receipt, SendError> {
        let (command, receipt) = self.receipt_command(kind, payload)?;
        self.mailbox.push(command);
        Ok(receipt)
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

impl ConnHandle {
    /// Runs `f` on the connection's worker with its handler and a [`Context`], as if it were
    /// one of the handler's own methods: this is how work done on another thread (a callback
    /// stored by a worker pool, a computed answer) reaches the connection's state.
    ///
    /// Ordering: `f` runs after every send, close and post this thread made to connections of
    /// the same worker before, and before those it makes after (one mailbox, first in, first
    /// out), between two handler calls.
    ///
    /// `f` runs only if the connection is still open when the worker gets to it: after
    /// [`Handler::on_open`] and before [`Handler::on_close`] (a connection that is closing but
    /// not closed still runs it; [`Context::state`] tells). Otherwise — the connection closed
    /// meanwhile, its handler panicked, or the server stopped — `f` is dropped without being
    /// run, on the worker's thread or on this one: whatever it captured is dropped, so a
    /// captured channel sender or a guard with a `Drop` observes it. `f` is called like a
    /// handler method: a panic in it fails the connection with 1011.
    ///
    /// The handler is `&mut dyn Handler`; [`ConnHandle::post_to`] hands over the concrete type.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] if the connection is known to be closed (`f` is dropped unrun).
    pub fn post<F>(&self, f: F) -> Result<(), SendError>
    where
        F: FnOnce(&mut dyn Handler, &mut Context<'_>) + Send + 'static,
    {
        self.mailbox.push(self.post_command(f)?);
        Ok(())
    }

    /// [`ConnHandle::post`] with the handler as its own type `H`: the type the accept hook
    /// returned (unwrapped from a `Box<dyn Handler>` if it returned one), or given to
    /// [`ServerHandle::connect`](crate::ServerHandle::connect).
    ///
    /// If the connection's handler is not an `H`, `f` is dropped without being run, exactly
    /// as for a connection that has closed: the mismatch is a bug of the caller, which the
    /// engine cannot tell at the time of the call (the handler lives on the worker). To serve
    /// several handler types, [`ConnHandle::post`] and downcast by hand.
    ///
    /// # Errors
    ///
    /// As [`ConnHandle::post`].
    pub fn post_to<H, F>(&self, f: F) -> Result<(), SendError>
    where
        H: Handler,
        F: FnOnce(&mut H, &mut Context<'_>) + Send + 'static,
    {
        self.post(move |handler, cx| {
            let handler: &mut dyn Any = handler;
            if let Some(handler) = handler.downcast_mut::<H>() {
                f(handler, cx);
            }
        })
    }
}

impl ConnHandle {
    /// A send, checked and counted in [`ConnHandle::buffered_amount`], to push.
    pub(crate) fn send_command(
        &self,
        kind: DataKind,
        payload: Bytes,
    ) -> Result<Command, SendError> {
        self.admit(kind, &payload)?;
        Ok(Command::Send { id: self.id, kind, payload })
    }

    /// A send whose outcome the returned receipt tells, checked and counted, to push.
    pub(crate) fn receipt_command(
        &self,
        kind: DataKind,
        payload: Bytes,
    ) -> Result<(Command, Receipt), SendError> {
        self.admit(kind, &payload)?;
        let (settle, receipt) = Settle::new();
        Ok((Command::SendWithReceipt { id: self.id, kind, payload, receipt: settle }, receipt))
    }

    /// Refuses a send to a connection known to be closed, or text that is not UTF-8;
    /// counts an admitted payload as in the mailbox.
    fn admit(&self, kind: DataKind, payload: &[u8]) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        if kind == DataKind::Text && simdutf8::basic::from_utf8(payload).is_err() {
            return Err(SendError::Protocol(bidir_protocol::SendError::InvalidUtf8));
        }
        self.shared.in_mailbox.fetch_add(payload.len(), Ordering::Relaxed);
        Ok(())
    }

    /// A post, checked, to push.
    pub(crate) fn post_command<F>(&self, f: F) -> Result<Command, SendError>
    where
        F: FnOnce(&mut dyn Handler, &mut Context<'_>) + Send + 'static,
    {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        Ok(Command::Post { id: self.id, f: Box::new(f) })
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
