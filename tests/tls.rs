//! wss:// end to end: TLS listeners beside plain ones, the blocking and the engine client over
//! TLS, certificates per host, and bad input on both kinds of port (plain HTTP on a TLS port, a
//! TLS hello on a plain one, garbage, a stalled handshake). Every test runs on the backend
//! `BIDIR_BACKEND` names (CI runs the file on both).
#![cfg(feature = "tls")]

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bidir::client::{Connect, ConnectError, Incoming};
use bidir::protocol::Message;
use bidir::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use bidir::tls::{ClientTls, ServerTls};
use bidir::{CloseCode, Context, Handler, Request, Server, ServerHandle};
use util::config;

/// A self-signed certificate for `names`, and its key.
fn certificate(names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let generated = rcgen::generate_simple_self_signed(names).unwrap();
    let key = PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der());
    (generated.cert.der().clone(), key.into())
}

struct Echo;
impl Handler for Echo {
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        cx.send(msg).unwrap();
    }
}

/// A server with a TLS listener (first address) and a plain one (second), echoing on /echo.
fn server(tls: ServerTls) -> ServerHandle {
    let mut config = config(1);
    config.handshake_timeout = Duration::from_millis(500);
    Server::builder()
        .config(config)
        .bind_tls("127.0.0.1:0", tls)
        .bind("127.0.0.1:0")
        .route("/echo", |_req: &Request<'_>| Ok(Echo))
        .start()
        .unwrap()
}

fn trusting(cert: &CertificateDer<'static>) -> ClientTls {
    ClientTls::trusting([cert.clone()]).unwrap()
}

#[test]
fn the_blocking_client_speaks_wss_beside_a_plain_listener() {
    let (cert, key) = certificate(&["localhost", "127.0.0.1"]);
    let server = server(ServerTls::new(vec![cert.clone()], key).unwrap());
    let (tls_addr, plain_addr) = (server.local_addrs()[0], server.local_addrs()[1]);

    let url = format!("wss://127.0.0.1:{}/echo", tls_addr.port());
    let mut ws = Connect::new(&url).unwrap().tls(trusting(&cert)).connect().unwrap();
    ws.send(Message::Text("over tls")).unwrap();
    assert_eq!(ws.recv().unwrap(), Incoming::Text("over tls".into()));
    // Larger than a record (16 KiB): it crosses records and reads.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::Binary(&big)).unwrap();
    assert_eq!(ws.recv().unwrap(), Incoming::Binary(big));
    let close = ws.close(CloseCode::NORMAL, "done").unwrap();
    assert_eq!(close.code, CloseCode::NORMAL);

    // The plain listener of the same server is still plain.
    let mut ws = Connect::new(&format!("ws://{plain_addr}/echo")).unwrap().connect().unwrap();
    ws.send(Message::Text("plain")).unwrap();
    assert_eq!(ws.recv().unwrap(), Incoming::Text("plain".into()));
    server.shutdown(Duration::from_secs(1));
    server.join();
}

/// A client connection opened from the engine: sends on open, reports what comes back.
struct Probe {
    sent: &'static str,
    seen: mpsc::Sender<Result<String, String>>,
}

impl Handler for Probe {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.send(Message::Text(self.sent)).unwrap();
    }
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        if let Message::Text(text) = msg {
            let _ = self.seen.send(Ok(text.to_owned()));
        }
        cx.close(CloseCode::NORMAL, "bye").unwrap();
    }
    fn on_connect_failed(&mut self, error: ConnectError) {
        let _ = self.seen.send(Err(error.to_string()));
    }
}

#[test]
fn the_engine_client_speaks_wss_and_refuses_an_unknown_certificate() {
    let (cert, key) = certificate(&["localhost"]);
    let server = server(ServerTls::new(vec![cert.clone()], key).unwrap());
    let port = server.local_addrs()[0].port();
    let clients = Server::builder().config(config(1)).start().unwrap();

    let (tx, rx) = mpsc::channel();
    let options =
        Connect::new(&format!("wss://localhost:{port}/echo")).unwrap().tls(trusting(&cert));
    clients.connect(&options, Probe { sent: "engine over tls", seen: tx.clone() }).unwrap();
    let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(got, Ok("engine over tls".to_owned()));

    // The default roots do not know a self-signed certificate.
    let options = Connect::new(&format!("wss://localhost:{port}/echo")).unwrap();
    clients.connect(&options, Probe { sent: "x", seen: tx }).unwrap();
    let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let error = got.unwrap_err();
    assert!(error.contains("certificate"), "{error}");
    clients.shutdown(Duration::from_secs(1));
    server.shutdown(Duration::from_secs(1));
}

#[test]
fn each_host_gets_its_certificate() {
    let (a_cert, a_key) = certificate(&["localhost"]);
    let (default_cert, default_key) = certificate(&["127.0.0.1"]);
    let tls = ServerTls::per_host(
        [("LocalHost".to_owned(), vec![a_cert.clone()], a_key)],
        (vec![default_cert.clone()], default_key),
    )
    .unwrap();
    let server = server(tls);
    let port = server.local_addrs()[0].port();
    let open = |host: &str, trust: &CertificateDer<'static>| {
        Connect::new(&format!("wss://{host}:{port}/echo")).unwrap().tls(trusting(trust)).connect()
    };
    // By name (SNI): the host's certificate; by address (no SNI): the default one.
    assert!(open("localhost", &a_cert).is_ok());
    assert!(open("127.0.0.1", &default_cert).is_ok());
    let Err(ConnectError::Tls(reason)) = open("127.0.0.1", &a_cert) else {
        panic!("the host's certificate is not the default")
    };
    assert!(reason.contains("certificate"), "{reason}");
    server.shutdown(Duration::from_secs(1));
}

/// Reads until the server closes (or 3 s pass); what it sent.
fn read_to_end(mut stream: TcpStream) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    (got, start.elapsed())
}

fn send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(bytes).unwrap();
    stream
}

#[test]
fn bad_input_on_either_port_is_answered_and_closed() {
    let (cert, key) = certificate(&["localhost"]);
    let server = server(ServerTls::new(vec![cert.clone()], key).unwrap());
    let (tls_addr, plain_addr) = (server.local_addrs()[0], server.local_addrs()[1]);

    // Plain HTTP on the TLS port: a plain-text 400.
    let (got, _) = read_to_end(send(tls_addr, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"));
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("TLS port"), "{text}");

    // A TLS hello on the plain port: the HTTP parser's 400.
    let hello = [0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00];
    let (got, _) = read_to_end(send(plain_addr, &hello));
    assert!(got.starts_with(b"HTTP/1.1 400"), "{:?}", String::from_utf8_lossy(&got));

    // Garbage after a handshake record's first byte: an alert (content type 21), then EOF.
    let (got, elapsed) = read_to_end(send(tls_addr, b"\x16\x03\x01\x00\x10garbage-garbage!"));
    assert_eq!(got.first(), Some(&0x15), "{got:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");

    // A hello cut short, and nothing more: closed at the handshake timeout (500 ms here).
    let (got, elapsed) = read_to_end(send(tls_addr, &hello[..7]));
    assert!(got.is_empty(), "{got:?}");
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );

    // The worker is unaffected: a real client still gets through.
    let url = format!("wss://localhost:{}/echo", tls_addr.port());
    let mut ws = Connect::new(&url).unwrap().tls(trusting(&cert)).connect().unwrap();
    ws.send(Message::Text("still here")).unwrap();
    assert_eq!(ws.recv().unwrap(), Incoming::Text("still here".into()));
    server.shutdown(Duration::from_secs(1));
}
