//! The `bidir-load` binary against an echo server in this process: closed and open loop,
//! connect mode with this process as the server PID, the files it writes, and failures.

use std::process::Command;
use std::time::Duration;

use bidir::tls::ServerTls;
use bidir::{Context, Handler, Message, Request, Server, ServerConfig, ServerHandle};

struct Echo;
impl Handler for Echo {
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        let _ = cx.send(msg);
    }
}

fn server() -> ServerHandle {
    let mut config = ServerConfig::default();
    config.workers = Some(1);
    config.pin_workers = false;
    config.compression = Some(bidir::DeflateConfig::shared());
    Server::builder()
        .bind("127.0.0.1:0")
        .config(config)
        .route("/echo", |_req: &Request<'_>| Ok(Echo))
        .start()
        .unwrap()
}

fn load(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bidir-load")).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The number after `"key":` in a flat JSON object.
fn field(json: &str, key: &str) -> f64 {
    let at = json.find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("{key} in {json}"));
    let rest = &json[at + key.len() + 3..];
    let end = rest.find([',', '}']).unwrap();
    rest[..end].parse().unwrap_or_else(|_| panic!("{key}: {}", &rest[..end]))
}

#[test]
fn closed_and_open_loop_measure_and_write_files() {
    let server = server();
    let url = format!("ws://{}/echo", server.local_addr());
    let pid = std::process::id().to_string();
    let dir = std::env::temp_dir().join(format!("bidir-load-test-{pid}"));
    std::fs::create_dir_all(&dir).unwrap();
    let hgrm = dir.join("run.hgrm");
    let svg = dir.join("run.svg");
    let (ok, stdout, stderr) = load(&[
        "--url",
        &url,
        "--conns",
        "8",
        "--inflight",
        "4",
        "--size",
        "64",
        "--duration",
        "0.5",
        "--warmup",
        "0.2",
        "--server-pid",
        &pid,
        "--json",
        "--quiet",
        "--deflate",
        "shared",
        "--hgrm",
        hgrm.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(field(&stdout, "msgs_per_sec") > 100.0, "{stdout}");
    assert!(field(&stdout, "p50_us") > 0.0 && field(&stdout, "p99_us") >= field(&stdout, "p50_us"));
    assert!(field(&stdout, "server_ns_per_msg") > 0.0, "{stdout}");
    assert_eq!((field(&stdout, "errors"), field(&stdout, "opened")), (0.0, 8.0));
    assert!(stderr.contains("closed loop 8 conns x 4 in flight x 64 B text"), "{stderr}");
    let text = std::fs::read_to_string(&hgrm).unwrap();
    assert!(text.starts_with("       Value     Percentile") && text.contains("#[Max"));
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<path"));

    // Open loop: about the asked rate, binary.
    let (ok, stdout, stderr) = load(&[
        "--url",
        &url,
        "--conns",
        "4",
        "--rate",
        "2000",
        "--binary",
        "--size",
        "32",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--json",
        "--quiet",
    ]);
    assert!(ok, "{stderr}");
    let rate = field(&stdout, "msgs_per_sec");
    assert!((1500.0..2500.0).contains(&rate), "{rate} msg/s for 2000 asked");
    assert!(stderr.contains("send lag"), "{stderr}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn connect_mode_reports_memory_per_connection() {
    let server = server();
    let url = format!("ws://{}/echo", server.local_addr());
    let pid = std::process::id().to_string();
    let (ok, stdout, stderr) = load(&[
        "--url",
        &url,
        "--mode",
        "connect",
        "--conns",
        "200",
        "--server-pid",
        &pid,
        "--json",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(field(&stdout, "opened"), 200.0);
    // This process is the server: its resident memory grew by something per connection.
    assert!(field(&stdout, "server_bytes_per_conn").is_finite(), "{stdout}");
    assert!(stderr.contains("handshakes/s"), "{stderr}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.connections() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.connections(), 0, "the generator closed its connections");
}

#[test]
fn wss_runs_every_mode_with_a_trusted_certificate() {
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert, key) = (generated.cert.pem(), generated.signing_key.serialize_pem());
    let tls = ServerTls::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let mut config = ServerConfig::default();
    config.workers = Some(1);
    config.pin_workers = false;
    let server = Server::builder()
        .bind_tls("127.0.0.1:0", tls)
        .config(config)
        .route("/echo", |_req: &Request<'_>| Ok(Echo))
        .route("/sub", |_req: &Request<'_>| Ok(Sub { subscribe: true }))
        .route("/pub", |_req: &Request<'_>| Ok(Pub))
        .start()
        .unwrap();
    let pem = std::env::temp_dir().join(format!("bidir-load-cli-cert-{}.pem", std::process::id()));
    std::fs::write(&pem, cert).unwrap();
    let pem = pem.to_str().unwrap();
    let url = format!("wss://{}/echo", server.local_addr());
    let tls = ["--url", &url, "--trust", pem, "--json", "--quiet"];
    let timing = ["--duration", "0.4", "--warmup", "0.1"];

    // Echo over TLS, records larger than one read.
    let (ok, stdout, stderr) = load(
        &[&tls[..], &timing[..], &["--conns", "4", "--inflight", "4", "--size", "20000"]].concat(),
    );
    assert!(ok, "{stderr}");
    assert!(field(&stdout, "messages") > 0.0, "{stdout}");
    assert_eq!((field(&stdout, "errors"), field(&stdout, "opened")), (0.0, 4.0), "{stdout}");
    // Churn: every cycle a TLS handshake, timed.
    let churn = ["--mode", "churn", "--conns", "4", "--cycles", "40", "--cycle-messages", "0"];
    let (ok, stdout, stderr) = load(&[&tls[..], &churn[..]].concat());
    assert!(ok, "{stderr}");
    assert_eq!((field(&stdout, "cycles"), field(&stdout, "failed")), (40.0, 0.0), "{stdout}");
    assert!(field(&stdout, "handshake_p50_us") > 0.0, "{stdout}");
    // Connect and fanout.
    let (ok, stdout, stderr) = load(&[&tls[..], &["--mode", "connect", "--conns", "20"]].concat());
    assert!(ok, "{stderr}");
    assert_eq!(field(&stdout, "opened"), 20.0, "{stdout}");
    let fanout = ["--mode", "fanout", "--pubsub", "plain", "--conns", "5"];
    let (ok, stdout, stderr) = load(&[&tls[..], &timing[..], &fanout[..]].concat());
    assert!(ok, "{stderr}");
    assert!(field(&stdout, "events") > 0.0, "{stdout}");
    assert_eq!(field(&stdout, "missed"), 0.0, "{stdout}");

    // Without --trust the self-signed certificate is refused: every connection fails.
    let (ok, _, stderr) = load(&["--url", &url, "--conns", "2", "--quiet"]);
    assert!(!ok && stderr.contains("2 connections failed"), "{stderr}");
    // --trust with a file that holds no certificate, or on a ws:// URL: a usage error.
    let (ok, _, stderr) = load(&["--url", &url, "--trust", "/nonexistent/cert.pem"]);
    assert!(!ok && stderr.contains("--trust /nonexistent/cert.pem"), "{stderr}");
    let plain = format!("ws://{}/echo", server.local_addr());
    let (ok, _, stderr) = load(&["--url", &plain, "--trust", pem]);
    assert!(!ok && stderr.contains("--trust needs a wss:// URL"), "{stderr}");
    std::fs::remove_file(pem).ok();
}

#[test]
fn failures_exit_non_zero_with_the_reason() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (ok, _, stderr) = load(&["--url", &format!("ws://{closed}/"), "--conns", "2", "--quiet"]);
    assert!(!ok);
    assert!(stderr.contains("2 connections failed") && stderr.contains("refused"), "{stderr}");
    let (ok, _, stderr) = load(&["--url", "ws://127.0.0.1:1/", "--size", "4"]);
    assert!(!ok && stderr.contains("--size must be at least 16"), "{stderr}");
    let server = server();
    let url = format!("ws://{}/nowhere", server.local_addr());
    let (ok, _, stderr) = load(&["--url", &url, "--conns", "1", "--quiet"]);
    assert!(!ok && stderr.contains("404"), "{stderr}");
}

#[test]
fn churn_counts_cycles_and_reports_the_servers_usage() {
    let server = server();
    let url = format!("ws://{}/echo", server.local_addr());
    let pid = std::process::id().to_string();
    let (ok, stdout, stderr) = load(&[
        "--url",
        &url,
        "--mode",
        "churn",
        "--conns",
        "20",
        "--cycles",
        "500",
        "--deflate",
        "shared",
        "--server-pid",
        &pid,
        "--json",
    ]);
    assert!(ok, "{stderr}");
    // Exactly the asked cycles, each opened, echoed and closed cleanly.
    assert_eq!((field(&stdout, "cycles"), field(&stdout, "opened")), (500.0, 500.0), "{stdout}");
    assert_eq!((field(&stdout, "errors"), field(&stdout, "failed")), (0.0, 0.0), "{stdout}");
    assert_eq!(field(&stdout, "messages"), 500.0, "one echo per cycle");
    assert!(field(&stdout, "p50_us") > 0.0 && field(&stdout, "cycles_per_sec") > 0.0);
    // Each cycle's handshake is timed, within its cycle; the server's CPU is per cycle.
    let (p50, p99) = (field(&stdout, "handshake_p50_us"), field(&stdout, "handshake_p99_us"));
    assert!(p50 > 0.0 && p99 >= p50 && p50 <= field(&stdout, "p50_us"), "{stdout}");
    assert!(field(&stdout, "server_ns_per_cycle") > 0.0, "{stdout}");
    assert!(stderr.contains("  handshake  p50 "), "{stderr}");
    // This process is the server; other tests' servers share it, so only the shape is sure.
    let (start, peak) = (field(&stdout, "server_fds_start"), field(&stdout, "server_fds_peak"));
    assert!(start >= 3.0 && peak >= start, "{stdout}");
    assert!(field(&stdout, "server_rss_peak") >= field(&stdout, "server_rss_start"));
    assert!(field(&stdout, "server_rss_end") > 0.0 && field(&stdout, "server_fds_end") >= 3.0);
    assert!(stderr.contains("churn 20 conns, 1 x 16 B text per cycle"), "{stderr}");
    assert!(stderr.contains("500 cycles in") && stderr.contains("server RSS start"), "{stderr}");

    // No messages, bounded by time alone.
    let (ok, stdout, stderr) = load(&[
        "--url",
        &url,
        "--mode",
        "churn",
        "--conns",
        "4",
        "--cycle-messages",
        "0",
        "--duration",
        "0.3",
        "--json",
        "--quiet",
    ]);
    assert!(ok, "{stderr}");
    assert!(field(&stdout, "cycles") >= 4.0, "{stdout}");
    assert_eq!((field(&stdout, "messages"), field(&stdout, "errors")), (0.0, 0.0), "{stdout}");
    assert!(stdout.contains(r#""server_rss_start":null"#), "no PID, no usage: {stdout}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.connections() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.connections(), 0, "every cycle's connection is gone");

    // A refused connect is a failed cycle, and the run fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("ws://{closed}/");
    let (ok, stdout, stderr) =
        load(&["--url", &url, "--mode", "churn", "--conns", "2", "--cycles", "6", "--json"]);
    assert!(!ok, "{stdout}");
    assert_eq!((field(&stdout, "failed"), field(&stdout, "cycles")), (6.0, 0.0), "{stdout}");
    assert!(stderr.contains("refused"), "{stderr}");
}

#[test]
fn rpc_mode_times_calls_and_counts_error_answers() {
    let mut config = ServerConfig::default();
    config.workers = Some(1);
    config.pin_workers = false;
    let echo = |_cx: &mut Context<'_>, (item,): (serde_json::Value,)| Ok::<_, String>(item);
    let services = bidir::rpc::Services::new()
        .method("Bench.echo", echo)
        .method("Bench.fail", |_cx, (_,): (serde_json::Value,)| Err::<(), _>("no"));
    let server =
        Server::builder().bind("127.0.0.1:0").config(config).route("/rpc", services.hook());
    let server = server.start().unwrap();
    let url = format!("ws://{}/rpc", server.local_addr());
    let args = ["--url", &url, "--rpc", "bidir", "--conns", "2", "--inflight", "4"];
    let timing = ["--duration", "0.4", "--warmup", "0.1", "--json"];
    let (ok, stdout, stderr) = load(&[&args[..], &timing[..]].concat());
    assert!(ok, "{stderr}");
    assert!(field(&stdout, "msgs_per_sec") > 100.0, "{stdout}");
    assert_eq!(field(&stdout, "errors"), 0.0, "{stdout}");
    assert!(stderr.contains("2 conns x 4 in flight x calls of Bench.echo"), "{stderr}");

    // Error answers are not timed: counted as errors, the run fails.
    let (ok, stdout, _) = load(&[&args[..], &["--method", "Bench.fail"], &timing[..]].concat());
    assert!(!ok);
    assert!(field(&stdout, "errors") > 0.0, "{stdout}");
}

#[test]
fn bin_calls_with_keys_are_answered() {
    let mut config = ServerConfig::default();
    config.workers = Some(1);
    config.pin_workers = false;
    let key = std::env::temp_dir().join(format!("bidir-load-cli-key-{}", std::process::id()));
    std::fs::write(&key, [0x42; 32]).unwrap();
    let psk = bidir::rpc::Psk::new(&[0x42; 32]).unwrap();
    let echo = |_cx: &mut Context<'_>, (item,): (serde_json::Value,)| Ok::<_, String>(item);
    let services = bidir::rpc::Services::new().method("Bench.echo", echo).key(psk);
    let server =
        Server::builder().bind("127.0.0.1:0").config(config).route("/rpc", services.hook());
    let server = server.start().unwrap();
    let url = format!("ws://{}/rpc", server.local_addr());
    let key = key.to_str().unwrap();
    let args = ["--url", &url, "--rpc", "bidir", "--wire", "bin", "--key", key, "--conns", "2"];
    let timing = ["--inflight", "4", "--duration", "0.4", "--warmup", "0.1", "--json"];
    // Both key modes; 1 KiB items are compressed both ways, then sealed.
    for extra in [&["--key-mode", "psk"][..], &["--key-mode", "ecdhe", "--size", "1024"]] {
        let (ok, stdout, stderr) = load(&[&args[..], &timing[..], extra].concat());
        assert!(ok, "{extra:?}: {stderr}");
        assert!(field(&stdout, "messages") > 0.0, "{extra:?}: {stdout}");
        assert_eq!((field(&stdout, "errors"), field(&stdout, "failed")), (0.0, 0.0), "{stdout}");
        assert!(stdout.contains(r#""wire":"bin""#), "{stdout}");
        let mode = extra[1];
        assert!(stderr.contains(&format!("bidir.bin.v1 compressed above 512 B, {mode} key")));
    }

    // Churn: each cycle exchanges keys and closes.
    let churn = ["--mode", "churn", "--cycle-messages", "0", "--cycles", "20", "--json"];
    let (ok, stdout, stderr) = load(&[&args[..], &churn[..]].concat());
    assert!(ok, "{stderr}");
    assert_eq!((field(&stdout, "cycles"), field(&stdout, "failed")), (20.0, 0.0), "{stdout}");

    // Without the key, or over bidir.json.v1: refused in the upgrade.
    let (ok, _, stderr) = load(&["--url", &url, "--rpc", "bidir", "--wire", "bin", "--quiet"]);
    assert!(!ok && stderr.contains("400"), "{stderr}");
    let (ok, _, stderr) = load(&["--url", &url, "--rpc", "bidir", "--quiet"]);
    assert!(!ok && stderr.contains("403"), "{stderr}");
    std::fs::remove_file(key).ok();
}

/// A `/sub` connection: subscribed to `bench` on open if `subscribe`.
struct Sub {
    subscribe: bool,
}
impl Handler for Sub {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        if self.subscribe {
            cx.subscribe("bench");
        }
    }
    fn on_message(&mut self, _cx: &mut Context<'_>, _msg: Message<'_>) {}
}

/// A `/pub` connection: publishes what it gets to `bench`.
struct Pub;
impl Handler for Pub {
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        cx.publish("bench", msg);
    }
}

/// The fanout servers of examples/rpc_echo: `Bench.publish` at /rpc, the engine's pub/sub at
/// /sub and /pub (where subscribers are subscribed only if `subscribe`).
fn pubsub_server(subscribe: bool) -> ServerHandle {
    let mut config = ServerConfig::default();
    config.workers = Some(2);
    config.pin_workers = false;
    let publish = |cx: &mut Context<'_>, (stamp,): (u64,)| {
        bidir::rpc::publish(&cx.server(), "bench", &stamp).map_err(|e| e.to_string())
    };
    let services = bidir::rpc::Services::new().method("Bench.publish", publish);
    Server::builder()
        .bind("127.0.0.1:0")
        .config(config)
        .route("/rpc", services.hook())
        .route("/sub", move |_req: &Request<'_>| Ok(Sub { subscribe }))
        .route("/pub", |_req: &Request<'_>| Ok(Pub))
        .start()
        .unwrap()
}

#[test]
fn fanout_delivers_every_event_to_every_subscriber() {
    let server = pubsub_server(true);
    let addr = server.local_addr();
    let pid = std::process::id().to_string();
    let timing = ["--duration", "0.5", "--warmup", "0.1", "--json", "--server-pid", &pid];
    let rpc_url = format!("ws://{addr}/rpc");
    let plain_url = format!("ws://{addr}/");
    // Closed loop, both dialects, subscribers on two generator workers.
    for dialect in [["--rpc", "bidir"], ["--pubsub", "plain"]] {
        let url = if dialect[0] == "--rpc" { &rpc_url } else { &plain_url };
        let args = ["--url", url, "--mode", "fanout", "--conns", "30", "--threads", "2"];
        let (ok, stdout, stderr) = load(&[&args[..], &dialect[..], &timing[..]].concat());
        assert!(ok, "{dialect:?}: {stderr}");
        let events = field(&stdout, "events");
        assert!(events >= 5.0, "{dialect:?}: {stdout}");
        // Every event sent reached every subscriber once, in order.
        assert_eq!((field(&stdout, "missed"), field(&stdout, "errors")), (0.0, 0.0), "{stdout}");
        assert_eq!(field(&stdout, "opened"), 30.0, "{stdout}");
        // Deliveries are counted by receipt time, events by stamp: off by the edges' events.
        let deliveries = field(&stdout, "messages");
        assert!((deliveries - 30.0 * events).abs() <= 60.0, "{deliveries} for {events}: {stdout}");
        assert!(field(&stdout, "server_ns_per_msg") > 0.0, "{stdout}");
        assert!(field(&stdout, "p50_us") > 0.0, "{stdout}");
        assert!(stderr.contains("fanout closed loop to 30 subscribers"), "{stderr}");
        assert!(stderr.contains("deliveries missed: 0"), "{stderr}");
    }

    // Open loop: about the asked rate of events, each to every subscriber.
    let args = ["--url", &plain_url, "--mode", "fanout", "--pubsub", "plain", "--conns", "10"];
    let (ok, stdout, stderr) = load(&[&args[..], &["--rate", "200"], &timing[..]].concat());
    assert!(ok, "{stderr}");
    let rate = field(&stdout, "events_per_sec");
    assert!((150.0..250.0).contains(&rate), "{rate} events/s for 200 asked: {stdout}");
    let deliveries = field(&stdout, "msgs_per_sec");
    assert!((deliveries - 10.0 * rate).abs() <= 0.2 * deliveries, "{stdout}");
    assert_eq!((field(&stdout, "missed"), field(&stdout, "errors")), (0.0, 0.0), "{stdout}");
    assert!(stderr.contains("send lag"), "{stderr}");
}

#[test]
fn fanout_counts_missed_deliveries_and_fails() {
    // Subscribers that the server never subscribes: the first event reaches no one.
    let server = pubsub_server(false);
    let url = format!("ws://{}/", server.local_addr());
    let args = ["--url", &url, "--mode", "fanout", "--pubsub", "plain", "--conns", "5"];
    let (ok, stdout, stderr) =
        load(&[&args[..], &["--duration", "0.2", "--warmup", "0", "--json"]].concat());
    assert!(!ok, "{stdout}");
    assert_eq!(field(&stdout, "events"), 1.0, "one event, stalled: {stdout}");
    assert_eq!(field(&stdout, "missed"), 5.0, "{stdout}");
    assert!(stderr.contains("deliveries missed: 5"), "{stderr}");

    // The rpc dialect against a server without the publishing method: the calls' error
    // answers are errors.
    let url = format!("ws://{}/rpc", server.local_addr());
    let args = ["--url", &url, "--mode", "fanout", "--rpc", "bidir", "--conns", "2"];
    let (ok, stdout, _) =
        load(&[&args[..], &["--method", "Bench.nothing", "--duration", "0.2", "--json"]].concat());
    assert!(!ok && field(&stdout, "errors") > 0.0, "{stdout}");
}
