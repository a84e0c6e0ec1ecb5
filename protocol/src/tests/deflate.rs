//! permessage-deflate end to end: negotiated in the handshake, messages compressed by one side
//! and decompressed by the other, in every way of cutting the bytes.

use super::pair::{Pair, Seen, Split};
use crate::deflate::DeflateConfig;
use crate::frame::{FrameHeader, FrameRepr, OpCode, Rsv, mask};
use crate::{CloseCode, DataKind, Error, FrameKind, InvalidFrame, Message};

const SPLITS: [Split; 4] =
    [Split::Whole, Split::Bytewise, Split::Random { max: 7 }, Split::Random { max: 3000 }];

fn json(n: usize) -> String {
    let mut s = String::from("[");
    for i in 0..n {
        s.push_str(&format!(
            "{{\"id\":{i},\"name\":\"item-{}\",\"price\":{}.{:02},\"tags\":[\"a\",\"b\"]}},",
            i % 17,
            i * 7 % 1000,
            i % 100
        ));
    }
    s.push(']');
    s
}

/// Profiles and what the client offers, each combination of the RFC's parameters.
fn profiles() -> Vec<(&'static str, DeflateConfig, DeflateConfig)> {
    let mut demand_8 = DeflateConfig::dedicated(15);
    demand_8.peer_window_bits = 8;
    let mut client_resets = DeflateConfig::dedicated(15);
    client_resets.no_context_takeover = true;
    let mut live_9 = DeflateConfig::dedicated(9);
    live_9.compact_context = false;
    let mut compact_15 = DeflateConfig::dedicated(15);
    compact_15.compact_context = true;
    let mut compact_resets = DeflateConfig::dedicated(11);
    compact_resets.no_context_takeover = true;
    vec![
        ("shared", DeflateConfig::shared(), DeflateConfig::shared()),
        ("dedicated 15", DeflateConfig::dedicated(15), DeflateConfig::dedicated(15)),
        ("dedicated 9", DeflateConfig::dedicated(9), DeflateConfig::dedicated(9)),
        ("live 9", live_9.clone(), live_9),
        ("compact 15, live 15", compact_15.clone(), DeflateConfig::dedicated(15)),
        ("live 15, compact 15", DeflateConfig::dedicated(15), compact_15),
        ("compact, client resets", compact_resets, DeflateConfig::dedicated(11)),
        ("client 15, server 10", DeflateConfig::dedicated(15), DeflateConfig::dedicated(10)),
        (
            "client asks shared, server dedicated",
            DeflateConfig::shared(),
            DeflateConfig::dedicated(15),
        ),
        ("client demands 8", demand_8, DeflateConfig::dedicated(15)),
        ("client resets", client_resets, DeflateConfig::shared()),
    ]
}

/// Wire bytes of the frames the server sent since the last call.
fn server_frames(p: &mut Pair, f: impl FnOnce(&mut crate::Connection, &mut Vec<u8>)) -> Vec<u8> {
    let mut out = vec![];
    f(&mut p.server.conn, &mut out);
    p.client.inbox.extend_from_slice(&out);
    out
}

#[test]
fn round_trips_with_every_parameter_combination() {
    let big = json(3000);
    let texts =
        ["", "hi", "a short message that is over sixty-four bytes long, so compressed!!", &big];
    for (name, client, server) in profiles() {
        for split in SPLITS {
            let mut p = Pair::with_deflate(client.clone(), server.clone(), split, 11);
            assert!(p.server.conn.deflate_params().is_some(), "{name}: negotiated");
            let mut expected = vec![];
            for round in 0..2 {
                for t in texts {
                    p.client_writes(|c, out| c.send(Message::Text(t), out)).unwrap();
                    p.server_writes(|c, out| c.send(Message::Binary(t.as_bytes()), out)).unwrap();
                    expected.push((t.as_bytes().to_vec(), round));
                }
            }
            p.drive();
            assert_eq!(p.server.error, None, "{name} {split:?}");
            assert_eq!(p.client.error, None, "{name} {split:?}");
            let at_server = p.server.take_seen();
            let at_client = p.client.take_seen();
            assert_eq!(at_server.len(), expected.len());
            for ((bytes, _), (s, c)) in expected.iter().zip(at_server.iter().zip(&at_client)) {
                assert!(*s == Seen::Message(DataKind::Text, bytes.clone()), "{name} {split:?}");
                assert!(*c == Seen::Message(DataKind::Binary, bytes.clone()), "{name} {split:?}");
            }
        }
    }
}

