//! Routing by Host and path, the accept hook, and plain HTTP answers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bidir_protocol::Config as ProtocolConfig;
use bidir_protocol::deflate::DeflateConfig;
use bidir_protocol::http::{self, ExtensionOffer, InvalidExtension, StatusCode};

use crate::handler::{self, Handler};
use crate::origin::{OriginPolicy, OriginRefused};
use crate::tls::ServerTls;

/// What the accept hook and HTTP handlers see of a request: method, target, headers, offered
/// subprotocols and extensions, and the peer's address. Borrowed from the worker's buffer for
/// the duration of the call.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub(crate) head: http::Request<'a, 'a>,
    pub(crate) peer: SocketAddr,
}

impl<'a> Request<'a> {
    /// The method, e.g. `GET`.
    pub fn method(&self) -> &'a str {
        self.head.method
    }

    /// The path, without the query: what routes match. For an absolute-form target
    /// (`GET http://example.com/chat HTTP/1.1`, RFC 9112 §3.2.2) the path part of the URI.
    pub fn path(&self) -> &'a str {
        self.head.path()
    }

    /// The query, without `?`.
    pub fn query(&self) -> Option<&'a str> {
        self.head.query()
    }

    /// The request target as sent: path and query, or the whole URI of an absolute-form
    /// target.
    pub fn target(&self) -> &'a str {
        self.head.target
    }

    /// The host the request is for, port included if sent: what host routes match. An
    /// absolute-form target's authority (its `Host` header is then ignored, RFC 9112
    /// §3.2.2), else the `Host` header if exactly one was sent.
    pub fn host(&self) -> Option<&'a str> {
        self.head.host()
    }

    /// The first header named `name` (ASCII case-insensitive), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.head.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every header, in order, as sent.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.head.headers.iter().map(|h| (h.name, h.value))
    }

    /// Whether this is a WebSocket upgrade request.
    pub fn is_websocket(&self) -> bool {
        self.head.is_websocket_upgrade()
    }

    /// Subprotocols the client offers, in its order of preference, without those that carry
    /// a token ([`TOKEN_PROTOCOL_PREFIX`], see [`Request::protocol_token`]): a hook that picks
    /// from this list can never echo a credential back.
    pub fn protocols(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.offered_protocols().filter(|p| !p.starts_with(TOKEN_PROTOCOL_PREFIX))
    }

    /// The token a browser offered as a subprotocol `bidir.token.<token>`
    /// ([`TOKEN_PROTOCOL_PREFIX`]), the first if several; `None` if none or empty.
    ///
    /// Browsers cannot set headers on a WebSocket, and a token in the URL ends up in access
    /// logs, proxies and the browser's history. The list of subprotocols is a header the page
    /// does control: offer the token beside the real subprotocol, and choose the real one.
    /// The token must be a header token (`A-Z a-z 0-9 !#$%&'*+-.^_`|~`): base64url without
    /// padding, or a JWT, fits. The engine never answers with it: it is left out of
    /// [`Request::protocols`], and an [`Accept::protocol`] naming it fails the handshake
    /// with 500.
    ///
    /// ```js
    /// new WebSocket("wss://example.com/live", ["bidir.json.v1", "bidir.token." + token]);
    /// ```
    ///
    /// ```no_run
    /// use bidir::{Accept, Context, Handler, HttpResponse, Message, Request, Server};
    ///
    /// struct Live { user: String }
    /// impl Handler for Live {
    ///     fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
    ///         let _ = cx.send(msg);
    ///     }
    /// }
    ///
    /// fn user_of(token: &str) -> Option<String> {
    ///     (token == "s3cr3t").then(|| "ada".to_owned()) // verify a signature here
    /// }
    ///
    /// Server::builder()
    ///     .bind("0.0.0.0:9001")
    ///     .route("/live", |req: &Request<'_>| {
    ///         let user = req.protocol_token().and_then(user_of);
    ///         let Some(user) = user else {
    ///             return Err(HttpResponse::unauthorized().body("token required"));
    ///         };
    ///         let accept = Accept::new(Live { user });
    ///         // Answer with the real subprotocol: a browser that offered some fails the
    ///         // connection when the answer names none.
    ///         Ok(match req.protocols().find(|p| *p == "bidir.json.v1") {
    ///             Some(p) => accept.protocol(p),
    ///             None => accept,
    ///         })
    ///     })
    ///     .run()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// The other way, which needs nothing of the handshake: accept, and expect the token as
    /// the first message within a deadline set with
    /// [`Context::set_timer`](crate::Context::set_timer); until it has arrived, the handler
    /// serves nothing.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use bidir::{CloseCode, Context, Handler, Message, TimerId};
    ///
    /// /// `None` until the first message proved who the peer is.
    /// struct Session { user: Option<String> }
    ///
    /// impl Handler for Session {
    ///     fn on_open(&mut self, cx: &mut Context<'_>) {
    ///         cx.set_timer(Duration::from_secs(5)); // the token's deadline
    ///     }
    ///
    ///     fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
    ///         match (&self.user, msg) {
    ///             (None, Message::Text(token)) if token == "s3cr3t" => {
    ///                 self.user = Some("ada".to_owned()); // verify a signature here
    ///             }
    ///             (None, _) => {
    ///                 let _ = cx.close(CloseCode::POLICY_VIOLATION, "authentication failed");
    ///             }
    ///             (Some(_), msg) => {
    ///                 let _ = cx.send(msg);
    ///             }
    ///         }
    ///     }
    ///
    ///     fn on_timer(&mut self, cx: &mut Context<'_>, _: TimerId) {
    ///         if self.user.is_none() {
    ///             let _ = cx.close(CloseCode::POLICY_VIOLATION, "authentication timed out");
    ///         }
    ///     }
    /// }
    /// ```
    pub fn protocol_token(&self) -> Option<&'a str> {
        self.offered_protocols()
            .filter_map(|p| p.strip_prefix(TOKEN_PROTOCOL_PREFIX))
            .find(|token| !token.is_empty())
    }

    /// Every offered subprotocol, tokens included.
    fn offered_protocols(&self) -> impl Iterator<Item = &'a str> + 'a {
        let head = self.head;
        head.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-protocol"))
            .flat_map(|h| http::header::tokens(h.value))
            .filter_map(|t| std::str::from_utf8(t).ok())
    }

    /// Extensions the client offers; a malformed offer is an `Err` among the others.
    pub fn extensions(
        &self,
    ) -> impl Iterator<Item = Result<ExtensionOffer<'a>, InvalidExtension>> + 'a {
        let head = self.head;
        head.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
            .flat_map(|h| http::Extensions::new(h.value))
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
}

