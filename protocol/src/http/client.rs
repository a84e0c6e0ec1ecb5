//! The client side of the opening handshake: build the request, validate the answer
//! (RFC 6455 §4.1).

use core::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use httparse::Header;

use super::header::{self, Extensions};
use super::response::push_header;
use super::{AcceptKey, InvalidHeader, Status, StatusCode};

/// An opening handshake request.
#[derive(Clone, Copy, Debug)]
pub struct ClientRequest<'a> {
    /// The `Host` header: host, and port unless it is the scheme's default.
    pub host: &'a str,
    /// The request target: path and query, starting with `/`.
    pub target: &'a str,
    /// 16 random bytes from a secure source, base64-encoded into `Sec-WebSocket-Key`.
    pub nonce: [u8; 16],
    /// Subprotocols to offer, in order of preference.
    pub protocols: &'a [&'a str],
    /// The `Sec-WebSocket-Extensions` offer, e.g. permessage-deflate with its parameters.
    pub extensions: Option<&'a str>,
    /// More headers (authorization, cookies, origin).
    pub headers: &'a [(&'a str, &'a str)],
}

impl ClientRequest<'_> {
    /// The `Sec-WebSocket-Key` value: base64 of the nonce.
    pub fn key(&self) -> [u8; 24] {
        let mut key = [0u8; 24];
        BASE64.encode_slice(self.nonce, &mut key).expect("24 bytes hold base64 of 16");
        key
    }

    /// The `Sec-WebSocket-Accept` the server must answer with.
    pub fn expected_accept(&self) -> AcceptKey {
        AcceptKey::new(&self.key())
    }

    /// Appends the request to `out`.
    ///
    /// # Errors
    ///
    /// [`InvalidHeader`] if the host, target, a protocol, the extensions or a header cannot
    /// be sent; nothing is appended then.
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), InvalidHeader> {
        let target_ok =
            self.target.starts_with('/') && self.target.bytes().all(|b| b.is_ascii_graphic());
        let host_ok = !self.host.is_empty() && self.host.bytes().all(|b| b.is_ascii_graphic());
        let protocols_ok = self.protocols.iter().all(|p| header::is_token(p.as_bytes()));
        let extensions_ok = self.extensions.is_none_or(|e| header::is_valid_value(e.as_bytes()));
        let headers_ok = self
            .headers
            .iter()
            .all(|(n, v)| header::is_token(n.as_bytes()) && header::is_valid_value(v.as_bytes()));
        if !(target_ok && host_ok && protocols_ok && extensions_ok && headers_ok) {
            return Err(InvalidHeader);
        }
        out.extend_from_slice(b"GET ");
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        push_header(out, "Host", self.host);
        out.extend_from_slice(b"Upgrade: websocket\r\nConnection: Upgrade\r\n");
        let key = self.key();
        push_header(out, "Sec-WebSocket-Key", core::str::from_utf8(&key).expect("base64 is ASCII"));
        out.extend_from_slice(b"Sec-WebSocket-Version: 13\r\n");
        if !self.protocols.is_empty() {
            out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
            for (i, p) in self.protocols.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                out.extend_from_slice(p.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
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

/// A parsed HTTP/1.x response head, borrowed like [`Request`](super::Request).
#[derive(Clone, Copy, Debug)]
pub struct Response<'h, 'b> {
    /// The status code.
    pub status: StatusCode,
    /// The reason phrase as sent.
    pub reason: &'b str,
    /// The headers, in order.
    pub headers: &'h [Header<'b>],
}

impl<'h, 'b> Response<'h, 'b> {
    /// Parses a response head; like [`Request::parse`](super::Request::parse), nothing is
    /// consumed on `Partial`.
    ///
    /// # Errors
    ///
    /// [`ResponseError::Malformed`] for bytes that are not an HTTP/1.x response, or a head
    /// longer than `max_head_len` or with more headers than `headers` holds.
    pub fn parse(
        buf: &'b [u8],
        headers: &'h mut [Header<'b>],
        max_head_len: usize,
    ) -> Result<Status<(Self, usize)>, ResponseError> {
        let mut res = httparse::Response::new(headers);
        match res.parse(buf) {
            Ok(httparse::Status::Complete(len)) if len <= max_head_len => Ok(Status::Complete((
                Self {
                    status: StatusCode(res.code.unwrap_or_default()),
                    reason: res.reason.unwrap_or_default(),
                    headers: res.headers,
                },
                len,
            ))),
            Ok(httparse::Status::Partial) if buf.len() <= max_head_len => Ok(Status::Partial),
            _ => Err(ResponseError::Malformed),
        }
    }

    /// The value of the first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers_named(name).next()
    }

    /// The values of every header named `name`.
    pub fn headers_named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'b [u8]> + 's {
        self.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
    }

    /// `Content-Length`, if present and a number: how much body follows a refusal.
    pub fn content_length(&self) -> Option<usize> {
        core::str::from_utf8(self.header("content-length")?).ok()?.trim().parse().ok()
    }

    /// Validates the answer to `request` (RFC 6455 §4.1, the client's checks 1–6).
    ///
    /// # Errors
    ///
    /// [`ResponseError::Rejected`] for any status but 101 (read the body with
    /// [`Response::content_length`]); otherwise the first check that fails.
    pub fn validate(&self, request: &ClientRequest<'_>) -> Result<Negotiated<'b>, ResponseError> {
        if self.status != StatusCode::SWITCHING_PROTOCOLS {
            return Err(ResponseError::Rejected(self.status));
        }
        if !self.headers_named("upgrade").any(|v| header::has_token(v, "websocket")) {
            return Err(ResponseError::MissingUpgrade);
        }
        if !self.headers_named("connection").any(|v| header::has_token(v, "upgrade")) {
            return Err(ResponseError::MissingConnectionUpgrade);
        }
        let expected = request.expected_accept();
        match self.header("sec-websocket-accept").map(header::trim) {
            Some(v) if v == expected.as_str().as_bytes() => {}
            _ => return Err(ResponseError::InvalidAccept),
        }
        let mut protocols = self.headers_named("sec-websocket-protocol");
        let protocol = match (protocols.next(), protocols.next()) {
            (None, _) => None,
            (Some(p), None) => {
                let p = core::str::from_utf8(header::trim(p))
                    .map_err(|_| ResponseError::ProtocolNotOffered)?;
                if !request.protocols.contains(&p) {
                    return Err(ResponseError::ProtocolNotOffered);
                }
                Some(p)
            }
            (Some(_), Some(_)) => return Err(ResponseError::ProtocolNotOffered),
        };
        let offered: Vec<&str> = match request.extensions {
            Some(e) => {
                Extensions::new(e.as_bytes()).filter_map(Result::ok).map(|o| o.name).collect()
            }
            None => Vec::new(),
        };
        let mut extensions = None;
        for value in self.headers_named("sec-websocket-extensions") {
            for answer in Extensions::new(value) {
                let answer = answer.map_err(|_| ResponseError::ExtensionNotOffered)?;
                if !offered.contains(&answer.name) {
                    return Err(ResponseError::ExtensionNotOffered);
                }
            }
            if extensions.is_some() {
                // One header is enough for the extensions we offer; several are refused
                // rather than merged.
                return Err(ResponseError::ExtensionNotOffered);
            }
            extensions =
                Some(core::str::from_utf8(value).map_err(|_| ResponseError::ExtensionNotOffered)?);
        }
        Ok(Negotiated { protocol, extensions })
    }
}

/// What the server chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated<'b> {
    /// The subprotocol, one of those offered.
    pub protocol: Option<&'b str>,
    /// The `Sec-WebSocket-Extensions` answer, naming only offered extensions; its parameters
    /// are for the extension to check.
    pub extensions: Option<&'b str>,
}

