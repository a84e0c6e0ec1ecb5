//! The engine on the in-memory test bed: partial reads, short writes and backpressure,
//! timers, heartbeats, handshake, close and linger timeouts, shutdown, cross-thread posts and
//! per-peer rate windows, deterministically in virtual time. What needs a real socket stays in
//! the loopback tests (engine.rs and the others).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use bidir::client::Incoming;
use bidir::testbed::{Peer, TestBed};
use bidir::{
    CloseCode, CloseInfo, ConnHandle, Context, Handler, Message, Request, SendError, Server,
    ServerBuilder, ServerConfig, TimerId,
};

const MS: Duration = Duration::from_millis(1);

/// What handlers saw, in order, over every connection.
type Log = Arc<Mutex<Vec<String>>>;

fn lines(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

fn closes(log: &Log) -> Vec<String> {
    lines(log).into_iter().filter(|l| l.starts_with("close")).collect()
}

/// Echoes; logs opens and closes; "go N" sends N messages "m0".."mN-1" and logs how many the
/// queue took; "bye" closes with 1000; logs `on_drain`.
struct Probe {
    log: Log,
}

impl Handler for Probe {
    fn on_open(&mut self, _cx: &mut Context<'_>) {
        self.log.lock().unwrap().push("open".into());
    }
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        match msg {
            Message::Text(t) if t.starts_with("go ") => {
                let n: usize = t[3..].parse().unwrap();
                let sent = (0..n).take_while(|i| cx.send_text(&format!("m{i}")).is_ok()).count();
                self.log.lock().unwrap().push(format!("sent {sent}"));
            }
            Message::Text("bye") => cx.close(CloseCode::NORMAL, "bye").unwrap(),
            msg => cx.send(msg).unwrap(),
        }
    }
    fn on_drain(&mut self, cx: &mut Context<'_>) {
        self.log.lock().unwrap().push("drain".into());
        let _ = cx.send_text("drained");
    }
    fn on_close(&mut self, _cx: &mut Context<'_>, close: CloseInfo<'_>) {
        let line = format!("close {} {} {}", close.code.0, close.reason, close.clean);
        self.log.lock().unwrap().push(line);
    }
}

fn probe(config: ServerConfig) -> (ServerBuilder, Log) {
    let log = Log::default();
    let hook_log = Arc::clone(&log);
    let builder = Server::builder()
        .config(config)
        .route("/p", move |_req: &Request<'_>| Ok(Probe { log: Arc::clone(&hook_log) }));
    (builder, log)
}

fn bed(config: ServerConfig) -> (TestBed, Log) {
    let (builder, log) = probe(config);
    (TestBed::new(builder).unwrap(), log)
}

fn text(s: &str) -> Incoming {
    Incoming::Text(s.into())
}

fn close_frame(code: CloseCode, reason: &str, initiated_locally: bool) -> Incoming {
    let close =
        CloseInfo { code, reason: reason.to_owned().into(), clean: true, initiated_locally };
    Incoming::Close(close)
}

const UPGRADE: &[u8] =
    b"GET /p HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[test]
fn echo_and_a_clean_close_from_the_peer() {
    let (mut bed, log) = bed(ServerConfig::default());
    let peer = bed.connect("/p").unwrap();
    bed.send(peer, Message::Text("hello")).unwrap();
    bed.send(peer, Message::Binary(&[1, 2, 3])).unwrap();
    assert_eq!(bed.recv(peer), [text("hello"), Incoming::Binary(vec![1, 2, 3])]);
    bed.close(peer, CloseCode::NORMAL, "done").unwrap();
    // The server's reply echoes the code (RFC 6455 §5.5.1), without a reason.
    assert_eq!(bed.recv(peer), [close_frame(CloseCode::NORMAL, "", true)]);
    assert!(bed.is_closed(peer), "the server closes TCP once its reply is out");
    assert_eq!(lines(&log), ["open", "close 1000 done true"]);
    let c = bed.stats().counters;
    assert_eq!((c.accepted, c.upgraded, c.open, c.closed), (1, 1, 0, 1));
    assert_eq!((c.messages_in, c.messages_out), (2, 2));
    assert_eq!(bed.now(), Duration::ZERO, "no time passed");
}

#[test]
fn a_refused_upgrade_is_a_typed_error_and_unknown_paths_get_404() {
    let builder = Server::builder().route("/only", |req: &Request<'_>| {
        if req.query() == Some("token=1") {
            Ok(Probe { log: Log::default() })
        } else {
            Err(bidir::HttpResponse::unauthorized().body("login"))
        }
    });
    let mut bed = TestBed::new(builder).unwrap();
    match bed.connect("/only") {
        Err(bidir::client::ConnectError::Refused(r)) => {
            assert_eq!((r.status, r.body.as_slice()), (401, &b"login"[..]));
        }
        other => panic!("{other:?}"),
    }
    assert!(bed.connect("/only?token=1").is_ok());
    match bed.connect("/elsewhere") {
        Err(bidir::client::ConnectError::Refused(r)) => assert_eq!(r.status, 404),
        other => panic!("{other:?}"),
    }
}

