//! The `bidir.bin.v1` envelope's receiving side (`rpc::envelope::Inbound`), then the message
//! decoder on what it returns (docs/rpc.md, "bidir.bin.v1 envelope").
//!
//! The first input byte picks the connection: bit 0 clear, one without a key, fed the rest of
//! the input as a received message; bit 0 set, one with a known key, where the rest is the
//! flags byte and the plaintext body, which the target seals with the peer's key when the
//! flags say ENCRYPTED (the fuzzer cannot forge a tag, so this is how it reaches the
//! decompression behind the decryption); bit 1 then flips a bit of the sealed message.
//!
//! - Opening never panics; every failure is 1007, 1008 or 1009 with a reason that fits a
//!   close frame; a message refused by the key is 1008; a tampered one never opens.
//! - What opens is at most the message limit, and decodes (or fails) as `rpc_bin` asserts.
//! - What opens packs and opens again to the same bytes, compressed or not, sealed or not.
#![no_main]

use bidir_protocol::rpc::bin::decode;
use bidir_protocol::rpc::envelope::{self, COMPRESSED, ENCRYPTED, Inbound};
use bidir_protocol::rpc::seal::{Opener, Sealer};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [0x42; 32];
const LIMIT: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let keyed = mode & 1 != 0;
    let mut wire = rest.to_vec();
    let mut tampered = false;
    if keyed && wire.first().is_some_and(|f| f & ENCRYPTED != 0) {
        Sealer::new(&KEY).seal_in_place_from(&[wire[0]], &mut wire, 1).unwrap();
        if mode & 2 != 0 {
            let at = usize::from(mode >> 2) % wire.len();
            wire[at] ^= 1 << (mode as usize % 7);
            tampered = true;
        }
    }
    // Known flags the key refuses: without ENCRYPTED, or sealed and then altered.
    let refused = keyed
        && wire.first().is_some_and(|f| {
            f & !(COMPRESSED | ENCRYPTED) == 0 && (f & ENCRYPTED == 0 || tampered)
        });
    let mut inbound = Inbound::new(keyed.then(|| Opener::new(&KEY)), LIMIT);
    let plain = match inbound.open(&mut wire) {
        Ok(plain) => plain.to_vec(),
        Err(e) => {
            let code = e.close_code().0;
            assert!(matches!(code, 1007..=1009), "{e}");
            assert!(e.reason().len() <= 123, "{e}");
            assert!(!refused || code == 1008, "{e}");
            return;
        }
    };
    assert!(!tampered, "a tampered message opened");
    assert!(plain.len() <= LIMIT);
    assert_eq!(inbound.opened(), u64::from(keyed));
    let _ = decode(&plain, |_| {});

    let mut msg = Vec::with_capacity(plain.len() + 1);
    msg.push(0);
    msg.extend_from_slice(&plain);
    envelope::pack(&mut msg, Some(usize::from(mode)), &mut Vec::new());
    if keyed {
        envelope::seal(&mut Sealer::new(&KEY), &mut msg).unwrap();
    }
    let mut again = Inbound::new(keyed.then(|| Opener::new(&KEY)), LIMIT);
    assert_eq!(again.open(&mut msg).unwrap(), plain);
});
