//! The connection state machine, driven by arbitrary sequences of inputs.
//!
//! Two connections with the same configuration get the same operations; one receives every
//! byte string whole, the other cut into pieces. Neither may panic or break an invariant; both
//! must report the same messages, control frames, errors and send results; and everything
//! either one writes must be valid frames for its peer, with nothing after a close frame.
#![no_main]

use arbitrary::Arbitrary;
use bidir_protocol::deflate::{DeflateConfig, DeflateParams};
use bidir_protocol::frame::{FrameHeader, FrameRepr, Rsv};
use bidir_protocol::{
    CloseCode, Config, Connection, DataKind, Deframer, Delivery, Event, FrameKind, Input, Instant,
    Message, OpCode, Role, fuzzing,
};
use core::time::Duration;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Case {
    client: bool,
    fragments: bool,
    auto_pong: bool,
    /// permessage-deflate: off, or on with parameters built from these bits (stateless, our
    /// side resetting, the peer resetting, window bits, compact context).
    deflate: Option<(bool, bool, bool, u8, bool)>,
    /// Small limits make the limit paths reachable.
    max_message: u16,
    max_frame: u16,
    max_fragments: u8,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Raw bytes from the peer, and where to cut them for the second connection.
    Raw(Vec<u8>, Vec<u8>),
    /// A well-formed frame from the peer (masked as the role requires unless `wrong_mask`).
    Frame {
        opcode: u8,
        fin: bool,
        rsv1: bool,
        payload: Vec<u8>,
        wrong_mask: bool,
        cut: u8,
    },
    Send {
        text: bool,
        payload: Vec<u8>,
    },
    SendFrame {
        kind: u8,
        payload: Vec<u8>,
    },
    Ping(Vec<u8>),
    Close(u16, String),
    Advance(u16),
    Eof,
    /// From now on the caller's output is backed up (`true`: transmits hold pongs back) or not.
    Congested(bool),
}

#[derive(Debug, PartialEq)]
enum Seen {
    Message(DataKind, Vec<u8>),
    Fragment(DataKind, bool, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<CloseCode>, String, bool),
    Error(bidir_protocol::Error),
    Sent(Result<(), bidir_protocol::SendError>),
}

struct Side {
    conn: Connection,
    spill: Vec<u8>,
    seen: Vec<Seen>,
    /// The streamed message in progress.
    partial: Option<(DataKind, Vec<u8>)>,
    /// Everything written, automatic frames included: when they go out depends on the cuts.
    wire: Vec<u8>,
    /// Transmit with `poll_transmit_congested`: pongs wait, collapsing to the latest.
    congested: bool,
}

impl Side {
    fn new(conn: Connection) -> Self {
        Self { conn, spill: vec![], seen: vec![], partial: None, wire: vec![], congested: false }
    }

    fn feed(&mut self, now: Instant, bytes: &mut [u8]) {
        let mut input = Input::new(bytes);
        loop {
            match self.conn.handle_bytes(now, &mut input, &mut self.spill) {
                Ok(Some(ev)) => {
                    let seen = match ev {
                        Event::Message(m) => Seen::Message(m.kind(), m.as_bytes().to_vec()),
                        Event::Fragment(f) => {
                            // Pieces depend on the cuts: compare whole messages.
                            if f.first {
                                assert!(self.partial.is_none());
                                self.partial = Some((f.kind, vec![]));
                            }
                            let (kind, acc) = self.partial.as_mut().expect("a first piece");
                            assert_eq!(*kind, f.kind);
                            acc.extend(f.payload);
                            if !f.last {
                                continue;
                            }
                            let (kind, acc) = self.partial.take().unwrap();
                            Seen::Fragment(kind, true, acc)
                        }
                        Event::Ping(p) => Seen::Ping(p.to_vec()),
                        Event::Pong(p) => Seen::Pong(p.to_vec()),
                        Event::Close(c) => {
                            Seen::Close(c.code, c.reason.to_owned(), c.initiated_locally)
                        }
                        _ => unreachable!("no other events exist yet"),
                    };
                    self.seen.push(seen);
                }
                Ok(None) => break,
                Err(e) => {
                    // How much of a streamed message went out before the bad byte depends on
                    // the cuts: forget the unfinished message.
                    self.partial = None;
                    self.seen.push(Seen::Error(e));
                    break;
                }
            }
            fuzzing::check_connection(&self.conn, &self.spill);
        }
        fuzzing::check_connection(&self.conn, &self.spill);
        self.transmit();
    }

    fn transmit(&mut self) {
        if self.congested {
            self.conn.poll_transmit_congested(&mut self.wire);
        } else {
            self.conn.poll_transmit(&mut self.wire);
            assert!(!self.conn.has_pending_pong());
        }
    }

    /// Checks that what this side wrote is valid for its peer.
    /// `compressed`: permessage-deflate is on, so RSV1 may mark a message.
    fn check_wire(&mut self, client: bool, compressed: bool) {
        let peer = if client { Role::Server } else { Role::Client };
        let mut deframer = Deframer::new(peer, usize::MAX);
        if compressed {
            deframer.allow_rsv(Rsv::RSV1);
        }
        let mut input = Input::new(&mut self.wire);
        let mut closed = false;
        while let Some(chunk) = deframer.next(&mut input) {
            let chunk = chunk.expect("wrote an invalid frame");
            assert!(!closed, "wrote a frame after a close frame");
            if chunk.is_last && chunk.frame.opcode == OpCode::Close {
                closed = true;
            }
        }
        assert!(deframer.is_at_boundary(), "wrote a partial frame");
    }
}

