//! Measures the server's user-space memory per idle WebSocket connection.
//!
//! `cargo run --release --example idle_memory -- [COUNT]` (default 10 000)
//!
//! Starts an echo server (one worker) in this process, lets a child process (this program
//! again, in holder mode) open COUNT connections and complete their upgrades, then reads the
//! growth of this process's resident set (VmRSS) and divides by COUNT. Kernel socket buffers
//! are not in the RSS; this is what the engine itself costs per connection. The connections
//! are idle: upgraded, no message in flight, heartbeat timer scheduled.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bidir::{Context, Handler, Message, Request, Server, ServerConfig};

const UPGRADE: &[u8] =
    b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

struct Echo;
impl Handler for Echo {
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        let _ = cx.send(msg);
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--hold") {
        return hold(&args[2], args[3].parse().expect("count"));
    }
    let count: usize = args.get(1).map_or(10_000, |n| n.parse().expect("count"));
    let mut config = ServerConfig::default();
    config.workers = Some(1);
    config.pin_workers = false;
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(config)
        .route("/echo", |_: &Request<'_>| Ok(Echo))
        .start()?;
    let addr = server.local_addr().to_string();

    // Warm up: the first connections allocate the worker's pools and tables.
    hold_in_process(&addr, 64);
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_bytes();

    let mut child = Command::new(std::env::current_exe()?)
        .args(["--hold", &addr, &count.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    assert!(lines.any(|l| l.map(|l| l == "ready").unwrap_or(false)), "holder failed");
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.connections() < count as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_bytes();
    let open = server.connections();
    drop(child.stdin.take());
    let _ = child.wait();
    server.shutdown(Duration::from_secs(2));

    let per = (after.saturating_sub(before)) as f64 / open as f64;
    println!("idle connections: {open}");
    println!(
        "server RSS: {:.1} MiB before, {:.1} MiB after",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    println!("user-space bytes per idle connection: {per:.0}");
    Ok(())
}

/// Opens and closes `n` connections from this process (warm-up).
fn hold_in_process(addr: &str, n: usize) {
    let held: Vec<TcpStream> = (0..n).map(|_| upgrade(addr)).collect();
    drop(held);
}

fn upgrade(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(UPGRADE).expect("write");
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed during the handshake");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    s
}

fn hold(addr: &str, count: usize) -> std::io::Result<()> {
    bidir_sys::socket::raise_fd_limit()?;
    let held: Vec<TcpStream> = (0..count).map(|_| upgrade(addr)).collect();
    println!("ready");
    std::io::stdout().flush()?;
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(held);
    Ok(())
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}
