//! The client's own thread: it expires requests at their deadlines and opens the next
//! connection when a reconnection is due. It sleeps on the state's condition variable in
//! between, and ends when the client does.

use std::sync::Arc;
use std::time::Instant;

use super::conn::ClientConn;
use super::state::{Inner, Phase, settle_all};
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
            // Resolving the host may block: never under the lock.
            let attempt = inner
                .engine
                .connect(&inner.options, ClientConn::new(Arc::clone(inner), generation));
            state = inner.lock();
            if let Err(error) = attempt {
                // Reported like a failed attempt (the next is scheduled).
                drop(state);
                ClientConn::attempt_failed(inner, generation, error);
                state = inner.lock();
            }
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
