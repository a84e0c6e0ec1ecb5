//! A client and a server [`Connection`] joined in memory, with virtual time and a knob for how
//! bytes are split on the way (quinn's `Pair`, rustls's `transfer`).

use core::time::Duration;

use crate::deflate::{DeflateConfig, accept_answer, negotiate};
use crate::http::{self, Accept, ClientRequest, Request, Response, Status};
use crate::{
    CloseCode, Config, Connection, DataKind, Error, Event, Input, Instant, Message, State,
};

/// How bytes in flight are cut before they reach the receiver.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Split {
    /// Everything available at once.
    Whole,
    /// One byte per read.
    Bytewise,
    /// Reads of 1..=max bytes, from a seeded generator.
    Random { max: usize },
}

/// An event with its bytes copied, to compare after the borrow ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    Message(DataKind, Vec<u8>),
    Fragment { kind: DataKind, payload: Vec<u8>, first: bool, last: bool },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close { code: Option<CloseCode>, reason: String, initiated_locally: bool },
}

impl Seen {
    fn from_event(event: Event<'_>) -> Self {
        match event {
            Event::Message(m) => Self::Message(m.kind(), m.as_bytes().to_vec()),
            Event::Fragment(f) => Self::Fragment {
                kind: f.kind,
                payload: f.payload.to_vec(),
                first: f.first,
                last: f.last,
            },
            Event::Ping(p) => Self::Ping(p.to_vec()),
            Event::Pong(p) => Self::Pong(p.to_vec()),
            Event::Close(c) => Self::Close {
                code: c.code,
                reason: c.reason.to_owned(),
                initiated_locally: c.initiated_locally,
            },
        }
    }
}

pub(crate) struct Side {
    pub(crate) conn: Connection,
    pub(crate) spill: Vec<u8>,
    /// Bytes sent to this side, not yet delivered.
    pub(crate) inbox: Vec<u8>,
    pub(crate) seen: Vec<Seen>,
    pub(crate) error: Option<Error>,
    /// Largest the spill buffer grew.
    pub(crate) spill_peak: usize,
    /// Drop whatever this side sends (a peer that vanished).
    pub(crate) muted: bool,
}

impl Side {
    fn new(conn: Connection) -> Self {
        Self {
            conn,
            spill: vec![],
            inbox: vec![],
            seen: vec![],
            error: None,
            spill_peak: 0,
            muted: false,
        }
    }

    /// Feeds `bytes` as one read; records events and the first error.
    fn receive(&mut self, now: Instant, bytes: &mut [u8]) {
        let mut input = Input::new(bytes);
        loop {
            match self.conn.handle_bytes(now, &mut input, &mut self.spill) {
                Ok(Some(event)) => self.seen.push(Seen::from_event(event)),
                Ok(None) => break,
                Err(e) => {
                    self.error.get_or_insert(e);
                    break;
                }
            }
            self.spill_peak = self.spill_peak.max(self.spill.len());
        }
        self.spill_peak = self.spill_peak.max(self.spill.len());
        assert!(self.error.is_some() || input.is_empty(), "input left unconsumed");
    }

    pub(crate) fn take_seen(&mut self) -> Vec<Seen> {
        core::mem::take(&mut self.seen)
    }
}

pub(crate) struct Pair {
    pub(crate) client: Side,
    pub(crate) server: Side,
    pub(crate) now: Instant,
    split: Split,
    rng: u64,
}

impl Pair {
    /// Runs the opening handshake in memory, then joins the two connections.
    pub(crate) fn new(
        client_config: Config,
        server_config: Config,
        split: Split,
        seed: u64,
    ) -> Self {
        Self::build(client_config, server_config, None, split, seed)
    }

    /// As [`Pair::new`], negotiating permessage-deflate: the client offers with its
    /// configuration, the server answers with its own; each side gets its own codec.
    pub(crate) fn with_deflate(
        client: DeflateConfig,
        server: DeflateConfig,
        split: Split,
        seed: u64,
    ) -> Self {
        Self::build(Config::default(), Config::default(), Some((client, server)), split, seed)
    }

