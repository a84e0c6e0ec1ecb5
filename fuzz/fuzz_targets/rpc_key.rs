//! The `Bidir-Key` exchange of `bidir.bin.v1` (`rpc::key`) with a fixed pre-shared key: the
//! first byte picks the client's mode and the rest is, at once, a request's value for the
//! server and a response's value for the client.
//!
//! - Neither side panics on any value; every refusal has the documented status (400 for a
//!   malformed value or an unknown mode, 403 for a wrong key).
//! - A value the server accepts gets an answer in the same mode.
//! - A client finishes only with the keys the server made for its offer (the real answer,
//!   give or take the grammar's leniency, checked once); anything else is refused.
#![no_main]

use std::sync::OnceLock;

use bidir_protocol::rpc::key::{
    KeyError, KeyExchange, KeyMode, Psk, SessionKeys, accept_with_seed,
};
use libfuzzer_sys::fuzz_target;

const SEED_C: [u8; 32] = [0xc1; 32];
const SEED_S: [u8; 32] = [0x5e; 32];

fn psk() -> &'static Psk {
    static PSK: OnceLock<Psk> = OnceLock::new();
    PSK.get_or_init(|| Psk::new(&[0x42; 32]).expect("32 bytes"))
}

/// The server's keys for the client's offer in each mode, once: the real answer finishes the
/// client with the same keys.
fn server_keys(mode: KeyMode) -> &'static SessionKeys {
    static KEYS: OnceLock<[SessionKeys; 2]> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        [KeyMode::Psk, KeyMode::Ecdhe].map(|mode| {
            let client = KeyExchange::with_seed(mode, psk(), SEED_C);
            let offer = client.offer();
            let (real, keys) =
                accept_with_seed(psk(), Some(offer.as_bytes()), SEED_S).expect("ours");
            assert_eq!(client.finish(real.as_bytes()), Ok(keys.clone()));
            keys
        })
    });
    &keys[usize::from(mode == KeyMode::Ecdhe)]
}

fuzz_target!(|data: &[u8]| {
    let (mode, value) = match data.split_first() {
        Some((byte, rest)) if byte & 1 == 1 => (KeyMode::Ecdhe, rest),
        Some((_, rest)) => (KeyMode::Psk, rest),
        None => (KeyMode::Psk, data),
    };

    match accept_with_seed(psk(), Some(value), SEED_S) {
        Ok((answer, _)) => assert_eq!(KeyMode::of(value), KeyMode::of(answer.as_bytes())),
        Err(e) => assert_refusal(e),
    }

    match KeyExchange::with_seed(mode, psk(), SEED_C).finish(value) {
        // Only the real answer, give or take the grammar's leniency, authenticates.
        Ok(keys) => {
            assert_eq!(&keys, server_keys(mode));
            assert_eq!(KeyMode::of(value), Ok(mode));
        }
        Err(e) => assert_refusal(e),
    }
});

fn assert_refusal(e: KeyError) {
    match e {
        KeyError::WrongKey => assert_eq!(e.status(), 403),
        KeyError::Mode | KeyError::Malformed(_) => assert_eq!(e.status(), 400),
        other => panic!("unexpected refusal {other:?}"),
    }
    assert!(e.to_string().len() <= 123, "{e}");
}
