//! An echo server: text and binary messages come back as they came, on every worker.
//!
//! - `GET /` serves a page that opens a WebSocket to `/echo`: type and see echoes, send a 1 MiB
//!   message, close.
//! - `/echo` and `/` echo over WebSocket; `/health` answers `ok`.
//! - Pages on any site may open the echo (`--origins any`, the default here): it is a public
//!   service for test pages and interop checks, and holds nothing a cross-site page could
//!   steal. `--origins same-host` restores the engine's default (only pages served by this
//!   host), and `--origins https://a.example,https://*.b.example` allows those sites as well.
//!
//! ```text
//! cargo run --release --example echo                      # 127.0.0.1:9001
//! cargo run --release --example echo -- --addr 0.0.0.0:9001 --workers 2
//! cargo run --release --example echo -- --max-message 16777216 --max-fragments 131072  # Autobahn 9.x
//! cargo run --release --example echo -- --deflate dedicated:15   # or shared (default), off
//! cargo run --release --example echo -- --deflate dedicated:15 --context compact  # or live
//! cargo run --release --example echo -- --origins same-host   # refuse pages on other sites
//! cargo run --release --example echo -- --busy-poll 50   # poll 50 µs before sleeping (latency)
//! cargo run --release --example echo -- --tls cert.pem key.pem   # https:// and wss://
//! cargo run --release --example echo -- --tls-self-signed cert.pem   # a throwaway certificate
//! ```
//!
//! `--tls-self-signed PATH` makes a certificate for localhost and 127.0.0.1, writes it to PATH
//! (for a client to trust) and prints its key's SHA-256 for Chromium's
//! `--ignore-certificate-errors-spki-list`, which trusts that one key and nothing else.
//!
//! Stops on Ctrl-C (or SIGTERM) with a graceful shutdown: close 1001 to every connection.

use std::time::Duration;

use bidir::tls::ServerTls;
use bidir::{
    CloseInfo, Context, DeflateConfig, Handler, HttpResponse, Message, OriginPolicy, Request,
    Server, ServerConfig, Signals,
};

struct Echo;

impl Handler for Echo {
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        // Refused only past the backpressure limit or once closing; an echo has nothing to add.
        let _ = cx.send(msg);
    }

    fn on_close(&mut self, _cx: &mut Context<'_>, _close: CloseInfo<'_>) {}
}

const PAGE: &str = include_str!("static/echo.html");

