//! The server side of the opening handshake: parse the request in place, validate it
//! (RFC 6455 §4.2.1), and say why not when it is refused.

use core::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use httparse::Header;

use super::header::{self, ExtensionOffer, Extensions, InvalidExtension};
use super::{AcceptKey, Status, StatusCode};

/// A parsed HTTP/1.x request head, borrowed from the caller's buffer (`'b`) and header array
/// (`'h`).
#[derive(Clone, Copy, Debug)]
pub struct Request<'h, 'b> {
    /// The method, e.g. `GET`.
    pub method: &'b str,
    /// The request target as sent: path and query (origin-form), or a whole URI
    /// (absolute-form, RFC 9112 §3.2.2); [`Request::path`], [`Request::query`] and
    /// [`Request::host`] read either.
    pub target: &'b str,
    /// The minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub version: u8,
    /// The headers, in order.
    pub headers: &'h [Header<'b>],
}

impl<'h, 'b> Request<'h, 'b> {
    /// Parses a request head from the start of `buf`.
    ///
    /// Returns `Complete((request, head_len))` with the length of the head (the bytes after it
    /// belong to the connection), or `Partial` when the head has not ended yet; then nothing is
    /// consumed and the caller parses again once more bytes arrived. Call again only when new
    /// bytes contain a line end, or a client sending one byte at a time makes parsing
    /// quadratic; `max_head_len` bounds the cost in any case.
    ///
    /// # Errors
    ///
    /// - [`HandshakeError::HeadTooLarge`] once the head (complete or not) exceeds
    ///   `max_head_len` bytes;
    /// - [`HandshakeError::TooManyHeaders`] if `headers` is too short to hold them;
    /// - [`HandshakeError::Malformed`] if the bytes are not an HTTP/1.x request;
    /// - [`HandshakeError::InvalidTarget`] if the target is absolute-form with an empty
    ///   authority, with userinfo (`http://user@host/`, refused as RFC 9110 §4.2.4 advises),
    ///   or with a fragment.
    pub fn parse(
        buf: &'b [u8],
        headers: &'h mut [Header<'b>],
        max_head_len: usize,
    ) -> Result<Status<(Self, usize)>, HandshakeError> {
        let mut req = httparse::Request::new(headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) if len > max_head_len => {
                Err(HandshakeError::HeadTooLarge)
            }
            Ok(httparse::Status::Complete(len)) => {
                let request = Self {
                    method: req.method.unwrap_or_default(),
                    target: req.path.unwrap_or_default(),
                    version: req.version.unwrap_or_default(),
                    headers: req.headers,
                };
                let bad_authority = |a: &str| a.is_empty() || a.contains('@');
                if request.authority().is_some_and(bad_authority) || has_fragment(&request) {
                    return Err(HandshakeError::InvalidTarget);
                }
                Ok(Status::Complete((request, len)))
            }
            Ok(httparse::Status::Partial) if buf.len() > max_head_len => {
                Err(HandshakeError::HeadTooLarge)
            }
            Ok(httparse::Status::Partial) => Ok(Status::Partial),
            Err(httparse::Error::TooManyHeaders) => Err(HandshakeError::TooManyHeaders),
            Err(_) => Err(HandshakeError::Malformed),
        }
    }

    /// The path: the target up to `?`, without the scheme and authority of an absolute-form
    /// target (`/chat` for `http://example.com/chat?room=1`; `/` when that form has no path).
    pub fn path(&self) -> &'b str {
        let target = self.origin_form();
        match target.split_once('?').map_or(target, |(path, _)| path) {
            "" if self.authority().is_some() => "/",
            path => path,
        }
    }

    /// The query: the target after `?`, if any.
    pub fn query(&self) -> Option<&'b str> {
        self.origin_form().split_once('?').map(|(_, query)| query)
    }

    /// The authority of an absolute-form target (RFC 9112 §3.2.2): `example.com:8080` for
    /// `GET http://example.com:8080/chat HTTP/1.1`. `None` for the usual origin-form (`/chat`).
    /// Only the schemes `http`, `https`, `ws` and `wss` make a target absolute-form; any other
    /// target is taken as a path (and usually matches no route).
    pub fn authority(&self) -> Option<&'b str> {
        absolute_form(self.target).map(|(authority, _)| authority)
    }

    /// The target without the scheme and authority of an absolute-form target.
    fn origin_form(&self) -> &'b str {
        absolute_form(self.target).map_or(self.target, |(_, rest)| rest)
    }

    /// The value of the first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers_named(name).next()
    }

    /// The values of every header named `name`, in order.
    pub fn headers_named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'b [u8]> + 's {
        self.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
    }

    /// The host the request is for: an absolute-form target's authority (the `Host` header is
    /// then ignored, RFC 9112 §3.2.2), else the `Host` header if present once and UTF-8.
    /// Either may carry a port.
    pub fn host(&self) -> Option<&'b str> {
        self.authority().or_else(|| self.host_header())
    }

    /// The `Host` header, if present once and UTF-8.
    fn host_header(&self) -> Option<&'b str> {
        let mut hosts = self.headers_named("host");
        let host = hosts.next()?;
        if hosts.next().is_some() {
            return None;
        }
        core::str::from_utf8(host).ok()
    }

    /// How the request's body is delimited (RFC 9112 §6.3). The engine reads no request body:
    /// it answers an upgrade only when this is [`Body::Empty`], and closes the connection after
    /// any other answer, so a body is never taken for the next request.
    ///
    /// `Content-Length: 0` is no body (RFC 9110 §8.6): some clients and proxies send it on
    /// every request. Repeated `Content-Length` values that are all equal count as one
    /// (RFC 9112 §6.3 item 5).
    ///
    /// # Errors
    ///
    /// The framing is ambiguous, and a server in front of or behind this one might read the
    /// body differently (request smuggling):
    /// - [`HandshakeError::ContentLengthWithTransferEncoding`] if both are present (item 3);
    /// - [`HandshakeError::InvalidTransferEncoding`] if `chunked` is not the final coding
    ///   (item 4), or on an HTTP/1.0 request (RFC 9112 §6.1);
    /// - [`HandshakeError::InvalidContentLength`] if a value is not a decimal number that fits
    ///   in 64 bits, or values differ (item 5).
    pub fn body(&self) -> Result<Body, HandshakeError> {
        let chunked = match self.headers_named("transfer-encoding").last() {
            None => None,
            Some(_) if self.version < 1 => return Err(HandshakeError::InvalidTransferEncoding),
            Some(last) => Some(is_chunked_final(last)),
        };
        let length = self.content_length()?;
        match (chunked, length) {
            (Some(_), Some(_)) => Err(HandshakeError::ContentLengthWithTransferEncoding),
            (Some(true), None) => Ok(Body::Chunked),
            (Some(false), None) => Err(HandshakeError::InvalidTransferEncoding),
            (None, None | Some(0)) => Ok(Body::Empty),
            (None, Some(n)) => Ok(Body::Length(n)),
        }
    }

    /// Every `Content-Length` value (across repeated headers and comma lists) if they agree.
    fn content_length(&self) -> Result<Option<u64>, HandshakeError> {
        let mut length = None;
        for element in self.headers_named("content-length").flat_map(|v| v.split(|&b| b == b',')) {
            let n =
                parse_decimal(header::trim(element)).ok_or(HandshakeError::InvalidContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(HandshakeError::InvalidContentLength);
            }
            length = Some(n);
        }
        Ok(length)
    }

    /// Whether the request asks for a WebSocket (`Upgrade: websocket`). A request that does not
    /// is plain HTTP: route it to an HTTP handler, or answer
    /// [`HandshakeError::NotWebSocket`] (426) on a WebSocket-only path.
    pub fn is_websocket_upgrade(&self) -> bool {
        self.headers_named("upgrade").any(|v| header::has_token(v, "websocket"))
    }

    /// Validates the request as a WebSocket opening handshake (RFC 6455 §4.2.1).
    ///
    /// # Errors
    ///
    /// The first rule the request breaks, checked in this order: method (405), version (400),
    /// body framing (400, as [`Request::body`]), a body (400: whatever follows the head would
    /// otherwise be read as WebSocket frames), `Upgrade` (426), `Connection` (400), `Host` (400), `Sec-WebSocket-Key` (400),
    /// `Sec-WebSocket-Version` (400 if absent, 426 if not 13).
    pub fn upgrade(&self) -> Result<Upgrade<'h, 'b>, HandshakeError> {
        if self.method != "GET" {
            return Err(HandshakeError::MethodNotAllowed);
        }
        if self.version < 1 {
            return Err(HandshakeError::HttpVersion);
        }
        if self.body()? != Body::Empty {
            return Err(HandshakeError::BodyNotAllowed);
        }
        if !self.is_websocket_upgrade() {
            return Err(HandshakeError::NotWebSocket);
        }
        if !self.headers_named("connection").any(|v| header::has_token(v, "upgrade")) {
            return Err(HandshakeError::MissingConnectionUpgrade);
        }
        // RFC 9112 §3.2: the header is required even when an absolute-form target names the
        // host, which then wins.
        self.host_header().ok_or(HandshakeError::MissingHost)?;
        let host = self.host().ok_or(HandshakeError::MissingHost)?;
        let key = self.key()?;
        let mut versions = self.headers_named("sec-websocket-version");
        match (versions.next().map(header::trim), versions.next()) {
            (None, _) => return Err(HandshakeError::MissingVersion),
            (Some(b"13"), None) => {}
            _ => return Err(HandshakeError::UnsupportedVersion),
        }
        Ok(Upgrade { request: *self, host, key })
    }

    fn key(&self) -> Result<&'b str, HandshakeError> {
        let mut keys = self.headers_named("sec-websocket-key");
        let (Some(key), None) = (keys.next(), keys.next()) else {
            return Err(HandshakeError::InvalidKey);
        };
        let key = header::trim(key);
        let mut nonce = [0u8; 18];
        match BASE64.decode_slice(key, &mut nonce) {
            Ok(16) if key.len() == 24 => {
                Ok(core::str::from_utf8(key).map_err(|_| HandshakeError::InvalidKey)?)
            }
            _ => Err(HandshakeError::InvalidKey),
        }
    }
}

