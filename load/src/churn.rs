//! Churn: `--conns` connections, each of which repeatedly connects, upgrades, echoes
//! `--cycle-messages` messages, closes cleanly and connects again, until `--cycles` cycles in
//! total have been started or `--duration` has passed. With `--key`, each cycle exchanges
//! keys in its upgrade (what a key mode costs per connection). Given the server's PID, the main
//! thread samples its resident memory and open descriptors every 100 ms: at the start, the
//! peak, and the end, once the server has closed what the run opened (a soak's leak check),
//! and reads its CPU time at the start and the end of the churn: the server's CPU per cycle.
//! Each cycle's handshake (connect to open: the TCP connect and the upgrade) is timed too.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bidir::client::{Connect, ConnectError};
use bidir::hdrhistogram::Histogram;
use bidir::protocol::rpc::key::KeyExchange;
use bidir::{CloseCode, CloseInfo, Context, Handler, Message, ServerHandle};

use crate::args::Options;
use crate::bin::{self, Key};
use crate::procfs::{self, Usage};
use crate::run::{self, RunResult};

/// How often the main thread samples the server and prints progress.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How long connections may take to finish their cycle once the run stops.
const FINISH_GRACE: Duration = Duration::from_secs(30);
/// How long the server may take to close the run's descriptors after it.
const SETTLE: Duration = Duration::from_secs(10);
/// A descriptor count unchanged this long has settled.
const STEADY: Duration = Duration::from_secs(1);

/// The server's resident memory and descriptors over a churn run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServerUsage {
    /// Before the first connection.
    pub(crate) start: Usage,
    /// The largest of each figure while the run went on.
    pub(crate) peak: Usage,
    /// After the run, once the server's descriptors fell back to `start` (or `SETTLE` passed).
    pub(crate) end: Usage,
}

/// State every churning connection and the main thread share.
struct Shared {
    epoch: Instant,
    /// Taken by the main thread at the end, so no handler keeps the engine alive.
    engine: RwLock<Option<ServerHandle>>,
    connect: Connect,
    /// `--key`: each cycle offers a key exchange of its own.
    key: Option<Key>,
    /// The message each cycle sends (text), or empty (binary: `bytes`).
    text: String,
    bytes: Vec<u8>,
    cycle_messages: usize,
    /// No new cycles from here on.
    stop: AtomicBool,
    /// Cycles started (claimed); may pass `limit` by the number of connections that tried.
    started: AtomicU64,
    limit: Option<u64>,
    /// Cycles that went connect → upgrade → echoes → clean close.
    completed: AtomicU64,
    opened: AtomicU64,
    failed: AtomicU64,
    /// Cycles that ended otherwise (not clean, an unexpected close code or message).
    errors: AtomicU64,
    /// Connections (of `--conns`) that have stopped cycling.
    finished: AtomicU64,
    /// Cycle times, connect to close, merged from every connection.
    latency: Mutex<Histogram<u64>>,
    /// Handshake times, connect to open.
    handshake: Mutex<Histogram<u64>>,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn note_error(&self, e: String) {
        let mut first = run::lock(&self.first_error);
        if first.is_none() {
            *first = Some(e);
        }
    }

    /// Claims the next cycle: false once stopped or when `limit` cycles have been claimed.
    fn claim(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
            && self.limit.is_none_or(|limit| self.started.fetch_add(1, Ordering::Relaxed) < limit)
    }

    /// Starts one more cycle on a new connection if one may start; otherwise this connection
    /// of `--conns` is finished.
    fn next(self: &Arc<Self>) {
        if self.claim() {
            let engine = self.engine.read().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(engine) = engine {
                match self.launch(&engine) {
                    Ok(()) => return,
                    Err(ConnectError::ShuttingDown) => {}
                    Err(e) => {
                        self.errors.fetch_add(1, Ordering::Relaxed);
                        self.note_error(e.to_string());
                    }
                }
            }
        }
        self.finished.fetch_add(1, Ordering::Relaxed);
    }

    /// Connects a new cycle on `engine`, offering a key exchange of its own with `--key`.
    fn launch(self: &Arc<Self>, engine: &ServerHandle) -> Result<(), ConnectError> {
        let mut cycle = Cycle::new(Arc::clone(self));
        let Some(key) = &self.key else { return engine.connect(&self.connect, cycle) };
        let (connect, exchange) = bin::offer(&self.connect, key).map_err(ConnectError::Rejected)?;
        cycle.exchange = Some(exchange);
        engine.connect(&connect, cycle)
    }

