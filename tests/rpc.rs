//! Services over `bidir.json.v1` on the test bed: calls and their answers, batching, every
//! error answer and every bad-input outcome of docs/rpc.md.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bidir::client::{Connect, Incoming};
use bidir::protocol::rpc::{ErrorCode, Msg};
use bidir::rpc::{CallError, Callback, CallbackError, Reply, Services};
use bidir::testbed::{HOST, Peer, TestBed};
use bidir::{CloseCode, Message, Server};

fn services() -> Services {
    Services::new()
        .method("Calc.Add", |_cx, (a, b): (i64, i64)| Ok::<_, String>(a + b))
        .method("Calc.Div", |_cx, (a, b): (i64, i64)| {
            a.checked_div(b).ok_or_else(|| "division by zero".to_owned())
        })
        .method("Calc.Boom", |_cx, (): ()| -> Result<(), String> { panic!("boom") })
}

fn bed() -> (TestBed, Peer) {
    let builder = Server::builder().route("/rpc", services().hook());
    let mut bed = TestBed::new(builder).unwrap();
    let options = Connect::new(&format!("ws://{HOST}/rpc")).unwrap().protocol("bidir.json.v1");
    let peer = bed.connect_with(&options).unwrap();
    assert_eq!(bed.protocol(peer), Some("bidir.json.v1"));
    (bed, peer)
}

/// Sends `request` and returns the one text message answering it.
fn ask(bed: &mut TestBed, peer: Peer, request: &str) -> String {
    bed.send(peer, Message::Text(request)).unwrap();
    match &bed.recv(peer)[..] {
        [Incoming::Text(answer)] => answer.clone(),
        other => panic!("{request} got {other:?}"),
    }
}

fn closed_with(bed: &mut TestBed, peer: Peer, message: Message<'_>) -> CloseCode {
    bed.send(peer, message).unwrap();
    match bed.recv(peer).last() {
        Some(Incoming::Close(close)) => close.code,
        other => panic!("no close: {other:?}"),
    }
}