/// The prefix of a subprotocol that carries a token rather than names a protocol:
/// `bidir.token.<token>`. See [`Request::protocol_token`].
pub const TOKEN_PROTOCOL_PREFIX: &str = "bidir.token.";

/// The accept hook's "yes": the handler for the connection, and how to answer.
#[derive(Debug)]
pub struct Accept<H> {
    pub(crate) handler: H,
    pub(crate) protocol: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) config: Option<Arc<ProtocolConfig>>,
    pub(crate) compression: Option<Option<DeflateConfig>>,
}

// Here rather than in origin.rs, so that the policy's module does not import this one back.
impl OriginPolicy {
    /// Whether `req` may open a WebSocket under this policy.
    ///
    /// # Errors
    ///
    /// Why not, as [`OriginRefused`].
    pub fn check(&self, req: &Request<'_>) -> Result<(), OriginRefused> {
        self.check_origin(req.head.headers_named("origin"), req.host())
    }
}

impl<H: Handler> Accept<H> {
    /// Accepts with `handler` and nothing more.
    pub fn new(handler: H) -> Self {
        Self { handler, protocol: None, headers: Vec::new(), config: None, compression: None }
    }

    /// Chooses a subprotocol. It must be one the client offered (see
    /// [`Request::protocols`]); otherwise the handshake fails with 500, since answering with an
    /// unoffered protocol would make the client fail the connection anyway. A token offered as
    /// a subprotocol ([`Request::protocol_token`]) is not a protocol that can be chosen: naming
    /// it fails with 500 too, so a credential is never echoed.
    #[must_use]
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocol = Some(protocol.into());
        self
    }

    /// Adds a response header, e.g. `Set-Cookie`. Names must be tokens and values must not
    /// contain CR or LF; a bad header fails the handshake with 500.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Uses these protocol limits and timeouts for this connection instead of the server's.
    #[must_use]
    pub fn config(mut self, config: impl Into<Arc<ProtocolConfig>>) -> Self {
        self.config = Some(config.into());
        self
    }

    /// Negotiates permessage-deflate with this configuration, if the client offers it,
    /// instead of the server's [`ServerConfig::compression`](crate::ServerConfig).
    #[must_use]
    pub fn compression(mut self, config: DeflateConfig) -> Self {
        self.compression = Some(Some(config));
        self
    }

    /// Declines permessage-deflate for this connection, whatever the server's default.
    #[must_use]
    pub fn no_compression(mut self) -> Self {
        self.compression = Some(None);
        self
    }
}

