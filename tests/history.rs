//! Topic history and recovery (docs/rpc.md, "History and recovery"): events numbered and
//! kept, a client that comes back gets what it missed — in order, once — or is told it cannot,
//! over the Rust client in both encodings and on the wire.

mod util;

use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use bidir::client::{Connect, Incoming};
use bidir::rpc::client::Client;
use bidir::rpc::{History, Services, Wire};
use bidir::testbed::{HOST, TestBed};
use bidir::{CloseCode, Context, Message, Server, ServerHandle};

const WAIT: Duration = Duration::from_secs(10);

/// Waits (bounded) until `ready` holds.
fn eventually(what: &str, ready: impl FnMut() -> bool) {
    assert!(util::wait_until(WAIT, ready), "not within {WAIT:?}: {what}");
}

/// A server keeping `room/` topics' last `keep` events; `Admin.kick` closes the caller.
fn server(keep: usize) -> ServerHandle {
    let services = Services::new()
        .method("Admin.kick", |cx: &mut Context<'_>, (): ()| {
            cx.close(CloseCode::GOING_AWAY, "kicked").map_err(|e| e.to_string())
        })
        .method("Room.say", |cx: &mut Context<'_>, (n,): (u32,)| {
            bidir::rpc::broadcast(cx, "room/1", &n).map(|_| ()).map_err(|e| e.to_string())
        });
    Server::builder()
        .bind("127.0.0.1:0")
        .workers(2)
        .history("room/", History::new(keep, Duration::from_secs(60)))
        .route("/rpc", services.hook())
        .start()
        .unwrap()
}

/// A client of `server` in `wire`, subscribed to `room/1`, whose events (numbers) and gaps
/// are sent to the receivers; it reconnects after 200 ms.
fn client(
    server: &ServerHandle,
    wire: Wire,
) -> (Client, mpsc::Receiver<u32>, Arc<Mutex<Vec<String>>>) {
    let gaps = Arc::new(Mutex::new(Vec::new()));
    let told = Arc::clone(&gaps);
    let client = Client::builder(&format!("ws://{}/rpc", server.local_addr()))
        .unwrap()
        .wire(wire)
        .backoff(Duration::from_millis(200), Duration::from_millis(400))
        .on_gap(move |topic| told.lock().unwrap().push(topic.to_owned()))
        .connect()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    client
        .subscribe("room/1", move |data| {
            tx.lock().unwrap().send(data.decode::<u32>().unwrap()).unwrap();
        })
        .unwrap();
    (client, rx, gaps)
}

fn publish(server: &ServerHandle, events: std::ops::Range<u32>) {
    for n in events {
        bidir::rpc::publish(server, "room/1", &n).unwrap();
    }
}

fn received(rx: &mpsc::Receiver<u32>, n: usize) -> Vec<u32> {
    (0..n).map(|_| rx.recv_timeout(WAIT).unwrap()).collect()
}

/// Kicks the client and publishes `events` while it is away.
fn away(server: &ServerHandle, client: &Client, events: std::ops::Range<u32>) {
    let _ = client.call::<_, ()>("Admin.kick", ());
    eventually("the client is disconnected", || !client.is_connected());
    publish(server, events);
    eventually("the client is back", || client.is_connected() && client.stats().reconnects == 1);
}

#[test]
fn a_client_that_comes_back_gets_what_it_missed_in_order_once() {
    for wire in Wire::ALL {
        let server = server(100);
        let (client, rx, gaps) = client(&server, wire);
        publish(&server, 0..3);
        assert_eq!(received(&rx, 3), [0, 1, 2]);
        away(&server, &client, 3..8);
        publish(&server, 8..10);
        assert_eq!(received(&rx, 7), [3, 4, 5, 6, 7, 8, 9], "{wire:?}");
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "an event came twice");
        assert!(gaps.lock().unwrap().is_empty());
        assert_eq!(client.stats().gaps, 0);
        // Events from a handler (broadcast: the caller skipped) are numbered too.
        let other = Client::connect(&format!("ws://{}/rpc", server.local_addr())).unwrap();
        other.call::<_, ()>("Room.say", (10,)).unwrap();
        assert_eq!(received(&rx, 1), [10]);
        other.close();
        client.close();
        server.shutdown(Duration::from_secs(1));
    }
}

