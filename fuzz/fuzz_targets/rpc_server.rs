//! Services on the test bed, over `bidir.json.v1` or `bidir.bin.v1` (the input's first
//! choice), fed arbitrary client messages: calls of real and unknown methods with any
//! arguments, callbacks passed, kept, invoked and called from the service, answers (also to
//! requests the server never made), releases, cancels, batches, garbage in either encoding and
//! in the other kind of message, and the end of the connection. Over `bidir.bin.v1` the
//! well-formed messages are the JSON ones translated, each in a plain envelope; the fuzzer's
//! raw bytes go behind a plain envelope byte (text ops) or as they are (binary ops).
//!
//! Invariants: no panic; the server's every message is valid in the connection's encoding (it
//! opens and decodes without an error); a connection the server closes is closed with a code
//! of docs/rpc.md (1003, 1007, 1008, 1009); the release hook runs at most once per callback (a
//! client may reuse an id after a release).
#![no_main]

use std::sync::{Arc, Mutex};

use arbitrary::Arbitrary;
use bidir::client::{Connect, Incoming};
use bidir::protocol::rpc::envelope::Inbound;
use bidir::protocol::rpc::{bin, json};
use bidir::rpc::{Callback, Reply, Services};
use bidir::testbed::{HOST, TestBed};
use bidir::{CloseCode, Message, Server};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    /// A text message: the fuzzer's bytes, lossily UTF-8.
    Text(Vec<u8>),
    /// A well-formed message built from parts, to get past the decoder often.
    Call {
        id: u8,
        method: u8,
        args: Vec<u8>,
    },
    Join {
        id: u8,
        callback: u8,
    },
    Answer {
        id: u8,
        ok: bool,
    },
    Release {
        callback: u8,
    },
    Cancel {
        id: u8,
    },
    Binary(Vec<u8>),
    /// The service invokes or calls every callback it holds.
    Invoke,
    /// The service answers the deferred calls it owes.
    AnswerOwed,
    Close,
}

type Held = Arc<Mutex<Vec<Callback>>>;

fn services(held: &Held, owed: &Arc<Mutex<Vec<Reply>>>, released: &Held) -> Services {
    let (join, hook) = (Arc::clone(held), Arc::clone(held));
    let (owed, log) = (Arc::clone(owed), Arc::clone(released));
    Services::new()
        .method("T.Add", |_cx, (a, b): (i64, i64)| a.checked_add(b).ok_or("overflow"))
        .method("T.Join", move |_cx, (callback,): (Callback,)| {
            join.lock().unwrap().push(callback);
            Ok::<_, String>(())
        })
        .deferred("T.Later", move |_cx, (): (), reply: Reply| owed.lock().unwrap().push(reply))
        .on_release(move |_cx, callback| {
            log.lock().unwrap().push(callback.clone());
            hook.lock().unwrap().retain(|c| c != callback);
        })
        .max_in_flight(4)
}

/// A JSON message (or batch) written as `bidir.bin.v1`, in a plain envelope; `None` when it
/// does not decode (the fuzzer's own text).
fn translated(text: &str) -> Option<Vec<u8>> {
    let mut packs = Vec::new();
    json::decode(text, |m| {
        let Ok(msg) = m else { return };
        let mut pack = Vec::new();
        let msg = msg.map_blobs(|raw| {
            let value: serde_json::Value = raw.decode().unwrap_or_default();
            let at = pack.len();
            bin::RawPack::encode(&value, &mut pack).unwrap();
            at..pack.len()
        });
        packs.push((msg, pack));
    })
    .ok()?;
    let msgs: Vec<_> = packs
        .iter()
        .map(|(msg, pack)| msg.clone().map_blobs(|r| bin::RawPack::new(&pack[r]).unwrap()))
        .collect();
    let mut out = vec![0];
    bin::encode_batch(&msgs, &mut out);
    (!msgs.is_empty()).then_some(out)
}

fuzz_target!(|input: (bool, Vec<Op>)| {
    let (binary, ops) = input;
    let held = Held::default();
    let owed = Arc::new(Mutex::new(Vec::new()));
    let released = Held::default();
    let builder = Server::builder().route("/rpc", services(&held, &owed, &released).hook());
    let mut bed = TestBed::new(builder).unwrap();
    let protocol = if binary { "bidir.bin.v1" } else { "bidir.json.v1" };
    let options = Connect::new(&format!("ws://{HOST}/rpc")).unwrap().protocol(protocol);
    let mut inbound = Inbound::new(None, 1 << 20);
    let peer = bed.connect_with(&options).unwrap();
    let methods = ["T.Add", "T.Join", "T.Later", "T.Nope", "X.Y"];
    for op in ops.into_iter().take(64) {
        let text = match op {
            Op::Text(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Op::Call { id, method, args } => {
                let args: Vec<i64> = args.iter().map(|&b| i64::from(b) - 128).collect();
                let method = methods[usize::from(method) % methods.len()];
                format!(r#"["call",{id},"{method}",{args:?}]"#)
            }
            Op::Join { id, callback } => {
                format!(r#"["call",{id},"T.Join",[{{"$cb":{callback}}}]]"#)
            }
            Op::Answer { id, ok: true } => format!(r#"["ok",{id},true]"#),
            Op::Answer { id, ok: false } => format!(r#"["err",{id},"service","no"]"#),
            Op::Release { callback } => format!(r#"["release",{callback}]"#),
            Op::Cancel { id } => format!(r#"["cancel",{id}]"#),
            Op::Binary(bytes) => {
                let _ = bed.send(peer, Message::Binary(&bytes));
                continue;
            }
            Op::Invoke => {
                for callback in held.lock().unwrap().iter() {
                    let _ = callback.invoke("Tick", (1,));
                    if let Ok(pending) = callback.call::<_, bool>("Sure", ()) {
                        pending.then(|_cx, _answer| {});
                    }
                }
                continue;
            }
            Op::AnswerOwed => {
                for reply in owed.lock().unwrap().drain(..) {
                    reply.ok(&1);
                }
                continue;
            }
            Op::Close => {
                let _ = bed.close(peer, CloseCode::NORMAL, "");
                continue;
            }
        };
        let _ = match (binary, translated(&text)) {
            (false, _) => bed.send(peer, Message::Text(&text)),
            (true, Some(packed)) => bed.send(peer, Message::Binary(&packed)),
            (true, None) => bed.send(peer, Message::Binary(&[&[0], text.as_bytes()].concat())),
        };
        for got in bed.recv(peer) {
            match got {
                Incoming::Text(text) if !binary => {
                    json::decode(&text, |m| assert!(m.is_ok(), "the server wrote {text}")).unwrap();
                }
                Incoming::Binary(mut bytes) if binary => {
                    let body = inbound.open(&mut bytes).expect("an envelope that opens");
                    bin::decode(body, |m| assert!(m.is_ok(), "the server wrote {m:?}")).unwrap();
                }
                Incoming::Close(close) => assert!(
                    [1000, 1003, 1007, 1008, 1009].contains(&close.code.0),
                    "closed with {close:?}"
                ),
                other => panic!("{other:?}"),
            }
        }
    }
    owed.lock().unwrap().clear();
    bed.shutdown(std::time::Duration::from_secs(1));
    // Once per callback: a client may reuse an id once its callback is released.
    let released = released.lock().unwrap();
    for (i, callback) in released.iter().enumerate() {
        assert!(!released[..i].contains(callback), "released twice: {callback:?}");
    }
});
