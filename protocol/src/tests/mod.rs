//! Whole-protocol tests: a client and a server joined in memory.

mod pair;
