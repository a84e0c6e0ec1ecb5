//! The rpc benchmark's server: `Bench.echo(item)` answers its argument, a small struct, over
//! `bidir.json.v1` at `/rpc` — the method `bidir-load --rpc bidir` calls, and the one the
//! jsonrpsee peer serves as `echo` (benches/peers).
//!
//! ```text
//! cargo run --release --example rpc_echo -- --addr 127.0.0.1:9002 --workers 1
//! bidir-load --url ws://127.0.0.1:9002/rpc --rpc bidir --conns 100 --inflight 16
//! ```

use serde::{Deserialize, Serialize};

use bidir::rpc::Services;
use bidir::{Server, ServerConfig};

/// What the load generator sends: `{"id":42,"name":"sensor","values":[1.5,2.25,3.0],"ok":true}`.
#[derive(Serialize, Deserialize)]
struct Item {
    id: u64,
    name: String,
    values: Vec<f64>,
    ok: bool,
}

fn main() -> std::io::Result<()> {
    let mut addr = "127.0.0.1:9002".to_owned();
    let mut config = ServerConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--addr" => addr = value(),
            "--workers" => {
                config.workers = Some(value().parse().unwrap_or_else(|_| usage("not a number")))
            }
            "--no-pin" => config.pin_workers = false,
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let services =
        Services::new().method("Bench.echo", |_cx, (item,): (Item,)| Ok::<_, String>(item));
    let builder = Server::builder().bind(addr.as_str()).config(config);
    let server = builder.route("/rpc", services.hook()).start()?;
    println!("rpc echo on ws://{}/rpc ({})", server.local_addr(), server.backend().name());
    server.join();
    Ok(())
}

fn usage(error: &str) -> ! {
    eprintln!("{error}\nusage: rpc_echo [--addr HOST:PORT] [--workers N] [--no-pin]");
    std::process::exit(2)
}
