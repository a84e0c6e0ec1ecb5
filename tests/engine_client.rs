//! Client connections opened from the engine's workers (`ServerHandle::connect`): many at
//! once, refusals, connect failures and timeouts, deflate, cross-thread sends, shutdown.

mod util;

use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bidir::client::{Connect, ConnectError};
use bidir::{
    CloseCode, CloseInfo, ConnHandle, Context, DeflateConfig, Handler, HttpResponse, Message,
    Request, Server, ServerConfig, ServerHandle,
};
use util::config;

struct Echo;
impl Handler for Echo {
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        cx.send(msg).unwrap();
    }
}

fn echo_server(config: ServerConfig) -> ServerHandle {
    Server::builder()
        .bind("127.0.0.1:0")
        .config(config)
        .route("/echo", |_req: &Request<'_>| Ok(Echo))
        .route("/private", |_req: &Request<'_>| {
            Err::<Echo, _>(
                HttpResponse::unauthorized().header("WWW-Authenticate", "Bearer").body("no"),
            )
        })
        .start()
        .unwrap()
}

fn client_engine(workers: usize) -> ServerHandle {
    Server::builder().config(config(workers)).start().unwrap()
}

#[derive(Debug)]
enum Report {
    Opened(Option<String>),
    Done { echoed: usize, close: CloseCode, clean: bool },
    Failed(ConnectError),
}

/// Sends `count` numbered messages one at a time, checking each echo, then closes.
struct PingPong {
    count: usize,
    echoed: usize,
    payload: String,
    tx: mpsc::Sender<Report>,
}

impl PingPong {
    fn new(count: usize, payload: String, tx: mpsc::Sender<Report>) -> Self {
        Self { count, echoed: 0, payload, tx }
    }
}

impl Handler for PingPong {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let _ = self.tx.send(Report::Opened(cx.protocol().map(str::to_owned)));
        cx.send_text(&self.payload).unwrap();
    }
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        assert_eq!(msg, Message::Text(&self.payload));
        self.echoed += 1;
        if self.echoed == self.count {
            cx.close(CloseCode::NORMAL, "done").unwrap();
        } else {
            cx.send_text(&self.payload).unwrap();
        }
    }
    fn on_close(&mut self, _cx: &mut Context<'_>, close: CloseInfo<'_>) {
        let _ = self.tx.send(Report::Done {
            echoed: self.echoed,
            close: close.code,
            clean: close.clean,
        });
    }
    fn on_connect_failed(&mut self, error: ConnectError) {
        let _ = self.tx.send(Report::Failed(error));
    }
}

fn next(rx: &mpsc::Receiver<Report>) -> Report {
    rx.recv_timeout(Duration::from_secs(10)).expect("a report within 10 s")
}

#[test]
fn many_client_connections_echo_and_close_cleanly() {
    let server = echo_server(config(1));
    let clients = client_engine(2);
    let url = format!("ws://{}/echo", server.local_addr());
    let (tx, rx) = mpsc::channel();
    const CONNS: usize = 200;
    for i in 0..CONNS {
        let handler = PingPong::new(20, format!("message from {i}"), tx.clone());
        clients.connect(&Connect::new(&url).unwrap(), handler).unwrap();
    }
    let (mut opened, mut done) = (0, 0);
    while done < CONNS {
        match next(&rx) {
            Report::Opened(protocol) => {
                assert_eq!(protocol, None);
                opened += 1;
            }
            Report::Done { echoed, close, clean } => {
                assert_eq!((echoed, close, clean), (20, CloseCode::NORMAL, true));
                done += 1;
            }
            Report::Failed(e) => panic!("{e}"),
        }
    }
    assert_eq!(opened, CONNS);
    let stats = clients.stats();
    assert_eq!(stats.counters.connected, CONNS as u64);
    assert_eq!(stats.counters.connect_failed, 0);
    assert_eq!(stats.counters.messages_out, 20 * CONNS as u64);
    assert_eq!(stats.counters.messages_in, 20 * CONNS as u64);
    clients.shutdown(Duration::from_secs(1));
}

