//! ws-rs (`ws` crate 0.9) echo server. Benchmark comparison peer only.
//! Single-threaded mio event loop. Echoes text and binary messages with their
//! type; pings are answered by ws-rs; no compression (the crate's
//! permessage-deflate feature is off).

use ws::{Builder, Handler, Message, Result, Sender, Settings};

const NAME: &str = "ws-rs-echo";

struct Echo {
    out: Sender,
}

impl Handler for Echo {
    fn on_message(&mut self, msg: Message) -> Result<()> {
        self.out.send(msg)
    }
}

fn main() {
    let addr = bidir_bench_peers::startup(NAME);
    let settings = Settings {
        // Default is 100; the benchmarks hold 10 000 idle connections.
        max_connections: 20_000,
        tcp_nodelay: true,
        // Defaults already impose no message size limit (max_fragment_size =
        // usize::MAX, growing buffers).
        ..Settings::default()
    };
    let server = Builder::new()
        .with_settings(settings)
        .build(|out: Sender| Echo { out })
        .unwrap_or_else(|e| {
            eprintln!("{NAME}: {e:?}");
            std::process::exit(1);
        });
    let server = server.bind(addr).unwrap_or_else(|e| {
        eprintln!("{NAME}: bind {addr}: {e:?}");
        std::process::exit(1);
    });
    bidir_bench_peers::announce(NAME, server.local_addr().unwrap_or(addr));
    if let Err(e) = server.run() {
        eprintln!("{NAME}: {e:?}");
        std::process::exit(1);
    }
}
