//! permessage-deflate through the engine over loopback: negotiation per server and per route,
//! compressed echo in both profiles, compressed publishes, bombs.

mod util;

use std::time::Duration;

use bidir::protocol::deflate::DeflateConfig;
use bidir::protocol::{DataKind, FrameKind, Message};
use bidir::{Accept, CloseCode, Context, Handler, Request, Server, ServerConfig, ServerHandle};
use util::{Client, Got};

struct Echo;
impl Handler for Echo {
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        cx.send(msg).unwrap();
    }
}

fn server(compression: Option<DeflateConfig>) -> ServerHandle {
    let mut config = ServerConfig::default();
    config.pin_workers = false;
    config.workers = Some(2);
    config.compression = compression;
    config.protocol.max_message_size = 4 << 20;
    config.protocol.max_frame_size = 4 << 20;
    Server::builder()
        .bind("127.0.0.1:0")
        .config(config)
        .route("/echo", |_req: &Request<'_>| Ok(Echo))
        .route("/plain", |_req: &Request<'_>| Ok(Accept::new(Echo).no_compression()))
        .route("/best", |_req: &Request<'_>| {
            Ok(Accept::new(Echo).compression(DeflateConfig::dedicated(15)))
        })
        .route("/level9", |_req: &Request<'_>| {
            let mut config = DeflateConfig::shared();
            config.level = 9;
            Ok(Accept::new(Echo).compression(config))
        })
        .route("/live/news", |_req: &Request<'_>| {
            Ok(Accept::new(Room).compression(DeflateConfig::dedicated(15)))
        })
        .default_route(|_req: &Request<'_>| Ok(Room))
        .start()
        .unwrap()
}

fn json(n: usize) -> String {
    let items: Vec<String> = (0..n)
        .map(|i| {
            format!("{{\"id\":{i},\"name\":\"item-{}\",\"price\":{}.5}}", i % 13, i * 7 % 1000)
        })
        .collect();
    format!("[{}]", items.join(","))
}

fn echo_round_trips(c: &mut Client) {
    let big = json(20_000);
    for text in ["", "short", json(10).as_str(), big.as_str()] {
        c.send_text(text);
        assert_eq!(c.recv(), Got::Text(text.to_owned()));
    }
    c.send(Message::Binary(big.as_bytes()));
    assert_eq!(c.recv(), Got::Binary(big.clone().into_bytes()));
    // Fragmented and compressed, with a ping between the pieces.
    let bytes = big.as_bytes();
    c.send_frame(FrameKind::First(DataKind::Text), &bytes[..10_000]);
    c.ping(b"mid");
    c.send_frame(FrameKind::Last, &bytes[10_000..]);
    assert_eq!(c.next(), Got::Pong(b"mid".to_vec()));
    assert_eq!(c.recv(), Got::Text(big));
}

#[test]
fn echo_in_both_profiles_and_every_client_offer() {
    let mut live = DeflateConfig::dedicated(12);
    live.compact_context = false;
    for (name, server_cfg) in [
        ("shared", DeflateConfig::shared()),
        ("dedicated, compact", DeflateConfig::dedicated(12)),
        ("dedicated, live", live),
    ] {
        let server = server(Some(server_cfg));
        for client_cfg in
            [DeflateConfig::shared(), DeflateConfig::dedicated(15), DeflateConfig::dedicated(9)]
        {
            let mut c = Client::connect_deflate(server.local_addr(), "/echo", client_cfg.clone());
            let answer = c.header("Sec-WebSocket-Extensions").unwrap_or_default().to_owned();
            assert!(answer.starts_with("permessage-deflate"), "{name}: {answer}");
            assert!(c.conn.deflate_params().is_some());
            echo_round_trips(&mut c);
        }
        // A client without the offer gets plain WebSocket.
        let mut c = Client::connect(server.local_addr(), "/echo");
        assert_eq!(c.header("Sec-WebSocket-Extensions"), None);
        echo_round_trips(&mut c);
        let bytes_in = server.stats().counters.bytes_in;
        assert!(bytes_in > 0);
        server.shutdown(Duration::from_secs(1));
    }
}

#[test]
fn routes_override_the_server_default() {
    let off = server(None);
    let c = Client::connect_deflate(off.local_addr(), "/echo", DeflateConfig::shared());
    assert_eq!(c.header("Sec-WebSocket-Extensions"), None, "off by default");
    let mut best = Client::connect_deflate(off.local_addr(), "/best", DeflateConfig::dedicated(15));
    assert_eq!(best.header("Sec-WebSocket-Extensions"), Some("permessage-deflate"));
    echo_round_trips(&mut best);
    off.shutdown(Duration::from_secs(1));

    let on = server(Some(DeflateConfig::shared()));
    let c = Client::connect_deflate(on.local_addr(), "/plain", DeflateConfig::shared());
    assert_eq!(c.header("Sec-WebSocket-Extensions"), None, "declined by the route");
    on.shutdown(Duration::from_secs(1));
}

