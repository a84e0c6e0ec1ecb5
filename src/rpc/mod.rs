//! Services over `bidir.json.v1` and `bidir.bin.v1` (docs/rpc.md): declared once as Rust
//! traits, or registered as typed closures; called synchronously on the connection's worker,
//! answered in one batched message per received message. A route serves both encodings (the
//! client picks one as its subprotocol, [`Wire`]); arguments, answers and events are decoded
//! and written in the connection's own, with the same serde types.
//!
//! A trait declared with `#[bidir::service]` is served by [`Services::serve`]; a callback
//! interface declared with `#[bidir::callback]` is what a [`Callback`] parameter receives: the
//! client's object, kept by the service and invoked from any thread.
//!
//! ```
//! use std::sync::Mutex;
//!
//! use bidir::rpc::{Callback, Reply, Services};
//! use bidir::{Context, Server};
//!
//! #[bidir::callback]
//! pub trait ChatCallback {
//!     fn said(&self, pseudo: String, msg: String); // invoked: no answer
//!     fn ask(&self, question: String) -> bool;     // called: a Pending<bool>
//! }
//!
//! #[bidir::service]
//! pub trait Chat {
//!     // "Chat.join"; a Result's error answers `service`, the error as its data.
//!     fn join(&self, pseudo: String, callback: Callback<dyn ChatCallback>) -> Result<(), String>;
//!     fn say(&self, cx: &mut Context<'_>, pseudo: String, msg: String); // cx: not on the wire
//!     fn slow(&self, n: u64, reply: Reply<u64>); // answers later, from any thread
//! }
//!
//! #[derive(Default)]
//! struct Room(Mutex<Vec<Callback<dyn ChatCallback>>>);
//!
//! impl Chat for Room {
//!     fn join(&self, _pseudo: String, callback: Callback<dyn ChatCallback>) -> Result<(), String> {
//!         self.0.lock().map_err(|e| e.to_string())?.push(callback);
//!         Ok(())
//!     }
//!     fn say(&self, _cx: &mut Context<'_>, pseudo: String, msg: String) {
//!         for member in self.0.lock().unwrap().iter() {
//!             let _ = member.said(pseudo.clone(), msg.clone()); // Err once released
//!         }
//!     }
//!     fn slow(&self, n: u64, reply: Reply<u64>) {
//!         std::thread::spawn(move || reply.ok(&(n * 2)));
//!     }
//! }
//!
//! let services = Services::new()
//!     .serve(ChatService::shared(Room::default()))
//!     .method("Calc.Add", |_cx, (a, b): (i64, i64)| Ok::<_, String>(a + b));
//! let builder = Server::builder().bind("127.0.0.1:0").route("/rpc", services.hook());
//! ```
//!
//! Declarations, in short (the macros' documentation has the rest):
//! - Methods take `&self`; an optional `cx: &mut Context<'_>` parameter is the call's context
//!   and is not on the wire; the others are the call's arguments, serde types, in order. The
//!   macros recognise `Context`, `Reply` and `Callback` by their names as written.
//! - A method returns a value, nothing (`null`), or `Result<R, E>` written so
//!   (`E: Serialize + Display`: the `service` error, `E`'s text its message, `E` its data).
//! - A `reply: Reply<T>` parameter makes the method answer later ([`Services::deferred`]'s
//!   rules: the in-flight limit, a dropped reply answers `internal`).
//! - Wire names are `Trait.method`; `#[rpc(name = "...")]` under the macro's attribute
//!   renames the service, on a method the method (callback methods too).
//! - `<Trait>Service::shared(impl)` serves one `Send + Sync` instance;
//!   `<Trait>Service::per_connection(|cx| impl)` one per connection, made on the worker at
//!   its first call of the service and dropped when it ends.
//! - `Callback<dyn X>` dereferences to the generated `XProxy`: a method without a value is an
//!   invocation (`Result<(), CallbackError>`), one with a value a call
//!   (`Result<Pending<R>, CallbackError>`). The release hook gets the untyped [`Callback`],
//!   equal to the typed callbacks of the same object.
//! - `<Trait>Client::new(caller)` is the client side's proxy over a [`Caller`] (the Rust
//!   client): the same methods without `cx` and `reply`, a callback parameter taken as the
//!   caller's local object, each answering `Result<_, CallError>` — `Result<Result<R, E>,
//!   CallError>` for `-> Result<R, E>` ([`service_result`]) — plus a `<name>_async` form that
//!   does not wait.
//!
//! The reserved method `rpc.describe` answers with the services' descriptions (docs/rpc.md,
//! "Descriptions"): what a browser builds its proxies from. Browsers speak it through
//! [`BROWSER_MODULE`], an ES module the server serves itself ([`serve_module`]); Rust programs
//! through [`client`] (calls, callbacks, subscriptions, reconnection).

