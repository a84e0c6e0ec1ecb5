//! The server: a builder for routes and configuration, worker threads, and a handle to the
//! running server.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
#[cfg(feature = "redis")]
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, mpsc};
use std::time::{Duration, Instant};

use bidir_protocol::Message;
use bidir_sys::signal::Signals;
use bidir_sys::uring::UringWaker;
use bidir_sys::{Backend, Epoll, IoUring};

use crate::Handler;
use crate::client::engine::PendingConnect;
use crate::client::{Connect, ConnectError};
use crate::config::{BackendChoice, BackendInfo, ServerConfig};
use crate::cx::{Clock, Shared};
use crate::handler;
use crate::mailbox::{Command, Mailbox};
use crate::metrics::Stats;
#[cfg(feature = "redis")]
use crate::nodes::Local;
use crate::origin::OriginPolicy;
use crate::route::{self, HttpHook, HttpResponse, IntoAccept, Request, Router};
use crate::worker::Worker;

/// The entry point: `Server::builder()`.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// A builder with no address, no routes and the default configuration.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            addrs: Vec::new(),
            config: ServerConfig::default(),
            router: Router::default(),
            error: None,
            histories: crate::history::Histories::default(),
            #[cfg(feature = "redis")]
            redis: None,
        }
    }
}

/// Configures and starts a [`Server`].
///
/// ```no_run
/// use bidir::{Context, Handler, Message, Request, Server};
///
/// struct Echo;
/// impl Handler for Echo {
///     fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
///         let _ = cx.send(msg);
///     }
/// }
///
/// Server::builder()
///     .bind("127.0.0.1:9001")
///     .route("/echo", |_req: &Request<'_>| Ok(Echo))
///     .run()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct ServerBuilder {
    addrs: Vec<SocketAddr>,
    config: ServerConfig,
    router: Router,
    error: Option<io::Error>,
    histories: crate::history::Histories,
    #[cfg(feature = "redis")]
    redis: Option<crate::nodes::Redis>,
}

impl ServerBuilder {
    /// Listens on `addr` (every address it resolves to). May be called more than once.
    #[must_use]
    pub fn bind(self, addr: impl ToSocketAddrs) -> Self {
        self.listen(addr, None)
    }

    /// Listens with TLS on `addr` (every address it resolves to): `wss://` and `https://`,
    /// next to any plain listeners. The TLS handshake runs on the worker that accepted the
    /// connection and counts against [`ServerConfig::handshake_timeout`]; bytes that are not
    /// a TLS handshake (plain HTTP) get a plain-text 400 and the connection closes. Routes are
    /// the same on every listener. May be called more than once.
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn bind_tls(self, addr: impl ToSocketAddrs, tls: crate::tls::ServerTls) -> Self {
        self.listen(addr, Some(tls))
    }

    fn listen(mut self, addr: impl ToSocketAddrs, tls: Option<crate::tls::ServerTls>) -> Self {
        match addr.to_socket_addrs() {
            Ok(addrs) => {
                let before = self.addrs.len();
                self.addrs.extend(addrs);
                self.router.add_listeners(self.addrs.len() - before, tls.as_ref());
            }
            Err(e) => self.error = Some(e),
        }
        self
    }

    /// Joins the other nodes sharing `redis`: publishes on this node ([`Context::publish`],
    /// [`ServerHandle::publish`], rpc events) also reach their subscribers on every other
    /// node, once, and theirs reach this node's. The bridge runs on two threads of its own
    /// and reconnects by itself; delivery between nodes is at most once, with what may have
    /// been missed counted in [`ServerHandle::nodes`], except for topics with a history
    /// ([`ServerBuilder::history`]), kept in Redis and recovered (docs/nodes.md). Off unless
    /// given.
    ///
    /// [`Context::publish`]: crate::Context::publish
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn redis(mut self, redis: crate::nodes::Redis) -> Self {
        self.redis = Some(redis);
        self
    }

