//! The `bidir.bin.v1` message decoder (docs/rpc.md).
//!
//! - Decoding never panics; every failure is one of the documented outcomes (a frame error
//!   with 1007 or 1009 and a reason that fits a close frame, or a message error whose reason
//!   fits one), and no batch hands over more than `MAX_BATCH` messages.
//! - Every message that decodes encodes to bytes that decode to the same message, and that
//!   encoding is stable (encoding it again gives the same bytes).
#![no_main]

use bidir_protocol::CloseCode;
use bidir_protocol::rpc::bin::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut read = 0;
    let outcome = decode(data, |msg| {
        read += 1;
        let msg = match msg {
            Ok(msg) => msg,
            Err(e) => {
                assert!(e.reason.len() <= 123, "{e}");
                return;
            }
        };
        let mut once = Vec::new();
        encode(&msg, &mut once);
        let mut back = Vec::new();
        decode(&once, |m| back.push(m.expect("an encoded message decodes"))).expect("and is one");
        assert_eq!(back, [msg], "{once:02x?}");
        let mut again = Vec::new();
        encode(&back[0], &mut again);
        assert_eq!(once, again);
    });
    if let Err(e) = outcome {
        assert!(matches!(e.close_code(), CloseCode::INVALID_PAYLOAD | CloseCode::MESSAGE_TOO_BIG));
        assert!(e.reason().len() <= 123, "{e}");
    }
    assert!(read <= bidir_protocol::rpc::MAX_BATCH);
});