#[test]
fn compression_shrinks_what_goes_on_the_wire() {
    let server = server(Some(DeflateConfig::shared()));
    let big = json(20_000);
    let mut c = Client::connect_deflate(server.local_addr(), "/echo", DeflateConfig::shared());
    let before = server.stats().counters;
    for _ in 0..10 {
        c.send_text(&big);
        assert_eq!(c.recv(), Got::Text(big.clone()));
    }
    let after = server.stats().counters;
    let (sent, received) = (after.bytes_out - before.bytes_out, after.bytes_in - before.bytes_in);
    let raw = 10 * big.len() as u64;
    assert!(sent * 4 < raw, "{sent} bytes out for {raw} of messages");
    assert!(received * 4 < raw, "{received} bytes in for {raw} of messages");
    server.shutdown(Duration::from_secs(1));
}

/// A route's compression level is its own, though the worker lends one codec per setting.
#[test]
fn each_route_compresses_at_its_own_level() {
    let server = server(Some(DeflateConfig::shared()));
    let text = json(300);
    // Clients stay open until the end, so that no closing handshake adds to the counts.
    let mut open = vec![];
    let mut out_bytes = |path: &str| {
        let mut c = Client::connect_deflate(server.local_addr(), path, DeflateConfig::shared());
        let before = server.stats().counters.bytes_out;
        c.send_text(&text);
        assert_eq!(c.recv(), Got::Text(text.clone()));
        open.push(c);
        server.stats().counters.bytes_out - before
    };
    let (level1, level9) = (out_bytes("/echo"), out_bytes("/level9"));
    assert!(level9 * 10 < level1 * 9, "level 9: {level9} bytes, level 1: {level1}");
    // Interleaved, each still gets its own.
    assert_eq!(out_bytes("/echo"), level1);
    assert_eq!(out_bytes("/level9"), level9);
    server.shutdown(Duration::from_secs(1));
}

/// Compact context: connections keep only their windows and take turns with the worker's
/// codec, yet each still refers back to its own earlier messages.
#[test]
fn compact_context_keeps_each_connections_history() {
    let server = server(Some(DeflateConfig::dedicated(10)));
    let mut clients: Vec<Client> = (0..4)
        .map(|_| {
            Client::connect_deflate(server.local_addr(), "/echo", DeflateConfig::dedicated(10))
        })
        .collect();
    let answer = clients[0].header("Sec-WebSocket-Extensions").unwrap().to_owned();
    assert!(!answer.contains("no_context_takeover"), "{answer}");
    let texts: Vec<String> = (0..4).map(|i| format!("client {i}: {}", json(8 + i))).collect();
    let wire = |c: &mut Client, text: &str| {
        let before = server.stats().counters.bytes_out;
        c.send_text(text);
        assert_eq!(c.recv(), Got::Text(text.to_owned()));
        server.stats().counters.bytes_out - before
    };
    let mut first = vec![];
    for (c, text) in clients.iter_mut().zip(&texts) {
        assert!(text.len() < 1024, "fits the window");
        first.push(wire(c, text));
    }
    // Again, interleaved: each repeat is a back reference into that connection's own window.
    for round in 0..3 {
        for ((c, text), first) in clients.iter_mut().zip(&texts).zip(&first) {
            let again = wire(c, text);
            assert!(again * 4 < *first, "round {round}: {again} bytes after {first}");
        }
    }
    server.shutdown(Duration::from_secs(1));
}

/// Joins the topic named by its path, less a "/live" prefix; publishes what it receives.
struct Room;
impl Room {
    fn topic(cx: &Context<'_>) -> String {
        cx.path().trim_start_matches("/live").to_owned()
    }
}
impl Handler for Room {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.subscribe(&Self::topic(cx));
        cx.send_text("joined").unwrap();
    }
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        cx.publish(&Self::topic(cx), msg);
    }
}

