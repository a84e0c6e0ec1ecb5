//! Several nodes over a real Redis (`redis-server` on loopback, a free port, stopped at the
//! end; scripts/redis/install.sh installs it): topics across nodes, exactly once; the
//! Redis subscription counted over workers and connections; rpc events in both encodings;
//! a Redis restart mid-stream, recovered and reported. Built with the `redis` feature.
#![cfg(feature = "redis")]

mod util;

use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use bidir::client::{Connect, Incoming, WebSocket};
use bidir::nodes::{NodeStats, Redis};
use bidir::rpc::client::{Client, LocalCallback};
use bidir::rpc::{Services, Wire};
use bidir::{Context, Handler, Message, Request, Server, ServerHandle};
use util::redis::{RedisCluster, RedisServer};

const WAIT: Duration = Duration::from_secs(10);

/// Waits (bounded) until `ready` holds.
fn eventually(what: &str, ready: impl FnMut() -> bool) {
    assert!(util::wait_until(WAIT, ready), "not within {WAIT:?}: {what}");
}

/// A connection subscribed to the topic its path names (`/sub/TOPIC`).
struct Subscriber(String);

impl Handler for Subscriber {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.subscribe(&self.0);
    }
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        // A client's message is published to the topic, for every node.
        cx.publish(&self.0, msg);
    }
}

fn services() -> Services {
    Services::new().authorize_publish(|_cx, _topic| Ok(()))
}

/// A node on `redis`, with `workers` workers.
fn node(redis: Redis, workers: usize) -> ServerHandle {
    Server::builder()
        .bind("127.0.0.1:0")
        .workers(workers)
        .route("/rpc", services().hook())
        .default_route(|req: &Request<'_>| {
            let topic = req.path().strip_prefix("/sub/").unwrap_or("none").to_owned();
            Ok(Subscriber(topic))
        })
        .redis(redis.prefix(&format!("test{}:", std::process::id())))
        .start()
        .unwrap()
}

fn stats(node: &ServerHandle) -> NodeStats {
    node.nodes().expect("a node joined to Redis")
}

fn subscriber(node: &ServerHandle, topic: &str) -> WebSocket {
    let url = format!("ws://{}/sub/{topic}", node.local_addr());
    Connect::new(&url).unwrap().read_timeout(Some(WAIT)).connect().unwrap()
}

fn text(ws: &mut WebSocket) -> String {
    match ws.recv().unwrap() {
        Incoming::Text(text) => text,
        other => panic!("not text: {other:?}"),
    }
}

/// Nothing more arrives within a moment.
fn nothing_more(ws: &mut WebSocket) {
    ws.set_read_timeout(Some(Duration::from_millis(300)));
    assert!(ws.recv().is_err(), "a message arrived twice, or one too many");
    ws.set_read_timeout(Some(WAIT));
}

fn subscribed(nodes: &[&ServerHandle], channels: u64) {
    for node in nodes {
        eventually("Redis confirms the node's subscriptions", || stats(node).channels == channels);
    }
}

fn three_nodes_deliver_every_publish_once(sharded: bool) {
    let redis = RedisServer::start();
    let config = Redis::new(&redis.url()).unwrap().sharded(sharded);
    let nodes: Vec<ServerHandle> = (0..3).map(|_| node(config.clone(), 2)).collect();
    let mut clients: Vec<WebSocket> = nodes.iter().map(|n| subscriber(n, "room")).collect();
    subscribed(&nodes.iter().collect::<Vec<_>>(), 1);

    // From the server's handle on each node in turn: every client gets each once, the
    // publishing node's too (delivered by its workers, not again from Redis).
    for round in 0..20 {
        let from = &nodes[round % 3];
        assert_eq!(from.publish("room", Message::Text(&format!("m{round}"))), 1);
    }
    // Each node's publishes in the order it made them; between nodes, a node's own come
    // first (they skip Redis).
    for ws in &mut clients {
        let got: Vec<usize> = (0..20).map(|_| text(ws)[1..].parse().unwrap()).collect();
        for node in 0..3 {
            let from: Vec<usize> = got.iter().copied().filter(|r| r % 3 == node).collect();
            let sent: Vec<usize> = (0..20).filter(|r| r % 3 == node).collect();
            assert_eq!(from, sent, "node {node}'s publishes, once each, in order");
        }
    }
    // From a handler (a client's message published by its connection's handler).
    clients[1].send(Message::Text("from a client")).unwrap();
    for ws in &mut clients {
        assert_eq!(text(ws), "from a client");
        nothing_more(ws);
    }
    let (sent, got): (u64, u64) = nodes
        .iter()
        .map(|n| (stats(n).published, stats(n).received))
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
    assert_eq!(sent, 21, "each publish goes to Redis once");
    assert_eq!(got, 42, "and reaches each of the two other nodes once");
    assert!(nodes.iter().all(|n| stats(n).lost_publishes == 0 && stats(n).gaps == 0));
    for n in &nodes {
        n.shutdown(Duration::from_secs(1));
    }
}