    /// Keeps a history of the rpc topics starting with `prefix` (every topic: `""`): their
    /// events are numbered, the last ones kept within `history`'s bounds, and a client that
    /// subscribes again with the position of the last event it got is sent what it missed, or
    /// told that it cannot be (docs/rpc.md, "History and recovery"; the Rust client and the
    /// browser module do it on reconnection by themselves). The longest matching prefix
    /// decides. Events of such topics are handed to every worker through its mailbox, in
    /// their order, even from a handler on the same worker. On a server of its own the
    /// history is in memory; joined to other nodes ([`ServerBuilder::redis`]) it is Redis's,
    /// one for every node: Redis numbers the events, every node delivers them from Redis (its
    /// own too), and a client recovers on any node (docs/nodes.md, "History and recovery
    /// across nodes").
    #[must_use]
    pub fn history(mut self, prefix: &str, history: crate::rpc::History) -> Self {
        self.histories.add(prefix, history);
        self
    }

    /// Replaces the configuration.
    #[must_use]
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the number of worker threads (default: one per CPU the process may use).
    #[must_use]
    pub fn workers(mut self, workers: usize) -> Self {
        self.config.workers = Some(workers.max(1));
        self
    }

    /// A WebSocket route on any host. `hook` sees each upgrade request and answers with a
    /// handler (optionally wrapped in [`Accept`](crate::Accept) to choose a subprotocol or add
    /// headers) or an [`HttpResponse`] that refuses it (401, 403, …). It runs on the worker thread that accepted the connection and
    /// must not block. A plain HTTP request to this path gets 426 unless an HTTP route shares it.
    /// Before the hook runs, the request must pass the route's Origin policy
    /// ([`ServerConfig::origins`] unless [`ServerBuilder::origins`] sets one): by default a
    /// page on another host gets 403.
    #[must_use]
    pub fn route<F, A>(self, path: &str, hook: F) -> Self
    where
        F: Fn(&Request<'_>) -> Result<A, HttpResponse> + Send + Sync + 'static,
        A: IntoAccept,
    {
        self.route_on(None, Some(path), hook)
    }

    /// A WebSocket route for one `Host` (matched case-insensitively, port ignored). Hosts
    /// without a matching route fall back to the routes of [`ServerBuilder::route`].
    #[must_use]
    pub fn host_route<F, A>(self, host: &str, path: &str, hook: F) -> Self
    where
        F: Fn(&Request<'_>) -> Result<A, HttpResponse> + Send + Sync + 'static,
        A: IntoAccept,
    {
        self.route_on(Some(host), Some(path), hook)
    }

    /// The WebSocket route for paths no other route matches.
    #[must_use]
    pub fn default_route<F, A>(self, hook: F) -> Self
    where
        F: Fn(&Request<'_>) -> Result<A, HttpResponse> + Send + Sync + 'static,
        A: IntoAccept,
    {
        self.route_on(None, None, hook)
    }

    fn route_on<F, A>(mut self, host: Option<&str>, path: Option<&str>, hook: F) -> Self
    where
        F: Fn(&Request<'_>) -> Result<A, HttpResponse> + Send + Sync + 'static,
        A: IntoAccept,
    {
        self.router.add_ws(host, path, route::erase(hook));
        self
    }

    /// Sets the Origin policy of the WebSocket route on `path` (any host), instead of
    /// [`ServerConfig::origins`]. Checked after the request is validated and before the accept
    /// hook; a refused request gets 403. May come before or after the route itself.
    ///
    /// ```no_run
    /// use bidir::{Context, Handler, Message, OriginPolicy, Request, Server};
    ///
    /// struct Echo;
    /// impl Handler for Echo {
    ///     fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
    ///         let _ = cx.send(msg);
    ///     }
    /// }
    ///
    /// Server::builder()
    ///     .bind("127.0.0.1:9001")
    ///     .route("/public", |_req: &Request<'_>| Ok(Echo))
    ///     .origins("/public", OriginPolicy::any()) // pages anywhere may use it
    ///     .route("/app", |_req: &Request<'_>| Ok(Echo)) // same host only (the default)
    ///     .route("/admin", |_req: &Request<'_>| Ok(Echo))
    ///     .origins("/admin", OriginPolicy::listed().allow("https://admin.example.com"))
    ///     .run()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn origins(mut self, path: &str, policy: OriginPolicy) -> Self {
        self.router.set_origins(None, Some(path), policy);
        self
    }

    /// Sets the Origin policy of the WebSocket route on `path` for `host`
    /// ([`ServerBuilder::host_route`]).
    #[must_use]
    pub fn host_origins(mut self, host: &str, path: &str, policy: OriginPolicy) -> Self {
        self.router.set_origins(Some(host), Some(path), policy);
        self
    }

    /// Sets the Origin policy of the default WebSocket route
    /// ([`ServerBuilder::default_route`]).
    #[must_use]
    pub fn default_origins(mut self, policy: OriginPolicy) -> Self {
        self.router.set_origins(None, None, policy);
        self
    }

    /// A plain HTTP route (a health check, a static page) on any host: `respond` answers GET
    /// and other requests to `path` that are not WebSocket upgrades. It runs on the worker
    /// thread that accepted the connection and must not block. The connection closes after
    /// the answer.
    #[must_use]
    pub fn http<F>(self, path: &str, respond: F) -> Self
    where
        F: Fn(&Request<'_>) -> HttpResponse + Send + Sync + 'static,
    {
        self.http_on(None, Some(path), respond)
    }

    /// A plain HTTP route for one `Host` (matched case-insensitively, port ignored), as
    /// [`ServerBuilder::http`]. Requests for other hosts, or for paths this host has no route
    /// for, fall back to the routes of any host.
    #[must_use]
    pub fn host_http<F>(self, host: &str, path: &str, respond: F) -> Self
    where
        F: Fn(&Request<'_>) -> HttpResponse + Send + Sync + 'static,
    {
        self.http_on(Some(host), Some(path), respond)
    }

    /// The plain HTTP answer for requests that are not upgrades and that no other route
    /// matches, on any host: a custom 404 page, a redirect, a single-page application's
    /// index. Without it they get an empty 404. A path with only a WebSocket route still
    /// answers such requests with 426 (Upgrade Required).
    #[must_use]
    pub fn default_http<F>(self, respond: F) -> Self
    where
        F: Fn(&Request<'_>) -> HttpResponse + Send + Sync + 'static,
    {
        self.http_on(None, None, respond)
    }

    /// [`ServerBuilder::default_http`] for one `Host`: its requests that match none of its
    /// routes are answered here before the routes of any host are tried.
    #[must_use]
    pub fn host_default_http<F>(self, host: &str, respond: F) -> Self
    where
        F: Fn(&Request<'_>) -> HttpResponse + Send + Sync + 'static,
    {
        self.http_on(Some(host), None, respond)
    }

    /// The WebSocket route for one `Host`'s paths that match none of its routes
    /// ([`ServerBuilder::default_route`] for a host). An upgrade it does not take (another
    /// host) falls back to the routes of any host.
    #[must_use]
    pub fn host_default_route<F, A>(self, host: &str, hook: F) -> Self
    where
        F: Fn(&Request<'_>) -> Result<A, HttpResponse> + Send + Sync + 'static,
        A: IntoAccept,
    {
        self.route_on(Some(host), None, hook)
    }

    /// Sets the Origin policy of one host's default WebSocket route
    /// ([`ServerBuilder::host_default_route`]).
    #[must_use]
    pub fn host_default_origins(mut self, host: &str, policy: OriginPolicy) -> Self {
        self.router.set_origins(Some(host), None, policy);
        self
    }

    fn http_on<F>(mut self, host: Option<&str>, path: Option<&str>, respond: F) -> Self
    where
        F: Fn(&Request<'_>) -> HttpResponse + Send + Sync + 'static,
    {
        let hook: HttpHook = Arc::new(respond);
        self.router.add_http(host, path, hook);
        self
    }

    /// Starts the workers and blocks until `SIGINT` (Ctrl-C) or `SIGTERM`, then shuts down
    /// gracefully — close 1001 to every connection, drain, stop by the deadline — and returns
    /// `Ok(())`: the grace is [`ServerConfig::shutdown_on_signal`] (default 10 s). With that
    /// set to `None`, blocks until the workers stop and leaves the signals alone. To stop the
    /// server otherwise, use [`ServerBuilder::start`] and its [`ServerHandle`].
    ///
    /// The signals are blocked in the calling thread (and so in the workers it spawns) and
    /// taken with `sigwait(2)`; the thread's mask is restored before `run` returns. A thread
    /// the process started before `run` that does not block them may still receive one and
    /// die of it the usual way: call `run` from `main` before starting other threads, or
    /// block the signals in them ([`Signals::block`](crate::Signals::block)).
    ///
    /// # Errors
    ///
    /// As [`ServerBuilder::start`], or what blocking or waiting for the signals reports (the
    /// server is then shut down as for a signal).
    pub fn run(self) -> io::Result<()> {
        let Some(grace) = self.config.shutdown_on_signal else {
            self.start()?.join();
            return Ok(());
        };
        // Blocked before the workers start, so that they inherit the mask and the signal
        // reaches the wait below.
        let signals = Signals::block()?;
        let served = self.start().and_then(|server| {
            let signal = signals.wait();
            server.shutdown(grace);
            signal.map(drop)
        });
        let restored = signals.restore();
        served.and(restored)
    }

    /// Starts the workers and returns a handle to the running server.
    ///
    /// # Errors
    ///
    /// An address but no route, an address that cannot be bound, or a thread that cannot be
    /// spawned. An address another process listens on fails with
    /// [`io::ErrorKind::AddrInUse`] and a message naming it, unless
    /// [`ServerConfig::share_port`] is set. (No address is not an error: the workers then only run client connections,
    /// [`ServerHandle::connect`].)
    pub fn start(self) -> io::Result<ServerHandle> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if !self.addrs.is_empty() && self.router.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no route"));
        }
        let _ = bidir_sys::socket::raise_fd_limit();
        let cpus = bidir_sys::cpu::allowed().unwrap_or_default();
        let workers = self.config.workers.unwrap_or(cpus.len()).max(1);

        let (listeners, bound) = bind_all(&self.addrs, workers, &self.config)?;

        let read_buf = self.config.read_buffer_size;
        let (use_uring, fallback) = match self.config.backend {
            BackendChoice::Epoll => (false, None),
            BackendChoice::IoUring => {
                bidir_sys::uring::probe()?;
                (true, None)
            }
            BackendChoice::Auto => match bidir_sys::uring::probe() {
                Ok(()) => (true, None),
                Err(e) => (false, Some(format!("io_uring unavailable: {e}"))),
            },
        };
        let mut prepared = Vec::with_capacity(workers);
        let mut mailboxes = Vec::with_capacity(workers);
        for _ in 0..workers {
            if use_uring {
                let waker = Arc::new(UringWaker::new()?);
                mailboxes
                    .push(Arc::new(Mailbox::new(Arc::clone(&waker) as Arc<dyn bidir_sys::Waker>)));
                prepared.push(Prepared::Uring(waker));
            } else {
                let backend = Epoll::new(read_buf, 1024)?;
                mailboxes.push(Arc::new(Mailbox::new(backend.waker())));
                prepared.push(Prepared::Epoll(backend));
            }
        }
        let uring_config = self.config.uring;
        let pin = self.config.pin_workers;
        let backend = BackendInfo { io_uring: use_uring, fallback_reason: fallback };
        let mut shared = Shared::new(self.config, mailboxes, bound, backend);
        shared.histories = self.histories;
        #[cfg(feature = "redis")]
        let shared = match self.redis {
            Some(redis) => shared.with_bridge(redis, crate::rpc::node_topic),
            None => shared,
        };
        let shared = Arc::new(shared);
        let router = Arc::new(self.router);
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
        let mut threads = Vec::with_capacity(workers);
        for (index, (prepared, listeners)) in prepared.into_iter().zip(listeners).enumerate() {
            let cpu = if pin && !cpus.is_empty() { Some(cpus[index % cpus.len()]) } else { None };
            let shared = Arc::clone(&shared);
            let router = Arc::clone(&router);
            let ready = ready_tx.clone();
            // The worker and its backend are built on its own thread: handlers are not
            // `Send`, and an io_uring ring belongs to the thread that submits to it.
            let thread = std::thread::Builder::new().name(format!("bidir-worker-{index}")).spawn(
                move || {
                    if let Some(cpu) = cpu {
                        let _ = bidir_sys::cpu::pin_current_thread(cpu);
                    }
                    match prepared {
                        Prepared::Epoll(backend) => {
                            run_worker(index, backend, listeners, shared, router, &ready)
                        }
                        Prepared::Uring(waker) => match IoUring::new(uring_config, waker) {
                            Ok(backend) => {
                                run_worker(index, backend, listeners, shared, router, &ready)
                            }
                            Err(e) => {
                                let _ = ready.send(Err(e));
                            }
                        },
                    }
                },
            )?;
            threads.push(thread);
        }
        drop(ready_tx);
        let mut failure = None;
        for _ in 0..workers {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(_) => {
                    failure = failure.or(Some(io::Error::other("a worker thread died starting")));
                    break;
                }
            }
        }
        if let Some(e) = failure {
            shared.stopping.store(true, Ordering::Relaxed);
            for mailbox in &shared.mailboxes {
                mailbox.push(Command::Shutdown { deadline: Instant::now() });
            }
            for thread in threads {
                let _ = thread.join();
            }
            return Err(e);
        }
        *shared.threads.lock().unwrap_or_else(PoisonError::into_inner) = threads;
        let server = ServerHandle { shared };
        #[cfg(feature = "redis")]
        if let Some(bridge) = &server.shared.bridge
            && let Err(e) = bridge.start(&(Arc::downgrade(&server.shared) as Weak<dyn Local>))
        {
            server.shutdown(Duration::ZERO);
            return Err(e);
        }
        Ok(server)
    }
}

impl ServerBuilder {
    /// The configuration, routes and topic histories, for a `testbed::TestBed` (addresses
    /// are not bound there, and no other node is joined).
    ///
    /// # Errors
    ///
    /// The error of an address that did not resolve.
    pub(crate) fn into_parts(
        self,
    ) -> io::Result<(ServerConfig, Router, crate::history::Histories)> {
        match self.error {
            Some(e) => Err(e),
            None => Ok((self.config, self.router, self.histories)),
        }
    }
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("addrs", &self.addrs)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Opens every worker's listener on every address; returns them per worker, and the addresses
/// as bound (with the ports chosen for port 0).
///
/// Every listener has `SO_REUSEPORT` (even with one worker, so that a server started with
/// [`ServerConfig::share_port`] can join it). Unless `share_port` is set, each address is first
/// probed: another process's listener there fails the start with `AddrInUse`. An address with
/// port 0 needs no probe: the kernel picks a port no listener holds, and the other workers join
/// that port.
fn bind_all(
    addrs: &[SocketAddr],
    workers: usize,
    config: &ServerConfig,
) -> io::Result<(Vec<Vec<std::net::TcpListener>>, Vec<SocketAddr>)> {
    let mut listeners: Vec<Vec<std::net::TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    let mut bound = Vec::with_capacity(addrs.len());
    for addr in addrs {
        if !config.share_port && addr.port() != 0 {
            bidir_sys::socket::probe_unused(*addr)
                .map_err(|e| in_use(*addr, config.share_port, e))?;
        }
        let first = bidir_sys::socket::listener(*addr, config.backlog, true)
            .map_err(|e| in_use(*addr, config.share_port, e))?;
        let actual = first.local_addr()?;
        bound.push(actual);
        listeners[0].push(first);
        for per_worker in listeners.iter_mut().skip(1) {
            let listener = bidir_sys::socket::listener(actual, config.backlog, true)
                .map_err(|e| in_use(actual, config.share_port, e))?;
            per_worker.push(listener);
        }
    }
    Ok((listeners, bound))
}

/// Names the address in a bind error, and says how to share it when it is taken.
fn in_use(addr: SocketAddr, share_port: bool, e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::AddrInUse if share_port => io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "address {addr} is in use by a listener that does not share it \
                 (only SO_REUSEPORT listeners of the same user can be joined)"
            ),
        ),
        io::ErrorKind::AddrInUse => io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "address {addr} is in use: another process listens on it \
                 (ServerConfig::share_port joins it on purpose)"
            ),
        ),
        kind => io::Error::new(kind, format!("cannot listen on {addr}: {e}")),
    }
}

/// Registers the listeners and runs a worker; tells `start` whether it got going.
fn run_worker<B: Backend>(
    index: usize,
    mut backend: B,
    listeners: Vec<std::net::TcpListener>,
    shared: Arc<Shared>,
    router: Arc<Router>,
    ready: &mpsc::Sender<io::Result<()>>,
) {
    for listener in listeners {
        if let Err(e) = backend.add_listener(listener) {
            let _ = ready.send(Err(e));
            return;
        }
    }
    let _ = ready.send(Ok(()));
    Worker::new(index, backend, shared, router, Clock::system()).run();
}

/// A worker's backend, or what it needs to make one on its own thread.
enum Prepared {
    Epoll(Epoll),
    Uring(Arc<UringWaker>),
}

/// A running server: publish, count, measure and stop it from any thread. `Send + Sync +
/// Clone`.
#[derive(Clone)]
pub struct ServerHandle {
    pub(crate) shared: Arc<Shared>,
}

impl ServerHandle {
    /// The addresses the server listens on (with the ports chosen for port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.shared.addrs
    }

    /// The first of [`ServerHandle::local_addrs`].
    ///
    /// # Panics
    ///
    /// If the server listens on no address (a client-only engine).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.addrs[0]
    }

