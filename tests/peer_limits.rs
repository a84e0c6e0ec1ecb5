//! Per-peer limits over real loopback sockets: connections held and opened per second by one
//! peer, counted over every worker, given back exactly once however a connection ends. The
//! rate's one-second windows are tested in virtual time on the test bed (tests/testbed.rs).

mod util;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::num::NonZeroU32;
use std::time::Duration;

use bidir::protocol::Message;
use bidir::{
    CloseCode, Context, Handler, HttpResponse, Request, Server, ServerConfig, ServerHandle,
};
use util::{Client, Got, config, raw_http, wait_until};

const UPGRADE: &str = "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

struct Echo;
impl Handler for Echo {
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        cx.send(msg).unwrap();
    }
}

fn server(config: ServerConfig) -> ServerHandle {
    Server::builder()
        .bind("127.0.0.1:0")
        .config(config)
        .route("/echo", |_req: &Request<'_>| Ok(Echo))
        .http("/health", |_req: &Request<'_>| HttpResponse::text("ok"))
        .start()
        .unwrap()
}

fn limited(connections: u32, rate: u32) -> ServerConfig {
    // Two workers: one peer's connections spread over both, so only a server-wide count holds.
    let mut config = config(2);
    config.max_connections_per_peer = NonZeroU32::new(connections);
    config.max_handshake_rate_per_peer = NonZeroU32::new(rate);
    config.handshake_timeout = Duration::from_millis(300);
    config
}

/// Sends an upgrade request on `stream`: `Some` with the stream when the server answers 101,
/// `None` when it closes the connection without an answer (a per-peer refusal).
fn upgrade_on(mut stream: TcpStream) -> Option<TcpStream> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // A refused connection may already be reset when the request goes out.
    if stream.write_all(UPGRADE.as_bytes()).is_err() {
        return None;
    }
    let mut head = Vec::new();
    let mut byte = [0; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("no answer and no close: {e}"),
        }
    }
    if head.is_empty() {
        return None;
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    Some(stream)
}

fn upgrade(addr: SocketAddr) -> Option<TcpStream> {
    upgrade_on(TcpStream::connect(addr).unwrap())
}

/// Waits until the slots of all accepted connections but the `holding` ones still open are
/// gone (refused ones never had one).
fn settled(server: &ServerHandle, holding: u64) {
    let ok = wait_until(Duration::from_secs(10), || {
        let c = server.stats().counters;
        c.closed + c.refused_per_peer + c.refused + holding == c.accepted
    });
    assert!(ok, "slots still held: {:?}", server.stats().counters);
}

/// With `held` connections of this peer open, exactly `limit - held` more are admitted and
/// the next is refused.
fn assert_capacity(server: &ServerHandle, limit: u32, held: u32) {
    let addr = server.local_addr();
    let before = server.stats().counters.refused_per_peer;
    let open: Vec<TcpStream> =
        (held..limit).map(|i| upgrade(addr).unwrap_or_else(|| panic!("{i} refused"))).collect();
    assert!(upgrade(addr).is_none(), "one over the limit is refused");
    assert_eq!(server.stats().counters.refused_per_peer, before + 1);
    drop(open);
    settled(server, u64::from(held));
}

#[test]
fn a_peer_holds_at_most_its_limit_over_every_worker() {
    let server = server(limited(3, 0));
    let addr = server.local_addr();
    let mut clients: Vec<Client> = (0..3).map(|_| Client::connect(addr, "/echo")).collect();
    // The fourth is closed at once, with no HTTP answer.
    assert!(upgrade(addr).is_none());
    assert_eq!(server.stats().counters.refused_per_peer, 1);
    // The held ones are untouched.
    for client in &mut clients {
        client.send_text("still here");
        assert_eq!(client.recv(), Got::Text("still here".to_owned()));
    }
    // One ends (a clean close); its place is free again, and only its place.
    let mut leaving = clients.pop().unwrap();
    leaving.close(CloseCode::NORMAL, "");
    assert!(matches!(leaving.recv(), Got::Close(Some(CloseCode::NORMAL), _)));
    assert_eq!(leaving.next(), Got::Eof);
    settled(&server, 2);
    assert_capacity(&server, 3, 2);
    server.shutdown(Duration::from_secs(1));
}

#[test]
fn every_way_a_connection_ends_gives_its_place_back_once() {
    const LIMIT: u32 = 3;
    let server = server(limited(LIMIT, 0));
    let addr = server.local_addr();
    // One connection stays open throughout: a place given back twice would show as one too
    // many admitted in the capacity checks.
    let mut anchor = Client::connect(addr, "/echo");
    for round in 0..2 {
        // A plain HTTP answer.
        for _ in 0..LIMIT {
            assert_eq!(raw_http(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);
        }
        // A refused upgrade.
        for _ in 0..LIMIT {
            let answer = raw_http(addr, UPGRADE.replace("/echo", "/nowhere").as_bytes());
            assert_eq!(answer.status, 404);
        }
        // A connection closed before sending anything.
        for _ in 0..LIMIT {
            drop(TcpStream::connect(addr).unwrap());
        }
        settled(&server, 1);
        // Handshakes that never finish: the timeout ends them.
        let accepted = server.stats().counters.accepted;
        let slow: Vec<TcpStream> = (0..LIMIT - 1)
            .map(|_| {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream.write_all(b"GET /echo HTTP/1.1\r\n").unwrap();
                stream
            })
            .collect();
        let slow_accepted = wait_until(Duration::from_secs(10), || {
            server.stats().counters.accepted == accepted + u64::from(LIMIT - 1)
        });
        assert!(slow_accepted);
        assert!(upgrade(addr).is_none(), "round {round}: the slow ones hold their places");
        for mut stream in slow {
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0; 512];
            // An answer (408) or none: the server closes either way.
            while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
        }
        settled(&server, 1);
        // Open connections, ended by a clean close, an abrupt drop, and a protocol error.
        let mut clean = Client::connect(addr, "/echo");
        clean.close(CloseCode::NORMAL, "");
        assert!(matches!(clean.recv(), Got::Close(Some(CloseCode::NORMAL), _)));
        drop(Client::connect(addr, "/echo"));
        settled(&server, 1);
        let mut bad = Client::connect(addr, "/echo");
        bad.write_raw(&[0x8f, 0x80, 0, 0, 0, 0]); // a reserved opcode
        assert!(matches!(bad.recv(), Got::Close(Some(CloseCode::PROTOCOL_ERROR), _)));
        // Connections refused over the limit give back nothing they did not take.
        let held: Vec<TcpStream> = (1..LIMIT).map(|_| upgrade(addr).unwrap()).collect();
        assert!(upgrade(addr).is_none());
        assert!(upgrade(addr).is_none());
        drop(held);
        drop(bad);
        settled(&server, 1);
        assert_capacity(&server, LIMIT, 1);
    }
    anchor.send_text("alive");
    assert_eq!(anchor.recv(), Got::Text("alive".to_owned()));
    // When the last one goes, everything is back: the full limit is free.
    drop(anchor);
    settled(&server, 0);
    assert_capacity(&server, LIMIT, 0);
    server.shutdown(Duration::from_secs(1));
}

#[test]
fn per_peer_limits_are_off_by_default() {
    let server = server(config(2));
    let addr = server.local_addr();
    let open: Vec<TcpStream> = (0..30).map(|_| upgrade(addr).expect("admitted")).collect();
    assert_eq!(open.len(), 30);
    assert_eq!(server.stats().counters.refused_per_peer, 0);
    server.shutdown(Duration::from_secs(1));
}