#[test]
fn three_nodes_deliver_every_publish_once_on_plain_pubsub() {
    three_nodes_deliver_every_publish_once(false);
}

#[test]
fn three_nodes_deliver_every_publish_once_on_sharded_pubsub() {
    three_nodes_deliver_every_publish_once(true);
}

/// Sharded pub/sub on a Redis cluster of three shards, each node given one address: every
/// node reads the slot map, subscribes and publishes each channel on the shard that owns it,
/// and every publish reaches every node once.
#[test]
fn topics_spread_over_a_redis_cluster_reach_every_node_once() {
    let cluster = RedisCluster::start();
    let config = Redis::new(&cluster.url()).unwrap().sharded(true);
    let nodes: Vec<ServerHandle> = (0..3).map(|_| node(config.clone(), 1)).collect();
    let topics: Vec<String> = (0..24).map(|n| format!("t{n}")).collect();
    let mut clients: Vec<Vec<WebSocket>> =
        nodes.iter().map(|n| topics.iter().map(|t| subscriber(n, t)).collect()).collect();
    subscribed(&nodes.iter().collect::<Vec<_>>(), 24);
    assert!(nodes.iter().all(|n| stats(n).connected));
    // Each shard holds its share of the channels (a channel on another shard is refused).
    for port in cluster.ports() {
        let channels = cluster.command(port, &["PUBSUB", "SHARDCHANNELS"]);
        assert!(
            matches!(&channels, redis::Value::Array(c) if !c.is_empty()),
            "{port}: {channels:?}"
        );
    }
    for (i, topic) in topics.iter().enumerate() {
        assert_eq!(nodes[i % 3].publish(topic, Message::Text(topic)), 1);
    }
    for (node, subscribers) in clients.iter_mut().enumerate() {
        for (topic, ws) in topics.iter().zip(subscribers.iter_mut()) {
            assert_eq!(&text(ws), topic, "on node {node}");
        }
    }
    for ws in clients.iter_mut().flatten().take(3) {
        nothing_more(ws);
    }
    let (sent, got) =
        nodes.iter().fold((0, 0), |(s, g), n| (s + stats(n).published, g + stats(n).received));
    assert_eq!((sent, got), (24, 48), "each publish to its shard once, to each other node once");
    assert!(nodes.iter().all(|n| stats(n).lost_publishes == 0 && stats(n).gaps == 0));
}

/// A slot moved to another shard under a subscription: the shard ends it (`SUNSUBSCRIBE`),
/// the nodes read the slot map again and subscribe and publish on the new owner.
#[test]
fn nodes_follow_a_slot_moved_to_another_shard() {
    let cluster = RedisCluster::start();
    let config = Redis::new(&cluster.url()).unwrap().sharded(true);
    let (a, b) = (node(config.clone(), 1), node(config, 1));
    let mut ws = subscriber(&b, "moving");
    subscribed(&[&b], 1);
    let text_of =
        |v: redis::Value| -> String { redis::FromRedisValue::from_redis_value(v).unwrap() };
    let channel = format!("test{}:ws:moving", std::process::id());
    let ports = cluster.ports();
    let slot = text_of(cluster.command(ports[0], &["CLUSTER", "KEYSLOT", &channel]));
    let owner = ports
        .iter()
        .copied()
        .find(|&p| {
            let channels = cluster.command(p, &["PUBSUB", "SHARDCHANNELS"]);
            matches!(&channels, redis::Value::Array(c) if !c.is_empty())
        })
        .expect("a shard holds the channel");
    let target = ports.iter().copied().find(|&p| p != owner).unwrap();
    let target_id = text_of(cluster.command(target, &["CLUSTER", "MYID"]));
    for port in [target, owner]
        .into_iter()
        .chain(ports.iter().copied().filter(|&p| p != owner && p != target))
    {
        cluster.command(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &target_id]);
    }
    eventually("b subscribed on the new owner", || {
        let channels = cluster.command(target, &["PUBSUB", "SHARDCHANNELS"]);
        matches!(&channels, redis::Value::Array(c) if !c.is_empty())
    });
    // a's publisher learns of the move from its first refused publish (counted lost).
    let delivered = util::wait_until(WAIT, || {
        a.publish("moving", Message::Text("here"));
        ws.set_read_timeout(Some(Duration::from_millis(100)));
        ws.recv().is_ok_and(|m| matches!(m, Incoming::Text(t) if t == "here"))
    });
    assert!(delivered, "a publish after the move reached b: {:?} {:?}", stats(&a), stats(&b));
    assert!(stats(&b).gaps >= 1, "the move is a gap for b: {:?}", stats(&b));
}

