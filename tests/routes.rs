//! Routes the builder exposes beyond one path on any host: plain HTTP per host and as a
//! fallback, a host's own WebSocket fallback.

mod util;

use std::time::Duration;

use bidir::{Context, Handler, HttpResponse, OriginPolicy, Request, Server};
use util::{Client, Got, config, raw_http};

/// Says its tag on open.
struct Tagged(&'static str);
impl Handler for Tagged {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.send_text(self.0).unwrap();
    }
}

fn get(addr: std::net::SocketAddr, host: &str, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let answer = raw_http(addr, request.as_bytes());
    (answer.status, String::from_utf8(answer.body).unwrap())
}

#[test]
fn plain_http_per_host_and_as_fallbacks() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(config(1))
        .route("/ws", |_req: &Request<'_>| Ok(Tagged("any /ws")))
        .http("/health", |_req: &Request<'_>| HttpResponse::text("any health"))
        .host_http("api.example", "/health", |_req: &Request<'_>| HttpResponse::text("api health"))
        .host_default_http("api.example", |req: &Request<'_>| {
            HttpResponse::not_found().body(format!("api has no {}", req.path()))
        })
        .default_http(|req: &Request<'_>| HttpResponse::text(format!("fallback {}", req.path())))
        .start()
        .unwrap();
    let addr = server.local_addr();
    assert_eq!(get(addr, "API.example:8080", "/health"), (200, "api health".into()));
    assert_eq!(get(addr, "other", "/health"), (200, "any health".into()));
    // The host's fallback answers before the routes of any host are tried.
    assert_eq!(get(addr, "api.example", "/nothing"), (404, "api has no /nothing".into()));
    assert_eq!(get(addr, "other", "/nothing"), (200, "fallback /nothing".into()));
    // A path with only a WebSocket route still answers a plain request with 426.
    assert_eq!(get(addr, "other", "/ws").0, 426);
    // Upgrades are not HTTP routes' business.
    let mut c = Client::connect_with(addr, "/ws", "api.example", &[], &[]).unwrap();
    assert_eq!(c.recv(), Got::Text("any /ws".into()));
    server.shutdown(Duration::from_secs(1));
}

#[test]
fn a_hosts_websocket_fallback_and_its_origin_policy() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(config(1))
        .route("/a", |_req: &Request<'_>| Ok(Tagged("any /a")))
        .host_route("chat.example", "/room", |_req: &Request<'_>| Ok(Tagged("chat /room")))
        .host_default_route("chat.example", |_req: &Request<'_>| Ok(Tagged("chat fallback")))
        .host_default_origins("chat.example", OriginPolicy::listed().allow("https://ok.example"))
        .start()
        .unwrap();
    let addr = server.local_addr();
    let tag = |host: &str, path: &str, origin: &str| {
        let headers: Vec<(&str, &str)> =
            if origin.is_empty() { vec![] } else { vec![("Origin", origin)] };
        match Client::connect_with(addr, path, host, &[], &headers) {
            Ok(mut c) => match c.recv() {
                Got::Text(t) => t,
                other => panic!("{other:?}"),
            },
            Err(refused) => refused.status.to_string(),
        }
    };
    assert_eq!(tag("chat.example", "/room", ""), "chat /room");
    assert_eq!(tag("chat.example", "/anything", "https://ok.example"), "chat fallback");
    // The host's fallback has its own Origin policy.
    assert_eq!(tag("chat.example", "/anything", "https://evil.example"), "403");
    // The host's routes come first, its fallback included: the path of any host is not
    // reached from this host.
    assert_eq!(tag("chat.example", "/a", "https://ok.example"), "chat fallback");
    assert_eq!(tag("other", "/a", ""), "any /a");
    assert_eq!(tag("other", "/anything", ""), "404");
    server.shutdown(Duration::from_secs(1));
}