#[test]
fn publishes_are_compressed_once_for_shared_subscribers() {
    let server = server(Some(DeflateConfig::shared()));
    let addr = server.local_addr();
    let mut compressed: Vec<Client> =
        (0..4).map(|_| Client::connect_deflate(addr, "/news", DeflateConfig::shared())).collect();
    // A subscriber with a live compressor (keeping context) gets the message uncompressed;
    // one without deflate too.
    let best_cfg = DeflateConfig::dedicated(15);
    let mut mixed =
        [Client::connect_deflate(addr, "/live/news", best_cfg), Client::connect(addr, "/news")];
    let answer = mixed[0].header("Sec-WebSocket-Extensions").unwrap();
    assert!(!answer.contains("server_no_context_takeover"), "{answer}");
    for c in compressed.iter_mut().chain(mixed.iter_mut()) {
        assert_eq!(c.recv(), Got::Text("joined".into()));
    }
    let big = json(20_000);
    let before = server.stats().counters.bytes_out;
    server.publish("/news", Message::Text(&big));
    for c in compressed.iter_mut().chain(mixed.iter_mut()) {
        assert_eq!(c.recv(), Got::Text(big.clone()));
    }
    let sent = server.stats().counters.bytes_out - before;
    let raw = big.len() as u64;
    // Two uncompressed copies, four compressed ones much smaller than the message.
    assert!(sent < 2 * raw + 4 * raw / 4, "{sent} bytes for 6 subscribers of {raw}");
    assert!(sent > 2 * raw);
    // From a handler too.
    compressed[0].send_text(&big);
    for c in compressed.iter_mut().chain(mixed.iter_mut()) {
        assert_eq!(c.recv(), Got::Text(big.clone()));
    }
    server.shutdown(Duration::from_secs(1));
}

/// Subscribes to "news"; echoes messages starting with "echo ", publishes the others.
struct Newsroom;
impl Handler for Newsroom {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.subscribe("news");
    }
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        if msg.as_bytes().starts_with(b"echo ") {
            cx.send(msg).unwrap();
        } else {
            cx.publish("news", msg);
        }
    }
}

/// Compact context: subscribers share one compressed publish, and their windows stay in step
/// with their peers' — a later message of their own may refer back to both.
#[test]
fn compact_subscribers_share_compressed_publishes_and_stay_in_step() {
    let mut config = ServerConfig::default();
    config.pin_workers = false;
    config.workers = Some(1);
    config.compression = Some(DeflateConfig::dedicated(12));
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(config)
        .route("/news", |_req: &Request<'_>| Ok(Newsroom))
        .start()
        .unwrap();
    let addr = server.local_addr();
    let mut clients: Vec<Client> = (0..3)
        .map(|_| Client::connect_deflate(addr, "/news", DeflateConfig::dedicated(12)))
        .collect();
    let q = format!("echo {}", json(12));
    let p = format!("news {}", json(14));
    assert!(q.len() + p.len() < 4096, "both fit the window");
    let wire = |c: &mut Client, text: &str| {
        let before = server.stats().counters.bytes_out;
        c.send_text(text);
        assert_eq!(c.recv(), Got::Text(text.to_owned()));
        server.stats().counters.bytes_out - before
    };
    // Q through the connection's own compression: now in its window.
    let q_first = wire(&mut clients[0], &q);
    // P published: compressed once for all three.
    let before = server.stats().counters.bytes_out;
    server.publish("news", Message::Text(&p));
    for c in &mut clients {
        assert_eq!(c.recv(), Got::Text(p.clone()));
    }
    let published = server.stats().counters.bytes_out - before;
    assert!(published < 3 * p.len() as u64 / 2, "{published} bytes for 3 x {}", p.len());
    // Noise published: no smaller compressed, so sent plain, and in no window.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..600)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 32) as u8
        })
        .collect();
    let before = server.stats().counters.bytes_out;
    server.publish("news", Message::Binary(&noise));
    for c in &mut clients {
        assert_eq!(c.recv(), Got::Binary(noise.clone()));
    }
    assert_eq!(server.stats().counters.bytes_out - before, 3 * (noise.len() as u64 + 4));
    // Q again: a back reference across P, right only if both windows hold P (and not the
    // noise).
    let q_again = wire(&mut clients[0], &q);
    assert!(q_again * 4 < q_first, "{q_again} bytes after {q_first}");
    // And P itself, now a back reference into the published message.
    let p_echo = format!("echo {}", &p[5..]);
    let p_again = wire(&mut clients[1], &p_echo);
    assert!(p_again * 4 < published / 3, "{p_again} bytes, published {published} / 3");
    server.shutdown(Duration::from_secs(1));
}

#[test]
fn a_decompression_bomb_closes_with_1009() {
    let mut config = ServerConfig::default();
    config.pin_workers = false;
    config.workers = Some(1);
    config.compression = Some(DeflateConfig::shared());
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(config)
        .route("/echo", |_req: &Request<'_>| Ok(Echo))
        .start()
        .unwrap();
    let mut c = Client::connect_deflate(server.local_addr(), "/echo", DeflateConfig::shared());
    // 64 MiB of zeros compress to ~64 KiB: under the 1 MiB frame limit, far over the 1 MiB
    // message limit once inflated.
    let zeros = vec![0u8; 64 << 20];
    c.send(Message::Binary(&zeros));
    assert_eq!(c.recv(), Got::Close(Some(CloseCode::MESSAGE_TOO_BIG), "message too big".into()));
    let stats = server.stats();
    assert_eq!(stats.counters.messages_in, 0);
    server.shutdown(Duration::from_secs(1));
}
