//! What is specific to the io_uring backend, through the whole engine: a provided-buffer ring
//! far too small for the load (receives starve and are re-armed; nothing is lost), and
//! zero-copy sends, and what `Auto` picks. The rest of the suite runs on io_uring too (CI runs
//! it on both backends).

mod util;

use std::thread;
use std::time::Duration;

use bidir::protocol::Message;
use bidir::{
    BackendChoice, Context, Handler, Request, Server, ServerConfig, ServerHandle, UringConfig,
};
use util::{Client, Got, config};

struct Echo;
impl Handler for Echo {
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        cx.send(msg).unwrap();
    }
}

/// An echo server forced onto io_uring with `uring`'s sizes, or `None` (with the reason on
/// stderr) where this kernel has no usable io_uring.
fn uring_echo_server(uring: UringConfig) -> Option<ServerHandle> {
    if let Err(why) = bidir_sys::uring::probe() {
        eprintln!("skipped: no usable io_uring here: {why}");
        return None;
    }
    let mut cfg: ServerConfig = config(1);
    cfg.backend = BackendChoice::IoUring;
    cfg.uring = uring;
    cfg.protocol.max_message_size = 8 << 20;
    cfg.protocol.max_frame_size = 8 << 20;
    cfg.max_backpressure = 16 << 20;
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(cfg)
        .route("/echo", |_req: &Request<'_>| Ok(Echo))
        .start()
        .unwrap();
    assert!(server.backend().io_uring);
    Some(server)
}

/// The payload of message `m` on connection `c`: sizes from 1 byte to 12 KiB, bytes that
/// differ by connection and message, so a misdelivered or reordered buffer shows.
fn payload(c: usize, m: usize) -> Vec<u8> {
    let len = 1 + (c * 131 + m * 977) % (12 << 10);
    (0..len).map(|i| (i * 31 + c * 7 + m) as u8).collect()
}

/// `threads` threads of `per_thread` connections each pipeline `messages` messages on every
/// connection, then read every echo and compare.
fn pipelined_echoes(server: &ServerHandle, threads: usize, per_thread: usize, messages: usize) {
    let addr = server.local_addr();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            thread::spawn(move || {
                let mut clients: Vec<(usize, Client)> = (0..per_thread)
                    .map(|i| (t * per_thread + i, Client::connect(addr, "/echo")))
                    .collect();
                for (c, client) in &mut clients {
                    for m in 0..messages {
                        client.send(Message::Binary(&payload(*c, m)));
                    }
                }
                for (c, client) in &mut clients {
                    for m in 0..messages {
                        match client.recv() {
                            Got::Binary(got) => {
                                assert!(got == payload(*c, m), "connection {c} message {m}")
                            }
                            other => panic!("connection {c} message {m}: {other:?}"),
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

#[test]
fn a_starved_buffer_ring_under_many_connections_loses_nothing() {
    // 8 buffers of 512 bytes shared by 200 connections that each pipeline 10 messages of up to
    // 12 KiB: the ring runs dry over and over; every receive so ended must be re-armed once
    // buffers come back, with no byte lost or reordered.
    let uring = UringConfig { buffers: 8, buffer_size: 512, ..UringConfig::default() };
    let Some(server) = uring_echo_server(uring) else { return };
    pipelined_echoes(&server, 8, 25, 10);
    let stats = server.stats();
    assert_eq!(stats.counters.upgraded, 200);
    assert_eq!(stats.counters.messages_in, 2000);
    assert_eq!(stats.counters.messages_out, 2000);
    assert!(stats.counters.starved_receives > 0, "the ring never ran dry: {:?}", stats.counters);
    server.shutdown(Duration::from_secs(1));
}

#[test]
fn zero_copy_sends_through_the_engine() {
    // Every send of 1 KiB or more goes out zero-copy: small and large echoes interleaved on 40
    // connections, then one 4 MiB message, all compared byte for byte.
    let uring = UringConfig { send_zc_threshold: Some(1024), ..UringConfig::default() };
    let Some(server) = uring_echo_server(uring) else { return };
    pipelined_echoes(&server, 4, 10, 20);
    let mut c = Client::connect(server.local_addr(), "/echo");
    let big: Vec<u8> = (0..4u32 << 20).map(|i| (i * 13 + 5) as u8).collect();
    c.send(Message::Binary(&big));
    assert!(matches!(c.recv(), Got::Binary(b) if b == big), "4 MiB echo differs");
    assert_eq!(server.stats().counters.messages_out, 801);
    server.shutdown(Duration::from_secs(1));
}

#[test]
fn auto_picks_io_uring_where_the_kernel_has_it_and_says_why_not_elsewhere() {
    let start = |backend: BackendChoice| {
        let mut cfg: ServerConfig = config(1);
        cfg.backend = backend;
        Server::builder()
            .bind("127.0.0.1:0")
            .config(cfg)
            .route("/echo", |_req: &Request<'_>| Ok(Echo))
            .start()
            .unwrap()
    };
    let auto = start(BackendChoice::Auto);
    match bidir_sys::uring::probe() {
        Ok(()) => {
            assert!(auto.backend().io_uring);
            assert_eq!(auto.backend().fallback_reason, None);
        }
        Err(why) => {
            assert!(!auto.backend().io_uring);
            let reason = auto.backend().fallback_reason.clone().unwrap_or_default();
            assert!(reason.contains(&why.to_string()), "{reason}");
        }
    }
    // Either way the server works.
    let mut c = Client::connect(auto.local_addr(), "/echo");
    c.send(Message::Text("auto"));
    assert_eq!(c.recv(), Got::Text("auto".into()));
    auto.shutdown(Duration::from_secs(1));
    let epoll = start(BackendChoice::Epoll);
    assert!(!epoll.backend().io_uring);
    assert_eq!(epoll.backend().fallback_reason, None);
    epoll.shutdown(Duration::from_secs(1));
}
