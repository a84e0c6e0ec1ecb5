//! Whole-protocol tests: a client and a server joined in memory, and property tests.

mod deflate;
mod keepalive;
mod pair;
mod props;