/// The primary a node was given (the seed) and that owns a subscribed channel fails, and its
/// replica takes over: the nodes read the slot map from the shards they know, and subscribe
/// and publish on the new primary.
#[test]
fn nodes_follow_a_failover_even_of_their_seed() {
    let mut cluster = RedisCluster::with_replicas(1);
    let ports = cluster.ports();
    let channel = format!("test{}:ws:failing", std::process::id());
    let slot: u16 = redis::FromRedisValue::from_redis_value(
        cluster.command(ports[0], &["CLUSTER", "KEYSLOT", &channel]),
    )
    .unwrap();
    let owner = cluster.owner(ports[0], slot).expect("a primary serves the slot");
    let config = Redis::new(&format!("redis://127.0.0.1:{owner}")).unwrap().sharded(true);
    let (a, b) = (node(config.clone(), 1), node(config, 1));
    let mut ws = subscriber(&b, "failing");
    subscribed(&[&b], 1);
    cluster.kill(owner);
    let other = ports.iter().copied().find(|&p| p != owner).unwrap();
    let failed_over = util::wait_until(Duration::from_secs(20), || {
        cluster.owner(other, slot).is_some_and(|p| p != owner)
    });
    assert!(failed_over, "the replica did not take over");
    let delivered = util::wait_until(Duration::from_secs(30), || {
        a.publish("failing", Message::Text("here"));
        ws.set_read_timeout(Some(Duration::from_millis(100)));
        ws.recv().is_ok_and(|m| matches!(m, Incoming::Text(t) if t == "here"))
    });
    assert!(delivered, "after the failover: {:?} {:?}", stats(&a), stats(&b));
}

#[test]
fn a_node_holds_one_redis_subscription_per_topic_whatever_its_subscribers() {
    let redis = RedisServer::start();
    let config = Redis::new(&redis.url()).unwrap();
    let (a, b) = (node(config.clone(), 2), node(config, 1));
    // Four connections over both of a's workers, on two topics.
    let mut room: Vec<WebSocket> = (0..3).map(|_| subscriber(&a, "room")).collect();
    let other = subscriber(&a, "other");
    subscribed(&[&a], 2);
    // Each goes; the channel stays until the last subscriber of the topic does.
    drop(room.pop());
    drop(room.pop());
    thread::sleep(Duration::from_millis(100));
    assert_eq!(stats(&a).channels, 2);
    b.publish("room", Message::Text("still here"));
    assert_eq!(text(&mut room[0]), "still here");
    drop(room.pop());
    subscribed(&[&a], 1);
    drop(other);
    subscribed(&[&a], 0);
    // A publish nobody subscribes to is sent and dropped by Redis, not delivered.
    let received = stats(&a).received;
    b.publish("room", Message::Text("nobody"));
    eventually("b published", || stats(&b).published == 2);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(stats(&a).received, received);
}

