//! The protocol core over a real loopback TCP socket, driven by blocking std I/O: the opening
//! handshake, echoes of many sizes read in whatever pieces the kernel delivers, and the
//! closing handshake. (The engine's own socket tests arrive with the engine.)

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant as WallClock};

use bidir::protocol::http::{self, Accept, ClientRequest, Request, Response, Status};
use bidir::protocol::{
    CloseCode, Config, Connection, DataKind, Event, FrameKind, Input, Instant, Message, State,
};

fn now(start: WallClock) -> Instant {
    Instant::from_nanos(start.elapsed().as_nanos() as u64)
}

/// Reads until a whole HTTP head is buffered; returns the head length.
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>, is_request: bool) -> usize {
    loop {
        let mut headers = [http::EMPTY_HEADER; 32];
        let parsed = if is_request {
            Request::parse(buf, &mut headers, 8192).map(|s| matches!(s, Status::Complete(_)))
        } else {
            Response::parse(buf, &mut headers, 8192)
                .map(|s| matches!(s, Status::Complete(_)))
                .map_err(|_| http::HandshakeError::Malformed)
        };
        if parsed.expect("valid head") {
            let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            return end;
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "peer closed during the handshake");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn server(mut stream: TcpStream) -> Vec<(DataKind, usize)> {
    let start = WallClock::now();
    let mut buf = Vec::new();
    let head = read_head(&mut stream, &mut buf, true);
    let mut headers = [http::EMPTY_HEADER; 32];
    let Status::Complete((req, _)) = Request::parse(&buf, &mut headers, 8192).unwrap() else {
        unreachable!()
    };
    let upgrade = req.upgrade().unwrap();
    let mut out = Vec::new();
    Accept { key: upgrade.accept_key(), protocol: None, extensions: None, headers: &[] }
        .write(&mut out)
        .unwrap();
    stream.write_all(&out).unwrap();
    out.clear();

    let mut config = Config::default();
    config.max_message_size = 4 << 20;
    config.max_frame_size = 4 << 20;
    let mut conn = Connection::server(now(start), config);
    let mut spill = Vec::new();
    let mut seen = Vec::new();
    let mut pending = buf.split_off(head); // bytes after the head belong to the connection
    let mut read_buf = vec![0u8; 64 << 10];
    loop {
        let mut input = Input::new(&mut pending);
        while let Some(event) = conn.handle_bytes(now(start), &mut input, &mut spill).unwrap() {
            match event {
                Event::Message(m) => {
                    seen.push((m.kind(), m.len()));
                    conn.send(m, &mut out).unwrap();
                }
                Event::Close(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        conn.poll_transmit(&mut out);
        stream.write_all(&out).unwrap();
        out.clear();
        if conn.state() == State::Closed {
            return seen;
        }
        let n = stream.read(&mut read_buf).unwrap();
        if n == 0 {
            conn.handle_eof().unwrap();
            return seen;
        }
        pending = read_buf[..n].to_vec();
    }
}

#[test]
fn echo_over_a_real_socket() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || server(listener.accept().unwrap().0));

    let start = WallClock::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let host = addr.to_string();
    let request = ClientRequest {
        host: &host,
        target: "/echo",
        nonce: [42; 16],
        protocols: &[],
        extensions: None,
        headers: &[],
    };
    let mut out = Vec::new();
    request.write(&mut out).unwrap();
    stream.write_all(&out).unwrap();
    out.clear();
    let mut buf = Vec::new();
    let head = read_head(&mut stream, &mut buf, false);
    let mut headers = [http::EMPTY_HEADER; 32];
    let Status::Complete((res, _)) = Response::parse(&buf, &mut headers, 8192).unwrap() else {
        unreachable!()
    };
    res.validate(&request).unwrap();
    assert_eq!(head, buf.len(), "the server sent nothing after its 101 yet");

    let mut conn = Connection::client(now(start), Config::default(), [7; 32]);
    let sizes = [0usize, 1, 125, 126, 1000, 65_535, 65_536, 300_000, 1_000_000];
    let mut expected = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let payload: Vec<u8> = (0..size).map(|j| (i + j) as u8).collect();
        if i % 3 == 2 {
            conn.send_frame(FrameKind::First(DataKind::Binary), &payload[..size / 2], &mut out)
                .unwrap();
            conn.send_frame(FrameKind::Last, &payload[size / 2..], &mut out).unwrap();
        } else {
            conn.send(Message::Binary(&payload), &mut out).unwrap();
        }
        expected.push(payload);
    }
    let text = "κόσμε ".repeat(1000);
    conn.send(Message::Text(&text), &mut out).unwrap();
    stream.write_all(&out).unwrap();
    out.clear();

    let mut spill = Vec::new();
    let mut echoed: Vec<Vec<u8>> = Vec::new();
    let mut read_buf = vec![0u8; 16 << 10];
    let mut closed = false;
    while !closed {
        let n = stream.read(&mut read_buf).unwrap();
        assert!(n > 0, "server closed early");
        let mut input = Input::new(&mut read_buf[..n]);
        while let Some(event) = conn.handle_bytes(now(start), &mut input, &mut spill).unwrap() {
            match event {
                Event::Message(m) => echoed.push(m.as_bytes().to_vec()),
                Event::Close(c) => {
                    assert!(c.initiated_locally);
                    assert_eq!(c.code, Some(CloseCode::NORMAL));
                    closed = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        if echoed.len() == sizes.len() + 1 && conn.state() == State::Open {
            conn.close(now(start), CloseCode::NORMAL, "done", &mut out).unwrap();
            stream.write_all(&out).unwrap();
            out.clear();
        }
    }
    assert_eq!(echoed.len(), sizes.len() + 1);
    for (got, want) in echoed.iter().zip(&expected) {
        assert!(got == want, "echo of {} bytes differs", want.len());
    }
    assert_eq!(echoed.last().unwrap(), text.as_bytes());
    let seen = server.join().unwrap();
    assert_eq!(seen.len(), sizes.len() + 1);
    assert_eq!(seen.last(), Some(&(DataKind::Text, text.len())));
}