    /// Opens a client connection to `options`' URL from one of the workers (round robin), run
    /// by `handler` exactly like an accepted connection: [`Handler::on_open`] once the
    /// handshake completes, then messages, then [`Handler::on_close`]. A failure to connect,
    /// a refusal (with the server's status, headers and body), or a timeout is reported to
    /// [`Handler::on_connect_failed`] instead. Returns once the request is queued; the host
    /// name is resolved here, on the caller's thread (blocking), and the first address is used.
    ///
    /// Client connections count in [`ServerHandle::connections`] and
    /// [`ServerConfig::max_connections`](crate::ServerConfig), take heartbeats and limits from
    /// `options`, and are told 1001 on shutdown like the others. A server started with no
    /// address serves as a client-only engine.
    ///
    /// # Errors
    ///
    /// [`ConnectError::Io`] when the host does not resolve; [`ConnectError::InvalidRequest`]
    /// when a header or subprotocol cannot be sent; [`ConnectError::ShuttingDown`].
    pub fn connect<H: Handler + Send>(
        &self,
        options: &Connect,
        handler: H,
    ) -> Result<(), ConnectError> {
        if self.shared.stopping.load(Ordering::Relaxed) {
            return Err(ConnectError::ShuttingDown);
        }
        let pending = PendingConnect::new(options, handler::boxed_send(handler))?;
        let mailboxes = &self.shared.mailboxes;
        let next = self.shared.next_worker.fetch_add(1, Ordering::Relaxed);
        mailboxes[next % mailboxes.len()].push(Command::Connect(Box::new(pending)));
        Ok(())
    }

