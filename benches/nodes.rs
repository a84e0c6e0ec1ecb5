//! Publishing across nodes through one Redis, against one node's in-process publish: latency
//! from the publish to the subscriber's socket (p50, p99) at a steady rate, and events per
//! second when published as fast as they go. With `--history`, what a topic history kept in
//! Redis costs across nodes instead.
//!
//! ```text
//! cargo bench --features redis --bench nodes -- [--rounds 5] [--events 20000] [--rate 5000] [--size 64] [--nodes 1] [--history]
//! ```
//!
//! It starts a `redis-server` of its own (scripts/redis/install.sh) on a free port, and servers
//! in this process, one worker each. Modes alternate each round; each has a publishing server
//! and blocking clients subscribed to `t`, one on each of `--nodes` subscribing nodes
//! `b1…bN` joined to the publishing node `a` through Redis:
//!
//! - by default, engine messages (`ServerHandle::publish`): `in-process` publishes on
//!   `single` (no Redis) to N clients of its own; `cross-node` publishes on `a` and the event
//!   reaches every `b` through Redis;
//! - with `--history`, rpc events (`bidir::rpc::publish`, clients on `bidir.json.v1`), both
//!   modes across nodes, each on nodes of its own (Redis prefixes apart): `rpc cross-node`
//!   with no history, and `rpc kept cross-node` with every topic kept (the last 1000 events,
//!   for 60 s), so that each publish runs the script that numbers the event, adds it to the
//!   topic's stream and publishes it with its position, and every node delivers it from
//!   Redis. The kept events' offsets are checked to follow one another at each client.
//!
//! Each event carries its publish instant (8 bytes of a binary message, or a JSON string of
//! digits for rpc), padded to `--size`; each client's reader thread records the difference
//! when it reads it. Reported: medians over the rounds of the deliveries' p50 and p99 and of
//! deliveries per second, the second mode / the first as ratios, and the bridges' counters.
//! Method and figures: docs/nodes.md.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use bidir::client::{Connect, Incoming, WebSocket};
use bidir::hdrhistogram::Histogram;
use bidir::nodes::Redis;
use bidir::rpc::{History, Services};
use bidir::{Context, Handler, Message, Request, Server, ServerConfig, ServerHandle};

#[allow(dead_code)] // This bench reads no worker CPU time.
mod common;

/// How a mode's events travel.
#[derive(Clone, Copy)]
enum Kind {
    /// Engine messages, to connections subscribed by their handler.
    Engine,
    /// rpc events, to clients that subscribed; `kept`: every topic has a history.
    Rpc { kept: bool },
}

/// What a topic history keeps in the `kept` mode.
const KEPT_EVENTS: usize = 1000;
const KEPT_FOR: Duration = Duration::from_secs(60);

/// A connection subscribed to `t`.
struct Subscriber;
impl Handler for Subscriber {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.subscribe("t");
    }
}

