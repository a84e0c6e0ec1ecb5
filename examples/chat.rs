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
//!   It speaks `bidir.json.v1`, or `bidir.bin.v1` with `--bin` (the server serves both).
//! - Encryption: `--key FILE` gives the server a pre-shared key (the file's bytes, 32 or more;
//!   `chat --gen-key FILE` writes 32 random ones) and serves the room a second time at
//!   `/rpc-secure`, `bidir.bin.v1` only, every message sealed with AES-256-GCM under keys of
//!   each connection's own (docs/rpc.md, "Keys"). `/rpc` stays plain, for the browser page:
//!   the browser module speaks `bidir.json.v1`, which has no encryption. Both paths are one
//!   room. `chat client --key FILE` connects to `/rpc-secure`, agreeing its keys by an X25519
//!   exchange (`--key-mode ecdhe`, the default: forward secrecy) or from both sides' nonces
//!   (`--key-mode psk`); a client with another key is refused with 403 before any message.
//!
//! ```text
//! cargo run --release --example chat                    # 127.0.0.1:9001, open http://127.0.0.1:9001/
//! cargo run --release --example chat -- client --pseudo ada        # in a terminal
//! cargo run --release --example chat -- --addr 0.0.0.0:9001 --workers 2
//! cargo run --release --example chat -- --gen-key chat.key         # then, with encryption:
//! cargo run --release --example chat -- --key chat.key
//! cargo run --release --example chat -- client --key chat.key --pseudo ada
//! cargo run --release --example chat -- --tls-self-signed cert.pem   # https and wss, then:
//! cargo run --release --example chat -- client --url wss://localhost:9001/rpc --trust cert.pem
//! # two nodes sharing a Redis (docs/nodes.md): a browser on each, one room
//! cargo run --release --features redis --example chat -- --redis redis://127.0.0.1:6379
//! cargo run --release --features redis --example chat -- --redis redis://127.0.0.1:6379 --addr 127.0.0.1:9002
//! ```
//!
//! TLS: `--tls CERT KEY` serves the page at https:// and the room at wss:// (the page then
//! opens wss:// by itself); `--tls-self-signed PATH` makes a throwaway certificate for
//! localhost and 127.0.0.1, as the echo example's option does, and `chat client --trust PATH`
//! trusts it.
//!
//! Several nodes: `--redis URL` (built with the `redis` feature) joins the other chat servers
//! on that Redis. Members' callbacks stay on the node they joined (docs/nodes.md says why), so
//! each node tells its own members and publishes what they say on the topic `chat/said`;
//! every other node hears it (`ServerHandle::on_node_publish`) and tells its members.
//!
//! The server stops on Ctrl-C (or SIGTERM) with a graceful shutdown, after printing the bytes
//! it read and wrote with `--report-bytes` (scripts/wire-bytes.sh); the client at the end of
//! its input. A client whose server restarts joins again by itself when it reconnects.

use std::fs::OpenOptions;
use std::io::{self, BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bidir::rpc::client::Client;
use bidir::rpc::{Callback, KeyMode, Psk, Services, Wire, aead_backend};
use bidir::tls::{ClientTls, ServerTls};
use bidir::{HttpResponse, Message, Request, ServerConfig, ServerHandle, Signals};

#[path = "util/tls.rs"]
mod tls;

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
/// Where the room is served encrypted, with `--key`.
const SECURE_PATH: &str = "/rpc-secure";

/// A member: the pseudo it joined with, and its callback object.
struct Member {
    pseudo: String,
    callback: Callback<dyn ChatCallback>,
}

type Members = Arc<Mutex<Vec<Member>>>;

struct Room {
    members: Members,
    /// This node, with `--redis`: a message said here is relayed to the other nodes' members.
    node: Node,
}

type Node = Arc<OnceLock<ServerHandle>>;

/// The topic members' messages travel on between nodes, as `[pseudo, msg]` in JSON.
const NODE_TOPIC: &str = "chat/said";

/// Tells every member of this node that `pseudo` said `msg`.
fn tell(members: &Members, pseudo: &str, msg: &str) {
    for member in members.lock().unwrap_or_else(PoisonError::into_inner).iter() {
        // Refused only for a member released meanwhile: the release hook removes it.
        let _ = member.callback.blabla(pseudo.to_owned(), msg.to_owned());
    }
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
        tell(&self.members, &pseudo, &msg);
        if let Some(node) = self.node.get() {
            let said = serde_json::to_string(&(pseudo, msg)).unwrap_or_default();
            node.publish(NODE_TOPIC, Message::Text(&said));
        }
    }
}

/// The room's services over `members`: every route serving them is the same room.
fn services(members: &Members, node: &Node) -> Services {
    let room = Room { members: Arc::clone(members), node: Arc::clone(node) };
    let left = Arc::clone(members);
    Services::new().serve(ChatService::shared(room)).on_release(move |_cx, callback| {
        let mut members = left.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = members.iter().position(|m| m.callback == *callback) {
            let member = members.swap_remove(i);
            println!("{} left ({} members)", member.pseudo, members.len());
        }
    })
}

