//! One topic history for every node, kept in Redis (docs/nodes.md, "History across nodes"),
//! over a real `redis-server`: a client recovers on any node, in order and once; a node cut
//! from Redis catches up from the history, or has its subscribers come back and be told; a
//! Redis restart is told to the clients that missed events. Built with the `redis` feature.
#![cfg(feature = "redis")]

mod util;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use serde_json::{Value as Json, json};

use bidir::client::{Connect, Incoming, WebSocket};
use bidir::nodes::{NodeStats, Redis};
use bidir::rpc::Services;
use bidir::rpc::client::Client;
use bidir::{Context, Message, Server, ServerHandle};
use util::redis::{RedisCluster, RedisServer};

const WAIT: Duration = Duration::from_secs(10);

/// Waits (bounded) until `ready` holds.
fn eventually(what: &str, ready: impl FnMut() -> bool) {
    assert!(util::wait_until(WAIT, ready), "not within {WAIT:?}: {what}");
}

/// A node on `redis`, one worker, every rpc topic keeping its last `keep` events;
/// `Room.say` broadcasts to `room` but to its caller.
fn history_node(redis: &Redis, keep: usize) -> ServerHandle {
    let services = Services::new().authorize_publish(|_cx, _topic| Ok(())).method(
        "Room.say",
        |cx: &mut Context<'_>, (said,): (String,)| {
            bidir::rpc::broadcast(cx, "room", &said).map(|_| ()).map_err(|e| e.to_string())
        },
    );
    Server::builder()
        .bind("127.0.0.1:0")
        .workers(1)
        .history("", bidir::rpc::History::new(keep, Duration::from_secs(60)))
        .route("/rpc", services.hook())
        .redis(redis.clone())
        .start()
        .unwrap()
}

fn stats(node: &ServerHandle) -> NodeStats {
    node.nodes().expect("a node joined to Redis")
}

fn subscribed(nodes: &[&ServerHandle], channels: u64) {
    for node in nodes {
        eventually("Redis confirms the node's subscriptions", || stats(node).channels == channels);
    }
}

/// A WebSocket speaking `bidir.json.v1` by hand, its batches taken apart.
struct JsonClient {
    ws: WebSocket,
    queued: VecDeque<Json>,
}

impl JsonClient {
    fn new(node: &ServerHandle) -> Self {
        let url = format!("ws://{}/rpc", node.local_addr());
        let options =
            Connect::new(&url).unwrap().protocol("bidir.json.v1").read_timeout(Some(WAIT));
        Self { ws: options.connect().unwrap(), queued: VecDeque::new() }
    }

    fn send(&mut self, text: &str) {
        self.ws.send(Message::Text(text)).unwrap();
    }

    /// The next message, as JSON (one of a batch's in turn).
    fn next(&mut self) -> Json {
        if let Some(json) = self.queued.pop_front() {
            return json;
        }
        let json: Json = match self.ws.recv().unwrap() {
            Incoming::Text(text) => serde_json::from_str(&text).unwrap(),
            other => panic!("not text: {other:?}"),
        };
        match json {
            // A batch: an array of messages, each an array.
            Json::Array(items) if items.first().is_some_and(Json::is_array) => {
                self.queued.extend(items);
                self.next()
            }
            json => json,
        }
    }

    fn ask(&mut self, text: &str) -> Json {
        self.send(text);
        self.next()
    }

    /// Nothing more arrives within a moment.
    fn nothing_more(&mut self) {
        assert!(self.queued.is_empty(), "more: {:?}", self.queued);
        self.ws.set_read_timeout(Some(Duration::from_millis(300)));
        assert!(self.ws.recv().is_err(), "a message arrived twice, or one too many");
        self.ws.set_read_timeout(Some(WAIT));
    }
}