#[test]
fn a_client_that_was_away_too_long_is_told_and_goes_on() {
    let server = server(2);
    let (client, rx, gaps) = client(&server, Wire::Json);
    publish(&server, 0..1);
    assert_eq!(received(&rx, 1), [0]);
    // 1..6 while away: only 4 and 5 are kept, so 1..4 cannot be recovered.
    away(&server, &client, 1..6);
    eventually("the gap is told", || gaps.lock().unwrap().len() == 1);
    assert_eq!(*gaps.lock().unwrap(), ["room/1"]);
    assert_eq!(client.stats().gaps, 1);
    // Nothing of the lost stretch is sent half-way; the stream goes on.
    publish(&server, 6..7);
    assert_eq!(received(&rx, 1), [6]);
}

#[test]
fn topics_without_history_are_told_as_gaps_only_when_asked_from_a_position() {
    // `news` keeps no history: its events carry no position and a reconnection is no gap.
    let server = server(10);
    let (client, _rx, gaps) = client(&server, Wire::Json);
    client.subscribe("news", |_| {}).unwrap();
    bidir::rpc::publish(&server, "news", &1).unwrap();
    away(&server, &client, 0..0);
    thread::sleep(Duration::from_millis(100));
    assert!(gaps.lock().unwrap().is_empty(), "{:?}", gaps.lock().unwrap());
}

#[test]
fn on_the_wire_events_carry_their_position_and_sub_answers_the_history() {
    let builder = Server::builder()
        .history("", History::new(10, Duration::from_secs(60)))
        .route("/rpc", Services::new().hook());
    let mut bed = TestBed::new(builder).unwrap();
    let options = Connect::new(&format!("ws://{HOST}/rpc")).unwrap().protocol("bidir.json.v1");
    let peer = bed.connect_with(&options).unwrap();
    bed.run_until_idle();
    let ask = |bed: &mut TestBed, text: &str| {
        bed.send(peer, Message::Text(text)).unwrap();
        bed.run_until_idle();
        bed.recv(peer)
    };
    let first = ask(&mut bed, r#"["sub",1,"t"]"#);
    let [Incoming::Text(answer)] = &first[..] else { panic!("{first:?}") };
    let answer: serde_json::Value = serde_json::from_str(answer).unwrap();
    let epoch = answer[2]["epoch"].as_str().unwrap().to_owned();
    assert_eq!(answer[2]["offset"], 0);
    assert_eq!(answer[2]["recovered"], true);
    bidir::rpc::publish(&bed.handle(), "t", &"a").unwrap();
    bidir::rpc::publish(&bed.handle(), "t", &"b").unwrap();
    bed.run_until_idle();
    assert_eq!(
        bed.recv(peer),
        [
            Incoming::Text(format!(r#"["event","t","a",1,"{epoch}"]"#)),
            Incoming::Text(format!(r#"["event","t","b",2,"{epoch}"]"#)),
        ]
    );
    // From offset 1: event 2 again, then the answer, in one batch.
    let again = ask(&mut bed, &format!(r#"["sub",2,"t",1,"{epoch}"]"#));
    assert_eq!(
        again,
        [Incoming::Text(format!(
            r#"[["event","t","b",2,"{epoch}"],["ok",2,{{"epoch":"{epoch}","offset":2,"recovered":true}}]]"#
        ))]
    );
    // Another epoch: not recovered, nothing sent but the answer.
    let other = ask(&mut bed, r#"["sub",3,"t",1,"nope"]"#);
    assert_eq!(
        other,
        [Incoming::Text(format!(r#"["ok",3,{{"epoch":"{epoch}","offset":2,"recovered":false}}]"#))]
    );
}