/// How a request's body is delimited, from [`Request::body`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// No body: neither header, or `Content-Length: 0`.
    Empty,
    /// `Content-Length` bytes follow the head (more than zero).
    Length(u64),
    /// A chunked body follows the head (`Transfer-Encoding` ending in `chunked`).
    Chunked,
}

/// Whether an absolute-form target carries a fragment, which `absolute-URI` excludes.
fn has_fragment(request: &Request<'_, '_>) -> bool {
    request.authority().is_some() && request.target.contains('#')
}

/// Splits an absolute-form target (`scheme://authority[/path][?query]`, RFC 9112 §3.2.2) into
/// its authority and the rest; `None` for any other form.
fn absolute_form(target: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = target.split_once("://")?;
    if !["http", "https", "ws", "wss"].iter().any(|s| scheme.eq_ignore_ascii_case(s)) {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(rest.split_at(end))
}

/// Whether the last coding of a `Transfer-Encoding` value is `chunked` (parameters ignored).
fn is_chunked_final(value: &[u8]) -> bool {
    let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
    let coding = last.split(|&b| b == b';').next().unwrap_or_default();
    header::trim(coding).eq_ignore_ascii_case(b"chunked")
}

/// `1*DIGIT` as a `u64`; `None` if empty, not digits, or too large.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d < 10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// A valid WebSocket upgrade request.
#[derive(Clone, Copy, Debug)]
pub struct Upgrade<'h, 'b> {
    /// The whole request: path, query, every header.
    pub request: Request<'h, 'b>,
    /// The host the request is for: an absolute-form target's authority, else the `Host`
    /// header ([`Request::host`]).
    pub host: &'b str,
    /// The client's `Sec-WebSocket-Key` (24 base64 characters for 16 bytes).
    pub key: &'b str,
}

impl<'h, 'b> Upgrade<'h, 'b> {
    /// The `Sec-WebSocket-Accept` value that answers this request's key.
    pub fn accept_key(&self) -> AcceptKey {
        AcceptKey::new(self.key.as_bytes())
    }

    /// The `Origin` header, if any (browsers always send one).
    pub fn origin(&self) -> Option<&'b str> {
        self.request.header("origin").and_then(|v| core::str::from_utf8(v).ok())
    }

    /// The subprotocols offered in `Sec-WebSocket-Protocol` headers, in order of preference.
    /// Elements that are not tokens are skipped.
    pub fn protocols(&self) -> impl Iterator<Item = &'b str> + '_ {
        self.request
            .headers_named("sec-websocket-protocol")
            .flat_map(header::tokens)
            .filter(|t| header::is_token(t))
            .filter_map(|t| core::str::from_utf8(t).ok())
    }

    /// The extensions offered in `Sec-WebSocket-Extensions` headers, in order of preference;
    /// a malformed element is an `Err` among the others.
    pub fn extensions(
        &self,
    ) -> impl Iterator<Item = Result<ExtensionOffer<'b>, InvalidExtension>> + '_ {
        self.request.headers_named("sec-websocket-extensions").flat_map(Extensions::new)
    }
}

