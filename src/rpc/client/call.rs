//! A call on its way: [`Call`], and the slot its answer lands in.

use std::fmt;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::state::Inner;
use crate::cx::on_worker_thread;
use crate::rpc::CallError;
use crate::rpc::pending::{Answer, decode};

type Continuation = Box<dyn FnOnce(Answer) + Send>;

/// Where one request's answer lands: a waiting thread wakes, or a continuation runs on the
/// client's worker.
pub(super) struct Slot(crate::rpc::slot::Slot<Answer, Continuation>);

impl Slot {
    pub(super) fn new() -> Self {
        Self(crate::rpc::slot::Slot::new())
    }

    /// A slot settled already (the call failed before it was sent).
    fn failed(error: CallError) -> Self {
        Self(crate::rpc::slot::Slot::answered(Err(error)))
    }

    /// The answer (or why there is none) came: the first settles, later ones are dropped. A
    /// continuation runs now if `here` (the caller is the client's worker), else on `worker`.
    pub(super) fn settle(&self, answer: Answer, inner: &Inner, worker: usize, here: bool) {
        if let Some((then, answer)) = self.0.settle(answer) {
            if here {
                run(then, answer);
            } else {
                inner.run_on_worker(worker, move || run(then, answer));
            }
        }
    }
}

/// Runs a continuation; a panic in it stays there (the connection goes on).
fn run(then: Continuation, answer: Answer) {
    let _ = catch_unwind(AssertUnwindSafe(move || then(answer)));
}

/// A call on its way ([`Client::call_async`](super::Client::call_async)): wait for the answer
/// on a thread that is not a worker's, or continue on the client's worker when it comes.
/// `Send + Sync`.
///
/// The answer comes within the client's answer timeout (counted from the call), or the call
/// fails with [`CallError::Timeout`] and a later answer is dropped (counted in
/// [`ClientStats::late_answers`](super::ClientStats)). Dropping a `Call` does not cancel it:
/// its answer is read and dropped.
#[must_use = "a call's answer is read by waiting or continuing"]
pub struct Call<R> {
    slot: Arc<Slot>,
    /// `None` for a call that failed before it got an id.
    id: Option<u64>,
    inner: Arc<Inner>,
    answer: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> Call<R> {
    pub(super) fn new(id: u64, slot: Arc<Slot>, inner: Arc<Inner>) -> Self {
        Self { slot, id: Some(id), inner, answer: PhantomData }
    }

    pub(super) fn failed(error: CallError, inner: Arc<Inner>) -> Self {
        Self { slot: Arc::new(Slot::failed(error)), id: None, inner, answer: PhantomData }
    }

    /// Blocks until the answer, up to the client's answer timeout.
    ///
    /// # Errors
    ///
    /// As [`Call::wait_timeout`].
    pub fn wait(self) -> Result<R, CallError> {
        let timeout = self.inner.timeout;
        self.wait_timeout(timeout)
    }

    /// Blocks until the answer or `timeout` (the call's own deadline, the client's answer
    /// timeout from the call, applies too). Refused at once on a worker's thread (inside a
    /// callback, an event handler or a continuation), where waiting could block the very
    /// worker that reads the answer: never a deadlock.
    ///
    /// # Errors
    ///
    /// [`CallError::Remote`] for the server's error answer (a service's own error: code
    /// [`ErrorCode::Service`](crate::protocol::rpc::ErrorCode), its value as JSON in `data`),
    /// [`CallError::Timeout`] (the call is forgotten: a late answer is dropped),
    /// [`CallError::Disconnected`] when the connection ended before the answer,
    /// [`CallError::Cancelled`], [`CallError::WouldBlockWorker`], [`CallError::Json`] for
    /// arguments that could not be written or an answer not of type `R`.
    pub fn wait_timeout(self, timeout: Duration) -> Result<R, CallError> {
        if on_worker_thread() {
            self.forget(false);
            return Err(CallError::WouldBlockWorker);
        }
        self.block(timeout)
    }

    /// Blocks until the answer or `timeout`, on a thread its caller knows is no worker's.
    pub(super) fn block(self, timeout: Duration) -> Result<R, CallError> {
        match self.slot.0.wait(timeout) {
            Some(answer) => decode(answer),
            None => {
                self.forget(false);
                Err(CallError::Timeout)
            }
        }
    }

    /// Runs `then` with the answer on the client's worker — the thread its callbacks and
    /// event handlers run on, so they never run at the same time — instead of waiting. If the
    /// answer came already (or the call failed before it was sent), `then` runs on the
    /// worker's next turn. `then` is dropped unrun only if the engine has stopped.
    pub fn then<F>(self, then: F)
    where
        R: 'static,
        F: FnOnce(Result<R, CallError>) + Send + 'static,
    {
        let then: Continuation = Box::new(move |answer| then(decode(answer)));
        if let Some((then, answer)) = self.slot.0.continue_with(then) {
            let worker = self.inner.lock().worker;
            self.inner.run_on_worker(worker, move || run(then, answer));
        }
    }

    /// Gives up on the call: a call already sent is cancelled on the server (`["cancel",
    /// id]`, see [`Reply::is_cancelled`](crate::rpc::Reply::is_cancelled)), one not yet sent
    /// never is. The call settles with [`CallError::Cancelled`] unless its answer came
    /// first; an answer crossing the cancel is dropped.
    pub fn cancel(&self) {
        self.forget(true);
        let worker = self.inner.lock().worker;
        self.slot.settle(Err(CallError::Cancelled), &self.inner, worker, false);
    }

    /// Forgets the call, cancelling it on the server with `cancel`.
    fn forget(&self, cancel: bool) {
        if let Some(id) = self.id {
            self.inner.forget(id, cancel);
        }
    }
}

impl<R> fmt::Debug for Call<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call").field("id", &self.id).finish_non_exhaustive()
    }
}
