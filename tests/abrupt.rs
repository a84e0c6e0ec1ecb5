//! Peers that vanish mid-message: the worker must close their sockets as soon as the end of
//! the stream arrives, not when a timer notices. The last bytes and the FIN (or RST) often
//! arrive together; a readiness backend that reads once per edge would then never see the end.
//!
//! This binary holds one test, which counts the process's descriptors: no other test may open
//! sockets beside it.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bidir::protocol::Message;
use bidir::{BackendChoice, Context, Handler, Request, Server, ServerHandle};
use util::{config, wait_until};

struct Echo;
impl Handler for Echo {
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        let _ = cx.send(msg);
    }
}

const UPGRADE: &[u8] = b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A masked binary frame announcing 100 bytes, cut after 10 of them.
const PARTIAL_FRAME: &[u8] = b"\x82\xe4\x01\x02\x03\x04abcdefghij";

const PEERS: usize = 300;

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// How a peer leaves after its partial input.
#[derive(Clone, Copy, Debug)]
enum Exit {
    /// An orderly FIN.
    Fin,
    /// A reset (`SO_LINGER` 0).
    Reset,
}

fn leave(stream: TcpStream, exit: Exit) {
    if let Exit::Reset = exit {
        socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)).unwrap();
    }
    drop(stream);
}

fn upgraded(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(UPGRADE).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "the server closed during the upgrade");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    stream
}

/// Runs every kind of abrupt exit against a server on `backend` and checks that the worker's
/// descriptors are back to what they were within a second or two — far below the handshake
/// timeout and the heartbeat, which would otherwise be what closes them.
fn descriptors_come_back(backend: BackendChoice) {
    let mut cfg = config(1);
    cfg.backend = backend;
    cfg.handshake_timeout = Duration::from_secs(120);
    cfg.protocol.ping_interval = None; // nothing but the end of the stream may close them
    let server: ServerHandle = Server::builder()
        .bind("127.0.0.1:0")
        .config(cfg)
        .route("/echo", |_req: &Request<'_>| Ok(Echo))
        .start()
        .unwrap();
    let addr = server.local_addr();
    let name = server.backend().name();
    let baseline = open_descriptors();
    let cases: [(&str, Exit); 4] = [
        ("partial request", Exit::Reset),
        ("partial request", Exit::Fin),
        ("partial frame", Exit::Reset),
        ("partial frame", Exit::Fin),
    ];
    for (input, exit) in cases {
        let peers: Vec<TcpStream> = (0..PEERS)
            .map(|_| {
                if input == "partial request" {
                    TcpStream::connect(addr).unwrap()
                } else {
                    upgraded(addr)
                }
            })
            .collect();
        for mut stream in peers {
            let bytes: &[u8] =
                if input == "partial request" { &UPGRADE[..40] } else { PARTIAL_FRAME };
            stream.write_all(bytes).unwrap();
            leave(stream, exit);
        }
        let back = wait_until(Duration::from_secs(3), || {
            open_descriptors() <= baseline && server.connections() == 0
        });
        assert!(
            back,
            "{name}: {input} then {exit:?}: {} descriptors open, {baseline} before; {} connections",
            open_descriptors(),
            server.connections(),
        );
    }
    server.shutdown(Duration::from_secs(1));
    server.join();
}

#[test]
fn abrupt_disconnects_release_descriptors_at_once_on_both_backends() {
    descriptors_come_back(BackendChoice::Epoll);
    match bidir_sys::uring::probe() {
        Ok(()) => descriptors_come_back(BackendChoice::IoUring),
        Err(e) => eprintln!("io_uring unavailable here ({e}): epoll only"),
    }
}
