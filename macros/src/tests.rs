//! The declarations the macros refuse, and what they say.

use syn::{ItemTrait, parse_quote};

use crate::{callback, service};

/// The messages of every error `expand` reports for `item`.
fn errors(
    expand: fn(ItemTrait) -> syn::Result<proc_macro2::TokenStream>,
    item: ItemTrait,
) -> Vec<String> {
    match expand(item) {
        Ok(tokens) => panic!("accepted: {tokens}"),
        Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn unsupported_signatures_are_refused_each_with_its_reason() {
    let item = parse_quote! {
        trait Chat {
            fn generic<T>(&self, t: T);
            fn owned(self);
            fn mutable(&mut self);
            fn none();
            fn pattern(&self, (a, b): (u8, u8));
            fn mutable_name(&self, mut a: u8);
            async fn later(&self);
            fn replies(&self, a: Reply<u8>) -> u8;
            fn two(&self, a: &mut Context<'_>, b: &mut Context<'_>);
            fn fine(&self);
            #[rpc(name = "fine")]
            fn again(&self);
            #[rpc(nom = "x")]
            fn misnamed(&self);
            const N: u8;
        }
    };
    let generic = "a declared method cannot be generic: its types are fixed on the wire";
    let receiver = "a declared method takes `&self` (keep mutable state in a Mutex, or a Cell \
                    in a per-connection instance)";
    let pattern = "a parameter needs a plain name: it names the argument on the wire";
    assert_eq!(
        errors(service::expand, item),
        [
            generic,
            receiver,
            receiver,
            receiver,
            pattern,
            pattern,
            "a declared method is synchronous: to answer later, take a `Reply<T>`",
            "a method that takes a `Reply` answers through it: it returns nothing",
            "a second `Context` parameter",
            "a second method named `fine` on the wire",
            "the one `rpc` option is `name = \"...\"`",
            "a declared trait holds methods only",
        ]
    );
}

#[test]
fn a_service_method_named_new_would_hide_the_proxys_constructor() {
    let item = parse_quote!(
        trait Shop {
            fn new(&self);
        }
    );
    assert_eq!(
        errors(service::expand, item),
        ["`new` makes the client proxy: rename the method in Rust (the wire name can stay: \
          #[rpc(name = \"new\")])"]
    );
}

#[test]
fn generic_traits_are_refused() {
    let item = parse_quote!(
        trait Store<T> {
            fn put(&self, t: T);
        }
    );
    assert_eq!(errors(service::expand, item), ["a declared trait cannot be generic"]);
}

#[test]
fn a_callback_takes_no_context_or_reply_and_no_name_of_callback_itself() {
    let item = parse_quote! {
        trait Events {
            fn said(&self, cx: &mut Context<'_>);
            fn done(&self, reply: Reply<u8>);
        }
    };
    let message = "a callback method runs on the client: it takes no `Context` or `Reply`";
    assert_eq!(errors(callback::expand, item), [message, message]);
    let item = parse_quote!(
        trait Events {
            fn id(&self) -> u64;
        }
    );
    assert_eq!(
        errors(callback::expand, item),
        ["`id` is a method of `Callback` itself: rename it in Rust (the wire name can stay: \
          #[rpc(name = \"id\")])"]
    );
}

#[test]
fn names_come_from_the_trait_or_rpc_attributes_which_are_removed() {
    let item: ItemTrait = parse_quote! {
        #[rpc(name = "Calc")]
        pub trait Calculator {
            #[rpc(name = "Add")]
            fn add(&self, r#type: u8) -> Result<u8, String>;
        }
    };
    let tokens = service::expand(item).unwrap().to_string();
    assert!(tokens.contains("Service :: shared (\"Calc\""), "{tokens}");
    assert!(tokens.contains("Signature :: new (\"Add\" , & [\"type\"])"), "{tokens}");
    assert!(tokens.contains(". method ("), "a Result is a fallible method: {tokens}");
    assert!(!tokens.contains("rpc ("), "{tokens}");
}