#[test]
fn large_messages_really_are_compressed_and_small_ones_are_not() {
    let big = json(2000);
    for (name, client, server) in profiles() {
        let mut p = Pair::with_deflate(client, server.clone(), Split::Whole, 3);
        let wire = server_frames(&mut p, |c, out| c.send(Message::Text(&big), out).unwrap());
        let demanded_8 = name == "client demands 8";
        if demanded_8 {
            // zlib cannot compress with 8 bits: the server sends uncompressed, as it may.
            assert_eq!(wire[0] & 0x40, 0, "{name}");
            assert!(wire.len() > big.len());
        } else {
            assert_eq!(wire[0], 0xc1, "{name}: FIN, RSV1, text");
            assert!(wire.len() < big.len() / 3, "{name}: {} bytes for {}", wire.len(), big.len());
        }
        let wire = server_frames(&mut p, |c, out| c.send(Message::Text("tiny"), out).unwrap());
        assert_eq!(wire, b"\x81\x04tiny", "{name}: below min_size, sent plain");
        p.drive();
        assert_eq!(p.client.take_seen().len(), 2);
    }
}

#[test]
fn context_takeover_makes_repeats_cheap() {
    let msg = json(50);
    let sizes = |client: DeflateConfig, server: DeflateConfig| {
        let mut p = Pair::with_deflate(client, server, Split::Whole, 5);
        let first = server_frames(&mut p, |c, out| c.send(Message::Text(&msg), out).unwrap()).len();
        let second =
            server_frames(&mut p, |c, out| c.send(Message::Text(&msg), out).unwrap()).len();
        p.drive();
        assert_eq!(p.client.take_seen().len(), 2);
        (first, second)
    };
    let (first, second) = sizes(DeflateConfig::dedicated(15), DeflateConfig::dedicated(15));
    assert!(second * 4 < first, "with context takeover: {first} then {second}");
    // Compact context (12 bits: the message fits the window) refers back just as well.
    assert!(msg.len() < 4096);
    let mut live = DeflateConfig::dedicated(12);
    live.compact_context = false;
    let (live_first, live_second) = sizes(live.clone(), live);
    let (first, second) = sizes(DeflateConfig::dedicated(12), DeflateConfig::dedicated(12));
    assert!(second * 4 < first, "compact context: {first} then {second}");
    assert!(second <= live_second + 8, "compact {second} bytes, live {live_second}");
    assert_eq!(first, live_first, "the first message has no history either way");
    let (first, second) = sizes(DeflateConfig::shared(), DeflateConfig::shared());
    assert_eq!(first, second, "without context takeover every message stands alone");
}

#[test]
fn compressed_fragments_with_control_frames_between() {
    let msg = json(400);
    let bytes = msg.as_bytes();
    for (name, client, server) in profiles() {
        for split in SPLITS {
            let mut p = Pair::with_deflate(client.clone(), server.clone(), split, 9);
            p.client_writes(|c, out| {
                c.send_frame(FrameKind::First(DataKind::Text), &bytes[..1000], out)?;
                c.ping(b"between", out)?;
                c.send_frame(FrameKind::Continue, &bytes[1000..5000], out)?;
                c.send_frame(FrameKind::Continue, b"", out)?;
                c.send_frame(FrameKind::Last, &bytes[5000..], out)
            })
            .unwrap();
            p.drive();
            assert_eq!(p.server.error, None, "{name} {split:?}");
            assert_eq!(
                p.server.take_seen(),
                [Seen::Ping(b"between".to_vec()), Seen::Message(DataKind::Text, bytes.to_vec())],
                "{name} {split:?}"
            );
        }
    }
}

#[test]
fn a_compressed_fragment_cannot_continue_uncompressed() {
    let mut p =
        Pair::with_deflate(DeflateConfig::shared(), DeflateConfig::shared(), Split::Whole, 1);
    let mut out = vec![];
    p.server.conn.send_frame(FrameKind::First(DataKind::Binary), b"abc", &mut out).unwrap();
    assert_eq!(out[0], 0x42, "RSV1 on the first frame, not FIN");
    assert_eq!(
        p.server.conn.encode_header(FrameKind::Last, 3),
        Err(crate::SendError::CompressedFragmentInProgress)
    );
    p.server.conn.send_frame(FrameKind::Last, b"def", &mut out).unwrap();
}

