//! `#[bidir::service]`: `<Trait>Service`, which registers the trait's methods on
//! `bidir::rpc::Services` over a shared or a per-connection instance.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::client;
use crate::model::{Declared, Kind, Method, Role, hidden, result_types};

pub(crate) fn expand(item: syn::ItemTrait) -> syn::Result<TokenStream> {
    let Declared { item, name, methods } = Declared::parse(item, Kind::Service)?;
    if let Some(taken) = methods.iter().find(|m| m.ident == "new") {
        let message = "`new` makes the client proxy: rename the method in Rust \
                       (the wire name can stay: #[rpc(name = \"new\")])";
        return Err(syn::Error::new(taken.ident.span(), message));
    }
    let (vis, ident) = (&item.vis, &item.ident);
    let service = format_ident!("{}Service", ident);
    let (instance, registered) = (hidden("service"), hidden("instance"));
    let register = methods.iter().map(register);
    let doc = format!(
        "Serves [`{ident}`] as `{name}`: `Services::new().serve({service}::shared(..))` or \
         `.serve({service}::per_connection(..))` registers each of its methods as \
         `{name}.method`."
    );
    let client = client::expand(ident, vis, &name, &methods);
    Ok(quote! {
        #item

        #client

        #[doc = #doc]
        #[derive(Clone, Copy, Debug)]
        #vis struct #service;

        impl #service {
            /// One instance for every connection, called from every worker: it needs to be
            /// `Send + Sync`.
            #vis fn shared<BidirImpl>(#instance: BidirImpl) -> ::bidir::rpc::Service<BidirImpl>
            where
                BidirImpl: #ident + ::core::marker::Send + ::core::marker::Sync + 'static,
            {
                Self::methods(::bidir::rpc::Service::shared(#name, #instance))
            }

            /// One instance per connection, made by `make` on the connection's worker at its
            /// first call of this service, dropped when the connection ends: it needn't be
            /// `Send`.
            #vis fn per_connection<BidirImpl, BidirMake>(
                make: BidirMake,
            ) -> ::bidir::rpc::Service<BidirImpl>
            where
                BidirImpl: #ident + 'static,
                BidirMake: ::core::ops::Fn(&mut ::bidir::Context<'_>) -> BidirImpl
                    + ::core::marker::Send
                    + ::core::marker::Sync
                    + 'static,
            {
                Self::methods(::bidir::rpc::Service::per_connection(#name, make))
            }

            fn methods<BidirImpl: #ident + 'static>(
                #registered: ::bidir::rpc::Service<BidirImpl>,
            ) -> ::bidir::rpc::Service<BidirImpl> {
                #registered #(#register)*
            }
        }
    })
}

/// `.method(signature, closure)`, `.infallible(..)` or `.deferred(..)` for method `m`.
fn register(m: &Method) -> TokenStream {
    let (ident, wire, params) = (&m.ident, &m.name, m.arg_names());
    let callbacks = m.args().zip(&params).filter_map(|(p, name)| match &p.role {
        Role::Callback(interface) => Some(quote!(.callback::<#interface>(#name))),
        _ => None,
    });
    let signature = quote!(::bidir::rpc::Signature::new(#wire, &[#(#params),*]) #(#callbacks)*);
    let (instance, cx, reply) = (hidden("instance"), hidden("cx"), hidden("reply"));
    let idents: Vec<_> = m.args().map(|p| &p.ident).collect();
    let types = m.args().map(|p| &p.ty);
    let uses_cx = m.params.iter().any(|p| matches!(p.role, Role::Context));
    let cx_pattern = if uses_cx { quote!(#cx) } else { quote!(_) };
    let passed = m.params.iter().map(|p| match &p.role {
        Role::Context => quote!(#cx),
        Role::Reply(_) => quote!(#reply),
        Role::Arg | Role::Callback(_) => {
            let ident = &p.ident;
            quote!(#ident)
        }
    });
    let reply_type = m.params.iter().find_map(|p| match &p.role {
        Role::Reply(t) => Some(t),
        _ => None,
    });
    let (register, reply_param) = match (reply_type, m.output.as_ref().and_then(result_types)) {
        (Some(t), _) => (quote!(deferred), quote!(, #reply: ::bidir::rpc::Reply<#t>)),
        (None, Some(_)) => (quote!(method), quote!()),
        (None, None) => (quote!(infallible), quote!()),
    };
    quote! {
        .#register(
            #signature,
            |#instance: &BidirImpl,
             #cx_pattern: &mut ::bidir::Context<'_>,
             (#(#idents,)*): (#(#types,)*)
             #reply_param| #instance.#ident(#(#passed),*),
        )
    }
}