/// A server with one worker serving `kind`'s subscribers, joined to the nodes on `redis`
/// (URL, prefix) if given.
fn server(kind: Kind, redis: Option<(&str, &str)>) -> ServerHandle {
    // Room for a whole burst in the subscriber's queue (the default 1 MiB would drop part
    // of it while the client catches up, in-process most).
    let mut config = ServerConfig::default();
    config.workers = Some(1);
    config.max_backpressure = 64 << 20;
    let builder = Server::builder().bind("127.0.0.1:0").config(config);
    let builder = match kind {
        Kind::Engine => builder.default_route(|_req: &Request<'_>| Ok(Subscriber)),
        Kind::Rpc { kept: false } => builder.route("/rpc", Services::new().hook()),
        Kind::Rpc { kept: true } => builder
            .history("", History::new(KEPT_EVENTS, KEPT_FOR))
            .route("/rpc", Services::new().hook()),
    };
    let builder = match redis {
        Some((url, prefix)) => builder.redis(Redis::new(url).expect("redis URL").prefix(prefix)),
        None => builder,
    };
    builder.start().expect("server")
}

/// A mode: the server it publishes on, the other nodes its clients are on, and the clients.
struct Mode {
    name: &'static str,
    kind: Kind,
    publisher: ServerHandle,
    nodes: Vec<ServerHandle>,
    readers: Vec<Reader>,
}

impl Mode {
    /// `clients` clients of the publishing server itself, no Redis.
    fn in_process(name: &'static str, kind: Kind, clients: usize) -> Self {
        let publisher = server(kind, None);
        let readers = (0..clients).map(|_| subscriber(&publisher, kind)).collect();
        Self { name, kind, publisher, nodes: Vec::new(), readers }
    }

    /// A publishing node and `nodes` subscribing ones on `redis` (URL, prefix), a client on
    /// each of these; returns once Redis has confirmed their subscriptions.
    fn across(name: &'static str, kind: Kind, nodes: usize, redis: (&str, &str)) -> Self {
        let publisher = server(kind, Some(redis));
        let nodes: Vec<ServerHandle> = (0..nodes).map(|_| server(kind, Some(redis))).collect();
        let readers = nodes.iter().map(|b| subscriber(b, kind)).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while nodes.iter().any(|b| b.nodes().expect("joined").channels != 1) {
            assert!(Instant::now() < deadline, "a node did not subscribe");
            thread::sleep(Duration::from_millis(5));
        }
        Self { name, kind, publisher, nodes, readers }
    }

    fn servers(&self) -> impl Iterator<Item = &ServerHandle> {
        std::iter::once(&self.publisher).chain(&self.nodes)
    }

    /// The bridges' counters, and with `detail` the history gaps and the clients' offsets out
    /// of sequence (none without Redis).
    fn counters(&self, detail: bool) -> Option<String> {
        let sent = self.publisher.nodes()?;
        let (mut received, mut gaps, mut history_gaps) = (0, 0, 0);
        for stats in self.nodes.iter().map(|b| b.nodes().expect("joined")) {
            (received, gaps) = (received + stats.received, gaps + stats.gaps);
            history_gaps += stats.history_gaps;
        }
        let line = format!(
            "a: published {}, lost {}; b nodes: received {received}, gaps {gaps}",
            sent.published, sent.lost_publishes
        );
        if !detail {
            return Some(line);
        }
        let skipped: u64 = self.readers.iter().map(|r| r.skipped.load(Ordering::Relaxed)).sum();
        Some(format!(
            "{}: {line}, history gaps {history_gaps}; clients: offsets out of sequence {skipped}",
            self.name
        ))
    }
}

/// One round's figures.
struct Round {
    p50_us: f64,
    p99_us: f64,
    events_per_s: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str, default: usize| common::option(&args, name, default);
    let (rounds, events, rate, size) = (
        value("--rounds", 5),
        value("--events", 20_000),
        value("--rate", 5_000),
        value("--size", 64),
    );
    let nodes = value("--nodes", 1).max(1);
    let history = args.iter().any(|a| a == "--history");
    let (_redis, url) = redis_server();
    let (modes, ratio, what) = if history {
        let modes = [(false, "rpc cross-node", "plain:"), (true, "rpc kept cross-node", "kept:")]
            .map(|(kept, name, prefix)| {
                Mode::across(name, Kind::Rpc { kept }, nodes, (&url, prefix))
            });
        let what =
            format!(" --history (rpc events; kept: the last {KEPT_EVENTS} for {KEPT_FOR:?})");
        (modes, "kept/not", what)
    } else {
        let modes = [
            Mode::in_process("in-process", Kind::Engine, nodes),
            Mode::across("cross-node", Kind::Engine, nodes, (&url, "bench:")),
        ];
        (modes, "cross/in", String::new())
    };
    println!(
        "nodes{what}: {rounds} rounds of {events} events of {size} bytes to {nodes} \
         subscriber(s), latency at {rate}/s, one Redis ({})",
        redis_version()
    );
    let mut results: [Vec<Round>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (mode, results) in modes.iter().zip(&mut results) {
            results.push(round(mode, events, rate, size));
        }
    }
    let width = modes.iter().map(|m| m.name.len()).max().unwrap_or(0).max(12);
    println!("{:<width$} {:>10} {:>10} {:>14}", "mode", "p50 µs", "p99 µs", "deliveries/s");
    let medians: Vec<[f64; 3]> = results
        .iter()
        .map(|r| {
            [
                common::median(&mut r.iter().map(|r| r.p50_us).collect::<Vec<_>>()),
                common::median(&mut r.iter().map(|r| r.p99_us).collect::<Vec<_>>()),
                common::median(&mut r.iter().map(|r| r.events_per_s).collect::<Vec<_>>()),
            ]
        })
        .collect();
    for (mode, m) in modes.iter().zip(&medians) {
        println!("{:<width$} {:>10.1} {:>10.1} {:>14.0}", mode.name, m[0], m[1], m[2]);
    }
    println!(
        "{ratio:<width$} {:>9.2}x {:>9.2}x {:>13.2}x",
        medians[1][0] / medians[0][0],
        medians[1][1] / medians[0][1],
        medians[1][2] / medians[0][2]
    );
    for line in modes.iter().filter_map(|m| m.counters(history)) {
        println!("{line}");
    }
    let dropped: u64 =
        modes.iter().flat_map(Mode::servers).map(|s| s.stats().counters.dropped_sends).sum();
    assert_eq!(dropped, 0, "a subscriber's queue overflowed");
    for s in modes.iter().flat_map(Mode::servers) {
        s.shutdown(Duration::from_secs(1));
    }
}

/// The bench's redis-server, stopped however the bench ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A redis-server on a free port, and its URL once it listens.
fn redis_server() -> (Killed, String) {
    let port = TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port();
    let redis = Killed(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/redis/install.sh)"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not listen");
        thread::sleep(Duration::from_millis(10));
    }
    (redis, format!("redis://127.0.0.1:{port}"))
}

