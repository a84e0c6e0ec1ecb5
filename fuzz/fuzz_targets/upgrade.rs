//! The opening handshake parsers: requests (server side) and responses (client side), and the
//! permessage-deflate negotiation on both sides.
//!
//! Never panics; whatever parses and validates renders a response that is itself valid HTTP;
//! a deflate answer is well formed and honours the configuration it was made with; the
//! engine's Origin policies keep their invariants (`bidir::fuzzing::origin`).
#![no_main]

use bidir_protocol::deflate::{self, DeflateConfig};
use bidir_protocol::http::{
    self, Accept, ClientRequest, Extensions, Request, Response, Status, write_response,
};
use libfuzzer_sys::fuzz_target;

fn configs() -> [DeflateConfig; 4] {
    let mut demanding = DeflateConfig::dedicated(10);
    demanding.peer_window_bits = 8;
    demanding.peer_no_context_takeover = true;
    [DeflateConfig::shared(), DeflateConfig::dedicated(15), DeflateConfig::dedicated(9), demanding]
}

fuzz_target!(|data: &[u8]| {
    let mut headers = [http::EMPTY_HEADER; 32];
    match Request::parse(data, &mut headers, 4096) {
        Ok(Status::Complete((req, len))) => {
            assert!(len <= data.len() && len <= 4096);
            let _ = (req.query(), req.host(), req.is_websocket_upgrade());
            if let Some(authority) = req.authority() {
                assert!(!authority.is_empty() && !authority.contains('@'));
                assert!(req.path().starts_with('/'), "absolute-form has a path");
            }
            let body = req.body();
            match req.upgrade() {
                Ok(up) => {
                    assert_eq!(body, Ok(http::Body::Empty), "an upgrade never has a body");
                    let protocol = up.protocols().next();
                    for offer in up.extensions().flatten() {
                        for param in offer.params() {
                            let _ = param.expect("offers are validated whole");
                        }
                    }
                    let mut out = vec![];
                    Accept { key: up.accept_key(), protocol, extensions: None, headers: &[] }
                        .write(&mut out)
                        .expect("a chosen offered protocol is a token");
                    let mut h = [http::EMPTY_HEADER; 8];
                    assert!(matches!(Response::parse(&out, &mut h, 4096), Ok(Status::Complete(_))));
                }
                Err(e) => {
                    let mut out = vec![];
                    e.write_response(&mut out);
                    let mut h = [http::EMPTY_HEADER; 8];
                    let Ok(Status::Complete((res, _))) = Response::parse(&out, &mut h, 4096) else {
                        panic!("rejection is not valid HTTP")
                    };
                    assert_eq!(res.status, e.status());
                }
            }
        }
        Ok(Status::Partial) => assert!(data.len() <= 4096),
        Err(_) => {}
    }

    bidir::fuzzing::origin(data);

    let request = ClientRequest {
        host: "h",
        target: "/",
        nonce: [7; 16],
        protocols: &["a", "b"],
        extensions: Some("permessage-deflate; client_max_window_bits"),
        headers: &[],
    };
    let mut headers = [http::EMPTY_HEADER; 32];
    if let Ok(Status::Complete((res, _))) = Response::parse(data, &mut headers, 4096) {
        let _ = res.content_length();
        if let Ok(n) = res.validate(&request) {
            assert!(n.protocol.is_none_or(|p| p == "a" || p == "b"));
        }
    }

    for offer in Extensions::new(data).flatten() {
        assert!(!offer.name.is_empty());
        offer.params().for_each(|p| assert!(p.is_ok()));
    }

    // The server's side: arbitrary offers.
    for config in configs() {
        let Some(params) = deflate::negotiate(Extensions::new(data), &config) else { continue };
        let answer = params.answer();
        let mut answers = Extensions::new(answer.as_bytes());
        let first = answers.next().expect("one extension").expect("a well-formed answer");
        assert_eq!(first.name, deflate::PERMESSAGE_DEFLATE);
        assert!(first.params().all(|p| p.is_ok()));
        assert!(answers.next().is_none());
        for bits in [params.server_max_window_bits, params.client_max_window_bits] {
            assert!(bits.is_none_or(|b| (8..=15).contains(&b)));
        }
        assert!(!config.no_context_takeover || params.server_no_context_takeover);
        assert!(!config.peer_no_context_takeover || params.client_no_context_takeover);
        assert!(params.server_max_window_bits.unwrap_or(15) <= config.window_bits.max(9));
    }
    // The client's side: arbitrary answers.
    if let Ok(answer) = core::str::from_utf8(data) {
        for config in configs() {
            if let Ok(Some(params)) = deflate::accept_answer(answer, &config) {
                assert!(!config.peer_no_context_takeover || params.server_no_context_takeover);
                assert!(!config.no_context_takeover || params.client_no_context_takeover);
                let bits = params.server_max_window_bits.unwrap_or(15);
                assert!(config.peer_window_bits >= 15 || bits <= config.peer_window_bits);
            }
        }
    }

    let mut out = vec![];
    if let Ok(text) = core::str::from_utf8(data) {
        let _ = write_response(&mut out, http::StatusCode(200), &[("X", text)], b"");
    }
});
