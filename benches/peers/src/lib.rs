//! Shared start-up code for the peer echo servers (benchmark comparison only).

use std::net::SocketAddr;

/// Default port when `--port` is not given.
pub const DEFAULT_PORT: u16 = 9001;

/// Largest message every peer must accept; each peer's own limit is at least this.
pub const MIN_MESSAGE_LIMIT: usize = 16 << 20;

/// Parses `--port N` / `--port=N` (default 9001) and returns `127.0.0.1:N`.
/// Exits with a usage message on anything else.
pub fn listen_addr(name: &str) -> SocketAddr {
    let usage = || -> ! {
        eprintln!("usage: {name} [--port N]   (listens on 127.0.0.1:N, default {DEFAULT_PORT})");
        std::process::exit(2);
    };
    let mut port = DEFAULT_PORT;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--port" | "-p" => args.next().unwrap_or_else(|| usage()),
            "-h" | "--help" => usage(),
            other => match other.strip_prefix("--port=") {
                Some(v) => v.to_owned(),
                None => usage(),
            },
        };
        port = value.parse().unwrap_or_else(|_| usage());
    }
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Raises the soft RLIMIT_NOFILE to the hard limit so 10 000+ connections fit.
/// Returns the soft limit now in force.
pub fn raise_fd_limit() -> libc::rlim_t {
    // SAFETY: getrlimit/setrlimit only read/write the rlimit struct we pass.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur
    }
}

/// Common start-up: fd limit, then the address to bind.
pub fn startup(name: &str) -> SocketAddr {
    let nofile = raise_fd_limit();
    let addr = listen_addr(name);
    eprintln!("{name}: RLIMIT_NOFILE soft limit {nofile}");
    addr
}

/// Printed once the listener is bound; scripts wait for the port instead, but
/// this makes logs readable.
pub fn announce(name: &str, addr: SocketAddr) {
    eprintln!("{name}: listening on ws://{addr}/ (any path)");
}