    fn build(
        client_config: Config,
        server_config: Config,
        deflate: Option<(DeflateConfig, DeflateConfig)>,
        split: Split,
        seed: u64,
    ) -> Self {
        let now = Instant::from_nanos(1_000_000_000);
        let offer = deflate.as_ref().map(|(client, _)| client.offer());
        let request = ClientRequest {
            host: "example.com",
            target: "/echo?x=1",
            nonce: seed.to_le_bytes().repeat(2).try_into().unwrap(),
            protocols: &["chat"],
            extensions: offer.as_deref(),
            headers: &[],
        };
        let mut wire = vec![];
        request.write(&mut wire).unwrap();

        let mut headers = [http::EMPTY_HEADER; 32];
        let Status::Complete((req, len)) = Request::parse(&wire, &mut headers, 8192).unwrap()
        else {
            panic!("partial request")
        };
        assert_eq!(len, wire.len());
        let upgrade = req.upgrade().unwrap();
        assert_eq!(upgrade.request.path(), "/echo");
        let chosen = upgrade.protocols().find(|p| *p == "chat");
        let server_params =
            deflate.as_ref().and_then(|(_, server)| negotiate(upgrade.extensions(), server));
        let answer_header = server_params.map(|p| p.answer());
        let mut answer = vec![];
        Accept {
            key: upgrade.accept_key(),
            protocol: chosen,
            extensions: answer_header.as_deref(),
            headers: &[],
        }
        .write(&mut answer)
        .unwrap();

        let mut headers = [http::EMPTY_HEADER; 32];
        let Status::Complete((res, _)) = Response::parse(&answer, &mut headers, 8192).unwrap()
        else {
            panic!("partial response")
        };
        let negotiated = res.validate(&request).unwrap();
        assert_eq!(negotiated.protocol, Some("chat"));
        let client_params = match (&deflate, negotiated.extensions) {
            (Some((client, _)), Some(answer)) => accept_answer(answer, client).unwrap(),
            _ => None,
        };
        assert_eq!(client_params, server_params, "both ends agree on the parameters");

        let mut seed32 = [0u8; 32];
        seed32[..8].copy_from_slice(&seed.to_le_bytes());
        let mut client = Connection::client(now, client_config, seed32);
        let mut server = Connection::server(now, server_config);
        if let (Some((client_cfg, server_cfg)), Some(params)) = (&deflate, server_params) {
            client.enable_deflate(params, client_cfg);
            server.enable_deflate(params, server_cfg);
            let codec = client.new_codec().unwrap();
            client.attach_codec(codec);
            let codec = server.new_codec().unwrap();
            server.attach_codec(codec);
        }
        Self { client: Side::new(client), server: Side::new(server), now, split, rng: seed | 1 }
    }

    pub(crate) fn with_split(split: Split) -> Self {
        Self::new(Config::default(), Config::default(), split, 7)
    }

    fn next_len(&mut self, available: usize) -> usize {
        match self.split {
            Split::Whole => available,
            Split::Bytewise => 1,
            Split::Random { max } => {
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                1 + (self.rng as usize) % max
            }
        }
        .min(available)
    }

    /// Lets the client write into the wire towards the server.
    pub(crate) fn client_writes<R>(
        &mut self,
        f: impl FnOnce(&mut Connection, &mut Vec<u8>) -> R,
    ) -> R {
        let mut out = vec![];
        let r = f(&mut self.client.conn, &mut out);
        if !self.client.muted {
            self.server.inbox.extend(out);
        }
        r
    }

    /// Lets the server write into the wire towards the client.
    pub(crate) fn server_writes<R>(
        &mut self,
        f: impl FnOnce(&mut Connection, &mut Vec<u8>) -> R,
    ) -> R {
        let mut out = vec![];
        let r = f(&mut self.server.conn, &mut out);
        if !self.server.muted {
            self.client.inbox.extend(out);
        }
        r
    }

    /// Delivers bytes both ways, and what the connections produce in answer, until quiet.
    pub(crate) fn drive(&mut self) {
        loop {
            let mut progress = false;
            progress |= self.deliver(true);
            progress |= self.deliver(false);
            progress |= self.transmit();
            if !progress {
                break;
            }
        }
    }

