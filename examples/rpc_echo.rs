//! The rpc and fanout benchmarks' server, one worker's worth of each:
//!
//! - `/rpc`, over `bidir.json.v1` or `bidir.bin.v1` (the client picks), the service `Bench`
//!   declared as a trait:
//!   `Bench.echo(item)` answers its argument, a small struct —
//!   the method `bidir-load --rpc bidir` calls, and the one the jsonrpsee peer serves as
//!   `echo` (benches/peers); `Bench.publish(stamp)` publishes the stamp as an event of the rpc
//!   topic `bench` (`["event","bench",STAMP]`) to the clients that subscribed to it, and
//!   answers how many they were — what `bidir-load --mode fanout --rpc bidir` calls.
//!   With `--key FILE` (a pre-shared key: the file's bytes, at least 32) the route is
//!   encrypted, `bidir.bin.v1` only, in the key mode each client picks (`psk` or `ecdhe`);
//!   `--compress-above N|off` sets where its `bidir.bin.v1` answers start to be compressed
//!   (default 512 bytes).
//! - `/sub` and `/pub`, plain WebSocket: the engine's own pub/sub, as uWebSockets.js offers
//!   it (benches/peers/node/uws-pubsub.js). A connection to `/sub` is subscribed to the topic
//!   `bench` on open; each message a connection to `/pub` sends is published as-is to it —
//!   what `bidir-load --mode fanout --pubsub plain` drives.
//!
//! ```text
//! cargo run --release --example rpc_echo -- --addr 127.0.0.1:9002 --workers 1
//! bidir-load --url ws://127.0.0.1:9002/rpc --rpc bidir --conns 100 --inflight 16
//! bidir-load --url ws://127.0.0.1:9002/rpc --mode fanout --rpc bidir --conns 10000
//! bidir-load --url ws://127.0.0.1:9002 --mode fanout --pubsub plain --conns 10000
//! head -c 32 /dev/urandom > bench.key
//! cargo run --release --example rpc_echo -- --key bench.key
//! bidir-load --url ws://127.0.0.1:9002/rpc --rpc bidir --wire bin --key bench.key --key-mode psk
//! ```

use serde::{Deserialize, Serialize};

use bidir::rpc::{Psk, Services};
use bidir::{Context, Handler, Message, Request, Server, ServerConfig};

/// What the load generator sends: `{"id":42,"name":"sensor","values":[1.5,2.25,3.0],"ok":true}`.
#[derive(Serialize, Deserialize)]
struct Item {
    id: u64,
    name: String,
    values: Vec<f64>,
    ok: bool,
}

/// The topic of both pub/subs (the rpc one and the engine's are apart).
const TOPIC: &str = "bench";

/// The benchmarks' service.
#[bidir::service]
trait Bench {
    /// Answers `item`.
    fn echo(&self, item: Item) -> Item;
    /// Publishes `stamp` to the rpc topic `bench`; answers the subscribers it reached.
    fn publish(&self, cx: &mut Context<'_>, stamp: u64) -> Result<usize, String>;
}

struct Benchmarks;

impl Bench for Benchmarks {
    fn echo(&self, item: Item) -> Item {
        item
    }

    fn publish(&self, cx: &mut Context<'_>, stamp: u64) -> Result<usize, String> {
        bidir::rpc::publish(&cx.server(), TOPIC, &stamp).map_err(|e| e.to_string())
    }
}

/// A connection to `/sub`: subscribed on open, deaf to what it sends.
struct Subscriber;

impl Handler for Subscriber {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.subscribe(TOPIC);
    }

    fn on_message(&mut self, _cx: &mut Context<'_>, _msg: Message<'_>) {}
}

/// A connection to `/pub`: each message it sends goes to every subscriber.
struct Publisher;

impl Handler for Publisher {
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        cx.publish(TOPIC, msg);
    }
}

fn main() -> std::io::Result<()> {
    let mut addr = "127.0.0.1:9002".to_owned();
    let mut config = ServerConfig::default();
    let mut key = None;
    let mut compress_above = Some(bidir::rpc::COMPRESS_ABOVE);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--addr" => addr = value(),
            "--workers" => {
                config.workers = Some(value().parse().unwrap_or_else(|_| usage("not a number")))
            }
            "--no-pin" => config.pin_workers = false,
            "--key" => key = Some(read_key(&value())),
            "--compress-above" => {
                compress_above = match value().as_str() {
                    "off" => None,
                    n => Some(n.parse().unwrap_or_else(|_| usage("not a number"))),
                }
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let mut services =
        Services::new().serve(BenchService::shared(Benchmarks)).compress_above(compress_above);
    let encrypted = key.is_some();
    if let Some(key) = key {
        services = services.key(key);
    }
    let server = Server::builder()
        .bind(addr.as_str())
        .config(config)
        .route("/rpc", services.hook())
        .route("/sub", |_req: &Request<'_>| Ok(Subscriber))
        .route("/pub", |_req: &Request<'_>| Ok(Publisher))
        .start()?;
    let at = server.local_addr();
    println!(
        "rpc echo on ws://{at}/rpc, pub/sub on ws://{at}/sub and /pub ({})",
        server.backend().name()
    );
    if encrypted {
        println!("/rpc is encrypted: AES-256-GCM ({})", bidir::rpc::aead_backend());
    }
    server.join();
    Ok(())
}

/// The pre-shared key in the file at `path`: its bytes; exits with the reason otherwise.
fn read_key(path: &str) -> Psk {
    let bytes = std::fs::read(path).unwrap_or_else(|e| usage(&format!("--key {path}: {e}")));
    Psk::new(&bytes).unwrap_or_else(|e| usage(&format!("--key {path}: {e}")))
}

fn usage(error: &str) -> ! {
    eprintln!(
        "{error}\nusage: rpc_echo [--addr HOST:PORT] [--workers N] [--no-pin] [--key FILE] \
         [--compress-above N|off]"
    );
    std::process::exit(2)
}
