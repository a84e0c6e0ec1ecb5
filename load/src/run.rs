//! Running a load: connections on the engine's workers, tallies per worker thread, the main
//! thread pacing the phases and reading /proc.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bidir::client::{Connect, ConnectError};
use bidir::hdrhistogram::Histogram;
use bidir::{CloseInfo, Context, Handler, Message, Server, ServerConfig, ServerHandle, TimerId};

use crate::args::{Dialect, Mode, Options};
use crate::churn::{self, ServerUsage};
use crate::procfs;

/// Latencies are recorded in nanoseconds, up to a minute.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

/// What one worker thread counted.
struct Tally {
    /// Echo latency (or handshake latency in connect mode), received in the window.
    latency: Histogram<u64>,
    /// Open loop: how late the generator sent, behind the intended time.
    lag: Histogram<u64>,
    sent: u64,
    received: u64,
    received_in_window: u64,
    /// Echoes that did not carry a timestamp we sent.
    bad: u64,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: histogram(),
            lag: histogram(),
            sent: 0,
            received: 0,
            received_in_window: 0,
            bad: 0,
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State every connection and the main thread share.
struct Shared {
    epoch: Instant,
    /// Sending may start (all connections are open).
    go: AtomicBool,
    /// No new messages from here on.
    stop: AtomicBool,
    /// The measured window, in nanoseconds since `epoch` (receive times).
    window_start: AtomicU64,
    window_end: AtomicU64,
    tallies: Mutex<Vec<Arc<Mutex<Tally>>>>,
    opened: AtomicU64,
    failed: AtomicU64,
    /// Connections that ended before the run stopped them.
    dropped: AtomicU64,
    first_error: Mutex<Option<String>>,
    binary: bool,
    size: usize,
    /// `--rpc`: messages are calls.
    calls: Option<Calls>,
    inflight: usize,
    /// Open loop: nanoseconds between two messages of one connection.
    interval: Option<u64>,
    conns: usize,
}

impl Shared {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn note_error(&self, e: String) {
        let mut first = lock(&self.first_error);
        if first.is_none() {
            *first = Some(e);
        }
    }
}

thread_local! {
    /// This worker thread's tally, registered with the run on first use.
    static TALLY: RefCell<Option<Arc<Mutex<Tally>>>> = const { RefCell::new(None) };
}

fn tally(shared: &Shared) -> Arc<Mutex<Tally>> {
    TALLY.with(|t| {
        Arc::clone(t.borrow_mut().get_or_insert_with(|| {
            let tally = Arc::new(Mutex::new(Tally::new()));
            lock(&shared.tallies).push(Arc::clone(&tally));
            tally
        }))
    })
}

/// One load connection.
struct LoadConn {
    shared: Arc<Shared>,
    tally: Option<Arc<Mutex<Tally>>>,
    /// The message, its first bytes rewritten with the send time each time.
    text: String,
    bytes: Vec<u8>,
    /// When `connect` was called, for the handshake time.
    started: u64,
    /// Open loop: the intended time of the next message.
    next: u64,
    /// The armed pacing timer: re-arming replaces it.
    timer: Option<TimerId>,
    index: usize,
    /// `--rpc`: the last call id sent; ids are send times made unique per connection.
    last_id: u64,
}

/// The calls `--rpc` makes: the text around the id, which carries the send time.
struct Calls {
    dialect: Dialect,
    prefix: &'static str,
    suffix: String,
}

impl Calls {
    /// The argument: a small struct, as a service would echo it.
    const ITEM: &str = r#"{"id":42,"name":"sensor","values":[1.5,2.25,3.0],"ok":true}"#;

