//! One close vocabulary and one send trait: a function written once over `Sink` sends through
//! a server's `Context`, an engine client's `Context`, a `ConnHandle` on another thread, the
//! blocking client and the blocking adapter's `Socket`; every peer receives the same messages
//! and the close as the same typed `CloseInfo`, and the closing side hears its code back.

mod util;

use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use bidir::blocking::Listener;
use bidir::client::{Connect, Incoming, WebSocket};
use bidir::protocol::SendError as Refused;
use bidir::{
    Bytes, CloseCode, CloseInfo, ConnHandle, Context, DataKind, Handler, Message, Request,
    SendError, Server, ServerHandle, Sink,
};
use util::config;

const WAIT: Duration = Duration::from_secs(10);

/// The layer above, written once: the same refusals on every side (nothing sent), then four
/// messages, two of them shared, and a close with `code` and `tag` as the reason.
fn greet<S: Sink + ?Sized>(out: &mut S, tag: &str, code: CloseCode) -> Result<(), SendError> {
    let refused = |e| Err(SendError::Protocol(e));
    assert_eq!(
        out.close(CloseCode::NO_STATUS, tag),
        refused(Refused::InvalidCloseCode(CloseCode::NO_STATUS))
    );
    assert_eq!(out.close(code, &"r".repeat(124)), refused(Refused::ControlPayloadTooLong));
    assert_eq!(
        out.send_shared(DataKind::Text, Bytes::from_static(b"\xff")),
        refused(Refused::InvalidUtf8)
    );
    out.send_text(tag)?;
    out.send_binary(tag.as_bytes())?;
    out.send_shared(DataKind::Text, Bytes::from(format!("{tag}, shared")))?;
    out.send_shared(DataKind::Binary, Bytes::from_static(b"\xff"))?;
    out.close(code, tag)
}

/// What the peer of [`greet`] receives: the messages, then the close it did not start.
fn greeting(tag: &str, code: CloseCode) -> Vec<Incoming> {
    vec![
        Incoming::Text(tag.to_owned()),
        Incoming::Binary(tag.as_bytes().to_vec()),
        Incoming::Text(format!("{tag}, shared")),
        Incoming::Binary(vec![0xff]),
        Incoming::Close(CloseInfo {
            code,
            reason: tag.to_owned().into(),
            clean: true,
            initiated_locally: false,
        }),
    ]
}

/// What the side that ran [`greet`] hears back: its code, echoed without a reason.
fn echo(code: CloseCode) -> Incoming {
    Incoming::Close(CloseInfo { code, reason: "".into(), clean: true, initiated_locally: true })
}

/// One end of a connection on the engine: records what arrives, as the blocking client would
/// see it; on open, greets or hands out its handle.
struct Peer {
    seen: Sender<Incoming>,
    open: Open,
}

enum Open {
    Greet(&'static str, CloseCode),
    Handle(Sender<ConnHandle>),
    Listen,
}

impl Handler for Peer {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        match &self.open {
            Open::Greet(tag, code) => greet(cx, tag, *code).unwrap(),
            Open::Handle(handles) => handles.send(cx.handle()).unwrap(),
            Open::Listen => {}
        }
    }

    fn on_message(&mut self, _cx: &mut Context<'_>, msg: Message<'_>) {
        let _ = self.seen.send(match msg {
            Message::Text(t) => Incoming::Text(t.to_owned()),
            Message::Binary(b) => Incoming::Binary(b.to_vec()),
        });
    }

    fn on_close(&mut self, _cx: &mut Context<'_>, close: CloseInfo<'_>) {
        let _ = self.seen.send(Incoming::Close(close.into_owned()));
    }
}

/// A server with a route per way of greeting, and the channels its handlers report to.
struct Bed {
    server: ServerHandle,
    listener: Listener,
    /// What `/greet`, `/handle` and `/record` connections received.
    greeted: Receiver<Incoming>,
    handled: Receiver<Incoming>,
    recorded: Receiver<Incoming>,
    handles: Receiver<ConnHandle>,
}

fn bed() -> Bed {
    let listener = Listener::new();
    let (greeted_tx, greeted) = mpsc::channel();
    let (handled_tx, handled) = mpsc::channel();
    let (recorded_tx, recorded) = mpsc::channel();
    let (handles_tx, handles) = mpsc::channel();
    let peer = move |seen: &Sender<Incoming>, open: Open| Peer { seen: seen.clone(), open };
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(config(1))
        .route("/greet", move |_: &Request<'_>| {
            Ok(peer(&greeted_tx, Open::Greet("server", CloseCode(4001))))
        })
        .route("/handle", move |_: &Request<'_>| {
            Ok(peer(&handled_tx, Open::Handle(handles_tx.clone())))
        })
        .route("/record", move |_: &Request<'_>| Ok(peer(&recorded_tx, Open::Listen)))
        .route("/socket", listener.hook())
        .start()
        .unwrap();
    Bed { server, listener, greeted, handled, recorded, handles }
}

impl Bed {
    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.server.local_addr())
    }

    fn connect(&self, path: &str) -> WebSocket {
        WebSocket::connect(&self.url(path)).unwrap()
    }
}

