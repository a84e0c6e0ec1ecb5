//! TLS on a worker: a rustls client's handshake, upgrade request and a message, sent to a TLS
//! listener of a worker on the in-memory test bed, with garbage before it, the client's bytes
//! cut into any receive sizes, and one of its bytes damaged anywhere.
//!
//! Invariants: no panic; undamaged, the handshake completes, the upgrade answers 101 and the
//! message comes back whole; damaged, the server ends the connection (an alert or a close)
//! rather than hanging past the handshake timeout; and either way the worker then serves a
//! fresh TLS client. The certificate in fuzz/tls/ is a throwaway made for this target.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arbitrary::Arbitrary;
use bidir::testbed::{Peer, TestBed};
use bidir::tls::rustls::pki_types::ServerName;
use bidir::tls::rustls::{self, ClientConnection};
use bidir::tls::{ClientTls, ServerTls};
use bidir::{Context, Handler, Message, Request, Server};
use libfuzzer_sys::fuzz_target;

const CERT: &[u8] = include_bytes!("../tls/cert.pem");
const KEY: &[u8] = include_bytes!("../tls/key.pem");
const REQUEST: &[u8] = b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

#[derive(Arbitrary, Debug)]
struct Case {
    /// Bytes before the client's first (plain HTTP, junk, a record header).
    garbage: Vec<u8>,
    /// The server's receive size (0: whole writes).
    chunk: u8,
    /// Damage: XOR the client's byte at this offset of everything it sends with this mask.
    damage: Option<(u16, u8)>,
    /// The message echoed after the upgrade (a binary frame of up to 125 bytes).
    message: Vec<u8>,
}

struct Echo;
impl Handler for Echo {
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        let _ = cx.send(msg);
    }
}

fn client_config() -> &'static ClientTls {
    static CONFIG: OnceLock<ClientTls> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let cert = rustls::pki_types::pem::PemObject::from_pem_slice(CERT).unwrap();
        ClientTls::trusting([cert]).unwrap()
    })
}

/// A client peer: the rustls connection and how many bytes it sent.
struct Client {
    tls: ClientConnection,
    peer: Peer,
    sent: usize,
    received: Vec<u8>,
}

impl Client {
    fn new(bed: &mut TestBed) -> Self {
        let name = ServerName::try_from("localhost").unwrap();
        let tls = ClientConnection::new(Arc::clone(client_config().config()), name).unwrap();
        Self { tls, peer: bed.open().unwrap(), sent: 0, received: Vec::new() }
    }

    /// Sends what the client has, damaged at `damage`, and takes the server's answer; `false`
    /// once the client or the server gave up.
    fn exchange(&mut self, bed: &mut TestBed, damage: Option<(u16, u8)>) -> bool {
        let mut out = Vec::new();
        while self.tls.wants_write() {
            self.tls.write_tls(&mut out).unwrap();
        }
        if let Some((at, mask)) = damage {
            let at = usize::from(at);
            if (self.sent..self.sent + out.len()).contains(&at) {
                out[at - self.sent] ^= mask.max(1);
            }
        }
        self.sent += out.len();
        if !out.is_empty() && !bed.write(self.peer, &out) {
            return false;
        }
        let answer = bed.read(self.peer);
        let mut rest = &answer[..];
        while !rest.is_empty() {
            if self.tls.read_tls(&mut rest).is_err() || self.tls.process_new_packets().is_err() {
                return false;
            }
        }
        let mut plain = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut self.tls.reader(), &mut plain) {
            if n == 0 {
                return false;
            }
            self.received.extend_from_slice(&plain[..n]);
        }
        !bed.is_closed(self.peer) || self.tls.wants_write()
    }

    /// Runs the handshake, the upgrade and one echo; whether every step went through.
    fn run(&mut self, bed: &mut TestBed, damage: Option<(u16, u8)>, message: &[u8]) -> bool {
        for _ in 0..16 {
            if !self.tls.is_handshaking() {
                break;
            }
            if !self.exchange(bed, damage) {
                return false;
            }
        }
        if self.tls.is_handshaking() {
            return false;
        }
        let mut frame = vec![0x82, 0x80 | message.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(message);
        let mut writer = self.tls.writer();
        std::io::Write::write_all(&mut writer, REQUEST).unwrap();
        std::io::Write::write_all(&mut writer, &frame).unwrap();
        for _ in 0..4 {
            if !self.exchange(bed, damage) {
                break;
            }
        }
        let mut echo = vec![0x82, message.len() as u8];
        echo.extend_from_slice(message);
        self.received.starts_with(b"HTTP/1.1 101") && self.received.ends_with(&echo)
    }
}

fuzz_target!(|case: Case| {
    let tls = ServerTls::from_pem(CERT, KEY).unwrap();
    let builder = Server::builder()
        .bind_tls("127.0.0.1:0", tls)
        .route("/echo", |_req: &Request<'_>| Ok(Echo));
    let mut bed = TestBed::new(builder).unwrap();
    if case.chunk > 0 {
        bed.set_chunk_size(usize::from(case.chunk));
    }
    let message = &case.message[..case.message.len().min(125)];

    let mut client = Client::new(&mut bed);
    if !case.garbage.is_empty() {
        bed.write(client.peer, &case.garbage);
    }
    let echoed = client.run(&mut bed, case.damage, message);
    if case.garbage.is_empty() && case.damage.is_none() {
        assert!(echoed, "an undamaged exchange failed: {:?}", client.received);
    }
    if !echoed {
        // The server does not wait for ever: past the handshake timeout the peer is gone.
        bed.advance(Duration::from_secs(60));
        assert!(bed.is_closed(client.peer), "a broken TLS connection outlived its timeouts");
    }

    let mut fresh = Client::new(&mut bed);
    assert!(fresh.run(&mut bed, None, b"again"), "the worker stopped serving TLS");
});