mod browser;
mod callback;
pub mod client;
mod describe;
mod events;
mod gather;
mod outbox;
mod pending;
mod reply;
mod slot;
mod typed;
mod wire;

pub use crate::history::History;
pub use browser::{BROWSER_MODULE, serve_module};
pub use callback::{CallbackError, RawCallback};
pub use events::{broadcast, publish};
#[cfg(feature = "redis")]
pub(crate) use events::{catch_up, deliver_from_node, forget_history, node_topic};
pub use pending::{CallError, DEFAULT_TIMEOUT, Pending};
pub use reply::Reply;
pub use typed::{
    Callback, CallbackInterface, CallbackMethod, Caller, Service, Signature, Untyped, dispatch,
    service_result,
};
pub use wire::{CodecError, Value, ValueRef, Wire};

pub use bidir_protocol::rpc::envelope::COMPRESS_ABOVE;
pub use bidir_protocol::rpc::key::{KeyError, KeyMode, Psk};
pub use bidir_protocol::rpc::seal::aead_backend;

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use bidir_protocol::rpc::key;
use bidir_protocol::rpc::{ErrorBody, ErrorCode, Msg, MsgError};
use bidir_protocol::{CloseCode, Message};

use self::events::engine_topic;
use self::gather::Gathering;
use self::wire::{Egress, Ingress, Reader, Received};
use crate::{Accept, Context, Handler, HttpResponse, Request, TimerId};

/// What a method failed with, as its error answer carries it.
#[derive(Debug)]
struct Failure {
    code: ErrorCode,
    message: String,
    data: Option<Value>,
}

impl Failure {
    /// A service's own error: its text, and its value (in `wire`) as the data.
    fn service<E: Serialize + fmt::Display>(wire: Wire, e: &E) -> Self {
        Self { code: ErrorCode::Service, message: e.to_string(), data: wire.value(e).ok() }
    }

    /// The error answer to request `id`, encoded in `wire`.
    fn encode(&self, wire: Wire, id: u64, out: &mut Vec<u8>) {
        let data = self.data.as_ref().map(Value::as_ref);
        let error = ErrorBody { code: self.code, message: (&*self.message).into(), data };
        wire.encode(Msg::Error { id, error }, out);
    }
}

/// What a method answers: its value now (`Some`), or later through the [`Reply`] it made
/// (`None`).
type Answered = Result<Option<Value>, Failure>;

/// A method: it decodes its arguments, in the connection's encoding, and answers in it.
type Method = dyn Fn(&mut Context<'_>, ValueRef<'_>, Env<'_>) -> Answered + Send + Sync;

/// What a method needs of its connection besides the context: for a [`Reply`], the call's id
/// and the outbox; the connection's instances of per-connection services.
struct Env<'a> {
    id: Option<u64>,
    outbox: &'a Arc<outbox::Outbox>,
    max_in_flight: usize,
    instances: &'a Instances,
}

/// A connection's instances of per-connection services, by the service's slot.
type Instances = RefCell<HashMap<usize, Rc<dyn Any>>>;

