//! One thread sending to many connections: the cost per message of `ConnHandle::send` (a
//! mailbox lock, a payload copy and, whenever the worker has emptied its mailbox, an eventfd
//! write) against a `Batch` (one lock and one wake-up per worker per round), with and without
//! a shared payload.
//!
//! ```text
//! cargo bench --bench fanout -- [--conns 10000] [--rounds 30] [--workers 1] [--size 16]
//! ```
//!
//! The server runs in this process; the peers run in a child process (this binary again, with
//! `--peers ADDR N`) on bidir's engine client, so each process stays within a 20 000
//! descriptor limit. A round sends one message to every connection; it ends when the server's
//! workers have queued them all (`Stats::messages_out`). Reported per mode, as medians over the
//! rounds: the sending thread's time per message; its CPU time per message (waiting for the
//! round included: it polls the server's stats); messages per second until the workers have
//! them all; the workers' CPU time per message (from /proc/self/task/*/schedstat, the flush
//! to every socket included); the workers' loop turns per round (fewer: bigger mailbox
//! batches). The peers' count is checked at the end: every message arrived. Method and figures:
//! docs/benchmarks.md.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bidir::client::Connect;
use bidir::{Batch, Bytes, ConnHandle, Context, DataKind, Handler, Message, Request, Server};
use bidir::{ServerConfig, ServerHandle};

mod common;

struct Options {
    conns: usize,
    rounds: usize,
    workers: usize,
    size: usize,
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
        rounds: value("--rounds", 30),
        workers: value("--workers", 1),
        size: value("--size", 16),
    };
    run(&options);
}

/// Hands each connection's handle to the bench.
struct Handed(mpsc::Sender<ConnHandle>);
impl Handler for Handed {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let _ = self.0.send(cx.handle());
    }
}

fn run(options: &Options) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let mut config = ServerConfig::default();
    config.workers = Some(options.workers);
    config.max_connections = options.conns + 1000;
    config.backlog = 4096;
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(config)
        .route("/f", move |_req: &Request<'_>| {
            Ok(Handed(tx.lock().unwrap_or_else(|e| e.into_inner()).clone()))
        })
        .start()
        .expect("server");
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .args(["--peers", &server.local_addr().to_string(), &options.conns.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("peer process");
    let handles: Vec<ConnHandle> = (0..options.conns)
        .map(|_| rx.recv_timeout(Duration::from_secs(60)).expect("every peer connects"))
        .collect();
    println!(
        "fanout: {} connections, {} worker(s) on {}, {} rounds of one {}-byte message each",
        handles.len(),
        server.workers(),
        server.backend().name(),
        options.rounds,
        options.size
    );
    println!(
        "{:<14} {:>14} {:>18} {:>16} {:>18} {:>12}",
        "mode",
        "sender ns/msg",
        "sender CPU ns/msg",
        "msgs/s to queue",
        "worker CPU ns/msg",
        "turns/round"
    );
    let text = "x".repeat(options.size);
    let shared = Bytes::from(text.clone().into_bytes());
    let mut sent = 0;
    let mut batch = Batch::new();
    for mode in ["handle.send", "batch.send", "batch.shared"] {
        let mut sender_ns = Vec::new();
        let mut rates = Vec::new();
        let cpu_before = common::worker_cpu_ns();
        let sender_cpu_before = thread_cpu_ns();
        let turns_before = server.stats().counters.turns;
        for _ in 0..options.rounds {
            let base = server.stats().counters.messages_out;
            let start = Instant::now();
            match mode {
                "handle.send" => {
                    for h in &handles {
                        h.send(Message::Text(&text)).expect("open");
                    }
                }
                "batch.send" => {
                    for h in &handles {
                        batch.send(h, Message::Text(&text)).expect("open");
                    }
                    batch.commit();
                }
                _ => {
                    for h in &handles {
                        batch.send_shared(h, DataKind::Text, shared.clone()).expect("open");
                    }
                    batch.commit();
                }
            }
            let sending = start.elapsed();
            wait_queued(&server, base + handles.len() as u64);
            let round = start.elapsed();
            sender_ns.push(sending.as_nanos() as f64 / handles.len() as f64);
            rates.push(handles.len() as f64 / round.as_secs_f64());
            sent += handles.len() as u64;
        }
        let cpu = common::worker_cpu_ns().saturating_sub(cpu_before) as f64;
        let sender_cpu = thread_cpu_ns().saturating_sub(sender_cpu_before) as f64;
        // The stats requests of `wait_queued` take turns too: counted, they are few.
        let turns = server.stats().counters.turns - turns_before;
        let messages = (options.rounds * handles.len()) as f64;
        println!(
            "{mode:<14} {:>14.0} {:>18.0} {:>16.0} {:>18.0} {:>12.0}",
            common::median(&mut sender_ns),
            sender_cpu / messages,
            common::median(&mut rates),
            cpu / messages,
            turns as f64 / options.rounds as f64
        );
    }
    let received = peers_received(&mut child);
    println!("peers received {received} of {sent} messages");
    server.shutdown(Duration::from_secs(5));
    let _ = child.wait();
    assert_eq!(received, sent, "messages were lost");
}

/// Waits until the workers have queued `total` messages in all.
fn wait_queued(server: &ServerHandle, total: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.stats().counters.messages_out < total {
        assert!(Instant::now() < deadline, "the workers did not queue a round in 60 s");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// CPU nanoseconds of the calling thread (its sends, its waits' polling included).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|stat| stat.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Asks the peer process how many messages it received (it answers, then exits).
fn peers_received(child: &mut Child) -> u64 {
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    // Let the last round's frames reach the peers before asking.
    std::thread::sleep(Duration::from_millis(500));
    writeln!(stdin, "count").expect("peer process alive");
    let mut line = String::new();
    stdout.read_line(&mut line).expect("peer answers");
    line.trim().parse().expect("a count")
}

/// Counts what its connection receives.
struct Peer {
    opened: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
}
impl Handler for Peer {
    fn on_open(&mut self, _cx: &mut Context<'_>) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }
    fn on_message(&mut self, _cx: &mut Context<'_>, _msg: Message<'_>) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }
}

/// The child process: `n` engine-client connections to `addr`, opened 500 at a time; answers
/// "count" on stdin with the messages received.
fn peers(addr: &str, n: u64) {
    let engine = Server::builder().workers(1).start().expect("client engine");
    let options = Connect::new(&format!("ws://{addr}/f")).expect("url");
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
            assert!(Instant::now() < deadline, "peers did not open in 30 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    println!("{}", received.load(Ordering::Relaxed));
    std::process::exit(0);
}
