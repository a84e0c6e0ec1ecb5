//! Long work answered later through a callback, after mORMot's sample 31: a client starts
//! works it names, passing a callback object; each work runs 5–6 s on a thread of its own,
//! never blocking the server's worker, then calls back `work_finished(name, ms)` or — about
//! one time in five, the works numbered 5, 10, 15… here — `work_failed(name, error)`.
//! `total_work_count()` counts the works started.
//!
//! ```text
//! cargo run --release --example longwork                       # the server, 127.0.0.1:9003
//! cargo run --release --example longwork -- client --works 6   # starts 6 works, prints the callbacks
//! cargo run --release --example longwork -- --work-ms 200..400 # shorter works
//! ```
//!
//! The client exits once every work it started has called back (0), or when its wait ends
//! (`--wait SECS`, default 30: 1). It speaks `bidir.json.v1`, or `bidir.bin.v1` with `--bin`
//! (the server serves both).
//!
//! Encryption: `--key FILE` gives the server a pre-shared key (the file's bytes, 32 or more;
//! `longwork --gen-key FILE` writes 32 random ones); `/rpc` is then `bidir.bin.v1` only, every
//! message sealed with AES-256-GCM under keys of each connection's own (docs/rpc.md, "Keys").
//! `longwork client --key FILE` agrees its keys by an X25519 exchange (`--key-mode ecdhe`, the
//! default: forward secrecy) or from both sides' nonces (`--key-mode psk`); a client with
//! another key is refused with 403 before any message, and exits with 1.
//!
//! ```text
//! cargo run --release --example longwork -- --gen-key longwork.key
//! cargo run --release --example longwork -- --key longwork.key
//! cargo run --release --example longwork -- client --key longwork.key --key-mode psk
//! ```
//!
//! The server stops on Ctrl-C (or SIGTERM) with a graceful shutdown, after printing the bytes
//! it read and wrote with `--report-bytes` (scripts/wire-bytes.sh).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bidir::rpc::client::Client;
use bidir::rpc::{Callback, KeyMode, Psk, Services, Wire, aead_backend};
use bidir::{Server, ServerConfig, Signals};

/// How a work ends.
#[bidir::callback]
pub trait LongWorkCallback {
    /// Work `name` finished after `ms` milliseconds.
    fn work_finished(&self, name: String, ms: u64);
    /// Work `name` failed with `error`.
    fn work_failed(&self, name: String, error: String);
}

/// Works that take long.
#[bidir::service]
pub trait LongWork {
    /// Starts work `name`; `callback` hears how it ends. Refused while 64 works run.
    fn start_work(
        &self,
        name: String,
        callback: Callback<dyn LongWorkCallback>,
    ) -> Result<(), String>;
    /// The works started since the server started.
    fn total_work_count(&self) -> u64;
}

/// Works running at once, at most: each takes a thread.
const MAX_RUNNING: usize = 64;

struct Works {
    started: AtomicU64,
    running: Arc<AtomicUsize>,
    /// How long a work takes, in milliseconds: from `ms.0` to `ms.1`.
    ms: (u64, u64),
}

impl LongWork for Works {
    fn start_work(
        &self,
        name: String,
        callback: Callback<dyn LongWorkCallback>,
    ) -> Result<(), String> {
        if self.running.fetch_add(1, Ordering::AcqRel) >= MAX_RUNNING {
            self.running.fetch_sub(1, Ordering::AcqRel);
            return Err(format!("{MAX_RUNNING} works run already; try later"));
        }
        let number = self.started.fetch_add(1, Ordering::Relaxed) + 1;
        let (min, max) = self.ms;
        let ms = min + pseudo_random(number) % (max - min + 1);
        let running = Arc::clone(&self.running);
        println!("work {number} {name:?} starts ({ms} ms)");
        std::thread::spawn(move || {
            let start = Instant::now();
            std::thread::sleep(Duration::from_millis(ms));
            let took = start.elapsed().as_millis() as u64;
            // A client gone meanwhile released its callback: the outcome has nobody to reach.
            let _ = if number.is_multiple_of(5) {
                callback.work_failed(name, format!("work {number} failed after {took} ms"))
            } else {
                callback.work_finished(name, took)
            };
            running.fetch_sub(1, Ordering::AcqRel);
        });
        Ok(())
    }

    fn total_work_count(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }
}

/// A spread of durations without a random-number crate: a mix of the work's number.
fn pseudo_random(n: u64) -> u64 {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 32
}

fn main() -> io::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "client") {
        args.remove(0);
        if let Err(e) = client(&args) {
            eprintln!("longwork client: {e}");
            std::process::exit(1);
        }
        return Ok(());
    }
    let mut addr = "127.0.0.1:9003".to_owned();
    let mut config = ServerConfig::default();
    let mut ms = (5000, 6000);
    let (mut key, mut report_bytes) = (None, false);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--addr" => addr = value(),
            "--workers" => config.workers = Some(number(&value()) as usize),
            "--no-pin" => config.pin_workers = false,
            "--work-ms" => {
                let range = value();
                ms = match range.split_once("..").map(|(a, b)| (number(a), number(b))) {
                    Some((min, max)) if min <= max => (min, max),
                    _ => usage("--work-ms takes MIN..MAX"),
                };
            }
            "--key" => key = Some(read_key(&value())),
            "--gen-key" => return gen_key(&value()),
            "--report-bytes" => report_bytes = true,
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let works = Works { started: AtomicU64::new(0), running: Arc::default(), ms };
    let mut services = Services::new().serve(LongWorkService::shared(works));
    let encrypted = key.is_some();
    if let Some(psk) = key {
        services = services.key(psk);
    }
    // Block SIGINT/SIGTERM before the workers start, so that they inherit the mask.
    let signals = Signals::block()?;
    let server = Server::builder()
        .bind(addr.as_str())
        .config(config)
        .route("/rpc", services.hook())
        .start()?;
    println!("longwork on ws://{}/rpc — works take {}..{} ms", server.local_addr(), ms.0, ms.1);
    if encrypted {
        println!("encrypted: bidir.bin.v1 only, AES-256-GCM: {}", aead_backend());
    }
    let signal = signals.wait()?;
    println!("signal {signal}: shutting down");
    if report_bytes {
        let counters = server.stats().counters;
        println!("bytes: {} in, {} out", counters.bytes_in, counters.bytes_out);
    }
    server.shutdown(Duration::from_secs(5));
    Ok(())
}

