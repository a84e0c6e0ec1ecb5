//! Server lifecycle over real loopback sockets: a second server on a taken address fails
//! unless it asks to share it, and a shared address carries a zero-downtime restart.

mod util;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bidir::protocol::Message;
use bidir::{Context, Handler, Request, Server, ServerConfig, ServerHandle};
use util::{Client, Got, config};

/// Echoes, prefixed with the server's name, so a test sees which server answered.
struct Named(&'static str);
impl Handler for Named {
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        if let Message::Text(text) = msg {
            cx.send(Message::Text(&format!("{}:{text}", self.0))).unwrap();
        }
    }
}

fn named_server(
    name: &'static str,
    addr: SocketAddr,
    config: ServerConfig,
) -> io::Result<ServerHandle> {
    Server::builder()
        .bind(addr)
        .config(config)
        .route("/", move |_req: &Request<'_>| Ok(Named(name)))
        .start()
}

fn sharing(workers: usize) -> ServerConfig {
    let mut config = config(workers);
    config.share_port = true;
    config
}

/// The server that answers a new connection to `addr`.
fn answerer(addr: SocketAddr) -> String {
    let mut client = Client::connect(addr, "/");
    client.send_text("who");
    match client.recv() {
        Got::Text(text) => text,
        other => panic!("no answer: {other:?}"),
    }
}

#[test]
fn a_second_server_on_a_taken_address_fails_with_addr_in_use() {
    for (first_workers, second_workers) in [(2, 2), (1, 1), (2, 1), (1, 2)] {
        let first =
            named_server("first", "127.0.0.1:0".parse().unwrap(), config(first_workers)).unwrap();
        let addr = first.local_addr();
        let err = named_server("second", addr, config(second_workers)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{first_workers}/{second_workers}: {err}");
        let message = err.to_string();
        assert!(message.contains(&addr.to_string()), "the error names the address: {message}");
        assert!(message.contains("share_port"), "the error says how to share: {message}");
        // The first server answers every connection: nobody joined it.
        for _ in 0..8 {
            assert_eq!(answerer(addr), "first:who");
        }
        first.shutdown(Duration::from_secs(1));
    }
}

#[test]
fn the_wildcard_address_on_a_taken_port_fails_too() {
    let first = named_server("first", "127.0.0.1:0".parse().unwrap(), config(2)).unwrap();
    let port = first.local_addr().port();
    let err =
        named_server("second", SocketAddr::from(([0, 0, 0, 0], port)), config(2)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    first.shutdown(Duration::from_secs(1));
}

#[test]
fn an_address_freed_by_a_shutdown_binds_again_at_once() {
    let first = named_server("first", "127.0.0.1:0".parse().unwrap(), config(2)).unwrap();
    let addr = first.local_addr();
    // A connection leaves the port with sockets in TIME_WAIT; they do not block the successor.
    assert_eq!(answerer(addr), "first:who");
    first.shutdown(Duration::from_secs(1));
    let second = named_server("second", addr, config(2)).unwrap();
    assert_eq!(answerer(addr), "second:who");
    second.shutdown(Duration::from_secs(1));
}

#[test]
fn share_port_joins_a_running_server_for_a_zero_downtime_restart() {
    // The old server: started without share_port, with one worker or several.
    for old_workers in [1, 2] {
        let old = named_server("old", "127.0.0.1:0".parse().unwrap(), config(old_workers)).unwrap();
        let addr = old.local_addr();
        let new = named_server("new", addr, sharing(2)).unwrap();
        assert_eq!(new.local_addr(), addr);
        // Both answer now: the kernel spreads connections over both groups of listeners.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..64 {
            seen.insert(answerer(addr));
            if seen.len() == 2 {
                break;
            }
        }
        assert_eq!(seen.len(), 2, "both servers answer a shared port: {seen:?}");
        // The old one goes; the new one carries on alone.
        old.shutdown(Duration::from_secs(1));
        for _ in 0..8 {
            assert_eq!(answerer(addr), "new:who");
        }
        new.shutdown(Duration::from_secs(1));
    }
}

#[test]
fn share_port_cannot_join_a_listener_that_does_not_share() {
    // std's listener has no SO_REUSEPORT: nobody can join it.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = other.local_addr().unwrap();
    let err = named_server("new", addr, sharing(2)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    assert!(err.to_string().contains("does not share"), "{err}");
}
