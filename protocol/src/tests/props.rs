//! Property tests: encode → decode round trips for every frame shape, and arbitrary bytes never
//! panic anywhere input from the network reaches.

use proptest::prelude::*;

use super::pair::{Pair, Seen, Split};
use crate::frame::{FrameHeader, FrameRepr, OpCode, Rsv, mask};
use crate::http::{self, ClientRequest, Request, Response, Status};
use crate::{
    Config, Connection, DataKind, Deframer, Delivery, FrameKind, Input, Instant, Message, Role,
};

fn opcode() -> impl Strategy<Value = OpCode> {
    prop_oneof![
        Just(OpCode::Continuation),
        Just(OpCode::Text),
        Just(OpCode::Binary),
        Just(OpCode::Close),
        Just(OpCode::Ping),
        Just(OpCode::Pong),
    ]
}

/// Every valid header: lengths across the 7/16/64-bit forms and their boundaries.
fn frame_repr() -> impl Strategy<Value = FrameRepr> {
    let len = prop_oneof![
        0u64..=125,
        126u64..=65_535,
        65_536u64..=(1 << 63) - 1,
        Just(125u64),
        Just(126),
        Just(65_535),
        Just(65_536),
        Just((1 << 63) - 1),
    ];
    (opcode(), any::<bool>(), 0u8..8, any::<Option<[u8; 4]>>(), len).prop_map(
        |(opcode, fin, rsv, mask, len)| {
            let control = opcode.is_control();
            FrameRepr {
                fin: fin || control,
                rsv: Rsv::from_bits_truncate(rsv << 4),
                opcode,
                mask,
                payload_len: if control { len % 126 } else { len },
            }
        },
    )
}

fn encode(frame: &FrameRepr, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0xa5; frame.buffer_len()];
    frame.emit(&mut FrameHeader::new_unchecked(&mut out[..]));
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = frame.mask {
        mask::apply_mask(&mut out[start..], key, 0);
    }
    out
}

