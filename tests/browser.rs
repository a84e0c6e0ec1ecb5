//! The browser module (`bidir::rpc::BROWSER_MODULE`) driven in headless Chromium by
//! scripts/browser/rpc-check.js against the services below, over a real socket: call results,
//! every error code a page sees, timeouts, callbacks with and without answers, batches both
//! ways (and cut under the server's message limit), events, release both ways, and
//! reconnection: its backoff against a server that closes at once, subscriptions made again,
//! and the accepted callback-passing calls replayed.
//!
//! Ignored by plain `cargo test` (it needs node, playwright-core and Chromium);
//! scripts/browser/check.sh runs it with `--ignored` after installing them.

use std::fmt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Serialize, Serializer};
use serde_json::Value;

use bidir::rpc::{CallError, Callback, History, Reply, Services};
use bidir::{Accept, CloseCode, Context, Handler, HttpResponse, Request, Server};

mod util;

/// The page the script imports the module into (no favicon request: no 404 in its console).
const PAGE: &str = r#"<!doctype html><title>bidir</title><link rel="icon" href="data:,">"#;

/// What the services saw, checked once the page is done.
#[derive(Default)]
struct Seen {
    /// Callbacks registered with `Test.register` and not released.
    live: Mutex<Vec<Callback>>,
    registrations: AtomicU64,
    releases: AtomicU64,
    /// Replies `Test.never` and `Test.stall` hold unanswered, by label.
    held: Mutex<Vec<(String, Reply)>>,
    /// Whether topic "once" was subscribed to: it is refused after that.
    once: AtomicBool,
}

/// A connection closed as soon as it opens (a server refusing pages, overloaded).
struct Slam;

impl Handler for Slam {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        let _ = cx.close(CloseCode::TRY_AGAIN_LATER, "overloaded");
    }
}

/// A service error whose value (the answer's `data`) is `{"max": N}`.
struct RoomFull(u32);

impl Serialize for RoomFull {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serde_json::json!({ "max": self.0 }).serialize(serializer)
    }
}

impl fmt::Display for RoomFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "room is full ({} members)", self.0)
    }
}