/// A Rust client of `node` subscribed to `topic`: the numbers it gets, the gaps it is told.
fn numbers(node: &ServerHandle, topic: &str) -> (Client, mpsc::Receiver<u32>, Arc<Mutex<u32>>) {
    let gaps = Arc::new(Mutex::new(0));
    let told = Arc::clone(&gaps);
    let client = Client::builder(&format!("ws://{}/rpc", node.local_addr()))
        .unwrap()
        .backoff(Duration::from_millis(100), Duration::from_millis(200))
        .on_gap(move |_| *told.lock().unwrap() += 1)
        .connect()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    client
        .subscribe(topic, move |d| tx.lock().unwrap().send(d.decode::<u32>().unwrap()).unwrap())
        .unwrap();
    (client, rx, gaps)
}

/// What `rx` gets until `last`, or until nothing comes for 3 s.
fn until(rx: &mpsc::Receiver<u32>, last: u32) -> Vec<u32> {
    let mut seen = Vec::new();
    while let Ok(i) = rx.recv_timeout(Duration::from_secs(3)) {
        seen.push(i);
        if i == last {
            break;
        }
    }
    seen
}

fn recovers_on_another_node(url: &str, sharded: bool) {
    let config = Redis::new(url).unwrap().sharded(sharded);
    let (a, b) = (history_node(&config, 1000), history_node(&config, 1000));
    let mut ws = JsonClient::new(&a);
    let answer = ws.ask(r#"["sub",1,"h"]"#);
    let epoch = answer[2]["epoch"].as_str().unwrap().to_owned();
    assert_eq!(answer, json!(["ok", 1, {"epoch": epoch, "offset": 0, "recovered": true}]));
    for (n, node) in [(1, &b), (2, &a)] {
        bidir::rpc::publish(node, "h", &n).unwrap();
        assert_eq!(ws.next(), json!(["event", "h", n, n, epoch]), "numbered by Redis");
    }
    drop(ws);
    // Away: 3, 4, 5 are published, on both nodes, one after the other.
    for (n, node) in [(3, &a), (4, &b), (5, &a)] {
        bidir::rpc::publish(node, "h", &n).unwrap();
        eventually("published", || stats(&a).published + stats(&b).published == n);
    }
    // Back, on the other node, from its last position.
    let mut ws = JsonClient::new(&b);
    ws.send(&format!(r#"["sub",2,"h",2,"{epoch}"]"#));
    for n in 3..=5 {
        assert_eq!(ws.next(), json!(["event", "h", n, n, epoch]));
    }
    assert_eq!(ws.next(), json!(["ok", 2, {"epoch": epoch, "offset": 5, "recovered": true}]));
    bidir::rpc::publish(&a, "h", &6).unwrap();
    assert_eq!(ws.next(), json!(["event", "h", 6, 6, epoch]));
    ws.nothing_more();
    // A position of another epoch, or one ahead of the history, is not recovered.
    let answer = JsonClient::new(&a).ask(r#"["sub",1,"h",2,"00000000"]"#);
    assert_eq!(answer[2]["recovered"], false, "{answer}");
    let answer = JsonClient::new(&b).ask(&format!(r#"["sub",1,"h",9,"{epoch}"]"#));
    assert_eq!(answer[2]["recovered"], false, "{answer}");
    // The Rust client, in MessagePack, subscribing with no position: from 6 on.
    let (_client, rx, gaps) = numbers(&b, "h");
    bidir::rpc::publish(&a, "h", &7).unwrap();
    assert_eq!(until(&rx, 7), [7]);
    assert_eq!(*gaps.lock().unwrap(), 0);
}

#[test]
fn a_client_recovers_on_another_node_what_it_missed() {
    let redis = RedisServer::start();
    recovers_on_another_node(&redis.url(), false);
}

#[test]
fn a_client_recovers_on_another_node_on_sharded_pubsub() {
    let redis = RedisServer::start();
    recovers_on_another_node(&redis.url(), true);
}

/// On a Redis cluster: the history's keys and channel share a slot (the topic is their hash
/// tag), so its script runs on the shard that owns them.
#[test]
fn a_client_recovers_on_another_node_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    recovers_on_another_node(&cluster.url(), true);
}

/// A broadcast from a method skips its caller, on the caller's node only; every other
/// subscriber, on any node, gets it once.
#[test]
fn a_kept_broadcast_skips_its_caller_only() {
    let redis = RedisServer::start();
    let config = Redis::new(&redis.url()).unwrap();
    let (a, b) = (history_node(&config, 1000), history_node(&config, 1000));
    let mut caller = JsonClient::new(&a);
    let mut near = JsonClient::new(&a);
    let mut far = JsonClient::new(&b);
    let mut epoch = String::new();
    for ws in [&mut caller, &mut near, &mut far] {
        let answer = ws.ask(r#"["sub",1,"room"]"#);
        epoch = answer[2]["epoch"].as_str().unwrap().to_owned();
    }
    subscribed(&[&a, &b], 1);
    assert_eq!(caller.ask(r#"["call",2,"Room.say",["hi"]]"#), json!(["ok", 2, null]));
    for ws in [&mut near, &mut far] {
        assert_eq!(ws.next(), json!(["event", "room", "hi", 1, epoch]));
        ws.nothing_more();
    }
    caller.nothing_more();
}

/// An `unsub` that comes while the node asks Redis for the topic's history cancels the
/// subscription: both are answered, and no event follows.
#[test]
fn an_unsub_while_redis_answers_cancels_the_subscription() {
    let redis = RedisServer::start();
    let config = Redis::new(&redis.url()).unwrap();
    let (a, b) = (history_node(&config, 1000), history_node(&config, 1000));
    let mut ws = JsonClient::new(&b);
    // In one message (a batch), so that the unsub surely comes before Redis's answer.
    let answer = ws.ask(r#"[["sub",1,"h",4,"00000000"],["unsub",2,"h"]]"#);
    assert_eq!(answer, json!(["ok", 2, true]));
    assert_eq!(ws.next(), json!(["ok", 1, null]));
    subscribed(&[&b], 0);
    bidir::rpc::publish(&a, "h", &1).unwrap();
    eventually("a published", || stats(&a).published == 1);
    ws.nothing_more();
}

/// What a client of node `b` saw of 600 events published on node `a` (one a millisecond,
/// on a topic with a history) while `cut` was done to Redis 200 ms in.
struct Across {
    a: ServerHandle,
    b: ServerHandle,
    client: Client,
    seen: Vec<u32>,
    gaps: u32,
}

fn stream_across(redis: &mut RedisServer, cut: impl FnOnce(&mut RedisServer)) -> Across {
    let config = Redis::new(&redis.url()).unwrap();
    let (a, b) = (history_node(&config, 1000), history_node(&config, 1000));
    let (client, rx, gaps) = numbers(&b, "s");
    subscribed(&[&b], 1);
    let publishing = {
        let a = a.clone();
        thread::spawn(move || {
            for i in 0..600u32 {
                bidir::rpc::publish(&a, "s", &i).unwrap();
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    thread::sleep(Duration::from_millis(200));
    cut(redis);
    publishing.join().unwrap();
    let seen = until(&rx, 599);
    let gaps = *gaps.lock().unwrap();
    Across { a, b, client, seen, gaps }
}

/// A node whose subscriptions Redis cut (`CLIENT KILL TYPE pubsub`) in the middle of a stream
/// catches up from the history when it is back: its client misses nothing, gets nothing
/// twice, and stays connected.
#[test]
fn a_node_cut_from_redis_catches_up_from_the_history() {
    let mut redis = RedisServer::start();
    let run = stream_across(&mut redis, |redis| {
        redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    });
    assert_eq!(run.seen, (0..600).collect::<Vec<_>>(), "missed, twice or out of order");
    assert_eq!(run.gaps, 0);
    assert_eq!(run.client.stats().reconnects, 0);
    let node = stats(&run.b);
    assert!(node.gaps >= 1 && node.history_gaps == 0, "{node:?}");
}

/// Events published to one topic from several threads at once are all kept, once each, in
/// one order: each gets its number for Redis as it is queued.
#[test]
fn publishes_from_several_threads_are_all_kept() {
    let redis = RedisServer::start();
    let config = Redis::new(&redis.url()).unwrap();
    let (a, b) = (history_node(&config, 1000), history_node(&config, 1000));
    let (_client, rx, gaps) = numbers(&b, "s");
    subscribed(&[&b], 1);
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let a = a.clone();
            thread::spawn(move || {
                for i in 0..250 {
                    bidir::rpc::publish(&a, "s", &(t * 1000 + i)).unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let mut seen: Vec<u32> = (0..1000).map_while(|_| rx.recv_timeout(WAIT).ok()).collect();
    seen.sort_unstable();
    let sent: Vec<u32> = (0..4).flat_map(|t| (0..250).map(move |i| t * 1000 + i)).collect();
    assert_eq!(seen, sent);
    assert_eq!(*gaps.lock().unwrap(), 0);
    assert_eq!(stats(&a).lost_publishes, 0);
}

/// A node cut from Redis while a topic it serves is quiet (no event since its subscriber
/// came) still catches it up: what was published meanwhile reaches the subscriber.
#[test]
fn a_quiet_topic_is_caught_up_too() {
    let redis = RedisServer::start();
    let config = Redis::new(&redis.url()).unwrap();
    let (a, b) = (history_node(&config, 1000), history_node(&config, 1000));
    let (client, rx, gaps) = numbers(&b, "q");
    subscribed(&[&b], 1);
    redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    for i in 0..3u32 {
        bidir::rpc::publish(&a, "q", &i).unwrap();
    }
    assert_eq!(until(&rx, 2), [0, 1, 2]);
    assert_eq!(*gaps.lock().unwrap(), 0);
    assert_eq!(client.stats().reconnects, 0);
    assert!(stats(&b).gaps >= 1, "b's link was cut: {:?}", stats(&b));
}

/// A node whose topic keeps no history publishes to nodes where it does: its events are
/// delivered there without a position, and never take an offset of Redis's history.
#[test]
fn an_event_from_a_node_without_the_history_takes_no_offset() {
    let redis = RedisServer::start();
    let config = Redis::new(&redis.url()).unwrap();
    let (a, b) = (history_node(&config, 1000), history_node(&config, 1000));
    let plain = Server::builder()
        .bind("127.0.0.1:0")
        .workers(1)
        .route("/rpc", Services::new().hook())
        .redis(config)
        .start()
        .unwrap();
    let mut ws = JsonClient::new(&b);
    let epoch = ws.ask(r#"["sub",1,"h"]"#)[2]["epoch"].as_str().unwrap().to_owned();
    subscribed(&[&b], 1);
    bidir::rpc::publish(&plain, "h", &"plain").unwrap();
    assert_eq!(ws.next(), json!(["event", "h", "plain"]));
    bidir::rpc::publish(&a, "h", &"kept").unwrap();
    assert_eq!(ws.next(), json!(["event", "h", "kept", 1, epoch]));
}

/// A node cut from Redis for longer than the history keeps (5 events) cannot catch up: it
/// closes its subscribers (1012), which come back, subscribe again from their position and
/// are told what they missed — never silently.
#[test]
fn a_node_that_cannot_catch_up_has_its_subscribers_come_back_and_told() {
    let redis = RedisServer::start();
    let config = Redis::new(&redis.url()).unwrap();
    let (a, b) = (history_node(&config, 5), history_node(&config, 5));
    let (client, rx, gaps) = numbers(&b, "s");
    subscribed(&[&b], 1);
    bidir::rpc::publish(&a, "s", &0).unwrap();
    assert_eq!(until(&rx, 0), [0]);
    // 100 events while b reconnects (it waits 50 ms first).
    redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    for i in 1..=100u32 {
        bidir::rpc::publish(&a, "s", &i).unwrap();
    }
    eventually("b could not catch up", || stats(&b).history_gaps >= 1);
    eventually("the client came back", || client.stats().reconnects >= 1);
    eventually("the client was told", || *gaps.lock().unwrap() >= 1);
    eventually("b is subscribed again", || stats(&b).channels == 1);
    bidir::rpc::publish(&a, "s", &101).unwrap();
    let seen = until(&rx, 101);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "out of order or twice: {seen:?}");
    assert_eq!(seen.last(), Some(&101));
}

/// A Redis that keeps its data (append-only file, fsync on every write) killed and restarted
/// in the middle of a stream: the publisher sends again what the kill cut in flight (Redis
/// keeps it once), the nodes catch up from the history Redis kept, and the client misses
/// nothing, gets nothing twice, and is told no gap.
#[test]
fn across_a_restart_of_a_redis_that_keeps_its_data_nothing_is_missed() {
    let mut redis = RedisServer::start_persistent();
    let run = stream_across(&mut redis, RedisServer::restart);
    assert_eq!(run.seen, (0..600).collect::<Vec<_>>(), "missed, twice or out of order");
    assert_eq!(stats(&run.a).lost_publishes, 0);
    assert_eq!(run.gaps, 0, "no gap told");
    assert_eq!(run.client.stats().reconnects, 0, "the client stayed connected");
    assert_eq!(stats(&run.b).history_gaps, 0);
}

/// A Redis that loses its data in a restart: the clients that missed events are told (their
/// node closes them, they come back and subscribe again under Redis's new epoch), and never
/// get an event twice or out of order.
#[test]
fn across_a_restart_of_a_redis_that_loses_its_data_the_clients_are_told() {
    let mut redis = RedisServer::start();
    let run = stream_across(&mut redis, RedisServer::restart);
    assert!(run.seen.windows(2).all(|w| w[0] < w[1]), "out of order or twice: {:?}", run.seen);
    assert_eq!(run.seen.last(), Some(&599));
    if run.seen.len() < 600 {
        assert!(run.gaps >= 1, "{} missed and the client was not told", 600 - run.seen.len());
    }
    eprintln!("across the restart: {} of 600 seen, {} gap(s) told", run.seen.len(), run.gaps);
}

/// A topic's history is Redis's, not the node's: after the node's last subscriber left (and
/// its cache ended), a client subscribing again from its position recovers what it missed.
#[test]
fn a_history_outlives_the_nodes_last_subscriber() {
    let redis = RedisServer::start();
    let config = Redis::new(&redis.url()).unwrap();
    let (a, b) = (history_node(&config, 1000), history_node(&config, 1000));
    let mut ws = JsonClient::new(&b);
    let answer = ws.ask(r#"["sub",1,"h"]"#);
    assert_eq!(answer[2]["offset"], 0, "{answer}");
    let epoch = answer[2]["epoch"].as_str().unwrap().to_owned();
    subscribed(&[&b], 1);
    bidir::rpc::publish(&a, "h", &"one").unwrap();
    assert_eq!(ws.next(), json!(["event", "h", "one", 1, epoch]));
    assert_eq!(ws.ask(r#"["unsub",2,"h"]"#), json!(["ok", 2, true]));
    subscribed(&[&b], 0);
    bidir::rpc::publish(&a, "h", &"two").unwrap();
    eventually("a published", || stats(&a).published == 2);
    ws.send(&format!(r#"["sub",3,"h",1,"{epoch}"]"#));
    assert_eq!(ws.next(), json!(["event", "h", "two", 2, epoch]));
    let position = json!({"epoch": epoch, "offset": 2, "recovered": true});
    assert_eq!(ws.next(), json!(["ok", 3, position]));
}