fn frame_bytes(client: bool, op: &Op) -> Vec<u8> {
    let Op::Frame { opcode, fin, rsv1, payload, wrong_mask, .. } = op else { unreachable!() };
    let opcode = OpCode::from_bits(opcode & 0x0f).unwrap_or(OpCode::Binary);
    // The peer of a server is a client: it masks.
    let masked = !client ^ wrong_mask;
    let repr = FrameRepr {
        fin: *fin,
        rsv: if *rsv1 { Rsv::RSV1 } else { Rsv::NONE },
        opcode,
        mask: masked.then_some([0x12, 0x34, 0x56, 0x78]),
        payload_len: payload.len() as u64,
    };
    let mut bytes = vec![0; repr.buffer_len()];
    repr.emit(&mut FrameHeader::new_unchecked(&mut bytes[..]));
    let start = bytes.len();
    bytes.extend_from_slice(payload);
    if let Some(key) = repr.mask {
        bidir_protocol::frame::mask::apply_mask(&mut bytes[start..], key, 0);
    }
    bytes
}

fuzz_target!(|case: Case| {
    let mut config = Config::default();
    config.max_message_size = usize::from(case.max_message);
    config.max_frame_size = usize::from(case.max_frame);
    config.max_fragments = u32::from(case.max_fragments).max(1);
    config.delivery = if case.fragments { Delivery::Fragments } else { Delivery::Messages };
    config.auto_pong = case.auto_pong;
    config.idle_timeout = Some(Duration::from_secs(100));
    let mut now = Instant::from_nanos(1);
    let make = || {
        let mut conn = if case.client {
            Connection::client(now, config.clone(), [9; 32])
        } else {
            Connection::server(now, config.clone())
        };
        if let Some((stateless, ours, theirs, bits, compact)) = case.deflate {
            let params = DeflateParams {
                server_no_context_takeover: stateless || ours,
                client_no_context_takeover: stateless || theirs,
                server_max_window_bits: Some(8 + bits % 8),
                client_max_window_bits: None,
            };
            let mut config = DeflateConfig::shared();
            config.compact_context = compact;
            conn.enable_deflate(params, &config);
            if let Some(codec) = conn.new_codec() {
                conn.attach_codec(codec);
            }
        }
        conn
    };
    let mut whole = Side::new(make());
    let mut split = Side::new(make());

    for op in &case.ops {
        let (bytes, cuts) = match op {
            Op::Raw(bytes, cuts) => (bytes.clone(), cuts.clone()),
            Op::Frame { cut, .. } => (frame_bytes(case.client, op), vec![*cut]),
            _ => (vec![], vec![]),
        };
        if matches!(op, Op::Raw(..) | Op::Frame { .. }) {
            let mut b = bytes.clone();
            whole.feed(now, &mut b);
            let mut b = bytes;
            let mut at = 0;
            let mut cuts = cuts.iter().cycle();
            while at < b.len() {
                let n = usize::from(*cuts.next().unwrap_or(&255)).max(1).min(b.len() - at);
                split.feed(now, &mut b[at..at + n]);
                at += n;
            }
            continue;
        }
        for side in [&mut whole, &mut split] {
            let mut out = vec![];
            let result = match op {
                Op::Send { text: true, payload } => match core::str::from_utf8(payload) {
                    Ok(t) => side.conn.send(Message::Text(t), &mut out),
                    Err(_) => {
                        side.conn.send_frame(FrameKind::Message(DataKind::Text), payload, &mut out)
                    }
                },
                Op::Send { text: false, payload } => {
                    side.conn.send(Message::Binary(payload), &mut out)
                }
                Op::SendFrame { kind, payload } => {
                    let kind = match kind % 5 {
                        0 => FrameKind::First(DataKind::Text),
                        1 => FrameKind::First(DataKind::Binary),
                        2 => FrameKind::Continue,
                        3 => FrameKind::Last,
                        _ => FrameKind::Message(DataKind::Binary),
                    };
                    side.conn.send_frame(kind, payload, &mut out)
                }
                Op::Ping(p) => side.conn.ping(p, &mut out),
                Op::Close(code, reason) => side.conn.close(now, CloseCode(*code), reason, &mut out),
                Op::Advance(ms) => {
                    let later = now + Duration::from_millis(u64::from(*ms) * 100);
                    side.conn
                        .handle_timeout(later)
                        .map_err(|e| {
                            side.seen.push(Seen::Error(e));
                            bidir_protocol::SendError::Closed
                        })
                        .ok();
                    if let Some(deadline) = side.conn.poll_timeout() {
                        assert!(
                            deadline > later || side.conn.state() != bidir_protocol::State::Open
                        );
                    }
                    side.wire.append(&mut out);
                    side.transmit();
                    Ok(())
                }
                Op::Eof => {
                    if let Err(e) = side.conn.handle_eof() {
                        side.seen.push(Seen::Error(e));
                    }
                    Ok(())
                }
                Op::Congested(congested) => {
                    side.congested = *congested;
                    side.transmit();
                    Ok(())
                }
                Op::Raw(..) | Op::Frame { .. } => unreachable!(),
            };
            side.wire.extend(out);
            side.seen.push(Seen::Sent(result));
            fuzzing::check_connection(&side.conn, &side.spill);
        }
        if let Op::Advance(ms) = op {
            now = now + Duration::from_millis(u64::from(*ms) * 100);
        }
    }
    assert_eq!(whole.seen, split.seen);
    assert_eq!(whole.conn.state(), split.conn.state());
    whole.check_wire(case.client, case.deflate.is_some());
    split.check_wire(case.client, case.deflate.is_some());
});
