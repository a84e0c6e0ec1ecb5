//! The blocking client against the engine and against hand-written servers that misbehave:
//! messages, fragments, pings, the closing handshake, refusals, timeouts, bad answers, split
//! halves on two threads, permessage-deflate.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

use bidir::client::{Connect, ConnectError, Error, Incoming, UrlError, WebSocket};
use bidir::protocol::{DataKind, FrameKind, Message, State};
use bidir::{
    Accept, CloseCode, Context, DeflateConfig, Handler, HttpResponse, Request, Server,
    ServerConfig, ServerHandle,
};
use util::config;

/// Echoes, and closes with 4000 when told "bye".
struct Echo;
impl Handler for Echo {
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        if msg == Message::Text("bye") {
            cx.close(CloseCode(4000), "as asked").unwrap();
        } else {
            cx.send(msg).unwrap();
        }
    }
}

fn server(config: ServerConfig) -> ServerHandle {
    Server::builder()
        .bind("127.0.0.1:0")
        .config(config)
        .route("/echo", |req: &Request<'_>| {
            if req.header("authorization") != Some("Bearer t") {
                return Err(HttpResponse::unauthorized()
                    .header("WWW-Authenticate", "Bearer")
                    .body("login first"));
            }
            let accept = Accept::new(Echo).header("X-Seen", req.query().unwrap_or(""));
            Ok(match req.protocols().find(|p| *p == "chat") {
                Some(p) => accept.protocol(p),
                None => accept,
            })
        })
        .start()
        .unwrap()
}

fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}/echo?room=7")
}

fn open(addr: SocketAddr) -> WebSocket {
    Connect::new(&url(addr)).unwrap().header("Authorization", "Bearer t").connect().unwrap()
}

#[test]
fn echo_fragments_ping_and_close_handshake() {
    let server = server(config(1));
    let mut ws = Connect::new(&url(server.local_addr()))
        .unwrap()
        .header("Authorization", "Bearer t")
        .protocol("other")
        .protocol("chat")
        .connect()
        .unwrap();
    assert_eq!(ws.protocol(), Some("chat"));
    assert!(
        ws.response_headers().iter().any(|(n, v)| n == "X-Seen" && v == "room=7"),
        "{:?}",
        ws.response_headers()
    );
    assert_eq!(ws.state(), State::Open);
    assert_eq!(ws.deflate(), None);

    ws.send(Message::Text("hello")).unwrap();
    assert_eq!(ws.recv().unwrap(), Incoming::Text("hello".into()));
    let big: Vec<u8> = (0..1 << 20).map(|i| (i * 7) as u8).collect();
    ws.send(Message::Binary(&big)).unwrap();
    assert_eq!(ws.recv().unwrap(), Incoming::Binary(big.clone()));

    // A message sent in fragments, a ping between them; the echo comes back whole.
    ws.send_frame(FrameKind::First(DataKind::Text), "héll".as_bytes()).unwrap();
    ws.ping(b"p1").unwrap();
    ws.send_frame(FrameKind::Last, "o wörld".as_bytes()).unwrap();
    assert_eq!(ws.recv().unwrap(), Incoming::Pong(b"p1".to_vec()));
    assert_eq!(ws.recv().unwrap(), Incoming::Text("héllo wörld".into()));

    // Out-of-order fragments and oversized pings are refused locally, the connection lives.
    assert!(matches!(ws.send_frame(FrameKind::Last, b"x"), Err(Error::Send(_))));
    assert!(matches!(ws.ping(&[0; 126]), Err(Error::Send(_))));
    assert!(matches!(ws.close(CloseCode::NO_STATUS, ""), Err(Error::Send(_))));

    let close = ws.close(CloseCode::NORMAL, "done").unwrap();
    assert_eq!((close.code, close.clean, close.initiated_locally), (CloseCode::NORMAL, true, true));
    assert_eq!(ws.state(), State::Closed);
    assert!(matches!(ws.send(Message::Text("late")), Err(Error::Closed)));
    assert!(matches!(ws.recv(), Err(Error::Closed)));
}