/// Cuts `data` at the given relative points and feeds the pieces through `f`.
fn in_pieces(data: &mut [u8], cuts: &[usize], mut f: impl FnMut(&mut [u8])) {
    let mut at = 0;
    for &c in cuts {
        let n = (c % 97 + 1).min(data.len() - at);
        if n == 0 {
            break;
        }
        f(&mut data[at..at + n]);
        at += n;
    }
    if at < data.len() {
        f(&mut data[at..]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn header_round_trips(frame in frame_repr()) {
        let (bytes, len) = frame.to_bytes();
        let header = FrameHeader::new_checked(&bytes[..len]).unwrap();
        prop_assert_eq!(header.header_len(), len);
        prop_assert_eq!(FrameRepr::parse(&header).unwrap(), frame);
        // One byte short is reported as truncated, never misread.
        prop_assert!(FrameHeader::new_checked(&bytes[..len - 1]).is_err());
    }

    #[test]
    fn frames_round_trip_through_the_deframer(
        frames in prop::collection::vec(
            (opcode(), any::<bool>(), prop::collection::vec(any::<u8>(), 0..300)), 1..8),
        masked in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let role = if masked { Role::Server } else { Role::Client };
        let mut wire = vec![];
        let mut expected = vec![];
        for (i, (opcode, fin, payload)) in frames.iter().enumerate() {
            let payload = if opcode.is_control() { &payload[..payload.len().min(125)] } else { &payload[..] };
            let frame = FrameRepr {
                fin: *fin || opcode.is_control(),
                rsv: Rsv::NONE,
                opcode: *opcode,
                mask: masked.then_some([i as u8, 0x5a, 0xc3, 0x3c]),
                payload_len: payload.len() as u64,
            };
            wire.extend(encode(&frame, payload));
            expected.push((frame, payload.to_vec()));
        }
        let mut deframer = Deframer::new(role, 1 << 20);
        let mut got: Vec<(FrameRepr, Vec<u8>)> = vec![];
        in_pieces(&mut wire, &cuts, |piece| {
            let mut input = Input::new(piece);
            while let Some(chunk) = deframer.next(&mut input) {
                let chunk = chunk.unwrap();
                let bytes = input.get(chunk.payload.clone()).to_vec();
                if chunk.is_first() {
                    got.push((chunk.frame, bytes));
                } else {
                    got.last_mut().unwrap().1.extend(bytes);
                }
            }
        });
        prop_assert_eq!(got, expected);
        prop_assert!(deframer.is_at_boundary());
    }

    #[test]
    fn messages_round_trip_between_client_and_server(
        messages in prop::collection::vec(
            prop_oneof![
                any::<String>().prop_map(|s| (true, s.into_bytes())),
                prop::collection::vec(any::<u8>(), 0..2000).prop_map(|b| (false, b)),
            ],
            1..10,
        ),
        fragment_at in prop::collection::vec(any::<usize>(), 10),
        max_read in 1usize..5000,
        seed in any::<u64>(),
    ) {
        let mut p = Pair::new(Config::default(), Config::default(), Split::Random { max: max_read }, seed);
        let mut expected = vec![];
        for (i, (text, bytes)) in messages.iter().enumerate() {
            let kind = if *text { DataKind::Text } else { DataKind::Binary };
            // Some messages go out in two fragments, cut on a char boundary for text.
            let mut cut = fragment_at[i % fragment_at.len()] % (bytes.len() + 1);
            if *text {
                while !core::str::from_utf8(&bytes[..cut]).map(|_| true).unwrap_or(false) && cut > 0 {
                    cut -= 1;
                }
            }
            p.client_writes(|c, out| {
                if i % 2 == 0 {
                    c.send_frame(FrameKind::Message(kind), bytes, out)
                } else {
                    c.send_frame(FrameKind::First(kind), &bytes[..cut], out)?;
                    c.send_frame(FrameKind::Last, &bytes[cut..], out)
                }
            }).unwrap();
            expected.push(Seen::Message(kind, bytes.clone()));
        }
        p.drive();
        prop_assert_eq!(p.server.error, None);
        prop_assert_eq!(p.server.take_seen(), expected);
        prop_assert!(p.server.spill.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_connection(
        bytes in prop::collection::vec(any::<u8>(), 0..2000),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
        client in any::<bool>(),
        fragments in any::<bool>(),
    ) {
        let mut config = Config { max_message_size: 512, max_frame_size: 256, ..Config::default() };
        if fragments {
            config.delivery = Delivery::Fragments;
        }
        let now = Instant::from_nanos(5);
        let mut conn = if client {
            Connection::client(now, config, [3; 32])
        } else {
            Connection::server(now, config)
        };
        let mut spill = vec![];
        let mut out = vec![];
        let mut data = bytes;
        in_pieces(&mut data, &cuts, |piece| {
            let mut input = Input::new(piece);
            while let Ok(Some(_)) = conn.handle_bytes(now, &mut input, &mut spill) {}
            conn.poll_transmit(&mut out);
        });
        prop_assert!(spill.len() <= 512 + 125);
        let _ = conn.handle_eof();
        let _ = conn.send(Message::Text("after"), &mut out);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_http_parsers(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut headers = [http::EMPTY_HEADER; 16];
        if let Ok(Status::Complete((req, len))) = Request::parse(&bytes, &mut headers, 512) {
            prop_assert!(len <= bytes.len());
            if let Ok(up) = req.upgrade() {
                let _ = up.protocols().count() + up.extensions().count();
            }
        }
        let request = ClientRequest {
            host: "h", target: "/", nonce: [0; 16], protocols: &["p"], extensions: None, headers: &[],
        };
        let mut headers = [http::EMPTY_HEADER; 16];
        if let Ok(Status::Complete((res, _))) = Response::parse(&bytes, &mut headers, 512) {
            let _ = res.validate(&request);
        }
        let _ = http::Extensions::new(&bytes).count();
    }

    #[test]
    fn request_lines_with_arbitrary_headers_parse_or_reject(
        name in "[A-Za-z-]{1,20}",
        value in "[ -~]{0,40}",
    ) {
        let raw = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{name}: {value}\r\n\r\n"
        );
        let mut headers = [http::EMPTY_HEADER; 16];
        let Status::Complete((req, len)) = Request::parse(raw.as_bytes(), &mut headers, 8192).unwrap() else {
            panic!("partial")
        };
        prop_assert_eq!(len, raw.len());
        // Duplicating a required header may make it invalid; anything else keeps it valid.
        let required = ["host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version"];
        if !required.contains(&name.to_ascii_lowercase().as_str()) {
            prop_assert!(req.upgrade().is_ok());
        }
    }
}
