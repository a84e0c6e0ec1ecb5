//! The client's opening handshake without I/O, shared by the blocking client and the engine:
//! write the request, read the answer, and set up the protocol state it negotiated.

use std::sync::Arc;

use bidir_protocol::deflate::{self, DeflateConfig};
use bidir_protocol::http::{self, ClientRequest, Response, Status};
use bidir_protocol::{Config, Connection, Instant};

use super::{Connect, ConnectError, Refusal};

/// The most a handshake answer's head may take.
const MAX_HEAD: usize = 16 << 10;
/// The most of a refusal's body kept.
pub(crate) const MAX_BODY: usize = 64 << 10;

/// One opening handshake in progress.
#[derive(Debug)]
pub(crate) struct Handshake {
    nonce: [u8; 16],
    mask_seed: [u8; 32],
    host: String,
    target: String,
    protocols: Vec<String>,
    offer: Option<String>,
    headers: Vec<(String, String)>,
    deflate: Option<DeflateConfig>,
    config: Arc<Config>,
}

/// A completed handshake.
#[derive(Debug)]
pub(crate) struct Upgraded {
    /// The client's protocol state, with permessage-deflate on if negotiated.
    pub(crate) conn: Connection,
    /// The subprotocol the server chose.
    pub(crate) protocol: Option<String>,
    /// The answer's headers.
    pub(crate) headers: Vec<(String, String)>,
}

impl Handshake {
    /// A handshake for `connect`, with fresh random key and masking seed.
    ///
    /// # Errors
    ///
    /// [`ConnectError::Io`] if the system's random source fails.
    pub(crate) fn new(connect: &Connect) -> Result<Self, ConnectError> {
        let mut nonce = [0u8; 16];
        let mut mask_seed = [0u8; 32];
        getrandom::fill(&mut nonce)
            .and_then(|()| getrandom::fill(&mut mask_seed))
            .map_err(|e| ConnectError::Io(std::io::Error::other(e)))?;
        Ok(Self::with_keys(connect, nonce, mask_seed))
    }

    /// A handshake with a chosen key nonce and masking seed: deterministic, for fuzzing.
    pub(crate) fn with_keys(connect: &Connect, nonce: [u8; 16], mask_seed: [u8; 32]) -> Self {
        Self {
            nonce,
            mask_seed,
            host: connect.url.host_header.clone(),
            target: connect.url.target.clone(),
            protocols: connect.protocols.clone(),
            offer: connect.deflate.as_ref().map(DeflateConfig::offer),
            headers: connect.headers.clone(),
            deflate: connect.deflate.clone(),
            config: Arc::clone(&connect.config),
        }
    }

