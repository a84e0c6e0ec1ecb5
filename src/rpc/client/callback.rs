//! Callback objects the client passes to the server: [`LocalCallback`].

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bidir_protocol::rpc::{ErrorCode, Msg};
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::state::Inner;
use crate::rpc::CallError;
use crate::rpc::wire::{Value, ValueRef};

/// What runs a callback's invocations: the method's name and its arguments (an array) in, the
/// answer (`None`: no value, sent as null when one is wanted) or an error out.
pub(super) type Dispatch =
    dyn Fn(&str, ValueRef<'_>) -> Result<Option<Value>, (ErrorCode, String)> + Send + Sync;

/// One callback object, shared by the application's [`LocalCallback`] clones.
pub(super) struct CbState {
    pub(super) id: u64,
    pub(super) released: AtomicBool,
    pub(super) dispatch: Box<Dispatch>,
    pub(super) inner: Arc<Inner>,
}

impl Drop for CbState {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        state.callbacks.remove(&self.id);
        state.prune_replay();
        if !self.released.load(Ordering::Acquire) {
            let (wire, callback) = (state.wire, self.id);
            state.send(|out| wire.encode(Msg::Release { callback }, out));
        }
    }
}

/// A callback object of this client's, to pass to the server as an argument of a call: it
/// serializes as `{"$cb": id}`, and the server's invocations of it (`["cb", id, method,
/// args]`) run its dispatch on the client's worker, one at a time, in the order they come.
/// `Send + Sync + Clone`; clones are the same callback.
///
/// `T` only names the interface it stands for (`LocalCallback<dyn ChatCallback>`).
///
/// Lifetime: dropping the last clone releases it — the server is told (`["release", id]`, its
/// release hook runs) and later invocations are answered [`ErrorCode::Released`] (when they
/// want an answer) and released again (the server may have made a new proxy). The server
/// may release it first ([`LocalCallback::is_released`]). It outlives connections: after a
/// reconnection the calls that passed it are replayed, so the server gets it back (see
/// [`Client`](super::Client)). It is released for good when the client is closed or its
/// connection ends without reconnection.
pub struct LocalCallback<T: ?Sized> {
    state: Arc<CbState>,
    marker: PhantomData<fn() -> Box<T>>,
}

impl<T: ?Sized> LocalCallback<T> {
    pub(super) fn new(state: Arc<CbState>) -> Self {
        Self { state, marker: PhantomData }
    }

    /// Its id on the wire, unique among this client's callbacks.
    pub fn id(&self) -> u64 {
        self.state.id
    }

    /// Whether the server released it (or the client is closed): it will not be invoked.
    pub fn is_released(&self) -> bool {
        self.state.released.load(Ordering::Acquire)
    }
}

impl<T: ?Sized> Clone for LocalCallback<T> {
    fn clone(&self) -> Self {
        Self::new(Arc::clone(&self.state))
    }
}

impl<T: ?Sized> fmt::Debug for LocalCallback<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCallback")
            .field("id", &self.state.id)
            .field("released", &self.is_released())
            .finish()
    }
}

impl<T: ?Sized> Serialize for LocalCallback<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        PASSED.with(|passed| {
            if let Some(passed) = passed.borrow_mut().as_mut() {
                passed.push(Arc::clone(&self.state));
            }
        });
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("$cb", &self.state.id)?;
        map.end()
    }
}

thread_local! {
    /// The callbacks met while writing a call's arguments on this thread.
    static PASSED: RefCell<Option<Vec<Arc<CbState>>>> = const { RefCell::new(None) };
}

/// A call's arguments as an array (`()` is `[]`) in the client's encoding, with the callbacks
/// among them.
///
/// # Errors
///
/// [`CallError::Json`] for arguments serde cannot write or that are not a tuple (an array);
/// a callback of another client is refused the same way.
pub(super) fn encode_args<A: Serialize>(
    args: &A,
    inner: &Arc<Inner>,
) -> Result<(Value, Vec<Arc<CbState>>), CallError> {
    let outer = PASSED.with(|p| p.borrow_mut().replace(Vec::new()));
    let written = inner.wire.args(args);
    let passed =
        PASSED.with(|p| std::mem::replace(&mut *p.borrow_mut(), outer)).unwrap_or_default();
    let args = written.map_err(|e| CallError::Json(e.0))?;
    if passed.iter().any(|cb| !Arc::ptr_eq(&cb.inner, inner)) {
        return Err(CallError::Json("a callback of another client".into()));
    }
    if passed.iter().any(|cb| cb.released.load(Ordering::Acquire)) {
        return Err(CallError::Released);
    }
    Ok((args, passed))
}
