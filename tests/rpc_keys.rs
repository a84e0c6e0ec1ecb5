//! `bidir.bin.v1` encrypted: both key modes end to end through the Rust client (calls,
//! compressed messages, callbacks, events), wrong and missing keys refused before any
//! message, and tampered, replayed, reordered and truncated messages closing the connection
//! with 1008, counted, never delivered.

mod util;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use bidir::client::{Connect, ConnectError, Incoming, WebSocket};
use bidir::protocol::rpc::Msg;
use bidir::protocol::rpc::bin::{self, BinMsg};
use bidir::protocol::rpc::envelope::{self, Inbound};
use bidir::protocol::rpc::key::{self, KeyExchange};
use bidir::protocol::rpc::seal::Sealer;
use bidir::rpc::client::Client;
use bidir::rpc::{Callback, KeyMode, Psk, Services, Wire};
use bidir::{CloseCode, Message, Server, ServerHandle};
use util::config;

const WAIT: Duration = Duration::from_secs(10);

fn psk(byte: u8) -> Psk {
    Psk::new(&[byte; 32]).unwrap()
}

/// A keyed server: `Calc.Add`, `Text.echo`, `Chat.join` (keeps the callback), and what it
/// counts.
fn server(
    members: &Arc<Mutex<Vec<Callback>>>,
) -> (ServerHandle, Arc<std::sync::atomic::AtomicU64>) {
    let kept = Arc::clone(members);
    let services = Services::new()
        .method("Calc.Add", |_cx, (a, b): (i64, i64)| Ok::<_, String>(a + b))
        .method("Text.echo", |_cx, (text,): (String,)| Ok::<_, String>(text))
        .method("Chat.join", move |_cx, (callback,): (Callback,)| {
            kept.lock().unwrap().push(callback);
            Ok::<_, String>(())
        })
        .key(psk(7));
    let failures = services.auth_failures();
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(config(1))
        .route("/rpc", services.hook())
        .start()
        .unwrap();
    (server, failures)
}

fn url(server: &ServerHandle) -> String {
    format!("ws://{}/rpc", server.local_addr())
}

