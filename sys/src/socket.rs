//! Socket setup: listeners for per-worker `SO_REUSEPORT` groups, accepted-stream options, and
//! the process's file descriptor limit.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};

use socket2::{Domain, Socket, Type};

/// Opens a nonblocking, close-on-exec listener on `addr` with `SO_REUSEADDR` and, when
/// `reuse_port` is set, `SO_REUSEPORT`: each worker opens its own on the same address and the
/// kernel spreads new connections over them, so no accept lock is shared between cores. The
/// per-connection options ([`configure_listener`]) are set before it listens, so every
/// connection it ever accepts has them.
///
/// # Errors
///
/// What `socket(2)`, `setsockopt(2)`, `bind(2)` or `listen(2)` report, e.g. `EADDRINUSE`.
pub fn listener(addr: SocketAddr, backlog: u32, reuse_port: bool) -> io::Result<TcpListener> {
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking().cloexec(), None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

/// Fails with `EADDRINUSE` when a live listener holds `addr` (or an address overlapping it, such
/// as the wildcard on the same port), whatever its `SO_REUSEPORT` setting: binds a socket with
/// `SO_REUSEADDR` but without `SO_REUSEPORT` to `addr` and closes it again without listening.
///
/// `SO_REUSEADDR` makes connections of an earlier server still in `TIME_WAIT` (or still
/// draining after it closed its listeners) no obstacle; only a listening socket is. Linux lets
/// `SO_REUSEPORT` listeners of one user share an address silently, so this is how a server
/// that does not mean to share it finds out that another process already listens there.
/// The answer holds for the moment of the call only: a listener that binds between this probe
/// and the caller's own bind is not seen.
///
/// # Errors
///
/// `EADDRINUSE` as above; otherwise what `socket(2)`, `setsockopt(2)` or `bind(2)` report.
pub fn probe_unused(addr: SocketAddr) -> io::Result<()> {
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking().cloexec(), None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // As the listeners: a dual-stack probe collides with an IPv4 listener on the port too.
        socket.set_only_v6(false).ok();
    }
    socket.bind(&addr.into())
}

/// Stops `listener` listening at once, even while the kernel still holds a reference to it
/// (an io_uring accept in flight): `shutdown(2)` on a listening socket ends the listen and
/// resets the connections waiting in its queue. The descriptor stays open until dropped.
/// Errors are ignored: a listener that cannot be shut down stops when it closes.
pub fn stop_listening(listener: &TcpListener) {
    let _ = socket2::SockRef::from(listener).shutdown(std::net::Shutdown::Read);
}

/// Starts a nonblocking connect to `addr` on a new close-on-exec stream with `TCP_NODELAY`;
/// the connection completes (or fails) later: a backend reports it once the socket is writable.
///
/// # Errors
///
/// What `socket(2)` or `connect(2)` report at once (not `EINPROGRESS`), e.g. `ENETUNREACH`.
pub fn connecting(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking().cloexec(), None)?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

/// Applies the per-connection options to a listener: `TCP_NODELAY` (frames are coalesced by
/// the engine, so Nagle's algorithm would only add latency). Linux copies a listener's
/// `TCP_NODELAY` into each connection it creates from then on, so the streams it accepts need
/// no `setsockopt(2)` each: one system call per handshake saved. A connection that completed
/// its handshake before this call keeps the option it was created with; [`listener`] sets it
/// before listening. The socket backends apply it to every listener they are given (see
/// [`crate::backend`]); the engine need not.
///
/// # Errors
///
/// What `setsockopt(2)` reports.
pub fn configure_listener(listener: &TcpListener) -> io::Result<()> {
    socket2::SockRef::from(listener).set_tcp_nodelay(true)
}

/// Raises the soft limit on open file descriptors to the hard limit; returns the new soft
/// limit. A server holding many connections needs one descriptor per connection.
///
/// # Errors
///
/// What `getrlimit(2)` / `setrlimit(2)` report.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit.
    syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut limit))?;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit.
        syscall!(setrlimit(libc::RLIMIT_NOFILE, &limit))?;
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuse_port_lets_several_listeners_share_an_address() {
        let first = listener("127.0.0.1:0".parse().unwrap(), 128, true).unwrap();
        let addr = first.local_addr().unwrap();
        let second = listener(addr, 128, true).unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);
        // Without SO_REUSEPORT on the newcomer, the address is taken.
        let err = listener(addr, 128, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn a_probe_sees_a_reuse_port_listener_and_nothing_else() {
        let first = listener("127.0.0.1:0".parse().unwrap(), 128, true).unwrap();
        let addr = first.local_addr().unwrap();
        let err = probe_unused(addr).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        // The wildcard on the same port overlaps it.
        let wildcard = SocketAddr::from(([0, 0, 0, 0], addr.port()));
        assert_eq!(probe_unused(wildcard).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        drop(first);
        probe_unused(addr).unwrap();
        // The probe holds nothing once it returns: a listener binds right after it.
        listener(addr, 128, true).unwrap();
    }

    #[test]
    fn a_probe_ignores_connections_left_by_a_closed_listener() {
        let first = listener("127.0.0.1:0".parse().unwrap(), 128, true).unwrap();
        let addr = first.local_addr().unwrap();
        let client = TcpStream::connect(addr).unwrap();
        let accepted = (0..1000)
            .find_map(|_| match first.accept() {
                Ok((stream, _)) => Some(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    None
                }
                Err(e) => panic!("accept: {e}"),
            })
            .expect("accepted within a second");
        drop(first);
        // A server that stopped listening but still drains a connection does not block a
        // successor.
        probe_unused(addr).unwrap();
        drop((client, accepted));
    }

    #[test]
    fn listeners_are_nonblocking() {
        let l = listener("127.0.0.1:0".parse().unwrap(), 16, false).unwrap();
        assert_eq!(l.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn fd_limit_is_at_least_what_it_was() {
        let raised = raise_fd_limit().unwrap();
        assert!(raised >= 1024);
    }

    /// Accepts one connection on `listener` (blocking).
    fn accept_one(listener: &TcpListener) -> TcpStream {
        listener.set_nonblocking(false).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        listener.accept().unwrap().0
    }

    #[test]
    fn accepted_streams_inherit_the_listeners_options() {
        let plain = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(!accept_one(&plain).nodelay().unwrap(), "off unless the listener has it");
        configure_listener(&plain).unwrap();
        assert!(accept_one(&plain).nodelay().unwrap(), "configure_listener");
        let ours = listener("127.0.0.1:0".parse().unwrap(), 16, false).unwrap();
        assert!(accept_one(&ours).nodelay().unwrap(), "listener() configures before listening");
    }
}
