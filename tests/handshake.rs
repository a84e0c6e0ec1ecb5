//! The opening handshake's hard cases over real loopback sockets: request bodies and
//! conflicting framing, absolute-form targets, the Origin policy, tokens from browsers.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bidir::protocol::Message;
use bidir::protocol::http::{self, Response, Status};
use bidir::{Accept, Context, Handler, HttpResponse, OriginPolicy, Request, Server, ServerHandle};
use util::{Client, Got, Refused, config};

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

/// Opens `/path` on `host` with `origin` (if any); the status (101 or the refusal's) and body.
fn open(addr: SocketAddr, path: &str, host: &str, origin: Option<&str>) -> (u16, String) {
    let headers: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
    match Client::connect_with(addr, path, host, &[], &headers) {
        Ok(_) => (101, String::new()),
        Err(Refused { status, body, .. }) => (status, String::from_utf8_lossy(&body).into()),
    }
}

#[test]
fn the_default_origin_policy_admits_the_same_host_only() {
    let hooks = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hooks);
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(config(1))
        .route("/echo", move |_req: &Request<'_>| {
            counted.fetch_add(1, Ordering::Relaxed);
            Ok(Echo)
        })
        .start()
        .unwrap();
    let addr = server.local_addr();
    let port = addr.port();
    let own = format!("127.0.0.1:{port}");
    // Before: every one of these got 101.
    let refused = [
        (own.as_str(), Some("http://evil.example"), "Origin not allowed here"),
        (own.as_str(), Some("http://127.0.0.1"), "Origin not allowed here"), // other port
        ("app.example", Some("https://app.example:8443"), "Origin not allowed here"),
        ("app.example", Some("null"), "Origin null is not allowed here"),
        ("app.example", Some("app.example"), "malformed Origin"),
    ];
    for (host, origin, reason) in refused {
        assert_eq!(open(addr, "/echo", host, origin), (403, reason.to_owned()), "{origin:?}");
    }
    assert_eq!(hooks.load(Ordering::Relaxed), 0, "refused before the accept hook");
    let own_origin = format!("http://127.0.0.1:{port}");
    let admitted = [
        (own.as_str(), Some(own_origin.as_str())),
        ("App.Example", Some("https://app.example")),
        ("app.example:8443", Some("https://APP.example:8443")),
        ("[::1]:9001", Some("http://[0::1]:9001")),
        ("anything", None), // not from a browser
    ];
    for (host, origin) in admitted {
        assert_eq!(open(addr, "/echo", host, origin).0, 101, "{origin:?} on {host}");
    }
    assert_eq!(hooks.load(Ordering::Relaxed), admitted.len());
    // Several Origin headers: refused.
    let twice = upgrade_with("Origin: http://x\r\nOrigin: http://x\r\n");
    let got = exchange(addr, twice.as_bytes());
    assert_eq!((got.status, got.body.as_slice()), (403, &b"several Origin headers"[..]));
    server.shutdown(Duration::from_secs(1));
}

#[test]
fn origin_policies_per_route_and_server_wide() {
    let mut server_config = config(1);
    server_config.origins = OriginPolicy::listed().allow("https://*.trusted.example");
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(server_config)
        .origins("/public", OriginPolicy::any()) // before its route: order does not matter
        .route("/public", |_req: &Request<'_>| Ok(Echo))
        .route("/app", |_req: &Request<'_>| Ok(Echo))
        .route("/embed", |_req: &Request<'_>| Ok(Echo))
        .origins("/embed", OriginPolicy::same_host().allow("https://partner.example").allow_null())
        .host_route("chat.example", "/app", |_req: &Request<'_>| Ok(Echo))
        .host_origins("chat.example", "/app", OriginPolicy::same_host())
        .default_route(|_req: &Request<'_>| Ok(Echo))
        .default_origins(OriginPolicy::listed())
        .start()
        .unwrap();
    let addr = server.local_addr();
    let cases = [
        // `any`: every origin, null and garbage included.
        ("/public", "h", "http://evil.example", 101),
        ("/public", "h", "null", 101),
        ("/public", "h", "garbage", 101),
        // The server-wide policy: listed subdomains only, not even the same host.
        ("/app", "a.trusted.example", "https://a.trusted.example", 101),
        ("/app", "h", "https://b.c.trusted.example", 101),
        ("/app", "trusted.example", "https://trusted.example", 403),
        ("/app", "h", "http://h", 403),
        // Same host, a partner, and null.
        ("/embed", "h", "http://h", 101),
        ("/embed", "h", "https://partner.example", 101),
        ("/embed", "h", "null", 101),
        ("/embed", "h", "https://evil.example", 403),
        // A host route's own policy.
        ("/app", "chat.example", "http://chat.example", 101),
        ("/app", "chat.example", "https://a.trusted.example", 403),
        // The default route's: nothing listed, so every browser page is refused.
        ("/other", "h", "http://h", 403),
    ];
    for (path, host, origin, status) in cases {
        assert_eq!(open(addr, path, host, Some(origin)).0, status, "{path} {host} {origin}");
    }
    assert_eq!(open(addr, "/other", "h", None).0, 101, "no Origin passes everywhere");
    server.shutdown(Duration::from_secs(1));
}

struct Greet(String);
impl Handler for Greet {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let text = format!("hello {}", self.0);
        cx.send_text(&text).unwrap();
    }
}

#[test]
fn a_token_offered_as_a_subprotocol_authenticates_and_is_never_echoed() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(config(1))
        .route("/live", |req: &Request<'_>| {
            let Some("s3cr3t") = req.protocol_token() else {
                return Err(HttpResponse::unauthorized().body("token required"));
            };
            let accept = Accept::new(Greet("ada".into()));
            // A careless hook: the first offered protocol. The token is never among them.
            Ok(match req.protocols().next() {
                Some(p) => accept.protocol(p),
                None => accept,
            })
        })
        .route("/echo-token", |req: &Request<'_>| {
            let token = req.protocol_token().unwrap_or_default();
            Ok(Accept::new(Echo).protocol(format!("bidir.token.{token}")))
        })
        .start()
        .unwrap();
    let addr = server.local_addr();
    let mut c =
        Client::connect_with(addr, "/live", "h", &["bidir.token.s3cr3t", "chat.v1"], &[]).unwrap();
    assert_eq!(c.header("Sec-WebSocket-Protocol"), Some("chat.v1"));
    assert!(c.headers.iter().all(|(_, v)| !v.contains("s3cr3t")), "{:?}", c.headers);
    assert_eq!(c.recv(), Got::Text("hello ada".into()));
    // The token alone: accepted, and no subprotocol in the answer.
    let c = Client::connect_with(addr, "/live", "h", &["bidir.token.s3cr3t"], &[]).unwrap();
    assert_eq!(c.header("Sec-WebSocket-Protocol"), None);
    for offered in [&["chat.v1"][..], &["bidir.token.wrong"], &["bidir.token."], &[]] {
        let refused = Client::connect_with(addr, "/live", "h", offered, &[]).err().unwrap();
        assert_eq!(refused.status, 401, "{offered:?}");
    }
    // A hook that names the token as its protocol fails the handshake rather than echo it.
    let refused =
        Client::connect_with(addr, "/echo-token", "h", &["bidir.token.s3cr3t"], &[]).err().unwrap();
    assert_eq!(refused.status, 500);
    assert!(refused.headers.iter().all(|(_, v)| !v.contains("s3cr3t")));
    assert!(!String::from_utf8_lossy(&refused.body).contains("s3cr3t"));
    server.shutdown(Duration::from_secs(1));
}