fn main() -> io::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "client") {
        args.remove(0);
        if let Err(e) = client(&args) {
            eprintln!("chat client: {e}");
            std::process::exit(1);
        }
        return Ok(());
    }
    let mut addr = "127.0.0.1:9001".to_owned();
    let mut config = ServerConfig::default();
    let (mut key, mut report_bytes, mut tls, mut redis) = (None, false, None, None);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--addr" => addr = value(),
            "--workers" => config.workers = Some(number(&value())),
            "--no-pin" => config.pin_workers = false,
            "--key" => key = Some(read_key(&value())),
            "--gen-key" => return gen_key(&value()),
            "--report-bytes" => report_bytes = true,
            "--tls" => {
                let (chain, private) =
                    (value(), args.next().unwrap_or_else(|| usage("--tls CERT KEY")));
                tls = Some(ServerTls::from_pem_files(&chain, &private)?);
            }
            "--tls-self-signed" => tls = Some(tls::self_signed(&value())?),
            "--redis" => redis = Some(value()),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let (members, node) = (Members::default(), Node::default());
    let (builder, s) = tls::bind(&addr, tls);
    let mut builder = builder
        .config(config)
        .http("/", |_req: &Request<'_>| HttpResponse::html(PAGE))
        .http("/bidir.js", bidir::rpc::serve_module)
        .route("/rpc", services(&members, &node).hook());
    if let Some(psk) = &key {
        builder = builder.route(SECURE_PATH, services(&members, &node).key(psk.clone()).hook());
    }
    if let Some(url) = &redis {
        builder = nodes::join(builder, url)?;
    }
    // Block SIGINT/SIGTERM before the workers start, so that they inherit the mask.
    let signals = Signals::block()?;
    let server = builder.start()?;
    let at = server.local_addr();
    if let Some(url) = &redis {
        nodes::relay(&server, &members, &node);
        println!("joined the other nodes on {url}: members on every node hear each other");
    }
    println!(
        "chat on http{s}://{at}/ — open it in several browsers, or: chat client --url ws{s}://{at}/rpc"
    );
    if key.is_some() {
        println!(
            "encrypted at ws{s}://{at}{SECURE_PATH} (bidir.bin.v1, AES-256-GCM: {}): chat client --key FILE",
            aead_backend()
        );
    }
    let signal = signals.wait()?;
    println!("signal {signal}: shutting down");
    if report_bytes {
        let counters = server.stats().counters;
        println!("bytes: {} in, {} out", counters.bytes_in, counters.bytes_out);
    }
    server.shutdown(Duration::from_secs(5));
    Ok(())
}

/// Several nodes (`--redis`): each relays what its members say to the others' members.
#[cfg(feature = "redis")]
mod nodes {
    use super::{Members, NODE_TOPIC, Node, tell};
    use bidir::{Message, ServerBuilder, ServerHandle};

    pub(super) fn join(builder: ServerBuilder, url: &str) -> std::io::Result<ServerBuilder> {
        Ok(builder.redis(bidir::nodes::Redis::new(url)?.prefix("chat:")))
    }

    /// What another node's member said reaches this node's members.
    pub(super) fn relay(server: &ServerHandle, members: &Members, node: &Node) {
        let _ = node.set(server.clone());
        let members = std::sync::Arc::clone(members);
        server.on_node_publish(NODE_TOPIC, move |msg| {
            if let Message::Text(said) = msg
                && let Ok((pseudo, msg)) = serde_json::from_str::<(String, String)>(said)
            {
                tell(&members, &pseudo, &msg);
            }
        });
    }
}

#[cfg(not(feature = "redis"))]
mod nodes {
    use super::{Members, Node};
    use bidir::{ServerBuilder, ServerHandle};

    pub(super) fn join(_builder: ServerBuilder, _url: &str) -> std::io::Result<ServerBuilder> {
        super::usage(
            "--redis needs the redis feature: cargo run --release --features redis --example chat -- --redis URL",
        )
    }

    pub(super) fn relay(_server: &ServerHandle, _members: &Members, _node: &Node) {}
}

/// Prints what it hears, as `pseudo: msg` lines.
struct Terminal;

impl ChatCallback for Terminal {
    fn blabla(&self, pseudo: String, msg: String) {
        println!("{pseudo}: {msg}");
    }
}