#[test]
fn rpc_events_reach_both_encodings_on_other_nodes_encoded_there() {
    let redis = RedisServer::start();
    let config = Redis::new(&redis.url()).unwrap();
    let (a, b) = (node(config.clone(), 1), node(config, 2));
    let connect = |node: &ServerHandle, wire: Wire| {
        let url = format!("ws://{}/rpc", node.local_addr());
        Client::builder(&url).unwrap().wire(wire).connect().unwrap()
    };
    let (tx, rx) = mpsc::channel::<(&str, String)>();
    let mut clients = Vec::new();
    for (name, node, wire) in
        [("a-json", &a, Wire::Json), ("b-json", &b, Wire::Json), ("b-bin", &b, Wire::Bin)]
    {
        let client = connect(node, wire);
        let tx = tx.clone();
        client.subscribe("news", move |data| tx.send((name, data.to_string())).unwrap()).unwrap();
        clients.push(client);
    }
    // One channel for the topic's two encodings on b.
    subscribed(&[&a, &b], 1);
    let collect = |n: usize| {
        let mut got: Vec<(&str, String)> = (0..n).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
        got.sort();
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "an event arrived twice");
        got
    };
    // The server's publish on a reaches a's subscriber once and b's in both encodings.
    assert_eq!(bidir::rpc::publish(&a, "news", &("hello", 1)).unwrap(), 1);
    let hello = r#"["hello",1]"#.to_owned();
    assert_eq!(
        collect(3),
        [("a-json", hello.clone()), ("b-bin", hello.clone()), ("b-json", hello)]
    );
    // A client's publish (MessagePack, from b) reaches a's JSON subscriber translated.
    clients[2].publish("news", &serde_json::json!({"k": [1, 2.5, "x"]})).unwrap();
    let data = r#"{"k":[1,2.5,"x"]}"#.to_owned();
    assert_eq!(collect(3), [("a-json", data.clone()), ("b-bin", data.clone()), ("b-json", data)]);
}