#[test]
fn refusals_connect_errors_and_timeouts_reach_on_connect_failed() {
    let server = echo_server(config(1));
    let clients = client_engine(1);
    let (tx, rx) = mpsc::channel();
    let handler = || PingPong::new(1, "x".into(), tx.clone());

    let url = format!("ws://{}/private", server.local_addr());
    clients.connect(&Connect::new(&url).unwrap(), handler()).unwrap();
    match next(&rx) {
        Report::Failed(ConnectError::Refused(refusal)) => {
            assert_eq!(refusal.status, 401);
            assert_eq!(refusal.header("WWW-Authenticate"), Some("Bearer"));
            assert_eq!(refusal.body, b"no");
        }
        other => panic!("{other:?}"),
    }

    let closed_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    clients.connect(&Connect::new(&format!("ws://{closed_port}/")).unwrap(), handler()).unwrap();
    match next(&rx) {
        Report::Failed(ConnectError::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        other => panic!("{other:?}"),
    }

    // A listener that accepts (the kernel does) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let options = Connect::new(&format!("ws://{}/", silent.local_addr().unwrap()))
        .unwrap()
        .handshake_timeout(Duration::from_millis(200));
    let started = Instant::now();
    clients.connect(&options, handler()).unwrap();
    match next(&rx) {
        Report::Failed(ConnectError::Timeout) => {}
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));

    // A handler that refuses the server's answer: the connection never opens.
    struct Picky(PingPong);
    impl Handler for Picky {
        fn on_response(&mut self, headers: &[(String, String)]) -> Result<(), String> {
            match headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("X-Proof")) {
                true => Ok(()),
                false => Err("no proof".into()),
            }
        }
        fn on_connect_failed(&mut self, error: ConnectError) {
            self.0.on_connect_failed(error);
        }
    }
    let url = format!("ws://{}/echo", server.local_addr());
    clients.connect(&Connect::new(&url).unwrap(), Picky(handler())).unwrap();
    match next(&rx) {
        Report::Failed(ConnectError::Rejected(reason)) => assert_eq!(reason, "no proof"),
        other => panic!("{other:?}"),
    }

    // Errors found before queueing are returned directly.
    let injected = Connect::new("ws://127.0.0.1:1/").unwrap().header("X", "a\r\nb: c");
    assert!(matches!(clients.connect(&injected, handler()), Err(ConnectError::InvalidRequest)));

    let stats = clients.stats();
    assert_eq!((stats.counters.connect_failed, stats.counters.open), (4, 0));
    clients.shutdown(Duration::from_secs(1));
    assert!(matches!(
        clients.connect(&Connect::new("ws://127.0.0.1:1/").unwrap(), handler()),
        Err(ConnectError::ShuttingDown)
    ));
    drop(silent);
}

#[test]
fn deflate_and_subprotocols_from_the_engine() {
    let mut server_config = config(1);
    server_config.compression = Some(DeflateConfig::shared());
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(server_config)
        .route("/echo", |req: &Request<'_>| {
            let accept = bidir::Accept::new(Echo);
            Ok(match req.protocols().find(|p| *p == "json") {
                Some(p) => accept.protocol(p),
                None => accept,
            })
        })
        .start()
        .unwrap();
    let clients = client_engine(1);
    let (tx, rx) = mpsc::channel();
    let url = format!("ws://{}/echo", server.local_addr());
    let json = r#"{"id":1,"items":["alpha","beta","gamma"],"ok":true}"#.repeat(100);
    for offer in
        [DeflateConfig::shared(), DeflateConfig::dedicated(10), DeflateConfig::dedicated(15)]
    {
        let options = Connect::new(&url).unwrap().protocol("json").deflate(offer);
        clients.connect(&options, PingPong::new(10, json.clone(), tx.clone())).unwrap();
    }
    let mut done = 0;
    while done < 3 {
        match next(&rx) {
            Report::Opened(protocol) => assert_eq!(protocol.as_deref(), Some("json")),
            Report::Done { echoed, clean, .. } => {
                assert_eq!((echoed, clean), (10, true));
                done += 1;
            }
            Report::Failed(e) => panic!("{e}"),
        }
    }
    // Compressed: far fewer bytes went out than 30 messages of plain JSON.
    let stats = clients.stats();
    assert!(
        stats.counters.bytes_out < (30 * json.len() / 4) as u64,
        "{} bytes out for {} bytes of messages",
        stats.counters.bytes_out,
        30 * json.len()
    );
}

