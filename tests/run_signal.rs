//! `ServerBuilder::run` over a real process: on SIGINT or SIGTERM it closes every connection
//! with 1001 and the process exits 0; with `shutdown_on_signal: None` the signal ends the
//! process the usual way.
//!
//! A plain `main` (no test harness), because `run` takes the signals with `sigwait(2)` in the
//! thread that calls it: a harness's other threads would receive them instead. The binary
//! re-executes itself as the server, as an application's `main` would call `run`.

mod util;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use bidir::protocol::Message;
use bidir::{CloseCode, Context, Handler, Request, Server};
use util::{Client, Got};

/// Set in the child: the mode it runs the server in (`graceful` or `opt-out`).
const CHILD_MODE: &str = "BIDIR_TEST_RUN_MODE";
/// Set in the child: the address it listens on.
const CHILD_ADDR: &str = "BIDIR_TEST_RUN_ADDR";

struct Echo;
impl Handler for Echo {
    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        cx.send(msg).unwrap();
    }
}

fn main() {
    if let Ok(mode) = std::env::var(CHILD_MODE) {
        // A process started in the background by a shell without job control inherits SIGINT
        // ignored; an application run from a terminal has it at its default. Start from there.
        for signal in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: signal(2) with SIG_DFL installs no handler of ours; nothing else runs yet.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
        }
        let addr: SocketAddr = std::env::var(CHILD_ADDR).unwrap().parse().unwrap();
        serve(&mode, addr);
        return;
    }
    a_signal_closes_every_connection_with_1001_and_exits_0(libc::SIGINT);
    a_signal_closes_every_connection_with_1001_and_exits_0(libc::SIGTERM);
    opting_out_leaves_the_signal_its_usual_effect();
    println!("run_signal: 3 tests passed");
}

/// The child: an application whose `main` calls `run`.
fn serve(mode: &str, addr: SocketAddr) {
    let mut config = util::config(2);
    config.shutdown_on_signal = match mode {
        "graceful" => Some(Duration::from_secs(5)),
        "opt-out" => None,
        other => panic!("unknown mode {other}"),
    };
    Server::builder()
        .bind(addr)
        .config(config)
        .route("/echo", |_req: &Request<'_>| Ok(Echo))
        .run()
        .unwrap();
}

fn a_signal_closes_every_connection_with_1001_and_exits_0(signal: i32) {
    let (mut child, addr) = spawn_server("graceful");
    let mut clients: Vec<Client> = (0..3).map(|_| open_client(addr)).collect();
    send_signal(&child, signal);
    for client in &mut clients {
        match client.recv() {
            Got::Close(Some(CloseCode::GOING_AWAY), _) => {}
            other => panic!("signal {signal}: expected close 1001, got {other:?}"),
        }
        // The close reply went out with the event; the server then ends the connection.
        assert_eq!(client.next(), Got::Eof);
    }
    let status = wait_for_exit(&mut child);
    assert!(status.success(), "signal {signal}: the server exits 0, not {status:?}");
}

fn opting_out_leaves_the_signal_its_usual_effect() {
    let (mut child, addr) = spawn_server("opt-out");
    let mut client = open_client(addr);
    send_signal(&child, libc::SIGINT);
    let status = wait_for_exit(&mut child);
    assert_eq!(status.signal(), Some(libc::SIGINT), "the process dies of the signal: {status:?}");
    // No close frame: the connection just ends (1006 for a browser).
    assert_eq!(client.next(), Got::Eof);
}

/// Starts the server process on a free loopback port and waits until it accepts.
fn spawn_server(mode: &str) -> (Child, SocketAddr) {
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_MODE, mode)
        .env(CHILD_ADDR, addr.to_string())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the server exited before listening: {status:?}");
        }
        assert!(Instant::now() < deadline, "the server did not listen within 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, addr)
}

/// An open WebSocket connection, checked with one echo.
fn open_client(addr: SocketAddr) -> Client {
    let mut client = Client::connect(addr, "/echo");
    client.send_text("hello");
    assert_eq!(client.recv(), Got::Text("hello".to_owned()));
    client
}

fn send_signal(child: &Child, signal: i32) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) with a valid signal number touches no memory of ours.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

fn wait_for_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the server did not exit within 20 s of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
