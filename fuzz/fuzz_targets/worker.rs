//! A whole worker on the in-memory test bed, driven by arbitrary sequences of operations:
//! WebSocket and raw peers connecting, valid frames and garbage in any cuts, short writes and
//! budget changes, peers that stop reading, FIN and reset, sends, closes and publishes from
//! handles, virtual time passing through every timer, and shutdowns.
//!
//! Invariants: no panic; every opened connection gets `on_close` exactly once, and no handler
//! call after it; nothing queued before the close is lost — a peer that received the server's
//! close frame received, before it and in order, every message its handler queued; the
//! server's bytes always decode (the peer's client never finds a protocol error); and the
//! worker stops after a shutdown.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbitrary::Arbitrary;
use bidir::client::Incoming;
use bidir::testbed::{Peer, TestBed};
use bidir::{
    Backpressure, CloseCode, CloseInfo, ConnHandle, Context, Handler, Message, Request, Server,
    ServerConfig, TimerId,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Case {
    /// The per-connection backpressure limit, in 256-byte units (0: 256 bytes).
    backpressure: u8,
    /// Past the limit: close with 1013 instead of refusing the send.
    close_on_backpressure: bool,
    /// Heartbeats every this many 100 ms (0: none).
    ping_every: u8,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// A WebSocket client connects (the upgrade runs at once).
    Connect,
    /// A raw peer connects; what it writes is up to the other operations.
    Open,
    /// A raw peer sends a valid upgrade request, whole or cut at `cut`.
    RawUpgrade {
        peer: u8,
        cut: u8,
    },
    /// A data message from a WebSocket peer; the handler answers each with one message of
    /// `len * 64` bytes.
    Send {
        peer: u8,
        text: bool,
        len: u8,
    },
    Ping {
        peer: u8,
        payload: Vec<u8>,
    },
    Close {
        peer: u8,
        code: u16,
    },
    /// Raw bytes from any peer: garbage, or frames cut anywhere.
    Write {
        peer: u8,
        bytes: Vec<u8>,
    },
    /// What a raw peer received (a WebSocket peer decodes its own).
    Read {
        peer: u8,
    },
    ChunkSize(u8),
    /// The peer's socket takes this many more bytes (`None`: unlimited).
    Budget {
        peer: u8,
        bytes: Option<u16>,
    },
    Reading {
        peer: u8,
        on: bool,
    },
    Fin {
        peer: u8,
    },
    Reset {
        peer: u8,
    },
    /// Sends from a connection's handle, as another thread would.
    HandleSend {
        conn: u8,
        count: u8,
    },
    HandleClose {
        conn: u8,
        code: u16,
    },
    Publish {
        len: u8,
    },
    /// The handler closes, aborts, or sets its timer.
    Command {
        peer: u8,
        what: u8,
    },
    Advance {
        ms: u16,
    },
    RunUntilIdle,
    BeginShutdown {
        grace_ms: u16,
    },
}

/// What the handlers of one connection did, keyed by the peer's port.
#[derive(Debug, Default)]
struct Conn {
    opened: u32,
    closes: u32,
    /// Handler calls after `on_close`.
    late_calls: u32,
    /// Sequence numbers of the messages the handler queued, in order.
    queued: Vec<u32>,
}

#[derive(Default)]
struct Record {
    conns: BTreeMap<u16, Conn>,
    handles: Vec<ConnHandle>,
}

type Shared = Arc<Mutex<Record>>;

/// Answers each message with one of its own ("h<seq>:" and padding), sends from its timer
/// and `on_drain`, and obeys the commands in text messages starting with '!'.
struct Recorder {
    port: u16,
    record: Shared,
    next: u32,
    /// Timers armed and neither fired nor cancelled yet.
    timers: Vec<TimerId>,
}

impl Recorder {
    fn with_conn(&self, f: impl FnOnce(&mut Conn)) {
        let mut record = self.record.lock().unwrap();
        let conn = record.conns.entry(self.port).or_default();
        if conn.closes > 0 {
            conn.late_calls += 1;
        }
        f(conn);
    }

    fn send(&mut self, cx: &mut Context<'_>, len: usize) {
        let seq = self.next;
        self.next += 1;
        let mut text = format!("h{seq}:");
        text.extend(std::iter::repeat_n('.', len));
        if cx.send_text(&text).is_ok() {
            self.with_conn(|c| c.queued.push(seq));
        }
    }
}

impl Handler for Recorder {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        self.port = cx.peer_addr().port();
        self.with_conn(|c| c.opened += 1);
        let handle = cx.handle();
        self.record.lock().unwrap().handles.push(handle);
        cx.subscribe("all");
    }

    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        self.with_conn(|_| {});
        match msg {
            Message::Text("!close") => {
                let _ = cx.close(CloseCode::NORMAL, "asked");
            }
            Message::Text("!abort") => cx.abort(),
            Message::Text("!timer") => self.timers.push(cx.set_timer(Duration::from_millis(250))),
            Message::Text("!cancel") => {
                if let Some(timer) = self.timers.pop() {
                    assert!(cx.cancel_timer(timer), "an armed timer cancels");
                    assert!(!cx.cancel_timer(timer), "once");
                }
            }
            msg => self.send(cx, msg.as_bytes().len() * 64),
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        let at = self.timers.iter().position(|&t| t == timer);
        self.timers.swap_remove(at.expect("only an armed timer fires, once"));
        self.with_conn(|_| {});
        self.send(cx, 10);
    }

    fn on_drain(&mut self, cx: &mut Context<'_>) {
        self.with_conn(|_| {});
        self.send(cx, 1);
    }

    fn on_ping(&mut self, _cx: &mut Context<'_>, _payload: &[u8]) {
        self.with_conn(|_| {});
    }

    fn on_close(&mut self, _cx: &mut Context<'_>, _close: CloseInfo<'_>) {
        self.with_conn(|c| c.closes += 1);
    }
}

