//! The Rust client of `bidir.json.v1` against a real server on loopback: calls and typed
//! errors both ways, continuations, timeouts and late answers, cancels, notifications,
//! callbacks and their release, subscriptions, reconnection with its replays, and the worker
//! it must not block.

mod util;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use bidir::protocol::rpc::ErrorCode;
use bidir::rpc::client::{Call, Client, ClientBuilder, LocalCallback};
use bidir::rpc::{CallError, Callback, CallbackError, Reply, Services, Value, ValueRef, Wire};
use bidir::{Accept, CloseCode, Context, Handler, Message, Request, Server, ServerHandle};
use util::config;

/// The interface the tests' callbacks stand for (a marker only).
trait ChatCallback {}

/// A service's own error, travelling as the data of a `service` error.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct RoomFull {
    max: u8,
}

impl fmt::Display for RoomFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "room is full ({})", self.max)
    }
}

/// What the server saw.
#[derive(Default)]
struct Seen {
    /// Replies of `Slow.hold`, never answered unless a test does.
    held: Mutex<Vec<Reply>>,
    log: Mutex<Vec<String>>,
    members: Mutex<Vec<Callback>>,
    joins: Mutex<Vec<String>>,
    released: Mutex<Vec<u64>>,
    kicks: AtomicU64,
}

fn services(seen: &Arc<Seen>) -> Services {
    let (held, log, members, leave, released) =
        (seen.clone(), seen.clone(), seen.clone(), seen.clone(), seen.clone());
    let (kicks, pair) = (seen.clone(), seen.clone());
    Services::new()
        .method("Calc.Add", |_cx, (a, b): (i64, i64)| Ok::<_, String>(a + b))
        .method("Text.len", |_cx, (text,): (String,)| Ok::<_, String>(text.len()))
        .method(
            "Room.enter",
            |_cx, (name,): (String,)| {
                if name == "full" { Err(RoomFull { max: 8 }) } else { Ok(3u8) }
            },
        )
        .deferred("Slow.hold", move |_cx, (_n,): (u64,), reply: Reply| {
            held.held.lock().unwrap().push(reply);
        })
        .method("Log.write", move |_cx, (line,): (String,)| {
            log.log.lock().unwrap().push(line);
            Ok::<_, String>(())
        })
        .method("Chat.join", move |_cx, (name, callback): (String, Callback)| {
            members.joins.lock().unwrap().push(name);
            members.members.lock().unwrap().push(callback);
            Ok::<_, String>(())
        })
        .method("Chat.pair", move |_cx, (first, second): (Callback, Callback)| {
            pair.members.lock().unwrap().extend([first, second]);
            Ok::<_, String>(())
        })
        .method("Chat.leave", move |_cx, (): ()| {
            leave.members.lock().unwrap().clear();
            Ok::<_, String>(())
        })
        .method("Admin.kick", move |cx: &mut Context<'_>, (): ()| {
            kicks.kicks.fetch_add(1, Ordering::Relaxed);
            cx.close(CloseCode::GOING_AWAY, "kicked").map_err(|e| e.to_string())
        })
        .on_release(move |_cx, callback| released.released.lock().unwrap().push(callback.id()))
}

fn server_on(addr: &str, seen: &Arc<Seen>) -> ServerHandle {
    Server::builder()
        .bind(addr)
        .config(config(1))
        .route("/rpc", services(seen).hook())
        .start()
        .unwrap()
}

fn server() -> (ServerHandle, Arc<Seen>) {
    let seen = Arc::default();
    (server_on("127.0.0.1:0", &seen), seen)
}

fn builder(addr: SocketAddr) -> ClientBuilder {
    Client::builder(&format!("ws://{addr}/rpc"))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .backoff(Duration::from_millis(10), Duration::from_millis(100))
}

fn client(server: &ServerHandle) -> Client {
    builder(server.local_addr()).connect().unwrap()
}

const WAIT: Duration = Duration::from_secs(10);