impl Env<'_> {
    /// The connection's instance in `slot`, made now if it has none yet.
    fn instance<S: 'static>(
        &self,
        slot: usize,
        make: impl FnOnce() -> S,
    ) -> Result<Rc<S>, Failure> {
        let found = self.instances.borrow().get(&slot).cloned();
        let instance = found.unwrap_or_else(|| {
            // Made with no borrow held: `make` may do anything but call this connection.
            let made: Rc<dyn Any> = Rc::new(make());
            self.instances.borrow_mut().insert(slot, Rc::clone(&made));
            made
        });
        typed::downcast(instance)
    }
}

/// A set of methods, named `Service.method`, served over both encodings.
///
/// Threading: methods run on the worker of the connection that calls them, one call at a time
/// per connection, and must not block (hand long work to another thread). A method that
/// panics answers [`ErrorCode::Internal`]; the connection goes on.
pub struct Services {
    methods: HashMap<Box<str>, Box<Method>>,
    /// Every method's name and description (`None`: registered by hand), in registration
    /// order, for `rpc.describe`.
    signatures: Vec<(Box<str>, Option<Signature>)>,
    /// `rpc.describe`'s answer in each encoding ([`Wire::ALL`]'s order), written when the
    /// services start serving.
    descriptions: Vec<Option<Value>>,
    /// Per-connection services so far: the next one's slot.
    slots: usize,
    on_release: Option<Box<ReleaseHook>>,
    refused: Arc<AtomicU64>,
    max_in_flight: usize,
    topics: Topics,
    /// `bidir.bin.v1` is encrypted with keys from it, and only it is served.
    psk: Option<Psk>,
    compress_above: Option<usize>,
    /// Messages that failed authentication, over every connection.
    auth_failures: Arc<AtomicU64>,
}

impl Default for Services {
    fn default() -> Self {
        Self {
            methods: HashMap::new(),
            signatures: Vec::new(),
            descriptions: Vec::new(),
            slots: 0,
            on_release: None,
            refused: Arc::default(),
            max_in_flight: 256,
            topics: Topics::default(),
            psk: None,
            compress_above: Some(COMPRESS_ABOVE),
            auth_failures: Arc::default(),
        }
    }
}

