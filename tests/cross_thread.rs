//! Acting on connections from other threads: posts in order with sends, batches to many
//! connections, and receipts for sends that were queued or dropped. Over loopback; run again
//! with `BIDIR_BACKEND=epoll` for the other backend.

mod util;

use std::sync::{Mutex, mpsc};
use std::time::Duration;

use bidir::{
    Batch, Bytes, CloseCode, CloseInfo, ConnHandle, Context, DataKind, Handler, Message, Outcome,
    Request, SendError, Server, ServerHandle,
};
use util::{Client, Got, config, wait_until};

const WAIT: Duration = Duration::from_secs(10);

/// Hands its handle out on open; remembers the last message and counts posts.
struct Stateful {
    handles: mpsc::Sender<ConnHandle>,
    closes: mpsc::Sender<String>,
    last: String,
    posts: usize,
}

impl Handler for Stateful {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        self.handles.send(cx.handle()).unwrap();
    }
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        if let Message::Text(t) = msg {
            self.last = t.to_owned();
            cx.send_text(&format!("got {t}")).unwrap();
        }
    }
    fn on_close(&mut self, _cx: &mut Context<'_>, close: CloseInfo<'_>) {
        let _ = self.closes.send(format!("close {}", close.code.0));
    }
}

fn server(
    cfg: bidir::ServerConfig,
) -> (ServerHandle, mpsc::Receiver<ConnHandle>, mpsc::Receiver<String>) {
    let (handles, handles_rx) = mpsc::channel();
    let (closes, closes_rx) = mpsc::channel();
    let senders = Mutex::new((handles, closes));
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(cfg)
        .route("/s", move |_req: &Request<'_>| {
            let (handles, closes) = senders.lock().unwrap().clone();
            Ok(Stateful { handles, closes, last: String::new(), posts: 0 })
        })
        .start()
        .unwrap();
    (server, handles_rx, closes_rx)
}

fn connect(server: &ServerHandle, handles: &mpsc::Receiver<ConnHandle>) -> (Client, ConnHandle) {
    let client = Client::connect(server.local_addr(), "/s");
    (client, handles.recv_timeout(WAIT).unwrap())
}

/// A handler type no route uses.
struct Other;
impl Handler for Other {}

/// Drops its flag's sender when dropped: tells whether a closure ran or was dropped.
fn ran_or_dropped() -> (mpsc::Sender<()>, mpsc::Receiver<()>) {
    mpsc::channel()
}

#[test]
fn posts_run_in_order_with_sends_and_see_the_handlers_state() {
    let (server, handles, _closes) = server(config(2));
    let (mut c, handle) = connect(&server, &handles);
    c.send_text("hello");
    assert_eq!(c.recv(), Got::Text("got hello".into()));
    // The post sees what on_message left.
    let (seen_tx, seen) = mpsc::channel();
    handle.post_to::<Stateful, _>(move |h, _cx| seen_tx.send(h.last.clone()).unwrap()).unwrap();
    assert_eq!(seen.recv_timeout(WAIT).unwrap(), "hello");
    // Sends and posts from one thread, interleaved: the peer sees them in that order, and each
    // post sees the count the posts before it left.
    let from = std::thread::spawn(move || {
        for i in 0..100 {
            handle.send_text(&format!("s{i}")).unwrap();
            handle
                .post_to::<Stateful, _>(|h, cx| {
                    h.posts += 1;
                    cx.send_text(&format!("p{}", h.posts)).unwrap();
                })
                .unwrap();
        }
        handle
    });
    let handle = from.join().unwrap();
    for i in 0..100 {
        assert_eq!(c.recv(), Got::Text(format!("s{i}")));
        assert_eq!(c.recv(), Got::Text(format!("p{}", i + 1)));
    }
    // A post for another handler type is dropped unrun; the connection is untouched.
    let (flag, ran) = ran_or_dropped();
    handle.post_to::<Other, _>(move |_o, _cx| flag.send(()).unwrap()).unwrap();
    assert_eq!(ran.recv_timeout(WAIT), Err(mpsc::RecvTimeoutError::Disconnected));
    // The untyped post reaches it as `dyn Handler`.
    handle.post(|_h, cx| cx.send_text("untyped").unwrap()).unwrap();
    assert_eq!(c.recv(), Got::Text("untyped".into()));
    server.shutdown(Duration::from_secs(1));
}