/// Waits (bounded) until `ready` holds.
fn eventually(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ready() {
        assert!(Instant::now() < deadline, "not within {WAIT:?}: {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

fn raw<T: Serialize>(wire: Wire, value: &T) -> Value {
    wire.value(value).unwrap()
}

/// A callback that reports its invocations (method, arguments, thread) and answers nothing.
fn reporting(client: &Client) -> (LocalCallback<dyn ChatCallback>, mpsc::Receiver<Invoked>) {
    let (tx, rx) = mpsc::channel();
    let cb = client.callback_with(move |method, args| {
        let _ = tx.send((method.to_owned(), args.to_string(), thread::current().id()));
        Ok(None)
    });
    (cb, rx)
}

type Invoked = (String, String, ThreadId);

#[test]
fn calls_are_answered_with_values_and_typed_errors() {
    // In both encodings.
    for wire in Wire::ALL {
        let (server, _seen) = server();
        let client = builder(server.local_addr()).wire(wire).connect().unwrap();
        assert_eq!(client.call("Calc.Add", (2, 3)), Ok(5));
        assert_eq!(client.call("Room.enter", ("ada",)), Ok(3u8));
        // A service's own error: its text, and its value as the data, decoded back.
        match client.call::<_, u8>("Room.enter", ("full",)) {
            Err(CallError::Remote { code: ErrorCode::Service, message, data: Some(data) }) => {
                assert_eq!(message, "room is full (8)");
                assert_eq!(serde_json::from_str::<RoomFull>(&data).unwrap(), RoomFull { max: 8 });
            }
            other => panic!("{other:?}"),
        }
        let unknown = client.call::<_, i64>("Calc.Mul", (2, 3));
        assert!(matches!(unknown, Err(CallError::Remote { code: ErrorCode::UnknownMethod, .. })));
        let bad = client.call::<_, i64>("Calc.Add", ("two", 3));
        assert!(matches!(bad, Err(CallError::Remote { code: ErrorCode::BadArgs, .. })), "{bad:?}");
        // An answer of another type, and arguments that are no tuple (nothing is sent).
        assert!(matches!(client.call::<_, String>("Calc.Add", (1, 2)), Err(CallError::Json(_))));
        assert!(matches!(client.call::<_, i64>("Calc.Add", 5), Err(CallError::Json(_))));
        assert_eq!(client.call("Calc.Add", (40, 2)), Ok(42));
        assert_eq!(client.stats().late_answers, 0);
    }
}

#[test]
fn large_calls_made_together_stay_under_the_servers_message_limit() {
    let (server, _seen) = server();
    let client = client(&server);
    // Five 300 KiB calls gathered before the worker sends: 1.5 MiB, over the server's 1 MiB
    // message limit as one batch; cut into batches of about 64 KiB or one call each.
    let text = "x".repeat(300 << 10);
    let calls: Vec<_> =
        (0..5).map(|_| client.call_async::<_, usize>("Text.len", (&text,))).collect();
    for call in calls {
        assert_eq!(call.wait(), Ok(300 << 10));
    }
    assert!(client.is_connected());
}

#[test]
fn call_async_waits_or_continues_on_the_clients_worker() {
    let (server, _seen) = server();
    let client = client(&server);
    let calls: Vec<Call<i64>> = (0..50).map(|i| client.call_async("Calc.Add", (i, 1))).collect();
    for (i, call) in (0..).zip(calls) {
        assert_eq!(call.wait(), Ok(i + 1));
    }
    let (tx, rx) = mpsc::channel();
    let report = move |tx: mpsc::Sender<_>| {
        move |answer: Result<i64, CallError>| {
            let me = thread::current();
            tx.send((answer, me.name().map(str::to_owned), me.id())).unwrap();
        }
    };
    client.call_async("Calc.Add", (40, 2)).then(report(tx.clone()));
    let (answer, name, worker) = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(answer, Ok(42));
    assert_eq!(name.as_deref(), Some("bidir-worker-0"));
    assert_ne!(worker, thread::current().id());
    // A continuation added after the answer came, and one of a call that failed before it
    // was sent, run on the same worker.
    let answered = client.call_async("Calc.Add", (1, 1));
    client.call::<_, i64>("Calc.Add", (0, 0)).unwrap(); // the answer above came before
    answered.then(report(tx.clone()));
    client.call_async("Calc.Add", "no tuple").then(report(tx));
    let (first, _, on) = rx.recv_timeout(WAIT).unwrap();
    assert_eq!((first, on), (Ok(2), worker));
    let (failed, _, on) = rx.recv_timeout(WAIT).unwrap();
    assert!(matches!(failed, Err(CallError::Json(_))));
    assert_eq!(on, worker);
}

#[test]
fn a_call_times_out_and_its_late_answer_is_dropped_and_counted() {
    let (server, seen) = server();
    let client =
        builder(server.local_addr()).timeout(Duration::from_millis(300)).connect().unwrap();
    let started = Instant::now();
    assert_eq!(client.call::<_, u64>("Slow.hold", (1,)), Err(CallError::Timeout));
    assert!(started.elapsed() >= Duration::from_millis(300));
    // A continuation gets its timeout on the worker too.
    let (tx, rx) = mpsc::channel();
    client.call_async::<_, u64>("Slow.hold", (2,)).then(move |answer| tx.send(answer).unwrap());
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), Err(CallError::Timeout));
    // A shorter wait of its own.
    let call = client.call_async::<_, u64>("Slow.hold", (3,));
    assert_eq!(call.wait_timeout(Duration::from_millis(20)), Err(CallError::Timeout));
    eventually("three held calls", || seen.held.lock().unwrap().len() == 3);
    for reply in seen.held.lock().unwrap().drain(..) {
        reply.ok(&7);
    }
    eventually("three late answers", || client.stats().late_answers == 3);
    assert_eq!(client.call("Calc.Add", (1, 1)), Ok(2));
}

#[test]
fn a_cancel_reaches_the_server() {
    let (server, seen) = server();
    let client = client(&server);
    let call = client.call_async::<_, u64>("Slow.hold", (1,));
    eventually("the call held", || seen.held.lock().unwrap().len() == 1);
    let reply = seen.held.lock().unwrap().pop().unwrap();
    assert!(!reply.is_cancelled());
    call.cancel();
    eventually("the reply cancelled", || reply.is_cancelled());
    assert_eq!(call.wait(), Err(CallError::Cancelled));
    reply.ok(&1); // dropped by the server: nothing comes back
    assert_eq!(client.call("Calc.Add", (1, 1)), Ok(2));
    assert_eq!(client.stats().late_answers, 0);
}

#[test]
fn notifications_arrive_in_order_with_calls() {
    let (server, seen) = server();
    let client = client(&server);
    client.notify("Log.write", ("started",)).unwrap();
    client.notify("Log.write", ("running",)).unwrap();
    assert_eq!(client.call("Calc.Add", (1, 1)), Ok(2));
    assert_eq!(*seen.log.lock().unwrap(), ["started", "running"]);
    assert!(matches!(client.notify("Log.write", 1), Err(CallError::Json(_))));
}

#[test]
fn the_server_invokes_callbacks_on_the_clients_worker() {
    // In both encodings.
    for wire in Wire::ALL {
        let (server, seen) = server();
        let client = builder(server.local_addr()).wire(wire).connect().unwrap();
        let (cb, invoked) = reporting(&client);
        client.call::<_, ()>("Chat.join", ("ada", &cb)).unwrap();
        let member = seen.members.lock().unwrap()[0].clone();
        assert_eq!(member.id(), cb.id());
        let from = member.clone();
        thread::spawn(move || {
            from.invoke("said", ("bob", "hi")).unwrap();
            from.invoke("said", ("eve", "yo")).unwrap();
        })
        .join()
        .unwrap();
        let (method, args, worker) = invoked.recv_timeout(WAIT).unwrap();
        assert_eq!((method.as_str(), args.as_str()), ("said", r#"["bob","hi"]"#));
        let (_, args, _) = invoked.recv_timeout(WAIT).unwrap();
        assert_eq!(args, r#"["eve","yo"]"#);
        // The continuations' thread.
        let (tx, rx) = mpsc::channel();
        client.call_async::<_, i64>("Calc.Add", (1, 1)).then(move |_| {
            tx.send(thread::current().id()).unwrap();
        });
        assert_eq!(rx.recv_timeout(WAIT).unwrap(), worker);
    }
}

#[test]
fn a_callback_answers_the_servers_calls_with_values_and_errors() {
    // In both encodings.
    for wire in Wire::ALL {
        let (server, seen) = server();
        let client = builder(server.local_addr()).wire(wire).connect().unwrap();
        let cb: LocalCallback<dyn ChatCallback> =
            client.callback_with(|method, args| match method {
                "name" => Ok(Some(raw(args.wire(), &"ada"))),
                "twice" => {
                    let (n,): (i64,) = args.decode().unwrap();
                    Ok(Some(raw(args.wire(), &(2 * n))))
                }
                "fail" => Err((ErrorCode::Service, "no way".into())),
                "boom" => panic!("boom"),
                _ => Err((ErrorCode::UnknownMethod, format!("no {method}"))),
            });
        client.call::<_, ()>("Chat.join", ("ada", &cb)).unwrap();
        let member = seen.members.lock().unwrap()[0].clone();
        let answers = thread::spawn(move || {
            let wait = |m: &str| member.call::<_, serde_json::Value>(m, (21,)).unwrap().wait();
            [wait("name"), wait("twice"), wait("fail"), wait("boom"), wait("other")]
        })
        .join()
        .unwrap();
        let [name, twice, fail, boom, other] = answers;
        assert_eq!(name, Ok(serde_json::json!("ada")));
        assert_eq!(twice, Ok(serde_json::json!(42)));
        let code = |r: &Result<_, CallError>| match r {
            Err(CallError::Remote { code, message, .. }) => Some((*code, message.clone())),
            _ => None,
        };
        assert_eq!(code(&fail), Some((ErrorCode::Service, "no way".to_owned())));
        assert_eq!(code(&boom).map(|c| c.0), Some(ErrorCode::Internal));
        assert_eq!(code(&other), Some((ErrorCode::UnknownMethod, "no other".to_owned())));
    }
}

#[test]
fn callbacks_are_released_both_ways_and_by_the_end_of_the_connection() {
    // In both encodings.
    for wire in Wire::ALL {
        let (server, seen) = server();
        let client = builder(server.local_addr()).wire(wire).connect().unwrap();
        // The client drops its last clone: the server's release hook runs.
        let (cb, _invoked) = reporting(&client);
        let copy = cb.clone();
        client.call::<_, ()>("Chat.join", ("ada", &cb)).unwrap();
        let id = cb.id();
        let member = seen.members.lock().unwrap()[0].clone();
        drop(cb);
        assert_eq!(client.call("Calc.Add", (0, 0)), Ok(0));
        assert!(seen.released.lock().unwrap().is_empty(), "a clone is still held");
        drop(copy);
        eventually("the release hook", || *seen.released.lock().unwrap() == [id]);
        assert_eq!(member.invoke("said", ()), Err(CallbackError::Released));
        seen.members.lock().unwrap().clear();
        drop(member);
        // The server drops its proxy: the client's callback is released.
        let (cb, _invoked) = reporting(&client);
        client.call::<_, ()>("Chat.join", ("bob", &cb)).unwrap();
        assert!(!cb.is_released());
        client.call::<_, ()>("Chat.leave", ()).unwrap();
        eventually("released by the server", || cb.is_released());
        // Passing a released callback is refused.
        assert_eq!(client.call::<_, ()>("Chat.join", ("bob", &cb)), Err(CallError::Released));
        // The end of the connection: the hook runs for what the server holds.
        let (kept, _invoked) = reporting(&client);
        client.call::<_, ()>("Chat.join", ("eve", &kept)).unwrap();
        let pending = client.call_async::<_, u64>("Slow.hold", (1,));
        eventually("the call held", || seen.held.lock().unwrap().len() == 1);
        client.close();
        assert_eq!(pending.wait(), Err(CallError::Disconnected));
        eventually("released at the end", || seen.released.lock().unwrap().contains(&kept.id()));
        assert!(kept.is_released());
        assert_eq!(client.call::<_, i64>("Calc.Add", (1, 1)), Err(CallError::Disconnected));
        eventually("the connection gone", || server.connections() == 0);
    }
}

#[test]
fn subscriptions_get_events_until_unsubscribed() {
    // In both encodings.
    for wire in Wire::ALL {
        let (server, _seen) = server();
        let client = builder(server.local_addr()).wire(wire).connect().unwrap();
        let (tx, rx) = mpsc::channel();
        client.subscribe("news", move |data| tx.send(data.to_string()).unwrap()).unwrap();
        assert_eq!(bidir::rpc::publish(&server, "news", &("hello", 1)).unwrap(), 1);
        assert_eq!(bidir::rpc::publish(&server, "other", &"not ours").unwrap(), 0);
        assert_eq!(rx.recv_timeout(WAIT).unwrap(), r#"["hello",1]"#);
        assert_eq!(client.unsubscribe("news"), Ok(true));
        assert_eq!(bidir::rpc::publish(&server, "news", &"gone").unwrap(), 0);
        assert_eq!(client.unsubscribe("news"), Ok(false));
        assert!(rx.try_recv().is_err());
    }
}

/// A server that records what the client sends and opens with a message of its own.
struct Recorder {
    first: &'static str,
    seen: mpsc::Sender<String>,
}

impl Handler for Recorder {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.send_text(self.first).unwrap();
    }
    fn on_message(&mut self, _cx: &mut Context<'_>, msg: Message<'_>) {
        if let Message::Text(text) = msg {
            let _ = self.seen.send(text.to_owned());
        }
    }
    fn on_ping(&mut self, _cx: &mut Context<'_>, _payload: &[u8]) {
        let _ = self.seen.send("(ping)".to_owned());
    }
}

#[test]
fn the_wire_carries_publishes_and_answers_to_unknown_callbacks_and_calls() {
    let (tx, rx) = mpsc::channel();
    let first = concat!(
        r#"[["cb",99,"said",[],5],["cb",98,"said",[]],"#,
        r#"["call",6,"Client.nothing",[]],["event","x",1]]"#
    );
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(config(1))
        .route("/rpc", move |_req: &Request<'_>| {
            Ok(Accept::new(Recorder { first, seen: tx.clone() }).protocol("bidir.json.v1"))
        })
        .start()
        .unwrap();
    let client = client(&server);
    // Invocations of callbacks the client does not hold: released again, so that the server
    // drops its proxies.
    assert_eq!(
        rx.recv_timeout(WAIT).unwrap(),
        concat!(
            r#"[["err",5,"released","no callback 99"],["release",99],["release",98],"#,
            r#"["err",6,"unknown_service","no method Client.nothing"]]"#
        )
    );
    client.publish("room", &serde_json::json!({"text": "hi"})).unwrap();
    client.notify("Log.write", ("x",)).unwrap();
    let mut sent = String::new();
    while !sent.contains("note") {
        sent.push_str(&rx.recv_timeout(WAIT).unwrap());
    }
    let publish = sent.find(r#"["pub","room",{"text":"hi"}]"#).expect(&sent);
    assert!(publish < sent.find(r#"["note","Log.write",["x"]]"#).unwrap(), "{sent}");
}

#[test]
fn calls_from_the_clients_worker_that_would_block_are_refused() {
    let (server, seen) = server();
    let client = client(&server);
    let (tx, rx) = mpsc::channel();
    let inside = client.clone();
    let cb: LocalCallback<dyn ChatCallback> = client.callback_with(move |_method, _args| {
        let blocked = inside.call::<_, i64>("Calc.Add", (1, 1));
        let subscribed = inside.subscribe("news", |_| {});
        let unsubscribed = inside.unsubscribe("news");
        let waited = inside.call_async::<_, i64>("Calc.Add", (1, 1)).wait();
        tx.send(format!("{blocked:?} {subscribed:?} {unsubscribed:?} {waited:?}")).unwrap();
        let tx = tx.clone();
        inside.call_async::<_, i64>("Calc.Add", (2, 2)).then(move |sum| {
            tx.send(format!("{sum:?}")).unwrap();
        });
        Ok(None)
    });
    client.call::<_, ()>("Chat.join", ("ada", &cb)).unwrap();
    let member = seen.members.lock().unwrap()[0].clone();
    member.invoke("said", ()).unwrap();
    let refused = "Err(WouldBlockWorker)";
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), [refused; 4].join(" "));
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), "Ok(4)");
    drop(cb); // the dispatch held a client clone
}

#[test]
fn after_a_drop_the_client_reconnects_resubscribes_and_replays_callback_calls() {
    // In both encodings.
    for wire in Wire::ALL {
        let (server, seen) = server();
        let client = builder(server.local_addr()).wire(wire).connect().unwrap();
        let (events, got) = mpsc::channel();
        client.subscribe("news", move |data| events.send(data.to_string()).unwrap()).unwrap();
        let (cb, invoked) = reporting(&client);
        client.call::<_, ()>("Chat.join", ("ada", &cb)).unwrap();
        // A failed call that passed a callback is not replayed.
        let (other, _invoked) = reporting(&client);
        let _ = client.call::<_, ()>("Chat.join", (1, &other));
        let in_flight = client.call_async::<_, u64>("Slow.hold", (1,));
        eventually("the call held", || seen.held.lock().unwrap().len() == 1);
        client.notify("Admin.kick", ()).unwrap();
        assert_eq!(in_flight.wait(), Err(CallError::Disconnected));
        eventually("the join replayed", || seen.joins.lock().unwrap().len() == 2);
        assert_eq!(*seen.joins.lock().unwrap(), ["ada", "ada"]);
        assert!(client.is_connected());
        let stats = client.stats();
        assert_eq!((stats.reconnects, stats.replayed), (1, 1));
        // The first proxy was released by the end of its connection; the replayed one works.
        assert_eq!(*seen.released.lock().unwrap(), [cb.id()]);
        let member = seen.members.lock().unwrap().last().unwrap().clone();
        assert!(!member.is_released());
        member.invoke("said", ("bob", "again")).unwrap();
        let (_, args, _) = invoked.recv_timeout(WAIT).unwrap();
        assert_eq!(args, r#"["bob","again"]"#);
        // The subscription came back before the replay.
        assert_eq!(bidir::rpc::publish(&server, "news", &"back").unwrap(), 1);
        assert_eq!(got.recv_timeout(WAIT).unwrap(), r#""back""#);
        // A callback dropped before the next drop is not replayed again.
        drop(cb);
        eventually("released", || seen.released.lock().unwrap().len() == 2);
        client.notify("Admin.kick", ()).unwrap();
        eventually("reconnected twice", || client.stats().reconnects == 2 && client.is_connected());
        assert_eq!(client.call("Calc.Add", (1, 1)), Ok(2));
        assert_eq!(seen.joins.lock().unwrap().len(), 2);
        assert_eq!(client.stats().replayed, 1);
        assert_eq!(seen.kicks.load(Ordering::Relaxed), 2);
    }
}

#[test]
fn calls_made_while_the_server_is_down_wait_for_the_next_one() {
    let (server, seen) = server();
    let addr = server.local_addr();
    let client = client(&server);
    assert_eq!(client.call("Calc.Add", (1, 1)), Ok(2));
    server.shutdown(Duration::from_secs(1));
    eventually("disconnected", || !client.is_connected());
    let waiting = client.call_async::<_, i64>("Calc.Add", (2, 2));
    thread::sleep(Duration::from_millis(50)); // a few refused attempts
    let _again = server_on(&addr.to_string(), &seen);
    assert_eq!(waiting.wait(), Ok(4));
    assert_eq!(client.stats().reconnects, 1);
}

#[test]
fn without_reconnection_a_drop_ends_the_client() {
    let (server, seen) = server();
    let client = builder(server.local_addr()).no_reconnect().connect().unwrap();
    let (cb, _invoked) = reporting(&client);
    client.call::<_, ()>("Chat.join", ("ada", &cb)).unwrap();
    let token = Arc::new(());
    let held = Arc::clone(&token);
    client.subscribe("news", move |_| drop(Arc::clone(&held))).unwrap();
    client.notify("Admin.kick", ()).unwrap();
    eventually("released", || cb.is_released());
    // The topics' handlers are let go of then, not when the last clone is dropped.
    eventually("the handler dropped", || Arc::strong_count(&token) == 1);
    assert!(!client.is_connected());
    assert_eq!(client.call::<_, i64>("Calc.Add", (1, 1)), Err(CallError::Disconnected));
    assert_eq!(client.notify("Log.write", ("x",)), Err(CallError::Disconnected));
    assert_eq!(client.stats().reconnects, 0);
    assert_eq!(seen.joins.lock().unwrap().len(), 1);
}

#[test]
fn a_first_connection_that_fails_is_an_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let refused = builder(closed).connect();
    assert!(matches!(refused, Err(bidir::client::ConnectError::Io(_))), "{refused:?}");
    // A server that does not speak bidir.json.v1.
    let (server, _seen) = server();
    let url = format!("ws://{}/nothing", server.local_addr());
    let refused = Client::connect(&url);
    assert!(matches!(refused, Err(bidir::client::ConnectError::Refused(_))), "{refused:?}");
}

#[test]
fn headers_and_heartbeats_come_from_the_builder() {
    let (tx, rx) = mpsc::channel();
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(config(1))
        .route("/rpc", move |req: &Request<'_>| {
            if req.header("authorization") != Some("Bearer sesame") {
                return Err(bidir::HttpResponse::unauthorized().body("who?"));
            }
            let first = r#"["event","x",1]"#;
            Ok(Accept::new(Recorder { first, seen: tx.clone() }).protocol("bidir.json.v1"))
        })
        .start()
        .unwrap();
    let refused = builder(server.local_addr()).connect();
    assert!(
        matches!(&refused, Err(bidir::client::ConnectError::Refused(r)) if r.status == 401),
        "{refused:?}"
    );
    let client = builder(server.local_addr())
        .header("Authorization", "Bearer sesame")
        .heartbeat(Some(Duration::from_millis(30)))
        .connect()
        .unwrap();
    // Quiet after its first message: the client pings.
    let deadline = Instant::now() + WAIT;
    while rx.recv_timeout(WAIT).unwrap() != "(ping)" {
        assert!(Instant::now() < deadline);
    }
    drop(client);
}

#[test]
fn clients_share_an_engine_that_outlives_them() {
    let (server, _seen) = server();
    let engine = Server::builder().config(config(2)).start().unwrap();
    let on = |engine: &ServerHandle| builder(server.local_addr()).engine(engine.clone());
    let (first, second) = (on(&engine).connect().unwrap(), on(&engine).connect().unwrap());
    eventually("two connections", || engine.connections() == 2);
    let (tx, rx) = mpsc::channel();
    second.call_async::<_, i64>("Calc.Add", (1, 2)).then(move |sum| {
        tx.send((sum, thread::current().name().map(str::to_owned))).unwrap();
    });
    let (sum, name) = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(sum, Ok(3));
    assert!(name.unwrap().starts_with("bidir-worker-"));
    first.close();
    eventually("one connection left", || engine.connections() == 1);
    assert_eq!(second.call("Calc.Add", (2, 2)), Ok(4));
    drop(second);
    eventually("none left", || engine.connections() == 0);
    engine.shutdown(Duration::from_secs(1));
}

/// A server that records what clients send (and answers nothing), at `addr`.
fn recorder(addr: &str, seen: &mpsc::Sender<String>) -> ServerHandle {
    let seen = seen.clone();
    Server::builder()
        .bind(addr)
        .config(config(1))
        .route("/rpc", move |_req: &Request<'_>| {
            let recorder = Recorder { first: r#"["event","x",1]"#, seen: seen.clone() };
            Ok(Accept::new(recorder).protocol("bidir.json.v1"))
        })
        .start()
        .unwrap()
}

#[test]
fn a_call_queued_while_disconnected_releases_the_callbacks_dropped_meanwhile() {
    let (server, seen) = server();
    let addr = server.local_addr();
    let client = client(&server);
    server.shutdown(Duration::from_secs(1));
    eventually("disconnected", || !client.is_connected());
    let (cb, _invoked) = reporting(&client);
    let id = cb.id();
    let join = client.call_async::<_, ()>("Chat.join", ("ada", &cb));
    drop(cb); // before the call is sent: the server builds a proxy of a dead callback
    let _again = server_on(&addr.to_string(), &seen);
    assert_eq!(join.wait(), Ok(()));
    eventually("the dead callback released", || *seen.released.lock().unwrap() == [id]);
    assert!(seen.members.lock().unwrap()[0].is_released());
    assert_eq!(client.stats().replayed, 0);
}

#[test]
fn a_replay_releases_the_callbacks_it_names_that_died_since() {
    let (server, seen) = server();
    let client = client(&server);
    let (kept, _kept_invoked) = reporting(&client);
    let (gone, _gone_invoked) = reporting(&client);
    let (kept_id, gone_id) = (kept.id(), gone.id());
    client.call::<_, ()>("Chat.pair", (&kept, &gone)).unwrap();
    drop(gone);
    eventually("released", || *seen.released.lock().unwrap() == [gone_id]);
    client.notify("Admin.kick", ()).unwrap();
    eventually("replayed", || seen.members.lock().unwrap().len() == 4);
    assert_eq!(client.stats().replayed, 1);
    // The replay named `gone` again: the server built a proxy for it, released at once.
    eventually("released after the replay", || {
        *seen.released.lock().unwrap() == [gone_id, kept_id, gone_id]
    });
    let members = seen.members.lock().unwrap().clone();
    assert_eq!((members[2].id(), members[3].id()), (kept_id, gone_id));
    assert!(!members[2].is_released());
    assert!(members[3].is_released());
}

#[test]
fn a_subscription_made_while_disconnected_is_sent_once() {
    let (tx, rx) = mpsc::channel();
    let server = recorder("127.0.0.1:0", &tx);
    let addr = server.local_addr();
    let client = builder(addr).timeout(Duration::from_secs(2)).connect().unwrap();
    server.shutdown(Duration::from_secs(1));
    eventually("disconnected", || !client.is_connected());
    let subscriber = client.clone();
    let subscribing = thread::spawn(move || subscriber.subscribe("news", |_| {}));
    thread::sleep(Duration::from_millis(50)); // queued for the next connection
    let _again = recorder(&addr.to_string(), &tx);
    let sent = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(sent.matches(r#""news""#).count(), 1, "{sent}");
    // The recorder answers nothing.
    assert_eq!(subscribing.join().unwrap(), Err(CallError::Timeout));
}

#[test]
fn a_failed_subscription_leaves_the_topic_as_it_was() {
    let seen = Arc::default();
    let subscriptions = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&subscriptions);
    let services = services(&seen).authorize_subscribe(move |_cx, topic| {
        match (topic, count.fetch_add(1, Ordering::Relaxed)) {
            ("news", 0) => Ok(()),
            _ => Err("once".into()),
        }
    });
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(config(1))
        .route("/rpc", services.hook())
        .start()
        .unwrap();
    let client = client(&server);
    let (tx, rx) = mpsc::channel();
    let first = tx.clone();
    client.subscribe("news", move |data| first.send(("first", data.to_string())).unwrap()).unwrap();
    // Refused: the server keeps the first subscription, and the client its first handler.
    let second = move |data: ValueRef<'_>| tx.send(("second", data.to_string())).unwrap();
    let refused = client.subscribe("news", second);
    assert!(matches!(refused, Err(CallError::Remote { code: ErrorCode::Unauthorized, .. })));
    assert_eq!(bidir::rpc::publish(&server, "news", &1).unwrap(), 1);
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), ("first", "1".to_owned()));
    // A new topic refused is not kept.
    assert!(client.subscribe("other", |_| {}).is_err());
    assert_eq!(client.unsubscribe("news"), Ok(true));
    assert!(rx.try_recv().is_err());
}

/// Services without `Chat`: a server that now refuses what an older one accepted.
fn server_without_chat(addr: &str) -> ServerHandle {
    let services = Services::new()
        .method("Calc.Add", |_cx, (a, b): (i64, i64)| Ok::<_, String>(a + b))
        .method("Admin.kick", |cx: &mut Context<'_>, (): ()| {
            cx.close(CloseCode::GOING_AWAY, "kicked").map_err(|e| e.to_string())
        });
    Server::builder().bind(addr).config(config(1)).route("/rpc", services.hook()).start().unwrap()
}

