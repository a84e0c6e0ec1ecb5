//! The server's calls to a client's callback that want an answer: [`Pending`].

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use bidir_protocol::rpc::{ErrorBody, ErrorCode};

use super::outbox::Outbox;
use super::slot::Slot;
use super::wire::{Value, ValueRef};
use crate::Context;
use crate::cx::on_worker_thread;

/// How long [`Pending::wait`] waits.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call gave no value: a server's call to a client's callback ([`Pending`]), or a
/// client's call to the server ([`client::Call`](super::client::Call)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// The client answered with an error.
    Remote {
        /// Its kind.
        code: ErrorCode,
        /// Its text.
        message: String,
        /// Its value, as JSON text (translated from MessagePack on `bidir.bin.v1`).
        data: Option<String>,
    },
    /// No answer in time. An answer that comes later is dropped.
    Timeout,
    /// The connection ended before the answer.
    Disconnected,
    /// The callback was released: nothing was sent.
    Released,
    /// [`Pending::wait`] on a worker's thread, where the answer could never be read: continue
    /// with [`Pending::then`] instead.
    WouldBlockWorker,
    /// The answer is not a value of the type asked for, or the arguments could not be written
    /// (in either encoding: the name is older than `bidir.bin.v1`).
    Json(String),
    /// The caller cancelled the call ([`Call::cancel`](super::client::Call::cancel)).
    Cancelled,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Remote { code, message, .. } => write!(f, "{code}: {message}"),
            Self::Timeout => f.write_str("no answer in time"),
            Self::Disconnected => f.write_str("the connection ended before the answer"),
            Self::Released => f.write_str("the callback was released"),
            Self::WouldBlockWorker => f.write_str("waiting on a worker's thread would block it"),
            Self::Json(e) => write!(f, "{e}"),
            Self::Cancelled => f.write_str("the call was cancelled"),
        }
    }
}

impl std::error::Error for CallError {}

impl CallError {
    /// An error answer (`["err", id, code, message, data?]`), as the caller sees it.
    pub(super) fn remote(error: ErrorBody<'_, ValueRef<'_>>) -> Self {
        let ErrorBody { code, message, data } = error;
        let data = data.map(|d| d.to_json());
        Self::Remote { code, message: message.into_owned(), data }
    }
}

/// The answer to a request, on either side: the value, or why there is none.
pub(super) type Answer = Result<Value, CallError>;

/// Reads an answer as a value of type `T`.
///
/// # Errors
///
/// The answer's own error, or [`CallError::Json`] for a value that is not a `T`.
pub(super) fn decode<T: DeserializeOwned>(answer: Answer) -> Result<T, CallError> {
    answer?.decode().map_err(|e| CallError::Json(e.0))
}
type Continuation = Box<dyn FnOnce(&mut Context<'_>, Answer) + Send>;

/// Where one request's answer lands.
pub(super) struct Waiter(Slot<Answer, Continuation>);

impl Waiter {
    pub(super) fn new() -> Self {
        Self(Slot::new())
    }

    /// The answer came (or the connection ended), on the worker: a continuation runs now,
    /// a waiter wakes.
    pub(super) fn settle(&self, cx: &mut Context<'_>, answer: Answer) {
        if let Some((then, answer)) = self.0.settle(answer) {
            then(cx, answer);
        }
    }
}

/// A call to a client's callback on its way ([`RawCallback::call`](super::RawCallback::call),
/// or a typed callback's method with a value): wait for the answer on a thread that is not a
/// worker's, or continue on the worker when it comes. `Send`.
#[must_use = "a call's answer is read by waiting or continuing"]
pub struct Pending<T> {
    id: u64,
    waiter: Arc<Waiter>,
    outbox: Arc<Outbox>,
    /// A continuation waits for the answer: the request stays registered when this goes.
    continued: bool,
    answer: PhantomData<fn() -> T>,
}

/// A `Pending` dropped unread forgets its request: a client that never answers holds nothing.
impl<T> Drop for Pending<T> {
    fn drop(&mut self) {
        if !self.continued {
            self.outbox.answered(self.id);
        }
    }
}

impl<T: DeserializeOwned> Pending<T> {
    pub(super) fn new(id: u64, waiter: Arc<Waiter>, outbox: Arc<Outbox>) -> Self {
        Self { id, waiter, outbox, continued: false, answer: PhantomData }
    }

    /// Blocks until the answer, up to [`DEFAULT_TIMEOUT`].
    ///
    /// # Errors
    ///
    /// As [`Pending::wait_timeout`].
    pub fn wait(self) -> Result<T, CallError> {
        self.wait_timeout(DEFAULT_TIMEOUT)
    }

    /// Blocks until the answer or `timeout`. Refused at once on a worker's thread (a handler,
    /// a method), where the answer could never be read: never a deadlock.
    ///
    /// # Errors
    ///
    /// [`CallError::Remote`] for the client's error answer, [`CallError::Timeout`] (the
    /// request is forgotten: a late answer is dropped), [`CallError::Disconnected`],
    /// [`CallError::WouldBlockWorker`], [`CallError::Json`] for an answer not of type `T`.
    pub fn wait_timeout(self, timeout: Duration) -> Result<T, CallError> {
        // Either way the request is forgotten when `self` goes.
        if on_worker_thread() {
            return Err(CallError::WouldBlockWorker);
        }
        self.waiter.0.wait(timeout).map_or(Err(CallError::Timeout), decode)
    }

    /// Runs `then` on the connection's worker with the answer — or with
    /// [`CallError::Timeout`] after [`DEFAULT_TIMEOUT`], or [`CallError::Disconnected`] when
    /// the connection ends first — instead of waiting: [`Pending::then_timeout`].
    pub fn then<F>(self, then: F)
    where
        T: 'static,
        F: FnOnce(&mut Context<'_>, Result<T, CallError>) + Send + 'static,
    {
        self.then_timeout(DEFAULT_TIMEOUT, then);
    }

    /// Runs `then` on the connection's worker with the answer, or with
    /// [`CallError::Timeout`] once `timeout` has passed (a later answer is dropped: a client
    /// that never answers holds nothing past it), or with [`CallError::Disconnected`] when the
    /// connection ends first. If the answer came already, `then` runs on the worker's next
    /// turn; dropped unrun only if the connection closed in between.
    pub fn then_timeout<F>(mut self, timeout: Duration, then: F)
    where
        T: 'static,
        F: FnOnce(&mut Context<'_>, Result<T, CallError>) + Send + 'static,
    {
        let then: Continuation = Box::new(move |cx, answer| then(cx, decode(answer)));
        self.continued = true;
        match self.waiter.0.continue_with(then) {
            None => {
                let id = self.id;
                let _ = self.outbox.conn().post_to::<super::Endpoint, _>(move |endpoint, cx| {
                    endpoint.expire(cx, id, timeout);
                });
            }
            Some((then, answer)) => {
                let _ = self.outbox.conn().post(move |_handler, cx| then(cx, answer));
            }
        }
    }
}

impl<T> fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending").field("id", &self.id).finish_non_exhaustive()
    }
}