/// What a blocking client receives, up to and with the close.
fn received(ws: &mut WebSocket) -> Vec<Incoming> {
    ws.set_read_timeout(Some(WAIT));
    let mut got = Vec::new();
    for _ in 0..16 {
        let item = ws.recv().unwrap();
        let last = matches!(item, Incoming::Close(_));
        got.push(item);
        if last {
            break;
        }
    }
    got
}

/// What a handler on the engine reported, up to and with its close.
fn reported(rx: &Receiver<Incoming>) -> Vec<Incoming> {
    let mut got = Vec::new();
    for _ in 0..16 {
        let item = rx.recv_timeout(WAIT).expect("a report within 10 s");
        let last = matches!(item, Incoming::Close(_));
        got.push(item);
        if last {
            break;
        }
    }
    got
}

#[test]
fn one_function_sends_through_every_sink() {
    let bed = bed();

    // A server handler's Context, in on_open.
    let mut ws = bed.connect("/greet");
    assert_eq!(received(&mut ws), greeting("server", CloseCode(4001)), "server Context");
    assert_eq!(reported(&bed.greeted), [echo(CloseCode(4001))]);

    // A ConnHandle, from this thread (through `&ConnHandle`).
    let mut ws = bed.connect("/handle");
    let handle = bed.handles.recv_timeout(WAIT).unwrap();
    greet(&mut &handle, "handle", CloseCode(4002)).unwrap();
    assert_eq!(received(&mut ws), greeting("handle", CloseCode(4002)), "ConnHandle");
    assert_eq!(reported(&bed.handled), [echo(CloseCode(4002))]);

    // The blocking client; the server's handler receives, and the client reads the echo.
    let mut ws = bed.connect("/record");
    greet(&mut ws, "client", CloseCode(4003)).unwrap();
    assert_eq!(reported(&bed.recorded), greeting("client", CloseCode(4003)), "blocking client");
    assert_eq!(received(&mut ws), [echo(CloseCode(4003))]);

    // The blocking adapter's Socket, as a trait object.
    let mut ws = bed.connect("/socket");
    let mut socket = bed.listener.accept_timeout(WAIT).unwrap();
    greet(&mut socket as &mut dyn Sink, "socket", CloseCode(4004)).unwrap();
    assert_eq!(received(&mut ws), greeting("socket", CloseCode(4004)), "blocking adapter");
    assert_eq!(socket.recv_timeout(WAIT).unwrap(), echo(CloseCode(4004)));

    // An engine client's Context: a worker connects to the server's own /record route.
    let (tx, engine_client) = mpsc::channel();
    let greet_server = Peer { seen: tx, open: Open::Greet("engine client", CloseCode(4005)) };
    bed.server.connect(&Connect::new(&bed.url("/record")).unwrap(), greet_server).unwrap();
    assert_eq!(
        reported(&bed.recorded),
        greeting("engine client", CloseCode(4005)),
        "engine client Context"
    );
    assert_eq!(reported(&engine_client), [echo(CloseCode(4005))]);
}

#[test]
fn close_codes_round_trip_typed() {
    let bed = bed();

    // Blocking client to server: the handler's CloseInfo carries the code; the inherent
    // close waits for the echo and returns it.
    let mut ws = bed.connect("/record");
    let answer = ws.close(CloseCode(4100), "client").unwrap();
    assert_eq!(Incoming::Close(answer), echo(CloseCode(4100)));
    assert_eq!(
        reported(&bed.recorded),
        [Incoming::Close(CloseInfo {
            code: CloseCode(4100),
            reason: "client".into(),
            clean: true,
            initiated_locally: false,
        })]
    );

    // Blocking client to the blocking adapter.
    let mut ws = bed.connect("/socket");
    let socket = bed.listener.accept_timeout(WAIT).unwrap();
    let answer = ws.close(CloseCode::GOING_AWAY, "leaving").unwrap();
    assert_eq!(Incoming::Close(answer), echo(CloseCode::GOING_AWAY));
    let got = socket.recv_timeout(WAIT).unwrap();
    let Incoming::Close(close) = got else { panic!("{got:?}") };
    assert_eq!((close.code, &*close.reason), (CloseCode::GOING_AWAY, "leaving"));
    assert!(close.clean && !close.initiated_locally);

    // A connection that ends without a close frame: 1006, typed, not clean, on both engine
    // sides (the adapter's socket and a server handler).
    let ws = bed.connect("/socket");
    let socket = bed.listener.accept_timeout(WAIT).unwrap();
    drop(ws);
    let got = socket.recv_timeout(WAIT).unwrap();
    let Incoming::Close(close) = got else { panic!("{got:?}") };
    assert_eq!(
        (close.code, close.clean, close.initiated_locally),
        (CloseCode::ABNORMAL, false, false)
    );
    drop(bed.connect("/record"));
    let got = reported(&bed.recorded);
    let [Incoming::Close(close)] = &got[..] else { panic!("{got:?}") };
    assert_eq!((close.code, close.clean), (CloseCode::ABNORMAL, false));
}