/// A client subscribed on `server`, read by a thread that sends each event's latency (ns; 0
/// for the end marker), and counts the kept events whose offset does not follow the last.
struct Reader {
    latencies: mpsc::Receiver<u64>,
    skipped: Arc<AtomicU64>,
}

/// An event as a client reads it: its stamp, and its offset in the topic's history if kept.
type Event = (u64, Option<u64>);

fn subscriber(server: &ServerHandle, kind: Kind) -> Reader {
    let addr = server.local_addr();
    let (mut ws, events): (WebSocket, fn(Incoming, &mut Vec<Event>)) = match kind {
        Kind::Engine => {
            let ws = Connect::new(&format!("ws://{addr}/t")).expect("url").connect();
            (ws.expect("subscriber"), engine_events)
        }
        Kind::Rpc { .. } => (rpc_subscriber(&format!("ws://{addr}/rpc")), rpc_events),
    };
    let (tx, latencies) = mpsc::channel();
    let skipped = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&skipped);
    thread::spawn(move || {
        let (mut read, mut last) = (Vec::new(), None);
        // Heartbeat pings and the like are answered by the client and skipped here.
        while let Ok(incoming) = ws.recv() {
            let now = now_ns();
            read.clear();
            events(incoming, &mut read);
            for &(sent, offset) in &read {
                if let Some(offset) = offset {
                    if last.is_some_and(|last| offset != last + 1) {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                    last = Some(offset);
                }
                // 0 ends a phase; 1 marks an unstamped event (the rate phase).
                let latency = if sent <= 1 { sent } else { now.saturating_sub(sent).max(2) };
                if tx.send(latency).is_err() {
                    return;
                }
            }
        }
    });
    Reader { latencies, skipped }
}

/// An engine message's event: the stamp in its first 8 bytes.
fn engine_events(incoming: Incoming, events: &mut Vec<Event>) {
    if let Incoming::Binary(payload) = incoming {
        events.push((u64::from_le_bytes(payload[..8].try_into().unwrap()), None));
    }
}