#[test]
fn fragment_delivery_gets_a_compressed_message_in_one_piece() {
    let mut p = Pair::with_deflate(
        DeflateConfig::shared(),
        DeflateConfig::shared(),
        Split::Random { max: 100 },
        2,
    );
    p.server.conn = {
        let config = crate::Config { delivery: crate::Delivery::Fragments, ..Default::default() };
        let mut conn = crate::Connection::server(p.now, config);
        conn.enable_deflate(p.client.conn.deflate_params().unwrap(), &DeflateConfig::shared());
        conn
    };
    let msg = json(300);
    p.client_writes(|c, out| c.send(Message::Text(&msg), out)).unwrap();
    p.drive();
    assert_eq!(
        p.server.take_seen(),
        [Seen::Fragment {
            kind: DataKind::Text,
            payload: msg.into_bytes(),
            first: true,
            last: true
        }]
    );
}

/// A client frame (masked), possibly with RSV1.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let key = [9, 8, 7, 6];
    let repr = FrameRepr {
        fin: first & 0x80 != 0,
        rsv: Rsv::from_bits_truncate(first),
        opcode: OpCode::from_bits(first & 0x0f).unwrap(),
        mask: Some(key),
        payload_len: payload.len() as u64,
    };
    let mut out = vec![0; repr.buffer_len()];
    repr.emit(&mut FrameHeader::new_unchecked(&mut out[..]));
    let at = out.len();
    out.extend_from_slice(payload);
    mask::apply_mask(&mut out[at..], key, 0);
    out
}

fn server_gets(raw: Vec<u8>, limit: usize) -> (Option<Error>, Vec<Seen>, Vec<Seen>) {
    let mut p = Pair::with_deflate(
        DeflateConfig::dedicated(15),
        DeflateConfig::dedicated(15),
        Split::Whole,
        4,
    );
    let params = p.server.conn.deflate_params().unwrap();
    let config =
        crate::Config { max_message_size: limit, max_frame_size: limit, ..Default::default() };
    p.server.conn = crate::Connection::server(p.now, config);
    p.server.conn.enable_deflate(params, &DeflateConfig::dedicated(15));
    p.server.inbox = raw;
    p.drive();
    (p.server.error, p.server.take_seen(), p.client.take_seen())
}

/// RFC 7692 §7.2.3.1 and §7.2.3.3, as a client would send them.
#[test]
fn rfc_example_frames() {
    let (err, seen, _) =
        server_gets(client_frame(0xc1, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]), 1 << 20);
    assert_eq!(err, None);
    assert_eq!(seen, [Seen::Message(DataKind::Text, b"Hello".to_vec())]);
    // Fragmented: "Hel" then "lo" of one compressed stream (§7.2.3.1's split example).
    let raw =
        [client_frame(0x41, &[0xf2, 0x48, 0xcd]), client_frame(0x80, &[0xc9, 0xc9, 0x07, 0x00])]
            .concat();
    let (err, seen, _) = server_gets(raw, 1 << 20);
    assert_eq!(err, None);
    assert_eq!(seen, [Seen::Message(DataKind::Text, b"Hello".to_vec())]);
    let stored = [0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00];
    let (err, seen, _) = server_gets(client_frame(0xc2, &stored), 1 << 20);
    assert_eq!(err, None);
    assert_eq!(seen, [Seen::Message(DataKind::Binary, b"Hello".to_vec())]);
}