#[test]
fn server_initiated_close_is_reported_and_answered() {
    let server = server(config(1));
    let mut ws = open(server.local_addr());
    ws.send(Message::Text("bye")).unwrap();
    match ws.recv().unwrap() {
        Incoming::Close(close) => {
            assert_eq!((close.code, &*close.reason), (CloseCode(4000), "as asked"));
            assert!(!close.initiated_locally);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ws.state(), State::Closed);
    assert!(matches!(ws.recv(), Err(Error::Closed)));
    assert!(wait(|| server.connections() == 0), "the server kept the connection");
}

#[test]
fn refusal_carries_status_headers_and_body() {
    let server = server(config(1));
    match Connect::new(&url(server.local_addr())).unwrap().connect() {
        Err(ConnectError::Refused(refusal)) => {
            assert_eq!(refusal.status, 401);
            assert_eq!(refusal.header("www-authenticate"), Some("Bearer"));
            assert_eq!(refusal.body, b"login first");
        }
        other => panic!("{other:?}"),
    }
    let missing = format!("ws://{}/nowhere", server.local_addr());
    match WebSocket::connect(&missing) {
        Err(ConnectError::Refused(refusal)) => assert_eq!(refusal.status, 404),
        other => panic!("{other:?}"),
    }
}

#[test]
fn urls_and_request_headers_are_checked_before_connecting() {
    // wss:// is refused only in a build without TLS.
    let wss = Connect::new("wss://example.com/");
    if cfg!(feature = "tls") {
        assert!(wss.is_ok(), "{wss:?}");
    } else {
        assert!(matches!(wss, Err(ConnectError::Url(UrlError::TlsNotSupported))));
    }
    assert!(matches!(Connect::new("http://example.com/"), Err(ConnectError::Url(_))));
    assert!(matches!(Connect::new("ws://"), Err(ConnectError::Url(_))));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let injected = Connect::new(&url).unwrap().header("X-A", "b\r\nX-Evil: 1").connect();
    assert!(matches!(injected, Err(ConnectError::InvalidRequest)), "{injected:?}");
    let bad_protocol = Connect::new(&url).unwrap().protocol("a b").connect();
    assert!(matches!(bad_protocol, Err(ConnectError::InvalidRequest)), "{bad_protocol:?}");
}

#[test]
fn connection_refused_is_an_io_error() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    match WebSocket::connect(&format!("ws://{addr}/")) {
        Err(ConnectError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
        other => panic!("{other:?}"),
    }
}

/// A server that accepts, reads the request, and answers with `answer(request)`.
fn fake_server(answer: impl Fn(&str) -> Vec<u8> + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let reply = answer(&String::from_utf8_lossy(&request));
            let _ = stream.write_all(&reply);
            thread::sleep(Duration::from_millis(300));
        }
    });
    addr
}

fn accept_key(request: &str) -> String {
    let key =
        request.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")).expect("a key").trim();
    bidir::protocol::http::AcceptKey::new(key.as_bytes()).as_str().to_owned()
}

#[test]
fn handshake_timeout_and_silent_server() {
    let addr = fake_server(|_| Vec::new());
    let started = Instant::now();
    let result = Connect::new(&format!("ws://{addr}/"))
        .unwrap()
        .handshake_timeout(Duration::from_millis(100))
        .connect();
    assert!(matches!(result, Err(ConnectError::Timeout)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn invalid_answers_are_typed_errors() {
    // A 101 with the wrong accept key.
    let addr = fake_server(|_| {
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"
            .to_vec()
    });
    let result = WebSocket::connect(&format!("ws://{addr}/"));
    assert!(matches!(result, Err(ConnectError::InvalidResponse(_))), "{result:?}");

    // A subprotocol that was not offered.
    let addr = fake_server(|req| {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: other\r\n\r\n",
            accept_key(req)
        )
        .into_bytes()
    });
    let result = Connect::new(&format!("ws://{addr}/")).unwrap().protocol("chat").connect();
    assert!(matches!(result, Err(ConnectError::InvalidResponse(_))), "{result:?}");

    // A deflate answer the offer did not allow.
    let addr = fake_server(|req| {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=10\r\n\r\n",
            accept_key(req)
        )
        .into_bytes()
    });
    let result = WebSocket::connect(&format!("ws://{addr}/"));
    assert!(
        matches!(result, Err(ConnectError::InvalidResponse(_) | ConnectError::Deflate(_))),
        "{result:?}"
    );

    // Garbage, then the connection closed.
    let addr = fake_server(|_| b"SSH-2.0-OpenSSH\r\n\r\n".to_vec());
    let result = WebSocket::connect(&format!("ws://{addr}/"));
    assert!(matches!(result, Err(ConnectError::InvalidResponse(_))), "{result:?}");
}

#[test]
fn a_server_that_breaks_the_protocol_fails_the_connection() {
    // The server answers correctly, then sends a masked frame (servers must not mask).
    let addr = fake_server(|req| {
        let mut reply = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(req)
        )
        .into_bytes();
        reply.extend_from_slice(&[0x81, 0x80 | 2, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]);
        reply
    });
    let mut ws = WebSocket::connect(&format!("ws://{addr}/")).unwrap();
    assert!(matches!(ws.recv(), Err(Error::Protocol(_))));
    assert!(matches!(ws.recv(), Err(Error::Closed)));
}