/// Why an opening handshake request is refused; each maps to an HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Not an HTTP/1.x request. 400.
    Malformed,
    /// An absolute-form target with an empty authority, userinfo or a fragment. 400.
    InvalidTarget,
    /// The head exceeds the configured size. 431.
    HeadTooLarge,
    /// More headers than the caller's array holds. 431.
    TooManyHeaders,
    /// §4.1: the method must be GET. 405, with `Allow: GET`.
    MethodNotAllowed,
    /// §4.1: HTTP/1.1 or later is required. 400.
    HttpVersion,
    /// No `Upgrade: websocket`: a plain HTTP request on a WebSocket path. 426, with
    /// `Upgrade: websocket`.
    NotWebSocket,
    /// §4.2.1: `Connection` must include `Upgrade`. 400.
    MissingConnectionUpgrade,
    /// §4.2.1: exactly one `Host` header is required. 400.
    MissingHost,
    /// §4.2.1: exactly one `Sec-WebSocket-Key` that decodes to 16 bytes is required. 400.
    InvalidKey,
    /// §4.2.1: `Sec-WebSocket-Version` is required. 400.
    MissingVersion,
    /// §4.4: only version 13 is spoken. 426, with `Sec-WebSocket-Version: 13`.
    UnsupportedVersion,
    /// RFC 9112 §6.3: both `Content-Length` and `Transfer-Encoding`; the body's end is
    /// ambiguous. 400.
    ContentLengthWithTransferEncoding,
    /// RFC 9112 §6.3: `Transfer-Encoding` whose final coding is not `chunked`, or any
    /// `Transfer-Encoding` on HTTP/1.0 (§6.1). 400.
    InvalidTransferEncoding,
    /// RFC 9112 §6.3: a `Content-Length` that is not a number, or several that differ. 400.
    InvalidContentLength,
    /// An upgrade request with a body (`Content-Length` above 0, or `Transfer-Encoding`): the
    /// bytes after the head would be read as WebSocket frames. 400.
    BodyNotAllowed,
}