/// Every byte in its own read — the upgrade request, frames, a fragmented message, a ping —
/// gives what one read of everything gives.
#[test]
fn partial_reads_byte_by_byte_give_what_whole_reads_give() {
    let run = |chunk: usize| {
        let (mut bed, log) = bed(ServerConfig::default());
        bed.set_chunk_size(chunk);
        let peer = bed.connect("/p").unwrap();
        bed.send(peer, Message::Text("héllo wörld")).unwrap();
        bed.ping(peer, b"are you there").unwrap();
        bed.send(peer, Message::Binary(&[7; 300])).unwrap();
        // A fragmented text message, written raw (masked with a zero key): "ab" + "cd".
        bed.write(peer, &[0x01, 0x82, 0, 0, 0, 0, b'a', b'b', 0x80, 0x82, 0, 0, 0, 0, b'c', b'd']);
        let got = bed.recv(peer);
        let stats = bed.stats().counters;
        (got, lines(&log), stats.bytes_in, stats.syscalls.reads)
    };
    let (whole, log_whole, bytes, reads_whole) = run(1 << 16);
    let (split, log_split, bytes_split, reads_split) = run(1);
    assert_eq!(whole, split);
    assert_eq!(
        whole,
        [
            text("héllo wörld"),
            Incoming::Pong(b"are you there".to_vec()),
            Incoming::Binary(vec![7; 300]),
            text("abcd"),
        ]
    );
    assert_eq!(log_whole, log_split);
    assert_eq!(bytes, bytes_split);
    assert_eq!(reads_split, bytes, "one read per byte");
    assert!(reads_whole < 10, "{reads_whole} reads");
}

/// A socket that takes 1000 bytes: the queue fills to the backpressure limit, sends past it
/// are refused, and once the peer drains, everything queued arrives in order and `on_drain`
/// runs once.
#[test]
fn short_writes_and_backpressure_drain_in_order_with_on_drain() {
    let mut config = ServerConfig::default();
    config.max_backpressure = 4096;
    config.drain_threshold = 1024;
    let (mut bed, log) = bed(config);
    let peer = bed.connect("/p").unwrap();
    bed.set_write_budget(peer, Some(1000));
    bed.set_reading(peer, false);
    bed.send(peer, Message::Text("go 10000")).unwrap();
    bed.run_until_idle();
    let sent: usize = lines(&log)[1].strip_prefix("sent ").unwrap().parse().unwrap();
    assert!((300..10_000).contains(&sent), "{sent} admitted under a 4 KiB limit");
    let first = bed.read(peer);
    assert_eq!(first.len(), 1000, "the first write was cut at the budget");
    assert!(!lines(&log).contains(&"drain".to_string()));
    let dropped = bed.stats().counters.dropped_sends;
    assert_eq!(dropped, 1, "the handler stopped at the first refusal");
    // The socket drains: the rest goes out, then on_drain.
    bed.set_write_budget(peer, None);
    let mut bytes = first;
    bytes.extend(bed.read(peer));
    assert_eq!(lines(&log)[2], "drain");
    // Decode what the peer read raw: frames of "m0".."m{sent-1}" then "drained".
    let mut at = 0;
    let mut payloads = Vec::new();
    while at < bytes.len() {
        assert_eq!(bytes[at], 0x81, "unfragmented text");
        let len = usize::from(bytes[at + 1]);
        payloads.push(String::from_utf8(bytes[at + 2..at + 2 + len].to_vec()).unwrap());
        at += 2 + len;
    }
    let mut expected: Vec<String> = (0..sent).map(|i| format!("m{i}")).collect();
    expected.push("drained".into());
    assert_eq!(payloads, expected);
    assert!(bed.stats().counters.syscalls.writes >= 2, "a short write and the rest");
}

