//! The client's side of the opening handshake: the server's answer (101 or a refusal with a
//! body), read in two cuts, then the frames that follow a 101, for every combination of
//! offered subprotocols and permessage-deflate profiles.
//!
//! Never panics; the outcome does not depend on the cut; a refusal's body stays bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [flags, cut, answer @ ..] = data else { return };
    bidir::fuzzing::client_handshake(*flags, *cut, answer);
});
