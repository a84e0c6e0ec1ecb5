//! Blocking sockets over the engine, for code written thread-per-connection (the Sparkle and
//! LazWebsockets style): accepted connections are handed to user threads as [`Socket`]s with
//! blocking `recv`, `send` and `close`.
//!
//! The engine still owns every connection: a bridge [`Handler`] on the worker copies each
//! message into the socket's inbox, and the socket's sends go through a [`ConnHandle`]. So
//! the protocol, limits, timers, backpressure and shutdown are the engine's; only the
//! threads are the application's.
//!
//! ```no_run
//! use bidir::blocking::Listener;
//! use bidir::client::Incoming;
//! use bidir::{Message, Server};
//!
//! let listener = Listener::new();
//! let _server = Server::builder().bind("127.0.0.1:9001").route("/echo", listener.hook()).start()?;
//! for socket in listener.incoming() {
//!     std::thread::spawn(move || {
//!         while let Ok(msg) = socket.recv() {
//!             let sent = match &msg {
//!                 Incoming::Text(t) => socket.send(Message::Text(t)),
//!                 Incoming::Binary(b) => socket.send(Message::Binary(b)),
//!                 Incoming::Close(_) => break,
//!                 _ => Ok(()),
//!             };
//!             if sent.is_err() {
//!                 break;
//!             }
//!         }
//!     });
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Flow control
//!
//! Receiving: a worker never waits for a user thread, so each socket's inbox is bounded in
//! bytes ([`Listener::max_inbox`], default 16 MiB): a thread that falls that far behind gets
//! its connection closed with 1008. Sending: [`Socket::send`] waits while more than
//! [`Listener::max_outbox`] bytes (default 1 MiB) are queued for the connection, so a fast
//! producer is held to the pace of the peer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;

use bidir_protocol::{CloseCode, DataKind, Message};

use crate::client::{Error, Incoming};
use crate::sink::sink_by_ref;
use crate::{CloseInfo, ConnHandle, Context, Handler, Request, SendError, Sink};

/// Hands accepted connections to user threads as blocking [`Socket`]s. Cheap to clone; every
/// clone takes from the same queue.
///
/// Route connections to it with [`Listener::hook`]; take them with [`Listener::accept`] or
/// [`Listener::incoming`].
#[derive(Clone, Debug)]
pub struct Listener {
    inner: Arc<ListenerInner>,
}

#[derive(Debug)]
struct ListenerInner {
    tx: Mutex<Sender<Socket>>,
    rx: Mutex<Receiver<Socket>>,
    max_inbox: AtomicUsize,
    max_outbox: AtomicUsize,
}

impl Default for Listener {
    fn default() -> Self {
        Self::new()
    }
}

impl Listener {
    /// A listener with the default limits.
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel();
        Self {
            inner: Arc::new(ListenerInner {
                tx: Mutex::new(tx),
                rx: Mutex::new(rx),
                max_inbox: AtomicUsize::new(16 << 20),
                max_outbox: AtomicUsize::new(1 << 20),
            }),
        }
    }

    /// Sets how many received bytes may wait in one socket's inbox before its connection is
    /// closed with 1008 (policy violation). Applies to connections accepted afterwards.
    pub fn max_inbox(&self, bytes: usize) -> &Self {
        self.inner.max_inbox.store(bytes.max(1), Ordering::Relaxed);
        self
    }

    /// Sets how many bytes may be queued for one connection before [`Socket::send`] waits.
    /// Applies to connections accepted afterwards.
    pub fn max_outbox(&self, bytes: usize) -> &Self {
        self.inner.max_outbox.store(bytes.max(1), Ordering::Relaxed);
        self
    }

    /// An accept hook for [`ServerBuilder::route`](crate::ServerBuilder::route) that accepts
    /// every upgrade on the route into this listener. To choose (check a token, pick a
    /// subprotocol), call [`Listener::handler`] from a hook of your own.
    pub fn hook(
        &self,
    ) -> impl Fn(&Request<'_>) -> Result<Bridge, crate::HttpResponse> + Send + Sync + 'static {
        let listener = self.clone();
        move |_req: &Request<'_>| Ok(listener.handler())
    }

    /// The handler that hands its connection to this listener once open.
    pub fn handler(&self) -> Bridge {
        Bridge {
            listener: self.clone(),
            inbox: None,
            max_inbox: self.inner.max_inbox.load(Ordering::Relaxed),
        }
    }

    /// The next accepted connection, waiting for it. `None` once no server can hand it any
    /// more (every hook is gone: the servers using it stopped and were dropped).
    pub fn accept(&self) -> Option<Socket> {
        self.inner.rx.lock().unwrap_or_else(PoisonError::into_inner).recv().ok()
    }

    /// As [`Listener::accept`], waiting at most `timeout`; `None` also when it passes.
    pub fn accept_timeout(&self, timeout: Duration) -> Option<Socket> {
        self.inner.rx.lock().unwrap_or_else(PoisonError::into_inner).recv_timeout(timeout).ok()
    }

    /// Accepted connections, as they come ([`Listener::accept`] in a loop).
    pub fn incoming(&self) -> impl Iterator<Item = Socket> + '_ {
        std::iter::from_fn(|| self.accept())
    }
}