#[test]
fn calls_are_answered_with_their_values_and_typed_errors() {
    let (mut bed, peer) = bed();
    assert_eq!(ask(&mut bed, peer, r#"["call",1,"Calc.Add",[2,3]]"#), r#"["ok",1,5]"#);
    assert_eq!(
        ask(&mut bed, peer, r#"["call",2,"Calc.Div",[1,0]]"#),
        r#"["err",2,"service","division by zero","division by zero"]"#
    );
    assert_eq!(
        ask(&mut bed, peer, r#"["call",3,"Calc.Mul",[1,2]]"#),
        r#"["err",3,"unknown_method","no method Calc.Mul"]"#
    );
    assert_eq!(
        ask(&mut bed, peer, r#"["call",4,"Chat.Join",[]]"#),
        r#"["err",4,"unknown_service","no method Chat.Join"]"#
    );
    let bad_args = ask(&mut bed, peer, r#"["call",5,"Calc.Add",["two",3]]"#);
    assert!(bad_args.starts_with(r#"["err",5,"bad_args","#), "{bad_args}");
    assert_eq!(
        ask(&mut bed, peer, r#"["call",6,"Calc.Boom",[]]"#),
        r#"["err",6,"internal","Calc.Boom failed"]"#
    );
    // A request whose id can be read is answered; the connection goes on.
    let bad = ask(&mut bed, peer, r#"["call",7,"Calc.Add",{"a":2}]"#);
    assert!(bad.starts_with(r#"["err",7,"bad_request","#), "{bad}");
    assert_eq!(ask(&mut bed, peer, r#"["call",8,"Calc.Add",[40,2]]"#), r#"["ok",8,42]"#);
}

#[test]
fn the_answers_to_a_batch_go_out_as_one_batch() {
    let (mut bed, peer) = bed();
    let batch = r#"[["call",1,"Calc.Add",[1,1]],["note","Calc.Add",[0,0]],["sub",2,"news"],
                   ["call",3,"Calc.Nope",[]],["unsub",4,"news"],["unsub",5,"news"]]"#;
    assert_eq!(
        ask(&mut bed, peer, batch),
        r#"[["ok",1,2],["ok",2,null],["err",3,"unknown_method","no method Calc.Nope"],["ok",4,true],["ok",5,false]]"#
    );
    // Answers, releases and cancels for nothing in flight, and publishes, are ignored.
    bed.send(peer, Message::Text(r#"[["ok",9,1],["release",3],["cancel",4],["pub","news",1]]"#))
        .unwrap();
    assert!(bed.recv(peer).is_empty());
    // An invocation of a callback the server does not hold is refused when it wants an answer.
    assert_eq!(
        ask(&mut bed, peer, r#"["cb",7,"Said",[],10]"#),
        r#"["err",10,"released","no callback 7"]"#
    );
}

#[test]
fn bad_input_closes_with_the_documented_code() {
    for (input, code) in [
        (Message::Text("{not json"), CloseCode::INVALID_PAYLOAD),
        (Message::Text(r#"["hello",1]"#), CloseCode::POLICY_VIOLATION),
        (Message::Text(r#"{"call":4}"#), CloseCode::POLICY_VIOLATION),
        (Message::Binary(b"[]"), CloseCode::UNSUPPORTED_DATA),
    ] {
        let (mut bed, peer) = bed();
        assert_eq!(closed_with(&mut bed, peer, input), code, "{input:?}");
    }
    let (mut bed, peer) = bed();
    let huge = format!("[{}]", vec![r#"["cancel",1]"#; 1025].join(","));
    assert_eq!(closed_with(&mut bed, peer, Message::Text(&huge)), CloseCode::MESSAGE_TOO_BIG);
}

#[test]
fn a_connection_without_the_subprotocol_is_refused() {
    let builder = Server::builder().route("/rpc", services().hook());
    let mut bed = TestBed::new(builder).unwrap();
    let refused = bed.connect("/rpc").unwrap_err();
    assert!(refused.to_string().contains("400"), "{refused}");
}

#[test]
fn the_browser_module_is_served_as_javascript() {
    let builder = Server::builder().http("/bidir.js", bidir::rpc::serve_module);
    let mut bed = TestBed::new(builder).unwrap();
    let peer = bed.open().unwrap();
    assert!(bed.write(peer, format!("GET /bidir.js HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes()));
    bed.run_until_idle();
    let response = String::from_utf8(bed.read(peer)).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Browsers run a module script only with a JavaScript type.
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: text/javascript; charset=utf-8"), "{head}");
    assert_eq!(body, bidir::rpc::BROWSER_MODULE);
}

type Members = Arc<Mutex<Vec<Callback>>>;

/// A room served on a test bed, with one client connected.
struct Room {
    bed: TestBed,
    peer: Peer,
    members: Members,
    /// The ids the release hook saw.
    released: Arc<Mutex<Vec<u64>>>,
    refused: Arc<AtomicU64>,
}

/// `Room.Join(name, callback)` keeps the callback; `Room.Leave(id)` drops the service's copy;
/// the release hook logs and forgets the callback.
fn room() -> Room {
    let members = Members::default();
    let released = Arc::new(Mutex::new(Vec::new()));
    let (join, leave, hook) = (Arc::clone(&members), Arc::clone(&members), Arc::clone(&members));
    let log = Arc::clone(&released);
    let services = Services::new()
        .method("Room.Join", move |_cx, (_name, callback): (String, Callback)| {
            join.lock().unwrap().push(callback);
            Ok::<_, String>(())
        })
        .method("Room.Leave", move |_cx, (id,): (u64,)| {
            leave.lock().unwrap().retain(|c| c.id() != id);
            Ok::<_, String>(())
        })
        .on_release(move |_cx, callback| {
            log.lock().unwrap().push(callback.id());
            hook.lock().unwrap().retain(|c| c != callback);
        });
    let refused = services.refused_invocations();
    let mut bed = TestBed::new(Server::builder().route("/rpc", services.hook())).unwrap();
    let options = Connect::new(&format!("ws://{HOST}/rpc")).unwrap().protocol("bidir.json.v1");
    let peer = bed.connect_with(&options).unwrap();
    Room { bed, peer, members, released, refused }
}

fn join(bed: &mut TestBed, peer: Peer, id: u64, callback: u64) {
    let call = format!(r#"["call",{id},"Room.Join",["ada",{{"$cb":{callback}}}]]"#);
    assert_eq!(ask(bed, peer, &call), format!(r#"["ok",{id},null]"#));
}

#[test]
fn invocations_from_other_threads_go_out_together() {
    let Room { mut bed, peer, members, .. } = room();
    join(&mut bed, peer, 1, 7);
    let callback = members.lock().unwrap()[0].clone();
    assert_eq!(callback.id(), 7);
    std::thread::spawn(move || {
        callback.invoke("Said", ("bob", "hi")).unwrap();
        callback.invoke("Said", ("eve", "yo")).unwrap();
        callback.invoke("Left", ("zed",)).unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(
        bed.recv(peer),
        [Incoming::Text(
            r#"[["cb",7,"Said",["bob","hi"]],["cb",7,"Said",["eve","yo"]],["cb",7,"Left",["zed"]]]"#
                .into()
        )]
    );
    members.lock().unwrap()[0].invoke("Ping", ()).unwrap();
    assert_eq!(bed.recv(peer), [Incoming::Text(r#"["cb",7,"Ping",[]]"#.into())]);
}

#[test]
fn a_gathering_goes_out_in_batches_within_the_limits_in_order() {
    let Room { mut bed, peer, members, .. } = room();
    join(&mut bed, peer, 1, 7);
    let callback = members.lock().unwrap()[0].clone();
    let pad = "x".repeat(100);
    std::thread::spawn(move || {
        for i in 0..3000 {
            callback.invoke("Tick", (i, &pad)).unwrap();
        }
    })
    .join()
    .unwrap();
    let mut next = 0;
    let messages = bed.recv(peer);
    assert!(messages.len() >= 5, "3000 invocations of ~130 bytes: 64 KiB batches");
    for message in &messages {
        let Incoming::Text(text) = message else { panic!("{message:?}") };
        assert!(text.len() <= (64 << 10) + 200, "{} bytes", text.len());
        let mut count = 0;
        bidir::protocol::rpc::json::decode(text, |msg| {
            let Ok(Msg::Invoke { args, .. }) = msg else { panic!() };
            assert!(args.get().starts_with(&format!("[{next},")), "in order");
            next += 1;
            count += 1;
        })
        .unwrap();
        assert!(count <= bidir::protocol::rpc::MAX_BATCH);
    }
    assert_eq!(next, 3000);
}

#[test]
fn invocations_outrunning_the_worker_are_refused_not_gathered_without_bound() {
    let Room { mut bed, peer, members, .. } = room();
    join(&mut bed, peer, 1, 7);
    let callback = members.lock().unwrap()[0].clone();
    let pad = "x".repeat(64 << 10);
    // The test bed's worker does not turn meanwhile: 16 MiB wait, then refusals.
    let queued = (0..400).take_while(|_| callback.invoke("Big", (&pad,)).is_ok()).count();
    assert!((250..=260).contains(&queued), "{queued} of 64 KiB queued");
    assert_eq!(callback.invoke("Big", (&pad,)), Err(CallbackError::Full));
    // One message each (each over the batch size); past the 1 MiB backpressure limit, dropped
    // and counted like any send.
    let received = bed.recv(peer).len();
    assert_eq!(received, 16);
    assert_eq!(bed.stats().counters.dropped_sends, (queued - received) as u64);
    callback.invoke("Small", ()).unwrap();
    assert_eq!(bed.recv(peer), [Incoming::Text(r#"["cb",7,"Small",[]]"#.into())]);
}

#[test]
fn a_released_callback_runs_the_hook_once_and_refuses_invocations() {
    let Room { mut bed, peer, members, released, refused } = room();
    join(&mut bed, peer, 1, 7);
    let kept = members.lock().unwrap()[0].clone();
    bed.send(peer, Message::Text(r#"["release",7]"#)).unwrap();
    bed.run_until_idle();
    assert_eq!(*released.lock().unwrap(), [7]);
    assert!(members.lock().unwrap().is_empty(), "the hook forgot it");
    assert!(kept.is_released());
    assert_eq!(kept.invoke("Said", ("bob", "hi")), Err(CallbackError::Released));
    assert_eq!(refused.load(Ordering::Relaxed), 1);
    // A second release, or one for an unknown callback, is ignored.
    bed.send(peer, Message::Text(r#"[["release",7],["release",99]]"#)).unwrap();
    bed.run_until_idle();
    assert_eq!(*released.lock().unwrap(), [7]);
    assert!(bed.recv(peer).is_empty());
}

#[test]
fn the_end_of_the_connection_releases_every_callback_once() {
    let Room { mut bed, peer, members, released, .. } = room();
    join(&mut bed, peer, 1, 7);
    join(&mut bed, peer, 2, 8);
    let kept: Vec<Callback> = members.lock().unwrap().clone();
    bed.close(peer, CloseCode::NORMAL, "bye").unwrap();
    bed.run_until_idle();
    let mut ids = released.lock().unwrap().clone();
    ids.sort_unstable();
    assert_eq!(ids, [7, 8]);
    assert!(kept.iter().all(|c| c.invoke("Said", ()) == Err(CallbackError::Released)));
}

#[test]
fn the_client_hears_when_the_service_lets_go_of_a_callback() {
    let Room { mut bed, peer, members, released, .. } = room();
    join(&mut bed, peer, 1, 7);
    bed.send(peer, Message::Text(r#"["call",2,"Room.Leave",[7]]"#)).unwrap();
    assert_eq!(
        bed.recv(peer),
        [Incoming::Text(r#"["ok",2,null]"#.into()), Incoming::Text(r#"["release",7]"#.into())]
    );
    assert!(members.lock().unwrap().is_empty());
    // Not the service's any more: the end of the connection runs no hook for it.
    bed.close(peer, CloseCode::NORMAL, "").unwrap();
    bed.run_until_idle();
    assert!(released.lock().unwrap().is_empty());
}

#[test]
fn events_reach_the_subscribers_of_their_topic_only() {
    let (mut bed, peer) = bed();
    let options = Connect::new(&format!("ws://{HOST}/rpc")).unwrap().protocol("bidir.json.v1");
    let other = bed.connect_with(&options).unwrap();
    assert_eq!(ask(&mut bed, peer, r#"["sub",1,"news"]"#), r#"["ok",1,null]"#);
    assert_eq!(ask(&mut bed, other, r#"["sub",1,"sport"]"#), r#"["ok",1,null]"#);
    let server = bed.handle();
    assert_eq!(bidir::rpc::publish(&server, "news", &("flood", 3)).unwrap(), 1);
    assert_eq!(bed.recv(peer), [Incoming::Text(r#"["event","news",["flood",3]]"#.into())]);
    assert!(bed.recv(other).is_empty());
    // The engine's own topic of that name is another one.
    assert_eq!(server.publish("news", Message::Text("plain")), 0);
}

/// Two clients of `services`.
fn two(services: Services) -> (TestBed, Peer, Peer) {
    let mut bed = TestBed::new(Server::builder().route("/rpc", services.hook())).unwrap();
    let options = Connect::new(&format!("ws://{HOST}/rpc")).unwrap().protocol("bidir.json.v1");
    let a = bed.connect_with(&options).unwrap();
    let b = bed.connect_with(&options).unwrap();
    (bed, a, b)
}

#[test]
fn subscriptions_and_client_publishes_are_authorized_by_their_hooks() {
    let staff = |_cx: &mut bidir::Context<'_>, topic: &str| match topic.starts_with("staff/") {
        true => Err(format!("not a member of {topic}")),
        false => Ok(()),
    };
    let services = Services::new().authorize_subscribe(staff);
    let refused = services.refused_publishes();
    let (mut bed, a, b) = two(services);
    assert_eq!(
        ask(&mut bed, a, r#"["sub",1,"staff/pay"]"#),
        r#"["err",1,"unauthorized","not a member of staff/pay"]"#
    );
    assert_eq!(ask(&mut bed, a, r#"["sub",2,"lobby"]"#), r#"["ok",2,null]"#);
    // Clients may not publish unless allowed: dropped and counted.
    bed.send(b, Message::Text(r#"["pub","lobby",1]"#)).unwrap();
    bed.run_until_idle();
    assert!(bed.recv(a).is_empty());
    assert_eq!(refused.load(Ordering::Relaxed), 1);
}

#[test]
fn an_allowed_client_publish_reaches_every_subscriber_the_publisher_as_chosen() {
    for exclude in [false, true] {
        let allow = |_cx: &mut bidir::Context<'_>, topic: &str| match topic == "lobby" {
            true => Ok(()),
            false => Err("read only".to_owned()),
        };
        let services = Services::new().authorize_publish(allow).exclude_publisher(exclude);
        let refused = services.refused_publishes();
        let (mut bed, a, b) = two(services);
        for peer in [a, b] {
            assert_eq!(ask(&mut bed, peer, r#"["sub",1,"lobby"]"#), r#"["ok",1,null]"#);
            assert_eq!(ask(&mut bed, peer, r#"["sub",2,"news"]"#), r#"["ok",2,null]"#);
        }
        bed.send(b, Message::Text(r#"["pub","lobby",{"text":"hi"}]"#)).unwrap();
        bed.send(b, Message::Text(r#"["pub","news","fake"]"#)).unwrap();
        bed.run_until_idle();
        let event = Incoming::Text(r#"["event","lobby",{"text":"hi"}]"#.into());
        let own = if exclude { vec![] } else { vec![event.clone()] };
        assert_eq!(bed.recv(a), [event]);
        assert_eq!(bed.recv(b), own, "exclude_publisher({exclude})");
        assert_eq!(refused.load(Ordering::Relaxed), 1, "the publish to news");
    }
}

#[test]
fn a_method_broadcasts_to_the_others() {
    let services = Services::new().method("Chat.say", |cx, (text,): (String,)| {
        bidir::rpc::broadcast(cx, "room", &text).map_err(|e| e.to_string())
    });
    let (mut bed, a, b) = two(services);
    for peer in [a, b] {
        assert_eq!(ask(&mut bed, peer, r#"["sub",1,"room"]"#), r#"["ok",1,null]"#);
    }
    assert_eq!(ask(&mut bed, a, r#"["call",2,"Chat.say",["hey"]]"#), r#"["ok",2,1]"#);
    assert_eq!(bed.recv(b), [Incoming::Text(r#"["event","room","hey"]"#.into())]);
}

/// `Work.Later(n)` hands its reply to the test; at most two answers owed per connection.
fn later() -> (TestBed, Peer, std::sync::mpsc::Receiver<(u64, Reply)>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(tx);
    let services = Services::new()
        .deferred("Work.Later", move |_cx, (n,): (u64,), reply: Reply| {
            tx.lock().unwrap().send((n, reply)).unwrap();
        })
        .max_in_flight(2);
    let mut bed = TestBed::new(Server::builder().route("/rpc", services.hook())).unwrap();
    let options = Connect::new(&format!("ws://{HOST}/rpc")).unwrap().protocol("bidir.json.v1");
    let peer = bed.connect_with(&options).unwrap();
    (bed, peer, rx)
}

#[test]
fn a_deferred_method_answers_from_another_thread() {
    let (mut bed, peer, rx) = later();
    bed.send(peer, Message::Text(r#"[["call",1,"Work.Later",[10]],["call",2,"Work.Later",[20]]]"#))
        .unwrap();
    assert!(bed.recv(peer).is_empty(), "nothing answered yet");
    // Two owed: a third is refused at once; an id already in flight is a bad request.
    assert_eq!(
        ask(&mut bed, peer, r#"["call",3,"Work.Later",[30]]"#),
        r#"["err",3,"too_many_calls","too many calls in flight"]"#
    );
    assert_eq!(
        ask(&mut bed, peer, r#"["call",1,"Work.Later",[5]]"#),
        r#"["err",1,"bad_request","the id of a call in flight"]"#
    );
    let (first, reply1) = rx.try_recv().unwrap();
    let (second, reply2) = rx.try_recv().unwrap();
    assert_eq!((first, second), (10, 20));
    std::thread::spawn(move || {
        reply2.ok(&"twenty");
        reply1.err("failed at ten");
    })
    .join()
    .unwrap();
    assert_eq!(
        bed.recv(peer),
        [Incoming::Text(
            r#"[["ok",2,"twenty"],["err",1,"service","failed at ten","failed at ten"]]"#.into()
        )]
    );
}

#[test]
fn a_cancelled_or_dropped_reply_answers_as_documented() {
    let (mut bed, peer, rx) = later();
    bed.send(peer, Message::Text(r#"[["call",1,"Work.Later",[1]],["call",2,"Work.Later",[2]]]"#))
        .unwrap();
    bed.run_until_idle();
    let (_, cancelled) = rx.try_recv().unwrap();
    let (_, dropped) = rx.try_recv().unwrap();
    assert!(!cancelled.is_cancelled());
    bed.send(peer, Message::Text(r#"["cancel",1]"#)).unwrap();
    bed.run_until_idle();
    assert!(cancelled.is_cancelled());
    cancelled.ok(&1);
    drop(dropped);
    assert_eq!(
        bed.recv(peer),
        [Incoming::Text(r#"["err",2,"internal","the method dropped its reply"]"#.into())]
    );
    // The slots are free again.
    bed.send(peer, Message::Text(r#"["call",4,"Work.Later",[4]]"#)).unwrap();
    bed.run_until_idle();
    let (n, reply) = rx.try_recv().unwrap();
    assert_eq!(n, 4);
    // The connection ends: the work can tell.
    bed.close(peer, CloseCode::NORMAL, "").unwrap();
    bed.run_until_idle();
    assert!(reply.is_cancelled());
}

/// `Ask.Join(callback)` keeps the callback and asks its `Name` at once, continuing on the
/// worker; `Ask.Block()` waits for an answer on the worker, which is refused.
/// The names the continuations got.
type Names = Arc<Mutex<Vec<Result<String, CallError>>>>;

fn asking() -> (TestBed, Peer, Members, Names) {
    let members = Members::default();
    let names = Names::default();
    let (keep, ask_members, log) = (Arc::clone(&members), Arc::clone(&members), Arc::clone(&names));
    let services = Services::new()
        .method("Ask.Join", move |_cx, (callback,): (Callback,)| {
            let log = Arc::clone(&log);
            callback
                .call::<_, String>("Name", ())
                .map_err(|e| e.to_string())?
                .then(move |_cx, name| log.lock().unwrap().push(name));
            keep.lock().unwrap().push(callback);
            Ok::<_, String>(())
        })
        .method("Ask.Block", move |_cx, (): ()| {
            let callback = ask_members.lock().unwrap()[0].clone();
            let pending = callback.call::<_, bool>("Sure", ()).map_err(|e| e.to_string())?;
            pending.wait().map_err(|e| e.to_string())
        });
    let mut bed = TestBed::new(Server::builder().route("/rpc", services.hook())).unwrap();
    let options = Connect::new(&format!("ws://{HOST}/rpc")).unwrap().protocol("bidir.json.v1");
    let peer = bed.connect_with(&options).unwrap();
    (bed, peer, members, names)
}

#[test]
fn a_continued_call_the_client_never_answers_times_out_on_the_worker() {
    let (mut bed, peer, _members, names) = asking();
    bed.send(peer, Message::Text(r#"["call",1,"Ask.Join",[{"$cb":5}]]"#)).unwrap();
    assert_eq!(bed.recv(peer).len(), 2, "the answer and the invocation");
    bed.advance(bidir::rpc::DEFAULT_TIMEOUT - std::time::Duration::from_secs(1));
    assert!(names.lock().unwrap().is_empty(), "not yet");
    bed.advance(std::time::Duration::from_secs(2));
    assert_eq!(*names.lock().unwrap(), [Err(CallError::Timeout)]);
    // The late answer finds no request: dropped.
    bed.send(peer, Message::Text(r#"["ok",0,"ada"]"#)).unwrap();
    bed.run_until_idle();
    assert_eq!(names.lock().unwrap().len(), 1);
    assert!(!bed.is_closed(peer));
}

#[test]
fn the_server_calls_a_callback_and_continues_on_the_worker_with_the_answer() {
    let (mut bed, peer, members, names) = asking();
    bed.send(peer, Message::Text(r#"["call",1,"Ask.Join",[{"$cb":5}]]"#)).unwrap();
    assert_eq!(
        bed.recv(peer),
        [
            Incoming::Text(r#"["ok",1,null]"#.into()),
            Incoming::Text(r#"["cb",5,"Name",[],0]"#.into())
        ]
    );
    bed.send(peer, Message::Text(r#"["ok",0,"ada"]"#)).unwrap();
    bed.run_until_idle();
    assert_eq!(*names.lock().unwrap(), [Ok("ada".to_owned())]);
    // Waiting on the worker is refused, never a deadlock (the invocation went; its answer
    // will be dropped).
    bed.send(peer, Message::Text(r#"["call",2,"Ask.Block",[]]"#)).unwrap();
    let refused = "waiting on a worker's thread would block it";
    assert_eq!(
        bed.recv(peer),
        [
            Incoming::Text(format!(r#"["err",2,"service","{refused}","{refused}"]"#)),
            Incoming::Text(r#"["cb",5,"Sure",[],1]"#.into())
        ]
    );
    // From another thread: the answer, the client's error, a timeout, then the end of the
    // connection.
    let callback = members.lock().unwrap()[0].clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let answers = [
            callback.call::<_, bool>("Sure", ("delete all?",)).unwrap(),
            callback.call::<_, bool>("Sure", ("really?",)).unwrap(),
        ];
        tx.send(()).unwrap();
        let [yes, no] = answers;
        let late = callback.call::<_, bool>("Sure", ()).unwrap();
        let gone = callback.call::<_, bool>("Sure", ()).unwrap();
        (yes.wait(), no.wait(), late.wait_timeout(std::time::Duration::from_millis(20)), gone)
    });
    rx.recv().unwrap();
    // Gathered with whatever else the thread queued by then, possibly in one batch.
    let sent = format!("{:?}", bed.recv(peer));
    assert!(sent.contains(r#"[\"cb\",5,\"Sure\",[\"delete all?\"],2]"#), "{sent}");
    bed.send(peer, Message::Text(r#"[["ok",2,true],["err",3,"service","no way"]]"#)).unwrap();
    bed.run_until_idle();
    let (yes, no, late, gone) = waiter.join().unwrap();
    assert_eq!(yes, Ok(true));
    assert!(matches!(no, Err(CallError::Remote { code: ErrorCode::Service, .. })), "{no:?}");
    assert_eq!(late, Err(CallError::Timeout));
    bed.send(peer, Message::Text(r#"["ok",4,true]"#)).unwrap(); // late: dropped
    let (tx, rx) = std::sync::mpsc::channel();
    gone.then(move |_cx, answer| tx.send(answer).unwrap());
    bed.close(peer, CloseCode::NORMAL, "").unwrap();
    bed.run_until_idle();
    assert_eq!(rx.try_recv().unwrap(), Err(CallError::Disconnected));
}

/// `bidir.bin.v1`: one message written behind the envelope byte of a plain message.
fn packed(msg: &bidir::protocol::rpc::bin::BinMsg<'_>) -> Vec<u8> {
    let mut out = vec![0];
    bidir::protocol::rpc::bin::encode(msg, &mut out);
    out
}

/// The messages of one received `bidir.bin.v1` message, as JSON text for comparing.
fn unpacked(bytes: &[u8]) -> Vec<String> {
    assert_eq!(bytes[0], 0, "a plain envelope");
    let mut texts = Vec::new();
    bidir::protocol::rpc::bin::decode(&bytes[1..], |msg| {
        let msg = msg.unwrap().map_blobs(|b| b.decode::<serde_json::Value>().unwrap());
        texts.push(format!("{msg:?}"));
    })
    .unwrap();
    texts
}

fn connect(bed: &mut TestBed, protocols: &[&str]) -> Peer {
    let options = protocols
        .iter()
        .fold(Connect::new(&format!("ws://{HOST}/rpc")).unwrap(), |o, p| o.protocol(*p));
    bed.connect_with(&options).unwrap()
}

#[test]
fn the_binary_encoding_is_served_on_the_same_route() {
    let builder = Server::builder().route("/rpc", services().hook());
    let mut bed = TestBed::new(builder).unwrap();
    // The first of the client's protocols that the server speaks.
    let peer = connect(&mut bed, &["bidir.bin.v1", "bidir.json.v1"]);
    assert_eq!(bed.protocol(peer), Some("bidir.bin.v1"));
    let json = connect(&mut bed, &["x.y", "bidir.json.v1", "bidir.bin.v1"]);
    assert_eq!(bed.protocol(json), Some("bidir.json.v1"));

    let args = bidir::rpc::Wire::Bin.value(&(2, 3)).unwrap();
    let call = Msg::Call { id: 1, method: "Calc.Add".into(), args: pack(&args) };
    bed.send(peer, Message::Binary(&packed(&call))).unwrap();
    let args = bidir::rpc::Wire::Bin.value(&(1, 0)).unwrap();
    let div = Msg::Call { id: 2, method: "Calc.Div".into(), args: pack(&args) };
    bed.send(peer, Message::Binary(&packed(&div))).unwrap();
    let answers: Vec<String> = bed
        .recv(peer)
        .iter()
        .flat_map(|m| match m {
            Incoming::Binary(bytes) => unpacked(bytes),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0], "Result { id: 1, value: Number(5) }");
    assert!(
        answers[1].contains("Service") && answers[1].contains("division by zero"),
        "{answers:?}"
    );
}

fn pack(value: &bidir::rpc::Value) -> bidir::protocol::rpc::bin::RawPack<'_> {
    match value.as_ref() {
        bidir::rpc::ValueRef::Pack(pack) => pack,
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_binary_input_closes_with_the_documented_code() {
    for (input, code) in [
        (Message::Text(r#"["call",1,"Calc.Add",[2,3]]"#), CloseCode::UNSUPPORTED_DATA),
        (Message::Binary(b""), CloseCode::INVALID_PAYLOAD),
        (Message::Binary(&[0x80, 0x90]), CloseCode::INVALID_PAYLOAD), // unknown envelope bits
        (Message::Binary(&[0, 0xc1]), CloseCode::INVALID_PAYLOAD),    // a reserved marker
        (Message::Binary(&[0, 0x92, 0x0f, 1]), CloseCode::POLICY_VIOLATION), // unknown tag
        // Compressed, announcing 1 GiB of plain bytes: refused before any decompression.
        (
            Message::Binary(&[1, 0x80, 0x80, 0x80, 0x80, 0x04, 0x10, 0, 0, 0, 0]),
            CloseCode::MESSAGE_TOO_BIG,
        ),
        // Compressed, 7 bytes announced, a block that is not LZ4.
        (Message::Binary(&[1, 7, 0xf0, 0xff, 0xff, 0, 0, 0, 0]), CloseCode::INVALID_PAYLOAD),
        (Message::Binary(&[2, 0x90]), CloseCode::POLICY_VIOLATION), // encrypted without a key
    ] {
        let builder = Server::builder().route("/rpc", services().hook());
        let mut bed = TestBed::new(builder).unwrap();
        let peer = connect(&mut bed, &["bidir.bin.v1"]);
        assert_eq!(closed_with(&mut bed, peer, input), code, "{input:?}");
    }
}

#[test]
fn a_client_publish_reaches_the_subscribers_of_both_encodings() {
    let allow = |_cx: &mut bidir::Context<'_>, _topic: &str| Ok(());
    let services = Services::new().authorize_publish(allow);
    let mut bed = TestBed::new(Server::builder().route("/rpc", services.hook())).unwrap();
    let json = connect(&mut bed, &["bidir.json.v1"]);
    let bin = connect(&mut bed, &["bidir.bin.v1"]);
    assert_eq!(ask(&mut bed, json, r#"["sub",1,"lobby"]"#), r#"["ok",1,null]"#);
    bed.send(
        bin,
        Message::Binary(&packed(&Msg::Subscribe { id: 1, topic: "lobby".into(), since: None })),
    )
    .unwrap();
    assert!(matches!(&bed.recv(bin)[..], [Incoming::Binary(b)] if unpacked(b).len() == 1));
    let data = bidir::rpc::Wire::Bin.value(&serde_json::json!({"text": "hi"})).unwrap();
    let publish = Msg::Publish { topic: "lobby".into(), data: pack(&data) };
    bed.send(bin, Message::Binary(&packed(&publish))).unwrap();
    bed.run_until_idle();
    assert_eq!(bed.recv(json), [Incoming::Text(r#"["event","lobby",{"text":"hi"}]"#.into())]);
    match &bed.recv(bin)[..] {
        [Incoming::Binary(b)] => {
            assert_eq!(
                unpacked(b),
                [r#"Event { topic: "lobby", data: Object {"text": String("hi")}, at: None }"#]
            );
        }
        other => panic!("{other:?}"),
    }
    // And the server's own publish, encoded once per encoding.
    assert_eq!(bidir::rpc::publish(&bed.handle(), "lobby", &7).unwrap(), 2);
}
