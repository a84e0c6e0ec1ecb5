//! Raw mode (`--raw`): echoes over plain TCP, with no handshake and no framing, against a raw
//! echo server (benches/peers `floor-echo`: the floor under a WebSocket server on this
//! machine). Each message is `--size` bytes, its first 8 the send time (little-endian
//! nanoseconds since the run's epoch); the reader takes the echoed bytes back in order, one
//! message per `--size` bytes, and checks each stamp against the oldest message in flight on
//! its connection. The closed loop (`--inflight` per connection), the measured window, the
//! percentiles and the server's CPU per message are echo mode's ([`Phases`]).
//!
//! The connections are spread over `--threads` threads, each with a mio poll of its own (the
//! generator is not the engine here: there is no WebSocket to speak).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::args::Options;
use crate::run::{self, Phases, RunResult, Tally};

/// How long a poll waits at most: the stop and quit flags are checked this often.
const POLL_TICK: Duration = Duration::from_millis(5);
/// How long opening the connections may take.
const CONNECT_LIMIT: Duration = Duration::from_secs(60);

/// State the threads and the main thread share.
struct Shared {
    phases: Phases,
    size: usize,
    inflight: usize,
    opened: AtomicU64,
    failed: AtomicU64,
    /// Connections that ended before the run stopped them.
    dropped: AtomicU64,
    /// The threads return (set after the last echoes had time to arrive).
    quit: AtomicBool,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn note_error(&self, e: String) {
        run::lock(&self.first_error).get_or_insert(e);
    }
}

/// One connection: what is still to be written, and where the reader is in the echoes.
struct Conn {
    io: TcpStream,
    /// Bytes queued for writing; `written` of them went out.
    out: Vec<u8>,
    written: usize,
    /// Waiting for writability (registered for it).
    blocked: bool,
    /// The stamps of the messages in flight, oldest first: the order echoes come back in.
    in_flight: VecDeque<u64>,
    /// Bytes of the current echo read so far, and its first 8 (the stamp).
    got: usize,
    head: [u8; 8],
    /// The last stamp sent: stamps are unique and increasing per connection.
    last: u64,
    closed: bool,
}

impl Conn {
    /// Queues one message stamped now (later than the last one); [`Conn::flush`] writes it.
    fn queue(&mut self, shared: &Shared) {
        let stamp = shared.phases.now().max(self.last + 1);
        self.last = stamp;
        self.in_flight.push_back(stamp);
        self.out.extend_from_slice(&stamp.to_le_bytes());
        self.out.resize(self.out.len() + shared.size - 8, b'x');
    }

