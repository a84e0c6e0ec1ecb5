//! Entry points for the fuzz targets, built with `--cfg fuzzing` only: they reach types the
//! public API keeps private.

use bidir_protocol::http;
use bidir_protocol::{Input, Instant};

use crate::DeflateConfig;
use crate::OriginPolicy;
use crate::client::handshake::{Handshake, MAX_BODY};
use crate::client::{Connect, ConnectError};

/// The client's reading of a server's answer to its upgrade request (`flags`: which
/// subprotocols and deflate offer the request carried), and of the frames that follow a 101.
///
/// Never panics; the outcome does not depend on how the answer is cut into reads; a refusal's
/// body is bounded; an opened connection takes whatever frames follow.
pub fn client_handshake(flags: u8, cut: u8, answer: &[u8]) {
    let mut connect = Connect::new("ws://example.com:9001/chat?x=1").expect("a valid URL");
    if flags & 1 != 0 {
        connect = connect.protocol("chat").protocol("v2");
    }
    connect = match (flags >> 1) & 3 {
        1 => connect.deflate(DeflateConfig::shared()),
        2 => connect.deflate(DeflateConfig::dedicated(9)),
        3 => connect.deflate(DeflateConfig::dedicated(15)),
        _ => connect,
    };
    // The fixed nonce lets the corpus carry the matching Sec-WebSocket-Accept.
    let handshake = Handshake::with_keys(&connect, [7; 16], [9; 32]);
    let mut request = Vec::new();
    handshake.write_request(&mut request).expect("the request is valid");
    let now = Instant::ZERO;
    let cut = usize::from(cut).min(answer.len());
    let first = handshake.on_bytes(&answer[..cut], false, now);
    let whole = handshake.on_bytes(answer, true, now);
    if let Ok(Some((_, used))) = &first {
        let Ok(Some((_, used_whole))) = &whole else {
            panic!("a head complete in a prefix is complete in the whole: {whole:?}");
        };
        assert_eq!(used, used_whole);
    }
    match whole {
        Ok(Some((upgraded, used))) => {
            assert!(used <= answer.len());
            let mut conn = upgraded.conn;
            if let Some(codec) = conn.new_codec() {
                conn.attach_codec(codec);
            }
            let mut rest = answer[used..].to_vec();
            let mut input = Input::new(&mut rest);
            let mut spill = Vec::new();
            while let Ok(Some(_)) = conn.handle_bytes(now, &mut input, &mut spill) {}
            let mut out = Vec::new();
            conn.poll_transmit(&mut out);
        }
        Ok(None) => panic!("the end of the stream decides"),
        Err(ConnectError::Refused(refusal)) => {
            assert!(refusal.body.len() <= MAX_BODY);
            assert_ne!(refusal.status, 101);
        }
        Err(_) => {}
    }
}

/// The Origin policies and the subprotocol token over an arbitrary request head.
///
/// Never panics; `any` admits everything; a request without `Origin` passes every policy;
/// `same_host` with patterns admits whatever `listed` with the same patterns does; the token
/// never shows among the protocols a hook may choose.
pub fn origin(data: &[u8]) {
    let mut headers = [http::EMPTY_HEADER; 32];
    let Ok(http::Status::Complete((head, _))) = http::Request::parse(data, &mut headers, 4096)
    else {
        return;
    };
    let req = crate::Request { head, peer: "127.0.0.1:1".parse().expect("an address") };
    let patterns = ["https://*.example.com", "http://[::1]:8080", "ws://a.example"];
    let listed = patterns.iter().fold(OriginPolicy::listed(), |p, o| p.allow(o));
    let same_host = patterns.iter().fold(OriginPolicy::same_host(), |p, o| p.allow(o));
    assert!(OriginPolicy::any().check(&req).is_ok());
    let (by_list, by_host) = (listed.check(&req), same_host.check(&req));
    if head.header("origin").is_none() {
        assert!(by_list.is_ok() && by_host.is_ok());
    }
    assert!(by_list.is_err() || by_host.is_ok(), "{by_list:?} {by_host:?}");
    let _ = OriginPolicy::same_host().allow_null().check(&req);
    assert!(req.protocols().all(|p| !p.starts_with(crate::TOKEN_PROTOCOL_PREFIX)));
    assert!(req.protocol_token().is_none_or(|t| !t.is_empty()));
}
