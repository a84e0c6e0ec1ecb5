//! Measures the server's user-space memory per idle WebSocket connection.
//!
//! ```text
//! cargo run --release --example idle_memory -- [COUNT] [--deflate off|shared|dedicated:BITS]
//!     [--active] [--context live|compact] [--mem-level N]
//! ```
//!
//! Starts an echo server (one worker) in this process, lets a child process (this program
//! again, in holder mode) open COUNT connections (default 10 000) and complete their upgrades,
//! then reads the growth of this process's resident set (VmRSS) and divides by COUNT. Kernel
//! socket buffers are not in the RSS; this is what the engine itself costs per connection. The
//! connections are idle: upgraded, no message in flight, heartbeat timer scheduled.
//!
//! With `--deflate`, the server negotiates permessage-deflate in that profile and the holder
//! offers it as a browser does (`permessage-deflate; client_max_window_bits`). With
//! `--active`, every connection also sends 40 compressed 1 KiB JSON messages (more than the
//! largest window) and reads their compressed echoes before going idle, so that whatever
//! compression state a connection keeps exists, full grown, when memory is measured. `--context` overrides where a dedicated profile keeps its
//! context (`DeflateConfig::compact_context`); `--mem-level` sets the compressor's memory
//! level.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bidir::protocol::deflate::Codec;
use bidir::protocol::frame::{FrameHeader, FrameRepr, OpCode, Rsv, mask};
use bidir::{Context, DeflateConfig, Handler, Message, Request, Server, ServerConfig};

const UPGRADE: &str = "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

struct Echo;
impl Handler for Echo {
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        let _ = cx.send(msg);
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--hold") {
        let how = Client { deflate: args[4] == "1", active: args[5] == "1" };
        return hold(&args[2], args[3].parse().expect("count"), how);
    }
    let mut count = 10_000usize;
    let mut deflate: Option<DeflateConfig> = None;
    let mut active = false;
    let mut compact = None;
    let mut mem_level = None;
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--deflate" => {
                deflate = match rest.next().map(String::as_str) {
                    Some("off") => None,
                    Some("shared") => Some(DeflateConfig::shared()),
                    Some(other) => Some(DeflateConfig::dedicated(
                        other
                            .strip_prefix("dedicated:")
                            .and_then(|b| b.parse().ok())
                            .expect("--deflate takes off, shared or dedicated:BITS"),
                    )),
                    None => panic!("--deflate takes off, shared or dedicated:BITS"),
                }
            }
            "--active" => active = true,
            "--context" => {
                compact = match rest.next().map(String::as_str) {
                    Some("live") => Some(false),
                    Some("compact") => Some(true),
                    _ => panic!("--context takes live or compact"),
                }
            }
            "--mem-level" => {
                mem_level = Some(rest.next().and_then(|n| n.parse().ok()).expect("--mem-level N"))
            }
            n => count = n.parse().expect("COUNT, --deflate or --active"),
        }
    }
    if let Some(d) = deflate.as_mut() {
        d.compact_context = compact.unwrap_or(d.compact_context);
        d.mem_level = mem_level.unwrap_or(d.mem_level);
    }
    let how = Client { deflate: deflate.is_some(), active };
    let mut config = ServerConfig::default();
    config.workers = Some(1);
    config.pin_workers = false;
    config.compression = deflate.clone();
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(config)
        .route("/echo", |_: &Request<'_>| Ok(Echo))
        .start()?;
    let addr = server.local_addr().to_string();

    // Warm up: the first connections allocate the worker's pools and tables.
    hold_in_process(&addr, 64, how);
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_bytes();

    let mut child = Command::new(std::env::current_exe()?)
        .args(["--hold", &addr, &count.to_string()])
        .args([if how.deflate { "1" } else { "0" }, if how.active { "1" } else { "0" }])
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
    let profile = match &deflate {
        None => "off".to_owned(),
        Some(d) if d.no_context_takeover => "shared".to_owned(),
        Some(d) => format!(
            "dedicated:{} ({} context, mem_level {})",
            d.window_bits,
            if d.compact_context { "compact" } else { "live" },
            d.mem_level
        ),
    };
    println!("idle connections: {open} (deflate {profile}, active: {active})");
    println!(
        "server RSS: {:.1} MiB before, {:.1} MiB after",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    println!("user-space bytes per idle connection: {per:.0}");
    Ok(())
}

/// How the holder's connections behave.
#[derive(Clone, Copy)]
struct Client {
    /// Offer permessage-deflate.
    deflate: bool,
    /// Exchange one compressed message before going idle.
    active: bool,
}

/// Opens and closes `n` connections from this process (warm-up).
fn hold_in_process(addr: &str, n: usize, how: Client) {
    let mut codec = Codec::new(1, 8, 15);
    let held: Vec<TcpStream> = (0..n).map(|_| upgrade(addr, how, &mut codec)).collect();
    drop(held);
}

fn upgrade(addr: &str, how: Client, codec: &mut Codec) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    let offer = if how.deflate {
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    } else {
        ""
    };
    s.write_all(format!("{UPGRADE}{offer}\r\n").as_bytes()).expect("write");
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed during the handshake");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    let text = String::from_utf8_lossy(&head);
    assert_eq!(how.deflate, text.contains("permessage-deflate"), "negotiation: {text}");
    if how.active {
        for i in 0..40 {
            exchange(&mut s, how.deflate, codec, i);
        }
    }
    s
}

/// Sends one 1 KiB JSON message (compressed when negotiated) and waits for its echo.
fn exchange(s: &mut TcpStream, compressed: bool, codec: &mut Codec, round: usize) {
    let json: String = (0..40)
        .map(|i| {
            let id = round * 40 + i;
            format!("{{\"id\":{id},\"symbol\":\"XYZ{}\",\"price\":{}.25}},", id % 7, 100 + id)
        })
        .collect();
    let plain = &json.as_bytes()[..1024];
    let mut payload = Vec::new();
    if compressed {
        // Reset: whatever the context rules, a fresh stream is valid.
        codec.compress(15, plain, true, true, &mut payload);
    } else {
        payload.extend_from_slice(plain);
    }
    let repr = FrameRepr {
        fin: true,
        rsv: if compressed { Rsv::RSV1 } else { Rsv::NONE },
        opcode: OpCode::Text,
        mask: Some([1, 2, 3, 4]),
        payload_len: payload.len() as u64,
    };
    let mut frame = vec![0; repr.buffer_len()];
    repr.emit(&mut FrameHeader::new_unchecked(&mut frame[..]));
    mask::apply_mask(&mut payload, [1, 2, 3, 4], 0);
    frame.extend_from_slice(&payload);
    s.write_all(&frame).expect("write");
    // The echo: an unmasked server frame, read whole.
    let mut head = [0u8; 2];
    s.read_exact(&mut head).expect("read");
    assert_eq!(head[0] & 0x40 != 0, compressed, "the echo is compressed when negotiated");
    let len = match head[1] & 0x7f {
        126 => {
            let mut ext = [0u8; 2];
            s.read_exact(&mut ext).expect("read");
            usize::from(u16::from_be_bytes(ext))
        }
        127 => panic!("an echo of 1 KiB"),
        n => usize::from(n),
    };
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).expect("read");
}

fn hold(addr: &str, count: usize, how: Client) -> std::io::Result<()> {
    bidir_sys::socket::raise_fd_limit()?;
    let mut codec = Codec::new(1, 8, 15);
    let held: Vec<TcpStream> = (0..count).map(|_| upgrade(addr, how, &mut codec)).collect();
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