    /// Delivers everything in one side's inbox, cut per `split`.
    fn deliver(&mut self, to_server: bool) -> bool {
        let mut bytes = core::mem::take(if to_server {
            &mut self.server.inbox
        } else {
            &mut self.client.inbox
        });
        let mut at = 0;
        while at < bytes.len() {
            let n = self.next_len(bytes.len() - at);
            let side = if to_server { &mut self.server } else { &mut self.client };
            side.receive(self.now, &mut bytes[at..at + n]);
            at += n;
        }
        !bytes.is_empty()
    }

    fn transmit(&mut self) -> bool {
        let a = self.client_writes(|c, out| c.poll_transmit(out));
        let b = self.server_writes(|c, out| c.poll_transmit(out));
        a || b
    }

    /// Moves virtual time forward, firing both sides' timers at every deadline on the way.
    pub(crate) fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        loop {
            let next = [self.client.conn.poll_timeout(), self.server.conn.poll_timeout()]
                .into_iter()
                .flatten()
                .filter(|t| *t <= end)
                .min();
            let Some(next) = next else { break };
            self.now = self.now.max(next);
            for side in [&mut self.client, &mut self.server] {
                if let Err(e) = side.conn.handle_timeout(self.now) {
                    side.error.get_or_insert(e);
                }
            }
            self.drive();
        }
        self.now = end;
    }
}

// -------------------------------------------------------------------------------------------

const SPLITS: [Split; 4] =
    [Split::Whole, Split::Bytewise, Split::Random { max: 7 }, Split::Random { max: 4000 }];

fn text(len: usize) -> String {
    "aé€😀"
        .chars()
        .cycle()
        .scan(0, |n, c| {
            *n += c.len_utf8();
            (*n <= len).then_some(c)
        })
        .collect()
}

