//! A bounded closed-loop load generator for echo servers, built on mio and the sans-IO
//! protocol core — not on the engine, so it can measure the engine. (The full `bidir-load`,
//! with open-loop mode and plots, replaces it later.)
//!
//! ```text
//! cargo run --release --example loopback_load -- --addr 127.0.0.1:9001 --path /echo \
//!     --conns 100 --inflight 16 --size 16 --seconds 10 --warmup 2 [--binary] [--json] \
//!     [--deflate off|shared|dedicated:BITS] [--server-pid PID]
//! ```
//!
//! `--json` sends JSON-like text (quote records with varying numbers, 64 different messages in
//! turn) instead of one repeated byte; `--deflate` offers permessage-deflate with that profile.
//!
//! Each connection keeps `inflight` messages outstanding: every echo received sends the next
//! message. Prints messages per second, round-trip latency percentiles (HDR histogram), and,
//! given the server's PID, the server's CPU time per message (from /proc/PID/task/*/schedstat)
//! and this client's own.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant as WallClock};

use bidir::hdrhistogram::Histogram;
use bidir::protocol::deflate::{self, DeflateConfig};
use bidir::protocol::http::{self, ClientRequest, Response, Status};
use bidir::protocol::{Config, Connection, Event, Input, Instant, Message};
use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};

struct Args {
    addr: SocketAddr,
    path: String,
    conns: usize,
    inflight: usize,
    size: usize,
    seconds: f64,
    warmup: f64,
    binary: bool,
    json: bool,
    deflate: Option<DeflateConfig>,
    server_pid: Option<u32>,
}

struct Conn {
    io: MioStream,
    proto: Connection,
    spill: Vec<u8>,
    out: Vec<u8>,
    sent_at: VecDeque<WallClock>,
    blocked: bool,
}