const UPGRADE: &[u8] =
    b"GET /w HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// The peers, and the port each connects from (the test bed gives them in order).
struct Peers {
    all: Vec<(Peer, bool)>,
}

impl Peers {
    fn pick(&self, i: u8, websocket_only: bool) -> Option<Peer> {
        let candidates: Vec<Peer> =
            self.all.iter().filter(|(_, ws)| *ws || !websocket_only).map(|(p, _)| *p).collect();
        (!candidates.is_empty()).then(|| candidates[usize::from(i) % candidates.len()])
    }
}

fn config(case: &Case) -> ServerConfig {
    let mut config = ServerConfig::default();
    config.max_connections = 64;
    config.max_backpressure = (usize::from(case.backpressure) + 1) * 256;
    config.drain_threshold = config.max_backpressure / 2;
    if case.close_on_backpressure {
        config.backpressure = Backpressure::Close(CloseCode::TRY_AGAIN_LATER);
    }
    config.protocol.ping_interval =
        (case.ping_every > 0).then(|| Duration::from_millis(100 * u64::from(case.ping_every)));
    config.protocol.pong_timeout = Duration::from_millis(500);
    config.protocol.close_timeout = Duration::from_secs(2);
    config.handshake_timeout = Duration::from_secs(1);
    config.linger = Duration::from_secs(1);
    config.timer_tick = Duration::from_millis(50);
    config
}

fn apply(bed: &mut TestBed, peers: &mut Peers, record: &Shared, op: &Op) {
    match *op {
        Op::Connect => {
            if let Ok(peer) = bed.connect("/w") {
                peers.all.push((peer, true));
            }
        }
        Op::Open => {
            if let Ok(peer) = bed.open() {
                peers.all.push((peer, false));
            }
        }
        Op::RawUpgrade { peer, cut } => {
            if let Some(peer) = peers.pick(peer, false).filter(|p| !is_ws(peers, *p)) {
                let cut = usize::from(cut).min(UPGRADE.len());
                bed.write(peer, &UPGRADE[..cut]);
                bed.write(peer, &UPGRADE[cut..]);
            }
        }
        Op::Send { peer, text, len } => {
            if let Some(peer) = peers.pick(peer, true) {
                let payload = vec![b'x'; usize::from(len)];
                let msg = if text {
                    Message::Text(std::str::from_utf8(&payload).unwrap())
                } else {
                    Message::Binary(&payload)
                };
                let _ = bed.send(peer, msg);
            }
        }
        Op::Ping { peer, ref payload } => {
            if let Some(peer) = peers.pick(peer, true) {
                let _ = bed.ping(peer, payload);
            }
        }
        Op::Close { peer, code } => {
            if let Some(peer) = peers.pick(peer, true) {
                let _ = bed.close(peer, CloseCode(code), "");
            }
        }
        Op::Write { peer, ref bytes } => {
            if let Some(peer) = peers.pick(peer, false) {
                bed.write(peer, bytes);
            }
        }
        Op::Read { peer } => {
            if let Some(peer) = peers.pick(peer, false).filter(|p| !is_ws(peers, *p)) {
                let _ = bed.read(peer);
            }
        }
        Op::ChunkSize(n) => bed.set_chunk_size(usize::from(n)),
        Op::Budget { peer, bytes } => {
            if let Some(peer) = peers.pick(peer, false) {
                bed.set_write_budget(peer, bytes.map(usize::from));
            }
        }
        Op::Reading { peer, on } => {
            if let Some(peer) = peers.pick(peer, true) {
                bed.set_reading(peer, on);
            }
        }
        Op::Fin { peer } => {
            if let Some(peer) = peers.pick(peer, false) {
                bed.shutdown_write(peer);
            }
        }
        Op::Reset { peer } => {
            if let Some(peer) = peers.pick(peer, false) {
                bed.reset(peer);
            }
        }
        Op::HandleSend { conn, count } => {
            let handle = pick_handle(record, conn);
            for i in 0..count {
                if let Some(handle) = &handle {
                    let _ = handle.send_text(&format!("x{i}"));
                }
            }
        }
        Op::HandleClose { conn, code } => {
            if let Some(handle) = pick_handle(record, conn) {
                let _ = handle.close(CloseCode(code), "from a handle");
            }
        }
        Op::Publish { len } => {
            bed.handle().publish("all", Message::Binary(&vec![b'p'; usize::from(len)]));
        }
        Op::Command { peer, what } => {
            if let Some(peer) = peers.pick(peer, true) {
                let command = ["!close", "!abort", "!timer", "!cancel"][usize::from(what % 4)];
                let _ = bed.send(peer, Message::Text(command));
            }
        }
        Op::Advance { ms } => bed.advance(Duration::from_millis(u64::from(ms))),
        Op::RunUntilIdle => bed.run_until_idle(),
        Op::BeginShutdown { grace_ms } => {
            bed.begin_shutdown(Duration::from_millis(u64::from(grace_ms)));
        }
    }
}