    fn new(dialect: Dialect, method: &str) -> Self {
        let item = Self::ITEM;
        match dialect {
            Dialect::Bidir => {
                Self { dialect, prefix: r#"["call","#, suffix: format!(r#","{method}",[{item}]]"#) }
            }
            Dialect::JsonRpc => Self {
                dialect,
                prefix: r#"{"jsonrpc":"2.0","id":"#,
                suffix: format!(r#","method":"{method}","params":[{item}]}}"#),
            },
        }
    }

    /// Writes the call with `id` into `text`.
    fn write(&self, id: u64, text: &mut String) {
        use std::fmt::Write;
        text.clear();
        text.push_str(self.prefix);
        let _ = write!(text, "{id}");
        text.push_str(&self.suffix);
    }

    /// The id a successful answer carries; `None` for an error answer or anything else.
    fn answer_id(&self, text: &str) -> Option<u64> {
        let rest = match self.dialect {
            Dialect::Bidir => text.strip_prefix(r#"["ok","#)?,
            // The top-level id: first (as jsonrpsee writes it) or after the result, whose
            // value may hold ids of its own.
            Dialect::JsonRpc if text.contains(r#""result":"#) => {
                match text.strip_prefix(self.prefix) {
                    Some(rest) => rest,
                    None => &text[text.rfind(r#""id":"#)? + 5..],
                }
            }
            Dialect::JsonRpc => return None,
        };
        let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        rest[..end].parse().ok()
    }
}

/// A load message of `--size` bytes: text (`bytes` empty) or binary (`text` empty).
pub(crate) struct Payload {
    pub(crate) text: String,
    pub(crate) bytes: Vec<u8>,
}

impl Payload {
    /// Binary: a fixed pseudo-random pattern seeded by `index`, compressible only as much as
    /// real binary data. Text: JSON-like records after 16 digits (room for a timestamp).
    pub(crate) fn new(size: usize, binary: bool, index: usize) -> Self {
        if binary {
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ index as u64;
            let bytes = (0..size)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            Self { text: String::new(), bytes }
        } else {
            let filler = r#"{"id":42,"name":"sensor","values":[1.5,2.25,3.0],"ok":true},"#;
            let mut text = "0".repeat(16);
            while text.len() < size {
                text.push_str(filler);
            }
            text.truncate(size);
            Self { text, bytes: Vec::new() }
        }
    }
}

impl LoadConn {
    fn new(shared: Arc<Shared>, index: usize) -> Self {
        let Payload { text, bytes } = Payload::new(shared.size, shared.binary, index);
        let started = shared.now();
        Self { shared, tally: None, text, bytes, started, next: 0, timer: None, index, last_id: 0 }
    }

    fn send(&mut self, cx: &mut Context<'_>, stamp: u64) -> bool {
        let sent = if let Some(calls) = &self.shared.calls {
            // Calls in flight need distinct ids: a later one than the last, off by nanoseconds.
            self.last_id = stamp.max(self.last_id + 1);
            calls.write(self.last_id, &mut self.text);
            cx.send_text(&self.text)
        } else if self.shared.binary {
            self.bytes[..8].copy_from_slice(&stamp.to_le_bytes());
            cx.send_binary(&self.bytes)
        } else {
            let mut hex = [0u8; 16];
            for (i, digit) in hex.iter_mut().enumerate() {
                *digit = b"0123456789abcdef"[(stamp >> (60 - 4 * i)) as usize & 15];
            }
            self.text.replace_range(..16, std::str::from_utf8(&hex).expect("ASCII digits"));
            cx.send_text(&self.text)
        };
        sent.is_ok()
    }

    /// Open loop: sends every message whose intended time has come, then sleeps until the
    /// next one. The lag behind the intended time is the generator's own error, reported apart.
    fn pace(&mut self, cx: &mut Context<'_>) {
        let Some(interval) = self.shared.interval else { return };
        let Some(tally) = self.tally.clone() else { return };
        let mut t = lock(&tally);
        let now = self.shared.now();
        let window = self.window();
        while self.next <= now && !self.shared.stop.load(Ordering::Relaxed) {
            if self.send(cx, self.next) {
                t.sent += 1;
                if window.contains(&self.next) {
                    t.lag.saturating_record((now - self.next).max(1));
                }
            }
            self.next += interval;
        }
        if !self.shared.stop.load(Ordering::Relaxed) {
            if let Some(timer) = self.timer.take() {
                cx.cancel_timer(timer);
            }
            self.timer = Some(cx.set_timer(Duration::from_nanos(self.next.saturating_sub(now))));
        }
    }

    fn window(&self) -> std::ops::Range<u64> {
        self.shared.window_start.load(Ordering::Relaxed)
            ..self.shared.window_end.load(Ordering::Relaxed)
    }

    fn start(&mut self, cx: &mut Context<'_>) {
        match self.shared.interval {
            None => {
                let mut sent = 0;
                for _ in 0..self.shared.inflight {
                    if self.send(cx, self.shared.now()) {
                        sent += 1;
                    }
                }
                if let Some(tally) = &self.tally {
                    lock(tally).sent += sent;
                }
            }
            Some(interval) => {
                // Spread the connections' phases over one interval.
                let offset = interval * self.index as u64 / self.shared.conns as u64;
                self.next = self.shared.now() + offset;
                self.pace(cx);
            }
        }
    }

    fn stamp(&self, msg: &Message<'_>) -> Option<u64> {
        match msg {
            Message::Text(t) if self.shared.calls.is_some() => {
                self.shared.calls.as_ref()?.answer_id(t)
            }
            Message::Binary(b) if self.shared.binary && b.len() >= 8 => {
                Some(u64::from_le_bytes(b[..8].try_into().ok()?))
            }
            Message::Text(t) if !self.shared.binary && t.len() >= 16 => {
                u64::from_str_radix(&t[..16], 16).ok()
            }
            _ => None,
        }
    }
}

impl Handler for LoadConn {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let tally = tally(&self.shared);
        let handshake = self.shared.now() - self.started;
        if self.shared.interval.is_none() && self.shared.inflight == 0 {
            // Connect mode: the latency is the handshake's.
            lock(&tally).latency.saturating_record(handshake.max(1));
        }
        self.tally = Some(tally);
        self.shared.opened.fetch_add(1, Ordering::Relaxed);
        if self.shared.inflight > 0 {
            cx.set_timer(Duration::from_millis(1)); // waits for the go
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _: TimerId) {
        self.timer = None;
        if self.shared.stop.load(Ordering::Relaxed) {
            return;
        }
        if !self.shared.go.load(Ordering::Relaxed) {
            cx.set_timer(Duration::from_millis(1));
        } else if self.shared.interval.is_some() && self.next != 0 {
            self.pace(cx);
        } else {
            self.start(cx);
        }
    }

    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        let now = self.shared.now();
        let stamp = self.stamp(&msg);
        let window = self.window();
        if let Some(tally) = &self.tally {
            let mut t = lock(tally);
            t.received += 1;
            match stamp {
                Some(stamp) if stamp <= now => {
                    if window.contains(&now) {
                        t.received_in_window += 1;
                        t.latency.saturating_record((now - stamp).max(1));
                    }
                }
                _ => t.bad += 1,
            }
        }
        if self.shared.stop.load(Ordering::Relaxed) {
            return;
        }
        if self.shared.interval.is_some() {
            self.pace(cx);
        } else if self.send(cx, now)
            && let Some(tally) = &self.tally
        {
            lock(tally).sent += 1;
        }
    }

    fn on_close(&mut self, _cx: &mut Context<'_>, close: CloseInfo<'_>) {
        if !self.shared.stop.load(Ordering::Relaxed) {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            self.shared
                .note_error(format!("connection closed early: {} {}", close.code, close.reason));
        }
    }

    fn on_connect_failed(&mut self, error: ConnectError) {
        self.shared.failed.fetch_add(1, Ordering::Relaxed);
        self.shared.note_error(error.to_string());
    }
}

/// What a run measured.
#[derive(Debug)]
pub(crate) struct RunResult {
    pub(crate) latency: Histogram<u64>,
    pub(crate) lag: Histogram<u64>,
    /// Messages received in the window.
    pub(crate) messages: u64,
    /// The window's length.
    pub(crate) window: Duration,
    pub(crate) opened: u64,
    pub(crate) failed: u64,
    /// Connections that ended early plus echoes that were not ours.
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    /// Connect mode: how long opening all connections took.
    pub(crate) connect_time: Duration,
    /// CPU nanoseconds in the window: the server's (if a PID was given) and ours.
    pub(crate) server_cpu_ns: Option<u64>,
    pub(crate) own_cpu_ns: u64,
    /// Connect mode: resident memory growth of the server and of this process, per connection.
    pub(crate) server_rss_per_conn: Option<f64>,
    pub(crate) own_rss_per_conn: Option<f64>,
    /// Churn: cycles completed (connect, upgrade, echoes, clean close).
    pub(crate) cycles: u64,
    /// Churn, given the server's PID: its memory and descriptors at start, peak and end.
    pub(crate) server_usage: Option<ServerUsage>,
}

/// The client side of every load connection: the URL, the deflate offer, no heartbeats, and
/// limits that fit `--size`.
pub(crate) fn connect_options(o: &Options) -> Result<Connect, String> {
    let mut connect = Connect::new(&o.url).map_err(|e| e.to_string())?;
    if let Some((Dialect::Bidir, _)) = o.rpc {
        connect = connect.protocol(bidir::protocol::rpc::JSON_PROTOCOL);
    }
    let mut protocol = bidir::protocol::Config::default();
    protocol.ping_interval = None;
    protocol.max_message_size = protocol.max_message_size.max(o.size * 2);
    protocol.max_frame_size = protocol.max_frame_size.max(o.size * 2);
    Ok(match &o.deflate {
        Some(d) => connect.deflate(d.clone()),
        None => connect,
    }
    .config(protocol))
}

/// The client-only engine the load connections run on: `--threads` workers, a 1 ms timer
/// tick, room for `max_connections`.
pub(crate) fn engine(o: &Options, max_connections: usize) -> Result<ServerHandle, String> {
    let mut config = ServerConfig::default();
    config.workers = Some(o.threads);
    config.timer_tick = Duration::from_millis(1);
    config.handler_timing = false;
    config.max_connections = max_connections;
    config.max_backpressure = config.max_backpressure.max(o.size * o.inflight * 4);
    Server::builder().config(config).start().map_err(|e| e.to_string())
}

pub(crate) fn run(o: &Options) -> Result<RunResult, String> {
    if o.mode == Mode::Churn {
        return churn::run(o);
    }
    let connect = connect_options(o)?;
    let engine = engine(o, o.conns + 16)?;

    let interval = o.rate.map(|rate| ((o.conns as f64 / rate) * 1e9).max(1.0) as u64);
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        go: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        window_start: AtomicU64::new(u64::MAX),
        window_end: AtomicU64::new(u64::MAX),
        tallies: Mutex::new(Vec::new()),
        opened: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        first_error: Mutex::new(None),
        binary: o.binary,
        size: o.size,
        calls: o.rpc.as_ref().map(|(dialect, method)| Calls::new(*dialect, method)),
        inflight: if o.mode == Mode::Connect { 0 } else { o.inflight },
        interval: if o.mode == Mode::Connect { None } else { interval },
        conns: o.conns,
    });
    let progress = !o.quiet;

    // Open the connections, at most `connect_window` handshakes at a time.
    let server_rss_before = o.server_pid.and_then(procfs::rss_bytes);
    let own_rss_before = procfs::rss_bytes(std::process::id());
    let connect_start = Instant::now();
    let settled = |s: &Shared| s.opened.load(Ordering::Relaxed) + s.failed.load(Ordering::Relaxed);
    let mut last_print = Instant::now();
    for i in 0..o.conns {
        while i as u64 - settled(&shared) >= o.connect_window as u64 {
            std::thread::sleep(Duration::from_micros(200));
            if connect_start.elapsed()
                > Duration::from_secs(60) + Duration::from_millis(10 * o.conns as u64)
            {
                return Err("connections do not open (timed out)".into());
            }
        }
        engine
            .connect(&connect, LoadConn::new(Arc::clone(&shared), i))
            .map_err(|e| e.to_string())?;
        if progress && last_print.elapsed() >= Duration::from_secs(1) {
            eprint!(
                "\rconnecting: {} open, {} failed   ",
                shared.opened.load(Ordering::Relaxed),
                shared.failed.load(Ordering::Relaxed)
            );
            last_print = Instant::now();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while settled(&shared) < o.conns as u64 {
        if Instant::now() > deadline {
            return Err("connections do not open (timed out)".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let connect_time = connect_start.elapsed();
    let failed = shared.failed.load(Ordering::Relaxed);
    if progress {
        eprintln!(
            "\rconnected: {} open, {failed} failed in {:.2} s",
            shared.opened.load(Ordering::Relaxed),
            connect_time.as_secs_f64()
        );
    }
    if failed > 0 && o.mode == Mode::Echo {
        let error = lock(&shared.first_error).clone().unwrap_or_default();
        engine.shutdown(Duration::from_secs(1));
        return Err(format!("{failed} connections failed: {error}"));
    }

    let mut server_rss_per_conn = None;
    let mut own_rss_per_conn = None;
    let (window, messages, server_cpu_ns, own_cpu_ns);
    match o.mode {
        Mode::Churn => unreachable!("churn::run runs churn"),
        Mode::Connect => {
            // Let the server settle, then read the memory the connections took.
            std::thread::sleep(Duration::from_millis(500));
            let opened = shared.opened.load(Ordering::Relaxed).max(1) as f64;
            if let (Some(before), Some(after)) =
                (server_rss_before, o.server_pid.and_then(procfs::rss_bytes))
            {
                server_rss_per_conn = Some((after as f64 - before as f64) / opened);
            }
            if let (Some(before), Some(after)) =
                (own_rss_before, procfs::rss_bytes(std::process::id()))
            {
                own_rss_per_conn = Some((after as f64 - before as f64) / opened);
            }
            std::thread::sleep(o.duration);
            window = connect_time;
            messages = 0;
            server_cpu_ns = None;
            own_cpu_ns = 0;
        }
        Mode::Echo => {
            let go = shared.now();
            let start = go + o.warmup.as_nanos() as u64;
            let end = start + o.duration.as_nanos() as u64;
            shared.window_start.store(start, Ordering::Relaxed);
            shared.window_end.store(end, Ordering::Relaxed);
            shared.go.store(true, Ordering::Relaxed);
            sleep_until(&shared, start, progress, "warm-up");
            let cpu_before =
                (o.server_pid.and_then(procfs::cpu_ns), procfs::cpu_ns(std::process::id()));
            sleep_until(&shared, end, progress, "measuring");
            let cpu_after =
                (o.server_pid.and_then(procfs::cpu_ns), procfs::cpu_ns(std::process::id()));
            shared.stop.store(true, Ordering::Relaxed);
            if progress {
                eprintln!();
            }
            window = Duration::from_nanos(end - start);
            messages = tallied(&shared, |t| t.received_in_window);
            server_cpu_ns = cpu_before.0.zip(cpu_after.0).map(|(b, a)| a.saturating_sub(b));
            own_cpu_ns = cpu_after.1.zip(cpu_before.1).map_or(0, |(a, b)| a.saturating_sub(b));
            // Let the last echoes arrive before closing, so the server sees clean closes.
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    engine.shutdown(Duration::from_secs(2));

    let mut latency = histogram();
    let mut lag = histogram();
    let mut bad = 0;
    for t in lock(&shared.tallies).iter() {
        let t = lock(t);
        latency.add(&t.latency).map_err(|e| format!("{e:?}"))?;
        lag.add(&t.lag).map_err(|e| format!("{e:?}"))?;
        bad += t.bad;
    }
    Ok(RunResult {
        latency,
        lag,
        messages,
        window,
        opened: shared.opened.load(Ordering::Relaxed),
        failed: shared.failed.load(Ordering::Relaxed),
        errors: shared.dropped.load(Ordering::Relaxed) + bad,
        first_error: lock(&shared.first_error).clone(),
        connect_time,
        server_cpu_ns,
        own_cpu_ns,
        server_rss_per_conn,
        own_rss_per_conn,
        cycles: 0,
        server_usage: None,
    })
}

/// Sent and received so far, over every worker.
fn totals(shared: &Shared) -> (u64, u64) {
    (tallied(shared, |t| t.sent), tallied(shared, |t| t.received))
}

fn tallied(shared: &Shared, f: impl Fn(&Tally) -> u64) -> u64 {
    lock(&shared.tallies).iter().map(|t| f(&lock(t))).sum()
}

/// Sleeps until `at` (nanoseconds since the epoch), printing a progress line each second.
fn sleep_until(shared: &Shared, at: u64, progress: bool, phase: &str) {
    let mut last = totals(shared);
    loop {
        let now = shared.now();
        if now >= at {
            return;
        }
        std::thread::sleep(Duration::from_nanos((at - now).min(1_000_000_000)));
        if progress {
            let (sent, received) = totals(shared);
            let p99 = {
                let tallies = lock(&shared.tallies);
                tallies.iter().map(|t| lock(t).latency.value_at_quantile(0.99)).max().unwrap_or(0)
            };
            eprint!(
                "\r{phase}: {:>9} msg/s sent, {:>9} msg/s received, p99 {:>8.1} µs (so far)   ",
                sent - last.0,
                received - last.1,
                p99 as f64 / 1e3
            );
            last = (sent, received);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_carry_their_id_both_ways() {
        let calls = Calls::new(Dialect::Bidir, "Bench.echo");
        let mut text = String::new();
        calls.write(1234, &mut text);
        let item = Calls::ITEM;
        assert_eq!(text, format!(r#"["call",1234,"Bench.echo",[{item}]]"#));
        assert_eq!(calls.answer_id(&format!(r#"["ok",1234,{item}]"#)), Some(1234));
        assert_eq!(calls.answer_id(r#"["err",1234,"bad_args","x"]"#), None);

        let calls = Calls::new(Dialect::JsonRpc, "echo");
        calls.write(77, &mut text);
        assert_eq!(
            text,
            format!(r#"{{"jsonrpc":"2.0","id":77,"method":"echo","params":[{item}]}}"#)
        );
        let answer = format!(r#"{{"jsonrpc":"2.0","id":77,"result":{item}}}"#);
        assert_eq!(calls.answer_id(&answer), Some(77));
        let answer = format!(r#"{{"jsonrpc":"2.0","result":{item},"id":78}}"#);
        assert_eq!(calls.answer_id(&answer), Some(78));
        let error = r#"{"jsonrpc":"2.0","id":79,"error":{"code":-32601,"message":"x"}}"#;
        assert_eq!(calls.answer_id(error), None);
    }
}