#[test]
fn a_large_message_crosses_nodes_whole() {
    let redis = RedisServer::start();
    let config = Redis::new(&redis.url()).unwrap();
    let (a, b) = (node(config.clone(), 1), node(config, 1));
    let mut ws = subscriber(&b, "big");
    subscribed(&[&b], 1);
    // Larger than a socket read, so the bridge reads it over several, with polls between.
    let big: String = (0..300_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    for _ in 0..3 {
        a.publish("big", Message::Text(&big));
    }
    for _ in 0..3 {
        assert!(text(&mut ws) == big, "the message arrived changed");
    }
}

#[test]
fn a_redis_restart_is_recovered_and_what_it_cost_is_counted() {
    let mut redis = RedisServer::start();
    let config = Redis::new(&redis.url()).unwrap();
    let (a, b) = (node(config.clone(), 1), node(config, 1));
    let mut ws = subscriber(&b, "stream");
    subscribed(&[&b], 1);
    // A publisher on a, one message every millisecond, across the restart.
    let seen = Arc::new(Mutex::new(Vec::<u32>::new()));
    let publishing = {
        let a = a.clone();
        thread::spawn(move || {
            for i in 0..1500u32 {
                a.publish("stream", Message::Text(&i.to_string()));
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let reading = {
        let seen = Arc::clone(&seen);
        thread::spawn(move || {
            while let Ok(Incoming::Text(t)) = ws.recv() {
                let i: u32 = t.parse().unwrap();
                seen.lock().unwrap().push(i);
                if i == 1499 {
                    break;
                }
            }
        })
    };
    thread::sleep(Duration::from_millis(300));
    redis.restart();
    publishing.join().unwrap();
    reading.join().unwrap();
    let seen = seen.lock().unwrap();
    // In order and never twice; the end arrives, so the bridge came back by itself.
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "out of order or twice");
    assert_eq!(seen.last(), Some(&1499));
    let (sa, sb) = (stats(&a), stats(&b));
    assert!(sb.connected && sb.reconnects >= 1 && sb.gaps >= 1, "b's loss is reported: {sb:?}");
    assert_eq!(sb.channels, 1, "b subscribed again");
    // Everything sent is accounted for: delivered, or counted lost on one side or the other.
    let missing = 1500 - seen.len() as u64;
    eprintln!("across the restart: {missing} of 1500 missing; a: {sa:?}; b: {sb:?}");
    assert!(
        missing == 0 || sa.lost_publishes > 0 || sb.gaps > 0,
        "{missing} missing and nothing counted: {sa:?} {sb:?}"
    );
    eventually("a accounts for every publish", || {
        let sa = stats(&a);
        sa.published + sa.lost_publishes == 1500
    });
}

#[test]
fn a_node_starts_while_redis_is_down_and_joins_when_it_comes() {
    let mut redis = RedisServer::start();
    redis.kill();
    let config = Redis::new(&redis.url()).unwrap();
    let (a, b) = (node(config.clone(), 1), node(config, 1));
    let mut ws = subscriber(&b, "late");
    thread::sleep(Duration::from_millis(200));
    assert!(!stats(&b).connected);
    redis.restart();
    subscribed(&[&b], 1);
    assert_eq!(stats(&b).gaps, 1, "b had a subscriber while Redis was away");
    a.publish("late", Message::Text("here"));
    assert_eq!(text(&mut ws), "here");
}

#[test]
fn a_stranger_on_the_prefix_is_counted_not_delivered() {
    let redis = RedisServer::start();
    let config = Redis::new(&redis.url()).unwrap().prefix("odd:");
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .workers(1)
        .default_route(|_req: &Request<'_>| Ok(Subscriber("t".to_owned())))
        .redis(config)
        .start()
        .unwrap();
    let mut ws = subscriber(&server, "t");
    subscribed(&[&server], 1);
    redis.command(&["PUBLISH", "odd:ws:t", "garbage"]);
    eventually("the stranger's message counted", || stats(&server).malformed == 1);
    nothing_more(&mut ws);
}

#[test]
fn a_service_hears_what_other_nodes_publish_and_not_its_own() {
    let redis = RedisServer::start();
    let config = Redis::new(&redis.url()).unwrap();
    let (a, b) = (node(config.clone(), 1), node(config, 1));
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    a.on_node_publish("svc", move |msg| {
        tx.lock().unwrap().send(msg.as_bytes().to_vec()).unwrap();
    });
    subscribed(&[&a], 1);
    assert_eq!(a.publish("svc", Message::Text("mine")), 0);
    assert_eq!(b.publish("svc", Message::Binary(b"theirs")), 0);
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), b"theirs");
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "its own publish came back");
}

/// The interface the room's callbacks stand for (a marker only).
trait Heard {}

/// Callbacks are node-local: a service on another node reaches one by publishing to a topic
/// that the callback's node relays (docs/nodes.md, "Callbacks"), as the chat example does.
#[test]
fn a_callback_on_one_node_is_reached_from_another_through_a_relayed_topic() {
    type Members = Arc<Mutex<Vec<bidir::rpc::Callback>>>;
    let redis = RedisServer::start();
    let config = Redis::new(&redis.url()).unwrap();
    let room = |members: &Members| {
        let (joined, said) = (Arc::clone(members), Arc::clone(members));
        Services::new()
            .method("Room.join", move |_cx, (cb,): (bidir::rpc::Callback,)| {
                joined.lock().unwrap().push(cb);
                Ok::<_, String>(())
            })
            .method("Room.say", move |cx: &mut Context<'_>, (text,): (String,)| {
                for member in said.lock().unwrap().iter() {
                    let _ = member.invoke("heard", (&text,));
                }
                cx.publish("room/said", Message::Text(&text));
                Ok::<_, String>(())
            })
    };
    let start = |members: &Members| {
        let server = Server::builder()
            .bind("127.0.0.1:0")
            .workers(1)
            .route("/rpc", room(members).hook())
            .redis(config.clone())
            .start()
            .unwrap();
        let relayed = Arc::clone(members);
        server.on_node_publish("room/said", move |msg| {
            let Message::Text(text) = msg else { return };
            for member in relayed.lock().unwrap().iter() {
                let _ = member.invoke("heard", (text,));
            }
        });
        server
    };
    let (on_a, on_b) = (Members::default(), Members::default());
    let (a, b) = (start(&on_a), start(&on_b));
    subscribed(&[&a, &b], 1);
    let (tx, rx) = mpsc::channel::<(&str, String)>();
    let member = |node: &ServerHandle, name: &'static str| {
        let client = Client::connect(&format!("ws://{}/rpc", node.local_addr())).unwrap();
        let tx = Mutex::new(tx.clone());
        let cb: LocalCallback<dyn Heard> = client.callback_with(move |_method, args| {
            tx.lock().unwrap().send((name, args.to_string())).unwrap();
            Ok(None)
        });
        client.call::<_, ()>("Room.join", (&cb,)).unwrap();
        (client, cb)
    };
    let (ada, _ada_cb) = member(&a, "ada");
    let (_bob, _bob_cb) = member(&b, "bob");
    ada.call::<_, ()>("Room.say", ("hello",)).unwrap();
    let mut heard: Vec<_> = (0..2).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
    heard.sort();
    assert_eq!(heard, [("ada", r#"["hello"]"#.to_owned()), ("bob", r#"["hello"]"#.to_owned())]);
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "heard twice");
}