/// Sends "tick N" from its timer three times, 30 ms apart (re-armed as each fires); "stop"
/// cancels the armed one.
struct Ticker {
    ticks: u32,
    opened: Option<std::time::Instant>,
    timer: Option<TimerId>,
    log: Log,
}

impl Handler for Ticker {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        self.opened = Some(cx.now());
        self.timer = Some(cx.set_timer(30 * MS));
    }
    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        assert_eq!(self.timer.take(), Some(timer));
        self.ticks += 1;
        let at = cx.now() - self.opened.unwrap();
        self.log.lock().unwrap().push(format!("tick {} at {at:?}", self.ticks));
        cx.send_text(&format!("tick {}", self.ticks)).unwrap();
        if self.ticks < 3 {
            self.timer = Some(cx.set_timer(30 * MS));
        }
    }
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        if msg == Message::Text("stop") {
            assert!(cx.cancel_timer(self.timer.take().unwrap()));
            cx.send_text("stopped").unwrap();
        }
    }
}

/// Moved from engine.rs (`handler_timers_fire_in_order_and_cancel`), which slept through
/// them: here the ticks land on their deadlines exactly.
#[test]
fn handler_timers_fire_on_time_in_virtual_time_and_cancel() {
    let mut config = ServerConfig::default();
    config.timer_tick = 5 * MS;
    let log = Log::default();
    let hook_log = Arc::clone(&log);
    let builder = Server::builder().config(config).route("/t", move |_req: &Request<'_>| {
        Ok(Ticker { ticks: 0, opened: None, timer: None, log: Arc::clone(&hook_log) })
    });
    let mut bed = TestBed::new(builder).unwrap();
    let peer = bed.connect("/t").unwrap();
    bed.advance(29 * MS);
    assert!(bed.recv(peer).is_empty(), "nothing before 30 ms");
    bed.advance(MS);
    assert_eq!(bed.recv(peer), [text("tick 1")]);
    bed.advance(Duration::from_secs(10));
    assert_eq!(bed.recv(peer), [text("tick 2"), text("tick 3")]);
    assert_eq!(lines(&log), ["tick 1 at 30ms", "tick 2 at 60ms", "tick 3 at 90ms"]);
    // A second connection cancels before its first tick: nothing but the answer arrives.
    let other = bed.connect("/t").unwrap();
    bed.send(other, Message::Text("stop")).unwrap();
    assert_eq!(bed.recv(other), [text("stopped")]);
    bed.advance(Duration::from_secs(1));
    assert!(bed.recv(other).is_empty());
}

/// Moved from engine.rs (`heartbeat_closes_a_silent_peer`): a peer that answers pings
/// stays; one that never reads is failed once the pong is overdue, not before.
#[test]
fn heartbeat_closes_a_silent_peer_at_its_deadline() {
    let mut config = ServerConfig::default();
    config.protocol.ping_interval = Some(200 * MS);
    config.protocol.pong_timeout = 300 * MS;
    config.timer_tick = 20 * MS;
    let (mut bed, log) = bed(config);
    let alive = bed.connect("/p").unwrap();
    let silent = bed.connect("/p").unwrap();
    bed.set_reading(silent, false);
    bed.advance(480 * MS);
    assert!(!bed.is_closed(silent), "within interval + timeout");
    bed.advance(60 * MS);
    assert!(bed.is_closed(silent));
    assert_eq!(closes(&log), ["close 1006 no answer to a heartbeat ping false"]);
    bed.advance(Duration::from_secs(10));
    assert!(!bed.is_closed(alive));
    let pings = bed.recv(alive).iter().filter(|m| matches!(m, Incoming::Ping(_))).count();
    assert!(pings >= 20, "{pings} heartbeats answered in 10.5 s");
    assert_eq!(closes(&log).len(), 1);
}

