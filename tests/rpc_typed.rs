//! Services declared as traits (`#[bidir::service]`, `#[bidir::callback]`) on the test bed:
//! shared and per-connection instances, the context parameter, deferred replies, typed
//! errors, typed callbacks kept in a list and invoked or called from other threads,
//! `rpc.describe`, and the client proxy.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use bidir::client::{Connect, Incoming};
use bidir::protocol::rpc::{ErrorCode, Msg};
use bidir::rpc::{
    CallError, Callback, CallbackError, CallbackInterface, CallbackMethod, Caller, Reply, Services,
    Wire, service_result,
};
use bidir::testbed::{HOST, Peer, TestBed};
use bidir::{CloseCode, Context, Message, Server};

#[bidir::callback]
pub trait ChatCallback {
    /// Someone said something.
    fn said(&self, pseudo: String, msg: String);
    #[rpc(name = "Confirm")]
    fn confirm(&self, question: String) -> bool;
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct RoomFull {
    max: usize,
}

impl fmt::Display for RoomFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("room is full")
    }
}

#[bidir::service]
pub trait Chat {
    fn join(&self, pseudo: String, callback: Callback<dyn ChatCallback>)
    -> Result<usize, RoomFull>;
    fn path(&self, cx: &mut Context<'_>, suffix: String) -> String;
    fn total(&self) -> u64;
    fn slow(&self, n: u64, reply: Reply<u64>);
}

type Members = Arc<Mutex<Vec<Callback<dyn ChatCallback>>>>;

/// The shared instance: a room of at most two members.
struct Room {
    members: Members,
    owed: Mutex<Sender<(u64, Reply<u64>)>>,
}

impl Chat for Room {
    fn join(
        &self,
        _pseudo: String,
        callback: Callback<dyn ChatCallback>,
    ) -> Result<usize, RoomFull> {
        let mut members = self.members.lock().unwrap();
        if members.len() == 2 {
            return Err(RoomFull { max: 2 });
        }
        members.push(callback);
        Ok(members.len())
    }

    fn path(&self, cx: &mut Context<'_>, suffix: String) -> String {
        format!("{}{suffix}", cx.path())
    }

    fn total(&self) -> u64 {
        self.members.lock().unwrap().len() as u64
    }

    fn slow(&self, n: u64, reply: Reply<u64>) {
        self.owed.lock().unwrap().send((n, reply)).unwrap();
    }
}

/// Per connection: a running total, and a log of the instances made and dropped.
#[bidir::service]
#[rpc(name = "Counter")]
pub trait Count {
    fn add(&self, n: u64) -> u64;
    #[rpc(name = "Made")]
    fn made(&self) -> u64;
}

#[derive(Default)]
struct Life {
    made: AtomicU64,
    dropped: AtomicU64,
}

struct Counter {
    total: Cell<u64>,
    life: Arc<Life>,
}

impl Count for Counter {
    fn add(&self, n: u64) -> u64 {
        self.total.set(self.total.get() + n);
        self.total.get()
    }