type ReleaseHook = dyn Fn(&mut Context<'_>, &Callback) + Send + Sync;
type TopicHook = dyn Fn(&mut Context<'_>, &str) -> Result<(), String> + Send + Sync;

/// What clients may do with topics.
#[derive(Default)]
struct Topics {
    /// Decides subscriptions; none: every topic.
    subscribe: Option<Box<TopicHook>>,
    /// Decides clients' publishes; none: refused.
    publish: Option<Box<TopicHook>>,
    /// A client's publish skips its own connection.
    exclude_publisher: bool,
    /// Clients' publishes refused, over every connection.
    refused: Arc<AtomicU64>,
}

/// The reserved method that answers with the services' descriptions (docs/rpc.md).
const DESCRIBE: &str = "rpc.describe";

impl Services {
    /// No methods yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `name` (`Service.method`; a later registration of the same name replaces
    /// it). The call's arguments, an array (JSON or MessagePack), are decoded into `A` — a
    /// tuple of the parameters, `(T,)` for one, `()` for none — or the call is answered with
    /// [`ErrorCode::BadArgs`];
    /// `Ok` is answered with its value, `Err` with [`ErrorCode::Service`], the error's text as
    /// the message and its value as the data.
    ///
    /// `rpc.describe` lists it with its parameters unknown (`"params": null`). The service
    /// name `rpc` is reserved: `rpc.describe` is answered by the services themselves.
    pub fn method<A, R, E, F>(self, name: &str, f: F) -> Self
    where
        A: DeserializeOwned,
        R: Serialize,
        E: Serialize + fmt::Display,
        F: Fn(&mut Context<'_>, A) -> Result<R, E> + Send + Sync + 'static,
    {
        let method =
            move |cx: &mut Context<'_>, args: ValueRef<'_>, _: Env<'_>| run(args, |a| f(cx, a));
        self.register(name, None, Box::new(method))
    }

    /// Registers `name` as a method that answers later: `f` gets the arguments and a [`Reply`]
    /// to hand to another thread, so long work never blocks the worker. While a connection has
    /// [`Services::max_in_flight`] replies outstanding, further calls of such methods are
    /// answered [`ErrorCode::TooManyCalls`] at once.
    pub fn deferred<A, T, F>(self, name: &str, f: F) -> Self
    where
        A: DeserializeOwned,
        T: ?Sized,
        F: Fn(&mut Context<'_>, A, Reply<T>) + Send + Sync + 'static,
    {
        let method = move |cx: &mut Context<'_>, args: ValueRef<'_>, env: Env<'_>| {
            run_deferred(args, env, |a, reply| f(cx, a, reply))
        };
        self.register(name, None, Box::new(method))
    }

    /// Registers every method of `service`, a trait declared with `#[bidir::service]`
    /// (`ChatService::shared(..)`, `ChatService::per_connection(..)`), each as `Name.method`,
    /// described by `rpc.describe` with its parameters and callback interfaces. A later
    /// registration of the same name replaces it.
    pub fn serve<S: 'static>(mut self, service: Service<S>) -> Self {
        let slot = self.slots;
        self.slots += 1;
        let on_instance: Arc<typed::OnInstance<S>> = service.on_instance.into();
        for (signature, typed) in service.methods {
            let on_instance = Arc::clone(&on_instance);
            let method = move |cx: &mut Context<'_>, args: ValueRef<'_>, env: Env<'_>| {
                on_instance(&*typed, cx, args, env, slot)
            };
            let name = format!("{}.{}", service.name, signature.name);
            self = self.register(&name, Some(signature), Box::new(method));
        }
        self
    }

    fn register(mut self, name: &str, signature: Option<Signature>, method: Box<Method>) -> Self {
        self.methods.insert(name.into(), method);
        match self.signatures.iter_mut().find(|(n, _)| **n == *name) {
            Some((_, described)) => *described = signature,
            None => self.signatures.push((name.into(), signature)),
        }
        self
    }

    /// The most answers a connection may wait for from [`Services::deferred`] methods at once
    /// (default 256): a client cannot make the server hold unbounded work for it.
    pub fn max_in_flight(mut self, calls: usize) -> Self {
        self.max_in_flight = calls;
        self
    }

    /// Runs `hook` when a callback a client passed is released — by the client, or because its
    /// connection ended — exactly once per callback the service still holds, on the
    /// connection's worker (mORMot's `CallbackReleased`): drop it from the lists it is in.
    pub fn on_release<F>(mut self, hook: F) -> Self
    where
        F: Fn(&mut Context<'_>, &Callback) + Send + Sync + 'static,
    {
        self.on_release = Some(Box::new(hook));
        self
    }

    /// Decides which topics a client may subscribe to: `Err(reason)` answers its `sub` with
    /// [`ErrorCode::Unauthorized`] and the reason. Runs on the connection's worker, for each
    /// subscription. Without it, every topic may be subscribed to.
    pub fn authorize_subscribe<F>(mut self, hook: F) -> Self
    where
        F: Fn(&mut Context<'_>, &str) -> Result<(), String> + Send + Sync + 'static,
    {
        self.topics.subscribe = Some(Box::new(hook));
        self
    }

    /// Lets clients publish (`pub`) to the topics `hook` accepts: the event reaches every
    /// subscriber on every worker, as [`publish`] sends it — the publisher too if subscribed,
    /// unless [`Services::exclude_publisher`]. Without it (the default) clients' publishes are
    /// refused. A refused publish has no id to answer: it is dropped and counted
    /// ([`Services::refused_publishes`]).
    pub fn authorize_publish<F>(mut self, hook: F) -> Self
    where
        F: Fn(&mut Context<'_>, &str) -> Result<(), String> + Send + Sync + 'static,
    {
        self.topics.publish = Some(Box::new(hook));
        self
    }

    /// Whether a client's publish skips its own connection (default `false`: a subscribed
    /// publisher sees its event, so it knows the publish went through).
    pub fn exclude_publisher(mut self, exclude: bool) -> Self {
        self.topics.exclude_publisher = exclude;
        self
    }

    /// Clients' publishes refused, over every connection of these services.
    pub fn refused_publishes(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.topics.refused)
    }

    /// Encrypts every message with AES-256-GCM under keys of each connection's own, derived
    /// from `psk` in the upgrade (docs/rpc.md, "Keys"; the client picks the mode, `psk` or
    /// `ecdhe`): only `bidir.bin.v1` is served then. A request without a valid `Bidir-Key`
    /// offer is refused before the upgrade — 400 when malformed or missing, 403 for a wrong
    /// key — as is one for `bidir.json.v1` (403: browsers cannot send the key; they get
    /// confidentiality from `wss://`). A message that fails authentication (tampered,
    /// replayed, reordered, dropped) is never delivered: the connection closes with 1008 and
    /// the failure is counted ([`Services::auth_failures`]).
    pub fn key(mut self, psk: Psk) -> Self {
        self.psk = Some(psk);
        self
    }

    /// Compresses `bidir.bin.v1` messages (answers, invocations) longer than `bytes` with
    /// LZ4 when that makes them smaller; `None`: never. Default [`COMPRESS_ABOVE`] (512),
    /// where compressing starts to pay on a link of a gigabit or slower (docs/rpc.md). It
    /// trades CPU for bytes — about 5 ns per byte saved, 2.7× the server's CPU per 1 KiB call
    /// on loopback (docs/benchmarks.md) — so on loopback or a faster local network pass
    /// `None`. Events are compressed above [`COMPRESS_ABOVE`] whatever this says: they are
    /// packed once for every subscriber.
    pub fn compress_above(mut self, bytes: Option<usize>) -> Self {
        self.compress_above = bytes;
        self
    }

    /// Messages that failed authentication on encrypted connections, over every connection of
    /// these services.
    pub fn auth_failures(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.auth_failures)
    }

    /// Invocations refused because their callback was released, over every connection of
    /// these services: a counter shared with them once they run.
    pub fn refused_invocations(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.refused)
    }

    /// An accept hook serving these methods on connections that offer `bidir.json.v1` or
    /// `bidir.bin.v1` — the first of them the client lists; a request that offers neither
    /// gets 400 with the reason. With a [key](Services::key), the key exchange is checked
    /// and answered here.
    pub fn hook(mut self) -> impl Fn(&Request<'_>) -> Result<Accept<Endpoint>, HttpResponse> {
        let description = describe::Description::new(&self.signatures);
        self.descriptions = Wire::ALL.iter().map(|w| w.value(&description).ok()).collect();
        let services = Arc::new(self);
        move |req: &Request<'_>| {
            let Some(wire) = req.protocols().find_map(Wire::from_protocol) else {
                let names = Wire::ALL.map(Wire::protocol).join(" or ");
                let refusal = format!("offer the subprotocol {names}");
                return Err(HttpResponse::status(400).body(refusal));
            };
            let (answer, keys) = services.exchange_keys(req, wire)?.unzip();
            let (sealer, opener) = keys.as_ref().map(key::SessionKeys::server).unzip();
            let failures = Arc::clone(&services.auth_failures);
            let endpoint = Endpoint {
                services: Arc::clone(&services),
                ingress: Ingress::new(wire, opener, failures),
                egress: Egress::new(wire, services.compress_above, sealer),
                answers: Gathering::new(wire),
                callbacks: Rc::default(),
                outbox: None,
                instances: Instances::default(),
                deadlines: HashMap::new(),
                subscribing: Vec::new(),
            };
            let accept = Accept::new(endpoint).protocol(wire.protocol());
            Ok(match answer {
                Some(answer) => accept.header(key::HEADER, answer),
                None => accept,
            })
        }
    }

    /// On a keyed route, the answer to the request's key offer and the connection's keys;
    /// nothing without a key.
    ///
    /// # Errors
    ///
    /// The refusal: 403 for `bidir.json.v1` or a wrong key, 400 for a malformed or missing
    /// offer.
    fn exchange_keys(
        &self,
        req: &Request<'_>,
        wire: Wire,
    ) -> Result<Option<(String, key::SessionKeys)>, HttpResponse> {
        let Some(psk) = &self.psk else { return Ok(None) };
        if wire == Wire::Json {
            let refusal = "this route is encrypted: offer bidir.bin.v1 with a key";
            return Err(HttpResponse::forbidden().body(refusal));
        }
        let offer = req.header(key::HEADER).map(str::as_bytes);
        key::accept(psk, offer)
            .map(Some)
            .map_err(|e| HttpResponse::status(e.status()).body(e.to_string()))
    }

    /// Runs the call of `method` with `args`.
    fn call(
        &self,
        cx: &mut Context<'_>,
        method: &str,
        args: ValueRef<'_>,
        env: Env<'_>,
    ) -> Answered {
        if method == DESCRIBE {
            decode_args::<()>(args)?;
            return match self.descriptions.get(args.wire() as usize).and_then(Option::as_ref) {
                Some(description) => Ok(Some(description.clone())),
                None => Err(Failure {
                    code: ErrorCode::Internal,
                    message: "the descriptions cannot be written".to_owned(),
                    data: None,
                }),
            };
        }
        let Some(f) = self.methods.get(method) else {
            let service = method.split_once('.').map_or(method, |(s, _)| s);
            let known = self
                .methods
                .keys()
                .map(|m| &**m)
                .chain([DESCRIBE])
                .any(|m| m.split_once('.').is_some_and(|(s, _)| s == service));
            let code = if known { ErrorCode::UnknownMethod } else { ErrorCode::UnknownService };
            return Err(Failure { code, message: format!("no method {method}"), data: None });
        };
        match catch_unwind(AssertUnwindSafe(|| f(cx, args, env))) {
            Ok(answer) => answer,
            Err(_) => Err(Failure {
                code: ErrorCode::Internal,
                message: format!("{method} failed"),
                data: None,
            }),
        }
    }
}