    fn send(&self, cx: &mut Context<'_>) {
        let sent = if self.text.is_empty() {
            cx.send_binary(&self.bytes)
        } else {
            cx.send_text(&self.text)
        };
        if let Err(e) = sent {
            self.note_error(format!("send failed: {e}"));
        }
    }
}

/// One cycle: a connection from connect to close.
struct Cycle {
    shared: Arc<Shared>,
    /// When `connect` was called, nanoseconds since the epoch.
    started: u64,
    received: usize,
    /// Something went wrong in this cycle (counted once, at the close).
    bad: bool,
    /// `--key`: the exchange offered, finished with the server's answer.
    exchange: Option<KeyExchange>,
}

impl Cycle {
    fn new(shared: Arc<Shared>) -> Self {
        let started = shared.now();
        Self { shared, started, received: 0, bad: false, exchange: None }
    }
}

impl Handler for Cycle {
    /// Checks the server's proof of the key (the cycle sends nothing it would seal).
    fn on_response(&mut self, headers: &[(String, String)]) -> Result<(), String> {
        match self.exchange.take() {
            Some(exchange) => bin::finish(exchange, headers).map(drop),
            None => Ok(()),
        }
    }

    fn on_open(&mut self, cx: &mut Context<'_>) {
        self.shared.opened.fetch_add(1, Ordering::Relaxed);
        let took = self.shared.now().saturating_sub(self.started).max(1);
        run::lock(&self.shared.handshake).saturating_record(took);
        if self.shared.cycle_messages == 0 {
            let _ = cx.close(CloseCode::NORMAL, "");
        } else {
            self.shared.send(cx);
        }
    }

    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        let expected: &[u8] = if self.shared.text.is_empty() {
            &self.shared.bytes
        } else {
            self.shared.text.as_bytes()
        };
        if msg.as_bytes() != expected && !self.bad {
            self.bad = true;
            self.shared.note_error("an echo differed from the message sent".into());
        }
        self.received += 1;
        if self.received < self.shared.cycle_messages {
            self.shared.send(cx);
        } else {
            let _ = cx.close(CloseCode::NORMAL, "");
        }
    }

    fn on_close(&mut self, _cx: &mut Context<'_>, close: CloseInfo<'_>) {
        let complete = close.clean
            && close.code == CloseCode::NORMAL
            && self.received == self.shared.cycle_messages;
        if complete && !self.bad {
            self.shared.completed.fetch_add(1, Ordering::Relaxed);
            let took = self.shared.now().saturating_sub(self.started).max(1);
            run::lock(&self.shared.latency).saturating_record(took);
        } else {
            self.shared.errors.fetch_add(1, Ordering::Relaxed);
            if !self.bad {
                self.shared.note_error(format!(
                    "a cycle ended {} with {} {:?} after {} of {} echoes",
                    if close.clean { "cleanly" } else { "uncleanly" },
                    close.code,
                    close.reason,
                    self.received,
                    self.shared.cycle_messages
                ));
            }
        }
        self.shared.next();
    }

    fn on_connect_failed(&mut self, error: ConnectError) {
        self.shared.failed.fetch_add(1, Ordering::Relaxed);
        self.shared.note_error(error.to_string());
        self.shared.next();
    }
}