/// A terminal member: joins, says each line of its input, prints every message.
fn client(args: &[String]) -> io::Result<()> {
    let mut url = None;
    let mut pseudo = std::env::var("USER").unwrap_or_else(|_| "rust".to_owned());
    let (mut wire, mut key, mut mode, mut trust) = (Wire::Json, None, None, None);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value =
            || args.next().cloned().unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--url" => url = Some(value()),
            "--pseudo" => pseudo = value(),
            "--bin" => wire = Wire::Bin,
            "--key" => key = Some(read_key(&value())),
            "--key-mode" => mode = Some(key_mode(&value())),
            "--trust" => trust = Some(read_trust(&value())),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let path = if key.is_some() { SECURE_PATH } else { "/rpc" };
    let url = url.unwrap_or_else(|| format!("ws://127.0.0.1:9001{path}"));
    let fail = |e: &dyn std::fmt::Display| io::Error::other(e.to_string());
    let mut builder = Client::builder(&url).map_err(|e| fail(&e))?.wire(wire);
    match (key, mode) {
        (Some(psk), mode) => {
            let mode = mode.unwrap_or(KeyMode::Ecdhe);
            eprintln!("{} key exchange, AES-256-GCM: {}", mode.token(), aead_backend());
            builder = builder.key(mode, psk);
        }
        (None, Some(_)) => usage("--key-mode needs --key"),
        (None, None) => {}
    }
    if let Some(trust) = trust {
        builder = builder.options(|connect| connect.tls(trust));
    }
    let client = builder.connect().map_err(|e| fail(&format!("cannot join {url}: {e}")))?;
    let chat = ChatClient::new(&client);
    let terminal = client.callback(Arc::new(Terminal) as Arc<dyn ChatCallback>);
    chat.join(pseudo.clone(), &terminal).map_err(|e| fail(&e))?.map_err(|e| fail(&e))?;
    eprintln!("joined {url} as {pseudo}; type messages, end with Ctrl-D");
    for line in io::stdin().lock().lines() {
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

/// The webpki roots and the certificates of the PEM file at `path` (a server's self-signed
/// one: `chat --tls-self-signed PATH`), for a `wss://` URL.
fn read_trust(path: &str) -> ClientTls {
    ClientTls::trusting_pem_file(path)
        .unwrap_or_else(|e| usage(&format!("certificate file {path}: {e}")))
}

/// A pre-shared key: the bytes of the file at `path`, at least 32.
fn read_key(path: &str) -> Psk {
    let bytes = std::fs::read(path).unwrap_or_else(|e| usage(&format!("key file {path}: {e}")));
    Psk::new(&bytes).unwrap_or_else(|e| usage(&format!("key file {path}: {e}")))
}

/// Writes a new key file at `path`: 32 random bytes, readable by its owner only. An existing
/// file is left alone (exit status 1), not overwritten.
fn gen_key(path: &str) -> io::Result<()> {
    let write = || {
        let mut psk = [0; 32];
        getrandom::fill(&mut psk).map_err(io::Error::other)?;
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?.write_all(&psk)
    };
    if let Err(e) = write() {
        eprintln!("error: key file {path}: {e}");
        std::process::exit(1);
    }
    println!("wrote a 32-byte key to {path}");
    Ok(())
}

fn key_mode(token: &str) -> KeyMode {
    KeyMode::from_token(token).unwrap_or_else(|| usage("--key-mode takes psk or ecdhe"))
}

fn number(s: &str) -> usize {
    s.parse().unwrap_or_else(|_| usage(&format!("not a number: {s}")))
}

fn usage(error: &str) -> ! {
    if !error.is_empty() {
        eprintln!("error: {error}");
    }
    eprintln!(
        "usage: chat [--addr HOST:PORT] [--workers N] [--no-pin] [--key FILE] [--report-bytes]
            [--tls CERT.pem KEY.pem | --tls-self-signed CERT-OUT.pem] [--redis URL]
       chat --gen-key FILE
       chat client [--url ws[s]://HOST:PORT/rpc] [--pseudo NAME] [--bin]
                   [--key FILE [--key-mode ecdhe|psk]] [--trust CERT.pem]

  --key FILE      a pre-shared key: the file's bytes, 32 or more (--gen-key writes 32 random
                  ones, to a new file). The server then also serves the room at {SECURE_PATH},
                  bidir.bin.v1 only and encrypted; /rpc stays plain, for the browser page,
                  which cannot encrypt. The client connects to ws://127.0.0.1:9001{SECURE_PATH}
                  by default and agrees its keys in --key-mode (default ecdhe: forward secrecy).
  --bin           the client speaks bidir.bin.v1 (implied by --key), not bidir.json.v1.
  --report-bytes  on shutdown, print the bytes the server read and wrote.
  --tls           serve https and wss with this certificate chain and key (PEM files);
                  --tls-self-signed makes a throwaway certificate for localhost and
                  127.0.0.1, writes it to CERT-OUT.pem and prints its key's SHA-256 (SPKI).
  --trust         the client trusts this certificate (PEM) besides the webpki roots: a
                  wss:// server's self-signed one.
  --redis         join the other chat servers on this Redis (redis://HOST:PORT): one room
                  over every node. Needs the redis feature (cargo run --features redis)."
    );
    std::process::exit(if error.is_empty() { 0 } else { 2 });
}