fn binary(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn messages_arrive_intact_in_every_split() {
    let sizes = [0usize, 1, 125, 126, 127, 65_535, 65_536, 200_001];
    for split in SPLITS {
        let mut p = Pair::with_split(split);
        let mut expected_at_server = vec![];
        let mut expected_at_client = vec![];
        for &len in &sizes {
            let t = text(len);
            let b = binary(len, len as u8);
            p.client_writes(|c, out| c.send(Message::Text(&t), out)).unwrap();
            p.client_writes(|c, out| c.send(Message::Binary(&b), out)).unwrap();
            p.server_writes(|c, out| c.send(Message::Binary(&b), out)).unwrap();
            expected_at_server.push(Seen::Message(DataKind::Text, t.into_bytes()));
            expected_at_server.push(Seen::Message(DataKind::Binary, b.clone()));
            expected_at_client.push(Seen::Message(DataKind::Binary, b));
        }
        p.drive();
        assert_eq!(p.server.error, None);
        assert_eq!(p.client.error, None);
        assert!(p.server.take_seen() == expected_at_server, "{split:?}");
        assert!(p.client.take_seen() == expected_at_client, "{split:?}");
        // Nothing is held between messages: an idle connection owns no buffer contents.
        assert!(p.server.spill.is_empty() && p.client.spill.is_empty());
    }
}

#[test]
fn whole_messages_in_one_read_are_not_copied() {
    let mut p = Pair::with_split(Split::Whole);
    for _ in 0..10 {
        p.client_writes(|c, out| c.send(Message::Binary(&[9; 1000]), out)).unwrap();
    }
    p.drive();
    assert_eq!(p.server.take_seen().len(), 10);
    assert_eq!(p.server.spill_peak, 0, "a message lying whole in the input went through spill");
}

#[test]
fn fragmented_messages_with_interleaved_control_frames() {
    use crate::FrameKind::{Continue, First, Last};
    for split in SPLITS {
        let mut p = Pair::with_split(split);
        p.client_writes(|c, out| {
            c.send_frame(First(DataKind::Text), "κό".as_bytes(), out)?;
            c.ping(b"mid", out)?;
            // A code point split across fragments.
            c.send_frame(Continue, &"σμε".as_bytes()[..3], out)?;
            c.pong(b"unsolicited", out)?;
            c.send_frame(Continue, &"σμε".as_bytes()[3..], out)?;
            c.send_frame(Last, b"", out)
        })
        .unwrap();
        p.drive();
        assert_eq!(
            p.server.take_seen(),
            [
                Seen::Ping(b"mid".to_vec()),
                Seen::Pong(b"unsolicited".to_vec()),
                Seen::Message(DataKind::Text, "κόσμε".as_bytes().to_vec()),
            ],
            "{split:?}"
        );
        // The automatic pong answered the ping.
        assert_eq!(p.client.take_seen(), [Seen::Pong(b"mid".to_vec())]);
        assert!(p.server.spill.is_empty());
    }
}

#[test]
fn fragment_delivery_streams_without_buffering() {
    use crate::FrameKind::{Continue, First, Last};
    let config = Config { delivery: crate::Delivery::Fragments, ..Config::default() };
    for split in SPLITS {
        let mut p = Pair::new(Config::default(), config.clone(), split, 3);
        let big = binary(100_000, 1);
        p.client_writes(|c, out| {
            c.send_frame(First(DataKind::Binary), &big[..40_000], out)?;
            c.send_frame(Continue, &big[40_000..40_000], out)?;
            c.send_frame(Last, &big[40_000..], out)?;
            c.send(Message::Text("one"), out)
        })
        .unwrap();
        p.drive();
        let mut joined = [vec![], vec![]];
        let mut firsts = [0, 0];
        let mut lasts = [0, 0];
        for s in p.server.take_seen() {
            let Seen::Fragment { kind, payload, first, last } = s else { panic!("{s:?}") };
            let k = usize::from(kind == DataKind::Text);
            // Pieces of one message arrive together: the text starts after the binary ended.
            assert!(k == 0 || lasts[0] == 1);
            joined[k].extend(payload);
            firsts[k] += usize::from(first);
            lasts[k] += usize::from(last);
        }
        assert_eq!((firsts, lasts), ([1, 1], [1, 1]));
        assert!(joined[0] == big);
        assert_eq!(joined[1], b"one");
        assert_eq!(p.server.spill_peak, 0, "fragment delivery buffered payload");
    }
}

#[test]
fn close_initiated_by_client() {
    for split in SPLITS {
        let mut p = Pair::with_split(split);
        p.client_writes(|c, out| c.send(Message::Text("last words"), out)).unwrap();
        let now = p.now;
        p.client_writes(|c, out| c.close(now, CloseCode::NORMAL, "bye", out)).unwrap();
        assert_eq!(p.client.conn.state(), State::Closing);
        // Nothing may follow a close frame.
        assert_eq!(
            p.client_writes(|c, out| c.send(Message::Text("x"), out)),
            Err(crate::SendError::Closed)
        );
        p.drive();
        assert_eq!(
            p.server.take_seen(),
            [
                Seen::Message(DataKind::Text, b"last words".to_vec()),
                Seen::Close {
                    code: Some(CloseCode::NORMAL),
                    reason: "bye".into(),
                    initiated_locally: false
                },
            ]
        );
        assert_eq!(
            p.client.take_seen(),
            [Seen::Close {
                code: Some(CloseCode::NORMAL),
                reason: String::new(),
                initiated_locally: true
            }]
        );
        assert_eq!((p.client.conn.state(), p.server.conn.state()), (State::Closed, State::Closed));
        assert_eq!(p.client.conn.handle_eof(), Ok(()));
        assert_eq!(p.server.conn.handle_eof(), Ok(()));
        assert_eq!(p.client.conn.poll_timeout(), None);
    }
}

#[test]
fn close_initiated_by_server_with_empty_close_reply() {
    let mut p = Pair::with_split(Split::Whole);
    let now = p.now;
    p.server_writes(|c, out| c.close(now, CloseCode(4000), "app", out)).unwrap();
    p.drive();
    assert_eq!(
        p.client.take_seen(),
        [Seen::Close {
            code: Some(CloseCode(4000)),
            reason: "app".into(),
            initiated_locally: false
        }]
    );
    assert_eq!(
        p.server.take_seen(),
        [Seen::Close {
            code: Some(CloseCode(4000)),
            reason: String::new(),
            initiated_locally: true
        }]
    );

    // A close frame without payload is answered without payload and reported as 1005.
    let mut p = Pair::with_split(Split::Whole);
    p.server.inbox.extend([0x88, 0x80, 1, 2, 3, 4]);
    p.drive();
    let seen = p.server.take_seen();
    assert_eq!(seen, [Seen::Close { code: None, reason: String::new(), initiated_locally: false }]);
    // The client connection did not send that close itself (raw bytes did): to it, the empty
    // reply is the peer starting the handshake.
    assert_eq!(
        p.client.take_seen(),
        [Seen::Close { code: None, reason: String::new(), initiated_locally: false }]
    );
}

#[test]
fn close_arguments_are_checked() {
    let mut p = Pair::with_split(Split::Whole);
    let now = p.now;
    let long = "x".repeat(124);
    for (code, reason, err) in [
        (CloseCode::NO_STATUS, "", crate::SendError::InvalidCloseCode(CloseCode::NO_STATUS)),
        (CloseCode::ABNORMAL, "", crate::SendError::InvalidCloseCode(CloseCode::ABNORMAL)),
        (CloseCode(2000), "", crate::SendError::InvalidCloseCode(CloseCode(2000))),
        (CloseCode::NORMAL, long.as_str(), crate::SendError::ControlPayloadTooLong),
    ] {
        assert_eq!(p.server_writes(|c, out| c.close(now, code, reason, out)), Err(err));
    }
    assert_eq!(p.server.conn.state(), State::Open);
    assert_eq!(
        p.server_writes(|c, out| c.ping(&[0; 126], out)),
        Err(crate::SendError::ControlPayloadTooLong)
    );
}

/// Raw bytes to the server: what a misbehaving client sends.
fn server_receives(raw: &[u8], config: Config) -> (Option<Error>, Vec<Seen>, Vec<Seen>) {
    let mut p = Pair::new(Config::default(), config, Split::Whole, 5);
    p.server.inbox.extend_from_slice(raw);
    p.drive();
    (p.server.error, p.server.take_seen(), p.client.take_seen())
}

pub(super) fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut v = vec![first];
    match payload.len() {
        n @ 0..=125 => v.push(0x80 | n as u8),
        n @ 126..=65535 => {
            v.push(0x80 | 126);
            v.extend((n as u16).to_be_bytes());
        }
        n => {
            v.push(0x80 | 127);
            v.extend((n as u64).to_be_bytes());
        }
    }
    v.extend(key);
    v.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    v
}

