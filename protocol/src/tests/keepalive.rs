//! Keeping a connection alive and ending it when the peer goes quiet: the close handshake's
//! timeout, heartbeats and their RTT, the idle timeout, and pongs (every ping answered, only
//! the latest kept for a congested caller, bounded without transmits).

use core::time::Duration;

use super::pair::{Pair, Seen, Split, masked};
use crate::{CloseCode, Config, Connection, Error, Input, Instant, Message, State};

#[test]
fn close_handshake_times_out_when_the_peer_is_silent() {
    let mut p = Pair::with_split(Split::Whole);
    p.server.muted = true;
    let now = p.now;
    p.client_writes(|c, out| c.close(now, CloseCode::GOING_AWAY, "", out)).unwrap();
    p.drive();
    p.advance(Duration::from_millis(4_999));
    assert_eq!(p.client.error, None);
    p.advance(Duration::from_millis(1));
    assert_eq!(p.client.error, Some(Error::CloseTimeout));
    assert_eq!(p.client.conn.state(), State::Closed);
}

#[test]
fn heartbeat_measures_rtt_and_catches_a_silent_peer() {
    let mut p = Pair::with_split(Split::Whole);
    p.advance(Duration::from_secs(29));
    assert!(p.client.take_seen().is_empty());
    p.advance(Duration::from_secs(1));
    // Both sides pinged at 30 s and both answered.
    assert!(matches!(p.client.take_seen()[..], [Seen::Ping(_), Seen::Pong(_)]));
    assert!(matches!(p.server.take_seen()[..], [Seen::Ping(_), Seen::Pong(_)]));
    assert_eq!(p.server.conn.rtt(), Some(Duration::ZERO));

    p.client.muted = true;
    p.advance(Duration::from_secs(59));
    assert_eq!(p.server.error, None);
    p.advance(Duration::from_secs(1));
    assert_eq!(p.server.error, Some(Error::PongTimeout));
    assert!(!Error::PongTimeout.sends_close_frame());
}

#[test]
fn traffic_postpones_the_heartbeat() {
    let mut p = Pair::with_split(Split::Whole);
    for _ in 0..10 {
        p.advance(Duration::from_secs(20));
        p.client_writes(|c, out| c.send(Message::Text("tick"), out)).unwrap();
        p.drive();
    }
    // The server never had to ping: it heard from the client every 20 s.
    assert!(p.server.take_seen().iter().all(|s| matches!(s, Seen::Message(..) | Seen::Ping(_))));
    assert!(!p.client.take_seen().iter().any(|s| matches!(s, Seen::Ping(_))));
}

#[test]
fn idle_timeout_closes_with_going_away() {
    let config = Config {
        idle_timeout: Some(Duration::from_secs(10)),
        ping_interval: None,
        ..Config::default()
    };
    let mut p = Pair::new(Config::default(), config, Split::Whole, 1);
    p.advance(Duration::from_secs(9));
    assert_eq!(p.server.conn.state(), State::Open);
    p.advance(Duration::from_secs(1));
    assert_eq!(
        p.client.take_seen(),
        [Seen::Close {
            code: Some(CloseCode::GOING_AWAY),
            reason: "idle timeout".into(),
            initiated_locally: false
        }]
    );
    assert_eq!(p.server.conn.state(), State::Closed);
}

/// Autobahn 2.10: ten pings in one read get ten pongs, in order.
#[test]
fn every_ping_is_answered() {
    let mut p = Pair::with_split(Split::Whole);
    p.client_writes(|c, out| {
        (0..10).try_for_each(|i| c.ping(format!("payload-{i}").as_bytes(), out))
    })
    .unwrap();
    p.drive();
    let pongs: Vec<Seen> =
        (0..10).map(|i| Seen::Pong(format!("payload-{i}").into_bytes())).collect();
    assert_eq!(p.client.take_seen(), pongs);
}

/// An unmasked server pong frame.
fn pong_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x8a, payload.len() as u8];
    frame.extend_from_slice(payload);
    frame
}

/// A peer that pings and never reads: while the caller holds pongs back, only the latest ping
/// is answered (RFC 6455 §5.5.3); once it takes them again, every ping is.
#[test]
fn a_congested_caller_gets_only_the_latest_pong() {
    let mut conn = Connection::server(Instant::ZERO, Config::default());
    let (mut spill, mut out) = (Vec::new(), Vec::new());
    let mut feed = |conn: &mut Connection, payloads: &[&[u8]]| {
        let mut bytes: Vec<u8> = payloads.iter().flat_map(|p| masked(0x89, p)).collect();
        let mut input = Input::new(&mut bytes);
        while conn.handle_bytes(Instant::ZERO, &mut input, &mut spill).unwrap().is_some() {}
    };
    assert!(!conn.poll_transmit_congested(&mut out));
    feed(&mut conn, &[b"one", b"two", b"three"]);
    assert!(conn.has_pending_pong());
    assert!(!conn.poll_transmit_congested(&mut out), "pongs are held while congested");
    feed(&mut conn, &[b"four"]);
    assert!(conn.poll_transmit(&mut out));
    assert_eq!(out, pong_frame(b"four"));
    assert!(!conn.has_pending_pong());
    out.clear();
    feed(&mut conn, &[b"five", b"six"]);
    conn.poll_transmit(&mut out);
    assert_eq!(out, [pong_frame(b"five"), pong_frame(b"six")].concat());
}

/// A caller that never transmits holds at most 4 KiB of pongs plus the latest one.
#[test]
fn pending_pongs_are_bounded_without_transmits() {
    let mut conn = Connection::server(Instant::ZERO, Config::default());
    let (mut spill, mut out) = (Vec::new(), Vec::new());
    let payload = [b'p'; 125];
    for i in 0..10_000u32 {
        let mut ping = payload;
        ping[..4].copy_from_slice(&i.to_be_bytes());
        let mut bytes = masked(0x89, &ping);
        let mut input = Input::new(&mut bytes);
        while conn.handle_bytes(Instant::ZERO, &mut input, &mut spill).unwrap().is_some() {}
    }
    conn.poll_transmit(&mut out);
    assert!(out.len() <= 4096 + 131, "{} bytes of pongs", out.len());
    let mut last = payload;
    last[..4].copy_from_slice(&9_999u32.to_be_bytes());
    assert!(out.ends_with(&pong_frame(&last)), "the latest ping is answered");
}

#[test]
fn auto_pong_can_be_turned_off() {
    let config = Config { auto_pong: false, ..Config::default() };
    let mut p = Pair::new(Config::default(), config, Split::Whole, 1);
    p.client_writes(|c, out| c.ping(b"?", out)).unwrap();
    p.drive();
    assert_eq!(p.server.take_seen(), [Seen::Ping(b"?".to_vec())]);
    assert!(p.client.take_seen().is_empty());
    p.server_writes(|c, out| c.pong(b"!", out)).unwrap();
    p.drive();
    assert_eq!(p.client.take_seen(), [Seen::Pong(b"!".to_vec())]);
}
