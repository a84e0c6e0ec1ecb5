//! The Autobahn|Testsuite client dance against a `wstest -m fuzzingserver`: ask for the case
//! count, run every case (echo each message back, same type, until the server closes), then
//! ask the server to write its reports.
//!
//! ```text
//! autobahn_client --url ws://127.0.0.1:9001 [--agent bidir] [--mode engine|blocking]
//!                 [--deflate off|shared|dedicated:BITS] [--cases FIRST..=LAST]
//!                 [--trust CERT.pem]
//! ```
//!
//! A `wss://` URL runs every case over TLS; `--trust` adds the fuzzing server's (self-signed)
//! certificate to the roots the client trusts.
//!
//! `engine` (the default) runs each case on a connection opened from the engine's workers
//! (`ServerHandle::connect`, the same `Handler` API as the server); `blocking` uses the blocking
//! `WebSocket`. Cases run one after another, as the fuzzing server expects. Limits are lifted
//! as the performance cases need: 16 MiB messages, 131072 frames per message.

use std::sync::mpsc;
use std::time::Duration;

use bidir::client::{Connect, ConnectError, Incoming};
use bidir::protocol::Config;
use bidir::tls::ClientTls;
use bidir::{CloseCode, CloseInfo, Context, DeflateConfig, Handler, Message, Server, ServerConfig};

fn main() {
    let mut url = std::env::var("AUTOBAHN_URL").unwrap_or_else(|_| "ws://127.0.0.1:9001".into());
    let mut agent = std::env::var("AUTOBAHN_AGENT").unwrap_or_else(|_| "bidir".into());
    let mut blocking = false;
    let mut deflate = Some(DeflateConfig::shared());
    let mut range: Option<(usize, usize)> = None;
    let mut tls = ClientTls::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--url" => url = value(),
            "--agent" => agent = value(),
            "--mode" => {
                blocking = match value().as_str() {
                    "engine" => false,
                    "blocking" => true,
                    _ => usage("--mode takes engine or blocking"),
                }
            }
            "--deflate" => {
                deflate = match value().as_str() {
                    "off" => None,
                    "shared" => Some(DeflateConfig::shared()),
                    other => match other.strip_prefix("dedicated:").and_then(|b| b.parse().ok()) {
                        Some(bits) => Some(DeflateConfig::dedicated(bits)),
                        None => usage("--deflate takes off, shared or dedicated:BITS"),
                    },
                }
            }
            "--cases" => {
                let v = value();
                let parsed =
                    v.split_once("..=").and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
                range = Some(parsed.unwrap_or_else(|| usage("--cases takes FIRST..=LAST")));
            }
            "--trust" => {
                tls = ClientTls::trusting_pem_file(value())
                    .unwrap_or_else(|e| usage(&format!("--trust: {e}")));
            }
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let url = url.trim_end_matches('/').to_owned();

    let connect = |url: String| Connect::new(&url).expect("a valid URL").tls(tls.clone());
    let count = case_count(&connect(format!("{url}/getCaseCount")));
    let (first, last) = range.unwrap_or((1, count));
    eprintln!(
        "autobahn_client: cases {first}..={last} of {count}, {} mode",
        if blocking { "blocking" } else { "engine" }
    );
    let options = |case: usize| {
        let mut config = Config::default();
        config.max_message_size = 16 << 20;
        config.max_frame_size = 16 << 20;
        config.max_fragments = 131_072;
        config.ping_interval = None;
        let connect = connect(format!("{url}/runCase?case={case}&agent={agent}")).config(config);
        match &deflate {
            Some(d) => connect.deflate(d.clone()),
            None => connect,
        }
    };
    if blocking {
        for case in first..=last {
            run_blocking(&options(case));
        }
    } else {
        let mut config = ServerConfig::default();
        config.workers = Some(1);
        config.pin_workers = false;
        config.max_backpressure = 64 << 20; // 9.x echoes 16 MiB messages
        let engine = Server::builder().config(config).start().expect("the engine starts");
        let (done_tx, done_rx) = mpsc::channel();
        for case in first..=last {
            let echo = EchoCase { done: done_tx.clone() };
            if let Err(e) = engine.connect(&options(case), echo) {
                eprintln!("case {case}: {e}");
                continue;
            }
            if done_rx.recv_timeout(Duration::from_secs(120)).is_err() {
                eprintln!("case {case}: no end after 120 s");
            }
        }
        engine.shutdown(Duration::from_secs(1));
    }
    let mut ws = connect(format!("{url}/updateReports?agent={agent}"))
        .connect()
        .expect("updateReports connects");
    let _ = ws.close(CloseCode::NORMAL, "");
}

fn case_count(options: &Connect) -> usize {
    let mut ws = options.connect().expect("getCaseCount connects");
    let count = match ws.recv().expect("the case count") {
        Incoming::Text(text) => text.trim().parse().expect("a number"),
        other => panic!("unexpected {other:?}"),
    };
    let _ = ws.close(CloseCode::NORMAL, "");
    count
}

fn run_blocking(options: &Connect) {
    let mut ws = match options.connect() {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("{}: {e}", options.url().target);
            return;
        }
    };
    loop {
        let sent = match ws.recv() {
            Ok(Incoming::Text(text)) => ws.send(Message::Text(&text)),
            Ok(Incoming::Binary(bytes)) => ws.send(Message::Binary(&bytes)),
            Ok(Incoming::Close(_)) | Err(_) => return,
            Ok(_) => Ok(()),
        };
        if sent.is_err() {
            // The connection failed or closed; read what is left (the close) and stop.
            while ws.recv().is_ok() {}
            return;
        }
    }
}

/// Echoes every message of one case; tells the main thread when the case is over.
struct EchoCase {
    done: mpsc::Sender<()>,
}

impl Handler for EchoCase {
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        let _ = cx.send(msg);
    }
    fn on_close(&mut self, _cx: &mut Context<'_>, _close: CloseInfo<'_>) {
        let _ = self.done.send(());
    }
    fn on_connect_failed(&mut self, error: ConnectError) {
        eprintln!("connect failed: {error}");
        let _ = self.done.send(());
    }
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("autobahn_client: {problem}");
    }
    eprintln!(
        "usage: autobahn_client [--url ws://HOST:PORT] [--agent NAME] [--mode engine|blocking]\n\
         \x20                      [--deflate off|shared|dedicated:BITS] [--cases FIRST..=LAST]\n\
         \x20                      [--trust CERT.pem]"
    );
    std::process::exit(2);
}