/// What the worker and the socket share.
#[derive(Debug)]
struct Inbox {
    queue: Mutex<InboxQueue>,
    ready: Condvar,
    /// The connection's queue fell (on_drain) or it closed: senders recheck.
    drained: Condvar,
    drained_lock: Mutex<()>,
    /// `Socket::close` was called: dropping the socket need not close the connection again.
    closing: AtomicBool,
}

#[derive(Debug, Default)]
struct InboxQueue {
    /// Each item with the payload bytes it counts for.
    items: std::collections::VecDeque<(Incoming, usize)>,
    bytes: usize,
    /// The connection ended; `items` holds the last of it.
    ended: bool,
}

/// The [`Handler`] behind a [`Socket`]: runs on the worker, copies what arrives into the
/// socket's inbox.
#[derive(Debug)]
pub struct Bridge {
    listener: Listener,
    inbox: Option<Arc<Inbox>>,
    max_inbox: usize,
}

impl Bridge {
    fn push(&self, cx: Option<&mut Context<'_>>, item: Incoming, bytes: usize) {
        let Some(inbox) = &self.inbox else { return };
        let mut queue = inbox.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.ended {
            return;
        }
        if queue.bytes + bytes > self.max_inbox
            && let Some(cx) = cx
        {
            drop(queue);
            let _ = cx.close(CloseCode::POLICY_VIOLATION, "receiver too slow");
            return;
        }
        queue.bytes += bytes;
        queue.ended = matches!(item, Incoming::Close(_));
        queue.items.push_back((item, bytes));
        drop(queue);
        inbox.ready.notify_one();
    }

    fn wake_senders(&self) {
        if let Some(inbox) = &self.inbox {
            let _guard = inbox.drained_lock.lock().unwrap_or_else(PoisonError::into_inner);
            inbox.drained.notify_all();
        }
    }
}

impl Handler for Bridge {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let inbox = Arc::new(Inbox {
            queue: Mutex::new(InboxQueue::default()),
            ready: Condvar::new(),
            drained: Condvar::new(),
            drained_lock: Mutex::new(()),
            closing: AtomicBool::new(false),
        });
        self.inbox = Some(Arc::clone(&inbox));
        let socket = Socket {
            inbox,
            handle: cx.handle(),
            peer: cx.peer_addr(),
            target: cx.target().into(),
            protocol: cx.protocol().map(Into::into),
            max_outbox: self.listener.inner.max_outbox.load(Ordering::Relaxed),
        };
        let tx = self.listener.inner.tx.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if tx.send(socket).is_err() {
            let _ = cx.close(CloseCode::GOING_AWAY, "no one accepts");
        }
    }

    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        let bytes = msg.as_bytes().len();
        let item = match msg {
            Message::Text(t) => Incoming::Text(t.to_owned()),
            Message::Binary(b) => Incoming::Binary(b.to_vec()),
        };
        self.push(Some(cx), item, bytes);
    }

    fn on_ping(&mut self, cx: &mut Context<'_>, payload: &[u8]) {
        self.push(Some(cx), Incoming::Ping(payload.to_vec()), payload.len());
    }

    fn on_pong(&mut self, cx: &mut Context<'_>, payload: &[u8]) {
        self.push(Some(cx), Incoming::Pong(payload.to_vec()), payload.len());
    }

    fn on_drain(&mut self, _cx: &mut Context<'_>) {
        self.wake_senders();
    }

    fn on_close(&mut self, _cx: &mut Context<'_>, close: CloseInfo<'_>) {
        self.push(None, Incoming::Close(close.into_owned()), 0);
        self.wake_senders();
    }
}

