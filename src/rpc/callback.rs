//! Callback objects a client passes as arguments (`{"$cb": N}`): the server's proxy, untyped
//! ([`RawCallback`]) or typed by the interface it implements ([`Callback`]), invoked from any
//! thread, its invocations gathered per connection into one message, and its release.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use serde::Serialize;
use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, MapAccess, Visitor};

use bidir_protocol::rpc::{MAX_ID, Msg};

use super::outbox::Outbox;
use super::pending::{Pending, Waiter};

/// A callback object the client passed to a method, untyped: a proxy the service may keep (in a
/// list, say), clone, and invoke by method name from any thread. `Send + Sync + Clone`; clones
/// are the same callback (equal). What a [`Callback`](super::Callback) wraps: plain `Callback`
/// dereferences to it, a typed one (an interface declared with `#[bidir::callback]`) to the
/// interface's proxy around it.
///
/// Invocations ([`RawCallback::invoke`]) want no answer. Those made before the connection's
/// worker gets to them travel together, as one batched message in one write; they keep the
/// order they were made in. The callback is released — invocations refused with
/// [`CallbackError::Released`] and counted — when the client releases it, or when its
/// connection ends; the service's release hook ([`Services::on_release`](super::Services))
/// runs then, exactly once. When the service drops its last clone of a live callback, the
/// client is told (`release`) so it can free the object.
#[derive(Clone)]
pub struct RawCallback {
    state: Arc<State>,
}

/// Why an invocation was not sent.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallbackError {
    /// The callback was released (by the client, or its connection ended).
    Released,
    /// The arguments could not be written in the connection's encoding.
    Encode(String),
    /// More than 16 MiB of invocations wait for the connection's worker: the invoking thread
    /// outruns it. Nothing was queued; try later, or slower.
    Full,
}

impl fmt::Display for CallbackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Released => f.write_str("the callback was released"),
            Self::Encode(e) => write!(f, "the arguments cannot be written: {e}"),
            Self::Full => f.write_str("too many invocations wait for the connection's worker"),
        }
    }
}

impl std::error::Error for CallbackError {}

struct State {
    id: u64,
    released: AtomicBool,
    outbox: Arc<Outbox>,
}

impl RawCallback {
    /// The id the client gave it.
    pub fn id(&self) -> u64 {
        self.state.id
    }

    /// Whether it was released: invocations are refused.
    pub fn is_released(&self) -> bool {
        self.state.released.load(Ordering::Acquire)
    }

    /// Invokes `method` on the client's object with `args`, a tuple of the arguments (`()` for
    /// none), without waiting: the invocation is queued for the connection and goes out with
    /// the others gathered until its worker sends them. Past the connection's backpressure
    /// limit it is dropped like any send (counted in `Stats::dropped_sends`).
    ///
    /// # Errors
    ///
    /// [`CallbackError::Released`] once the callback is released (also counted, see
    /// [`Services::refused_invocations`](super::Services::refused_invocations));
    /// [`CallbackError::Encode`] for arguments serde cannot write or that are not a tuple.
    pub fn invoke<A: Serialize>(&self, method: &str, args: A) -> Result<(), CallbackError> {
        if self.is_released() {
            self.state.outbox.refuse();
            return Err(CallbackError::Released);
        }
        self.send(method, &args, None)
    }

    /// Calls `method` on the client's object with `args` and asks for its answer, of type
    /// `T`: wait for it on another thread, or continue on the worker ([`Pending`]).
    ///
    /// # Errors
    ///
    /// As [`RawCallback::invoke`].
    pub fn call<A: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        args: A,
    ) -> Result<Pending<T>, CallbackError> {
        if self.is_released() {
            self.state.outbox.refuse();
            return Err(CallbackError::Released);
        }
        let waiter = Arc::new(Waiter::new());
        // The connection ended meanwhile: its callbacks are being released.
        let Some(id) = self.state.outbox.request(Arc::clone(&waiter)) else {
            self.state.outbox.refuse();
            return Err(CallbackError::Released);
        };
        if let Err(e) = self.send(method, &args, Some(id)) {
            self.state.outbox.answered(id);
            return Err(e);
        }
        Ok(Pending::new(id, waiter, Arc::clone(&self.state.outbox)))
    }

    /// Queues the invocation of `method`, with the id of a request when it wants an answer.
    fn send<A: Serialize>(
        &self,
        method: &str,
        args: &A,
        id: Option<u64>,
    ) -> Result<(), CallbackError> {
        let wire = self.state.outbox.wire();
        let args = wire.args(args).map_err(|e| CallbackError::Encode(e.0))?;
        let msg =
            Msg::Invoke { callback: self.state.id, method: method.into(), args: args.as_ref(), id };
        if self.state.outbox.push_invocation(|out| wire.encode(msg, out)) {
            Ok(())
        } else {
            Err(CallbackError::Full)
        }
    }
}