#[test]
fn both_key_modes_carry_calls_compressed_messages_callbacks_and_events() {
    for mode in [KeyMode::Psk, KeyMode::Ecdhe] {
        let members = Arc::default();
        let (server, failures) = server(&members);
        let client = Client::builder(&url(&server)).unwrap().key(mode, psk(7)).connect().unwrap();
        assert_eq!(client.call("Calc.Add", (2, 3)), Ok(5), "{mode}");
        // Above the compression threshold both ways, and compressible.
        let long = "all work and no play ".repeat(200);
        assert_eq!(client.call::<_, String>("Text.echo", (&long,)).as_deref(), Ok(&*long));
        let (tx, rx) = mpsc::channel();
        let cb = client.callback_with::<()>(move |method, args| {
            tx.send((method.to_owned(), args.to_string())).unwrap();
            Ok(None)
        });
        client.call::<_, ()>("Chat.join", (&cb,)).unwrap();
        let member = members.lock().unwrap()[0].clone();
        member.invoke("said", ("bob", "hi")).unwrap();
        assert_eq!(rx.recv_timeout(WAIT).unwrap(), ("said".into(), r#"["bob","hi"]"#.into()));
        // Events: packed once, sealed for this subscriber with its own key.
        let (tx, events) = mpsc::channel();
        client.subscribe("news", move |data| tx.send(data.to_string()).unwrap()).unwrap();
        assert_eq!(bidir::rpc::publish(&server, "news", &("hello", 1)).unwrap(), 1);
        bidir::rpc::publish(&server, "news", &long).unwrap();
        assert_eq!(events.recv_timeout(WAIT).unwrap(), r#"["hello",1]"#);
        assert_eq!(events.recv_timeout(WAIT).unwrap(), format!("\"{long}\""));
        assert_eq!((failures.load(Ordering::Relaxed), client.stats().auth_failures), (0, 0));
        client.close();
    }
}

#[test]
fn wrong_and_missing_keys_are_refused_before_any_message() {
    let (server, _) = server(&Arc::default());
    for mode in [KeyMode::Psk, KeyMode::Ecdhe] {
        let wrong = Client::builder(&url(&server)).unwrap().key(mode, psk(8)).connect();
        match wrong {
            Err(ConnectError::Refused(r)) => assert_eq!(r.status, 403, "{mode}"),
            other => panic!("{mode}: {other:?}"),
        }
    }
    // No offer at all, and JSON on an encrypted route.
    for (wire, status) in [(Wire::Bin, 400), (Wire::Json, 403)] {
        match Client::builder(&url(&server)).unwrap().wire(wire).connect() {
            Err(ConnectError::Refused(r)) => assert_eq!(r.status, status, "{wire:?}"),
            other => panic!("{wire:?}: {other:?}"),
        }
    }
    // A server without a key cannot prove one: the client refuses its answer.
    let plain = Server::builder()
        .bind("127.0.0.1:0")
        .config(config(1))
        .route("/rpc", Services::new().hook())
        .start()
        .unwrap();
    match Client::builder(&url(&plain)).unwrap().key(KeyMode::Psk, psk(7)).connect() {
        Err(ConnectError::Rejected(reason)) => assert!(reason.contains("Bidir-Key"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

/// A raw encrypted connection: the key exchange done by hand over the blocking client.
struct Raw {
    ws: WebSocket,
    sealer: Sealer,
    inbound: Inbound,
}

impl Raw {
    fn open(server: &ServerHandle, mode: KeyMode) -> Self {
        let exchange = KeyExchange::start(mode, &psk(7)).unwrap();
        let options = Connect::new(&url(server))
            .unwrap()
            .protocol("bidir.bin.v1")
            .header(key::HEADER, exchange.offer());
        let ws = options.connect().unwrap();
        let (_, answer) = ws
            .response_headers()
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(key::HEADER))
            .unwrap();
        let (sealer, opener) = exchange.finish(answer.as_bytes()).unwrap().client();
        Self { ws, sealer, inbound: Inbound::new(Some(opener), 1 << 20) }
    }

    /// `msg` packed and sealed, as the next message this side sends.
    fn seal(&mut self, msg: &BinMsg<'_>) -> Vec<u8> {
        let mut out = vec![0];
        bin::encode(msg, &mut out);
        envelope::pack(&mut out, None, &mut Vec::new());
        envelope::seal(&mut self.sealer, &mut out).unwrap();
        out
    }

    fn add(&mut self, id: u64) -> Vec<u8> {
        let args = Wire::Bin.value(&(id, 1)).unwrap();
        let bidir::rpc::ValueRef::Pack(args) = args.as_ref() else { unreachable!() };
        self.seal(&Msg::Call { id, method: "Calc.Add".into(), args })
    }

    /// The next message: the decoded answers of a binary one, or the close code.
    fn next(&mut self) -> Result<Vec<String>, CloseCode> {
        match self.ws.recv() {
            Ok(Incoming::Binary(mut bytes)) => {
                let plain = self.inbound.open(&mut bytes).unwrap().to_vec();
                let mut answers = Vec::new();
                bin::decode(&plain, |m| answers.push(format!("{:?}", m.unwrap()))).unwrap();
                Ok(answers)
            }
            Ok(Incoming::Close(close)) => Err(close.code),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn tampered_replayed_reordered_and_truncated_messages_close_with_1008() {
    let (server, failures) = server(&Arc::default());
    let mut raw = Raw::open(&server, KeyMode::Ecdhe);
    let first = raw.add(1);
    raw.ws.send(Message::Binary(&first)).unwrap();
    assert!(raw.next().unwrap()[0].starts_with("Result { id: 1,"));

    type Attack = fn(&mut Raw) -> Vec<Vec<u8>>;
    let attacks: [(&str, Attack); 4] = [
        ("tampered", |raw| {
            let mut msg = raw.add(2);
            let last = msg.len() - 1;
            msg[last] ^= 1;
            vec![msg]
        }),
        ("replayed", |raw| {
            let msg = raw.add(2);
            vec![msg.clone(), msg]
        }),
        ("reordered", |raw| {
            let (second, third) = (raw.add(2), raw.add(3));
            vec![third, second]
        }),
        ("truncated", |raw| {
            let mut msg = raw.add(2);
            msg.truncate(msg.len() - 1);
            vec![msg]
        }),
    ];
    for (n, (what, attack)) in attacks.into_iter().enumerate() {
        let mut raw = Raw::open(&server, KeyMode::Psk);
        let messages = attack(&mut raw);
        // Only the replay's first copy is genuine, and in its place.
        let delivered = usize::from(what == "replayed");
        for msg in &messages {
            raw.ws.send(Message::Binary(msg)).unwrap();
        }
        for _ in 0..delivered {
            assert!(raw.next().unwrap()[0].starts_with("Result { id: 2,"), "{what}");
        }
        assert_eq!(raw.next(), Err(CloseCode::POLICY_VIOLATION), "{what}");
        assert_eq!(failures.load(Ordering::Relaxed), n as u64 + 1, "{what}: counted");
    }
    // An unencrypted message on an encrypted connection.
    let mut raw = Raw::open(&server, KeyMode::Psk);
    raw.ws.send(Message::Binary(&[0, 0x92, 6, 1])).unwrap();
    assert_eq!(raw.next(), Err(CloseCode::POLICY_VIOLATION));
}