fn is_ws(peers: &Peers, peer: Peer) -> bool {
    peers.all.iter().any(|(p, ws)| *p == peer && *ws)
}

fn pick_handle(record: &Shared, i: u8) -> Option<ConnHandle> {
    let record = record.lock().unwrap();
    let n = record.handles.len();
    (n > 0).then(|| record.handles[usize::from(i) % n].clone())
}

/// The sequence number of a message the handler sent ("h<seq>:..."), if it is one.
fn seq_of(msg: &Incoming) -> Option<u32> {
    let Incoming::Text(text) = msg else { return None };
    let rest = text.strip_prefix('h')?;
    rest[..rest.find(':')?].parse().ok()
}

fuzz_target!(|case: Case| {
    let record = Shared::default();
    let hook_record = Arc::clone(&record);
    let builder = Server::builder().config(config(&case)).route("/w", move |_req: &Request<'_>| {
        Ok(Recorder { port: 0, record: Arc::clone(&hook_record), next: 0, timers: Vec::new() })
    });
    let mut bed = TestBed::new(builder).expect("a test bed");
    let mut peers = Peers { all: Vec::new() };
    for op in case.ops.iter().take(256) {
        apply(&mut bed, &mut peers, &record, op);
    }
    // The end: every socket drains, every client reads, and the server shuts down.
    for &(peer, ws) in &peers.all {
        bed.set_write_budget(peer, None);
        if ws {
            bed.set_reading(peer, true);
        }
    }
    bed.shutdown(Duration::from_secs(10));
    assert!(bed.is_stopped(), "the worker did not stop after its shutdown grace");

    for &(peer, ws) in &peers.all {
        if !ws {
            continue;
        }
        // Everything the peer decoded since it connected.
        let got = bed.recv(peer);
        assert!(bed.client_error(peer).is_none(), "{peer:?}: {:?}", bed.client_error(peer));
        // Nothing after the server's close frame; before it, every message queued.
        let close = got.iter().position(|m| matches!(m, Incoming::Close(_)));
        if let Some(at) = close {
            assert_eq!(at + 1, got.len(), "{peer:?} received after the close: {got:?}");
            let record = record.lock().unwrap();
            let port = bed.peer_addr(peer).port();
            let queued = record.conns.get(&port).map_or(&[][..], |c| &c.queued[..]);
            let delivered: Vec<u32> = got.iter().filter_map(seq_of).collect();
            assert_eq!(delivered, queued, "{peer:?} lost what was queued before the close");
        }
    }
    let record = record.lock().unwrap();
    for (port, conn) in &record.conns {
        assert_eq!(conn.opened, 1, "port {port}: {conn:?}");
        assert_eq!(conn.closes, 1, "port {port}: on_close once per connection: {conn:?}");
        assert_eq!(conn.late_calls, 0, "port {port}: handler called after on_close: {conn:?}");
    }
});