/// One accepted connection, blocking. `Send`: move it to the thread that serves it. For
/// sending from more threads, [`Socket::handle`] gives a [`ConnHandle`].
///
/// Dropping it while the connection is open closes the connection with 1001 (going away).
#[derive(Debug)]
pub struct Socket {
    inbox: Arc<Inbox>,
    handle: ConnHandle,
    peer: SocketAddr,
    target: Box<str>,
    protocol: Option<Box<str>>,
    max_outbox: usize,
}

impl Socket {
    /// The next message, ping, pong or the end of the connection, waiting for it. The last
    /// item of every connection is [`Incoming::Close`] — the peer's code, or 1006 when it
    /// vanished without one — after which `recv` returns [`Error::Closed`]. Pings are already
    /// answered by the engine.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after the close was received.
    pub fn recv(&self) -> Result<Incoming, Error> {
        self.recv_until(None)
    }

    /// As [`Socket::recv`], waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`Socket::recv`]; [`Error::Timeout`] when nothing arrived in time.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Incoming, Error> {
        self.recv_until(Some(Instant::now() + timeout))
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Result<Incoming, Error> {
        let mut queue = self.inbox.queue.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some((item, bytes)) = queue.items.pop_front() {
                queue.bytes -= bytes;
                return Ok(item);
            }
            if queue.ended {
                return Err(Error::Closed);
            }
            queue = match deadline {
                None => self.inbox.ready.wait(queue).unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Timeout);
                    }
                    self.inbox
                        .ready
                        .wait_timeout(queue, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    /// Queues a message, first waiting while more than the listener's `max_outbox` bytes are
    /// queued for this connection. Messages from one thread go out in order. The payload is
    /// copied; [`Socket::send_shared`] shares it.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] once the connection is closing or closed.
    pub fn send(&self, msg: Message<'_>) -> Result<(), SendError> {
        self.wait_outbox()?;
        self.handle.send(msg)
    }

    /// As [`Socket::send`], without copying the payload.
    ///
    /// # Errors
    ///
    /// As [`Socket::send`]; [`SendError::Protocol`] for text that is not UTF-8.
    pub fn send_shared(&self, kind: DataKind, payload: Bytes) -> Result<(), SendError> {
        self.wait_outbox()?;
        self.handle.send_shared(kind, payload)
    }

    /// Waits while more than `max_outbox` bytes are queued for the connection.
    fn wait_outbox(&self) -> Result<(), SendError> {
        while self.handle.buffered_amount() > self.max_outbox {
            if self.handle.is_closed() {
                return Err(SendError::Closed);
            }
            let guard = self.inbox.drained_lock.lock().unwrap_or_else(PoisonError::into_inner);
            // on_drain notifies; the timeout covers a queue that shrank without crossing the
            // drain threshold.
            let _ = self.inbox.drained.wait_timeout(guard, Duration::from_millis(2));
        }
        Ok(())
    }

    /// Starts the closing handshake; the peer's answer arrives through [`Socket::recv`] as
    /// [`Incoming::Close`] with `initiated_locally` set.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] when already closed; [`SendError::Protocol`] for a code that may
    /// not be sent or a reason over 123 bytes.
    pub fn close(&self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.inbox.closing.store(true, Ordering::Relaxed);
        self.handle.close(code, reason)
    }

    /// A handle for sending from other threads (without [`Socket::send`]'s waiting).
    pub fn handle(&self) -> ConnHandle {
        self.handle.clone()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The upgrade request's target (path and query).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The subprotocol chosen at the upgrade.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }
}

sink_by_ref! {
    Socket => Socket,
    &Socket => Socket,
}

impl Drop for Socket {
    fn drop(&mut self) {
        if !self.handle.is_closed() && !self.inbox.closing.load(Ordering::Relaxed) {
            let _ = self.handle.close(CloseCode::GOING_AWAY, "");
        }
    }
}
