//! Hooks for the fuzz targets in `fuzz/` (built with `--cfg fuzzing` only): checks of internal
//! invariants that the public API cannot see.

use crate::{Connection, Deframer};

/// Asserts the invariants a [`Connection`] keeps between calls, given its spill buffer.
///
/// # Panics
///
/// When one is broken: that is the bug the fuzzer reports.
pub fn check_connection(conn: &Connection, spill: &[u8]) {
    conn.check_invariants(spill);
}

/// Asserts the invariants a [`Deframer`] keeps between calls.
///
/// # Panics
///
/// When one is broken.
pub fn check_deframer(deframer: &Deframer) {
    deframer.check_invariants();
}
