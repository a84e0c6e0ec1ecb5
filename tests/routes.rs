//! Routes the builder exposes beyond one path on any host — plain HTTP per host and as a
//! fallback, a host's own WebSocket fallback — and one route choosing its handler's type per
//! subprotocol through `Box<dyn Handler>`.

mod util;

use std::sync::{Mutex, mpsc};
use std::time::Duration;

use bidir::client::Connect;
use bidir::{
    Accept, ConnHandle, Context, Handler, HttpResponse, Message, OriginPolicy, Request, Server,
};
use util::{Client, Got, config, raw_http};

const WAIT: Duration = Duration::from_secs(10);

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

/// Two handler types behind one route.
struct Json(mpsc::Sender<ConnHandle>);
impl Handler for Json {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        cx.send_text("json").unwrap();
        self.0.send(cx.handle()).unwrap();
    }
}
struct Bin;
impl Handler for Bin {
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        cx.send_binary(msg.as_bytes()).unwrap();
    }
}

#[test]
fn one_route_picks_a_handler_type_per_subprotocol() {
    let (handles, handles_rx) = mpsc::channel();
    let handles = Mutex::new(handles);
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(config(1))
        .route("/rpc", move |req: &Request<'_>| {
            let (handler, protocol): (Box<dyn Handler>, _) = match req.protocols().next() {
                Some("json") => (Box::new(Json(handles.lock().unwrap().clone())), "json"),
                Some("bin") => (Box::new(Bin), "bin"),
                _ => return Err(HttpResponse::status(400).body("offer json or bin")),
            };
            Ok(Accept::new(handler).protocol(protocol))
        })
        .route("/send", |_req: &Request<'_>| {
            Ok(Box::new(Tagged("boxed + Send")) as Box<dyn Handler + Send>)
        })
        .start()
        .unwrap();
    let addr = server.local_addr();
    let mut json = Client::connect_with(addr, "/rpc", "x", &["json"], &[]).unwrap();
    assert_eq!(json.recv(), Got::Text("json".into()));
    let mut bin = Client::connect_with(addr, "/rpc", "x", &["bin"], &[]).unwrap();
    bin.send_text("echoed as binary");
    assert_eq!(bin.recv(), Got::Binary(b"echoed as binary".to_vec()));
    let Err(refused) = Client::connect_with(addr, "/rpc", "x", &["xml"], &[]) else {
        panic!("an unknown subprotocol was accepted")
    };
    assert_eq!(refused.status, 400);
    // The box is unwrapped: a typed post reaches the handler as its own type.
    let handle = handles_rx.recv_timeout(WAIT).unwrap();
    handle.post_to::<Json, _>(|_json, cx| cx.send_text("typed").unwrap()).unwrap();
    assert_eq!(json.recv(), Got::Text("typed".into()));
    let mut boxed_send = Client::connect_with(addr, "/send", "x", &[], &[]).unwrap();
    assert_eq!(boxed_send.recv(), Got::Text("boxed + Send".into()));
    server.shutdown(Duration::from_secs(1));
}

/// A client connection whose handler type is chosen at run time.
#[test]
fn connect_takes_a_boxed_send_handler() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .config(config(1))
        .route("/t", |_req: &Request<'_>| Ok(Tagged("hello client")))
        .start()
        .unwrap();
    struct Record(mpsc::Sender<String>);
    impl Handler for Record {
        fn on_message(&mut self, _cx: &mut Context<'_>, msg: Message<'_>) {
            if let Message::Text(t) = msg {
                self.0.send(t.to_owned()).unwrap();
            }
        }
    }
    let (tx, rx) = mpsc::channel();
    let handler: Box<dyn Handler + Send> = Box::new(Record(tx));
    let url = format!("ws://{}/t", server.local_addr());
    server.connect(&Connect::new(&url).unwrap(), handler).unwrap();
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), "hello client");
    server.shutdown(Duration::from_secs(1));
}