impl fmt::Debug for Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.methods.keys().map(|k| &**k).collect();
        names.sort_unstable();
        f.debug_struct("Services").field("methods", &names).finish()
    }
}

/// Decodes a call's arguments and runs a method that answers now, in the arguments'
/// encoding.
fn run<A, R, E>(args: ValueRef<'_>, f: impl FnOnce(A) -> Result<R, E>) -> Answered
where
    A: DeserializeOwned,
    R: Serialize,
    E: Serialize + fmt::Display,
{
    let wire = args.wire();
    let args = decode_args(args)?;
    f(args).map_err(|e| Failure::service(wire, &e)).and_then(|v| to_value(wire, &v)).map(Some)
}

/// Decodes a call's arguments and runs a method that answers later, through its [`Reply`].
fn run_deferred<A: DeserializeOwned, T: ?Sized>(
    args: ValueRef<'_>,
    env: Env<'_>,
    f: impl FnOnce(A, Reply<T>),
) -> Answered {
    let args = decode_args(args)?;
    f(args, Reply::new(env.id, env.outbox, env.max_in_flight)?);
    Ok(None)
}

/// A call's arguments as the method's parameter tuple, or [`ErrorCode::BadArgs`].
fn decode_args<A: DeserializeOwned>(args: ValueRef<'_>) -> Result<A, Failure> {
    args.decode_args().map_err(|e| Failure { code: ErrorCode::BadArgs, message: e.0, data: None })
}

/// An answer written in `wire`, or [`ErrorCode::Internal`].
fn to_value<T: Serialize + ?Sized>(wire: Wire, value: &T) -> Result<Value, Failure> {
    wire.value(value).map_err(|e| Failure {
        code: ErrorCode::Internal,
        message: format!("the answer cannot be written: {e}"),
        data: None,
    })
}

/// One connection's side of [`Services`]: the handler [`Services::hook`] accepts with.
///
/// Every answer to the messages of one received WebSocket message goes out in one message —
/// a batch when there are several — queued before the handler returns, so the engine writes
/// it in the same loop turn.
pub struct Endpoint {
    services: Arc<Services>,
    ingress: Ingress,
    egress: Egress,
    /// The answers to the message being read.
    answers: Gathering,
    /// The callbacks the client passed, as the service holds them.
    callbacks: Rc<RefCell<callback::Table>>,
    /// Invocations and releases from other threads, gathered for this worker.
    outbox: Option<Arc<outbox::Outbox>>,
    /// This connection's instances of per-connection services.
    instances: Instances,
    /// The server's requests continued on the worker ([`Pending::then`]), by the timer of
    /// their deadline.
    deadlines: HashMap<TimerId, u64>,
    /// Topics whose subscription waits for Redis (a history read on another thread), with
    /// their `sub`'s id: an `unsub` meanwhile takes the topic out, and the subscription is
    /// then not made.
    subscribing: Vec<(String, u64)>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint").field("services", &self.services).finish_non_exhaustive()
    }
}