    /// Runs `f` on worker `worker`'s thread (modulo the count) between two of its loop turns,
    /// after the commands this thread queued there before. Dropped unrun once the worker has
    /// stopped. A panic in `f` is caught there.
    pub(crate) fn run_on(&self, worker: usize, f: impl FnOnce() + Send + 'static) {
        let mailboxes = &self.shared.mailboxes;
        mailboxes[worker % mailboxes.len()].push(Command::Run(Box::new(f)));
    }

    /// The I/O backend the workers run on ([`ServerConfig::backend`](crate::ServerConfig)).
    pub fn backend(&self) -> &BackendInfo {
        &self.shared.backend
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.shared.mailboxes.len()
    }

    /// Open WebSocket connections, as of each worker's last loop turn.
    pub fn connections(&self) -> u64 {
        self.shared.open.iter().map(|o| o.load(Ordering::Relaxed)).sum()
    }

    /// Sends `msg` to every connection subscribed to `topic`, on the workers that have
    /// subscribers (the others are not woken). Each of them encodes the frame once (and
    /// compresses it once per window size, for subscribers that negotiated permessage-deflate
    /// without context takeover on the server's side; others get it uncompressed, as RFC 7692
    /// allows). Delivery happens on each worker's next loop turn; subscribers over their
    /// backpressure limit miss it.
    ///
    /// With [`ServerBuilder::redis`], it also goes to the other nodes' subscribers, through
    /// Redis (docs/nodes.md).
    ///
    /// Returns the subscribers of `topic` on every worker of this node as registered at the
    /// call (other nodes' are not counted); 0, and nothing sent, once a shutdown has started.
    pub fn publish(&self, topic: &str, msg: Message<'_>) -> usize {
        if self.shared.stopping.load(Ordering::Relaxed) {
            return 0;
        }
        self.shared.forward(topic, crate::pubsub::Forward::Message(msg));
        self.shared.publish(topic, msg, None, None)
    }

