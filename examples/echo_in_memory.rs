//! The protocol core end to end, in memory: a client and an echo server exchange the opening
//! handshake, messages of every shape, a ping and the closing handshake, without sockets,
//! threads or clocks. Then a burst of small messages measures the core's cost per echo.
//!
//! `cargo run --release --example echo_in_memory`
//!
//! (The engine's echo server over real sockets replaces this as the main job once it exists.)

use std::time::{Duration, Instant as WallClock};

use bidir::protocol::http::{self, Accept, ClientRequest, Request, Response, Status};
use bidir::protocol::{
    CloseCode, Config, Connection, DataKind, Event, FrameKind, Input, Instant, Message,
};

/// One end: its connection, its spill buffer, and what it has to send.
struct End {
    conn: Connection,
    spill: Vec<u8>,
    out: Vec<u8>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let start = WallClock::now();
    let now = || Instant::from_nanos(start.elapsed().as_nanos() as u64);

    // --- Opening handshake -------------------------------------------------------------------
    let request = ClientRequest {
        host: "example.com",
        target: "/echo",
        nonce: *b"bidir demo nonce", // a real client draws this from the OS RNG
        protocols: &["echo.v1"],
        extensions: None,
        headers: &[("Origin", "http://example.com")],
    };
    let mut wire = Vec::new();
    request.write(&mut wire)?;
    println!("client → server ({} bytes):\n{}", wire.len(), String::from_utf8_lossy(&wire));

    let mut headers = [http::EMPTY_HEADER; 32];
    let Status::Complete((req, _)) =
        Request::parse(&wire, &mut headers, http::DEFAULT_MAX_HEAD_LEN)?
    else {
        unreachable!("the request is complete")
    };
    let upgrade = req.upgrade()?;
    let protocol = upgrade.protocols().find(|p| *p == "echo.v1");
    let mut answer = Vec::new();
    Accept { key: upgrade.accept_key(), protocol, extensions: None, headers: &[] }
        .write(&mut answer)?;
    println!("server → client ({} bytes):\n{}", answer.len(), String::from_utf8_lossy(&answer));

    let mut headers = [http::EMPTY_HEADER; 32];
    let Status::Complete((res, _)) = Response::parse(&answer, &mut headers, 8192)? else {
        unreachable!("the response is complete")
    };
    let negotiated = res.validate(&request)?;
    println!("negotiated subprotocol: {:?}\n", negotiated.protocol);

    let mut client = End {
        conn: Connection::client(now(), Config::default(), *b"seed from the OS RNG in real use"),
        spill: Vec::new(),
        out: Vec::new(),
    };
    let mut server = End {
        conn: Connection::server(now(), Config::default()),
        spill: Vec::new(),
        out: Vec::new(),
    };

    // --- Messages of every shape -------------------------------------------------------------
    client.conn.send(Message::Text("hello, bidir"), &mut client.out)?;
    client.conn.send(Message::Binary(&[0xde, 0xad, 0xbe, 0xef]), &mut client.out)?;
    client.conn.send_frame(
        FrameKind::First(DataKind::Text),
        "fragments, ".as_bytes(),
        &mut client.out,
    )?;
    client.conn.ping(b"are you there?", &mut client.out)?; // control frames may interleave
    client.conn.send_frame(FrameKind::Continue, "κόσ".as_bytes(), &mut client.out)?;
    client.conn.send_frame(FrameKind::Last, "με!".as_bytes(), &mut client.out)?;
    let big = vec![b'x'; 200_000];
    client.conn.send(Message::Binary(&big), &mut client.out)?;

    // Deliver in awkward 1000-byte reads, as a socket might.
    exchange(&mut client, &mut server, now(), 1000, true)?;
    exchange(&mut server, &mut client, now(), 1000, false)?;

    // --- Closing handshake -------------------------------------------------------------------
    client.conn.close(now(), CloseCode::NORMAL, "done", &mut client.out)?;
    exchange(&mut client, &mut server, now(), usize::MAX, true)?;
    exchange(&mut server, &mut client, now(), usize::MAX, false)?;
    println!("states: client {:?}, server {:?}\n", client.conn.state(), server.conn.state());

    // --- Cost of the core per echo -----------------------------------------------------------
    let mut client = End {
        conn: Connection::client(now(), Config::default(), [7; 32]),
        spill: vec![],
        out: vec![],
    };
    let mut server =
        End { conn: Connection::server(now(), Config::default()), spill: vec![], out: vec![] };
    let payload = [b'T'; 64];
    const ROUNDS: usize = 2_000;
    const BATCH: usize = 100;
    let t0 = WallClock::now();
    for _ in 0..ROUNDS {
        for _ in 0..BATCH {
            client.conn.send(Message::Binary(&payload), &mut client.out)?;
        }
        quiet_exchange(&mut client, &mut server, now(), true)?;
        quiet_exchange(&mut server, &mut client, now(), false)?;
    }
    let per_echo = t0.elapsed() / (ROUNDS * BATCH) as u32;
    println!(
        "{} echoes of 64-byte messages in memory: {:?} per echo (client mask + server parse + \
         server frame + client parse)",
        ROUNDS * BATCH,
        per_echo
    );
    assert!(per_echo < Duration::from_millis(1));
    Ok(())
}

/// Delivers `from.out` to `to` in reads of at most `read` bytes, printing what `to` sees; the
/// server echoes data messages back.
fn exchange(
    from: &mut End,
    to: &mut End,
    now: Instant,
    read: usize,
    to_is_server: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    from.conn.poll_transmit(&mut from.out);
    let mut bytes = std::mem::take(&mut from.out);
    let who = if to_is_server { "server" } else { "client" };
    for piece in bytes.chunks_mut(read) {
        let mut input = Input::new(piece);
        while let Some(event) = to.conn.handle_bytes(now, &mut input, &mut to.spill)? {
            match event {
                Event::Message(m) => {
                    let shown = match m {
                        Message::Text(t) => format!("text {t:?}"),
                        Message::Binary(b) if b.len() > 16 => format!("binary, {} bytes", b.len()),
                        Message::Binary(b) => format!("binary {b:02x?}"),
                    };
                    println!("{who} got {shown}");
                    if to_is_server {
                        to.conn.send(m, &mut to.out)?;
                    }
                }
                Event::Ping(p) => {
                    println!("{who} got ping {:?} (pong queued)", String::from_utf8_lossy(p))
                }
                Event::Pong(p) => println!("{who} got pong {:?}", String::from_utf8_lossy(p)),
                Event::Close(c) => println!(
                    "{who} got close {} {:?} (we started it: {})",
                    c.code_or_no_status(),
                    c.reason,
                    c.initiated_locally
                ),
                other => println!("{who} got {other:?}"),
            }
        }
    }
    to.conn.poll_transmit(&mut to.out);
    println!();
    Ok(())
}

/// Like [`exchange`] in one read, silently; `to` echoes data messages when `echo` is set.
fn quiet_exchange(
    from: &mut End,
    to: &mut End,
    now: Instant,
    echo: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut bytes = std::mem::take(&mut from.out);
    let mut input = Input::new(&mut bytes);
    while let Some(event) = to.conn.handle_bytes(now, &mut input, &mut to.spill)? {
        if let (true, Event::Message(m)) = (echo, event) {
            to.conn.send(m, &mut to.out)?;
        }
    }
    bytes.clear();
    from.out = bytes; // keep the allocation
    Ok(())
}
