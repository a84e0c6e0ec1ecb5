//! A small blocking WebSocket client over std sockets and the protocol core, for driving the
//! engine in tests (the engine's own client comes later). mio-style helpers tolerate the
//! timing of a real network: every wait has a deadline.
#![allow(dead_code, unreachable_pub)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant as WallClock};

#[cfg(feature = "redis")]
pub mod redis;

use bidir::protocol::deflate::{self, DeflateConfig};
use bidir::protocol::http::{self, ClientRequest, Response, Status};
use bidir::protocol::{
    CloseCode, Config, Connection, DataKind, Event, FrameKind, Input, Instant, Message, State,
};

/// What the client saw, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Got {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<CloseCode>, String),
    /// The server closed TCP.
    Eof,
    Error(bidir::protocol::Error),
}

/// An HTTP answer other than 101.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub struct Client {
    pub stream: TcpStream,
    pub conn: Connection,
    spill: Vec<u8>,
    buf: Vec<u8>,
    pending: Vec<u8>,
    start: WallClock,
    pub headers: Vec<(String, String)>,
}

pub fn now(start: WallClock) -> Instant {
    Instant::from_nanos(start.elapsed().as_nanos() as u64)
}

/// Sends raw bytes and reads the HTTP answer head (and body up to Content-Length).
pub fn raw_http(addr: SocketAddr, request: &[u8]) -> Refused {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request).unwrap();
    let mut buf = Vec::new();
    read_response(&mut stream, &mut buf).unwrap_or_else(|e| panic!("no HTTP answer: {e}"))
}

fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Refused> {
    loop {
        let mut headers = [http::EMPTY_HEADER; 32];
        if let Ok(Status::Complete((res, len))) = Response::parse(buf, &mut headers, 16384) {
            let body_len = res.content_length().unwrap_or(0);
            let status = res.status.0;
            let hs: Vec<(String, String)> = res
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
                .collect();
            let mut body = buf[len..].to_vec();
            while body.len() < body_len {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            if status == 101 {
                // Keep bytes after the head for the connection.
                buf.drain(..len);
            }
            return Ok(Refused { status, headers: hs, body });
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before an answer"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

impl Client {
    pub fn connect(addr: SocketAddr, target: &str) -> Self {
        Self::connect_with(addr, target, "localhost", &[], &[])
            .unwrap_or_else(|r| panic!("refused: {r:?}"))
    }

    pub fn connect_with(
        addr: SocketAddr,
        target: &str,
        host: &str,
        protocols: &[&str],
        headers: &[(&str, &str)],
    ) -> Result<Self, Refused> {
        Self::connect_full(addr, target, host, protocols, headers, None)
    }

    /// Connects offering permessage-deflate with `deflate`; compresses and decompresses if the
    /// server accepts.
    pub fn connect_deflate(addr: SocketAddr, target: &str, deflate: DeflateConfig) -> Self {
        Self::connect_full(addr, target, "localhost", &[], &[], Some(deflate))
            .unwrap_or_else(|r| panic!("refused: {r:?}"))
    }

    pub fn connect_full(
        addr: SocketAddr,
        target: &str,
        host: &str,
        protocols: &[&str],
        headers: &[(&str, &str)],
        deflate: Option<DeflateConfig>,
    ) -> Result<Self, Refused> {
        let start = WallClock::now();
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.set_nodelay(true).unwrap();
        let offer = deflate.as_ref().map(DeflateConfig::offer);
        let request = ClientRequest {
            host,
            target,
            nonce: [7; 16],
            protocols,
            extensions: offer.as_deref(),
            headers,
        };
        let mut out = Vec::new();
        request.write(&mut out).unwrap();
        stream.write_all(&out).unwrap();
        let mut buf = Vec::new();
        let answer = read_response(&mut stream, &mut buf).unwrap();
        if answer.status != 101 {
            return Err(answer);
        }
        let mut config = Config::default();
        config.max_message_size = 64 << 20;
        config.max_frame_size = 64 << 20;
        config.ping_interval = None;
        let mut conn = Connection::client(now(start), config, [3; 32]);
        let extensions =
            answer.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("Sec-WebSocket-Extensions"));
        if let (Some(ours), Some((_, value))) = (&deflate, extensions) {
            let params = deflate::accept_answer(value, ours)
                .expect("a valid deflate answer")
                .expect("deflate");
            conn.enable_deflate(params, ours);
            let codec = conn.new_codec().unwrap();
            conn.attach_codec(codec);
        }
        Ok(Self {
            stream,
            conn,
            spill: Vec::new(),
            buf: vec![0; 256 << 10],
            pending: buf,
            start,
            headers: answer.headers,
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn send(&mut self, msg: Message<'_>) {
        let mut out = Vec::new();
        self.conn.send(msg, &mut out).unwrap();
        self.stream.write_all(&out).unwrap();
    }

    pub fn send_text(&mut self, text: &str) {
        self.send(Message::Text(text));
    }

    pub fn send_frame(&mut self, kind: FrameKind, payload: &[u8]) {
        let mut out = Vec::new();
        self.conn.send_frame(kind, payload, &mut out).unwrap();
        self.stream.write_all(&out).unwrap();
    }

    pub fn ping(&mut self, payload: &[u8]) {
        let mut out = Vec::new();
        self.conn.ping(payload, &mut out).unwrap();
        self.stream.write_all(&out).unwrap();
    }

    pub fn close(&mut self, code: CloseCode, reason: &str) {
        let mut out = Vec::new();
        self.conn.close(now(self.start), code, reason, &mut out).unwrap();
        self.stream.write_all(&out).unwrap();
    }

    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next thing that happens, within the read timeout. Automatic pongs are sent.
    pub fn next(&mut self) -> Got {
        loop {
            if !self.pending.is_empty() {
                let mut pending = std::mem::take(&mut self.pending);
                let got = self.process(&mut pending);
                if let Some(got) = got {
                    return got;
                }
            }
            let n = match self.stream.read(&mut self.buf) {
                Ok(0) => return Got::Eof,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Got::Eof,
                Err(e) => panic!("read failed: {e}"),
            };
            self.pending = self.buf[..n].to_vec();
        }
    }

    /// Feeds `bytes`; returns the first event and keeps the rest pending.
    fn process(&mut self, bytes: &mut [u8]) -> Option<Got> {
        let mut input = Input::new(bytes);
        let got = match self.conn.handle_bytes(now(self.start), &mut input, &mut self.spill) {
            Ok(None) => None,
            Ok(Some(event)) => Some(match event {
                Event::Message(Message::Text(t)) => Got::Text(t.to_owned()),
                Event::Message(Message::Binary(b)) => Got::Binary(b.to_vec()),
                Event::Ping(p) => Got::Ping(p.to_vec()),
                Event::Pong(p) => Got::Pong(p.to_vec()),
                Event::Close(c) => Got::Close(c.code, c.reason.to_owned()),
                other => panic!("unexpected {other:?}"),
            }),
            Err(e) => Some(Got::Error(e)),
        };
        let used = input.consumed();
        let mut out = Vec::new();
        self.conn.poll_transmit(&mut out);
        if !out.is_empty() {
            let _ = self.stream.write_all(&out);
        }
        self.pending = bytes[used..].to_vec();
        got
    }

    /// Reads until a data message arrives, skipping pings and pongs.
    pub fn recv(&mut self) -> Got {
        loop {
            match self.next() {
                Got::Ping(_) | Got::Pong(_) => {}
                other => return other,
            }
        }
    }

    pub fn state(&self) -> State {
        self.conn.state()
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = WallClock::now() + timeout;
    while WallClock::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

pub fn kind_of(got: &Got) -> Option<DataKind> {
    match got {
        Got::Text(_) => Some(DataKind::Text),
        Got::Binary(_) => Some(DataKind::Binary),
        _ => None,
    }
}

/// A server configuration for tests: `workers` unpinned workers (the machine is shared).
pub fn config(workers: usize) -> bidir::ServerConfig {
    let mut config = bidir::ServerConfig::default();
    config.pin_workers = false;
    config.workers = Some(workers);
    config
}
