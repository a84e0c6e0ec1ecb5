//! The per-core worker: one thread, one backend, a table of connections with its timer wheel,
//! a mailbox and a subscription table. Nothing here is shared with other workers except the
//! mailboxes; a connection never leaves its worker.
//!
//! # One loop turn ([`Worker::turn`])
//!
//! 1. Wait in the backend (until I/O, a wake-up, or the next timer tick; with
//!    [`ServerConfig::busy_poll`](crate::ServerConfig::busy_poll), poll without sleeping
//!    for a while after the last event first).
//! 2. Read the clock once; handle each completion: accept ([`upgrade`]), handshake, deframe
//!    and call the handler ([`recv`]), note writability and EOF ([`lifecycle`]).
//! 3. Register accepted streams; drain the mailbox ([`commands`]: cross-thread sends, closes,
//!    publishes, client connects ([`connect`]), stats, shutdown); deliver this worker's own
//!    publishes ([`publish`]); fire due timers.
//! 4. Flush ([`flush`]): every connection with queued frames gets one gathered write.
//! 5. Retire closed connections (close their sockets, free their slots).
//!
//! The connection table ([`slot`]) owns the slots, the wheel and the codecs ([`codecs`]); the
//! worker's [`WorkerCx`] is the part a handler's context reaches.

mod codecs;
mod commands;
mod connect;
mod flush;
mod lifecycle;
mod publish;
mod recv;
mod slot;
mod tls;
mod upgrade;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bidir_sys::{Backend, Completion, Token};

use crate::cx::{Clock, Shared, WorkerCx};
use crate::mailbox::{Command, Mailbox};
use crate::route::Router;
use slot::Conns;

/// A worker: its backend, its connections, and the state its handlers reach.
pub(crate) struct Worker<B: Backend> {
    backend: B,
    conns: Conns,
    cx: WorkerCx,
    router: Arc<Router>,
    mailbox: Arc<Mailbox>,
    commands: Vec<Command>,
    to_add: Vec<(usize, B::Stream)>,
    /// The shutdown deadline on the worker's clock, once a shutdown started.
    shutdown: Option<u64>,
    listeners_open: bool,
    /// When a turn last handled an event (busy polling spins for a while after it).
    last_event: bidir_protocol::Instant,
}

impl<B: Backend> Worker<B> {
    /// A worker reading the time from `clock` ([`Clock::system`] but in a test bed).
    pub(crate) fn new(
        index: usize,
        backend: B,
        shared: Arc<Shared>,
        router: Arc<Router>,
        clock: Clock,
    ) -> Self {
        let config = &shared.config;
        let workers = shared.mailboxes.len().max(1);
        let conns = Conns::new(config.timer_tick, config.max_connections.div_ceil(workers));
        let mailbox = Arc::clone(&shared.mailboxes[index]);
        Self {
            backend,
            conns,
            cx: WorkerCx::new(index, shared, clock),
            router,
            mailbox,
            commands: Vec::new(),
            to_add: Vec::new(),
            shutdown: None,
            listeners_open: true,
            last_event: bidir_protocol::Instant::ZERO,
        }
    }

    /// Runs until shut down and every connection is gone; then closes the mailbox, dropping
    /// commands that came too late.
    pub(crate) fn run(mut self) {
        crate::cx::mark_worker_thread();
        while self.turn() {}
        self.mailbox.close();
    }

