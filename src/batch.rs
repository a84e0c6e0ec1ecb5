//! Many sends from one thread to many connections, pushed into each worker's mailbox at once:
//! [`Batch`].

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use bidir_protocol::{DataKind, Message};

use crate::SendError;
use crate::handle::ConnHandle;
use crate::handler::{Context, Handler};
use crate::mailbox::{Command, Mailbox};
use crate::receipt::Receipt;

/// Sends and posts to any number of connections, gathered on the calling thread and pushed
/// with one mailbox lock and at most one wake-up per worker when committed.
///
/// [`ConnHandle::send`] takes the worker's mailbox lock for every message and, when the worker
/// has already emptied its mailbox, writes its eventfd (a system call) to wake it; a thread
/// that fans a message out to thousands of connections pays that per message. A batch pays it
/// per worker. [`Batch::send_shared`] also saves the copy: every connection's queue shares the
/// one payload.
///
/// Each call checks what [`ConnHandle`]'s would (a connection known to be closed, text that
/// is not UTF-8) and counts the payload in the connection's
/// [`buffered_amount`](ConnHandle::buffered_amount) at once. Nothing reaches a worker before
/// [`Batch::commit`]; the batch then keeps its buffers for the next round. A batch dropped
/// with commands in it commits them, as a `BufWriter` flushes: what a call accepted is never
/// lost on the way.
///
/// Ordering: the commands for one worker are applied in the order they were added, and as one
/// block placed, among the other commands from this thread ([`ConnHandle::send`],
/// [`ConnHandle::post`], other batches), where `commit` is called. Commands for different
/// workers have no order between them, as with separate handles.
///
/// Once the worker applies them, sends and posts behave as [`ConnHandle::send`] and
/// [`ConnHandle::post`]: a connection over its backpressure limit, or closed by then, drops
/// the message (counted in [`Stats::dropped_sends`](crate::Stats)).
///
/// ```no_run
/// # fn fan_out(handles: &[bidir::ConnHandle]) {
/// use bidir::{Batch, Bytes, DataKind};
///
/// let tick = Bytes::from_static(b"tick");
/// let mut batch = Batch::new();
/// for handle in handles {
///     // A closed connection refuses; the others still get it.
///     let _ = batch.send_shared(handle, DataKind::Text, tick.clone());
/// }
/// batch.commit(); // one lock and one wake-up per worker
/// # }
/// ```
#[derive(Default)]
pub struct Batch {
    /// Commands per worker mailbox, in the order they were added.
    groups: Vec<(Arc<Mailbox>, Vec<Command>)>,
    /// The group the last command went to: consecutive commands are often for one worker.
    last: usize,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a message for `to`; the payload is copied.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] if the connection is known to be closed; nothing is added.
    pub fn send(&mut self, to: &ConnHandle, msg: Message<'_>) -> Result<(), SendError> {
        self.send_shared(to, msg.kind(), Bytes::copy_from_slice(msg.as_bytes()))
    }

    /// Adds a text message for `to`.
    ///
    /// # Errors
    ///
    /// As [`Batch::send`].
    pub fn send_text(&mut self, to: &ConnHandle, text: &str) -> Result<(), SendError> {
        self.send(to, Message::Text(text))
    }

    /// Adds a binary message for `to`.
    ///
    /// # Errors
    ///
    /// As [`Batch::send`].
    pub fn send_binary(&mut self, to: &ConnHandle, bytes: &[u8]) -> Result<(), SendError> {
        self.send(to, Message::Binary(bytes))
    }

    /// Adds a message for `to` without copying its payload: the same `Bytes` may go to every
    /// connection of the batch.
    ///
    /// # Errors
    ///
    /// As [`Batch::send`]; [`SendError::Protocol`] for text that is not UTF-8.
    pub fn send_shared(
        &mut self,
        to: &ConnHandle,
        kind: DataKind,
        payload: Bytes,
    ) -> Result<(), SendError> {
        let command = to.send_command(kind, payload)?;
        self.add(to, command);
        Ok(())
    }

    /// [`Batch::send_shared`] with a [`Receipt`], as
    /// [`ConnHandle::send_with_receipt`]: settled once the worker applies it, after
    /// [`Batch::commit`].
    ///
    /// # Errors
    ///
    /// As [`Batch::send_shared`].
    pub fn send_with_receipt(
        &mut self,
        to: &ConnHandle,
        kind: DataKind,
        payload: Bytes,
    ) -> Result<Receipt, SendError> {
        let (command, receipt) = to.receipt_command(kind, payload)?;
        self.add(to, command);
        Ok(receipt)
    }

    /// Adds a closure to run with `to`'s handler, as [`ConnHandle::post`] would, in order
    /// with the batch's sends to it.
    ///
    /// # Errors
    ///
    /// As [`ConnHandle::post`].
    pub fn post<F>(&mut self, to: &ConnHandle, f: F) -> Result<(), SendError>
    where
        F: FnOnce(&mut dyn Handler, &mut Context<'_>) + Send + 'static,
    {
        let command = to.post_command(f)?;
        self.add(to, command);
        Ok(())
    }

    /// Commands added and not yet committed.
    pub fn len(&self) -> usize {
        self.groups.iter().map(|(_, commands)| commands.len()).sum()
    }

    /// Whether nothing waits to be committed.
    pub fn is_empty(&self) -> bool {
        self.groups.iter().all(|(_, commands)| commands.is_empty())
    }

    /// Pushes every command added since the last commit: per worker, one lock and at most
    /// one wake-up. Returns how many commands were pushed. The batch is empty afterwards and
    /// may be reused.
    pub fn commit(&mut self) -> usize {
        let mut pushed = 0;
        for (mailbox, commands) in &mut self.groups {
            pushed += commands.len();
            mailbox.push_all(commands);
        }
        pushed
    }

    fn add(&mut self, to: &ConnHandle, command: Command) {
        let hit = self.groups.get(self.last).is_some_and(|(m, _)| Arc::ptr_eq(m, &to.mailbox));
        if !hit {
            self.last = match self.groups.iter().position(|(m, _)| Arc::ptr_eq(m, &to.mailbox)) {
                Some(i) => i,
                None => {
                    self.groups.push((Arc::clone(&to.mailbox), Vec::new()));
                    self.groups.len() - 1
                }
            };
        }
        self.groups[self.last].1.push(command);
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.commit();
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("workers", &self.groups.len())
            .field("pending", &self.len())
            .finish()
    }
}
