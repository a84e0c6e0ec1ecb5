//! `#[bidir::callback]`: the interface's description and client-side dispatch
//! (`CallbackInterface for dyn Trait`), and the server's typed proxy it dereferences to.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::ext::IdentExt;
use syn::{Error, parse_quote};

use crate::model::{Declared, Kind, Method, hidden};

/// Names `Callback<dyn Trait>` answers itself (its own methods, or traits of the prelude it
/// implements): a proxy method of that name would never be reached.
const TAKEN: &[&str] = &[
    "raw",
    "id",
    "is_released",
    "clone",
    "clone_from",
    "to_owned",
    "into",
    "try_into",
    "eq",
    "ne",
];

pub(crate) fn expand(item: syn::ItemTrait) -> syn::Result<TokenStream> {
    let Declared { mut item, name, methods } = Declared::parse(item, Kind::Callback)?;
    for method in &methods {
        let ident = method.ident.unraw().to_string();
        if TAKEN.contains(&ident.as_str()) {
            let message = format!(
                "`{ident}` is a method of `Callback` itself: rename it in Rust \
                 (the wire name can stay: #[rpc(name = \"{ident}\")])"
            );
            return Err(Error::new(method.ident.span(), message));
        }
    }
    item.colon_token.get_or_insert_with(Default::default);
    item.supertraits.push(parse_quote!(::core::marker::Send));
    item.supertraits.push(parse_quote!(::core::marker::Sync));

    let (vis, ident) = (&item.vis, &item.ident);
    let proxy = format_ident!("{}Proxy", ident);
    let proxy_methods = methods.iter().map(|m| proxy_method(m, vis));
    let described = methods.iter().map(|m| {
        let (wire, params, answer) = (&m.name, m.arg_names(), m.output.is_some());
        quote!(::bidir::rpc::CallbackMethod::new(#wire, &[#(#params),*], #answer))
    });
    let (method, args) = (hidden("method"), hidden("args"));
    let arms = methods.iter().map(|m| dispatch_arm(m, &args));
    let proxy_doc = format!(
        "The server's proxy of a client's [`{ident}`]: what `Callback<dyn {ident}>` \
         dereferences to. Each method invokes the client's object (no answer, never waits) or \
         calls it for its answer (a `Pending`)."
    );
    Ok(quote! {
        #item

        #[doc = #proxy_doc]
        #[derive(Clone, Debug)]
        #vis struct #proxy(::bidir::rpc::RawCallback);

        impl ::core::convert::From<::bidir::rpc::RawCallback> for #proxy {
            fn from(raw: ::bidir::rpc::RawCallback) -> Self {
                Self(raw)
            }
        }

        impl ::core::convert::AsRef<::bidir::rpc::RawCallback> for #proxy {
            fn as_ref(&self) -> &::bidir::rpc::RawCallback {
                &self.0
            }
        }

        impl #proxy {
            #(#proxy_methods)*
        }

        impl ::bidir::rpc::CallbackInterface for dyn #ident {
            const NAME: &'static str = #name;
            const METHODS: &'static [::bidir::rpc::CallbackMethod] = &[#(#described),*];
            type Proxy = #proxy;

            fn dispatch(
                &self,
                #method: &str,
                #args: ::bidir::rpc::ValueRef<'_>,
            ) -> ::core::result::Result<
                ::core::option::Option<::bidir::rpc::Value>,
                (::bidir::protocol::rpc::ErrorCode, ::std::string::String),
            > {
                match #method {
                    #(#arms)*
                    _ => ::core::result::Result::Err(::bidir::rpc::dispatch::unknown::<Self>(#method)),
                }
            }
        }
    })
}

/// The proxy's method: an invocation for a method without a value, a call for one with.
fn proxy_method(m: &Method, vis: &syn::Visibility) -> TokenStream {
    let (ident, wire, docs) = (&m.ident, &m.name, &m.docs);
    let idents: Vec<_> = m.params.iter().map(|p| &p.ident).collect();
    let types = m.params.iter().map(|p| &p.ty);
    let (answer, send) = match &m.output {
        None => (quote!(()), quote!(invoke)),
        Some(ty) => (quote!(::bidir::rpc::Pending<#ty>), quote!(call)),
    };
    quote! {
        #(#docs)*
        #vis fn #ident(&self, #(#idents: #types),*)
            -> ::core::result::Result<#answer, ::bidir::rpc::CallbackError>
        {
            self.0.#send(#wire, (#(#idents,)*))
        }
    }
}

/// The dispatch of one method: its arguments decoded, the object's method run.
fn dispatch_arm(m: &Method, args: &syn::Ident) -> TokenStream {
    let (ident, wire) = (&m.ident, &m.name);
    let idents: Vec<_> = m.params.iter().map(|p| &p.ident).collect();
    let types = m.params.iter().map(|p| &p.ty);
    let run = if m.output.is_some() { quote!(call) } else { quote!(invocation) };
    quote! {
        #wire => ::bidir::rpc::dispatch::#run(#args, |(#(#idents,)*): (#(#types,)*)| {
            self.#ident(#(#idents),*)
        }),
    }
}