impl Endpoint {
    fn answer(&mut self, id: u64, value: &Value) {
        let wire = self.egress.wire();
        self.answers.push(|out| wire.encode(Msg::Result { id, value: value.as_ref() }, out));
    }

    fn answer_value<T: Serialize>(&mut self, id: u64, value: &T) {
        match to_value(self.egress.wire(), value) {
            Ok(value) => self.answer(id, &value),
            Err(failure) => self.fail(id, &failure),
        }
    }

    fn fail(&mut self, id: u64, failure: &Failure) {
        let wire = self.egress.wire();
        self.answers.push(|out| failure.encode(wire, id, out));
    }

    /// Runs a call with this connection's callbacks in scope for its arguments.
    fn call(
        &self,
        cx: &mut Context<'_>,
        id: Option<u64>,
        method: &str,
        args: ValueRef<'_>,
    ) -> Answered {
        let Some(outbox) = &self.outbox else {
            return Err(Failure {
                code: ErrorCode::Internal,
                message: "not open".into(),
                data: None,
            });
        };
        let scope =
            callback::Scope { table: Rc::clone(&self.callbacks), outbox: Arc::clone(outbox) };
        let max_in_flight = self.services.max_in_flight;
        let env = Env { id, outbox, max_in_flight, instances: &self.instances };
        callback::with_scope(scope, || self.services.call(cx, method, args, env))
    }