#[test]
fn a_post_to_a_closed_connection_is_dropped_unrun() {
    let (server, handles, closes) = server(config(1));
    let (_c, handle) = connect(&server, &handles);
    // The worker is held in a first post while two more queue behind it (so the handle
    // cannot learn of the close before the third is posted): the second aborts the
    // connection, the third finds it gone and is dropped without running, after on_close.
    let (release, held) = mpsc::channel::<()>();
    handle
        .post(move |_h, _cx| {
            let _ = held.recv_timeout(WAIT);
        })
        .unwrap();
    handle.post(|_h, cx| cx.abort()).unwrap();
    let (flag, ran) = ran_or_dropped();
    handle.post(move |_h, _cx| flag.send(()).unwrap()).unwrap();
    release.send(()).unwrap();
    assert_eq!(ran.recv_timeout(WAIT), Err(mpsc::RecvTimeoutError::Disconnected));
    assert_eq!(closes.recv_timeout(WAIT).unwrap(), "close 1006");
    // Once the handle knows, a post is refused at once (and its closure dropped).
    assert!(wait_until(WAIT, || handle.is_closed()));
    let (flag, ran) = ran_or_dropped();
    assert_eq!(handle.post(move |_h, _cx| flag.send(()).unwrap()), Err(SendError::Closed));
    assert_eq!(ran.try_recv(), Err(mpsc::TryRecvError::Disconnected));
    server.shutdown(Duration::from_secs(1));
}

#[test]
fn a_panicking_post_fails_only_its_connection_with_1011() {
    let (server, handles, _closes) = server(config(1));
    let (mut c, handle) = connect(&server, &handles);
    let (mut other, _other_handle) = connect(&server, &handles);
    handle.post(|_h, _cx| panic!("a post panics")).unwrap();
    assert!(matches!(c.recv(), Got::Close(Some(CloseCode::INTERNAL_ERROR), _)));
    other.send_text("still");
    assert_eq!(other.recv(), Got::Text("got still".into()));
    server.shutdown(Duration::from_secs(1));
}

#[test]
fn a_batch_reaches_many_connections_in_order_with_direct_sends() {
    let (server, handles, _closes) = server(config(2));
    let pairs: Vec<(Client, ConnHandle)> = (0..24).map(|_| connect(&server, &handles)).collect();
    let shared = Bytes::from_static(b"shared");
    let mut batch = Batch::new();
    for round in 0..3 {
        for (_, h) in &pairs {
            batch.send_text(h, &format!("b{round}")).unwrap();
        }
    }
    for (_, h) in &pairs {
        batch.send_shared(h, DataKind::Text, shared.clone()).unwrap();
        batch.post(h, |_h, cx| cx.send_text("posted").unwrap()).unwrap();
    }
    assert_eq!(batch.len(), 24 * 5);
    // Nothing is sent before the commit: a direct send made now arrives first.
    for (_, h) in &pairs {
        h.send_text("before").unwrap();
    }
    assert_eq!(batch.commit(), 24 * 5);
    assert!(batch.is_empty());
    for (_, h) in &pairs {
        h.send_text("after").unwrap();
    }
    // Reused, then dropped uncommitted: dropping commits.
    for (_, h) in &pairs {
        batch.send_text(h, "dropped").unwrap();
    }
    drop(batch);
    for (mut c, _) in pairs {
        for want in ["before", "b0", "b1", "b2", "shared", "posted", "after", "dropped"] {
            assert_eq!(c.recv(), Got::Text(want.into()));
        }
    }
    server.shutdown(Duration::from_secs(1));
}