#[test]
fn read_timeout_leaves_the_connection_usable() {
    let server = server(config(1));
    let mut ws = open(server.local_addr());
    ws.set_read_timeout(Some(Duration::from_millis(50)));
    assert!(matches!(ws.recv(), Err(Error::Timeout)));
    ws.send(Message::Text("still here")).unwrap();
    assert_eq!(ws.recv().unwrap(), Incoming::Text("still here".into()));
    ws.close(CloseCode::NORMAL, "").unwrap();
}

#[test]
fn split_halves_read_and_write_on_two_threads() {
    let server = server(config(1));
    let ws = open(server.local_addr());
    let (mut reader, writer) = ws.split();
    const N: usize = 2000;
    let sender = {
        let writer = writer.clone();
        thread::spawn(move || {
            for i in 0..N {
                writer.send(Message::Text(&format!("m{i}"))).unwrap();
            }
        })
    };
    for i in 0..N {
        assert_eq!(reader.recv().unwrap(), Incoming::Text(format!("m{i}")));
    }
    sender.join().unwrap();
    writer.close(CloseCode::NORMAL, "bye").unwrap();
    match reader.recv().unwrap() {
        Incoming::Close(close) => {
            assert_eq!((close.code, close.initiated_locally), (CloseCode::NORMAL, true))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(writer.state(), State::Closed);
}

#[test]
fn deflate_offer_is_negotiated_and_used() {
    let mut config = config(1);
    config.compression = Some(DeflateConfig::shared());
    let server = server(config);
    for offer in
        [DeflateConfig::shared(), DeflateConfig::dedicated(12), DeflateConfig::dedicated(15)]
    {
        let mut ws = Connect::new(&url(server.local_addr()))
            .unwrap()
            .header("Authorization", "Bearer t")
            .deflate(offer.clone())
            .connect()
            .unwrap();
        assert!(ws.deflate().is_some(), "not negotiated");
        let json = r#"{"id":12,"name":"widget","tags":["a","b","c"],"price":10.5}"#.repeat(200);
        for _ in 0..3 {
            ws.send(Message::Text(&json)).unwrap();
            assert_eq!(ws.recv().unwrap(), Incoming::Text(json.clone()));
        }
        ws.close(CloseCode::NORMAL, "").unwrap();
    }
}

#[test]
fn server_not_answering_the_close_times_out() {
    // Completes the handshake, then never reads or writes again.
    let addr = fake_server(|req| {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(req)
        )
        .into_bytes()
    });
    let mut protocol = bidir::protocol::Config::default();
    protocol.close_timeout = Duration::from_millis(100);
    protocol.ping_interval = None;
    let mut ws =
        Connect::new(&format!("ws://{addr}/")).unwrap().config(protocol).connect().unwrap();
    let started = Instant::now();
    let result = ws.close(CloseCode::NORMAL, "");
    assert!(matches!(result, Err(Error::Protocol(_) | Error::Closed)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

fn wait(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    false
}