/// Moved from engine.rs (`handshake_timeout_drops_a_slowloris_client`): a request trickling
/// in a byte every 20 ms is dropped at the handshake timeout, without an answer.
#[test]
fn handshake_timeout_drops_a_slowloris_client_on_time() {
    let mut config = ServerConfig::default();
    config.handshake_timeout = 300 * MS;
    config.timer_tick = 20 * MS;
    let (mut bed, _log) = bed(config);
    let slow = bed.open().unwrap();
    let mut sent = 0;
    while bed.write(slow, &UPGRADE[sent..=sent]) {
        sent += 1;
        bed.advance(20 * MS);
    }
    assert!(bed.is_closed(slow));
    assert!(bed.read(slow).is_empty(), "dropped without an answer");
    assert_eq!(sent, 15, "closed at 300 ms, after 15 bytes 20 ms apart");
    let c = bed.stats().counters;
    assert_eq!((c.accepted, c.upgraded, c.closed), (1, 0, 1));
}

/// A peer that never answers the server's close frame is dropped at the close timeout.
#[test]
fn close_timeout_drops_a_peer_that_never_answers_the_close() {
    let mut config = ServerConfig::default();
    config.protocol.close_timeout = 2 * Duration::from_secs(1);
    config.timer_tick = 10 * MS;
    let (mut bed, log) = bed(config);
    let peer = bed.connect("/p").unwrap();
    bed.send(peer, Message::Text("bye")).unwrap();
    bed.set_reading(peer, false);
    bed.run_until_idle();
    assert_eq!(closes(&log), Vec::<String>::new(), "closing, not closed");
    bed.advance(1990 * MS);
    assert!(!bed.is_closed(peer));
    bed.advance(20 * MS);
    assert!(bed.is_closed(peer));
    assert_eq!(closes(&log), ["close 1006 no answer to our close frame false"]);
    // The peer still reads the close frame that went out before.
    assert_eq!(bed.recv(peer), [close_frame(CloseCode::NORMAL, "bye", false)]);
}

