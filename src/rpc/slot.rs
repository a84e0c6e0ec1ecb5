//! Where the answer to one request lands, on either side: a thread waiting for it wakes, or a
//! continuation set meanwhile is handed back, with the answer, for its caller to run where it
//! must (the server's on the connection's worker, the client's on the client's worker).

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

enum State<A, K> {
    Waiting,
    Answered(A),
    Continue(K),
    /// The answer was taken, or a continuation ran with it: later answers are dropped.
    Done,
}

/// One request's answer `A`, or its continuation `K`.
pub(crate) struct Slot<A, K> {
    state: Mutex<State<A, K>>,
    answered: Condvar,
}

impl<A, K> Slot<A, K> {
    pub(crate) fn new() -> Self {
        Self { state: Mutex::new(State::Waiting), answered: Condvar::new() }
    }

    /// A slot settled already (the request failed before it was sent).
    pub(crate) fn answered(answer: A) -> Self {
        Self { state: Mutex::new(State::Answered(answer)), answered: Condvar::new() }
    }

    /// The answer came: the first settles, later ones are dropped. A thread waiting wakes; a
    /// continuation set meanwhile comes back with the answer, to run.
    pub(crate) fn settle(&self, answer: A) -> Option<(K, A)> {
        let mut state = self.lock();
        match std::mem::replace(&mut *state, State::Done) {
            State::Waiting => {
                *state = State::Answered(answer);
                self.answered.notify_all();
                None
            }
            State::Continue(then) => Some((then, answer)),
            settled @ (State::Answered(_) | State::Done) => {
                *state = settled;
                None
            }
        }
    }

    /// Sets `then` to be handed back with the answer when it comes; if it came already, both
    /// come back now, to run. A slot whose answer was taken drops `then`.
    pub(crate) fn continue_with(&self, then: K) -> Option<(K, A)> {
        let mut state = self.lock();
        match std::mem::replace(&mut *state, State::Done) {
            State::Waiting => {
                *state = State::Continue(then);
                None
            }
            State::Answered(answer) => Some((then, answer)),
            State::Continue(_) | State::Done => None,
        }
    }

    /// Waits up to `timeout` for the answer and takes it; `None` if it did not come.
    pub(crate) fn wait(&self, timeout: Duration) -> Option<A> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if let State::Answered(_) = &*state {
                let State::Answered(answer) = std::mem::replace(&mut *state, State::Done) else {
                    unreachable!("matched above")
                };
                return Some(answer);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state =
                self.answered.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<A, K>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_answer_settles_and_a_continuation_comes_back_with_it() {
        let slot = Slot::<u8, &str>::new();
        assert!(slot.continue_with("then").is_none(), "no answer yet: kept");
        assert_eq!(slot.settle(1), Some(("then", 1)));
        assert_eq!(slot.settle(2), None, "a later answer is dropped");
        assert_eq!(slot.wait(Duration::ZERO), None);

        let answered = Slot::<u8, &str>::answered(3);
        assert_eq!(answered.continue_with("now"), Some(("now", 3)), "run at once");
        let waited = Slot::<u8, &str>::new();
        assert_eq!(waited.settle(4), None, "a waiter takes it");
        assert_eq!(waited.wait(Duration::ZERO), Some(4));
        assert_eq!(waited.continue_with("late"), None, "taken: nothing to continue with");
    }
}