fn main() -> std::io::Result<()> {
    let mut addr = "127.0.0.1:9001".to_owned();
    let mut config = ServerConfig::default();
    // Browsers offer permessage-deflate; the echo server accepts it in the low-memory profile.
    config.compression = Some(DeflateConfig::shared());
    // A public echo service: pages on other sites (test pages, interop checks) use it.
    config.origins = OriginPolicy::any();
    let mut origins = "any".to_owned();
    let mut context = None;
    let mut tls = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--addr" => addr = value(),
            "--workers" => config.workers = Some(number(&value())),
            "--busy-poll" => {
                config.busy_poll = Some(Duration::from_micros(number(&value()) as u64));
            }
            "--max-message" => {
                let n = number(&value());
                config.protocol.max_message_size = n;
                config.protocol.max_frame_size = n;
                config.max_backpressure = config.max_backpressure.max(n);
            }
            "--max-fragments" => config.protocol.max_fragments = number(&value()) as u32,
            "--no-pin" => config.pin_workers = false,
            "--deflate" => {
                config.compression = match value().as_str() {
                    "off" => None,
                    "shared" => Some(DeflateConfig::shared()),
                    other => match other.strip_prefix("dedicated:").and_then(|b| b.parse().ok()) {
                        Some(bits) => Some(DeflateConfig::dedicated(bits)),
                        None => usage("--deflate takes off, shared or dedicated:BITS"),
                    },
                }
            }
            "--context" => {
                context = Some(match value().as_str() {
                    "live" => false,
                    "compact" => true,
                    _ => usage("--context takes live or compact"),
                })
            }
            "--origins" => {
                origins = value();
                config.origins = origin_policy(&origins);
            }
            "--tls" => {
                let (cert, key) = (value(), args.next().unwrap_or_else(|| usage("--tls CERT KEY")));
                tls = Some(ServerTls::from_pem_files(&cert, &key)?);
            }
            "--tls-self-signed" => tls = Some(self_signed(&value())?),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if let (Some(d), Some(compact)) = (config.compression.as_mut(), context) {
        d.compact_context = compact;
    }
    // Block SIGINT/SIGTERM before the workers start, so that they inherit the mask and the
    // signal reaches `signals.wait()` below.
    let signals = Signals::block()?;
    let (builder, scheme) = match tls {
        Some(tls) => (Server::builder().bind_tls(addr.as_str(), tls), "s"),
        None => (Server::builder().bind(addr.as_str()), ""),
    };
    let server = builder
        .config(config)
        .http("/", |_req: &Request<'_>| HttpResponse::html(PAGE))
        .http("/health", |_req: &Request<'_>| HttpResponse::text("ok"))
        .route("/echo", |_req: &Request<'_>| Ok(Echo))
        .route("/", |_req: &Request<'_>| Ok(Echo))
        .start()?;
    let addr = server.local_addr();
    println!("echo server on ws{scheme}://{addr}/echo — open http{scheme}://{addr}/ in a browser");
    match origins.as_str() {
        "any" => println!(
            "pages on any site may open the echo (a public service); --origins same-host restricts"
        ),
        _ => println!("pages allowed to open the echo: {origins}"),
    }
    let backend = server.backend();
    match &backend.fallback_reason {
        Some(why) => {
            println!("{} workers on {} ({why}); Ctrl-C stops it", server.workers(), backend.name())
        }
        None => println!("{} workers on {}; Ctrl-C stops it", server.workers(), backend.name()),
    }
    let signal = signals.wait()?;
    let stats = server.stats();
    println!("signal {signal}: shutting down ({} connections open)", server.connections());
    server.shutdown(Duration::from_secs(5));
    let c = &stats.counters;
    let s = &c.syscalls;
    println!(
        "served {} upgrades, {} messages in, {} out, {} bytes in, {} out",
        c.upgraded, c.messages_in, c.messages_out, c.bytes_in, c.bytes_out
    );
    println!(
        "syscalls: {} waits, {} reads, {} writes, {} accepts, {} other; {:.3} per message in, {} loop turns",
        s.waits,
        s.reads,
        s.writes,
        s.accepts,
        s.other,
        s.total() as f64 / c.messages_in.max(1) as f64,
        c.turns
    );
    if !stats.handler_ns.is_empty() {
        println!(
            "handler time p50 {} ns, p99 {} ns; loop turn p50 {} ns, p99 {} ns",
            stats.handler_ns.value_at_quantile(0.5),
            stats.handler_ns.value_at_quantile(0.99),
            stats.turn_ns.value_at_quantile(0.5),
            stats.turn_ns.value_at_quantile(0.99)
        );
    }
    Ok(())
}

/// `any`, `same-host`, or a comma-separated list of origins allowed besides the same host.
fn origin_policy(arg: &str) -> OriginPolicy {
    match arg {
        "any" => OriginPolicy::any(),
        "same-host" => OriginPolicy::same_host(),
        list => list.split(',').fold(OriginPolicy::same_host(), |policy, origin| {
            policy.try_allow(origin.trim()).unwrap_or_else(|e| usage(&e.to_string()))
        }),
    }
}

fn number(s: &str) -> usize {
    s.parse().unwrap_or_else(|_| usage(&format!("not a number: {s}")))
}

/// A self-signed certificate for localhost and 127.0.0.1, written to `path` as PEM; prints
/// the base64 SHA-256 of its public key (what Chromium's `--ignore-certificate-errors-spki-list`
/// takes).
fn self_signed(path: &str) -> std::io::Result<ServerTls> {
    use base64::Engine as _;
    use rcgen::PublicKeyData as _;
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let generated = rcgen::generate_simple_self_signed(names).map_err(std::io::Error::other)?;
    let cert = generated.cert.pem();
    std::fs::write(path, &cert)?;
    let spki = generated.signing_key.subject_public_key_info();
    let digest = ring::digest::digest(&ring::digest::SHA256, &spki);
    let spki = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
    println!("self-signed certificate in {path}; its key's SHA-256 (SPKI): {spki}");
    ServerTls::from_pem(cert.as_bytes(), generated.signing_key.serialize_pem().as_bytes())
}

fn usage(error: &str) -> ! {
    if !error.is_empty() {
        eprintln!("error: {error}");
    }
    eprintln!(
        "usage: echo [--addr HOST:PORT] [--workers N] [--max-message BYTES] [--max-fragments N] [--no-pin]\n\
         \x20           [--deflate off|shared|dedicated:BITS] [--context live|compact]\n\
         \x20           [--origins any|same-host|ORIGIN,...] [--busy-poll MICROS]\n\
         \x20           [--tls CERT.pem KEY.pem | --tls-self-signed CERT-OUT.pem]"
    );
    std::process::exit(if error.is_empty() { 0 } else { 2 });
}