/// A `bidir.json.v1` client subscribed to `t` (answered `["ok",1,…]`).
fn rpc_subscriber(url: &str) -> WebSocket {
    let options = Connect::new(url).expect("url").protocol("bidir.json.v1");
    let mut ws = options.read_timeout(Some(Duration::from_secs(10))).connect().expect("client");
    ws.send(Message::Text(r#"["sub",1,"t"]"#)).expect("sub");
    loop {
        let Incoming::Text(text) = ws.recv().expect("an answer to sub") else { continue };
        let answer: Json = serde_json::from_str(&text).expect("JSON");
        match answer[0].as_str() {
            Some("ok") if answer[1] == 1 => break,
            Some("err") => panic!("sub refused: {text}"),
            _ => {}
        }
    }
    ws.set_read_timeout(None);
    ws
}

/// A `bidir.json.v1` message's events: `["event","t",DATA]`, kept `["event","t",DATA,OFFSET,
/// EPOCH]`, or a batch of messages (an array of them); DATA is the stamp in digits.
fn rpc_events(incoming: Incoming, events: &mut Vec<Event>) {
    let Incoming::Text(text) = incoming else { return };
    let message: Json = serde_json::from_str(&text).expect("JSON");
    let messages = match message {
        Json::Array(items) if items.first().is_some_and(Json::is_array) => items,
        one => vec![one],
    };
    for m in messages.iter().filter(|m| m[0] == "event") {
        let stamp = m[2].as_str().and_then(|digits| digits.parse().ok());
        events.push((stamp.unwrap_or_else(|| panic!("not a stamp: {m}")), m[3].as_u64()));
    }
}

/// Publishes `events` at `rate` per second, then `events` as fast as they go, each stamped
/// with its publish instant; returns the paced ones' latency (every reader's deliveries) and
/// the unpaced ones' deliveries per second.
fn round(mode: &Mode, events: usize, rate: usize, size: usize) -> Round {
    let mut payload = vec![0u8; size.max(8)];
    let mut publish = |stamp: u64| match mode.kind {
        Kind::Engine => {
            payload[..8].copy_from_slice(&stamp.to_le_bytes());
            mode.publisher.publish("t", Message::Binary(&payload));
        }
        Kind::Rpc { .. } => {
            let data = format!("{stamp:0size$}");
            bidir::rpc::publish(&mode.publisher, "t", &data).expect("published");
        }
    };
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    let gap = Duration::from_secs(1) / rate as u32;
    let start = Instant::now();
    for i in 0..events {
        let at = start + gap * i as u32;
        while Instant::now() < at {
            std::hint::spin_loop();
        }
        publish(now_ns());
    }
    publish(0);
    for reader in &mode.readers {
        wait(reader, events, |l| {
            let _ = histogram.record(l);
        });
    }
    let start = Instant::now();
    for _ in 0..events {
        publish(1);
    }
    publish(0);
    for reader in &mode.readers {
        wait(reader, events, |_| {});
    }
    let events_per_s = (events * mode.readers.len()) as f64 / start.elapsed().as_secs_f64();
    Round {
        p50_us: histogram.value_at_quantile(0.5) as f64 / 1000.0,
        p99_us: histogram.value_at_quantile(0.99) as f64 / 1000.0,
        events_per_s,
    }
}

/// Reads `events` latencies and the end marker.
fn wait(reader: &Reader, events: usize, mut each: impl FnMut(u64)) {
    let mut got = 0;
    loop {
        match reader.latencies.recv_timeout(Duration::from_secs(30)).expect("events arrive") {
            0 => break,
            1 => got += 1,
            latency => {
                got += 1;
                each(latency);
            }
        }
    }
    assert_eq!(got, events, "every event arrived once");
}

/// Nanoseconds since the first call, never 0 or 1 (the markers).
fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 2
}

fn redis_version() -> String {
    let out = Command::new("redis-server").arg("--version").output().map(|o| o.stdout);
    let out = String::from_utf8_lossy(&out.unwrap_or_default()).into_owned();
    out.split_whitespace().find_map(|w| w.strip_prefix("v=")).unwrap_or("?").to_owned()
}
