//! The attribute macros of bidir's typed rpc services, re-exported by `bidir` as
//! `bidir::service` and `bidir::callback` (use them from there: the generated code names
//! `::bidir`). A trait is declared once; the macros generate its registration on
//! `bidir::rpc::Services`, its description for `rpc.describe`, the server's typed proxy of
//! callbacks and the client side's dispatch. The generated code calls into `bidir::rpc`, where
//! the logic lives: this crate only reads declarations and writes calls.
//!
//! A declaration the macros cannot serve — generic traits or methods, a receiver other than
//! `&self`, a parameter that is a pattern rather than a name, `async` — is a compile error
//! that says so, at its place.

mod callback;
mod client;
mod model;
mod service;
#[cfg(test)]
mod tests;

use proc_macro::TokenStream;
use syn::{Error, ItemTrait, parse_macro_input};

/// Declares a service: every method of the trait is served as `Trait.method`
/// (`#[rpc(name = "...")]` under this attribute renames the service, on a method the method).
///
/// Methods take `&self`, then an optional `cx: &mut Context<'_>` (not on the wire), their
/// arguments (serde types, in wire order; `Callback<dyn X>` for a callback the client passes),
/// and an optional `reply: Reply<T>` to answer later (`T` sized: the client proxy returns it). They return a value, `Result<R, E>`
/// (written so; `E: Serialize + Display` answers the `service` error with `E` as its data) or
/// nothing. Generates `<Trait>Service::shared(impl)` and `<Trait>Service::per_connection(|cx|
/// impl)` for `Services::serve`, and `<Trait>Client`, the client side's proxy over a
/// `bidir::rpc::Caller`.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, service::expand)
}

/// Declares a callback interface, implemented by a client's object: adds `Send + Sync` to the
/// trait, implements `bidir::rpc::CallbackInterface` for `dyn Trait` (its description and the
/// client side's dispatch) and generates `<Trait>Proxy`, the server's typed proxy
/// `Callback<dyn Trait>` dereferences to: a method without a value is invoked, one with a value
/// is called for its answer.
#[proc_macro_attribute]
pub fn callback(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, callback::expand)
}

fn expand(
    attr: TokenStream,
    item: TokenStream,
    generate: fn(ItemTrait) -> syn::Result<proc_macro2::TokenStream>,
) -> TokenStream {
    if let Some(token) = proc_macro2::TokenStream::from(attr).into_iter().next() {
        let message = "no options here: rename with #[rpc(name = \"...\")] under this attribute";
        return Error::new(token.span(), message).into_compile_error().into();
    }
    let item = parse_macro_input!(item as ItemTrait);
    generate(item).unwrap_or_else(Error::into_compile_error).into()
}