    /// Writes what is queued until the socket takes no more; registers for writability then.
    fn flush(&mut self, poll: &Poll, token: Token) -> io::Result<()> {
        while self.written < self.out.len() {
            match self.io.write(&self.out[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let blocked = self.written < self.out.len();
        if !blocked {
            self.out.clear();
            self.written = 0;
        }
        if blocked != self.blocked {
            self.blocked = blocked;
            let interest = match blocked {
                true => Interest::READABLE | Interest::WRITABLE,
                false => Interest::READABLE,
            };
            poll.registry().reregister(&mut self.io, token, interest)?;
        }
        Ok(())
    }

    /// Reads what arrived; for each whole echo, records it in `tally` and returns how many
    /// messages to send in answer (none once the run stops). Marks the connection closed at
    /// the end of the stream.
    fn read(&mut self, shared: &Shared, buf: &mut [u8], tally: &mut Tally) -> io::Result<usize> {
        let mut answers = 0;
        loop {
            let n = match self.io.read(buf) {
                Ok(0) => {
                    self.closed = true;
                    return Ok(answers);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(answers),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let mut bytes = &buf[..n];
            while !bytes.is_empty() {
                if self.got < 8 {
                    let take = (8 - self.got).min(bytes.len());
                    self.head[self.got..self.got + take].copy_from_slice(&bytes[..take]);
                }
                let take = (shared.size - self.got).min(bytes.len());
                self.got += take;
                bytes = &bytes[take..];
                if self.got == shared.size {
                    self.got = 0;
                    answers += usize::from(self.echoed(shared, tally));
                }
            }
        }
    }

    /// A whole echo came back: times it against its stamp (the oldest in flight) when it is
    /// that stamp, else counts it bad. Whether to send another.
    fn echoed(&mut self, shared: &Shared, tally: &mut Tally) -> bool {
        let stamp = u64::from_le_bytes(self.head);
        if self.in_flight.pop_front() != Some(stamp) {
            tally.bad += 1;
            return false;
        }
        let now = shared.phases.now();
        tally.received += 1;
        if shared.phases.window().contains(&now) {
            tally.received_in_window += 1;
            tally.latency.saturating_record(now.saturating_sub(stamp).max(1));
        }
        !shared.phases.is_stopped()
    }
}

/// The server's address from `--url`: `tcp://HOST:PORT` or `ws://HOST:PORT/...` (the path,
/// if any, is ignored).
fn address(url: &str) -> Result<SocketAddr, String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host = rest.split('/').next().unwrap_or(rest);
    host.to_socket_addrs()
        .map_err(|e| format!("--url {url}: {e}"))?
        .next()
        .ok_or_else(|| format!("--url {url}: no address"))
}

/// Opens a connection with TCP_NODELAY, non-blocking.
fn open(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = StdStream::connect_timeout(&addr, Duration::from_secs(10))?;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    Ok(TcpStream::from_std(stream))
}

/// One thread's connections: opens them, waits for the go, keeps `--inflight` messages in
/// flight on each until the run stops, and returns once told to quit. As the engine's client
/// does, the answers to what one poll returned are queued and written at the end of the
/// turn, one write per connection.
fn thread(shared: &Shared, addr: SocketAddr, count: usize) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(count);
    for i in 0..count {
        match open(addr) {
            Ok(mut io) => {
                poll.registry().register(&mut io, Token(i), Interest::READABLE)?;
                conns.push(Conn {
                    io,
                    out: Vec::new(),
                    written: 0,
                    blocked: false,
                    in_flight: VecDeque::with_capacity(shared.inflight),
                    got: 0,
                    head: [0; 8],
                    last: 0,
                    closed: false,
                });
                shared.opened.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                shared.note_error(format!("connect {addr}: {e}"));
            }
        }
    }
    while !shared.phases.is_going() {
        if shared.quit.load(Ordering::Relaxed) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    for (i, conn) in conns.iter_mut().enumerate() {
        for _ in 0..shared.inflight {
            conn.queue(shared);
        }
        conn.flush(&poll, Token(i))?;
    }
    let tally = run::tally(&shared.phases.tallies);
    run::lock(&tally).sent += (conns.len() * shared.inflight) as u64;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0; 64 << 10];
    let mut dirty = Vec::new();
    while !shared.quit.load(Ordering::Relaxed) {
        poll.poll(&mut events, Some(POLL_TICK))?;
        let mut tally = run::lock(&tally);
        for event in &events {
            let token = event.token();
            let conn = &mut conns[token.0];
            if conn.closed {
                continue;
            }
            if event.is_writable() {
                conn.flush(&poll, token)?;
            }
            if !event.is_readable() {
                continue;
            }
            let answers = conn.read(shared, &mut buf, &mut tally)?;
            if answers > 0 && !conn.blocked && conn.out.is_empty() {
                dirty.push(token);
            }
            for _ in 0..answers {
                conn.queue(shared);
            }
            tally.sent += answers as u64;
            if conn.closed && !shared.phases.is_stopped() {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                shared.note_error("the server closed a connection early".into());
            }
        }
        drop(tally);
        for token in dirty.drain(..) {
            conns[token.0].flush(&poll, token)?;
        }
    }
    Ok(())
}

pub(crate) fn run(o: &Options) -> Result<RunResult, String> {
    let addr = address(&o.url)?;
    let shared = Arc::new(Shared {
        phases: Phases::new(),
        size: o.size,
        inflight: o.inflight,
        opened: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        quit: AtomicBool::new(false),
        first_error: Mutex::new(None),
    });
    let start = Instant::now();
    let threads: Vec<_> = (0..o.threads)
        .map(|t| {
            // Connection i goes to thread i % threads.
            let count = o.conns / o.threads + usize::from(t < o.conns % o.threads);
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                if let Err(e) = thread(&shared, addr, count) {
                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                    shared.note_error(format!("raw connection: {e}"));
                }
            })
        })
        .collect();
    let settled = || shared.opened.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed);
    while settled() < o.conns as u64 && start.elapsed() < CONNECT_LIMIT {
        std::thread::sleep(Duration::from_millis(1));
    }
    let connect_time = start.elapsed();
    let failed = shared.failed.load(Ordering::Relaxed);
    let result = if settled() < o.conns as u64 {
        Err("connections do not open (timed out)".to_owned())
    } else if failed > 0 {
        let error = run::lock(&shared.first_error).clone().unwrap_or_default();
        Err(format!("{failed} connections failed: {error}"))
    } else {
        if !o.quiet {
            eprintln!("connected: {} open in {:.2} s", o.conns, connect_time.as_secs_f64());
        }
        let measured = shared.phases.measure(o);
        // Let the last echoes arrive before the threads close their connections.
        std::thread::sleep(Duration::from_millis(200));
        Ok(measured)
    };
    shared.quit.store(true, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    let measured = result?;
    let (latency, lag, bad) = shared.phases.merged()?;
    Ok(RunResult {
        latency,
        lag,
        messages: shared.phases.tallied(|t| t.received_in_window),
        events: 0,
        missed: 0,
        window: measured.window,
        opened: shared.opened.load(Ordering::Relaxed),
        failed,
        errors: shared.dropped.load(Ordering::Relaxed) + bad,
        first_error: run::lock(&shared.first_error).clone(),
        connect_time,
        server_cpu_ns: measured.server_cpu_ns,
        server_kernel_share: measured.server_kernel_share,
        own_cpu_ns: measured.own_cpu_ns,
        server_rss_per_conn: None,
        own_rss_per_conn: None,
        cycles: 0,
        server_usage: None,
        handshake: None,
        wire_in_ratio: None,
    })
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn addresses_from_either_scheme() {
        let addr: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        assert_eq!(address("tcp://127.0.0.1:9001").unwrap(), addr);
        assert_eq!(address("ws://127.0.0.1:9001/echo").unwrap(), addr);
        assert_eq!(address("127.0.0.1:9001").unwrap(), addr);
        assert!(address("tcp://127.0.0.1").is_err(), "no port");
    }

    /// A plain echo server on 127.0.0.1 port 0 that echoes the first `corrupt` bytes of each
    /// connection wrong (flipped), for `--raw` runs against it.
    fn echo_server(corrupt: usize) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 4096];
                    let mut seen = 0;
                    while let Ok(n @ 1..) = stream.read(&mut buf) {
                        for b in buf[..n].iter_mut().take(corrupt.saturating_sub(seen)) {
                            *b = !*b;
                        }
                        seen += n;
                        if stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn options(addr: SocketAddr, extra: &str) -> Options {
        let args = format!(
            "--url tcp://{addr} --raw --conns 3 --inflight 4 --size 100 --duration 0.3 --warmup 0.1 --quiet {extra}"
        );
        crate::args::parse(&args.split_whitespace().map(str::to_owned).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn echoes_are_timed_in_order() {
        let r = run(&options(echo_server(0), "--threads 2")).unwrap();
        assert_eq!((r.opened, r.failed, r.errors), (3, 0, 0), "{:?}", r.first_error);
        assert!(r.messages > 0, "echoes in the window");
        assert_eq!(r.latency.len(), r.messages, "each echo in the window timed");
        assert!(r.latency.max() < 10_000_000_000, "latency in nanoseconds, not absurd");
    }

    #[test]
    fn a_wrong_echo_is_counted() {
        let r = run(&options(echo_server(1), "")).unwrap();
        assert!(r.errors >= 3, "each connection's first echo is wrong: {} errors", r.errors);
    }

    #[test]
    fn a_refused_connection_fails_the_run() {
        let addr = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let e = run(&options(addr, "")).unwrap_err();
        assert!(e.contains("connections failed"), "{e}");
    }
}
