//! Callbacks invoked from one thread (issue 13's "jumbo frames"): the cost per invocation of
//! `Callback::invoke` to one connection and to 10 000 connections, and what reaches the
//! wire — frames and system calls per callback, since invocations queued before the worker
//! gets to them go out as one batched message in one write.
//!
//! ```text
//! cargo bench --bench callbacks -- [--conns 10000] [--burst 100000] [--rounds 10] [--workers 1]
//! ```
//!
//! The server runs in this process; the clients run in a child process (this binary again,
//! with `--peers ADDR N`) on bidir's engine client, each passing one callback to
//! `Bench.join`. A round invokes, from this thread, `--burst` times the first connection's
//! callback ("1 conn"), or each connection's callback once ("N conns"); it ends when the
//! clients have received every invocation (the child answers "count" on a pipe). Reported
//! per mode, as medians over the rounds: the invoking thread's time per callback, callbacks
//! per second until all arrived, and, over all rounds, the workers' CPU time per callback
//! (/proc/self/task/*/schedstat), WebSocket messages and system calls per callback
//! (`Stats`). Method and figures: docs/benchmarks.md.

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bidir::client::Connect;
use bidir::protocol::rpc::{Msg, json};
use bidir::rpc::{Callback, Services};
use bidir::{Context, Handler, Message, Server, ServerConfig};

mod common;

struct Options {
    conns: usize,
    burst: usize,
    rounds: usize,
    workers: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--peers") {
        peers(&args[i + 1], args[i + 2].parse().expect("--peers ADDR N"));
        return;
    }
    let value = |name: &str, default: usize| common::option(&args, name, default);
    let options = Options {
        conns: value("--conns", 10_000),
        burst: value("--burst", 100_000),
        rounds: value("--rounds", 10),
        workers: value("--workers", 1),
    };
    run(&options);
}

/// The child process's count of invocations received, asked over its pipes.
struct Counter {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Counter {
    fn received(&mut self) -> u64 {
        writeln!(self.stdin, "count").expect("peer process alive");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("peer answers");
        line.trim().parse().expect("a count")
    }

    /// Waits until `total` invocations have arrived.
    fn wait(&mut self, total: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.received() < total {
            assert!(Instant::now() < deadline, "invocations did not arrive in 60 s");
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

fn run(options: &Options) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let services = Services::new().method("Bench.join", move |_cx, (cb,): (Callback,)| {
        tx.lock().unwrap_or_else(|e| e.into_inner()).send(cb).map_err(|e| e.to_string())
    });
    let mut config = ServerConfig::default();
    config.workers = Some(options.workers);
    config.max_connections = options.conns + 1000;
    config.backlog = 4096;
    // A burst to one connection is queued whole before the client reads it.
    config.max_backpressure = config.max_backpressure.max(options.burst * 64);
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(config)
        .route("/rpc", services.hook())
        .start()
        .expect("server");
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .args(["--peers", &server.local_addr().to_string(), &options.conns.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("peer process");
    let mut counter = Counter {
        stdin: child.stdin.take().expect("piped"),
        stdout: BufReader::new(child.stdout.take().expect("piped")),
    };
    let callbacks: Vec<Callback> = (0..options.conns)
        .map(|_| rx.recv_timeout(Duration::from_secs(60)).expect("every client joins"))
        .collect();
    println!(
        "callbacks: {} connections, {} worker(s) on {}, {} rounds",
        callbacks.len(),
        server.workers(),
        server.backend().name(),
        options.rounds,
    );
    println!(
        "{:<10} {:>12} {:>16} {:>14} {:>18} {:>16} {:>16}",
        "mode",
        "callbacks",
        "sender ns/cb",
        "callbacks/s",
        "worker CPU ns/cb",
        "messages/cb",
        "syscalls/cb"
    );
    let mut total = 0;
    for mode in ["1 conn", "N conns"] {
        let per_round = if mode == "1 conn" { options.burst } else { callbacks.len() };
        let mut sender_ns = Vec::new();
        let mut rates = Vec::new();
        let cpu_before = common::worker_cpu_ns();
        let before = server.stats().counters;
        for round in 0..options.rounds {
            let start = Instant::now();
            if mode == "1 conn" {
                for i in 0..per_round {
                    callbacks[0].invoke("tick", (round, i)).expect("held");
                }
            } else {
                for (i, cb) in callbacks.iter().enumerate() {
                    cb.invoke("tick", (round, i)).expect("held");
                }
            }
            let sending = start.elapsed();
            total += per_round as u64;
            counter.wait(total);
            sender_ns.push(sending.as_nanos() as f64 / per_round as f64);
            rates.push(per_round as f64 / start.elapsed().as_secs_f64());
        }
        let cpu = common::worker_cpu_ns().saturating_sub(cpu_before) as f64;
        let after = server.stats().counters;
        let n = (options.rounds * per_round) as f64;
        println!(
            "{mode:<10} {per_round:>12} {:>16.0} {:>14.0} {:>18.0} {:>16.4} {:>16.4}",
            common::median(&mut sender_ns),
            common::median(&mut rates),
            cpu / n,
            (after.messages_out - before.messages_out) as f64 / n,
            (after.syscalls.total() - before.syscalls.total()) as f64 / n,
        );
    }
    assert_eq!(counter.received(), total, "invocations were lost");
    drop(counter);
    server.shutdown(Duration::from_secs(5));
    let _ = child.wait();
}

/// A client: joins with callback 1, counts the invocations it receives.
struct Peer {
    opened: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
}

impl Handler for Peer {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let _ = cx.send_text(r#"["call",1,"Bench.join",[{"$cb":1}]]"#);
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    fn on_message(&mut self, _cx: &mut Context<'_>, msg: Message<'_>) {
        let Message::Text(text) = msg else { return };
        let mut invocations = 0;
        let _ = json::decode(text, |msg| {
            if let Ok(Msg::Invoke { .. }) = msg {
                invocations += 1;
            }
        });
        self.received.fetch_add(invocations, Ordering::Relaxed);
    }
}

/// The child process: `n` clients of `addr`, opened 500 at a time; answers each "count" line
/// on stdin with the invocations received so far.
fn peers(addr: &str, n: u64) {
    let engine = Server::builder().workers(1).start().expect("client engine");
    let options = Connect::new(&format!("ws://{addr}/rpc"))
        .expect("url")
        .protocol(bidir::protocol::rpc::JSON_PROTOCOL);
    let opened = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let mut asked = 0;
    while asked < n {
        let step = 500.min(n - asked);
        for _ in 0..step {
            let peer = Peer { opened: Arc::clone(&opened), received: Arc::clone(&received) };
            engine.connect(&options, peer).expect("connect");
        }
        asked += step;
        let deadline = Instant::now() + Duration::from_secs(30);
        while opened.load(Ordering::Relaxed) < asked {
            assert!(Instant::now() < deadline, "clients did not open in 30 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let stdin = std::io::stdin();
    let mut line = String::new();
    while stdin.read_line(&mut line).is_ok_and(|n| n > 0) {
        println!("{}", received.load(Ordering::Relaxed));
        line.clear();
    }
    let _ = engine;
    std::process::exit(0);
}