    /// Sends the invocations and releases gathered from other threads, as one message.
    fn send_invocations(&mut self, cx: &mut Context<'_>) {
        if let Some(outbox) = &self.outbox {
            outbox.send(cx, &mut self.egress);
        }
    }

    /// The client answered the server's request `id` (an answer for no request in flight — it
    /// timed out, or was never sent — is dropped).
    fn settle(&self, cx: &mut Context<'_>, id: u64, answer: pending::Answer) {
        if let Some(waiter) = self.outbox.as_ref().and_then(|o| o.answered(id)) {
            waiter.settle(cx, answer);
        }
    }

    /// A client's publish, if the services let it.
    fn publish(&self, cx: &mut Context<'_>, topic: &str, data: ValueRef<'_>) {
        let topics = &self.services.topics;
        if topics.publish.as_ref().is_none_or(|allow| allow(cx, topic).is_err()) {
            topics.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        events::publish_from(cx, topic, data, topics.exclude_publisher);
    }

    /// Settles the server's request `id` with [`CallError::Timeout`] after `timeout`, unless
    /// its answer comes first.
    fn expire(&mut self, cx: &mut Context<'_>, id: u64, timeout: std::time::Duration) {
        self.deadlines.insert(cx.set_timer(timeout), id);
    }

    fn release(&mut self, cx: &mut Context<'_>, callback: RawCallback) {
        if let Some(hook) = &self.services.on_release {
            hook(cx, &callback.into());
        }
    }
}

impl Reader for Endpoint {
    fn ingress(&mut self) -> &mut Ingress {
        &mut self.ingress
    }

    fn send_answers(&mut self, cx: &mut Context<'_>) {
        self.egress.flush(cx, &mut self.answers);
    }