    /// Calls `listener` with every message another node publishes to `topic` (with
    /// [`ServerHandle::publish`] or [`Context::publish`](crate::Context::publish) there), in
    /// the order each node published them: services on different nodes talk this way (the
    /// chat example relays a member's message to the other nodes' members). It runs on the
    /// bridge's thread, after the message was handed to this node's subscribers: it must not
    /// block for long, since the next message waits for it. This node's own publishes do not
    /// reach it. The topic's Redis subscription is held while the server runs. Does nothing
    /// on a server not built with [`ServerBuilder::redis`].
    #[cfg(feature = "redis")]
    pub fn on_node_publish<F>(&self, topic: &str, listener: F)
    where
        F: Fn(Message<'_>) + Send + Sync + 'static,
    {
        if let Some(bridge) = &self.shared.bridge {
            bridge.listen(topic, Arc::new(listener));
        }
    }

    /// This node's bridge to the others, as counted now; `None` unless the server was built
    /// with [`ServerBuilder::redis`].
    #[cfg(feature = "redis")]
    pub fn nodes(&self) -> Option<crate::nodes::NodeStats> {
        self.shared.bridge.as_ref().map(|b| b.stats())
    }

    /// Counters and latency histograms merged over every worker. Each worker answers on its
    /// next loop turn; a worker that does not answer within a second (or has stopped) is
    /// left out, and [`Stats::workers`] says how many answered.
    pub fn stats(&self) -> Stats {
        let (tx, rx) = mpsc::channel();
        for mailbox in &self.shared.mailboxes {
            mailbox.push(Command::Stats(tx.clone()));
        }
        drop(tx);
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut parts = Vec::new();
        while parts.len() < self.workers() {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(part) => parts.push(part),
                Err(_) => break,
            }
        }
        Stats::merge(parts)
    }

