//! Running a load: connections on the engine's workers, tallies per worker thread, the main
//! thread pacing the phases and reading /proc.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bidir::client::{Connect, ConnectError};
use bidir::hdrhistogram::Histogram;
use bidir::protocol::rpc::Msg;
use bidir::protocol::rpc::bin::{self as msgpack, RawPack};
use bidir::protocol::rpc::key::KeyExchange;
use bidir::rpc::Wire;
use bidir::{
    CloseInfo, Context, Handler, Message, SendError, Server, ServerConfig, ServerHandle, TimerId,
};

use crate::args::{Dialect, Mode, Options};
use crate::bin::{self, Envelope};
use crate::churn::{self, ServerUsage};
use crate::fanout;
use crate::procfs;
use crate::raw;

/// Latencies are recorded in nanoseconds, up to a minute.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

/// What one worker thread counted.
pub(crate) struct Tally {
    /// Echo latency (or handshake latency in connect mode; fanout: delivery latency),
    /// received in the window.
    pub(crate) latency: Histogram<u64>,
    /// Open loop: how late the generator sent, behind the intended time.
    pub(crate) lag: Histogram<u64>,
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) received_in_window: u64,
    /// Echoes that did not carry a timestamp we sent.
    pub(crate) bad: u64,
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

/// A run's clock and phases, and what its worker threads counted: shared by every
/// connection and the main thread.
pub(crate) struct Phases {
    pub(crate) epoch: Instant,
    /// Sending may start (all connections are open).
    pub(crate) go: AtomicBool,
    /// No new messages from here on.
    pub(crate) stop: AtomicBool,
    /// The measured window, in nanoseconds since `epoch` (receive times); empty until set.
    window_start: AtomicU64,
    window_end: AtomicU64,
    pub(crate) tallies: Tallies,
}

/// What the measured window saw of CPU time.
pub(crate) struct Measured {
    pub(crate) window: Duration,
    /// The server's CPU nanoseconds (given its PID) and the share of them in the kernel.
    pub(crate) server_cpu_ns: Option<u64>,
    pub(crate) server_kernel_share: Option<f64>,
    /// This process's CPU nanoseconds.
    pub(crate) own_cpu_ns: u64,
}