#[test]
fn protocol_errors_close_with_1002() {
    use crate::{InvalidFrame, PeerMisbehaved};
    let cases: [(Vec<u8>, Error); 7] = [
        (vec![0x81, 0x00], InvalidFrame::UnmaskedFrame.into()),
        (masked(0x83, b""), InvalidFrame::ReservedOpcode(3).into()),
        (masked(0xa1, b""), InvalidFrame::ReservedBits(0x20).into()),
        (masked(0x09, b""), InvalidFrame::FragmentedControlFrame.into()),
        (masked(0x80, b"x"), PeerMisbehaved::UnexpectedContinuation.into()),
        (
            [masked(0x01, b"a"), masked(0x81, b"b")].concat(),
            PeerMisbehaved::ExpectedContinuation.into(),
        ),
        (masked(0x88, &[0x03]), PeerMisbehaved::ClosePayloadTooShort.into()),
    ];
    for (raw, expected) in cases {
        let (error, _, client_saw) = server_receives(&raw, Config::default());
        assert_eq!(error, Some(expected));
        let Some(Seen::Close { code, .. }) = client_saw.last() else { panic!("{client_saw:?}") };
        assert_eq!(*code, Some(CloseCode::PROTOCOL_ERROR), "{expected:?}");
    }
    let (error, _, client_saw) =
        server_receives(&masked(0x88, &1005u16.to_be_bytes()), Config::default());
    assert_eq!(error, Some(PeerMisbehaved::InvalidCloseCode(1005).into()));
    assert!(matches!(client_saw.last(), Some(Seen::Close { code: Some(CloseCode(1002)), .. })));
}