    /// Graceful shutdown: stop accepting, send 1001 ("going away") to every connection, keep
    /// flushing what was queued and waiting for the peers' close frames, and drop whatever is
    /// left when `grace` has passed. Blocks until every worker has stopped (except on a worker's
    /// thread: see [`ServerHandle::join`]). Nothing queued before the shutdown is lost on a
    /// connection that closes cleanly within `grace`.
    pub fn shutdown(&self, grace: Duration) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + grace;
        for mailbox in &self.shared.mailboxes {
            mailbox.push(Command::Shutdown { deadline });
        }
        self.join();
    }

    /// Blocks until every worker has stopped (after a [`ServerHandle::shutdown`] from
    /// elsewhere). On a worker's own thread (a handler holding the handle from
    /// [`Context::server`](crate::Context::server)) it returns at once: a handler must not
    /// block its worker, and the worker cannot wait for itself.
    pub fn join(&self) {
        let mut threads = self.shared.threads.lock().unwrap_or_else(PoisonError::into_inner);
        let me = std::thread::current().id();
        if threads.iter().any(|t| t.thread().id() == me) {
            return;
        }
        for thread in std::mem::take(&mut *threads) {
            let _ = thread.join();
        }
        #[cfg(feature = "redis")]
        if let Some(bridge) = &self.shared.bridge {
            bridge.join();
        }
    }
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addrs", &self.shared.addrs)
            .field("workers", &self.workers())
            .finish()
    }
}