#[test]
fn a_replay_the_server_refuses_is_not_replayed_again() {
    let (server, _seen) = server();
    let addr = server.local_addr().to_string();
    let client = client(&server);
    let (cb, _invoked) = reporting(&client);
    client.call::<_, ()>("Chat.join", ("ada", &cb)).unwrap();
    server.shutdown(Duration::from_secs(1));
    let again = server_without_chat(&addr);
    eventually("reconnected", || client.stats().reconnects == 1 && client.is_connected());
    assert_eq!(client.stats().replayed, 1);
    // Answered after the replay's `unknown_method`.
    assert_eq!(client.call("Calc.Add", (1, 1)), Ok(2));
    client.notify("Admin.kick", ()).unwrap();
    eventually("reconnected again", || client.stats().reconnects == 2 && client.is_connected());
    assert_eq!(client.call("Calc.Add", (2, 2)), Ok(4));
    assert_eq!(client.stats().replayed, 1, "refused: not replayed again");
    assert!(!cb.is_released());
    drop(again);
}

#[test]
fn the_last_client_dropped_on_its_own_thread_closes_it() {
    let (server, _seen) = server();
    let engine = Server::builder().config(config(1)).start().unwrap();
    let client = builder(server.local_addr())
        .engine(engine.clone())
        .timeout(Duration::from_millis(200))
        .connect()
        .unwrap();
    let (cb, _invoked) = reporting(&client);
    engine.shutdown(Duration::from_secs(1));
    eventually("disconnected", || !client.is_connected());
    // A call that waits for a connection that will not come: its timeout, on the client's
    // thread, finds no worker to run the continuation on, which is dropped there with the
    // last clone it holds.
    let last = client.clone();
    client.call_async::<_, i64>("Calc.Add", (1, 1)).then(move |_| drop(last));
    drop(client);
    eventually("closed: its callbacks released", || cb.is_released());
}