impl PartialEq for RawCallback {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }
}

impl Eq for RawCallback {}

/// What a typed callback's proxy wraps ([`CallbackInterface::Proxy`](super::CallbackInterface)):
/// the untyped one is its own.
impl AsRef<Self> for RawCallback {
    fn as_ref(&self) -> &Self {
        self
    }
}

impl fmt::Debug for RawCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawCallback")
            .field("id", &self.state.id)
            .field("connection", &self.state.outbox.conn().id())
            .field("released", &self.is_released())
            .finish()
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // The service let go of a live callback: the client may free its object.
        if !self.released.load(Ordering::Acquire) {
            let (wire, callback) = (self.outbox.wire(), self.id);
            self.outbox.push(|out| wire.encode(Msg::Release { callback }, out));
        }
    }
}

/// The callbacks of one connection, by id, as the service holds them (weakly: a callback the
/// service dropped is gone).
#[derive(Default)]
pub(super) struct Table {
    callbacks: HashMap<u64, Weak<State>>,
    /// Entries at the last sweep of those the service dropped.
    swept: usize,
}

impl Table {
    /// Keeps callback `state`; the entries of callbacks the service dropped are swept out
    /// whenever the table has doubled since the last sweep, so a client passing fresh ids
    /// the service does not keep grows it by a bounded factor, not without bound.
    fn insert(&mut self, id: u64, state: &Arc<State>) {
        if self.callbacks.len() >= 2 * self.swept.max(32) {
            self.callbacks.retain(|_, held| held.strong_count() > 0);
            self.swept = self.callbacks.len();
        }
        self.callbacks.insert(id, Arc::downgrade(state));
    }

    /// Marks callback `id` released and returns it for the release hook, if the service still
    /// holds it; forgets it either way.
    pub(super) fn release(&mut self, id: u64) -> Option<RawCallback> {
        let state = self.callbacks.remove(&id)?.upgrade()?;
        let was_released = state.released.swap(true, Ordering::AcqRel);
        (!was_released).then_some(RawCallback { state })
    }

    /// Every callback still held, released (the connection ended).
    pub(super) fn release_all(&mut self) -> Vec<RawCallback> {
        let ids: Vec<u64> = self.callbacks.keys().copied().collect();
        ids.into_iter().filter_map(|id| self.release(id)).collect()
    }
}

/// What a method's arguments are decoded against: the connection's callbacks and outbox.
pub(super) struct Scope {
    pub(super) table: Rc<RefCell<Table>>,
    pub(super) outbox: Arc<Outbox>,
}

thread_local! {
    /// The scope of the call being decoded on this thread (a worker), for [`RawCallback`]'s
    /// `Deserialize`.
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Runs `f` with `scope` current, so callbacks among the arguments it decodes find their
/// connection.
pub(super) fn with_scope<R>(scope: Scope, f: impl FnOnce() -> R) -> R {
    SCOPE.with(|s| *s.borrow_mut() = Some(scope));
    let r = f();
    SCOPE.with(|s| *s.borrow_mut() = None);
    r
}

impl<'de> Deserialize<'de> for RawCallback {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl<'de> Visitor<'de> for IdVisitor {
            type Value = u64;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a callback, {"$cb": id}"#)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
                let mut id = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "$cb" {
                        id = Some(map.next_value::<u64>()?);
                    } else {
                        map.next_value::<de::IgnoredAny>()?;
                    }
                }
                id.filter(|&id| id <= MAX_ID)
                    .ok_or_else(|| de::Error::custom("a callback needs \"$cb\": id"))
            }
        }
        let id = deserializer.deserialize_map(IdVisitor)?;
        SCOPE.with(|scope| {
            let scope = scope.borrow();
            let Some(scope) = scope.as_ref() else {
                return Err(de::Error::custom("a callback outside a call"));
            };
            let mut table = scope.table.borrow_mut();
            if let Some(state) = table.callbacks.get(&id).and_then(Weak::upgrade) {
                return Ok(Self { state });
            }
            let state = Arc::new(State {
                id,
                released: AtomicBool::new(false),
                outbox: Arc::clone(&scope.outbox),
            });
            table.insert(id, &state);
            Ok(Self { state })
        })
    }
}