    fn handle(
        &mut self,
        cx: &mut Context<'_>,
        msg: Result<Msg<'_, ValueRef<'_>>, MsgError>,
    ) -> bool {
        match msg {
            Ok(Msg::Call { id, method, args }) => match self.call(cx, Some(id), &method, args) {
                Ok(Some(value)) => self.answer(id, &value),
                Ok(None) => {} // answered later, through its Reply
                Err(failure) => self.fail(id, &failure),
            },
            Ok(Msg::Notify { method, args }) => {
                let _ = self.call(cx, None, &method, args);
            }
            Ok(Msg::Result { id, value }) => self.settle(cx, id, Ok(value.to_owned())),
            Ok(Msg::Error { id, error }) => self.settle(cx, id, Err(CallError::remote(error))),
            Ok(Msg::Cancel { id }) => {
                if let Some(outbox) = &self.outbox {
                    outbox.cancel(id);
                }
            }
            Ok(Msg::Release { callback }) => {
                let released = self.callbacks.borrow_mut().release(callback);
                if let Some(callback) = released {
                    self.release(cx, callback);
                }
            }
            Ok(Msg::Subscribe { id, topic, since }) => {
                let allowed =
                    self.services.topics.subscribe.as_ref().map_or(Ok(()), |f| f(cx, &topic));
                match allowed {
                    Ok(()) => self.subscribe(cx, id, &topic, since.as_ref()),
                    Err(message) => {
                        let code = ErrorCode::Unauthorized;
                        self.fail(id, &Failure { code, message, data: None });
                    }
                }
            }
            Ok(Msg::Publish { topic, data }) => self.publish(cx, &topic, data),
            Ok(Msg::Unsubscribe { id, topic }) => {
                let before = self.subscribing.len();
                self.subscribing.retain(|(t, _)| *t != *topic);
                let waiting = self.subscribing.len() < before;
                let was = cx.unsubscribe(&engine_topic(self.egress.wire(), &topic));
                self.answer_value(id, &(was || waiting));
            }
            Ok(Msg::Invoke { id: Some(id), callback, .. }) => {
                let message = format!("no callback {callback}");
                self.fail(id, &Failure { code: ErrorCode::Released, message, data: None });
            }
            // Events and invocations of server-side objects have no receiver here: ignored
            // (docs/rpc.md).
            Ok(_) => {}
            Err(MsgError { id: Some(id), reason }) => {
                self.fail(
                    id,
                    &Failure { code: ErrorCode::BadRequest, message: reason, data: None },
                );
            }
            Err(MsgError { id: None, reason }) => {
                let _ = cx.close(CloseCode::POLICY_VIOLATION, &reason);
                return false;
            }
        }
        true
    }
}

impl Handler for Endpoint {
    fn on_open(&mut self, cx: &mut Context<'_>) {
        self.ingress.open(cx);
        if self.egress.is_encrypted() {
            // Events are sealed with this connection's key, one by one.
            cx.intercept_publishes();
        }
        let refused = Arc::clone(&self.services.refused);
        let wire = self.egress.wire();
        self.outbox = Some(Arc::new(outbox::Outbox::new(cx.handle(), refused, wire)));
    }

    fn on_close(&mut self, cx: &mut Context<'_>, _close: crate::CloseInfo<'_>) {
        for waiter in self.outbox.as_ref().map(|o| o.abandon()).unwrap_or_default() {
            waiter.settle(cx, Err(CallError::Disconnected));
        }
        let released = self.callbacks.borrow_mut().release_all();
        for callback in released {
            self.release(cx, callback);
        }
        // After the release hook, so that it still finds what the instances hold.
        self.instances.get_mut().clear();
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, timer: TimerId) {
        if let Some(id) = self.deadlines.remove(&timer) {
            self.settle(cx, id, Err(CallError::Timeout));
        }
    }

    fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        self.receive(cx, Received::Message(msg));
    }

    fn on_binary_mut(&mut self, cx: &mut Context<'_>, payload: &mut [u8]) {
        self.receive(cx, Received::Binary(payload));
    }

    fn on_publish(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
        match msg {
            Message::Binary(packed) => self.egress.send_event(cx, packed),
            other => {
                let _ = cx.send(other);
            }
        }
    }
}
