//! What became of one cross-thread send: [`Receipt`], resolved by the worker.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::SendError;

/// What became of a send made with [`ConnHandle::send_with_receipt`](crate::ConnHandle).
///
/// "Delivered" here means *queued on the connection*: the worker admitted the message into the
/// connection's send queue, behind everything queued before it. That is what the engine can
/// tell cheaply and for certain; it is not an acknowledgement from the peer, nor even a write
/// to the socket: a queued message is written on the worker's next flush, in order, unless the
/// connection fails first (the peer resets it, the handler aborts it, the shutdown deadline
/// passes). A peer-level acknowledgement belongs to the application protocol above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The message is in the connection's send queue.
    Queued,
    /// The message was dropped, never queued: [`SendError::Closed`] when the connection had
    /// closed or started closing before the worker applied the send (or the server stopped),
    /// [`SendError::Backpressure`] when its queue was over
    /// [`ServerConfig::max_backpressure`](crate::ServerConfig::max_backpressure) (under
    /// [`Backpressure::Close`](crate::Backpressure::Close) the connection also starts
    /// closing), [`SendError::Protocol`] while the handler was sending a fragmented message.
    Dropped(SendError),
}

impl Outcome {
    /// Whether the message was queued.
    pub fn is_queued(&self) -> bool {
        matches!(self, Self::Queued)
    }
}

/// The sender's side of one send's [`Outcome`]: poll it, or block for it. `Send + Sync +
/// Clone`; every clone sees the same outcome.
///
/// The outcome is settled once, on the worker's next loop turn after the send reaches it, or
/// as [`SendError::Closed`] if the worker can no longer apply it (it has stopped). So
/// [`Receipt::wait`] does not wait longer than the worker takes to get to its mailbox.
#[derive(Clone)]
pub struct Receipt {
    state: Arc<State>,
}

impl Receipt {
    /// The outcome, if it is settled.
    pub fn try_outcome(&self) -> Option<Outcome> {
        *self.state.lock()
    }

    /// Blocks until the outcome is settled.
    pub fn wait(&self) -> Outcome {
        let mut slot = self.state.lock();
        loop {
            if let Some(outcome) = *slot {
                return outcome;
            }
            slot = self.state.settled.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Blocks until the outcome is settled or `timeout` has passed (`None`).
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Outcome> {
        let deadline = Instant::now() + timeout;
        let mut slot = self.state.lock();
        loop {
            if slot.is_some() {
                return *slot;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            slot = self.state.settled.wait_timeout(slot, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receipt").field("outcome", &self.try_outcome()).finish()
    }
}

/// The worker's side of a [`Receipt`]: settles it once; dropped unsettled (a command the
/// worker never applied), it settles as [`SendError::Closed`].
pub(crate) struct Settle {
    state: Arc<State>,
}

impl Settle {
    /// A receipt and the side that settles it.
    pub(crate) fn new() -> (Self, Receipt) {
        let state = Arc::new(State::default());
        (Self { state: Arc::clone(&state) }, Receipt { state })
    }

    pub(crate) fn settle(self, result: Result<(), SendError>) {
        self.state.set(match result {
            Ok(()) => Outcome::Queued,
            Err(e) => Outcome::Dropped(e),
        });
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        self.state.set(Outcome::Dropped(SendError::Closed)); // a no-op once settled
    }
}

#[derive(Default)]
struct State {
    outcome: Mutex<Option<Outcome>>,
    settled: Condvar,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Option<Outcome>> {
        self.outcome.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the outcome if none is set yet, and wakes the waiters.
    fn set(&self, outcome: Outcome) {
        let mut slot = self.lock();
        if slot.is_none() {
            *slot = Some(outcome);
            drop(slot);
            self.settled.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_settles_once_and_wakes_its_waiter() {
        let (settle, receipt) = Settle::new();
        assert_eq!(receipt.try_outcome(), None);
        assert_eq!(receipt.wait_timeout(Duration::from_millis(1)), None);
        let waiter = {
            let receipt = receipt.clone();
            std::thread::spawn(move || receipt.wait())
        };
        settle.settle(Err(SendError::Backpressure));
        assert_eq!(waiter.join().unwrap(), Outcome::Dropped(SendError::Backpressure));
        // The drop after settling does not overwrite it.
        assert_eq!(receipt.try_outcome(), Some(Outcome::Dropped(SendError::Backpressure)));
    }

    #[test]
    fn an_unapplied_send_settles_as_closed() {
        let (settle, receipt) = Settle::new();
        drop(settle);
        assert_eq!(receipt.wait(), Outcome::Dropped(SendError::Closed));
        let (settle, receipt) = Settle::new();
        settle.settle(Ok(()));
        assert!(receipt.wait().is_queued());
    }
}