    /// One loop turn (see the module documentation); `false` once the worker is done: shut
    /// down, every connection gone.
    pub(crate) fn turn(&mut self) -> bool {
        let timeout = self.poll_timeout();
        let spin_until = match self.cx.config().busy_poll {
            Some(spin) if timeout != Some(Duration::ZERO) => {
                self.cx.spin_until(self.last_event, spin)
            }
            _ => None,
        };
        let mut woken = false;
        let mut clock_read = false;
        let Self { backend, conns, cx, router, to_add, shutdown, .. } = self;
        let mut handle = |completion: Completion<'_, B::Stream>| {
            if !clock_read {
                cx.now = cx.read_clock();
                clock_read = true;
            }
            match completion {
                Completion::Accepted { stream, peer, listener } => {
                    let tls = router.tls(listener);
                    if let Some(key) = conns.accept(cx, shutdown.is_some(), peer, tls) {
                        to_add.push((key, stream));
                    }
                }
                Completion::Received { token, data } => {
                    cx.counters.bytes_in += data.len() as u64;
                    conns.on_received(cx, router, token.0, data);
                }
                Completion::Writable { token } => conns.on_writable(cx, token.0),
                Completion::Closed { token, error } => conns.on_closed(cx, token.0, error),
                Completion::Connected { token, error } => conns.on_connected(cx, token.0, error),
                Completion::Woken => woken = true,
                _ => {}
            }
        };
        let result = Self::wait(backend, timeout, spin_until, &mut handle);
        if let Err(e) = result {
            // The backend cannot wait any more: nothing sensible is left to do.
            panic!("worker {} backend failed: {e}", self.cx.index);
        }
        if clock_read {
            self.last_event = self.cx.now;
        } else {
            self.cx.now = self.cx.read_clock();
        }
        let turn_start = self.cx.now;
        self.cx.counters.turns += 1;

        for (key, stream) in std::mem::take(&mut self.to_add) {
            if let Err(_e) = self.backend.add_stream(Token(key), stream) {
                self.conns.kill(&mut self.cx, key);
            }
        }
        if woken {
            self.drain_mailbox();
        }
        self.deliver_local_publishes();
        self.conns.fire_timers(&mut self.cx);
        if let Some(deadline) = self.shutdown {
            if self.listeners_open {
                self.backend.close_listeners();
                self.listeners_open = false;
            }
            if self.cx.now.as_nanos() >= deadline {
                self.conns.abandon_all(&mut self.cx);
            }
        }
        self.flush();
        for key in std::mem::take(&mut self.conns.retire) {
            self.backend.remove_stream(Token(key));
            self.conns.slots.remove(key);
        }
        self.publish_open_count();
        if self.cx.timing {
            let end = self.cx.read_clock();
            let busy = end.as_nanos().saturating_sub(turn_start.as_nanos()).max(1);
            let _ = self.cx.turn_ns.record(busy);
            self.cx.now = end;
        }
        !(self.shutdown.is_some() && self.conns.slots.is_empty())
    }

    /// Waits in the backend up to `timeout`, first polling without sleeping until `spin_until`
    /// (busy polling) if that is given, nothing comes sooner and the timeout is later.
    fn wait(
        backend: &mut B,
        mut timeout: Option<Duration>,
        spin_until: Option<std::time::Instant>,
        handle: &mut impl FnMut(Completion<'_, B::Stream>),
    ) -> std::io::Result<()> {
        if let Some(until) = spin_until {
            let start = std::time::Instant::now();
            let until = timeout.map_or(until, |t| until.min(start + t));
            let mut reported = false;
            let mut now = start;
            while !reported && now < until {
                backend.poll(Some(Duration::ZERO), |c| {
                    reported = true;
                    handle(c);
                })?;
                now = std::time::Instant::now();
            }
            if reported {
                return Ok(());
            }
            timeout = timeout.map(|t| t.saturating_sub(now - start));
        }
        backend.poll(timeout, handle)
    }

    /// Whether the next turn has nothing to do unless an event arrives or time passes:
    /// nothing to flush, no publish of its own to deliver, nothing in its mailbox.
    pub(crate) fn is_idle(&self) -> bool {
        self.cx.dirty.is_empty() && self.cx.local_publishes.is_empty() && self.mailbox.is_empty()
    }

    /// How long the next wait may last. Uses the clock as last read (at the end of the turn
    /// with timing on, else at its start): timers are coarse, and a wait that ends a turn's
    /// length late costs nothing.
    pub(crate) fn poll_timeout(&self) -> Option<Duration> {
        if !self.cx.dirty.is_empty() || !self.cx.local_publishes.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = self.cx.now.as_nanos();
        let wheel = self.conns.wheel.timeout(now);
        match self.shutdown {
            Some(deadline) => {
                let left = Duration::from_nanos(deadline.saturating_sub(now));
                Some(wheel.map_or(left, |w| w.min(left)))
            }
            None => wheel,
        }
    }

    fn publish_open_count(&self) {
        let open = self.cx.counters.open;
        self.cx.shared.open[usize::from(self.cx.index)].store(open, Ordering::Relaxed);
    }
}