/// The server as the Redis bridge sees it: here, so that the bridge depends on neither the
/// workers' shared state nor the rpc layer.
#[cfg(feature = "redis")]
impl Local for Shared {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    fn publish(&self, topic: &str, msg: Message<'_>) {
        Self::publish(self, topic, msg, None, None);
    }

    fn publish_rpc(
        &self,
        topic: &str,
        json: bool,
        data: &[u8],
        kept: Option<(&bidir_protocol::rpc::Position<'_>, Option<crate::ConnId>)>,
    ) -> bool {
        crate::rpc::deliver_from_node(self, topic, json, data, kept)
    }

    fn stale_histories(&self, which: &dyn Fn(&str) -> bool) {
        self.histories.stale(which);
    }

    fn seed_history(&self, topic: &str, epoch: &str, top: u64, history: crate::rpc::History) {
        self.histories.seed(topic, epoch, top, history);
    }

    fn kept_histories(&self) -> Vec<(Arc<str>, Arc<str>, u64, crate::rpc::History)> {
        self.histories.kept()
    }

    fn catch_up(
        &self,
        topic: &str,
        epoch: &str,
        last: u64,
        stored: Option<crate::nodes::Stored>,
    ) -> bool {
        crate::rpc::catch_up(self, topic, epoch, last, stored)
    }

    fn forget_history(&self, topic: &str) -> bool {
        crate::rpc::forget_history(self, topic)
    }
}
