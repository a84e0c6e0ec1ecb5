//! A chat room, after mORMot's sample: the service and the callback interface are declared
//! once, as Rust traits, and spoken by the server, the Rust client below and the browser page.
//!
//! - `Chat.join(pseudo, callback)` keeps the callback object the client passes;
//!   `Chat.blabla(pseudo, msg)` invokes `blabla(pseudo, msg)` on every member's callback, from
//!   the worker of whoever speaks; each member's invocations are gathered and sent by its own
//!   worker. The release hook forgets a member whose page closed, whose client dropped its
//!   object, or whose connection ended.
//! - `GET /` serves a chat page (examples/static/chat.html) that imports the browser module
//!   from `/bidir.js` and calls the services at `/rpc`: open it in several browsers.
//! - `chat client` is a terminal member: each line typed is said, each message heard printed.
//!
//! ```text
//! cargo run --release --example chat                    # 127.0.0.1:9001, open http://127.0.0.1:9001/
//! cargo run --release --example chat -- client --pseudo ada        # in a terminal
//! cargo run --release --example chat -- --addr 0.0.0.0:9001 --workers 2
//! ```
//!
//! The server stops on Ctrl-C (or SIGTERM) with a graceful shutdown; the client at the end of
//! its input. A client whose server restarts joins again by itself when it reconnects.

use std::io::BufRead;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bidir::rpc::client::Client;
use bidir::rpc::{Callback, Services};
use bidir::{HttpResponse, Request, Server, ServerConfig, Signals};

/// What a member hears.
#[bidir::callback]
pub trait ChatCallback {
    /// `pseudo` said `msg`.
    fn blabla(&self, pseudo: String, msg: String);
}

/// The room.
#[bidir::service]
pub trait Chat {
    /// Joins as `pseudo`: `callback` hears every message said from now on.
    fn join(&self, pseudo: String, callback: Callback<dyn ChatCallback>) -> Result<(), String>;
    /// Says `msg` to every member.
    fn blabla(&self, pseudo: String, msg: String);
}

const PAGE: &str = include_str!("static/chat.html");

/// A member: the pseudo it joined with, and its callback object.
struct Member {
    pseudo: String,
    callback: Callback<dyn ChatCallback>,
}

type Members = Arc<Mutex<Vec<Member>>>;

struct Room {
    members: Members,
}

impl Chat for Room {
    fn join(&self, pseudo: String, callback: Callback<dyn ChatCallback>) -> Result<(), String> {
        if pseudo.trim().is_empty() {
            return Err("a pseudo is needed".to_owned());
        }
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        if !members.iter().any(|m| m.callback == callback) {
            println!("{pseudo} joined ({} members)", members.len() + 1);
            members.push(Member { pseudo, callback });
        }
        Ok(())
    }

    fn blabla(&self, pseudo: String, msg: String) {
        for member in self.members.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            // Refused only for a member released meanwhile: the hook below removes it.
            let _ = member.callback.blabla(pseudo.clone(), msg.clone());
        }
    }
}

fn services() -> Services {
    let members = Members::default();
    let left = Arc::clone(&members);
    Services::new().serve(ChatService::shared(Room { members })).on_release(move |_cx, callback| {
        let mut members = left.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = members.iter().position(|m| m.callback == *callback) {
            let member = members.swap_remove(i);
            println!("{} left ({} members)", member.pseudo, members.len());
        }
    })
}

fn main() -> std::io::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "client") {
        args.remove(0);
        return client(&args);
    }
    let mut addr = "127.0.0.1:9001".to_owned();
    let mut config = ServerConfig::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--addr" => addr = value(),
            "--workers" => config.workers = Some(number(&value())),
            "--no-pin" => config.pin_workers = false,
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    // Block SIGINT/SIGTERM before the workers start, so that they inherit the mask.
    let signals = Signals::block()?;
    let server = Server::builder()
        .bind(addr.as_str())
        .config(config)
        .http("/", |_req: &Request<'_>| HttpResponse::html(PAGE))
        .http("/bidir.js", bidir::rpc::serve_module)
        .route("/rpc", services().hook())
        .start()?;
    let at = server.local_addr();
    println!(
        "chat on http://{at}/ — open it in several browsers, or: chat client --url ws://{at}/rpc"
    );
    let signal = signals.wait()?;
    println!("signal {signal}: shutting down");
    server.shutdown(Duration::from_secs(5));
    Ok(())
}

/// Prints what it hears, as `pseudo: msg` lines.
struct Terminal;

impl ChatCallback for Terminal {
    fn blabla(&self, pseudo: String, msg: String) {
        println!("{pseudo}: {msg}");
    }
}

/// A terminal member: joins, says each line of its input, prints every message.
fn client(args: &[String]) -> std::io::Result<()> {
    let mut url = "ws://127.0.0.1:9001/rpc".to_owned();
    let mut pseudo = std::env::var("USER").unwrap_or_else(|_| "rust".to_owned());
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value =
            || args.next().cloned().unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--url" => url = value(),
            "--pseudo" => pseudo = value(),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let fail = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let client = Client::connect(&url).map_err(|e| fail(&e))?;
    let chat = ChatClient::new(&client);
    let terminal = client.callback(Arc::new(Terminal) as Arc<dyn ChatCallback>);
    chat.join(pseudo.clone(), &terminal).map_err(|e| fail(&e))?.map_err(|e| fail(&e))?;
    eprintln!("joined {url} as {pseudo}; type messages, end with Ctrl-D");
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if !line.trim().is_empty() {
            chat.blabla(pseudo.clone(), line).map_err(|e| fail(&e))?;
        }
    }
    // Let the last messages said reach us before leaving.
    std::thread::sleep(Duration::from_millis(200));
    client.close();
    Ok(())
}

fn number(s: &str) -> usize {
    s.parse().unwrap_or_else(|_| usage(&format!("not a number: {s}")))
}

fn usage(error: &str) -> ! {
    if !error.is_empty() {
        eprintln!("error: {error}");
    }
    eprintln!(
        "usage: chat [--addr HOST:PORT] [--workers N] [--no-pin]\n       chat client [--url ws://HOST:PORT/rpc] [--pseudo NAME]"
    );
    std::process::exit(if error.is_empty() { 0 } else { 2 });
}
