//! Closing a Rust rpc client leaves no thread behind: alone in its test binary, so that the
//! process's thread count is this test's own.

mod util;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bidir::Server;
use bidir::rpc::client::{Client, LocalCallback};
use bidir::rpc::{CallError, Callback, Reply, Services};
use util::config;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn eventually(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < deadline, "not within 10 s: {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn dropping_the_last_client_ends_its_connection_and_threads() {
    let released = Arc::new(Mutex::new(Vec::new()));
    let on_release = Arc::clone(&released);
    let members: Arc<Mutex<Vec<Callback>>> = Arc::default();
    let held: Arc<Mutex<Vec<Reply>>> = Arc::default();
    let (join, hold) = (Arc::clone(&members), Arc::clone(&held));
    let services = Services::new()
        .method("Chat.join", move |_cx, (callback,): (Callback,)| {
            join.lock().unwrap().push(callback);
            Ok::<_, String>(())
        })
        .deferred("Slow.hold", move |_cx, (): (), reply| hold.lock().unwrap().push(reply))
        .on_release(move |_cx, callback| on_release.lock().unwrap().push(callback.id()));
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(config(1))
        .route("/rpc", services.hook())
        .start()
        .unwrap();
    let before = threads();
    let client = Client::connect(&format!("ws://{}/rpc", server.local_addr())).unwrap();
    assert_eq!(threads(), before + 2, "the client's worker and its own thread");
    let callback: LocalCallback<()> = client.callback_with(|_, _| Ok(None));
    client.call::<_, ()>("Chat.join", (&callback,)).unwrap();
    client.subscribe("news", |_| {}).unwrap();
    let clone = client.clone();
    let waiting = client.call_async::<_, ()>("Slow.hold", ());
    eventually("the call held", || held.lock().unwrap().len() == 1);
    drop(client);
    assert!(clone.is_connected(), "a clone keeps it open");
    drop(clone);
    // A joined thread can still be listed for a moment: the kernel wakes the joiner before it
    // unlists the exiting thread. A thread left running would stay listed.
    let unlisted = Instant::now() + Duration::from_millis(500);
    while threads() != before && Instant::now() < unlisted {
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(threads(), before, "closing joins the client's threads");
    assert!(callback.is_released());
    assert_eq!(waiting.wait(), Err(CallError::Disconnected));
    eventually("the server sees the end", || server.connections() == 0);
    assert_eq!(*released.lock().unwrap(), [callback.id()]);
    assert!(members.lock().unwrap()[0].is_released());
}