    fn with_request<R>(&self, f: impl FnOnce(&ClientRequest<'_>) -> R) -> R {
        let protocols: Vec<&str> = self.protocols.iter().map(String::as_str).collect();
        let headers: Vec<(&str, &str)> =
            self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        f(&ClientRequest {
            host: &self.host,
            target: &self.target,
            nonce: self.nonce,
            protocols: &protocols,
            extensions: self.offer.as_deref(),
            headers: &headers,
        })
    }

    /// Appends the upgrade request to `out`.
    ///
    /// # Errors
    ///
    /// [`ConnectError::InvalidRequest`] when a header, subprotocol or the target cannot be
    /// sent.
    pub(crate) fn write_request(&self, out: &mut Vec<u8>) -> Result<(), ConnectError> {
        self.with_request(|r| r.write(out)).map_err(|_| ConnectError::InvalidRequest)
    }

    /// Looks at the bytes received so far. `Ok(None)`: more are needed. `Ok(Some((upgraded,
    /// used)))`: the connection is open, and `buf[used..]` already belongs to it (frames the
    /// server sent right after its answer). `eof`: nothing more will come.
    ///
    /// # Errors
    ///
    /// The [`ConnectError`] that ends the attempt: a refusal (with its body, once
    /// `Content-Length` bytes or the end of the stream arrived), an invalid answer, an
    /// answer too large, or the stream ending first.
    pub(crate) fn on_bytes(
        &self,
        buf: &[u8],
        eof: bool,
        now: Instant,
    ) -> Result<Option<(Upgraded, usize)>, ConnectError> {
        let mut headers = [http::EMPTY_HEADER; 64];
        let (response, head_len) = match Response::parse(buf, &mut headers, MAX_HEAD) {
            Ok(Status::Complete(parsed)) => parsed,
            Ok(Status::Partial) if eof => return Err(ConnectError::Closed),
            Ok(Status::Partial) => return Ok(None),
            Err(e) => return Err(ConnectError::InvalidResponse(e)),
        };
        let owned_headers = || {
            response
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
                .collect::<Vec<_>>()
        };
        if response.status != http::StatusCode::SWITCHING_PROTOCOLS {
            let body = &buf[head_len..];
            let wanted = response.content_length().map(|n| n.min(MAX_BODY));
            if !eof && wanted.is_some_and(|n| body.len() < n) {
                return Ok(None);
            }
            let keep = wanted.unwrap_or(body.len()).min(body.len()).min(MAX_BODY);
            return Err(ConnectError::Refused(Box::new(Refusal {
                status: response.status.0,
                reason: response.reason.to_owned(),
                headers: owned_headers(),
                body: body[..keep].to_vec(),
            })));
        }
        let negotiated =
            self.with_request(|r| response.validate(r)).map_err(ConnectError::InvalidResponse)?;
        let mut conn = Connection::client(now, Arc::clone(&self.config), self.mask_seed);
        if let (Some(ours), Some(answer)) = (&self.deflate, negotiated.extensions)
            && let Some(params) =
                deflate::accept_answer(answer, ours).map_err(ConnectError::Deflate)?
        {
            conn.enable_deflate(params, ours);
        }
        let upgraded = Upgraded {
            conn,
            protocol: negotiated.protocol.map(str::to_owned),
            headers: owned_headers(),
        };
        Ok(Some((upgraded, head_len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer_to(h: &Handshake, extra: &str) -> Vec<u8> {
        let mut req = Vec::new();
        h.write_request(&mut req).unwrap();
        let mut headers = [http::EMPTY_HEADER; 32];
        let Status::Complete((req, _)) = http::Request::parse(&req, &mut headers, 8192).unwrap()
        else {
            panic!("partial")
        };
        let up = req.upgrade().unwrap();
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n{extra}\r\n",
            up.accept_key().as_str()
        )
        .into_bytes()
    }

    #[test]
    fn a_valid_answer_opens_with_what_was_negotiated() {
        let connect = Connect::new("ws://example.com:9001/chat?x=1")
            .unwrap()
            .protocol("a")
            .protocol("b")
            .header("Authorization", "Bearer t")
            .deflate(DeflateConfig::shared());
        let h = Handshake::new(&connect).unwrap();
        let mut req = Vec::new();
        h.write_request(&mut req).unwrap();
        let text = String::from_utf8(req).unwrap();
        assert!(text.starts_with("GET /chat?x=1 HTTP/1.1\r\nHost: example.com:9001\r\n"));
        assert!(text.contains("Authorization: Bearer t\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: a, b\r\n"));
        assert!(text.contains("Sec-WebSocket-Extensions: permessage-deflate"));
        let mut answer = answer_to(
            &h,
            "Sec-WebSocket-Protocol: b\r\nSec-WebSocket-Extensions: permessage-deflate; \
             server_no_context_takeover; client_no_context_takeover\r\n",
        );
        let head = answer.len();
        answer.extend_from_slice(b"\x81\x02hi");
        // Any prefix is "more needed".
        for cut in [0, 10, head - 1] {
            assert!(h.on_bytes(&answer[..cut], false, Instant::ZERO).unwrap().is_none());
        }
        let (up, used) = h.on_bytes(&answer, false, Instant::ZERO).unwrap().unwrap();
        assert_eq!(used, head);
        assert_eq!(up.protocol.as_deref(), Some("b"));
        assert!(up.conn.deflate_params().is_some_and(|p| p.is_stateless()));
        assert!(up.headers.iter().any(|(n, _)| n == "Sec-WebSocket-Accept"));
    }

    #[test]
    fn refusals_carry_status_headers_and_body() {
        let h = Handshake::new(&Connect::new("ws://h/").unwrap()).unwrap();
        let refusal = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\nX-Why: token\r\n\r\nno";
        assert!(h.on_bytes(refusal, false, Instant::ZERO).unwrap().is_none(), "body pending");
        let mut whole = refusal.to_vec();
        whole.extend_from_slice(b"pe!!");
        let Err(ConnectError::Refused(r)) = h.on_bytes(&whole, false, Instant::ZERO) else {
            panic!("refused")
        };
        assert_eq!(
            (r.status, r.reason.as_str(), r.body.as_slice()),
            (403, "Forbidden", &b"nope!!"[..])
        );
        assert_eq!(r.header("x-why"), Some("token"));
        // The stream ending first gives what arrived.
        let Err(ConnectError::Refused(r)) = h.on_bytes(refusal, true, Instant::ZERO) else {
            panic!("refused")
        };
        assert_eq!(r.body, b"no");
    }

    #[test]
    fn bad_answers_fail() {
        let h = Handshake::new(&Connect::new("ws://h/").unwrap().protocol("a")).unwrap();
        let wrong_accept = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Accept: nope\r\n\r\n";
        assert!(matches!(
            h.on_bytes(wrong_accept, false, Instant::ZERO),
            Err(ConnectError::InvalidResponse(http::ResponseError::InvalidAccept))
        ));
        let not_offered = answer_to(&h, "Sec-WebSocket-Protocol: z\r\n");
        assert!(matches!(
            h.on_bytes(&not_offered, false, Instant::ZERO),
            Err(ConnectError::InvalidResponse(http::ResponseError::ProtocolNotOffered))
        ));
        assert!(matches!(
            h.on_bytes(b"SSH-2.0-OpenSSH\r\n\r\n", false, Instant::ZERO),
            Err(ConnectError::InvalidResponse(_))
        ));
        assert!(matches!(
            h.on_bytes(b"HTTP/1.1 101", true, Instant::ZERO),
            Err(ConnectError::Closed)
        ));
        // A deflate answer the offer did not allow.
        let h = Handshake::new(&Connect::new("ws://h/").unwrap().deflate(DeflateConfig::shared()))
            .unwrap();
        let bad = answer_to(&h, "Sec-WebSocket-Extensions: permessage-deflate\r\n");
        assert!(matches!(h.on_bytes(&bad, false, Instant::ZERO), Err(ConnectError::Deflate(_))));
        let invalid = Handshake::new(&Connect::new("ws://h/").unwrap().header("Bad\r\n", "x"))
            .unwrap()
            .write_request(&mut Vec::new());
        assert!(matches!(invalid, Err(ConnectError::InvalidRequest)));
    }
}
