//! What the typed declarations (`#[bidir::service]`, `#[bidir::callback]`) build on: callback
//! interfaces and their typed proxy [`Callback`], and [`Service`], a trait's methods ready for
//! [`Services::serve`](super::Services::serve).

use std::any::Any;
use std::fmt;
use std::ops::Deref;
use std::rc::Rc;

use serde::Serialize;
use serde::de::{Deserialize, DeserializeOwned, Deserializer};

use bidir_protocol::rpc::ErrorCode;

use super::callback::RawCallback;
use super::pending::CallError;
use super::reply::Reply;
use super::wire::{Value, ValueRef};
use super::{Answered, Env, Failure, run, run_deferred};
use crate::Context;

/// A callback interface: a trait declared with `#[bidir::callback]`, which implements this for
/// the trait's object type (`dyn ChatCallback`). The server holds a client's object as a
/// [`Callback<dyn ChatCallback>`](Callback); a client dispatches the invocations it receives
/// to its own object with [`CallbackInterface::dispatch`].
pub trait CallbackInterface {
    /// The interface's name in descriptions (`rpc.describe`): the trait's name, or the one
    /// given with `#[rpc(name = "...")]`.
    const NAME: &'static str;
    /// Its methods, in declaration order.
    const METHODS: &'static [CallbackMethod];
    /// What a [`Callback<Self>`](Callback) dereferences to: the interface's methods, each
    /// invoking or calling the client's object through the [`RawCallback`] it wraps.
    type Proxy: From<RawCallback> + AsRef<RawCallback> + Clone + fmt::Debug + Send + Sync;

    /// Runs `method` of this object with `args`, the array of its arguments (a client
    /// received `["cb", id, method, args, ...]`). Returns the answer, in the arguments'
    /// encoding, or `None` for a method that gives none.
    ///
    /// # Errors
    ///
    /// [`ErrorCode::BadArgs`] for arguments that do not fit the method's parameters,
    /// [`ErrorCode::UnknownMethod`] for a method the interface does not have, each with its
    /// reason; the client answers with them when the server wants an answer.
    fn dispatch(
        &self,
        method: &str,
        args: ValueRef<'_>,
    ) -> Result<Option<Value>, (ErrorCode, String)>;
}

/// One method of a [`CallbackInterface`], as `rpc.describe` lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallbackMethod {
    name: &'static str,
    params: &'static [&'static str],
    answer: bool,
}

impl CallbackMethod {
    /// Method `name` with parameters named `params`; `answer`: whether it returns a value
    /// (called for an answer) or not (invoked).
    pub const fn new(name: &'static str, params: &'static [&'static str], answer: bool) -> Self {
        Self { name, params, answer }
    }

    /// Its name on the wire.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its parameters' names, in order.
    pub fn params(&self) -> &'static [&'static str] {
        self.params
    }

    /// Whether it returns a value.
    pub fn answers(&self) -> bool {
        self.answer
    }
}

/// A callback object the client passed, typed by the interface it implements
/// (`Callback<dyn ChatCallback>`): the interface's methods are its own (through `Deref` to the
/// generated proxy), each returning `Result<(), CallbackError>` when it has no value (an
/// invocation: queued, never waits) or `Result<Pending<R>, CallbackError>` when it has one.
/// Plain `Callback` is `Callback<Untyped>`: it dereferences to [`RawCallback`], whose methods
/// take the method's name.
///
/// Everything else is [`RawCallback`]'s, which it wraps: `Send + Sync + Clone`, clones are the
/// same callback, keep it in a list and invoke it from any thread. Callbacks of the same object
/// are equal whatever their interface type, so the untyped one the release hook
/// ([`Services::on_release`](super::Services::on_release)) gets finds the typed ones:
/// `list.retain(|c| c != released)`.
pub struct Callback<T: ?Sized + CallbackInterface = Untyped> {
    proxy: T::Proxy,
}

/// The interface of a callback used by its methods' names, and the answer of a reply of any
/// value: plain [`Callback`] and [`Reply`] are `Callback<Untyped>` and `Reply<Untyped>`.
#[derive(Debug)]
pub enum Untyped {}