impl Phases {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            go: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            window_start: AtomicU64::new(u64::MAX),
            window_end: AtomicU64::new(u64::MAX),
            tallies: Mutex::new(Vec::new()),
        }
    }

    /// Nanoseconds since the epoch.
    pub(crate) fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub(crate) fn is_going(&self) -> bool {
        self.go.load(Ordering::Relaxed)
    }

    /// The measured window (empty before [`Phases::measure`] sets it).
    pub(crate) fn window(&self) -> std::ops::Range<u64> {
        self.window_start.load(Ordering::Relaxed)..self.window_end.load(Ordering::Relaxed)
    }

    /// Sets the window, gives the go, sleeps through `--warmup` and `--duration` reading the
    /// CPU time of the server (`--server-pid`) and of this process at the window's edges, and
    /// stops sending.
    pub(crate) fn measure(&self, o: &Options) -> Measured {
        let start = self.now() + o.warmup.as_nanos() as u64;
        let end = start + o.duration.as_nanos() as u64;
        self.window_start.store(start, Ordering::Relaxed);
        self.window_end.store(end, Ordering::Relaxed);
        self.go.store(true, Ordering::Relaxed);
        self.sleep_until(start, !o.quiet, "warm-up");
        let sample = || {
            let server =
                o.server_pid.and_then(|pid| Some((procfs::cpu_ns(pid)?, procfs::cpu_ticks(pid)?)));
            (server, procfs::cpu_ns(std::process::id()))
        };
        let before = sample();
        self.sleep_until(end, !o.quiet, "measuring");
        let after = sample();
        self.stop.store(true, Ordering::Relaxed);
        if !o.quiet {
            eprintln!();
        }
        let server = before.0.zip(after.0);
        Measured {
            window: Duration::from_nanos(end - start),
            server_cpu_ns: server.map(|((b, _), (a, _))| a.saturating_sub(b)),
            server_kernel_share: server.and_then(|((_, b), (_, a))| b.kernel_share(a)),
            own_cpu_ns: after.1.zip(before.1).map_or(0, |(a, b)| a.saturating_sub(b)),
        }
    }

    /// `f` summed over every worker's tally.
    pub(crate) fn tallied(&self, f: impl Fn(&Tally) -> u64) -> u64 {
        lock(&self.tallies).iter().map(|t| f(&lock(t))).sum()
    }

    /// The latency and lag histograms merged over every worker, and the bad messages.
    pub(crate) fn merged(&self) -> Result<(Histogram<u64>, Histogram<u64>, u64), String> {
        let mut latency = histogram();
        let mut lag = histogram();
        let mut bad = 0;
        for t in lock(&self.tallies).iter() {
            let t = lock(t);
            latency.add(&t.latency).map_err(|e| format!("{e:?}"))?;
            lag.add(&t.lag).map_err(|e| format!("{e:?}"))?;
            bad += t.bad;
        }
        Ok((latency, lag, bad))
    }

    /// Sleeps until `at` (nanoseconds since the epoch), printing a progress line each second.
    fn sleep_until(&self, at: u64, progress: bool, phase: &str) {
        let totals = || (self.tallied(|t| t.sent), self.tallied(|t| t.received));
        let mut last = totals();
        loop {
            let now = self.now();
            if now >= at {
                return;
            }
            std::thread::sleep(Duration::from_nanos((at - now).min(1_000_000_000)));
            if progress {
                let (sent, received) = totals();
                let p99 = {
                    let tallies = lock(&self.tallies);
                    let p99 = |t: &Arc<Mutex<Tally>>| lock(t).latency.value_at_quantile(0.99);
                    tallies.iter().map(p99).max().unwrap_or(0)
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
}

/// State every connection and the main thread share.
struct Shared {
    phases: Phases,
    opened: AtomicU64,
    failed: AtomicU64,
    /// Connections that ended before the run stopped them.
    dropped: AtomicU64,
    first_error: Mutex<Option<String>>,
    binary: bool,
    size: usize,
    /// `--rpc`: messages are calls.
    calls: Option<Calls>,
    /// `--wire bin`: the envelope's threshold and the connection's message limit.
    envelope: Option<(Option<usize>, usize)>,
    inflight: usize,
    /// Open loop: nanoseconds between two messages of one connection.
    interval: Option<u64>,
    conns: usize,
}

impl Shared {
    fn now(&self) -> u64 {
        self.phases.now()
    }

    fn note_error(&self, e: String) {
        let mut first = lock(&self.first_error);
        if first.is_none() {
            *first = Some(e);
        }
    }
}

/// Every worker thread's tally.
pub(crate) type Tallies = Mutex<Vec<Arc<Mutex<Tally>>>>;

thread_local! {
    /// This worker thread's tally, registered with the run on first use (a process makes
    /// one run).
    static TALLY: RefCell<Option<Arc<Mutex<Tally>>>> = const { RefCell::new(None) };
}

/// This worker thread's tally, registered in `tallies` on first use.
pub(crate) fn tally(tallies: &Tallies) -> Arc<Mutex<Tally>> {
    TALLY.with(|t| {
        Arc::clone(t.borrow_mut().get_or_insert_with(|| {
            let tally = Arc::new(Mutex::new(Tally::new()));
            lock(tallies).push(Arc::clone(&tally));
            tally
        }))
    })
}

/// One load connection.
struct LoadConn {
    shared: Arc<Shared>,
    tally: Option<Arc<Mutex<Tally>>>,
    /// The message, its first bytes rewritten with the send time each time.
    payload: Payload,
    /// `--rpc`: the call, rewritten with its id each time.
    text: String,
    /// When `connect` was called, for the handshake time.
    started: u64,
    /// Open loop: the intended time of the next message.
    next: u64,
    /// The armed pacing timer: re-arming replaces it.
    timer: Option<TimerId>,
    index: usize,
    /// `--rpc`: the last call id sent; ids are send times made unique per connection.
    last_id: u64,
    /// `--wire bin`: the connection's envelope.
    envelope: Option<Envelope>,
    /// `--key`: the exchange this connection offered, finished with the server's answer.
    exchange: Option<KeyExchange>,
    /// `--wire bin`: the answers of the message being read (their ids), kept for its buffer.
    answers: Vec<Option<u64>>,
}

/// The calls `--rpc` makes: the text around the id, which carries the send time; for
/// `--wire bin`, the method and the MessagePack arguments.
struct Calls {
    dialect: Dialect,
    prefix: &'static str,
    suffix: String,
    method: String,
    /// `--wire bin`: `[item]` in MessagePack (empty for JSON).
    args: Vec<u8>,
}

impl Calls {
    /// The argument: a small struct, as a service would echo it.
    const ITEM: &str = r#"{"id":42,"name":"sensor","values":[1.5,2.25,3.0],"ok":true}"#;

    /// The calls of `method` in `dialect` over `wire`, with an item of `size` bytes of JSON
    /// (at least [`Calls::ITEM`]'s).
    fn new(dialect: Dialect, wire: Wire, method: &str, size: usize) -> Self {
        let item = Self::item(size);
        let mut args = Vec::new();
        if wire == Wire::Bin {
            let value: serde_json::Value = serde_json::from_str(&item).expect("the item is JSON");
            RawPack::encode(&[value], &mut args).expect("JSON values encode");
        }
        let (prefix, suffix) = match dialect {
            Dialect::Bidir => (r#"["call","#, format!(r#","{method}",[{item}]]"#)),
            Dialect::JsonRpc => (
                r#"{"jsonrpc":"2.0","id":"#,
                format!(r#","method":"{method}","params":[{item}]}}"#),
            ),
        };
        Self { dialect, prefix, suffix, method: method.to_owned(), args }
    }

    /// [`Calls::ITEM`], its name lengthened to make it `size` bytes when that is longer:
    /// words drawn from a small vocabulary by a fixed pseudo-random sequence, text as a chat
    /// message or a log line has it (neither random bytes nor one phrase repeated), so that
    /// compression gains what it would on such data.
    fn item(size: usize) -> String {
        const WORDS: [&str; 32] = [
            "the",
            "sensor",
            "reading",
            "of",
            "pressure",
            "at",
            "north",
            "gate",
            "was",
            "stable",
            "and",
            "within",
            "range",
            "after",
            "calibration",
            "on",
            "valve",
            "seven",
            "while",
            "flow",
            "rose",
            "slowly",
            "to",
            "a",
            "new",
            "peak",
            "before",
            "noon",
            "operator",
            "noted",
            "no",
            "alarm",
        ];
        let base = Self::ITEM.len() - "sensor".len();
        let mut name = String::new();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        while base + name.len() < size {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            name.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
            name.push(' ');
        }
        if name.is_empty() {
            return Self::ITEM.to_owned();
        }
        name.truncate(size - base);
        Self::ITEM.replace("sensor", &name)
    }

    /// Appends the `bidir.bin.v1` call with `id` to `out`.
    fn write_bin(&self, id: u64, out: &mut Vec<u8>) {
        let args = RawPack::new(&self.args).expect("one MessagePack value");
        msgpack::encode(&Msg::Call { id, method: self.method.as_str().into(), args }, out);
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
    /// Writes `stamp` into the message's first bytes (binary: 8 bytes little-endian; text: 16
    /// hex digits) and sends it.
    pub(crate) fn send(&mut self, cx: &mut Context<'_>, stamp: u64) -> Result<(), SendError> {
        if self.text.is_empty() {
            self.bytes[..8].copy_from_slice(&stamp.to_le_bytes());
            return cx.send_binary(&self.bytes);
        }
        let mut hex = [0u8; 16];
        for (i, digit) in hex.iter_mut().enumerate() {
            *digit = b"0123456789abcdef"[(stamp >> (60 - 4 * i)) as usize & 15];
        }
        self.text.replace_range(..16, std::str::from_utf8(&hex).expect("ASCII digits"));
        cx.send_text(&self.text)
    }

    /// The stamp a message of this kind carries (as [`Payload::send`] wrote it), if any.
    pub(crate) fn stamp(msg: &Message<'_>, binary: bool) -> Option<u64> {
        match msg {
            Message::Binary(b) if binary && b.len() >= 8 => {
                Some(u64::from_le_bytes(b[..8].try_into().ok()?))
            }
            Message::Text(t) if !binary && t.len() >= 16 => {
                u64::from_str_radix(t.get(..16)?, 16).ok()
            }
            _ => None,
        }
    }

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
        let payload = Payload::new(shared.size, shared.binary, index);
        let started = shared.now();
        let text = String::new();
        let envelope = shared.envelope.map(|(above, limit)| Envelope::new(above, limit));
        Self {
            shared,
            tally: None,
            payload,
            text,
            started,
            next: 0,
            timer: None,
            index,
            last_id: 0,
            envelope,
            exchange: None,
            answers: Vec::new(),
        }
    }

    fn send(&mut self, cx: &mut Context<'_>, stamp: u64) -> bool {
        let Some(calls) = &self.shared.calls else {
            return self.payload.send(cx, stamp).is_ok();
        };
        // Calls in flight need distinct ids: a later one than the last, off by nanoseconds.
        self.last_id = stamp.max(self.last_id + 1);
        let id = self.last_id;
        match &mut self.envelope {
            Some(envelope) => match envelope.send(cx, |out| calls.write_bin(id, out)) {
                Ok(()) => true,
                Err(e) => {
                    self.shared.note_error(format!("send failed: {e}"));
                    false
                }
            },
            None => {
                calls.write(id, &mut self.text);
                cx.send_text(&self.text).is_ok()
            }
        }
    }

    /// Open loop: sends every message whose intended time has come, then sleeps until the
    /// next one. The lag behind the intended time is the generator's own error, reported apart.
    fn pace(&mut self, cx: &mut Context<'_>) {
        let Some(interval) = self.shared.interval else { return };
        let Some(tally) = self.tally.clone() else { return };
        let mut t = lock(&tally);
        let now = self.shared.now();
        let window = self.window();
        while self.next <= now && !self.shared.phases.is_stopped() {
            if self.send(cx, self.next) {
                t.sent += 1;
                if window.contains(&self.next) {
                    t.lag.saturating_record((now - self.next).max(1));
                }
            }
            self.next += interval;
        }
        if !self.shared.phases.is_stopped() {
            if let Some(timer) = self.timer.take() {
                cx.cancel_timer(timer);
            }
            self.timer = Some(cx.set_timer(Duration::from_nanos(self.next.saturating_sub(now))));
        }
    }

    fn window(&self) -> std::ops::Range<u64> {
        self.shared.phases.window()
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
        match (msg, &self.shared.calls) {
            (Message::Text(t), Some(calls)) => calls.answer_id(t),
            (_, Some(_)) => None,
            (msg, None) => Payload::stamp(msg, self.shared.binary),
        }
    }

    /// A message arrived, the echo or the answer stamped `stamp` (`None`: not one of ours):
    /// timed, and followed by the next message (closed loop) or the ones due (open loop).
    fn answered(&mut self, cx: &mut Context<'_>, stamp: Option<u64>) {
        let now = self.shared.now();
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
        if self.shared.phases.is_stopped() {
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
}

impl Handler for LoadConn {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let tally = tally(&self.shared.phases.tallies);
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
        if self.shared.phases.is_stopped() {
            return;
        }
        if !self.shared.phases.is_going() {
            cx.set_timer(Duration::from_millis(1));
        } else if self.shared.interval.is_some() && self.next != 0 {
            self.pace(cx);
        } else {
            self.start(cx);
        }
    }

    fn on_response(&mut self, headers: &[(String, String)]) -> Result<(), String> {
        let Some(exchange) = self.exchange.take() else { return Ok(()) };
        let keys = bin::finish(exchange, headers)?;
        if let Some(envelope) = &mut self.envelope {
            envelope.keyed(keys);
        }
        Ok(())
    }

    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        let stamp = self.stamp(&msg);
        self.answered(cx, stamp);
    }

    fn on_binary_mut(&mut self, cx: &mut Context<'_>, payload: &mut [u8]) {
        let Some(envelope) = &mut self.envelope else {
            return self.on_message(cx, Message::Binary(payload));
        };
        let mut answers = std::mem::take(&mut self.answers);
        answers.clear();
        if let Err(e) = envelope.answers(payload, |id| answers.push(id)) {
            self.shared.note_error(format!("an answer could not be read: {}", e.reason()));
            let _ = cx.close(e.close_code(), e.reason());
        }
        for &stamp in &answers {
            self.answered(cx, stamp);
        }
        self.answers = answers;
    }

    fn on_close(&mut self, _cx: &mut Context<'_>, close: CloseInfo<'_>) {
        if !self.shared.phases.is_stopped() {
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
    /// Messages received in the window (fanout: deliveries).
    pub(crate) messages: u64,
    /// Fanout: events published in the window (by their stamps).
    pub(crate) events: u64,
    /// Fanout: deliveries that never came, over the whole run (events sent × subscribers
    /// less deliveries received).
    pub(crate) missed: u64,
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
    /// The share of the server's CPU time spent in the kernel (`stime` of /proc/PID/stat).
    pub(crate) server_kernel_share: Option<f64>,
    pub(crate) own_cpu_ns: u64,
    /// Connect mode: resident memory growth of the server and of this process, per connection.
    pub(crate) server_rss_per_conn: Option<f64>,
    pub(crate) own_rss_per_conn: Option<f64>,
    /// Churn: cycles completed (connect, upgrade, echoes, clean close).
    pub(crate) cycles: u64,
    /// Churn, given the server's PID: its memory and descriptors at start, peak and end.
    pub(crate) server_usage: Option<ServerUsage>,
    /// Churn: each cycle's handshake time, from connect to open (TCP connect and upgrade).
    pub(crate) handshake: Option<Histogram<u64>>,
    /// Echo: bytes this side read from its sockets per payload byte of the messages it
    /// received, over the whole run (handshakes and frame headers included): below 1 when
    /// the server's compression shrinks the echoes.
    pub(crate) wire_in_ratio: Option<f64>,
}

/// The client side of every load connection: the URL, the trusted certificates, the deflate
/// offer, no heartbeats, and limits that fit `--size`.
pub(crate) fn connect_options(o: &Options) -> Result<Connect, String> {
    connect_to(o, &o.url)
}

/// [`connect_options`] for `url` rather than `--url`.
pub(crate) fn connect_to(o: &Options, url: &str) -> Result<Connect, String> {
    let mut connect = Connect::new(url).map_err(|e| e.to_string())?;
    if let Some(tls) = &o.trust {
        connect = connect.tls(tls.clone());
    }
    if let Some((Dialect::Bidir, _)) = o.rpc {
        connect = connect.protocol(o.wire.protocol());
    }
    let mut protocol = bidir::protocol::Config::default();
    protocol.ping_interval = None;
    protocol.max_message_size = message_limit(o);
    protocol.max_frame_size = protocol.max_frame_size.max(o.size * 2);
    Ok(match &o.deflate {
        Some(d) => connect.deflate(d.clone()),
        None => connect,
    }
    .config(protocol))
}

/// The largest message a load connection receives: the default's, or room for `--size`.
fn message_limit(o: &Options) -> usize {
    bidir::protocol::Config::default().max_message_size.max(o.size * 2)
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
    if o.raw {
        return raw::run(o);
    }
    match o.mode {
        Mode::Churn => return churn::run(o),
        Mode::Fanout => return fanout::run(o),
        Mode::Echo | Mode::Connect => {}
    }
    let connect = connect_options(o)?;
    let engine = engine(o, o.conns + 16)?;

    let interval = o.rate.map(|rate| ((o.conns as f64 / rate) * 1e9).max(1.0) as u64);
    let shared = Arc::new(Shared {
        phases: Phases::new(),
        opened: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        first_error: Mutex::new(None),
        binary: o.binary,
        size: o.size,
        calls: o.rpc.as_ref().map(|(dialect, method)| Calls::new(*dialect, o.wire, method, o.size)),
        envelope: (o.wire == Wire::Bin).then(|| (o.compress_above, message_limit(o))),
        inflight: if o.mode == Mode::Connect { 0 } else { o.inflight },
        interval: if o.mode == Mode::Connect { None } else { interval },
        conns: o.conns,
    });

    // Open the connections, at most `connect_window` handshakes at a time.
    let server_rss_before = o.server_pid.and_then(procfs::rss_bytes);
    let own_rss_before = procfs::rss_bytes(std::process::id());
    let counts = || (shared.opened.load(Ordering::Relaxed), shared.failed.load(Ordering::Relaxed));
    let connect_time = connect_all(o, &engine, &connect, counts, |i| {
        let mut conn = LoadConn::new(Arc::clone(&shared), i);
        let Some(key) = &o.key else { return Ok((None, conn)) };
        let (keyed, exchange) = bin::offer(&connect, key)?;
        conn.exchange = Some(exchange);
        Ok((Some(keyed), conn))
    })?;
    let failed = shared.failed.load(Ordering::Relaxed);
    if failed > 0 && o.mode == Mode::Echo {
        let error = lock(&shared.first_error).clone().unwrap_or_default();
        engine.shutdown(Duration::from_secs(1));
        return Err(format!("{failed} connections failed: {error}"));
    }

    let mut server_rss_per_conn = None;
    let mut own_rss_per_conn = None;
    let (measured, messages);
    let mut wire_in_ratio = None;
    match o.mode {
        Mode::Churn | Mode::Fanout => unreachable!("churn and fanout run on their own"),
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
            measured = Measured {
                window: connect_time,
                server_cpu_ns: None,
                server_kernel_share: None,
                own_cpu_ns: 0,
            };
            messages = 0;
        }
        Mode::Echo => {
            measured = shared.phases.measure(o);
            messages = shared.phases.tallied(|t| t.received_in_window);
            // Let the last echoes arrive before closing, so the server sees clean closes.
            std::thread::sleep(Duration::from_millis(200));
            let counters = engine.stats().counters;
            let payload = counters.messages_in * o.size as u64;
            wire_in_ratio = (payload > 0).then(|| counters.bytes_in as f64 / payload as f64);
        }
    }
    shared.phases.stop.store(true, Ordering::Relaxed);
    engine.shutdown(Duration::from_secs(2));

    let (latency, lag, bad) = shared.phases.merged()?;
    Ok(RunResult {
        latency,
        lag,
        messages,
        events: 0,
        missed: 0,
        window: measured.window,
        opened: shared.opened.load(Ordering::Relaxed),
        failed: shared.failed.load(Ordering::Relaxed),
        errors: shared.dropped.load(Ordering::Relaxed) + bad,
        first_error: lock(&shared.first_error).clone(),
        connect_time,
        server_cpu_ns: measured.server_cpu_ns,
        server_kernel_share: measured.server_kernel_share,
        own_cpu_ns: measured.own_cpu_ns,
        server_rss_per_conn,
        own_rss_per_conn,
        cycles: 0,
        server_usage: None,
        handshake: None,
        wire_in_ratio,
    })
}

/// Opens `--conns` connections, `make(i)` the handler of the i-th (and options of its own
/// to open it with, else `connect`), at most `--connect-window` handshakes in flight, and
/// waits until each has opened or failed as `counts` (opened, failed) tells. Returns how long
/// that took.
///
/// # Errors
///
/// What `make` returns, a connection the engine refuses to start, or connections that take
/// too long to settle.
pub(crate) fn connect_all<H: Handler + Send>(
    o: &Options,
    engine: &ServerHandle,
    connect: &Connect,
    counts: impl Fn() -> (u64, u64),
    mut make: impl FnMut(usize) -> Result<(Option<Connect>, H), String>,
) -> Result<Duration, String> {
    let start = Instant::now();
    let settled = || {
        let (opened, failed) = counts();
        opened + failed
    };
    let mut last_print = Instant::now();
    for i in 0..o.conns {
        while i as u64 - settled() >= o.connect_window as u64 {
            std::thread::sleep(Duration::from_micros(200));
            if start.elapsed()
                > Duration::from_secs(60) + Duration::from_millis(10 * o.conns as u64)
            {
                return Err("connections do not open (timed out)".into());
            }
        }
        let (own, handler) = make(i)?;
        engine.connect(own.as_ref().unwrap_or(connect), handler).map_err(|e| e.to_string())?;
        if !o.quiet && last_print.elapsed() >= Duration::from_secs(1) {
            let (opened, failed) = counts();
            eprint!("\rconnecting: {opened} open, {failed} failed   ");
            last_print = Instant::now();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while settled() < o.conns as u64 {
        if Instant::now() > deadline {
            return Err("connections do not open (timed out)".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = start.elapsed();
    if !o.quiet {
        let (opened, failed) = counts();
        eprintln!("\rconnected: {opened} open, {failed} failed in {:.2} s", took.as_secs_f64());
    }
    Ok(took)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_carry_their_id_both_ways() {
        let calls = Calls::new(Dialect::Bidir, Wire::Json, "Bench.echo", 16);
        let mut text = String::new();
        calls.write(1234, &mut text);
        let item = Calls::ITEM;
        assert_eq!(text, format!(r#"["call",1234,"Bench.echo",[{item}]]"#));
        assert_eq!(calls.answer_id(&format!(r#"["ok",1234,{item}]"#)), Some(1234));
        assert_eq!(calls.answer_id(r#"["err",1234,"bad_args","x"]"#), None);

        let calls = Calls::new(Dialect::JsonRpc, Wire::Json, "echo", 16);
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

    #[test]
    fn items_grow_to_the_size_asked_in_either_wire() {
        assert_eq!(Calls::item(16), Calls::ITEM, "below its size the item is as it is");
        for size in [63, 100, 1024, 4096] {
            let item = Calls::item(size);
            assert_eq!(item.len(), size);
            let value: serde_json::Value = serde_json::from_str(&item).unwrap();
            assert_eq!((value["id"].as_u64(), value["ok"].as_bool()), (Some(42), Some(true)));
        }
        let calls = Calls::new(Dialect::Bidir, Wire::Bin, "Bench.echo", 1024);
        let mut out = Vec::new();
        calls.write_bin(1234, &mut out);
        let mut read = Vec::new();
        msgpack::decode(&out, |msg| match msg.unwrap() {
            Msg::Call { id, method, args } => {
                let (item,): (serde_json::Value,) = args.decode().unwrap();
                read.push((id, method.into_owned(), item));
            }
            other => panic!("{other:?}"),
        })
        .unwrap();
        let item: serde_json::Value = serde_json::from_str(&Calls::item(1024)).unwrap();
        assert_eq!(read, [(1234, "Bench.echo".to_owned(), item)]);
        // MessagePack is shorter than the JSON call.
        let mut text = String::new();
        calls.write(1234, &mut text);
        assert!(out.len() < text.len(), "{} bytes against {}", out.len(), text.len());
    }
}
