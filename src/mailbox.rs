//! A worker's inbox: the commands other threads send it ([`ConnHandle`](crate::ConnHandle),
//! [`ServerHandle`](crate::ServerHandle), other workers' publishes), taken once per loop turn
//! with one wake-up per batch.

use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Instant;

use bytes::Bytes;

use bidir_protocol::{CloseCode, DataKind};

use crate::client::engine::PendingConnect;
use crate::meta::ConnId;
use crate::metrics::WorkerStats;
use crate::pubsub::Counts;
use crate::receipt::Settle;
use crate::{Context, Handler};

/// A closure to run on a connection's worker with its handler
/// ([`ConnHandle::post`](crate::ConnHandle::post)).
pub(crate) type PostFn = Box<dyn FnOnce(&mut dyn Handler, &mut Context<'_>) + Send>;

/// A closure to run on a worker's thread, apart from any connection
/// ([`ServerHandle::run_on`](crate::ServerHandle)).
pub(crate) type RunFn = Box<dyn FnOnce() + Send>;

/// Work for a worker from other threads.
pub(crate) enum Command {
    Send {
        id: ConnId,
        kind: DataKind,
        payload: Bytes,
    },
    Close {
        id: ConnId,
        code: CloseCode,
        reason: String,
    },
    /// A message for a topic's subscribers; the worker encodes (and compresses) it once.
    Publish(Publish),
    /// Subscribe a connection ([`ConnHandle::subscribe`](crate::ConnHandle::subscribe)),
    /// counted in the registry already.
    Subscribe {
        id: ConnId,
        topic: Arc<str>,
        reserved: Arc<Counts>,
    },
    /// Unsubscribe a connection ([`ConnHandle::unsubscribe`](crate::ConnHandle::unsubscribe)).
    Unsubscribe {
        id: ConnId,
        topic: Arc<str>,
    },
    /// Open a client connection ([`ServerHandle::connect`](crate::ServerHandle::connect)).
    Connect(Box<PendingConnect>),
    Stats(mpsc::Sender<WorkerStats>),
    Shutdown {
        deadline: Instant,
    },
    /// Run a closure with the connection's handler and context, if it is still open.
    Post {
        id: ConnId,
        f: PostFn,
    },
    /// A [`Command::Send`] whose outcome the sender watches: a separate variant, so that a
    /// plain send carries nothing for it.
    SendWithReceipt {
        id: ConnId,
        kind: DataKind,
        payload: Bytes,
        receipt: Settle,
    },
    /// Run a closure on the worker's thread (the rpc client's continuations, which must run
    /// there whether or not its connection is open).
    Run(RunFn),
    /// Close every connection subscribed to a topic (a node that missed events of a topic's
    /// history has its subscribers come back to recover them).
    #[cfg(feature = "redis")]
    CloseSubscribers {
        topic: Arc<str>,
        code: CloseCode,
        reason: &'static str,
    },
}

/// A message for a topic's subscribers on one worker.
pub(crate) struct Publish {
    pub(crate) topic: Arc<str>,
    pub(crate) kind: DataKind,
    pub(crate) payload: Bytes,
    /// The publishing connection, when it is not to get its own message.
    pub(crate) exclude: Option<ConnId>,
}

/// A worker's multi-producer inbox, with a wake-up per batch.
pub(crate) struct Mailbox {
    queue: Mutex<Queue>,
    waker: Arc<dyn bidir_sys::Waker>,
}

#[derive(Default)]
struct Queue {
    commands: Vec<Command>,
    /// The worker has stopped: commands are dropped as they come.
    closed: bool,
}

impl Mailbox {
    pub(crate) fn new(waker: Arc<dyn bidir_sys::Waker>) -> Self {
        Self { queue: Mutex::new(Queue::default()), waker }
    }

    /// Queues a command; wakes the worker if the mailbox was empty (a non-empty mailbox has a
    /// wake-up pending already). Once the worker has stopped the command is dropped.
    pub(crate) fn push(&self, command: Command) {
        self.enqueue(command, |queue, command| queue.push(command));
    }

    /// Queues every command in `commands` (leaving it empty, its capacity kept) with one lock
    /// and at most one wake-up, in order: what a [`Batch`](crate::Batch) commits.
    pub(crate) fn push_all(&self, commands: &mut Vec<Command>) {
        if commands.is_empty() {
            return;
        }
        let taken = std::mem::take(commands);
        let mut rest = self.enqueue(taken, |queue, mut taken| {
            queue.append(&mut taken);
            taken
        });
        if let Some(rest) = &mut rest {
            rest.clear();
            *commands = std::mem::take(rest); // keeps the caller's capacity
        }
    }

    /// Adds `item` to the queue with `add` and wakes the worker if the queue was empty;
    /// returns what `add` gave back, or `None` when the mailbox is closed (`item` is then
    /// dropped outside the lock: a command's drop may run user code, a post's captures).
    fn enqueue<T, R>(&self, item: T, add: impl FnOnce(&mut Vec<Command>, T) -> R) -> Option<R> {
        let mut queue = self.lock();
        if queue.closed {
            drop(queue);
            drop(item);
            return None;
        }
        let was_empty = queue.commands.is_empty();
        let r = add(&mut queue.commands, item);
        drop(queue);
        if was_empty {
            // A failed eventfd write means the counter is saturated: a wake-up is pending.
            let _ = self.waker.wake();
        }
        Some(r)
    }

    /// Whether nothing is queued (a test bed's worker is idle only then).
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).commands.is_empty()
    }

    /// Takes every queued command (swapping buffers, so the lock is held for a moment).
    pub(crate) fn drain(&self, into: &mut Vec<Command>) {
        debug_assert!(into.is_empty());
        std::mem::swap(&mut self.lock().commands, into);
    }

    /// The worker stopped: drops what is queued and every command pushed from now on, so a
    /// post's closure or a receipt is released instead of waiting forever.
    pub(crate) fn close(&self) {
        let mut queue = self.lock();
        queue.closed = true;
        let left = std::mem::take(&mut queue.commands);
        drop(queue);
        drop(left);
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Default)]
    struct CountingWaker(AtomicUsize);
    impl bidir_sys::Waker for CountingWaker {
        fn wake(&self) -> std::io::Result<()> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    const ID: ConnId = ConnId { worker: 0, slot: 0, generation: 1 };

    fn send(n: u8) -> Command {
        Command::Send { id: ID, kind: DataKind::Binary, payload: Bytes::from(vec![n]) }
    }

    fn mailbox() -> (Arc<CountingWaker>, Mailbox) {
        let waker = Arc::new(CountingWaker::default());
        (Arc::clone(&waker), Mailbox::new(Arc::clone(&waker) as Arc<dyn bidir_sys::Waker>))
    }

    #[test]
    fn a_batch_is_one_wake_up_and_keeps_its_order() {
        let (waker, mailbox) = mailbox();
        let mut batch: Vec<Command> = (0..100).map(send).collect();
        mailbox.push_all(&mut batch);
        assert!(batch.is_empty() && batch.capacity() >= 100, "the caller keeps its buffer");
        mailbox.push(send(100)); // the mailbox is not empty: no second wake-up
        mailbox.push_all(&mut Vec::new());
        assert_eq!(waker.0.load(Ordering::Relaxed), 1);
        let mut drained = Vec::new();
        mailbox.drain(&mut drained);
        let order: Vec<u8> = drained
            .iter()
            .map(|c| match c {
                Command::Send { payload, .. } => payload[0],
                _ => panic!("not a send"),
            })
            .collect();
        assert_eq!(order, (0..=100).collect::<Vec<u8>>());
    }

    #[test]
    fn a_closed_mailbox_drops_what_it_held_and_what_comes_later() {
        let (_waker, mailbox) = mailbox();
        let (held, held_rx) = mpsc::channel::<()>();
        mailbox.push(Command::Post { id: ID, f: Box::new(move |_, _| drop(held)) });
        mailbox.close();
        assert_eq!(held_rx.try_recv(), Err(mpsc::TryRecvError::Disconnected));
        let (late, late_rx) = mpsc::channel::<()>();
        mailbox.push(Command::Post { id: ID, f: Box::new(move |_, _| drop(late)) });
        assert_eq!(late_rx.try_recv(), Err(mpsc::TryRecvError::Disconnected));
        let mut drained = Vec::new();
        mailbox.drain(&mut drained);
        assert!(drained.is_empty());
    }
}