/// Why the client fails the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResponseError {
    /// Not an HTTP/1.x response, or too large.
    Malformed,
    /// The server answered with this status instead of 101.
    Rejected(StatusCode),
    /// §4.1 check 2: no `Upgrade: websocket`.
    MissingUpgrade,
    /// §4.1 check 3: `Connection` lacks `Upgrade`.
    MissingConnectionUpgrade,
    /// §4.1 check 4: `Sec-WebSocket-Accept` is missing or wrong.
    InvalidAccept,
    /// §4.1 check 5: an extension we did not offer, or a malformed extensions answer.
    ExtensionNotOffered,
    /// §4.1 check 6: a subprotocol we did not offer, or several.
    ProtocolNotOffered,
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed => f.write_str("malformed HTTP response"),
            Self::Rejected(status) => write!(f, "server refused the upgrade: {status}"),
            Self::MissingUpgrade => f.write_str("response lacks Upgrade: websocket"),
            Self::MissingConnectionUpgrade => f.write_str("response lacks Connection: Upgrade"),
            Self::InvalidAccept => f.write_str("wrong Sec-WebSocket-Accept"),
            Self::ExtensionNotOffered => f.write_str("server chose an extension we did not offer"),
            Self::ProtocolNotOffered => f.write_str("server chose a subprotocol we did not offer"),
        }
    }
}

