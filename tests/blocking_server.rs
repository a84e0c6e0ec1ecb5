//! The blocking server adapter: accepted connections served by user threads with blocking
//! recv/send/close, over the engine; checked with the blocking client.

mod util;

use std::thread;
use std::time::Duration;

use bidir::blocking::{Listener, Socket};
use bidir::client::{Connect, Error, Incoming, WebSocket};
use bidir::{Accept, CloseCode, Message, Request, Server, ServerHandle};
use util::config;

fn start(listener: &Listener) -> ServerHandle {
    Server::builder()
        .bind("127.0.0.1:0")
        .config(config(2))
        .route("/s", listener.hook())
        .start()
        .unwrap()
}

/// Echoes until the close; returns the close it saw.
fn echo(socket: &Socket) -> Incoming {
    loop {
        let msg = socket.recv().unwrap();
        let sent = match &msg {
            Incoming::Text(t) => socket.send(Message::Text(t)),
            Incoming::Binary(b) => socket.send(Message::Binary(b)),
            Incoming::Close(_) => return msg,
            _ => Ok(()),
        };
        sent.unwrap();
    }
}

#[test]
fn thread_per_connection_echo() {
    let listener = Listener::new();
    let server = start(&listener);
    let accepter = {
        let listener = listener.clone();
        thread::spawn(move || {
            let mut threads = Vec::new();
            for _ in 0..20 {
                let socket = listener.accept().unwrap();
                assert!(socket.target().starts_with("/s?id="));
                threads.push(thread::spawn(move || echo(&socket)));
            }
            threads.into_iter().map(|t| t.join().unwrap()).collect::<Vec<_>>()
        })
    };
    let clients: Vec<_> = (0..20)
        .map(|i| {
            let url = format!("ws://{}/s?id={i}", server.local_addr());
            thread::spawn(move || {
                let mut ws = WebSocket::connect(&url).unwrap();
                for j in 0..50 {
                    let text = format!("{i}-{j}");
                    ws.send(Message::Text(&text)).unwrap();
                    assert_eq!(ws.recv().unwrap(), Incoming::Text(text));
                }
                let big = vec![i as u8; 300_000];
                ws.send(Message::Binary(&big)).unwrap();
                assert_eq!(ws.recv().unwrap(), Incoming::Binary(big));
                ws.close(CloseCode::NORMAL, "bye").unwrap();
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    for close in accepter.join().unwrap() {
        match close {
            Incoming::Close(close) => {
                assert_eq!(
                    (close.code, &*close.reason, close.clean, close.initiated_locally),
                    (CloseCode::NORMAL, "bye", true, false)
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn server_side_close_drop_and_timeouts() {
    let listener = Listener::new();
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(config(2))
        .route("/s", {
            let listener = listener.clone();
            move |req: &Request<'_>| {
                let accept = Accept::new(listener.handler());
                Ok(if req.protocols().any(|p| p == "v1") { accept.protocol("v1") } else { accept })
            }
        })
        .start()
        .unwrap();
    let url = format!("ws://{}/s", server.local_addr());

    // The server thread closes; the client sees the code, the socket the answer.
    let mut ws = Connect::new(&url).unwrap().protocol("v1").connect().unwrap();
    let socket = listener.accept_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(socket.protocol(), Some("v1"));
    assert!(matches!(socket.recv_timeout(Duration::from_millis(30)), Err(Error::Timeout)));
    socket.close(CloseCode(4001), "server done").unwrap();
    match ws.recv().unwrap() {
        Incoming::Close(close) => {
            assert_eq!((close.code, &*close.reason), (CloseCode(4001), "server done"))
        }
        other => panic!("{other:?}"),
    }
    match socket.recv().unwrap() {
        Incoming::Close(close) => {
            assert_eq!((close.code, close.initiated_locally), (CloseCode(4001), true))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(socket.recv(), Err(Error::Closed)));
    assert!(socket.send(Message::Text("late")).is_err());

    // Dropping the socket closes with 1001.
    let mut ws = WebSocket::connect(&url).unwrap();
    drop(listener.accept_timeout(Duration::from_secs(5)).unwrap());
    match ws.recv().unwrap() {
        Incoming::Close(close) => assert_eq!(close.code, CloseCode::GOING_AWAY),
        other => panic!("{other:?}"),
    }

    // A client that vanishes: the socket's last item is a 1006 close.
    let ws = WebSocket::connect(&url).unwrap();
    let socket = listener.accept_timeout(Duration::from_secs(5)).unwrap();
    drop(ws);
    match socket.recv_timeout(Duration::from_secs(5)).unwrap() {
        Incoming::Close(close) => {
            assert_eq!((close.code, close.clean), (CloseCode::ABNORMAL, false))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_slow_reader_is_closed_and_a_fast_sender_waits() {
    let listener = Listener::new();
    listener.max_inbox(64 << 10).max_outbox(64 << 10);
    let server = start(&listener);
    let url = format!("ws://{}/s", server.local_addr());

    // Nobody reads the socket: past 64 KiB of inbox the connection is closed with 1008.
    let mut ws = WebSocket::connect(&url).unwrap();
    let _socket = listener.accept_timeout(Duration::from_secs(5)).unwrap();
    let chunk = vec![7u8; 16 << 10];
    let mut closed = None;
    for _ in 0..64 {
        if ws.send(Message::Binary(&chunk)).is_err() {
            break;
        }
    }
    ws.set_read_timeout(Some(Duration::from_secs(5)));
    while let Ok(msg) = ws.recv() {
        if let Incoming::Close(close) = msg {
            closed = Some(close.code);
            break;
        }
    }
    assert_eq!(closed, Some(CloseCode::POLICY_VIOLATION));

    // The server sends 8 MiB to a client that reads slowly: send waits instead of queueing
    // it all, and everything arrives in order.
    let mut ws = WebSocket::connect(&url).unwrap();
    let socket = listener.accept_timeout(Duration::from_secs(5)).unwrap();
    let handle = socket.handle();
    let sender = thread::spawn(move || {
        let mut peak = 0;
        for i in 0..512u32 {
            let mut msg = vec![0u8; 16 << 10];
            msg[..4].copy_from_slice(&i.to_le_bytes());
            socket.send(Message::Binary(&msg)).unwrap();
            peak = peak.max(socket.handle().buffered_amount());
        }
        (peak, socket)
    });
    for i in 0..512u32 {
        if i % 64 == 0 {
            thread::sleep(Duration::from_millis(20));
        }
        match ws.recv().unwrap() {
            Incoming::Binary(b) => assert_eq!(b[..4], i.to_le_bytes()),
            other => panic!("{other:?}"),
        }
    }
    let (peak, socket) = sender.join().unwrap();
    // At most the outbox limit and the message sent past it; `buffered_amount` may count one
    // message twice for a moment (in the mailbox and already queued: it reads high, never
    // low), so a reading may show one more.
    assert!(
        peak <= (64 << 10) + 2 * (16 << 10) + 4096,
        "queued {peak} bytes: at most 64 KiB + one message (+ one counted twice)"
    );
    drop(handle);
    drop(socket);
}