impl CallbackInterface for Untyped {
    const NAME: &'static str = "Untyped";
    const METHODS: &'static [CallbackMethod] = &[];
    type Proxy = RawCallback;

    fn dispatch(&self, _: &str, _: ValueRef<'_>) -> Result<Option<Value>, (ErrorCode, String)> {
        match *self {}
    }
}

impl<T: ?Sized + CallbackInterface> Callback<T> {
    /// The untyped callback.
    pub fn raw(&self) -> &RawCallback {
        self.proxy.as_ref()
    }

    /// The id the client gave it.
    pub fn id(&self) -> u64 {
        self.raw().id()
    }

    /// Whether it was released: invocations are refused.
    pub fn is_released(&self) -> bool {
        self.raw().is_released()
    }
}

impl<T: ?Sized + CallbackInterface> Deref for Callback<T> {
    type Target = T::Proxy;

    fn deref(&self) -> &T::Proxy {
        &self.proxy
    }
}

impl<T: ?Sized + CallbackInterface> Clone for Callback<T> {
    fn clone(&self) -> Self {
        Self { proxy: self.proxy.clone() }
    }
}

impl<T, U> PartialEq<Callback<U>> for Callback<T>
where
    T: ?Sized + CallbackInterface,
    U: ?Sized + CallbackInterface,
{
    fn eq(&self, other: &Callback<U>) -> bool {
        self.raw() == other.raw()
    }
}

impl<T: ?Sized + CallbackInterface> Eq for Callback<T> {}

impl<T: ?Sized + CallbackInterface> PartialEq<RawCallback> for Callback<T> {
    fn eq(&self, other: &RawCallback) -> bool {
        self.raw() == other
    }
}

impl<T: ?Sized + CallbackInterface> PartialEq<Callback<T>> for RawCallback {
    fn eq(&self, other: &Callback<T>) -> bool {
        self == other.raw()
    }
}

/// A typed view of `raw`: the caller knows the client's object implements `T`.
impl<T: ?Sized + CallbackInterface> From<RawCallback> for Callback<T> {
    fn from(raw: RawCallback) -> Self {
        Self { proxy: raw.into() }
    }
}

impl<T: ?Sized + CallbackInterface> fmt::Debug for Callback<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Callback").field(&T::NAME).field(self.raw()).finish()
    }
}

impl<'de, T: ?Sized + CallbackInterface> Deserialize<'de> for Callback<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        RawCallback::deserialize(deserializer).map(Self::from)
    }
}

/// The client side of a [`CallbackInterface`]: what the generated
/// [`CallbackInterface::dispatch`] runs for one method.
pub mod dispatch {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use bidir_protocol::rpc::ErrorCode;

    use super::super::{Value, ValueRef, decode_args, to_value};
    use super::CallbackInterface;

    /// Decodes `args` and runs `method`, which gives no answer.
    ///
    /// # Errors
    ///
    /// [`ErrorCode::BadArgs`] for arguments that are not an `A`.
    pub fn invocation<A: DeserializeOwned>(
        args: ValueRef<'_>,
        method: impl FnOnce(A),
    ) -> Result<Option<Value>, (ErrorCode, String)> {
        method(decode(args)?);
        Ok(None)
    }

    /// Decodes `args`, runs `method` and encodes its answer.
    ///
    /// # Errors
    ///
    /// [`ErrorCode::BadArgs`] for arguments that are not an `A`, [`ErrorCode::Internal`] for
    /// an answer serde cannot write.
    pub fn call<A: DeserializeOwned, R: Serialize>(
        args: ValueRef<'_>,
        method: impl FnOnce(A) -> R,
    ) -> Result<Option<Value>, (ErrorCode, String)> {
        let answer = method(decode(args)?);
        to_value(args.wire(), &answer).map(Some).map_err(|f| (f.code, f.message))
    }

    /// The error for a method interface `T` does not have.
    pub fn unknown<T: ?Sized + CallbackInterface>(method: &str) -> (ErrorCode, String) {
        (ErrorCode::UnknownMethod, format!("{} has no method {method}", T::NAME))
    }