fn main() -> io::Result<()> {
    let args = parse_args();
    let payloads: Vec<String> = if args.json {
        (0..64).map(|i| json_like(args.size, i)).collect()
    } else {
        vec!["T".repeat(args.size)]
    };
    let msg = |n: usize| {
        let text = &payloads[n % payloads.len()];
        if args.binary { Message::Binary(text.as_bytes()) } else { Message::Text(text) }
    };
    let mut next = 0usize;
    let start = WallClock::now();
    let now = || Instant::from_nanos(start.elapsed().as_nanos() as u64);
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        let (stream, answer) = handshake(args.addr, &args.path, i, args.deflate.as_ref())?;
        stream.set_nonblocking(true)?;
        let mut io = MioStream::from_std(stream);
        poll.registry().register(&mut io, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        let mut config = Config::default();
        config.ping_interval = None;
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        let mut proto = Connection::client(now(), config, seed);
        if let (Some(ours), Some(answer)) = (&args.deflate, answer) {
            let params = deflate::accept_answer(&answer, ours)
                .map_err(|e| io::Error::other(format!("deflate answer: {e:?}")))?
                .expect("a permessage-deflate answer");
            proto.enable_deflate(params, ours);
            let codec = proto.new_codec().expect("deflate is on");
            proto.attach_codec(codec);
        } else if args.deflate.is_some() && i == 0 {
            eprintln!("the server declined permessage-deflate");
        }
        conns.push(Conn {
            io,
            proto,
            spill: Vec::new(),
            out: Vec::new(),
            sent_at: VecDeque::new(),
            blocked: false,
        });
    }
    for c in &mut conns {
        for _ in 0..args.inflight {
            next += 1;
            c.proto.send(msg(next), &mut c.out).expect("send");
            c.sent_at.push_back(WallClock::now());
        }
        flush(c)?;
    }

    let mut hist = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).expect("bounds");
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 << 10];
    let measure_from = WallClock::now() + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.seconds);
    let mut counted = 0u64;
    let mut marks: Option<(u64, u64)> = None; // (server cpu ns, client cpu ns) at measure_from
    let mut last_progress = WallClock::now();
    loop {
        let t = WallClock::now();
        if t >= end {
            break;
        }
        if marks.is_none() && t >= measure_from {
            marks = Some((args.server_pid.map_or(0, cpu_ns), cpu_ns(std::process::id())));
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        for event in events.iter() {
            let c = &mut conns[event.token().0];
            if event.is_writable() && c.blocked {
                c.blocked = false;
                flush(c)?;
            }
            if !event.is_readable() {
                continue;
            }
            loop {
                let n = match c.io.read(&mut buf) {
                    Ok(0) => {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed"));
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                };
                let mut input = Input::new(&mut buf[..n]);
                let at = WallClock::now();
                while let Some(ev) =
                    c.proto.handle_bytes(now(), &mut input, &mut c.spill).expect("protocol")
                {
                    if let Event::Message(_) = ev {
                        let sent = c.sent_at.pop_front().expect("an echo answers a send");
                        if at >= measure_from {
                            counted += 1;
                            let _ = hist.record((at - sent).as_nanos() as u64);
                        }
                    }
                }
                // One new message per echo received: the number in flight stays constant.
                while c.sent_at.len() < args.inflight {
                    next += 1;
                    c.proto.send(msg(next), &mut c.out).expect("send");
                    c.sent_at.push_back(WallClock::now());
                }
                if n < buf.len() {
                    break;
                }
            }
            flush(c)?;
        }
        if last_progress.elapsed() >= Duration::from_secs(2) {
            last_progress = WallClock::now();
            eprintln!("  ... {counted} messages measured");
        }
    }
    let (server0, client0) = marks.unwrap_or((0, 0));
    let server_ns = args.server_pid.map(|pid| cpu_ns(pid).saturating_sub(server0));
    let client_ns = cpu_ns(std::process::id()).saturating_sub(client0);
    let rate = counted as f64 / args.seconds;
    println!(
        "conns {} inflight {} size {} {}{}{}: {:.0} msg/s, p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
        args.conns,
        args.inflight,
        args.size,
        if args.binary { "binary" } else { "text" },
        if args.json { " json" } else { "" },
        match &args.deflate {
            None => String::new(),
            Some(d) if d.no_context_takeover => ", deflate shared".to_owned(),
            Some(d) => format!(", deflate dedicated:{}", d.window_bits),
        },
        rate,
        hist.value_at_quantile(0.5) as f64 / 1e3,
        hist.value_at_quantile(0.9) as f64 / 1e3,
        hist.value_at_quantile(0.99) as f64 / 1e3,
        hist.value_at_quantile(0.999) as f64 / 1e3,
        hist.max() as f64 / 1e3,
    );
    if let Some(server_ns) = server_ns {
        println!(
            "server CPU {:.0} ns/msg, client CPU {:.0} ns/msg",
            server_ns as f64 / counted.max(1) as f64,
            client_ns as f64 / counted.max(1) as f64
        );
    }
    Ok(())
}

fn flush(c: &mut Conn) -> io::Result<()> {
    while !c.out.is_empty() {
        match c.io.write(&c.out) {
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.blocked = true;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Quote-like JSON records with varying numbers, cut to `len` bytes.
fn json_like(len: usize, variant: u64) -> String {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (variant.wrapping_mul(7919) + 1);
    let mut out = String::from("[");
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let symbols = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META"];
        out.push_str(&format!(
            "{{\"id\":{},\"symbol\":\"{}\",\"price\":{}.{:02},\"qty\":{},\"side\":\"{}\"}},",
            seed % 1_000_000,
            symbols[(seed >> 20) as usize % symbols.len()],
            seed % 900 + 100,
            (seed >> 8) % 100,
            (seed >> 16) % 5000,
            if seed & 1 == 0 { "buy" } else { "sell" },
        ));
    }
    out.truncate(len);
    out
}

/// Upgrades; returns the stream and the server's `Sec-WebSocket-Extensions` answer.
fn handshake(
    addr: SocketAddr,
    path: &str,
    i: usize,
    deflate: Option<&DeflateConfig>,
) -> io::Result<(TcpStream, Option<String>)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let host = addr.to_string();
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
    let offer = deflate.map(DeflateConfig::offer);
    let request = ClientRequest {
        host: &host,
        target: path,
        nonce,
        protocols: &[],
        extensions: offer.as_deref(),
        headers: &[],
    };
    let mut out = Vec::new();
    request.write(&mut out).map_err(|e| io::Error::other(e.to_string()))?;
    stream.write_all(&out)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed during the handshake",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [http::EMPTY_HEADER; 32];
        if let Ok(Status::Complete((res, len))) = Response::parse(&buf, &mut headers, 8192) {
            let negotiated = res.validate(&request).map_err(|e| io::Error::other(e.to_string()))?;
            assert_eq!(len, buf.len(), "the server spoke first");
            let answer = negotiated.extensions.map(str::to_owned);
            return Ok((stream, answer));
        }
    }
}

/// CPU time of every thread of `pid`, in nanoseconds (first field of schedstat).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn parse_args() -> Args {
    let mut a = Args {
        addr: "127.0.0.1:9001".parse().unwrap(),
        path: "/echo".into(),
        conns: 100,
        inflight: 16,
        size: 16,
        seconds: 10.0,
        warmup: 2.0,
        binary: false,
        json: false,
        deflate: None,
        server_pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--addr" => a.addr = v().parse().expect("address"),
            "--path" => a.path = v(),
            "--conns" => a.conns = v().parse().expect("number"),
            "--inflight" => a.inflight = v().parse().expect("number"),
            "--size" => a.size = v().parse().expect("number"),
            "--seconds" => a.seconds = v().parse().expect("number"),
            "--warmup" => a.warmup = v().parse().expect("number"),
            "--binary" => a.binary = true,
            "--json" => a.json = true,
            "--deflate" => {
                a.deflate = match v().as_str() {
                    "off" => None,
                    "shared" => Some(DeflateConfig::shared()),
                    other => Some(DeflateConfig::dedicated(
                        other
                            .strip_prefix("dedicated:")
                            .and_then(|b| b.parse().ok())
                            .expect("--deflate takes off, shared or dedicated:BITS"),
                    )),
                }
            }
            "--server-pid" => a.server_pid = Some(v().parse().expect("pid")),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}