/// Turns what an accept hook returns into an [`Accept`]: a bare handler, or an `Accept`.
pub trait IntoAccept {
    /// The connection's handler.
    type Handler: Handler;
    /// The acceptance.
    fn into_accept(self) -> Accept<Self::Handler>;
}

impl<H: Handler> IntoAccept for H {
    type Handler = H;
    fn into_accept(self) -> Accept<H> {
        Accept::new(self)
    }
}

impl<H: Handler> IntoAccept for Accept<H> {
    type Handler = H;
    fn into_accept(self) -> Self {
        self
    }
}

/// An HTTP answer other than the upgrade: what a plain HTTP route returns (a health check, a
/// static page), and the accept hook's "no" (401, 403, 404, …). The connection is closed after
/// it is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl HttpResponse {
    /// A response with `status` and no body.
    pub fn status(status: u16) -> Self {
        Self { status: StatusCode(status), headers: Vec::new(), body: Vec::new() }
    }

    /// 401 Unauthorized (add `WWW-Authenticate` with [`HttpResponse::header`]).
    pub fn unauthorized() -> Self {
        Self::status(401)
    }

    /// 403 Forbidden.
    pub fn forbidden() -> Self {
        Self::status(403)
    }

    /// 404 Not Found.
    pub fn not_found() -> Self {
        Self::status(404)
    }

    /// 200 with a `text/html; charset=utf-8` body.
    pub fn html(body: impl Into<Vec<u8>>) -> Self {
        Self::status(200).header("Content-Type", "text/html; charset=utf-8").body(body)
    }

    /// 200 with a `text/plain; charset=utf-8` body.
    pub fn text(body: impl Into<Vec<u8>>) -> Self {
        Self::status(200).header("Content-Type", "text/plain; charset=utf-8").body(body)
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

/// A type-erased accepted connection.
pub(crate) struct Accepted {
    pub(crate) handler: Box<dyn Handler>,
    pub(crate) protocol: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) config: Option<Arc<ProtocolConfig>>,
    pub(crate) compression: Option<Option<DeflateConfig>>,
}