impl std::error::Error for ResponseError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc_request() -> ClientRequest<'static> {
        ClientRequest {
            host: "server.example.com",
            target: "/chat",
            nonce: *b"the sample nonce",
            protocols: &["chat", "superchat"],
            extensions: Some("permessage-deflate; client_max_window_bits"),
            headers: &[("Origin", "http://example.com")],
        }
    }

    #[test]
    fn request_matches_rfc_example() {
        let req = rfc_request();
        assert_eq!(&req.key(), b"dGhlIHNhbXBsZSBub25jZQ==");
        let mut out = vec![];
        req.write(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /chat HTTP/1.1\r\n\
             Host: server.example.com\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: chat, superchat\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
             Origin: http://example.com\r\n\r\n"
        );
    }

    #[test]
    fn bad_request_parts_are_refused() {
        let mut out = vec![];
        for req in [
            ClientRequest { target: "chat", ..rfc_request() },
            ClientRequest { target: "/a b", ..rfc_request() },
            ClientRequest { host: "", ..rfc_request() },
            ClientRequest { protocols: &["a,b"], ..rfc_request() },
            ClientRequest { headers: &[("X", "1\r\nY: 2")], ..rfc_request() },
        ] {
            assert_eq!(req.write(&mut out), Err(InvalidHeader));
        }
        assert!(out.is_empty());
    }

    fn validate(response: &str) -> Result<(Option<String>, Option<String>), ResponseError> {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let Status::Complete((res, _)) = Response::parse(response.as_bytes(), &mut headers, 4096)?
        else {
            panic!("partial")
        };
        res.validate(&rfc_request())
            .map(|n| (n.protocol.map(Into::into), n.extensions.map(Into::into)))
    }

    const OK: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                      Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";

    #[test]
    fn rfc_answer_validates() {
        assert_eq!(
            validate(&format!("{OK}Sec-WebSocket-Protocol: chat\r\n\r\n")),
            Ok((Some("chat".into()), None))
        );
        assert_eq!(
            validate(&format!(
                "{OK}Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=10\r\n\r\n"
            )),
            Ok((None, Some("permessage-deflate; client_max_window_bits=10".into())))
        );
        assert_eq!(validate(&format!("{OK}\r\n")), Ok((None, None)));
    }

    #[test]
    fn each_check_fails_on_its_own() {
        let cases = [
            (
                "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".to_owned(),
                ResponseError::Rejected(StatusCode(403)),
            ),
            (OK.replace("Upgrade: websocket\r\n", "") + "\r\n", ResponseError::MissingUpgrade),
            (
                OK.replace("Connection: Upgrade", "Connection: close") + "\r\n",
                ResponseError::MissingConnectionUpgrade,
            ),
            (
                OK.replace("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "AAAALMBiTxaQ9kYGzzhZRbK+xOo=") + "\r\n",
                ResponseError::InvalidAccept,
            ),
            (
                format!("{OK}Sec-WebSocket-Protocol: other\r\n\r\n"),
                ResponseError::ProtocolNotOffered,
            ),
            (
                format!("{OK}Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: chat\r\n\r\n"),
                ResponseError::ProtocolNotOffered,
            ),
            (
                format!("{OK}Sec-WebSocket-Extensions: x-other\r\n\r\n"),
                ResponseError::ExtensionNotOffered,
            ),
            (
                format!("{OK}Sec-WebSocket-Extensions: bad name\r\n\r\n"),
                ResponseError::ExtensionNotOffered,
            ),
        ];
        for (response, expected) in cases {
            assert_eq!(validate(&response), Err(expected), "{response}");
        }
        assert_eq!(validate("SSH-2.0-OpenSSH\r\n\r\n"), Err(ResponseError::Malformed));
    }

    #[test]
    fn refusal_body_length() {
        let raw = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 7\r\n\r\nlogin!!";
        let mut headers = [httparse::EMPTY_HEADER; 4];
        let Status::Complete((res, len)) =
            Response::parse(raw.as_bytes(), &mut headers, 4096).unwrap()
        else {
            panic!("partial")
        };
        assert_eq!(res.content_length(), Some(7));
        assert_eq!(&raw[len..], "login!!");
        assert_eq!(
            res.validate(&rfc_request()).unwrap_err(),
            ResponseError::Rejected(StatusCode::UNAUTHORIZED)
        );
    }
}
