//! 10 000 idle WebSocket connections held by one server. The connections are opened by a
//! child process (this test binary, re-run in "holder" mode), because one process may hold at
//! most 20 000 descriptors here and each side needs 10 000.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use bidir::{Context, Handler, Message, Request, Server, ServerConfig};

const COUNT: usize = 10_000;
const UPGRADE: &[u8] =
    b"GET /idle HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

struct Echo;
impl Handler for Echo {
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        cx.send(msg).unwrap();
    }
}

/// Holder mode: open `BIDIR_HOLD_COUNT` connections to `BIDIR_HOLD_ADDR`, print "ready", and
/// keep them until stdin closes. A no-op when run as an ordinary test.
#[test]
fn holder() {
    let (Ok(addr), Ok(count)) =
        (std::env::var("BIDIR_HOLD_ADDR"), std::env::var("BIDIR_HOLD_COUNT"))
    else {
        return;
    };
    bidir_sys::socket::raise_fd_limit().unwrap();
    let count: usize = count.parse().unwrap();
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(UPGRADE).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut byte).unwrap();
            assert!(n > 0, "closed during the handshake");
            head.extend_from_slice(&byte[..n]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"));
        held.push(s);
    }
    // Straight to the process's stdout: the test harness captures `println!`.
    let mut stdout = std::io::stdout();
    stdout.write_all(b"ready\n").unwrap();
    stdout.flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(held);
}

#[test]
fn ten_thousand_idle_connections() {
    let mut config = ServerConfig::default();
    config.workers = Some(1);
    config.pin_workers = false;
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(config)
        .route("/idle", |_req: &Request<'_>| Ok(Echo))
        .start()
        .unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "holder", "--nocapture", "--test-threads=1"])
        .env("BIDIR_HOLD_ADDR", server.local_addr().to_string())
        .env("BIDIR_HOLD_COUNT", COUNT.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // libtest's own "test holder ... " shares the line: look for the marker anywhere in it.
    let ready = lines.find(|l| l.as_deref().map(|l| l.contains("ready")).unwrap_or(true));
    assert!(matches!(ready, Some(Ok(_))), "the holder did not get its connections");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.connections() < COUNT as u64 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.connections(), COUNT as u64);
    // The server still serves a new connection promptly.
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(UPGRADE).unwrap();
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 101");
    drop(child.stdin.take()); // releases the holder
    let _ = child.wait();
    server.shutdown(Duration::from_secs(2));
}