#[test]
fn rsv1_is_only_for_first_data_frames() {
    for raw in [
        client_frame(0xc9, b""), // ping with RSV1
        [client_frame(0x41, &[0xf2]), client_frame(0xc0, &[0x48])].concat(), // continuation with RSV1
    ] {
        let (err, _, client_saw) = server_gets(raw, 1 << 20);
        assert_eq!(err, Some(InvalidFrame::ReservedBits(0x40).into()));
        assert!(matches!(client_saw.last(), Some(Seen::Close { code: Some(CloseCode(1002)), .. })));
    }
    // Without negotiation, RSV1 is refused at the frame header.
    let mut p = Pair::with_split(Split::Whole);
    p.server.inbox = client_frame(0xc1, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    p.drive();
    assert_eq!(p.server.error, Some(InvalidFrame::ReservedBits(0x40).into()));
}

#[test]
fn bombs_and_garbage_fail_the_connection() {
    // 8 MiB of zeros compress to a few KiB; the limit is 1 MiB: 1009, found while inflating.
    let mut codec = crate::deflate::Codec::new(9, 9, 15);
    let mut bomb = vec![];
    codec.compress(15, &vec![0u8; 8 << 20], true, true, &mut bomb);
    assert!(bomb.len() < 16 << 10);
    let (err, _, client_saw) = server_gets(client_frame(0xc2, &bomb), 1 << 20);
    assert_eq!(err, Some(Error::MessageTooBig { limit: 1 << 20 }));
    assert!(matches!(client_saw.last(), Some(Seen::Close { code: Some(CloseCode(1009)), .. })));
    // Not DEFLATE at all: 1007.
    let (err, _, client_saw) = server_gets(client_frame(0xc2, &[0xff; 16]), 1 << 20);
    assert_eq!(err, Some(Error::InvalidCompressedData));
    assert!(matches!(client_saw.last(), Some(Seen::Close { code: Some(CloseCode(1007)), .. })));
    // Valid DEFLATE, invalid UTF-8 in a text message: 1007 too.
    let mut bad = vec![];
    codec.compress(15, b"ok then \xff", true, true, &mut bad);
    let (err, _, _) = server_gets(client_frame(0xc1, &bad), 1 << 20);
    assert_eq!(err, Some(Error::InvalidUtf8));
}

fn random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 32) as u8
        })
        .collect()
}

/// Incompressible messages go out plain where that leaves the peer's context untouched, and
/// compressed (larger) where a live compressor already took them in; every profile still
/// round trips what follows.
#[test]
fn incompressible_messages_go_out_plain_where_they_can() {
    let noise = random_bytes(4000, 17);
    let text = json(40);
    let mut live = DeflateConfig::dedicated(12);
    live.compact_context = false;
    for (name, config, plain) in [
        ("shared", DeflateConfig::shared(), true),
        ("compact", DeflateConfig::dedicated(12), true),
        ("live", live, false),
    ] {
        let mut p = Pair::with_deflate(config.clone(), config, Split::Whole, 6);
        let wire = server_frames(&mut p, |c, out| c.send(Message::Binary(&noise), out).unwrap());
        assert_eq!(wire[0] & 0x40 == 0, plain, "{name}: RSV1 {:#x}", wire[0]);
        if !plain {
            assert!(wire.len() > noise.len(), "{name}: fixed Huffman codes grow noise");
        }
        for _ in 0..2 {
            server_frames(&mut p, |c, out| c.send(Message::Text(&text), out).unwrap());
        }
        p.drive();
        assert_eq!(p.client.error, None, "{name}");
        let seen = p.client.take_seen();
        assert_eq!(seen[0], Seen::Message(DataKind::Binary, noise.clone()), "{name}");
        assert_eq!(seen[1], Seen::Message(DataKind::Text, text.clone().into_bytes()), "{name}");
        assert_eq!(seen[2], Seen::Message(DataKind::Text, text.clone().into_bytes()), "{name}");
    }
}

/// A peer's compressed noise may be larger on the wire than the frame and message limits:
/// up to 1/8 more is accepted — for compressed frames only.
#[test]
fn compressed_noise_at_the_limits_is_accepted() {
    let limit = 64 << 10;
    let noise = random_bytes(limit, 5);
    let mut tx = crate::deflate::Codec::new(1, 8, 15);
    let mut payload = vec![];
    tx.compress(15, &noise, true, true, &mut payload);
    assert!(payload.len() > limit, "{} bytes compressed for {limit}", payload.len());
    let (err, seen, _) = server_gets(client_frame(0xc2, &payload), limit);
    assert_eq!(err, None);
    assert_eq!(seen, vec![Seen::Message(DataKind::Binary, noise)]);
    // The same size uncompressed is a frame too big.
    let (err, _, client_saw) = server_gets(client_frame(0x82, &payload), limit);
    assert_eq!(err, Some(Error::FrameTooBig { limit: limit as u64 }));
    assert!(matches!(client_saw.last(), Some(Seen::Close { code: Some(CloseCode(1009)), .. })));
}
