//! The opening handshake's hard cases over real loopback sockets: request bodies and
//! conflicting framing, absolute-form targets, the Origin policy, tokens from browsers.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bidir::protocol::Message;
use bidir::protocol::http::{self, Response, Status};
use bidir::{Context, Handler, HttpResponse, Request, Server, ServerHandle};
use util::{Client, Got, config};

struct Echo;
impl Handler for Echo {
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        cx.send(msg).unwrap();
    }
}

/// Echo on `/echo`, a plain HTTP route on `/health`.
fn server() -> ServerHandle {
    Server::builder()
        .bind("127.0.0.1:0")
        .config(config(1))
        .route("/echo", |_req: &Request<'_>| Ok(Echo))
        .http("/health", |_req: &Request<'_>| HttpResponse::text("ok"))
        .start()
        .unwrap()
}

/// An upgrade request for `/echo` on Host `x` with `extra` header lines (each ending in CRLF).
fn upgrade_with(extra: &str) -> String {
    format!(
        "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// What the server sent back to `request`, until it closed the connection (at most 10 s).
struct Exchange {
    status: u16,
    body: Vec<u8>,
    /// Bytes after the first response (a second response, or frames after a 101).
    rest: Vec<u8>,
    closed: bool,
}

fn exchange(addr: SocketAddr, request: &[u8]) -> Exchange {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(request).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut all = Vec::new();
    let mut closed = false;
    while Instant::now() < deadline {
        stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => all.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                closed = true;
                break;
            }
            // Quiet for 200 ms after a 101: the connection stays open, as it should.
            Err(_) if all.starts_with(b"HTTP/1.1 101 ") => break,
            Err(_) => {}
        }
    }
    let mut headers = [http::EMPTY_HEADER; 32];
    let Ok(Status::Complete((res, head_len))) = Response::parse(&all, &mut headers, 16384) else {
        panic!("no HTTP answer in {:?}", String::from_utf8_lossy(&all));
    };
    let status = res.status.0;
    let body_len = res.content_length().unwrap_or(0);
    let body = all[head_len..head_len + body_len].to_vec();
    let rest = all[head_len + body_len..].to_vec();
    Exchange { status, body, rest, closed }
}

#[test]
fn an_upgrade_with_a_body_or_ambiguous_framing_gets_400_and_a_close() {
    let server = server();
    let addr = server.local_addr();
    // Each of these got 101 before, and the bytes after the head were read as frames.
    let cases = [
        ("Content-Length: 5\r\n", "hello", "must not have a body"),
        ("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n", "must not have a body"),
        ("Content-Length: 5\r\nContent-Length: 6\r\n", "hello", "invalid Content-Length"),
        ("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "hello", "both Content-Length"),
        ("Transfer-Encoding: gzip\r\n", "hello", "invalid Transfer-Encoding"),
    ];
    for (headers, body, reason) in cases {
        let request = upgrade_with(headers) + body;
        let got = exchange(addr, request.as_bytes());
        assert_eq!(got.status, 400, "{headers:?}");
        assert!(String::from_utf8_lossy(&got.body).contains(reason), "{headers:?}");
        assert!(got.rest.is_empty(), "{headers:?}: {:?}", got.rest);
        assert!(got.closed, "{headers:?}: the connection must close");
    }
    // `Content-Length: 0` is no body: the upgrade stands and echoes.
    let got = exchange(addr, upgrade_with("Content-Length: 0\r\n").as_bytes());
    assert_eq!(got.status, 101);
    assert!(!got.closed);
    server.shutdown(Duration::from_secs(1));
}

#[test]
fn a_body_on_a_plain_http_route_is_never_read_as_the_next_request() {
    let server = server();
    let addr = server.local_addr();
    // The body is itself a request: were it parsed as one, a second answer would follow.
    let smuggled = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let request = format!(
        "POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let got = exchange(addr, request.as_bytes());
    assert_eq!((got.status, got.body.as_slice()), (200, &b"ok"[..]));
    assert!(got.rest.is_empty(), "a second answer: {:?}", String::from_utf8_lossy(&got.rest));
    assert!(got.closed);
    // Ambiguous framing is refused on plain routes too.
    let request = format!(
        "POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\
         Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
    );
    let got = exchange(addr, request.as_bytes());
    assert_eq!(got.status, 400);
    assert!(got.rest.is_empty());
    assert!(got.closed);
    server.shutdown(Duration::from_secs(1));
}

#[test]
fn a_clean_upgrade_still_echoes() {
    let server = server();
    let mut c = Client::connect(server.local_addr(), "/echo");
    c.send_text("hi");
    assert_eq!(c.recv(), Got::Text("hi".into()));
    server.shutdown(Duration::from_secs(1));
}

/// Sends where it was routed and what it saw: "`tag` `target` `host`".
struct Tell(&'static str);
impl Handler for Tell {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let text = format!("{} {}", self.0, cx.target());
        cx.send_text(&text).unwrap();
    }
}

/// The payload of the one small unmasked text frame at the start of `bytes`.
fn first_text(bytes: &[u8]) -> String {
    assert!(bytes.len() >= 2 && bytes[0] == 0x81 && bytes[1] < 126, "{bytes:?}");
    String::from_utf8(bytes[2..2 + usize::from(bytes[1])].to_vec()).unwrap()
}

#[test]
fn absolute_form_targets_are_routed_by_their_host_and_path() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(config(1))
        .route("/a", |_req: &Request<'_>| Ok(Tell("default")))
        .host_route("chat.example", "/a", |req: &Request<'_>| {
            assert_eq!((req.host(), req.path()), (Some("CHAT.example:8080"), "/a"));
            Ok(Tell("chat"))
        })
        .http("/health", |_req: &Request<'_>| HttpResponse::text("ok"))
        .start()
        .unwrap();
    let addr = server.local_addr();
    let absolute = |target: &str, host: &str| {
        format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    };
    // Before: 404, the whole URI taken for a path. The Host header names another host: the
    // target's authority wins (RFC 9112 §3.2.2).
    let got = exchange(addr, absolute("http://CHAT.example:8080/a?x=1", "other").as_bytes());
    assert_eq!(got.status, 101);
    assert_eq!(first_text(&got.rest), "chat /a?x=1");
    let got = exchange(addr, absolute("ws://other.example/a", "chat.example").as_bytes());
    assert_eq!(got.status, 101);
    assert_eq!(first_text(&got.rest), "default /a");
    let got = exchange(addr, b"GET http://x/health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((got.status, got.body.as_slice()), (200, &b"ok"[..]));
    // Userinfo in the target is refused (RFC 9110 §4.2.4), and so is a missing Host header.
    let got = exchange(addr, absolute("http://user@chat.example/a", "chat.example").as_bytes());
    assert_eq!((got.status, got.closed), (400, true));
    let no_host = absolute("http://chat.example/a", "x").replace("Host: x\r\n", "");
    assert_eq!(exchange(addr, no_host.as_bytes()).status, 400);
    server.shutdown(Duration::from_secs(1));
}
