//! `bidir-load`: a WebSocket load generator built on bidir's engine client.
//!
//! ```text
//! bidir-load --url ws://127.0.0.1:9001/echo --conns 100 --inflight 16 --size 16 --duration 10
//! bidir-load --url ... --rate 50000                 # open loop: 50 000 msg/s in total
//! bidir-load --url ws://127.0.0.1:9002/rpc --rpc bidir --inflight 16   # calls of Bench.echo
//! bidir-load --url ... --rpc bidir --wire bin --key KEYFILE --key-mode psk  # bidir.bin.v1, sealed
//! bidir-load --url ... --mode connect --conns 10000 --server-pid PID   # idle connections
//! bidir-load --url ... --mode churn --conns 10000 --cycles 1000000 --server-pid PID
//! bidir-load --url ws://127.0.0.1:9002/rpc --mode fanout --rpc bidir --conns 10000  # events
//! bidir-load --url tcp://127.0.0.1:9003 --raw --conns 1000 --size 64   # plain TCP echoes
//! bidir-load --url ws://127.0.0.1:9002 --mode fanout --pubsub plain --rate 100 --conns 10000
//! bidir-load plot --out cell.svg --title "..." [--log-y] bidir.hgrm:bidir ws.hgrm:ws
//! ```
//!
//! Closed loop keeps `--inflight` messages outstanding per connection: each echo is timed
//! and answered by the next message. Open loop sends at a fixed total rate whatever the
//! server does, and times each message from its *intended* send time (carried in the
//! payload), so a stalled server shows up as latency instead of as fewer samples
//! (coordinated omission). Connect mode opens `--conns` idle connections, times the
//! handshakes and, given the server's PID, reports its resident memory per connection.
//! Churn mode has every connection connect, upgrade, echo `--cycle-messages` messages, close
//! and start over, counting cycles, and reports the server's memory and descriptors at the
//! start, the peak and the end (once the server has closed the run's connections).
//! Raw mode (`--raw`) is echo mode over plain TCP against a raw echo server: the floor a
//! WebSocket server's figures are measured against.
//! Fanout mode has one publisher send events to `--conns` subscribers, each timed from its
//! stamp to its receipt at every subscriber, and counts deliveries missed.
//!
//! Both report HDR percentiles, throughput and — given `--server-pid` — the server's CPU
//! time per message from /proc/PID/task/*/schedstat, next to the generator's own, so runs
//! on a noisy machine stay comparable. `--hgrm` writes the full percentile distribution and
//! `--svg` a latency-by-percentile plot; `bidir-load plot` draws several runs in one plot.

mod args;
mod bin;
mod churn;
mod fanout;
mod plot;
mod procfs;
mod raw;
mod report;
mod run;

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("plot") {
        return match plot::command(&argv[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bidir-load plot: {e}");
                ExitCode::from(2)
            }
        };
    }
    let options = match args::parse(&argv) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("bidir-load: {e}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    match run::run(&options) {
        Ok(result) => {
            report::print(&options, &result);
            if let Err(e) = report::write_files(&options, &result) {
                eprintln!("bidir-load: {e}");
                return ExitCode::FAILURE;
            }
            if result.failed > 0 || result.errors > 0 || result.missed > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("bidir-load: {e}");
            ExitCode::FAILURE
        }
    }
}