    fn decode<A: DeserializeOwned>(args: ValueRef<'_>) -> Result<A, (ErrorCode, String)> {
        decode_args(args).map_err(|f| (f.code, f.message))
    }
}

/// What a generated client proxy (`<Trait>Client`) calls through: a connection to a server
/// that serves the trait. The Rust client implements it; a proxy over `&C` borrows the caller,
/// over `C` owns it.
pub trait Caller {
    /// A call on its way, as [`Caller::call_async`] returns it.
    type Call<R>;
    /// An object of the caller's passed as a callback argument: it serializes as
    /// `{"$cb": id}`.
    type Local<T: ?Sized>: Serialize;

    /// Calls `method` with `args` (a tuple of the arguments) and waits for its answer.
    ///
    /// # Errors
    ///
    /// Why no value came: the server's error answer ([`CallError::Remote`]), a timeout, the
    /// connection's end, an answer not of type `R`.
    fn call<A: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        args: A,
    ) -> Result<R, CallError>;

    /// Calls `method` with `args` without waiting.
    fn call_async<A: Serialize, R: DeserializeOwned>(&self, method: &str, args: A)
    -> Self::Call<R>;
}

impl<C: Caller + ?Sized> Caller for &C {
    type Call<R> = C::Call<R>;
    type Local<T: ?Sized> = C::Local<T>;

    fn call<A: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        args: A,
    ) -> Result<R, CallError> {
        (**self).call(method, args)
    }

    fn call_async<A: Serialize, R: DeserializeOwned>(&self, method: &str, args: A) -> C::Call<R> {
        (**self).call_async(method, args)
    }
}

/// The answer to a method declared `-> Result<R, E>`: the service's own error — a `service`
/// error answer — decoded from its data as the inner `Err`; every other failure stays the
/// outer one. What the generated client proxy returns; a `<name>_async` call's answer goes
/// through it the same way.
///
/// # Errors
///
/// The call's other errors; [`CallError::Json`] for a `service` error whose data is not an
/// `E`.
pub fn service_result<R, E: DeserializeOwned>(
    answer: Result<R, CallError>,
) -> Result<Result<R, E>, CallError> {
    match answer {
        Ok(value) => Ok(Ok(value)),
        Err(CallError::Remote { code: ErrorCode::Service, data, .. }) => {
            let data = data.as_deref().unwrap_or("null");
            serde_json::from_str(data).map(Err).map_err(|e| CallError::Json(e.to_string()))
        }
        Err(e) => Err(e),
    }
}

/// A method's description for `rpc.describe`: its name in the service, its parameters' names,
/// and which of them are callbacks of which interface.
#[derive(Clone, Debug)]
pub struct Signature {
    pub(super) name: &'static str,
    pub(super) params: &'static [&'static str],
    /// Parameter, interface name, interface methods.
    pub(super) callbacks: Vec<(&'static str, &'static str, &'static [CallbackMethod])>,
}