/// An HTTP answer the peer does not take lingers for `linger`, then the socket closes.
#[test]
fn a_refusal_lingers_until_written_or_the_linger_runs_out() {
    let mut config = ServerConfig::default();
    config.linger = Duration::from_secs(5);
    config.timer_tick = 10 * MS;
    let (mut bed, _log) = bed(config);
    let peer = bed.open().unwrap();
    bed.set_write_budget(peer, Some(10));
    bed.write(peer, b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n");
    bed.run_until_idle();
    assert_eq!(bed.read(peer), b"HTTP/1.1 4", "ten bytes of the answer");
    bed.advance(4990 * MS);
    assert!(!bed.is_closed(peer), "lingering");
    bed.advance(20 * MS);
    assert!(bed.is_closed(peer), "the linger ran out");
    // Another peer that takes its answer is closed at once.
    let quick = bed.open().unwrap();
    bed.write(quick, b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(bed.read(quick).starts_with(b"HTTP/1.1 404"));
    assert!(bed.is_closed(quick));
}

/// Frames queued before a shutdown go out before its close frame, even through a socket that
/// takes them a little at a time; the worker stops once the peer answered.
#[test]
fn shutdown_flushes_what_was_queued_before_the_close() {
    let mut config = ServerConfig::default();
    config.max_backpressure = 1 << 20;
    let (mut bed, log) = bed(config);
    let peers: Vec<Peer> = (0..3).map(|_| bed.connect("/p").unwrap()).collect();
    for &peer in &peers {
        bed.set_write_budget(peer, Some(100));
        bed.set_reading(peer, false);
        bed.send(peer, Message::Text("go 2000")).unwrap();
    }
    bed.begin_shutdown(Duration::from_secs(30));
    assert!(!bed.is_stopped());
    assert!(bed.open().is_err(), "no more accepts");
    for &peer in &peers {
        bed.set_write_budget(peer, None);
        bed.set_reading(peer, true);
    }
    bed.advance(MS);
    assert!(bed.is_stopped(), "every peer answered the close");
    for &peer in &peers {
        let got = bed.recv(peer);
        assert_eq!(got.len(), 2001);
        for (i, m) in got[..2000].iter().enumerate() {
            assert_eq!(*m, text(&format!("m{i}")));
        }
        assert_eq!(got[2000], close_frame(CloseCode::GOING_AWAY, "server shutting down", false));
        assert!(bed.is_closed(peer));
    }
    // on_close reports the peer's reply: 1001 echoed.
    assert_eq!(closes(&log), vec!["close 1001  true"; 3]);
}

/// Moved from engine.rs (`shutdown_deadline_drops_peers_that_never_answer`): a peer that
/// never reads holds the shutdown until its grace has passed, not longer.
#[test]
fn shutdown_deadline_drops_peers_that_never_answer() {
    let (mut bed, log) = bed(ServerConfig::default());
    let mute = bed.connect("/p").unwrap();
    let polite = bed.connect("/p").unwrap();
    bed.set_reading(mute, false);
    bed.shutdown(300 * MS);
    assert!(bed.is_stopped());
    let now = bed.now();
    assert!(now >= 300 * MS && now <= 400 * MS, "stopped at {now:?}");
    assert!(bed.is_closed(mute) && bed.is_closed(polite));
    let mut closes = closes(&log);
    closes.sort();
    assert_eq!(closes, ["close 1001  true", "close 1006 shutdown deadline passed false"]);
}

/// Gives its handle out on open.
struct Handed(mpsc::Sender<ConnHandle>);
impl Handler for Handed {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        self.0.send(cx.handle()).unwrap();
        cx.subscribe("news");
    }
}

/// Sends from other threads (a handle's, the server's publish) wake the in-memory worker and
/// are applied in order when it next runs.
#[test]
fn posts_from_other_threads_are_applied_in_order() {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let builder = Server::builder()
        .route("/h", move |_req: &Request<'_>| Ok(Handed(tx.lock().unwrap().clone())));
    let mut bed = TestBed::new(builder).unwrap();
    let peer = bed.connect("/h").unwrap();
    let handle = rx.try_recv().unwrap();
    let server = bed.handle();
    std::thread::spawn(move || {
        for i in 0..100 {
            handle.send_text(&format!("{i}")).unwrap();
        }
        server.publish("news", Message::Text("extra"));
        handle.close(CloseCode::NORMAL, "from afar").unwrap();
    })
    .join()
    .unwrap();
    let got = bed.recv(peer);
    let mut expected: Vec<Incoming> = (0..100).map(|i| text(&i.to_string())).collect();
    expected.push(text("extra"));
    expected.push(close_frame(CloseCode::NORMAL, "from afar", false));
    assert_eq!(got, expected);
    assert_eq!(bed.handle().connections(), 0);
}

/// Every way a connection ends reports `on_close` exactly once.
#[test]
fn every_way_a_connection_ends_reports_on_close_once() {
    let mut config = ServerConfig::default();
    config.protocol.ping_interval = Some(Duration::from_secs(1));
    config.protocol.pong_timeout = Duration::from_secs(1);
    let (mut bed, log) = bed(config);
    let by_peer = bed.connect("/p").unwrap();
    let by_server = bed.connect("/p").unwrap();
    let fin = bed.connect("/p").unwrap();
    let reset = bed.connect("/p").unwrap();
    let garbage = bed.connect("/p").unwrap();
    let silent = bed.connect("/p").unwrap();
    let at_shutdown = bed.connect("/p").unwrap();
    bed.close(by_peer, CloseCode::NORMAL, "").unwrap();
    bed.send(by_server, Message::Text("bye")).unwrap();
    bed.shutdown_write(fin);
    bed.reset(reset);
    bed.write(garbage, &[0x8f, 0x80, 0, 0, 0, 0]); // a reserved opcode
    bed.set_reading(silent, false);
    bed.advance(Duration::from_secs(3));
    bed.shutdown(Duration::from_secs(1));
    assert!(bed.is_stopped());
    let mut closes = closes(&log);
    closes.sort();
    assert_eq!(
        closes,
        [
            "close 1000  true",
            "close 1000  true",
            "close 1001  true",
            "close 1002 invalid frame: reserved opcode 0xf false",
            "close 1006 connection ended before the closing handshake false",
            "close 1006 connection reset false",
            "close 1006 no answer to a heartbeat ping false",
        ],
        "{:?}",
        lines(&log)
    );
    for peer in [by_peer, by_server, fin, reset, garbage, silent, at_shutdown] {
        assert!(bed.is_closed(peer), "{peer:?}");
    }
    let c = bed.stats().counters;
    assert_eq!((c.upgraded, c.closed, c.open), (7, 7, 0));
}

/// Moved from peer_limits.rs (`a_peer_opens_at_most_its_rate_per_second`), which slept for a
/// second: the window is exact in virtual time.
#[test]
fn a_peer_opens_at_most_its_rate_per_virtual_second() {
    const RATE: usize = 5;
    let mut config = ServerConfig::default();
    config.max_handshake_rate_per_peer = NonZeroU32::new(RATE as u32);
    let (mut bed, _log) = bed(config);
    let from: SocketAddr = "192.0.2.7:4000".parse().unwrap();
    let other: SocketAddr = "192.0.2.8:4000".parse().unwrap();
    let upgrade = |bed: &mut TestBed, addr| {
        let peer = bed.open_from(addr).unwrap();
        let options = bidir::client::Connect::new("ws://x/p").unwrap();
        bed.upgrade(peer, &options).is_ok()
    };
    let admitted = (0..20).filter(|_| upgrade(&mut bed, from)).count();
    assert_eq!(admitted, RATE);
    assert_eq!(bed.stats().counters.refused_per_peer, 15);
    assert!(upgrade(&mut bed, other), "another peer has its own window");
    bed.advance(Duration::from_millis(999));
    assert!(!upgrade(&mut bed, from), "the same second");
    bed.advance(MS);
    let next = (0..20).filter(|_| upgrade(&mut bed, from)).count();
    assert_eq!(next, RATE, "held connections do not count against the next window");
}

#[test]
fn a_send_to_a_closed_connection_is_refused() {
    let (mut bed, _log) = bed(ServerConfig::default());
    let peer = bed.connect("/p").unwrap();
    bed.send(peer, Message::Text("bye")).unwrap();
    assert_eq!(bed.recv(peer), [close_frame(CloseCode::NORMAL, "bye", false)]);
    assert_eq!(bed.send(peer, Message::Text("late")), Err(SendError::Closed));
    assert!(bed.is_closed(peer));
    assert!(!bed.write(peer, b"late"), "the socket is gone");
}

/// Reverses each binary message where it lies and echoes it; subscribes to "t" on open and,
/// when `intercept`, sends each publish upper-cased.
struct InPlace {
    intercept: bool,
}

impl Handler for InPlace {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.subscribe("t");
        if self.intercept {
            cx.intercept_publishes();
        }
    }
    fn on_binary_mut(&mut self, cx: &mut Context<'_>, payload: &mut [u8]) {
        payload.reverse();
        cx.send_binary(payload).unwrap();
    }
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        cx.send(msg).unwrap(); // text only: binary comes through on_binary_mut
    }
    fn on_publish(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        if let Message::Text(text) = msg {
            cx.send_text(&text.to_uppercase()).unwrap();
        }
    }
}