/// Runs the churn; see the module's description.
pub(crate) fn run(o: &Options) -> Result<RunResult, String> {
    let connect = run::connect_options(o)?;
    // A connection's next cycle may open before its last one is gone from the count.
    let engine = run::engine(o, o.conns * 2 + 16)?;
    let server_start = match o.server_pid {
        Some(pid) => Some(Usage::read(pid).ok_or(format!("no process {pid} to measure"))?),
        None => None,
    };
    let message = run::Payload::new(o.size, o.binary, 0);
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        engine: RwLock::new(Some(engine.clone())),
        connect,
        key: o.key.clone(),
        text: message.text,
        bytes: message.bytes,
        cycle_messages: o.cycle_messages,
        stop: AtomicBool::new(false),
        started: AtomicU64::new(0),
        limit: o.cycles,
        completed: AtomicU64::new(0),
        opened: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        finished: AtomicU64::new(0),
        latency: Mutex::new(run::histogram()),
        handshake: Mutex::new(run::histogram()),
        first_error: Mutex::new(None),
    });
    let start = Instant::now();
    let server_cpu_start = o.server_pid.and_then(procfs::cpu_ns);
    let deadline = start.checked_add(o.duration);
    let mut peak = server_start;
    let sample = |peak: &mut Option<Usage>| {
        if let (Some(pid), Some(p)) = (o.server_pid, peak.as_mut())
            && let Some(now) = Usage::read(pid)
        {
            *p = p.max(now);
        }
    };

    // Start the connections, at most `connect_window` first handshakes at a time.
    let mut launched = 0u64;
    let mut last_sample = Instant::now();
    for _ in 0..o.conns {
        if !shared.claim() {
            break;
        }
        let answered =
            || shared.opened.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed);
        while launched.saturating_sub(answered()) >= o.connect_window as u64 {
            std::thread::sleep(Duration::from_micros(200));
            if start.elapsed()
                > Duration::from_secs(60) + Duration::from_millis(10 * o.conns as u64)
            {
                return Err("connections do not open (timed out)".into());
            }
        }
        shared.launch(&engine).map_err(|e| e.to_string())?;
        launched += 1;
        if last_sample.elapsed() >= SAMPLE_EVERY {
            sample(&mut peak);
            last_sample = Instant::now();
        }
    }

    // Churn until every connection has stopped cycling; stop them at the deadline.
    let mut stopped_at = None;
    let mut last_print = Instant::now();
    while shared.finished.load(Ordering::Relaxed) < launched {
        std::thread::sleep(SAMPLE_EVERY);
        sample(&mut peak);
        if stopped_at.is_none() && deadline.is_some_and(|d| Instant::now() >= d) {
            shared.stop.store(true, Ordering::Relaxed);
            stopped_at = Some(Instant::now());
        }
        if stopped_at.is_some_and(|t| t.elapsed() > FINISH_GRACE) {
            let stuck = launched - shared.finished.load(Ordering::Relaxed);
            shared.errors.fetch_add(stuck, Ordering::Relaxed);
            shared.note_error(format!("{stuck} connections did not finish their cycle"));
            break;
        }
        if !o.quiet && last_print.elapsed() >= Duration::from_secs(1) {
            eprint!(
                "\rchurning: {} cycles, {} failed, {} errors   ",
                shared.completed.load(Ordering::Relaxed),
                shared.failed.load(Ordering::Relaxed),
                shared.errors.load(Ordering::Relaxed)
            );
            last_print = Instant::now();
        }
    }
    let window = start.elapsed();
    let server_cpu_ns = server_cpu_start
        .zip(o.server_pid.and_then(procfs::cpu_ns))
        .map(|(before, after)| after.saturating_sub(before));
    if !o.quiet {
        eprintln!();
    }
    shared.stop.store(true, Ordering::Relaxed);
    shared.engine.write().unwrap_or_else(|e| e.into_inner()).take();
    engine.shutdown(Duration::from_secs(2));
    let server_usage = match (o.server_pid, server_start, peak) {
        (Some(pid), Some(start), Some(peak)) => {
            let end = settled(pid, start);
            Some(ServerUsage { start, peak: peak.max(end), end })
        }
        _ => None,
    };

    let latency = run::lock(&shared.latency).clone();
    Ok(RunResult {
        latency,
        lag: run::histogram(),
        messages: shared.completed.load(Ordering::Relaxed) * o.cycle_messages as u64,
        events: 0,
        missed: 0,
        window,
        opened: shared.opened.load(Ordering::Relaxed),
        failed: shared.failed.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        first_error: run::lock(&shared.first_error).clone(),
        connect_time: window,
        server_cpu_ns,
        server_kernel_share: None,
        own_cpu_ns: 0,
        server_rss_per_conn: None,
        own_rss_per_conn: None,
        cycles: shared.completed.load(Ordering::Relaxed),
        server_usage,
        handshake: Some(run::lock(&shared.handshake).clone()),
        wire_in_ratio: None,
    })
}

/// The server's usage once it has closed what the run opened: its descriptors back to
/// `start`'s count, or unchanged for `STEADY` (what stays open then is kept), or `SETTLE`
/// passed.
fn settled(pid: u32, start: Usage) -> Usage {
    let until = Instant::now() + SETTLE;
    let mut last = (u64::MAX, Instant::now());
    loop {
        let now = Usage::read(pid).unwrap_or(Usage { rss_bytes: 0, fds: 0 });
        if now.fds != last.0 {
            last = (now.fds, Instant::now());
        }
        if now.fds <= start.fds || last.1.elapsed() >= STEADY || Instant::now() >= until {
            // Memory freed with the last connections shows a moment later.
            std::thread::sleep(Duration::from_millis(200));
            return Usage::read(pid).unwrap_or(now);
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
}