impl Signature {
    /// Method `name` (the part after `Service.`) with parameters named `params`, in order.
    pub fn new(name: &'static str, params: &'static [&'static str]) -> Self {
        Self { name, params, callbacks: Vec::new() }
    }

    /// Parameter `param` is a callback of interface `T`.
    pub fn callback<T: ?Sized + CallbackInterface>(mut self, param: &'static str) -> Self {
        self.callbacks.push((param, T::NAME, T::METHODS));
        self
    }
}

/// A method of a [`Service`], given its instance.
pub(super) type Typed<S> =
    dyn Fn(&S, &mut Context<'_>, ValueRef<'_>, Env<'_>) -> Answered + Send + Sync;

/// How a method runs on its instance: the shared one, or its connection's (`usize`: the
/// service's slot on the connection).
pub(super) type OnInstance<S> =
    dyn Fn(&Typed<S>, &mut Context<'_>, ValueRef<'_>, Env<'_>, usize) -> Answered + Send + Sync;

/// A service's methods over one instance type `S`, ready for
/// [`Services::serve`](super::Services::serve): what `#[bidir::service]` generates
/// (`ChatService::shared(..)`, `ChatService::per_connection(..)`). Each method is registered
/// as `Name.method`.
pub struct Service<S> {
    pub(super) name: &'static str,
    pub(super) on_instance: Box<OnInstance<S>>,
    pub(super) methods: Vec<(Signature, Box<Typed<S>>)>,
}

impl<S: 'static> Service<S> {
    /// Service `name` with one instance for every connection, on every worker: it needs to be
    /// `Send + Sync`.
    pub fn shared(name: &'static str, service: S) -> Self
    where
        S: Send + Sync,
    {
        Self::new(name, Box::new(move |typed, cx, args, env, _| typed(&service, cx, args, env)))
    }

    /// Service `name` with one instance per connection: `make` builds it on the connection's
    /// worker at the connection's first call of one of its methods; the connection drops it
    /// when it ends, after the release hook ran. It needn't be `Send`.
    pub fn per_connection<F>(name: &'static str, make: F) -> Self
    where
        F: Fn(&mut Context<'_>) -> S + Send + Sync + 'static,
    {
        let on_instance = move |typed: &Typed<S>,
                                cx: &mut Context<'_>,
                                args: ValueRef<'_>,
                                env: Env<'_>,
                                slot| {
            let instance = env.instance(slot, || make(cx))?;
            typed(&instance, cx, args, env)
        };
        Self::new(name, Box::new(on_instance))
    }

    fn new(name: &'static str, on_instance: Box<OnInstance<S>>) -> Self {
        Self { name, on_instance, methods: Vec::new() }
    }

    /// Adds a method answered with `f`'s value, or with its error as
    /// [`Services::method`](super::Services::method) does.
    pub fn method<A, R, E, F>(self, signature: Signature, f: F) -> Self
    where
        A: DeserializeOwned,
        R: Serialize,
        E: Serialize + fmt::Display,
        F: Fn(&S, &mut Context<'_>, A) -> Result<R, E> + Send + Sync + 'static,
    {
        self.add(signature, move |s, cx, args, _| run(args, |a| f(s, cx, a)))
    }

    /// Adds a method that cannot fail: answered with `f`'s value.
    pub fn infallible<A, R, F>(self, signature: Signature, f: F) -> Self
    where
        A: DeserializeOwned,
        R: Serialize,
        F: Fn(&S, &mut Context<'_>, A) -> R + Send + Sync + 'static,
    {
        self.add(signature, move |s, cx, args, _| run(args, |a| Ok::<_, Never>(f(s, cx, a))))
    }

    /// Adds a method that answers later, through its [`Reply`], as
    /// [`Services::deferred`](super::Services::deferred) does.
    pub fn deferred<A, T, F>(self, signature: Signature, f: F) -> Self
    where
        A: DeserializeOwned,
        T: ?Sized,
        F: Fn(&S, &mut Context<'_>, A, Reply<T>) + Send + Sync + 'static,
    {
        self.add(signature, move |s, cx, args, env| run_deferred(args, env, |a, r| f(s, cx, a, r)))
    }

    fn add<F>(mut self, signature: Signature, f: F) -> Self
    where
        F: Fn(&S, &mut Context<'_>, ValueRef<'_>, Env<'_>) -> Answered + Send + Sync + 'static,
    {
        self.methods.push((signature, Box::new(f)));
        self
    }
}

impl<S> fmt::Debug for Service<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let methods: Vec<&str> = self.methods.iter().map(|(s, _)| s.name).collect();
        f.debug_struct("Service").field("name", &self.name).field("methods", &methods).finish()
    }
}

/// The error of a method that cannot fail: there is none.
enum Never {}

impl Serialize for Never {
    fn serialize<Z: serde::Serializer>(&self, _: Z) -> Result<Z::Ok, Z::Error> {
        match *self {}
    }
}

impl fmt::Display for Never {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

/// Whether `instance` is an `S` (a connection's instances are kept as `dyn Any`).
pub(super) fn downcast<S: 'static>(instance: Rc<dyn Any>) -> Result<Rc<S>, Failure> {
    instance.downcast().map_err(|_| Failure {
        code: ErrorCode::Internal,
        message: "a connection's service instance of another type".to_owned(),
        data: None,
    })
}