/// Subscribes its client connection to "feed" and counts the echoes of what is published.
struct FeedReader {
    echoes: usize,
    tx: mpsc::Sender<usize>,
}
impl Handler for FeedReader {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.subscribe("feed");
        self.tx.send(0).unwrap();
    }
    fn on_message(&mut self, _cx: &mut Context<'_>, _msg: Message<'_>) {
        self.echoes += 1;
        self.tx.send(self.echoes).unwrap();
    }
}

/// A client connection that shares its worker's codec (no context takeover) gets publishes
/// compressed: the codec is lent for the publish as for any send (it was not, and they went
/// out plain).
#[test]
fn publishes_to_client_subscribers_are_compressed() {
    let mut server_config = config(1);
    server_config.compression = Some(DeflateConfig::shared());
    let server = echo_server(server_config);
    let clients = client_engine(1);
    let (tx, rx) = mpsc::channel();
    let url = format!("ws://{}/echo", server.local_addr());
    let options = Connect::new(&url).unwrap().deflate(DeflateConfig::shared());
    clients.connect(&options, FeedReader { echoes: 0, tx }).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(0));
    let json = r#"{"id":1,"items":["alpha","beta","gamma"],"ok":true}"#.repeat(100);
    for _ in 0..10 {
        assert_eq!(clients.publish("feed", Message::Text(&json)), 1);
    }
    while rx.recv_timeout(Duration::from_secs(5)).unwrap() < 10 {}
    let sent = clients.stats().counters.bytes_out;
    assert!(sent < (10 * json.len() / 4) as u64, "{sent} bytes out for {} bytes", 10 * json.len());
}

/// Hands its connection handle out, echoes nothing, reports what it receives.
struct Remote {
    handle_tx: mpsc::Sender<ConnHandle>,
    got: mpsc::Sender<String>,
}
impl Handler for Remote {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let _ = self.handle_tx.send(cx.handle());
    }
    fn on_message(&mut self, _cx: &mut Context<'_>, msg: Message<'_>) {
        if let Message::Text(t) = msg {
            let _ = self.got.send(t.to_owned());
        }
    }
    fn on_close(&mut self, _cx: &mut Context<'_>, close: CloseInfo<'_>) {
        let _ = self.got.send(format!("closed {} {}", close.code, close.clean));
    }
}

#[test]
fn cross_thread_sends_and_shutdown_close_client_connections() {
    let server = echo_server(config(1));
    let clients = client_engine(1);
    let (handle_tx, handle_rx) = mpsc::channel();
    let (got_tx, got_rx) = mpsc::channel();
    let url = format!("ws://{}/echo", server.local_addr());
    clients.connect(&Connect::new(&url).unwrap(), Remote { handle_tx, got: got_tx }).unwrap();
    let handle = handle_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let handle = handle.clone();
            thread::spawn(move || {
                for i in 0..100 {
                    handle.send_text(&format!("{t}:{i}")).unwrap();
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let mut last = [None::<usize>; 4];
    for _ in 0..400 {
        let msg = got_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let (t, i) = msg.split_once(':').unwrap();
        let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
        assert_eq!(last[t].map_or(0, |l| l + 1), i, "per-thread order kept");
        last[t] = Some(i);
    }
    // The client engine's shutdown tells the server 1001 and completes the handshake.
    clients.shutdown(Duration::from_secs(2));
    assert_eq!(got_rx.recv_timeout(Duration::from_secs(5)).unwrap(), "closed 1001 true");
    assert!(handle.is_closed());
}
