//! The OS layer of bidir: event backends, sockets, cpu enumeration and pinning.
//!
//! Everything here is a thin, documented wrapper over Linux system calls that returns plain
//! [`std::io::Result`]s; errno becomes [`std::io::Error`] through one `syscall!` macro. The
//! crate knows nothing of WebSocket: the protocol lives in `bidir-protocol`, and the engine
//! (`bidir`) joins the two.
//!
//! - [`backend`]: the contract every I/O backend meets (completion semantics, so readiness
//!   and completion backends look the same to the engine);
//! - [`epoll`]: the epoll backend, over mio;
//! - [`uring`]: the io_uring backend (multishot accept and receive, provided buffers);
//! - [`mem`]: an in-memory backend with virtual time, which a test drives as the peers, for
//!   deterministic tests and fuzzing of the engine without sockets;
//! - [`socket`]: listeners for `SO_REUSEPORT` groups, stream options, descriptor limits;
//! - [`cpu`]: enumeration and pinning of the CPUs the process may use;
//! - [`signal`]: waiting for `SIGINT`/`SIGTERM` synchronously, for graceful shutdown.
//!
//! # Unsafe code
//!
//! This crate calls libc, so `unsafe` is allowed; every block carries a `// SAFETY:` comment
//! (clippy's `undocumented_unsafe_blocks` is denied workspace-wide).

/// Calls a libc function and turns a `-1` return into [`std::io::Error::last_os_error`].
///
/// The call is unsafe: every use carries its own `// SAFETY:` comment on the arguments.
macro_rules! syscall {
    ($fn: ident ( $($arg: expr),* $(,)? ) ) => {{
        // SAFETY: argued at each use of the macro.
        let res = unsafe { libc::$fn($($arg, )*) };
        if res == -1 { Err(std::io::Error::last_os_error()) } else { Ok(res) }
    }};
}

pub mod backend;
pub mod cpu;
pub mod epoll;
pub mod mem;
pub mod signal;
pub mod socket;
pub mod uring;

pub use backend::{Backend, Completion, SyscallCounts, Token, Waker};
pub use epoll::Epoll;
pub use uring::{IoUring, UringConfig};