fn services(seen: &Arc<Seen>) -> Services {
    let s = |seen: &Arc<Seen>| Arc::clone(seen);
    let (register, count, tick, never, cancelled, released) =
        (s(seen), s(seen), s(seen), s(seen), s(seen), s(seen));
    let (stall, once) = (s(seen), s(seen));
    Services::new()
        .method("Test.add", |_cx, (a, b): (i64, i64)| Ok::<_, String>(a + b))
        .method("Test.length", |_cx, (text,): (String,)| Ok::<_, String>(text.len()))
        .method("Test.full", |_cx, (): ()| Err::<(), _>(RoomFull(8)))
        .method("Test.boom", |_cx, (): ()| -> Result<(), String> { panic!("boom") })
        .method("Test.register", move |_cx, (callback,): (Callback,)| {
            register.live.lock().unwrap().push(callback);
            Ok::<_, String>(register.registrations.fetch_add(1, Ordering::Relaxed) + 1)
        })
        // [registrations so far, callbacks live]
        .method("Test.registrations", move |_cx, (): ()| {
            let live = count.live.lock().unwrap().len() as u64;
            Ok::<_, String>([count.registrations.load(Ordering::Relaxed), live])
        })
        // Invokes tick(n) on every live registered callback.
        .method("Test.tick", move |_cx, (n,): (u64,)| {
            let live = tick.live.lock().unwrap();
            live.iter().try_for_each(|cb| cb.invoke("tick", (n,))).map_err(|e| e.to_string())?;
            Ok::<_, String>(live.len())
        })
        // n invocations queued during one call: they go out with its answer, as one batch.
        .method("Test.burst", |_cx, (callback, n): (Callback, u64)| {
            (0..n).try_for_each(|i| callback.invoke("tick", (i,))).map_err(|e| e.to_string())?;
            Ok::<_, String>(n)
        })
        // Takes the callback and lets go of it: the page is told (release).
        .method("Test.drop", |_cx, (_callback,): (Callback,)| Ok::<_, String>(()))
        // Asks the callback to confirm, answers with its answer, or with the error it got.
        .deferred("Test.ask", |_cx, (callback, question): (Callback, String), reply: Reply| {
            match callback.call::<_, Value>("confirm", (question,)) {
                Ok(pending) => pending.then(move |_cx, answer| match answer {
                    Ok(value) => reply.ok(&value),
                    Err(CallError::Remote { code, message, data }) => {
                        reply.err(format!("{code}: {message}: {}", data.unwrap_or_default()))
                    }
                    Err(e) => reply.err(e.to_string()),
                }),
                Err(e) => reply.err(e.to_string()),
            }
        })
        .deferred("Test.never", move |_cx, (label,): (String,), reply: Reply| {
            never.held.lock().unwrap().push((label, reply));
        })
        // Registers the callback like Test.register, and never answers.
        .deferred("Test.stall", move |_cx, (callback,): (Callback,), reply: Reply| {
            stall.live.lock().unwrap().push(callback);
            stall.registrations.fetch_add(1, Ordering::Relaxed);
            stall.held.lock().unwrap().push(("stall".to_owned(), reply));
        })
        .method("Test.cancelled", move |_cx, (label,): (String,)| {
            let held = cancelled.held.lock().unwrap();
            Ok::<_, String>(held.iter().any(|(l, reply)| *l == label && reply.is_cancelled()))
        })
        .method("Test.publish", |cx, (topic, data): (String, Value)| {
            bidir::rpc::publish(&cx.server(), &topic, &data).map_err(|e| e.to_string())
        })
        // The server ends the connection and publishes `from..to` to `topic` while the page
        // is away: a topic with a history recovers them on the next connection.
        .method("Test.away", |cx, (topic, from, to): (String, u64, u64)| {
            cx.close(CloseCode::SERVICE_RESTART, "test").map_err(|e| e.to_string())?;
            for n in from..to {
                bidir::rpc::publish(&cx.server(), &topic, &n).map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        })
        // The server ends the connection: the page reconnects.
        .method("Test.close", |cx, (): ()| {
            cx.close(CloseCode::SERVICE_RESTART, "test").map_err(|e| e.to_string())
        })
        .authorize_subscribe(move |_cx, topic| match topic {
            "staff" => Err("not a member of staff".to_owned()),
            "once" if once.once.swap(true, Ordering::Relaxed) => Err("only once".to_owned()),
            _ => Ok(()),
        })
        // Pages may publish on "open" only.
        .authorize_publish(|_cx, topic| match topic {
            "open" => Ok(()),
            _ => Err("closed topic".to_owned()),
        })
        .on_release(move |_cx, callback| {
            released.releases.fetch_add(1, Ordering::Relaxed);
            released.live.lock().unwrap().retain(|cb| cb != callback);
        })
}

#[test]
#[ignore = "needs node, playwright-core and Chromium: scripts/browser/check.sh runs it"]
fn the_browser_module_in_chromium() {
    let seen = Arc::new(Seen::default());
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(util::config(2))
        .http("/", |_req: &Request<'_>| HttpResponse::html(PAGE))
        .http("/bidir.js", bidir::rpc::serve_module)
        .route("/rpc", services(&seen).hook())
        .history("hist/", History::new(100, Duration::from_secs(60)))
        .route("/slam", |_req: &Request<'_>| {
            Ok::<_, HttpResponse>(Accept::new(Slam).protocol(bidir::protocol::rpc::JSON_PROTOCOL))
        })
        .start()
        .unwrap();
    let url = format!("http://{}/", server.local_addr());
    let mut check = Command::new("node")
        .arg("scripts/browser/rpc-check.js")
        .arg(&url)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .spawn()
        .expect("node runs scripts/browser/rpc-check.js");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = check.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = check.kill();
            panic!("rpc-check.js still running after 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "rpc-check.js failed: {status}");
    // The page registered a callback it released, one that its replayed call registered
    // again after the reconnection, one it forgot (released when invoked), and two that it
    // did not replay; every registration was released exactly once by the end.
    assert!(util::wait_until(Duration::from_secs(10), || server.connections() == 0));
    assert_eq!(seen.registrations.load(Ordering::Relaxed), 6);
    assert_eq!(seen.releases.load(Ordering::Relaxed), 6);
    assert!(seen.live.lock().unwrap().is_empty());
    server.shutdown(Duration::from_secs(5));
}