impl HandshakeError {
    /// The status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Malformed
            | Self::InvalidTarget
            | Self::HttpVersion
            | Self::MissingConnectionUpgrade
            | Self::MissingHost
            | Self::InvalidKey
            | Self::MissingVersion
            | Self::ContentLengthWithTransferEncoding
            | Self::InvalidTransferEncoding
            | Self::InvalidContentLength
            | Self::BodyNotAllowed => StatusCode::BAD_REQUEST,
            Self::HeadTooLarge | Self::TooManyHeaders => StatusCode::HEADER_FIELDS_TOO_LARGE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotWebSocket | Self::UnsupportedVersion => StatusCode::UPGRADE_REQUIRED,
        }
    }

    /// Headers the answer must carry besides the usual ones.
    pub fn headers(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::MethodNotAllowed => &[("Allow", "GET")],
            Self::NotWebSocket => &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
            Self::UnsupportedVersion => &[("Sec-WebSocket-Version", "13")],
            _ => &[],
        }
    }

    /// Appends the whole HTTP response (status, headers, a short text body) to `out`.
    pub fn write_response(&self, out: &mut Vec<u8>) {
        let body = self.to_string();
        super::response::write_response(out, self.status(), self.headers(), body.as_bytes())
            .expect("static headers are valid");
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed HTTP request",
            Self::InvalidTarget => "invalid request target",
            Self::HeadTooLarge => "request head too large",
            Self::TooManyHeaders => "too many request headers",
            Self::MethodNotAllowed => "WebSocket handshake must use GET",
            Self::HttpVersion => "WebSocket handshake needs HTTP/1.1",
            Self::NotWebSocket => "this resource speaks WebSocket only",
            Self::MissingConnectionUpgrade => "Connection header must include Upgrade",
            Self::MissingHost => "exactly one Host header is required",
            Self::InvalidKey => "invalid Sec-WebSocket-Key",
            Self::MissingVersion => "missing Sec-WebSocket-Version",
            Self::UnsupportedVersion => "unsupported Sec-WebSocket-Version",
            Self::ContentLengthWithTransferEncoding => "both Content-Length and Transfer-Encoding",
            Self::InvalidTransferEncoding => "invalid Transfer-Encoding",
            Self::InvalidContentLength => "invalid Content-Length",
            Self::BodyNotAllowed => "WebSocket handshake must not have a body",
        })
    }
}