#[test]
fn binary_messages_are_writable_in_place_and_publishes_can_go_through_the_handler() {
    let builder = Server::builder()
        .route("/plain", |_req: &Request<'_>| Ok(InPlace { intercept: false }))
        .route("/own", |_req: &Request<'_>| Ok(InPlace { intercept: true }));
    let mut bed = TestBed::new(builder).unwrap();
    let plain = bed.connect("/plain").unwrap();
    let own = bed.connect("/own").unwrap();
    // Whole in the receive buffer, and gathered over several reads in the spill buffer.
    bed.send(plain, Message::Binary(&[1, 2, 3])).unwrap();
    bed.set_chunk_size(3);
    bed.send(plain, Message::Binary(&[4, 5, 6, 7, 8, 9])).unwrap();
    bed.send(plain, Message::Text("text")).unwrap();
    let expected = [Incoming::Binary(vec![3, 2, 1]), Incoming::Binary(vec![9, 8, 7, 6, 5, 4])];
    assert_eq!(bed.recv(plain), [expected[0].clone(), expected[1].clone(), text("text")]);
    assert_eq!(bed.handle().publish("t", Message::Text("hi")), 2);
    bed.run_until_idle();
    assert_eq!(bed.recv(plain), [text("hi")], "queued as it is");
    assert_eq!(bed.recv(own), [text("HI")], "sent by the handler");
}
