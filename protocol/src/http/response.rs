//! Server responses: the 101 that accepts an upgrade and any other status that refuses it
//! or answers a plain HTTP request.

use core::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};

use super::header;

/// The GUID RFC 6455 §1.3 appends to the client's key.
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// An HTTP status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StatusCode(pub u16);

impl StatusCode {
    /// 101: the upgrade is accepted.
    pub const SWITCHING_PROTOCOLS: Self = Self(101);
    /// 200.
    pub const OK: Self = Self(200);
    /// 400: malformed handshake.
    pub const BAD_REQUEST: Self = Self(400);
    /// 401: the accept hook wants credentials.
    pub const UNAUTHORIZED: Self = Self(401);
    /// 403: the accept hook refuses.
    pub const FORBIDDEN: Self = Self(403);
    /// 404: no route.
    pub const NOT_FOUND: Self = Self(404);
    /// 405: not GET.
    pub const METHOD_NOT_ALLOWED: Self = Self(405);
    /// 426: not a WebSocket request, or an unsupported WebSocket version.
    pub const UPGRADE_REQUIRED: Self = Self(426);
    /// 431: request head too large.
    pub const HEADER_FIELDS_TOO_LARGE: Self = Self(431);
    /// 500.
    pub const INTERNAL_SERVER_ERROR: Self = Self(500);
    /// 503: overloaded (connection limit reached).
    pub const SERVICE_UNAVAILABLE: Self = Self(503);

    /// The standard reason phrase, or `""` for a code without one here.
    pub fn reason(self) -> &'static str {
        match self.0 {
            101 => "Switching Protocols",
            200 => "OK",
            204 => "No Content",
            301 => "Moved Permanently",
            302 => "Found",
            304 => "Not Modified",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            406 => "Not Acceptable",
            408 => "Request Timeout",
            409 => "Conflict",
            410 => "Gone",
            413 => "Content Too Large",
            426 => "Upgrade Required",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            _ => "",
        }
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.reason())
    }
}

/// A `Sec-WebSocket-Accept` value: base64 of SHA-1 of the key and the RFC's GUID (§4.2.2).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AcceptKey([u8; 28]);

impl AcceptKey {
    /// The answer to the client's `Sec-WebSocket-Key` (as sent, base64).
    pub fn new(key: &[u8]) -> Self {
        let mut sha1 = Sha1::new();
        sha1.update(key);
        sha1.update(WEBSOCKET_GUID);
        let digest = sha1.finalize();
        let mut out = [0u8; 28];
        let n = BASE64.encode_slice(digest, &mut out).expect("28 bytes hold base64 of 20");
        debug_assert_eq!(n, 28);
        Self(out)
    }

    /// The value as text.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.0).expect("base64 is ASCII")
    }
}

impl fmt::Debug for AcceptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AcceptKey").field(&self.as_str()).finish()
    }
}

/// A header name or value that cannot be sent: the name is not a token, or the value holds
/// CR, LF or NUL (which would let it forge headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidHeader;

impl fmt::Display for InvalidHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid header name or value")
    }
}

impl std::error::Error for InvalidHeader {}

/// The 101 response that accepts an upgrade.
#[derive(Clone, Copy, Debug)]
pub struct Accept<'a> {
    /// `Sec-WebSocket-Accept`, from [`Upgrade::accept_key`](super::Upgrade::accept_key).
    pub key: AcceptKey,
    /// The chosen subprotocol; it must be one the client offered.
    pub protocol: Option<&'a str>,
    /// The `Sec-WebSocket-Extensions` answer, e.g. the negotiated permessage-deflate.
    pub extensions: Option<&'a str>,
    /// More headers, e.g. `Set-Cookie`.
    pub headers: &'a [(&'a str, &'a str)],
}

impl Accept<'_> {
    /// Appends the response to `out`.
    ///
    /// # Errors
    ///
    /// [`InvalidHeader`] if a header, the protocol or the extensions cannot be sent; nothing
    /// is appended then.
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), InvalidHeader> {
        let valid_headers = self.headers.iter().all(|(n, v)| valid_header(n, v));
        let valid_protocol = self.protocol.is_none_or(|p| header::is_token(p.as_bytes()));
        let valid_extensions = self.extensions.is_none_or(|e| header::is_valid_value(e.as_bytes()));
        if !(valid_headers && valid_protocol && valid_extensions) {
            return Err(InvalidHeader);
        }
        out.extend_from_slice(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        );
        push_header(out, "Sec-WebSocket-Accept", self.key.as_str());
        if let Some(protocol) = self.protocol {
            push_header(out, "Sec-WebSocket-Protocol", protocol);
        }
        if let Some(extensions) = self.extensions {
            push_header(out, "Sec-WebSocket-Extensions", extensions);
        }
        for (name, value) in self.headers {
            push_header(out, name, value);
        }
        out.extend_from_slice(b"\r\n");
        Ok(())
    }
}

/// Appends a complete HTTP/1.1 response: status line, `headers`, `Content-Length`,
/// `Connection: close` (any non-101 answer ends the connection), and `body`.
///
/// # Errors
///
/// [`InvalidHeader`] if a header cannot be sent; nothing is appended then.
pub fn write_response(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(), InvalidHeader> {
    if !headers.iter().all(|(n, v)| valid_header(n, v)) {
        return Err(InvalidHeader);
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status.0));
    out.push(b' ');
    out.extend_from_slice(status.reason().as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        push_header(out, name, value);
    }
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, body.len() as u64);
    out.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    out.extend_from_slice(body);
    Ok(())
}

fn valid_header(name: &str, value: &str) -> bool {
    header::is_token(name.as_bytes()) && header::is_valid_value(value.as_bytes())
}

pub(crate) fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            AcceptKey::new(b"dGhlIHNhbXBsZSBub25jZQ==").as_str(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn accept_response() {
        let mut out = b"prefix".to_vec();
        Accept {
            key: AcceptKey::new(b"dGhlIHNhbXBsZSBub25jZQ=="),
            protocol: Some("chat"),
            extensions: Some("permessage-deflate"),
            headers: &[("Set-Cookie", "id=1; HttpOnly")],
        }
        .write(&mut out)
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "prefixHTTP/1.1 101 Switching Protocols\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Sec-WebSocket-Protocol: chat\r\n\
             Sec-WebSocket-Extensions: permessage-deflate\r\n\
             Set-Cookie: id=1; HttpOnly\r\n\r\n"
        );
    }

    #[test]
    fn header_injection_is_refused() {
        let key = AcceptKey::new(b"x");
        let mut out = vec![];
        let bad = Accept {
            key,
            protocol: None,
            extensions: None,
            headers: &[("X", "a\r\nSet-Cookie: evil")],
        };
        assert_eq!(bad.write(&mut out), Err(InvalidHeader));
        let bad = Accept { key, protocol: Some("a b"), extensions: None, headers: &[] };
        assert_eq!(bad.write(&mut out), Err(InvalidHeader));
        assert!(out.is_empty());
        assert_eq!(
            write_response(&mut out, StatusCode::FORBIDDEN, &[("Bad Name", "v")], b""),
            Err(InvalidHeader)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn plain_responses() {
        let mut out = vec![];
        write_response(&mut out, StatusCode(403), &[("WWW-Authenticate", "Bearer")], b"no")
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 403 Forbidden\r\nWWW-Authenticate: Bearer\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno"
        );
        let mut out = vec![];
        write_response(&mut out, StatusCode(599), &[], &[0; 12345]).unwrap();
        assert!(out.starts_with(b"HTTP/1.1 599 \r\nContent-Length: 12345\r\n"));
    }
}