impl std::error::Error for HandshakeError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6455 §1.3's example handshake.
    const RFC_REQUEST: &[u8] = b"GET /chat?room=1 HTTP/1.1\r\n\
        Host: server.example.com\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\n\
        Sec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    fn with_request<R>(
        bytes: &[u8],
        f: impl FnOnce(Result<Status<(Request<'_, '_>, usize)>, HandshakeError>) -> R,
    ) -> R {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        f(Request::parse(bytes, &mut headers, 8192))
    }

    fn upgrade_error(bytes: &[u8]) -> HandshakeError {
        with_request(bytes, |r| match r.unwrap() {
            Status::Complete((req, _)) => req.upgrade().unwrap_err(),
            Status::Partial => panic!("partial"),
        })
    }

    #[test]
    fn rfc_example_request() {
        with_request(RFC_REQUEST, |r| {
            let Status::Complete((req, len)) = r.unwrap() else { panic!("partial") };
            assert_eq!(len, RFC_REQUEST.len());
            assert_eq!((req.path(), req.query()), ("/chat", Some("room=1")));
            let up = req.upgrade().unwrap();
            assert_eq!(up.host, "server.example.com");
            assert_eq!(up.accept_key().as_str(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
            assert_eq!(up.origin(), Some("http://example.com"));
            assert_eq!(up.protocols().collect::<Vec<_>>(), ["chat", "superchat"]);
            assert_eq!(up.extensions().count(), 0);
        });
    }

    #[test]
    fn partial_consumes_nothing_and_limits_apply() {
        for cut in 0..RFC_REQUEST.len() {
            with_request(&RFC_REQUEST[..cut], |r| {
                assert!(matches!(r, Ok(Status::Partial)), "cut {cut}")
            });
        }
        let mut headers = [httparse::EMPTY_HEADER; 16];
        assert_eq!(
            Request::parse(RFC_REQUEST, &mut headers, 64).unwrap_err(),
            HandshakeError::HeadTooLarge
        );
        let mut headers = [httparse::EMPTY_HEADER; 16];
        assert_eq!(
            Request::parse(&RFC_REQUEST[..100], &mut headers, 64).unwrap_err(),
            HandshakeError::HeadTooLarge
        );
        let mut few = [httparse::EMPTY_HEADER; 3];
        assert_eq!(
            Request::parse(RFC_REQUEST, &mut few, 8192).unwrap_err(),
            HandshakeError::TooManyHeaders
        );
        with_request(b"\x16\x03\x01garbage\r\n\r\n", |r| {
            assert_eq!(r.unwrap_err(), HandshakeError::Malformed)
        });
    }

    fn replace(from: &str, to: &str) -> Vec<u8> {
        let s = core::str::from_utf8(RFC_REQUEST).unwrap();
        assert!(s.contains(from));
        s.replacen(from, to, 1).into_bytes()
    }

    #[test]
    fn each_rule_has_its_rejection() {
        let cases = [
            (replace("GET", "POST"), HandshakeError::MethodNotAllowed, 405),
            (replace("HTTP/1.1", "HTTP/1.0"), HandshakeError::HttpVersion, 400),
            (replace("Upgrade: websocket\r\n", ""), HandshakeError::NotWebSocket, 426),
            (replace("Upgrade: websocket", "Upgrade: h2c"), HandshakeError::NotWebSocket, 426),
            (
                replace("Connection: Upgrade", "Connection: keep-alive"),
                HandshakeError::MissingConnectionUpgrade,
                400,
            ),
            (replace("Host: server.example.com\r\n", ""), HandshakeError::MissingHost, 400),
            (
                replace("Host: server.example.com\r\n", "Host: a\r\nHost: b\r\n"),
                HandshakeError::MissingHost,
                400,
            ),
            (
                replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZQ=="),
                HandshakeError::InvalidKey,
                400,
            ),
            (
                replace("dGhlIHNhbXBsZSBub25jZQ==", "not base64 at all!!!!!!!"),
                HandshakeError::InvalidKey,
                400,
            ),
            (
                replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
                HandshakeError::InvalidKey,
                400,
            ),
            (replace("Sec-WebSocket-Version: 13\r\n", ""), HandshakeError::MissingVersion, 400),
            (
                replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
                HandshakeError::UnsupportedVersion,
                426,
            ),
        ];
        for (bytes, expected, status) in cases {
            let got = upgrade_error(&bytes);
            assert_eq!(got, expected);
            assert_eq!(got.status().0, status);
        }
    }

    fn body_of(bytes: &[u8]) -> Result<Body, HandshakeError> {
        with_request(bytes, |r| match r.unwrap() {
            Status::Complete((req, _)) => req.body(),
            Status::Partial => panic!("partial"),
        })
    }

    #[test]
    fn body_framing_follows_rfc_9112() {
        let post = |headers: &str| format!("POST /x HTTP/1.1\r\nHost: a\r\n{headers}\r\n");
        let cases: [(&str, Result<Body, HandshakeError>); 14] = [
            ("", Ok(Body::Empty)),
            ("Content-Length: 0\r\n", Ok(Body::Empty)),
            ("Content-Length: 5\r\n", Ok(Body::Length(5))),
            ("Content-Length: 5\r\ncontent-length: 5\r\n", Ok(Body::Length(5))),
            ("Content-Length: 5, 5\r\n", Ok(Body::Length(5))),
            (
                "Content-Length: 5\r\nContent-Length: 6\r\n",
                Err(HandshakeError::InvalidContentLength),
            ),
            ("Content-Length: 5, 6\r\n", Err(HandshakeError::InvalidContentLength)),
            ("Content-Length: -1\r\n", Err(HandshakeError::InvalidContentLength)),
            ("Content-Length: +5\r\n", Err(HandshakeError::InvalidContentLength)),
            ("Content-Length: 99999999999999999999\r\n", Err(HandshakeError::InvalidContentLength)),
            ("Transfer-Encoding: chunked\r\n", Ok(Body::Chunked)),
            ("Transfer-Encoding: gzip, Chunked\r\n", Ok(Body::Chunked)),
            ("Transfer-Encoding: chunked, gzip\r\n", Err(HandshakeError::InvalidTransferEncoding)),
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                Err(HandshakeError::ContentLengthWithTransferEncoding),
            ),
        ];
        for (headers, expected) in cases {
            assert_eq!(body_of(post(headers).as_bytes()), expected, "{headers:?}");
        }
        assert_eq!(
            body_of(b"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HandshakeError::InvalidTransferEncoding)
        );
    }

    #[test]
    fn an_upgrade_has_no_body() {
        let with = |headers: &str| {
            replace(
                "Sec-WebSocket-Version: 13\r\n",
                &format!("Sec-WebSocket-Version: 13\r\n{headers}"),
            )
        };
        let cases = [
            ("Content-Length: 5\r\n", HandshakeError::BodyNotAllowed),
            ("Transfer-Encoding: chunked\r\n", HandshakeError::BodyNotAllowed),
            ("Content-Length: 0\r\nContent-Length: 5\r\n", HandshakeError::InvalidContentLength),
            (
                "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
                HandshakeError::ContentLengthWithTransferEncoding,
            ),
            ("Transfer-Encoding: gzip\r\n", HandshakeError::InvalidTransferEncoding),
        ];
        for (headers, expected) in cases {
            let got = upgrade_error(&with(headers));
            assert_eq!(got, expected, "{headers:?}");
            assert_eq!(got.status(), StatusCode::BAD_REQUEST);
        }
        // `Content-Length: 0` is no body: the upgrade stands.
        with_request(&with("Content-Length: 0\r\n"), |r| {
            let Status::Complete((req, _)) = r.unwrap() else { panic!("partial") };
            req.upgrade().unwrap();
        });
    }

    #[test]
    fn absolute_form_targets_route_by_their_authority() {
        let bytes = replace(
            "GET /chat?room=1 HTTP/1.1",
            "GET http://Other.example:8080/chat?room=1 HTTP/1.1",
        );
        with_request(&bytes, |r| {
            let Status::Complete((req, _)) = r.unwrap() else { panic!("partial") };
            assert_eq!(req.target, "http://Other.example:8080/chat?room=1");
            assert_eq!(req.authority(), Some("Other.example:8080"));
            assert_eq!((req.path(), req.query()), ("/chat", Some("room=1")));
            // RFC 9112 §3.2.2: the target's authority wins over the Host header.
            assert_eq!(req.host(), Some("Other.example:8080"));
            assert_eq!(req.upgrade().unwrap().host, "Other.example:8080");
        });
        type Form<'a> = (&'a [u8], Option<&'a str>, &'a str, Option<&'a str>);
        let forms: [Form<'_>; 7] = [
            (b"GET wss://h HTTP/1.1\r\nHost: x\r\n\r\n", Some("h"), "/", None),
            (b"GET WS://h?q HTTP/1.1\r\nHost: x\r\n\r\n", Some("h"), "/", Some("q")),
            (
                b"GET https://[::1]:443/a/b HTTP/1.1\r\nHost: x\r\n\r\n",
                Some("[::1]:443"),
                "/a/b",
                None,
            ),
            (b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", None, "/a", None),
            // Not absolute-form: an unknown scheme, authority-form, asterisk-form.
            (b"GET ftp://h/a HTTP/1.1\r\nHost: x\r\n\r\n", None, "ftp://h/a", None),
            (b"CONNECT h:443 HTTP/1.1\r\nHost: x\r\n\r\n", None, "h:443", None),
            (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", None, "*", None),
        ];
        for (bytes, authority, path, query) in forms {
            with_request(bytes, |r| {
                let Status::Complete((req, _)) = r.unwrap() else { panic!("partial") };
                assert_eq!((req.authority(), req.path(), req.query()), (authority, path, query));
                assert_eq!(req.host(), authority.or(Some("x")));
            });
        }
    }

    #[test]
    fn absolute_form_needs_an_authority_without_userinfo_and_a_host_header() {
        for bytes in [
            &b"GET http:///a HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET http://user:pw@h/a HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET ws://@h/ HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET http://h#f HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            with_request(bytes, |r| assert_eq!(r.unwrap_err(), HandshakeError::InvalidTarget));
        }
        assert_eq!(HandshakeError::InvalidTarget.status(), StatusCode::BAD_REQUEST);
        let bytes = replace("GET /chat?room=1 HTTP/1.1", "GET http://h/chat HTTP/1.1");
        let s = String::from_utf8(bytes).unwrap().replace("Host: server.example.com\r\n", "");
        assert_eq!(upgrade_error(s.as_bytes()), HandshakeError::MissingHost);
    }

    #[test]
    fn header_matching_is_case_insensitive_and_list_aware() {
        let bytes =
            replace("Connection: Upgrade", "connection: keep-alive\r\nCONNECTION: foo, UPGRADE");
        let bytes =
            String::from_utf8(bytes).unwrap().replace("Upgrade: websocket", "upgrade: WebSocket");
        with_request(bytes.as_bytes(), |r| {
            let Status::Complete((req, _)) = r.unwrap() else { panic!("partial") };
            assert!(req.is_websocket_upgrade());
            req.upgrade().unwrap();
        });
    }

    #[test]
    fn rejections_render_as_http() {
        let mut out = vec![];
        HandshakeError::UnsupportedVersion.write_response(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"), "{text}");
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(text.ends_with("\r\n\r\nunsupported Sec-WebSocket-Version"));
        let mut out = vec![];
        HandshakeError::MethodNotAllowed.write_response(&mut out);
        assert!(String::from_utf8(out).unwrap().contains("\r\nAllow: GET\r\n"));
    }

    #[test]
    fn extensions_are_collected_across_headers() {
        let bytes = replace(
            "Sec-WebSocket-Version: 13\r\n",
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
             Sec-WebSocket-Extensions: x-foo, bad name\r\n",
        );
        with_request(&bytes, |r| {
            let Status::Complete((req, _)) = r.unwrap() else { panic!("partial") };
            let up = req.upgrade().unwrap();
            let offers: Vec<_> = up.extensions().collect();
            assert_eq!(offers.len(), 3);
            assert_eq!(offers[0].unwrap().name, "permessage-deflate");
            assert_eq!(offers[1].unwrap().name, "x-foo");
            assert_eq!(offers[2], Err(InvalidExtension));
        });
    }
}
