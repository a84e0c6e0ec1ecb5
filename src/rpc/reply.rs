//! Answers given later, from any thread: [`Reply`].

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;

use bidir_protocol::rpc::{ErrorCode, Msg};

use super::outbox::Outbox;
use super::typed::Untyped;
use super::{Failure, to_value};

/// The answer a [`Services::deferred`](super::Services::deferred) method owes, a value of type
/// `T` (plain `Reply`: of any type): hand it to another thread, do the work there, and answer
/// once with `ok` or [`Reply::err`]. `Send`. The answer joins the connection's other outgoing messages gathered
/// until its worker sends them.
///
/// A reply dropped without an answer answers [`ErrorCode::Internal`], so the caller never
/// waits forever. Once the client cancelled the call or the connection ended, the answer is
/// dropped ([`Reply::is_cancelled`] tells, so the work can stop early). A notification's reply
/// answers nobody.
pub struct Reply<T: ?Sized = Untyped> {
    id: Option<u64>,
    outbox: Arc<Outbox>,
    answered: bool,
    value: PhantomData<fn(&T)>,
}

impl<T: ?Sized> Reply<T> {
    pub(super) fn new(id: Option<u64>, outbox: &Arc<Outbox>, max: usize) -> Result<Self, Failure> {
        if let Some(id) = id {
            outbox.begin(id, max).map_err(|reason| Failure {
                code: if reason.starts_with("too many") {
                    ErrorCode::TooManyCalls
                } else {
                    ErrorCode::BadRequest
                },
                message: reason.to_owned(),
                data: None,
            })?;
        }
        Ok(Self { id, outbox: Arc::clone(outbox), answered: false, value: PhantomData })
    }

    /// Answers with the service's error: its text as the message, its value as the data.
    pub fn err<E: Serialize + fmt::Display>(mut self, error: E) {
        let wire = self.outbox.wire();
        let failure = Failure::service(wire, &error);
        self.answer(|id, out| failure.encode(wire, id, out));
    }

    /// Whether the answer would be dropped: the client cancelled the call, or the connection
    /// ended (a notification's reply always is).
    pub fn is_cancelled(&self) -> bool {
        self.id.is_none_or(|id| !self.outbox.is_waiting(id))
    }

    fn value<V: Serialize + ?Sized>(mut self, value: &V) {
        let wire = self.outbox.wire();
        match to_value(wire, value) {
            Ok(value) => self.answer(|id, out| {
                wire.encode(Msg::Result { id, value: value.as_ref() }, out);
            }),
            Err(failure) => self.answer(|id, out| failure.encode(wire, id, out)),
        }
    }

    fn answer(&mut self, encode: impl FnOnce(u64, &mut Vec<u8>)) {
        self.answered = true;
        if let Some(id) = self.id
            && self.outbox.finish(id)
        {
            self.outbox.push(|out| encode(id, out));
        }
    }
}

impl<T: Serialize + ?Sized> Reply<T> {
    /// Answers with `value`.
    pub fn ok(self, value: &T) {
        self.value(value);
    }
}

impl Reply<Untyped> {
    /// Answers with `value`, of any type: the reply of a method registered by hand with
    /// `reply: Reply`.
    pub fn ok<V: Serialize + ?Sized>(self, value: &V) {
        self.value(value);
    }
}

impl<T: ?Sized> Drop for Reply<T> {
    fn drop(&mut self) {
        if !self.answered {
            let failure = Failure {
                code: ErrorCode::Internal,
                message: "the method dropped its reply".to_owned(),
                data: None,
            };
            let wire = self.outbox.wire();
            self.answer(|id, out| failure.encode(wire, id, out));
        }
    }
}

impl<T: ?Sized> fmt::Debug for Reply<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply").field("id", &self.id).field("answered", &self.answered).finish()
    }
}
