//! `<Trait>Client`, the client side's proxy of a `#[bidir::service]` trait: the same methods
//! over any `bidir::rpc::Caller`, without the parameters that are not on the wire.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::model::{Method, Role, hidden, result_types};

/// The proxy of trait `ident`, served as `name`.
pub(crate) fn expand(
    ident: &syn::Ident,
    vis: &syn::Visibility,
    name: &str,
    methods: &[Method],
) -> TokenStream {
    let client = format_ident!("{}Client", ident);
    let caller = hidden("caller");
    let methods = methods.iter().map(|m| method(m, name, vis, &caller));
    let doc = format!(
        "Calls [`{ident}`] on a server, through a `bidir::rpc::Caller` (the Rust client): \
         each method waits for its answer, its `_async` form does not. A method declared \
         `-> Result<R, E>` answers `Result<Result<R, E>, CallError>`: the outer error is the \
         call's, the inner the service's own."
    );
    quote! {
        #[doc = #doc]
        #[derive(Clone, Debug)]
        #vis struct #client<BidirCaller> {
            #caller: BidirCaller,
        }

        impl<BidirCaller: ::bidir::rpc::Caller> #client<BidirCaller> {
            /// A proxy calling through `caller` (`&client` borrows it, `client` owns it).
            #vis fn new(#caller: BidirCaller) -> Self {
                Self { #caller }
            }

            #(#methods)*
        }
    }
}

/// A method's blocking and non-blocking forms.
fn method(m: &Method, service: &str, vis: &syn::Visibility, caller: &syn::Ident) -> TokenStream {
    let (ident, docs) = (&m.ident, &m.docs);
    let ident_async = format_ident!("{}_async", ident);
    let wire = format!("{service}.{}", m.name);
    let idents: Vec<_> = m.args().map(|p| &p.ident).collect();
    let types: Vec<_> = m
        .args()
        .map(|p| match &p.role {
            Role::Callback(interface) => {
                quote!(&<BidirCaller as ::bidir::rpc::Caller>::Local<#interface>)
            }
            _ => {
                let ty = &p.ty;
                quote!(#ty)
            }
        })
        .collect();
    let reply = m.params.iter().find_map(|p| match &p.role {
        Role::Reply(t) => Some(quote!(#t)),
        _ => None,
    });
    let output = m.output.as_ref();
    let (value, answer, wait) = match (reply, output.and_then(result_types)) {
        (Some(t), _) => (t.clone(), t, quote!()),
        (None, Some((r, e))) => {
            let answer = quote!(::core::result::Result<#r, #e>);
            (quote!(#r), answer, quote!(::bidir::rpc::service_result))
        }
        (None, None) => {
            let value = output.map_or(quote!(()), |t| quote!(#t));
            (value.clone(), value, quote!())
        }
    };
    quote! {
        #(#docs)*
        #vis fn #ident(&self, #(#idents: #types),*)
            -> ::core::result::Result<#answer, ::bidir::rpc::CallError>
        {
            #wait(::bidir::rpc::Caller::call::<_, #value>(&self.#caller, #wire, (#(#idents,)*)))
        }

        #[doc = concat!("[`Self::", stringify!(#ident), "`] without waiting.")]
        #vis fn #ident_async(&self, #(#idents: #types),*)
            -> <BidirCaller as ::bidir::rpc::Caller>::Call<#value>
        {
            ::bidir::rpc::Caller::call_async(&self.#caller, #wire, (#(#idents,)*))
        }
    }
}