#[test]
fn invalid_utf8_fails_fast_with_1007() {
    // The first fragment is already invalid; the message never finishes.
    let raw = masked(0x01, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80");
    let (error, seen, client_saw) = server_receives(&raw, Config::default());
    assert_eq!(error, Some(Error::InvalidUtf8));
    assert!(seen.is_empty());
    assert!(matches!(client_saw.last(), Some(Seen::Close { code: Some(CloseCode(1007)), .. })));
    // Whole invalid message and invalid close reason.
    assert_eq!(
        server_receives(&masked(0x81, b"\xff"), Config::default()).0,
        Some(Error::InvalidUtf8)
    );
    assert_eq!(
        server_receives(&masked(0x88, b"\x03\xe8\xff"), Config::default()).0,
        Some(Error::InvalidUtf8)
    );
    // Ends inside a code point.
    let raw = [masked(0x01, b"ab\xe2"), masked(0x80, b"\x82")].concat();
    assert_eq!(server_receives(&raw, Config::default()).0, Some(Error::InvalidUtf8));
    // A code point split across fragments is fine.
    let raw = [masked(0x01, b"ab\xe2"), masked(0x80, b"\x82\xac")].concat();
    let (error, seen, _) = server_receives(&raw, Config::default());
    assert_eq!(error, None);
    assert_eq!(seen, [Seen::Message(DataKind::Text, "ab€".as_bytes().to_vec())]);
}

#[test]
fn limits_close_with_1009_before_buffering() {
    let config = Config {
        max_message_size: 1000,
        max_frame_size: 600,
        max_fragments: 3,
        ..Config::default()
    };
    // A frame over the frame limit is refused at its header.
    let header_only = {
        let mut v = masked(0x82, &[0; 601]);
        v.truncate(8);
        v
    };
    let (error, _, client_saw) = server_receives(&header_only, config.clone());
    assert_eq!(error, Some(Error::FrameTooBig { limit: 600 }));
    assert!(matches!(client_saw.last(), Some(Seen::Close { code: Some(CloseCode(1009)), .. })));
    // Fragments that together cross the message limit.
    let raw = [masked(0x02, &[0; 500]), masked(0x80, &[0; 501])].concat();
    assert_eq!(server_receives(&raw, config.clone()).0, Some(Error::MessageTooBig { limit: 1000 }));
    // Too many fragments, even empty ones.
    let raw = [masked(0x02, b""), masked(0x00, b""), masked(0x00, b""), masked(0x80, b"")].concat();
    assert_eq!(server_receives(&raw, config.clone()).0, Some(Error::TooManyFragments { limit: 3 }));
    // At the limits exactly, all is well.
    let raw = [masked(0x02, &[1; 500]), masked(0x00, &[2; 0]), masked(0x80, &[3; 500])].concat();
    let (error, seen, _) = server_receives(&raw, config);
    assert_eq!(error, None);
    assert_eq!(seen.len(), 1);
}

#[test]
fn failed_connection_ignores_input_and_refuses_sends() {
    let mut p = Pair::with_split(Split::Whole);
    p.server.inbox.extend([0x81, 0x00]);
    p.server.inbox.extend(masked(0x81, b"after"));
    p.drive();
    assert!(p.server.error.is_some());
    assert!(p.server.take_seen().is_empty());
    assert_eq!(p.server.conn.state(), State::Closed);
    assert_eq!(
        p.server_writes(|c, out| c.send(Message::Text("x"), out)),
        Err(crate::SendError::Closed)
    );
    assert_eq!(p.server.conn.handle_eof(), Ok(()));
}

#[test]
fn eof_before_close_is_an_error() {
    let mut p = Pair::with_split(Split::Whole);
    assert_eq!(p.server.conn.handle_eof(), Err(Error::UnexpectedEof));
    assert_eq!(p.server.conn.state(), State::Closed);
    assert_eq!(Error::UnexpectedEof.close_code(), CloseCode::ABNORMAL);
}

#[test]
fn internal_failure_sends_1011() {
    let mut p = Pair::with_split(Split::Whole);
    p.server.conn.fail(Error::Internal);
    p.drive();
    assert!(matches!(p.client.take_seen()[..], [Seen::Close { code: Some(CloseCode(1011)), .. }]));
}

#[test]
fn fragment_send_rules() {
    use crate::FrameKind::{Continue, First, Last};
    use crate::SendError;
    let mut p = Pair::with_split(Split::Whole);
    assert_eq!(
        p.client_writes(|c, out| c.send_frame(Continue, b"", out)),
        Err(SendError::NoFragmentInProgress)
    );
    assert_eq!(
        p.client_writes(|c, out| c.send_frame(Last, b"", out)),
        Err(SendError::NoFragmentInProgress)
    );
    p.client_writes(|c, out| c.send_frame(First(DataKind::Text), b"\xe2\x82", out)).unwrap();
    assert_eq!(
        p.client_writes(|c, out| c.send(Message::Text("x"), out)),
        Err(SendError::FragmentInProgress)
    );
    assert_eq!(
        p.client_writes(|c, out| c.send_frame(First(DataKind::Binary), b"", out)),
        Err(SendError::FragmentInProgress)
    );
    // The fragment would leave the message invalid: refused, state unchanged.
    assert_eq!(p.client_writes(|c, out| c.send_frame(Last, b"", out)), Err(SendError::InvalidUtf8));
    assert_eq!(
        p.client_writes(|c, out| c.send_frame(Continue, b"\xff", out)),
        Err(SendError::InvalidUtf8)
    );
    p.client_writes(|c, out| c.send_frame(Last, b"\xac", out)).unwrap();
    assert_eq!(
        p.client_writes(|c, out| c.send_frame(
            crate::FrameKind::Message(DataKind::Text),
            b"\xff",
            out
        )),
        Err(SendError::InvalidUtf8)
    );
    p.drive();
    assert_eq!(p.server.take_seen(), [Seen::Message(DataKind::Text, "€".as_bytes().to_vec())]);
}

#[test]
fn encode_header_lets_the_caller_write_the_payload() {
    let mut p = Pair::with_split(Split::Random { max: 5 });
    let payload = binary(300, 4);
    p.server_writes(|c, out| {
        let header = c.encode_header(crate::FrameKind::Message(DataKind::Binary), payload.len())?;
        assert_eq!(header.mask(), None);
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&payload);
        Ok::<_, crate::SendError>(())
    })
    .unwrap();
    p.client_writes(|c, out| {
        let header = c.encode_header(crate::FrameKind::Message(DataKind::Binary), payload.len())?;
        let key = header.mask().expect("clients mask");
        out.extend_from_slice(header.as_bytes());
        let start = out.len();
        out.extend_from_slice(&payload);
        crate::frame::mask::apply_mask(&mut out[start..], key, 0);
        Ok::<_, crate::SendError>(())
    })
    .unwrap();
    p.drive();
    assert_eq!(p.client.take_seen(), [Seen::Message(DataKind::Binary, payload.clone())]);
    assert_eq!(p.server.take_seen(), [Seen::Message(DataKind::Binary, payload)]);
}

#[test]
fn client_masks_differ_per_frame() {
    let mut p = Pair::with_split(Split::Whole);
    let mut out = vec![];
    for _ in 0..3 {
        p.client.conn.send(Message::Binary(&[0; 4]), &mut out).unwrap();
    }
    // With a zero payload the masked bytes are the keys themselves.
    let keys: Vec<&[u8]> = out.chunks(10).map(|f| &f[6..10]).collect();
    assert_ne!(keys[0], keys[1]);
    assert_ne!(keys[1], keys[2]);
    assert!(keys.iter().all(|k| k == &&out[2..6][..] || k != &&[0u8; 4][..]));
}

#[test]
fn connection_is_small() {
    // Part of the engine's per-connection memory budget (docs/architecture.md).
    let size = size_of::<Connection>();
    assert!(size <= 256, "Connection grew to {size} bytes");
}
