//! The client's own thread: it expires requests at their deadlines and starts the next
//! connection attempt when a reconnection is due. It sleeps on the state's condition variable
//! in between, and ends when the client does.
//!
//! Each attempt starts on a short-lived thread of its own, which resolves the host (blocking,
//! for as long as the resolver takes) and hands the connection to the engine, or reports the
//! failure into the state: a stalled resolver never delays the deadlines. There is at most one
//! at a time (the next is scheduled once the previous one's outcome is known), and the host is
//! resolved again on each, so a server that moves is found.

use std::sync::Arc;
use std::thread;
use std::time::Instant;

use super::conn::ClientConn;
use super::state::{Inner, Phase, settle_all};
use crate::client::ConnectError;
use crate::rpc::CallError;

pub(super) fn run(inner: &Arc<Inner>) {
    let mut state = inner.lock();
    loop {
        if state.is_closed() {
            return;
        }
        let now = Instant::now();
        let expired = state.expired(now);
        if !expired.is_empty() {
            drop(state);
            settle_all(expired, &CallError::Timeout, inner, false);
            state = inner.lock();
            continue;
        }
        if let Phase::Waiting { at } = state.phase
            && at <= now
        {
            state.phase = Phase::Connecting;
            state.generation += 1;
            let generation = state.generation;
            drop(state);
            attempt(inner, generation);
            state = inner.lock();
            continue;
        }
        state = match state.next_wake() {
            Some(wake) => {
                let left = wake.saturating_duration_since(now);
                inner.changed.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0
            }
            None => inner.changed.wait(state).unwrap_or_else(|e| e.into_inner()),
        };
    }
}

/// Starts connection attempt `generation` on a thread of its own. An attempt that cannot start
/// is reported like one that failed: the next is scheduled.
fn attempt(inner: &Arc<Inner>, generation: u64) {
    let attempting = Arc::clone(inner);
    let spawned = thread::Builder::new().name("bidir-rpc-connect".into()).spawn(move || {
        if let Err(error) = ClientConn::start(&attempting, generation) {
            ClientConn::attempt_failed(&attempting, generation, error);
        }
    });
    if let Err(error) = spawned {
        ClientConn::attempt_failed(inner, generation, ConnectError::Io(error));
    }
}
