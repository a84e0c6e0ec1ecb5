//! Publishing across nodes through one Redis, against one node's in-process publish: latency
//! from `ServerHandle::publish` to the subscriber's socket (p50, p99) at a steady rate, and
//! events per second when published as fast as they go.
//!
//! ```text
//! cargo bench --features redis --bench nodes -- [--rounds 5] [--events 20000] [--rate 5000] [--size 64] [--nodes 1]
//! ```
//!
//! It starts a `redis-server` of its own (scripts/redis/install.sh) on a free port, and servers
//! in this process, one worker each: `single` (no Redis), node `a`, and `--nodes` subscribing
//! nodes `b1…bN` on the Redis. Blocking clients subscribe: N on `single`, one on each `b`.
//! Modes alternate each round: `in-process` publishes on `single`; `cross-node` publishes on
//! `a` and the event reaches every `b` through Redis. Each event carries its publish instant;
//! each client's reader thread records the difference when it reads it. Reported: medians over
//! the rounds of the deliveries' p50 and p99 and of deliveries per second, and cross-node /
//! in-process as ratios. Method and figures: docs/nodes.md.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use bidir::client::{Connect, Incoming, WebSocket};
use bidir::hdrhistogram::Histogram;
use bidir::nodes::Redis;
use bidir::{Context, Handler, Message, Request, Server, ServerConfig, ServerHandle};

#[allow(dead_code)] // This bench reads no worker CPU time.
mod common;

/// A connection subscribed to `t`.
struct Subscriber;
impl Handler for Subscriber {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.subscribe("t");
    }
}

fn server(redis: Option<&str>) -> ServerHandle {
    // Room for a whole burst in the subscriber's queue (the default 1 MiB would drop part
    // of it while the client catches up, in-process most).
    let mut config = ServerConfig::default();
    config.workers = Some(1);
    config.max_backpressure = 64 << 20;
    let builder = Server::builder()
        .bind("127.0.0.1:0")
        .config(config)
        .default_route(|_req: &Request<'_>| Ok(Subscriber));
    let builder = match redis {
        Some(url) => builder.redis(Redis::new(url).expect("redis URL").prefix("bench:")),
        None => builder,
    };
    builder.start().expect("server")
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
    let port = TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port();
    let _redis = Killed(
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
    let url = format!("redis://127.0.0.1:{port}");
    let single = server(None);
    let a = server(Some(&url));
    let bs: Vec<ServerHandle> = (0..nodes).map(|_| server(Some(&url))).collect();
    let local: Vec<Reader> = (0..nodes).map(|_| subscriber(&single)).collect();
    let remote: Vec<Reader> = bs.iter().map(subscriber).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while bs.iter().any(|b| b.nodes().expect("joined").channels != 1) {
        assert!(Instant::now() < deadline, "a node did not subscribe");
        thread::sleep(Duration::from_millis(5));
    }
    println!(
        "nodes: {rounds} rounds of {events} events of {size} bytes to {nodes} subscriber(s), \
         latency at {rate}/s, one Redis ({})",
        redis_version()
    );
    let mut results: [Vec<Round>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (mode, (publisher, readers)) in
            [(&single, &local), (&a, &remote)].into_iter().enumerate()
        {
            results[mode].push(round(publisher, readers, events, rate, size));
        }
    }
    println!("{:<12} {:>10} {:>10} {:>14}", "mode", "p50 µs", "p99 µs", "deliveries/s");
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
    for (name, m) in ["in-process", "cross-node"].iter().zip(&medians) {
        println!("{name:<12} {:>10.1} {:>10.1} {:>14.0}", m[0], m[1], m[2]);
    }
    println!(
        "{:<12} {:>9.2}x {:>9.2}x {:>13.2}x",
        "cross/in",
        medians[1][0] / medians[0][0],
        medians[1][1] / medians[0][1],
        medians[1][2] / medians[0][2]
    );
    let sent = a.nodes().unwrap();
    let (received, gaps) = bs
        .iter()
        .map(|b| b.nodes().unwrap())
        .fold((0, 0), |(r, g), s| (r + s.received, g + s.gaps));
    println!(
        "a: published {}, lost {}; b nodes: received {received}, gaps {gaps}",
        sent.published, sent.lost_publishes
    );
    let dropped: u64 = bs.iter().chain([&single]).map(|s| s.stats().counters.dropped_sends).sum();
    assert_eq!(dropped, 0, "a subscriber's queue overflowed");
    for s in bs.iter().chain([&single, &a]) {
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

/// A client subscribed on `server`, read by a thread that sends each event's latency (ns; 0
/// for the end marker).
struct Reader {
    latencies: mpsc::Receiver<u64>,
}

fn subscriber(server: &ServerHandle) -> Reader {
    let url = format!("ws://{}/t", server.local_addr());
    let mut ws: WebSocket = Connect::new(&url).expect("url").connect().expect("subscriber");
    let (tx, latencies) = mpsc::channel();
    thread::spawn(move || {
        // Heartbeat pings and the like are answered by the client and skipped here.
        while let Ok(incoming) = ws.recv() {
            let Incoming::Binary(payload) = incoming else { continue };
            let sent = u64::from_le_bytes(payload[..8].try_into().unwrap());
            // 0 ends a phase; 1 marks an unstamped event (the rate phase).
            let latency = if sent <= 1 { sent } else { now_ns().saturating_sub(sent).max(2) };
            if tx.send(latency).is_err() {
                return;
            }
        }
    });
    Reader { latencies }
}

/// Publishes `events` at `rate` per second, then `events` as fast as they go, each stamped
/// with its publish instant; returns the paced ones' latency (every reader's deliveries) and
/// the unpaced ones' deliveries per second.
fn round(
    publisher: &ServerHandle,
    readers: &[Reader],
    events: usize,
    rate: usize,
    size: usize,
) -> Round {
    let mut payload = vec![0u8; size.max(8)];
    let mut publish = |stamp: u64| {
        payload[..8].copy_from_slice(&stamp.to_le_bytes());
        publisher.publish("t", Message::Binary(&payload));
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
    for reader in readers {
        wait(reader, events, |l| {
            let _ = histogram.record(l);
        });
    }
    let start = Instant::now();
    for _ in 0..events {
        publish(1);
    }
    publish(0);
    for reader in readers {
        wait(reader, events, |_| {});
    }
    let events_per_s = (events * readers.len()) as f64 / start.elapsed().as_secs_f64();
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
