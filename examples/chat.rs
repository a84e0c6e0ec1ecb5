//! A chat room, after mORMot's sample: `Chat.join(pseudo, callback)` keeps the callback object a
//! client passes, `Chat.blabla(pseudo, msg)` invokes `blabla(pseudo, msg)` on every member's
//! callback, and the release hook forgets a member whose page closed or whose callback was
//! released — invoked from the worker of whoever speaks, delivered by each member's own worker.
//!
//! - `GET /` serves a chat page (examples/static/chat.html) that imports the browser module
//!   from `/bidir.js` and calls the services at `/rpc`: open it in several browsers.
//!
//! ```text
//! cargo run --release --example chat                    # 127.0.0.1:9001
//! cargo run --release --example chat -- --addr 0.0.0.0:9001 --workers 2
//! ```
//!
//! Stops on Ctrl-C (or SIGTERM) with a graceful shutdown.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bidir::rpc::{Callback, Services};
use bidir::{HttpResponse, Request, Server, ServerConfig, Signals};

const PAGE: &str = include_str!("static/chat.html");

/// A member: the pseudo it joined with, and its callback object.
struct Member {
    pseudo: String,
    callback: Callback,
}

type Members = Arc<Mutex<Vec<Member>>>;

fn services(members: &Members) -> Services {
    let (joined, room, left) = (Arc::clone(members), Arc::clone(members), Arc::clone(members));
    Services::new()
        .method("Chat.join", move |_cx, (pseudo, callback): (String, Callback)| {
            if pseudo.trim().is_empty() {
                return Err("a pseudo is needed".to_owned());
            }
            let mut members = joined.lock().unwrap_or_else(PoisonError::into_inner);
            if !members.iter().any(|m| m.callback == callback) {
                println!("{pseudo} joined ({} members)", members.len() + 1);
                members.push(Member { pseudo, callback });
            }
            Ok(())
        })
        .method("Chat.blabla", move |_cx, (pseudo, msg): (String, String)| {
            for member in room.lock().unwrap_or_else(PoisonError::into_inner).iter() {
                // Refused only for a member released meanwhile: the hook below removes it.
                let _ = member.callback.invoke("blabla", (&pseudo, &msg));
            }
            Ok::<_, String>(())
        })
        .on_release(move |_cx, callback| {
            let mut members = left.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(i) = members.iter().position(|m| m.callback == *callback) {
                let member = members.swap_remove(i);
                println!("{} left ({} members)", member.pseudo, members.len());
            }
        })
}

fn main() -> std::io::Result<()> {
    let mut addr = "127.0.0.1:9001".to_owned();
    let mut config = ServerConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--addr" => addr = value(),
            "--workers" => {
                let n = value();
                config.workers =
                    Some(n.parse().unwrap_or_else(|_| usage(&format!("not a number: {n}"))));
            }
            "--no-pin" => config.pin_workers = false,
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let members = Members::default();
    // Block SIGINT/SIGTERM before the workers start, so that they inherit the mask.
    let signals = Signals::block()?;
    let server = Server::builder()
        .bind(addr.as_str())
        .config(config)
        .http("/", |_req: &Request<'_>| HttpResponse::html(PAGE))
        .http("/bidir.js", bidir::rpc::serve_module)
        .route("/rpc", services(&members).hook())
        .start()?;
    println!("chat on http://{}/ — open it in several browsers", server.local_addr());
    let signal = signals.wait()?;
    println!("signal {signal}: shutting down");
    server.shutdown(Duration::from_secs(5));
    Ok(())
}

fn usage(error: &str) -> ! {
    if !error.is_empty() {
        eprintln!("error: {error}");
    }
    eprintln!("usage: chat [--addr HOST:PORT] [--workers N] [--no-pin]");
    std::process::exit(if error.is_empty() { 0 } else { 2 });
}
