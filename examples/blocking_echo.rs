//! Thread-per-connection echo over the engine (`bidir::blocking`): each accepted connection is
//! served by its own thread with blocking `recv` and `send`, in the style of Sparkle or
//! LazWebsockets, while the engine's worker does the protocol.
//!
//! ```text
//! cargo run --release --example blocking_echo -- [--addr 127.0.0.1:9002]
//! ```

use std::thread;

use bidir::blocking::Listener;
use bidir::client::Incoming;
use bidir::{Message, Server};

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .skip_while(|a| a != "--addr")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9002".into());
    let listener = Listener::new();
    let server = Server::builder().bind(addr).route("/echo", listener.hook()).start()?;
    eprintln!("blocking echo on ws://{}/echo", server.local_addr());
    for socket in listener.incoming() {
        thread::spawn(move || {
            eprintln!("{} connected ({})", socket.peer_addr(), socket.target());
            loop {
                let sent = match socket.recv() {
                    Ok(Incoming::Text(text)) => socket.send(Message::Text(&text)),
                    Ok(Incoming::Binary(bytes)) => socket.send(Message::Binary(&bytes)),
                    Ok(Incoming::Close(close)) => {
                        eprintln!("{} closed: {} {}", socket.peer_addr(), close.code, close.reason);
                        return;
                    }
                    Ok(_) => Ok(()), // pings are answered by the engine
                    Err(_) => return,
                };
                if sent.is_err() {
                    return;
                }
            }
        });
    }
    Ok(())
}
