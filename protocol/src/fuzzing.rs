//! Hooks for the fuzz targets in `fuzz/` (built with `--cfg fuzzing` only): checks of internal
//! invariants that the public API cannot see.

use crate::{Connection, Deframer, State};

/// Asserts the invariants a [`Connection`] keeps between calls, given its spill buffer.
///
/// # Panics
///
/// When one is broken: that is the bug the fuzzer reports.
pub fn check_connection(conn: &Connection, spill: &[u8]) {
    let max_message = conn.config.max_message_size;
    assert!(spill.len() <= max_message + 125, "spill grew past its bound: {}", spill.len());
    if let Some(m) = conn.recv.message {
        assert!(m.announced <= max_message as u64);
        assert!(m.fragments >= 1 && m.fragments <= conn.config.max_fragments);
    }
    if conn.state == State::Closed {
        assert!(conn.poll_timeout().is_none());
    }
    check_deframer(&conn.deframer);
}

/// Asserts the invariants a [`Deframer`] keeps between calls.
///
/// # Panics
///
/// When one is broken.
pub fn check_deframer(deframer: &Deframer) {
    deframer.check_invariants();
}