/// Prints each outcome and tells the waiting client.
struct Outcomes(Mutex<mpsc::Sender<()>>);

impl Outcomes {
    fn done(&self) {
        let _ = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).send(());
    }
}

impl LongWorkCallback for Outcomes {
    fn work_finished(&self, name: String, ms: u64) {
        println!("finished: {name} in {ms} ms");
        self.done();
    }

    fn work_failed(&self, name: String, error: String) {
        println!("failed: {name}: {error}");
        self.done();
    }
}

/// Starts `--works` works with one callback object and waits for every outcome.
fn client(args: &[String]) -> io::Result<()> {
    let mut url = "ws://127.0.0.1:9003/rpc".to_owned();
    let (mut works, mut wait) = (6, 30);
    let (mut wire, mut key, mut mode) = (Wire::Json, None, None);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value =
            || args.next().cloned().unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--url" => url = value(),
            "--works" => works = number(&value()),
            "--wait" => wait = number(&value()),
            "--bin" => wire = Wire::Bin,
            "--key" => key = Some(read_key(&value())),
            "--key-mode" => mode = Some(key_mode(&value())),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let fail = |e: &dyn std::fmt::Display| io::Error::other(e.to_string());
    let mut builder = Client::builder(&url).map_err(|e| fail(&e))?.wire(wire);
    match (key, mode) {
        (Some(psk), mode) => {
            let mode = mode.unwrap_or(KeyMode::Ecdhe);
            eprintln!("{} key exchange, AES-256-GCM: {}", mode.token(), aead_backend());
            builder = builder.key(mode, psk);
        }
        (None, Some(_)) => usage("--key-mode needs --key"),
        (None, None) => {}
    }
    let client = builder.connect().map_err(|e| fail(&format!("cannot connect to {url}: {e}")))?;
    let service = LongWorkClient::new(&client);
    let (tx, outcomes) = mpsc::channel();
    let callback = client.callback(Arc::new(Outcomes(Mutex::new(tx))) as Arc<dyn LongWorkCallback>);
    for i in 1..=works {
        let name = format!("work-{i}");
        service.start_work(name.clone(), &callback).map_err(|e| fail(&e))?.map_err(|e| fail(&e))?;
        println!("started: {name}");
    }
    let deadline = Instant::now() + Duration::from_secs(wait);
    for received in 0..works {
        let left = deadline.saturating_duration_since(Instant::now());
        if outcomes.recv_timeout(left).is_err() {
            return Err(fail(&format!("{received} of {works} works called back in {wait} s")));
        }
    }
    let total = service.total_work_count().map_err(|e| fail(&e))?;
    println!("all {works} works called back; the server has started {total} works");
    client.close();
    Ok(())
}

/// A pre-shared key: the bytes of the file at `path`, at least 32.
fn read_key(path: &str) -> Psk {
    let bytes = std::fs::read(path).unwrap_or_else(|e| usage(&format!("key file {path}: {e}")));
    Psk::new(&bytes).unwrap_or_else(|e| usage(&format!("key file {path}: {e}")))
}

/// Writes a new key file at `path`: 32 random bytes, readable by its owner only. An existing
/// file is left alone (exit status 1), not overwritten.
fn gen_key(path: &str) -> io::Result<()> {
    let write = || {
        let mut psk = [0; 32];
        getrandom::fill(&mut psk).map_err(io::Error::other)?;
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?.write_all(&psk)
    };
    if let Err(e) = write() {
        eprintln!("error: key file {path}: {e}");
        std::process::exit(1);
    }
    println!("wrote a 32-byte key to {path}");
    Ok(())
}

fn key_mode(token: &str) -> KeyMode {
    KeyMode::from_token(token).unwrap_or_else(|| usage("--key-mode takes psk or ecdhe"))
}

fn number(s: &str) -> u64 {
    s.trim().parse().unwrap_or_else(|_| usage(&format!("not a number: {s}")))
}

fn usage(error: &str) -> ! {
    if !error.is_empty() {
        eprintln!("error: {error}");
    }
    eprintln!(
        "usage: longwork [--addr HOST:PORT] [--workers N] [--no-pin] [--work-ms MIN..MAX]
                [--key FILE] [--report-bytes]
       longwork --gen-key FILE
       longwork client [--url ws://HOST:PORT/rpc] [--works N] [--wait SECS] [--bin]
                       [--key FILE [--key-mode ecdhe|psk]]

  --key FILE      a pre-shared key: the file's bytes, 32 or more (--gen-key writes 32 random
                  ones, to a new file). The server's /rpc is then bidir.bin.v1 only and
                  encrypted; the client agrees its keys in --key-mode (default ecdhe: forward
                  secrecy).
  --bin           the client speaks bidir.bin.v1 (implied by --key), not bidir.json.v1.
  --report-bytes  on shutdown, print the bytes the server read and wrote."
    );
    std::process::exit(if error.is_empty() { 0 } else { 2 });
}