pub(crate) type WsHook = Arc<dyn Fn(&Request<'_>) -> Result<Accepted, HttpResponse> + Send + Sync>;
pub(crate) type HttpHook = Arc<dyn Fn(&Request<'_>) -> HttpResponse + Send + Sync>;

pub(crate) fn erase<F, A>(hook: F) -> WsHook
where
    F: Fn(&Request<'_>) -> Result<A, HttpResponse> + Send + Sync + 'static,
    A: IntoAccept,
{
    Arc::new(move |req| {
        let accept = hook(req)?.into_accept();
        Ok(Accepted {
            handler: handler::boxed(accept.handler),
            protocol: accept.protocol,
            headers: accept.headers,
            config: accept.config,
            compression: accept.compression,
        })
    })
}

#[derive(Clone, Default)]
pub(crate) struct Routes {
    ws: HashMap<String, WsHook>,
    http: HashMap<String, HttpHook>,
    ws_fallback: Option<WsHook>,
    http_fallback: Option<HttpHook>,
    /// Origin policies of WebSocket routes, by path, where not the server's.
    origins: HashMap<String, OriginPolicy>,
    fallback_origins: Option<OriginPolicy>,
}

/// Where a request goes.
pub(crate) enum Route<'r> {
    /// A WebSocket route's hook, and its Origin policy if it has its own.
    WebSocket(&'r WsHook, Option<&'r OriginPolicy>),
    Http(&'r HttpHook),
    /// A WebSocket route exists for the path, but the request is not an upgrade: 426.
    UpgradeRequired,
    NotFound,
}

/// Routes by Host, then path. A host without a matching route falls back to the default
/// host's routes; within a host, an exact path wins over the host's fallback route, and the
/// plain HTTP fallback does not take a path that has a WebSocket route.
#[derive(Clone, Default)]
pub(crate) struct Router {
    hosts: HashMap<String, Routes>,
    default: Routes,
    /// Per listener (in the order of the addresses bound), its TLS configuration if it has one.
    tls: Vec<Option<ServerTls>>,
}

impl Router {
    /// The TLS configuration of the listener at `index` (in bind order), if it has one.
    pub(crate) fn tls(&self, index: usize) -> Option<&ServerTls> {
        self.tls.get(index)?.as_ref()
    }

    /// Notes the TLS configuration (or none) of the next `count` listeners bound.
    pub(crate) fn add_listeners(&mut self, count: usize, tls: Option<&ServerTls>) {
        self.tls.extend(std::iter::repeat_n(tls.cloned(), count));
    }

    fn routes(&mut self, host: Option<&str>) -> &mut Routes {
        match host {
            Some(h) => self.hosts.entry(h.to_ascii_lowercase()).or_default(),
            None => &mut self.default,
        }
    }

    pub(crate) fn add_ws(&mut self, host: Option<&str>, path: Option<&str>, hook: WsHook) {
        let routes = self.routes(host);
        match path {
            Some(p) => {
                routes.ws.insert(p.to_owned(), hook);
            }
            None => routes.ws_fallback = Some(hook),
        }
    }

    pub(crate) fn add_http(&mut self, host: Option<&str>, path: Option<&str>, hook: HttpHook) {
        let routes = self.routes(host);
        match path {
            Some(p) => {
                routes.http.insert(p.to_owned(), hook);
            }
            None => routes.http_fallback = Some(hook),
        }
    }

    pub(crate) fn set_origins(
        &mut self,
        host: Option<&str>,
        path: Option<&str>,
        policy: OriginPolicy,
    ) {
        let routes = self.routes(host);
        match path {
            Some(p) => {
                routes.origins.insert(p.to_owned(), policy);
            }
            None => routes.fallback_origins = Some(policy),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.hosts.is_empty()
            && self.default.ws.is_empty()
            && self.default.http.is_empty()
            && self.default.ws_fallback.is_none()
            && self.default.http_fallback.is_none()
    }

    pub(crate) fn find(&self, req: &Request<'_>) -> Route<'_> {
        let host = req.host().map(|h| strip_port(h).to_ascii_lowercase());
        let on_host = host.as_deref().and_then(|h| self.hosts.get(h));
        let path = req.path();
        let upgrade = req.is_websocket();
        for routes in on_host.into_iter().chain([&self.default]) {
            let (ws, origins) = match routes.ws.get(path) {
                Some(hook) => (Some(hook), routes.origins.get(path)),
                None => (routes.ws_fallback.as_ref(), routes.fallback_origins.as_ref()),
            };
            // The HTTP fallback is for paths no route names: a WebSocket path answers a plain
            // request with 426, which tells a client what it got wrong.
            let http = match routes.http.get(path) {
                Some(hook) => Some(hook),
                None if routes.ws.contains_key(path) => None,
                None => routes.http_fallback.as_ref(),
            };
            match (upgrade, ws, http) {
                (true, Some(hook), _) => return Route::WebSocket(hook, origins),
                (false, _, Some(hook)) => return Route::Http(hook),
                (false, Some(_), None) => return Route::UpgradeRequired,
                _ => {}
            }
        }
        Route::NotFound
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::Context;
    use bidir_protocol::Message;

    struct Nop;
    impl Handler for Nop {
        fn on_message(&mut self, _cx: &mut Context<'_>, _msg: Message<'_>) {}
    }

    fn with_request<R>(raw: &str, f: impl FnOnce(&Request<'_>) -> R) -> R {
        let mut headers = [http::EMPTY_HEADER; 16];
        let http::Status::Complete((head, _)) =
            http::Request::parse(raw.as_bytes(), &mut headers, 8192).unwrap()
        else {
            panic!("partial")
        };
        f(&Request { head, peer: "127.0.0.1:1".parse().unwrap() })
    }

    fn upgrade(host: &str, path: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    }

    fn kind(router: &Router, raw: &str) -> &'static str {
        with_request(raw, |r| match router.find(r) {
            Route::WebSocket(..) => "ws",
            Route::Http(_) => "http",
            Route::UpgradeRequired => "426",
            Route::NotFound => "404",
        })
    }

    #[test]
    fn routing_by_host_and_path_with_fallbacks() {
        let mut router = Router::default();
        let ws = erase(|_: &Request<'_>| Ok::<_, HttpResponse>(Nop));
        router.add_ws(None, Some("/echo"), ws.clone());
        router.add_ws(Some("Chat.Example"), Some("/room"), ws.clone());
        router.add_http(None, Some("/"), Arc::new(|_: &Request<'_>| HttpResponse::text("hi")));
        assert_eq!(kind(&router, &upgrade("a", "/echo")), "ws");
        assert_eq!(kind(&router, &upgrade("chat.example:443", "/room")), "ws");
        assert_eq!(kind(&router, &upgrade("other", "/room")), "404");
        // A host-specific route set falls back to the default host.
        assert_eq!(kind(&router, &upgrade("chat.example", "/echo")), "ws");
        assert_eq!(kind(&router, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"), "http");
        assert_eq!(kind(&router, "GET /echo HTTP/1.1\r\nHost: a\r\n\r\n"), "426");
        assert_eq!(kind(&router, "GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n"), "404");
        router.add_ws(None, None, ws);
        assert_eq!(kind(&router, &upgrade("a", "/anything")), "ws");
    }

    #[test]
    fn absolute_form_routes_by_the_targets_host_and_path() {
        let mut router = Router::default();
        let ws = erase(|_: &Request<'_>| Ok::<_, HttpResponse>(Nop));
        router.add_ws(Some("chat.example"), Some("/room"), ws);
        router.add_http(None, Some("/"), Arc::new(|_: &Request<'_>| HttpResponse::text("hi")));
        // The Host header names another host: the target's authority wins.
        assert_eq!(kind(&router, &upgrade("other", "http://Chat.Example:80/room")), "ws");
        assert_eq!(kind(&router, &upgrade("chat.example", "http://other/room")), "404");
        assert_eq!(kind(&router, "GET http://a HTTP/1.1\r\nHost: a\r\n\r\n"), "http");
        with_request(&upgrade("x", "ws://chat.example/room?id=2"), |r| {
            assert_eq!(
                (r.host(), r.path(), r.query()),
                (Some("chat.example"), "/room", Some("id=2"))
            );
            assert_eq!(r.target(), "ws://chat.example/room?id=2");
        });
    }

    #[test]
    fn request_accessors() {
        let raw = upgrade("h:1", "/p?q=1").replace(
            "Sec-WebSocket-Version: 13\r\n",
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: a, b\r\nSec-WebSocket-Extensions: x; y=1\r\n",
        );
        with_request(&raw, |r| {
            assert_eq!(
                (r.method(), r.path(), r.query(), r.target()),
                ("GET", "/p", Some("q=1"), "/p?q=1")
            );
            assert_eq!(r.host(), Some("h:1"));
            assert_eq!(r.header("upgrade"), Some("websocket"));
            assert_eq!(r.protocols().collect::<Vec<_>>(), ["a", "b"]);
            assert_eq!(r.extensions().next().unwrap().unwrap().name, "x");
            assert!(r.is_websocket());
            assert_eq!(r.headers().count(), 7);
        });
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