    fn made(&self) -> u64 {
        self.life.made.load(Ordering::Relaxed)
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.life.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

struct Bed {
    bed: TestBed,
    peer: Peer,
    members: Members,
    owed: Receiver<(u64, Reply<u64>)>,
    life: Arc<Life>,
    released: Arc<Mutex<Vec<u64>>>,
}

fn bed() -> Bed {
    let members = Members::default();
    let (tx, owed) = channel();
    let life = Arc::new(Life::default());
    let released = Arc::new(Mutex::new(Vec::new()));
    let room = Room { members: Arc::clone(&members), owed: Mutex::new(tx) };
    let (made, hook, log) = (Arc::clone(&life), Arc::clone(&members), Arc::clone(&released));
    let services = Services::new()
        .serve(ChatService::shared(room))
        .serve(CountService::per_connection(move |_cx| {
            made.made.fetch_add(1, Ordering::Relaxed);
            Counter { total: Cell::new(0), life: Arc::clone(&made) }
        }))
        .method("Admin.Kick", |_cx, (_id,): (u64,)| Ok::<_, String>(()))
        .max_in_flight(1)
        .on_release(move |_cx, callback| {
            log.lock().unwrap().push(callback.id());
            hook.lock().unwrap().retain(|c| c != callback);
        });
    let mut bed = TestBed::new(Server::builder().route("/rpc", services.hook())).unwrap();
    let peer = connect(&mut bed);
    Bed { bed, peer, members, owed, life, released }
}

fn connect(bed: &mut TestBed) -> Peer {
    let options = Connect::new(&format!("ws://{HOST}/rpc")).unwrap().protocol("bidir.json.v1");
    bed.connect_with(&options).unwrap()
}

/// Sends `request` and returns the one text message answering it.
fn ask(bed: &mut TestBed, peer: Peer, request: &str) -> String {
    bed.send(peer, Message::Text(request)).unwrap();
    match &bed.recv(peer)[..] {
        [Incoming::Text(answer)] => answer.clone(),
        other => panic!("{request} got {other:?}"),
    }
}

#[test]
fn a_shared_service_answers_values_and_typed_errors() {
    let Bed { mut bed, peer, .. } = bed();
    let join = |id, cb| format!(r#"["call",{id},"Chat.join",["ada",{{"$cb":{cb}}}]]"#);
    assert_eq!(ask(&mut bed, peer, &join(1, 7)), r#"["ok",1,1]"#);
    assert_eq!(ask(&mut bed, peer, &join(2, 8)), r#"["ok",2,2]"#);
    // Refused: the service did not keep the callback, so the client may free it.
    bed.send(peer, Message::Text(&join(3, 9))).unwrap();
    assert_eq!(
        bed.recv(peer),
        [
            Incoming::Text(r#"["err",3,"service","room is full",{"max":2}]"#.into()),
            Incoming::Text(r#"["release",9]"#.into())
        ]
    );
    // The same instance for every connection.
    let other = connect(&mut bed);
    assert_eq!(ask(&mut bed, other, r#"["call",1,"Chat.total",[]]"#), r#"["ok",1,2]"#);
    // The context is the caller's; it is not on the wire.
    assert_eq!(ask(&mut bed, peer, r#"["call",4,"Chat.path",["/x"]]"#), r#"["ok",4,"/rpc/x"]"#);
    let bad = ask(&mut bed, peer, r#"["call",5,"Chat.path",[]]"#);
    assert!(bad.starts_with(r#"["err",5,"bad_args","#), "{bad}");
    let bad = ask(&mut bed, peer, r#"["call",6,"Chat.join",["bob",7]]"#);
    assert!(bad.starts_with(r#"["err",6,"bad_args","#), "{bad}");
    assert_eq!(
        ask(&mut bed, peer, r#"["call",7,"Chat.Join",[]]"#),
        r#"["err",7,"unknown_method","no method Chat.Join"]"#
    );
}

#[test]
fn per_connection_instances_are_made_at_first_call_and_dropped_at_close() {
    let Bed { mut bed, peer, life, .. } = bed();
    let other = connect(&mut bed);
    assert_eq!(ask(&mut bed, peer, r#"["call",1,"Chat.total",[]]"#), r#"["ok",1,0]"#);
    assert_eq!(life.made.load(Ordering::Relaxed), 0, "made at the service's first call");
    assert_eq!(ask(&mut bed, peer, r#"["call",2,"Counter.add",[5]]"#), r#"["ok",2,5]"#);
    assert_eq!(ask(&mut bed, peer, r#"["call",3,"Counter.add",[2]]"#), r#"["ok",3,7]"#);
    assert_eq!(ask(&mut bed, other, r#"["call",1,"Counter.add",[1]]"#), r#"["ok",1,1]"#);
    assert_eq!(ask(&mut bed, other, r#"["call",2,"Counter.Made",[]]"#), r#"["ok",2,2]"#);
    assert_eq!(life.dropped.load(Ordering::Relaxed), 0);
    bed.close(peer, CloseCode::NORMAL, "").unwrap();
    bed.run_until_idle();
    assert_eq!(life.dropped.load(Ordering::Relaxed), 1, "the closed connection's instance");
    assert_eq!(ask(&mut bed, other, r#"["call",3,"Counter.add",[1]]"#), r#"["ok",3,2]"#);
    bed.close(other, CloseCode::NORMAL, "").unwrap();
    bed.run_until_idle();
    assert_eq!(life.dropped.load(Ordering::Relaxed), 2);
    assert_eq!(life.made.load(Ordering::Relaxed), 2);
}

#[test]
fn typed_callbacks_kept_in_a_list_are_invoked_from_another_thread() {
    let Bed { mut bed, peer, members, released, .. } = bed();
    ask(&mut bed, peer, r#"["call",1,"Chat.join",["ada",{"$cb":7}]]"#);
    ask(&mut bed, peer, r#"["call",2,"Chat.join",["bob",{"$cb":8}]]"#);
    let list = Arc::clone(&members);
    std::thread::spawn(move || {
        for member in list.lock().unwrap().iter() {
            member.said("eve".to_owned(), "hi".to_owned()).unwrap();
        }
    })
    .join()
    .unwrap();
    assert_eq!(
        bed.recv(peer),
        [Incoming::Text(r#"[["cb",7,"said",["eve","hi"]],["cb",8,"said",["eve","hi"]]]"#.into())]
    );
    // The release hook's untyped callback finds the typed one in the list.
    let kept = members.lock().unwrap()[0].clone();
    bed.send(peer, Message::Text(r#"["release",7]"#)).unwrap();
    bed.run_until_idle();
    assert_eq!(*released.lock().unwrap(), [7]);
    assert_eq!(members.lock().unwrap().iter().map(|c| c.id()).collect::<Vec<_>>(), [8]);
    assert!(kept.is_released());
    assert_eq!(kept.said("eve".into(), "yo".into()), Err(CallbackError::Released));
}

#[test]
fn a_typed_callback_is_called_for_its_answer() {
    let Bed { mut bed, peer, members, .. } = bed();
    ask(&mut bed, peer, r#"["call",1,"Chat.join",["ada",{"$cb":7}]]"#);
    let member = members.lock().unwrap()[0].clone();
    let (sent, ready) = channel();
    let asker = std::thread::spawn(move || {
        let pending = member.confirm("delete all?".to_owned()).unwrap();
        sent.send(()).unwrap();
        pending.wait()
    });
    ready.recv().unwrap();
    assert_eq!(bed.recv(peer), [Incoming::Text(r#"["cb",7,"Confirm",["delete all?"],0]"#.into())]);
    bed.send(peer, Message::Text(r#"["ok",0,true]"#)).unwrap();
    bed.run_until_idle();
    assert_eq!(asker.join().unwrap(), Ok(true));
    // An answer of another type is an error of the call, not a panic.
    let member = members.lock().unwrap()[0].clone();
    let pending = member.confirm("sure?".to_owned()).unwrap();
    bed.run_until_idle();
    bed.send(peer, Message::Text(r#"["ok",1,"yes"]"#)).unwrap();
    let (tx, rx) = channel();
    pending.then(move |_cx, answer| tx.send(answer).unwrap());
    bed.run_until_idle();
    assert!(matches!(rx.try_recv().unwrap(), Err(CallError::Json(_))));
}

#[test]
fn a_deferred_method_answers_through_its_typed_reply() {
    let Bed { mut bed, peer, owed, .. } = bed();
    bed.send(peer, Message::Text(r#"["call",1,"Chat.slow",[20]]"#)).unwrap();
    assert!(bed.recv(peer).is_empty(), "answered later");
    // One reply owed at most (max_in_flight(1)).
    assert_eq!(
        ask(&mut bed, peer, r#"["call",2,"Chat.slow",[30]]"#),
        r#"["err",2,"too_many_calls","too many calls in flight"]"#
    );
    let (n, reply) = owed.try_recv().unwrap();
    std::thread::spawn(move || reply.ok(&(n * 2))).join().unwrap();
    assert_eq!(bed.recv(peer), [Incoming::Text(r#"["ok",1,40]"#.into())]);
    bed.send(peer, Message::Text(r#"["call",3,"Chat.slow",[1]]"#)).unwrap();
    bed.run_until_idle();
    drop(owed.try_recv().unwrap());
    assert_eq!(
        bed.recv(peer),
        [Incoming::Text(r#"["err",3,"internal","the method dropped its reply"]"#.into())]
    );
}

#[test]
fn rpc_describe_lists_services_methods_and_callback_interfaces() {
    let Bed { mut bed, peer, .. } = bed();
    let described = ask(&mut bed, peer, r#"["call",1,"rpc.describe",[]]"#);
    let expected = concat!(
        r#"["ok",1,{"services":["#,
        r#"{"name":"Chat","methods":["#,
        r#"{"name":"join","params":["pseudo","callback"],"callbacks":{"callback":"ChatCallback"}},"#,
        r#"{"name":"path","params":["suffix"],"callbacks":{}},"#,
        r#"{"name":"total","params":[],"callbacks":{}},"#,
        r#"{"name":"slow","params":["n"],"callbacks":{}}]},"#,
        r#"{"name":"Counter","methods":["#,
        r#"{"name":"add","params":["n"],"callbacks":{}},"#,
        r#"{"name":"Made","params":[],"callbacks":{}}]},"#,
        r#"{"name":"Admin","methods":[{"name":"Kick","params":null}]}],"#,
        r#""callbacks":[{"name":"ChatCallback","methods":["#,
        r#"{"name":"said","params":["pseudo","msg"],"answer":false},"#,
        r#"{"name":"Confirm","params":["question"],"answer":true}]}]}]"#
    );
    assert_eq!(described, expected);
    let bad = ask(&mut bed, peer, r#"["call",2,"rpc.describe",[1]]"#);
    assert!(bad.starts_with(r#"["err",2,"bad_args","#), "{bad}");
    assert_eq!(
        ask(&mut bed, peer, r#"["call",3,"rpc.nope",[]]"#),
        r#"["err",3,"unknown_method","no method rpc.nope"]"#
    );
}

/// The client side of a callback interface: the invocations a client receives, run on its
/// object.
#[test]
fn the_interface_dispatches_invocations_to_a_local_object() {
    #[derive(Default)]
    struct Local(Mutex<Vec<String>>);
    impl ChatCallback for Local {
        fn said(&self, pseudo: String, msg: String) {
            self.0.lock().unwrap().push(format!("{pseudo}: {msg}"));
        }
        fn confirm(&self, question: String) -> bool {
            question.ends_with('?')
        }
    }
    let local = Local::default();
    let object: &dyn ChatCallback = &local;
    // The same dispatch in both encodings; answers come in the arguments' own.
    for wire in Wire::ALL {
        let said = wire.value(&("ada", "hi")).unwrap();
        assert!(object.dispatch("said", said.as_ref()).unwrap().is_none());
        let ask = wire.value(&("ok?",)).unwrap();
        let answer = object.dispatch("Confirm", ask.as_ref()).unwrap().unwrap();
        assert_eq!((answer.as_ref().wire(), answer.decode::<bool>().unwrap()), (wire, true));
        let short = wire.value(&("ada",)).unwrap();
        let (code, _) = object.dispatch("said", short.as_ref()).unwrap_err();
        assert_eq!(code, ErrorCode::BadArgs);
        let none = wire.value(&[0u8; 0]).unwrap();
        let (code, message) = object.dispatch("confirm", none.as_ref()).unwrap_err();
        let expected = (ErrorCode::UnknownMethod, "ChatCallback has no method confirm");
        assert_eq!((code, &*message), expected);
    }
    assert_eq!(*local.0.lock().unwrap(), ["ada: hi", "ada: hi"]);
    assert_eq!(<dyn ChatCallback>::NAME, "ChatCallback");
    assert_eq!(
        <dyn ChatCallback>::METHODS,
        [
            CallbackMethod::new("said", &["pseudo", "msg"], false),
            CallbackMethod::new("Confirm", &["question"], true)
        ]
    );
}

/// The declarations docs/rpc.md describes in its `rpc.describe` example.
mod spec {
    use bidir::rpc::Callback;

    #[bidir::callback]
    pub(crate) trait ChatCallback {
        fn blabla(&self, pseudo: String, msg: String);
        fn confirm(&self, question: String) -> bool;
    }

    #[bidir::service]
    pub(crate) trait Chat {
        fn join(&self, pseudo: String, callback: Callback<dyn ChatCallback>);
        fn blabla(&self, pseudo: String, msg: String);
    }

    pub(crate) struct Nobody;

    impl Chat for Nobody {
        fn join(&self, _: String, _: Callback<dyn ChatCallback>) {}
        fn blabla(&self, _: String, _: String) {}
    }
}

#[test]
fn the_specification_describes_what_the_server_answers() {
    let spec = include_str!("../docs/rpc.md");
    let example = spec.split("```json\n").find(|b| b.starts_with(r#"["ok", 1, {"services""#));
    let example = example.expect("the example answer").split("```").next().unwrap();
    let compact: String = example.split_whitespace().collect();
    let services = Services::new()
        .serve(spec::ChatService::shared(spec::Nobody))
        .method("Calc.Add", |_cx, (a, b): (i64, i64)| Ok::<_, String>(a + b));
    let mut bed = TestBed::new(Server::builder().route("/rpc", services.hook())).unwrap();
    let peer = connect(&mut bed);
    assert_eq!(ask(&mut bed, peer, r#"["call",1,"rpc.describe",[]]"#), compact);
}

/// A caller over the test bed: sends a call, runs the bed until the answer comes (a deferred
/// one from another thread), and reads it with the protocol's codec.
struct BedCaller {
    bed: RefCell<TestBed>,
    peer: Peer,
    next: Cell<u64>,
    /// Every call sent, as text.
    sent: RefCell<Vec<String>>,
}

/// A callback object of the caller's: `{"$cb": id}`.
struct Local<T: ?Sized>(u64, PhantomData<fn() -> Box<T>>);

impl<T: ?Sized> Serialize for Local<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map([("$cb", self.0)])
    }
}

impl Caller for BedCaller {
    type Call<R> = Result<R, CallError>;
    type Local<T: ?Sized> = Local<T>;

    fn call<A: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        args: A,
    ) -> Result<R, CallError> {
        let id = self.next.replace(self.next.get() + 1);
        let text = serde_json::to_string(&("call", id, method, args)).unwrap();
        let text = text.replace(",null]", ",[]]"); // `()` is no arguments
        let (bed, peer) = (&mut *self.bed.borrow_mut(), self.peer);
        bed.send(peer, Message::Text(&text)).unwrap();
        self.sent.borrow_mut().push(text);
        for _ in 0..500 {
            let mut answered = None;
            for incoming in bed.recv(peer) {
                let Incoming::Text(text) = incoming else { panic!("{incoming:?}") };
                // Other messages (a release) are not the answer.
                bidir::protocol::rpc::json::decode(&text, |msg| match msg.unwrap() {
                    Msg::Result { value, .. } => {
                        let value = serde_json::from_str(value.get());
                        answered = Some(value.map_err(|e| CallError::Json(e.to_string())));
                    }
                    Msg::Error { error, .. } => {
                        answered = Some(Err(CallError::Remote {
                            code: error.code,
                            message: error.message.into_owned(),
                            data: error.data.map(|d| d.get().to_owned()),
                        }));
                    }
                    _ => {}
                })
                .unwrap();
            }
            if let Some(answer) = answered {
                return answer;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Err(CallError::Timeout)
    }

    fn call_async<A: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        args: A,
    ) -> Self::Call<R> {
        self.call(method, args)
    }
}

#[test]
fn the_client_proxy_calls_the_declared_methods_with_their_types() {
    let Bed { bed, peer, owed, .. } = bed();
    let caller =
        BedCaller { bed: RefCell::new(bed), peer, next: Cell::new(1), sent: RefCell::default() };
    let chat = ChatClient::new(&caller);
    let callback = |id| Local::<dyn ChatCallback>(id, PhantomData);
    assert_eq!(chat.join("ada".into(), &callback(7)), Ok(Ok(1)));
    assert_eq!(chat.join_async("bob".into(), &callback(8)), Ok(2));
    assert_eq!(chat.join("eve".into(), &callback(9)), Ok(Err(RoomFull { max: 2 })));
    assert_eq!(chat.path("/x".into()), Ok("/rpc/x".to_owned()));
    assert_eq!(chat.total(), Ok(2));
    let answering = std::thread::spawn(move || {
        let (n, reply) = owed.recv_timeout(Duration::from_secs(5)).unwrap();
        reply.ok(&(n + 1));
        let (_, reply) = owed.recv_timeout(Duration::from_secs(5)).unwrap();
        reply.err("too slow");
    });
    assert_eq!(chat.slow(41), Ok(42));
    let failed = chat.slow(1).unwrap_err();
    assert!(matches!(failed, CallError::Remote { code: ErrorCode::Service, .. }), "{failed:?}");
    answering.join().unwrap();
    assert_eq!(
        caller.sent.borrow()[..3],
        [
            r#"["call",1,"Chat.join",["ada",{"$cb":7}]]"#,
            r#"["call",2,"Chat.join",["bob",{"$cb":8}]]"#,
            r#"["call",3,"Chat.join",["eve",{"$cb":9}]]"#,
        ]
    );
    let counter = CountClient::new(&caller);
    assert_eq!(counter.add(3), Ok(3));
    assert_eq!(counter.made(), Ok(1));
    assert_eq!(caller.sent.borrow().last().unwrap(), r#"["call",9,"Counter.Made",[]]"#);
}

#[test]
fn a_service_error_whose_data_is_not_the_declared_type_is_a_json_error() {
    let remote = |data: Option<&str>| CallError::Remote {
        code: ErrorCode::Service,
        message: "room is full".into(),
        data: data.map(str::to_owned),
    };
    let full = service_result::<u8, RoomFull>(Err(remote(Some(r#"{"max":3}"#))));
    assert_eq!(full, Ok(Err(RoomFull { max: 3 })));
    let other = service_result::<u8, RoomFull>(Err(remote(Some(r#""full""#))));
    assert!(matches!(other, Err(CallError::Json(_))), "{other:?}");
    let none = service_result::<u8, RoomFull>(Err(remote(None)));
    assert!(matches!(none, Err(CallError::Json(_))), "{none:?}");
    let bad = CallError::Remote { code: ErrorCode::BadArgs, message: "no".into(), data: None };
    assert_eq!(service_result::<u8, RoomFull>(Err(bad.clone())), Err(bad));
    assert_eq!(service_result::<u8, RoomFull>(Err(CallError::Timeout)), Err(CallError::Timeout));
}

/// What a client-side `ChatCallback` object heard.
#[derive(Default)]
struct Heard {
    said: Mutex<Vec<(String, String)>>,
}

impl ChatCallback for Heard {
    fn said(&self, pseudo: String, msg: String) {
        self.said.lock().unwrap().push((pseudo, msg));
    }

    fn confirm(&self, question: String) -> bool {
        question.ends_with('?')
    }
}

#[test]
fn the_proxy_over_the_rust_client_calls_and_is_called_back_end_to_end() {
    use bidir::rpc::client::Client;

    // In both encodings.
    for wire in Wire::ALL {
        let members = Members::default();
        let (tx, owed) = channel();
        let room = Room { members: Arc::clone(&members), owed: Mutex::new(tx) };
        let released = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&released);
        let services = Services::new()
            .serve(ChatService::shared(room))
            .serve(CountService::per_connection(|_cx| Counter {
                total: Cell::new(0),
                life: Arc::default(),
            }))
            .on_release(move |_cx, _callback| {
                count.fetch_add(1, Ordering::Relaxed);
            });
        let mut config = bidir::ServerConfig::default();
        (config.workers, config.pin_workers) = (Some(1), false);
        let server =
            Server::builder().bind("127.0.0.1:0").config(config).route("/rpc", services.hook());
        let server = server.start().unwrap();
        let url = format!("ws://{}/rpc", server.local_addr());
        let client = Client::builder(&url).unwrap().wire(wire).connect().unwrap();

        let chat = ChatClient::new(&client);
        let heard = Arc::new(Heard::default());
        let callback = client.callback(Arc::clone(&heard) as Arc<dyn ChatCallback>);
        assert_eq!(chat.join("ada".into(), &callback), Ok(Ok(1)));
        assert_eq!(chat.path("/x".into()), Ok("/rpc/x".to_owned()));
        assert_eq!(chat.total(), Ok(1));
        // The server invokes and calls the client's object through its typed proxy.
        let member = members.lock().unwrap()[0].clone();
        member.said("bob".into(), "hi".into()).unwrap();
        let answer = member.confirm("ready?".into()).unwrap().wait_timeout(Duration::from_secs(5));
        assert_eq!(answer, Ok(true));
        assert_eq!(*heard.said.lock().unwrap(), [("bob".to_owned(), "hi".to_owned())]);
        // A deferred method, answered from another thread, and a typed error.
        let answering = std::thread::spawn(move || {
            let (n, reply) = owed.recv_timeout(Duration::from_secs(5)).unwrap();
            reply.ok(&(n * 2));
        });
        assert_eq!(chat.slow(21), Ok(42));
        answering.join().unwrap();
        let counter = CountClient::new(&client);
        assert_eq!((counter.add(2), counter.add(3)), (Ok(2), Ok(5)), "per connection");
        // The client drops its object: the server hears it, the member's proxy is released.
        drop(callback);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while released.load(Ordering::Relaxed) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(released.load(Ordering::Relaxed), 1);
        assert!(member.is_released());
        assert_eq!(member.said("bob".into(), "anyone?".into()), Err(CallbackError::Released));
        client.close();
        server.shutdown(Duration::from_secs(2));
    }
}