#[test]
fn a_batch_refuses_closed_connections_and_keeps_the_others() {
    let (server, handles, _closes) = server(config(2));
    let (mut open, open_handle) = connect(&server, &handles);
    let (mut closed, closed_handle) = connect(&server, &handles);
    closed_handle.close(CloseCode::NORMAL, "bye").unwrap();
    assert_eq!(closed.recv(), Got::Close(Some(CloseCode::NORMAL), "bye".into()));
    assert!(wait_until(WAIT, || closed_handle.is_closed()));
    let mut batch = Batch::new();
    assert_eq!(batch.send(&closed_handle, Message::Text("x")), Err(SendError::Closed));
    assert_eq!(
        batch.send_shared(&open_handle, DataKind::Text, Bytes::from_static(b"\xff")),
        Err(SendError::Protocol(bidir::protocol::SendError::InvalidUtf8))
    );
    batch.send(&open_handle, Message::Text("ok")).unwrap();
    assert_eq!(batch.commit(), 1);
    assert_eq!(open.recv(), Got::Text("ok".into()));
    server.shutdown(Duration::from_secs(1));
}

#[test]
fn receipts_tell_queued_from_dropped_when_closed() {
    let (server, handles, _closes) = server(config(1));
    let (mut c, handle) = connect(&server, &handles);
    let receipt = handle.send_with_receipt(Message::Text("one")).unwrap();
    assert_eq!(receipt.wait_timeout(WAIT), Some(Outcome::Queued));
    assert_eq!(c.recv(), Got::Text("one".into()));
    // Accepted, then dropped: the connection is gone when the worker applies it (one batch, so
    // the worker cannot mark the handle closed between the two).
    let mut batch = Batch::new();
    batch.post(&handle, |_h, cx| cx.abort()).unwrap();
    let late =
        batch.send_with_receipt(&handle, DataKind::Text, Bytes::from_static(b"late")).unwrap();
    batch.commit();
    assert_eq!(late.wait_timeout(WAIT), Some(Outcome::Dropped(SendError::Closed)));
    assert!(wait_until(WAIT, || handle.is_closed()));
    assert_eq!(handle.send_with_receipt(Message::Text("x")).unwrap_err(), SendError::Closed);
    server.shutdown(Duration::from_secs(1));
}

#[test]
fn receipts_tell_queued_from_dropped_over_the_backpressure_limit() {
    let mut cfg = config(1);
    cfg.max_backpressure = 256 << 10;
    let (server, handles, _closes) = server(cfg);
    let (mut c, handle) = connect(&server, &handles);
    // One batch is applied in one worker turn, before the flush: the queue only grows. A send
    // is admitted while the queue is under the limit: 4 of 64 KiB fit, the rest drop.
    let payload = Bytes::from(vec![b'x'; 64 << 10]);
    let mut batch = Batch::new();
    let receipts: Vec<_> = (0..8)
        .map(|_| batch.send_with_receipt(&handle, DataKind::Binary, payload.clone()).unwrap())
        .collect();
    batch.commit();
    let outcomes: Vec<_> = receipts.iter().map(|r| r.wait_timeout(WAIT).unwrap()).collect();
    assert!(outcomes[..4].iter().all(Outcome::is_queued), "{outcomes:?}");
    assert!(outcomes[4..].iter().all(|o| *o == Outcome::Dropped(SendError::Backpressure)));
    for _ in 0..4 {
        assert!(matches!(c.recv(), Got::Binary(b) if b.len() == 64 << 10));
    }
    // The connection stays open (the default policy drops).
    c.send_text("after");
    assert_eq!(c.recv(), Got::Text("got after".into()));
    server.shutdown(Duration::from_secs(1));
}
