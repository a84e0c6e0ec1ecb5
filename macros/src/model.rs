//! A declared trait as the macros see it: its wire name and its methods, each parameter in its
//! role. Everything a generator cannot serve is refused here, with the reason at its span.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    Attribute, Error, FnArg, GenericArgument, Ident, ItemTrait, LitStr, Pat, PathArguments,
    ReturnType, TraitItem, Type,
};

/// Which declaration a trait is: what its methods may take.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Service,
    Callback,
}

/// A trait declared with `#[bidir::service]` or `#[bidir::callback]`.
pub(crate) struct Declared {
    /// The trait, without the `#[rpc]` attributes.
    pub(crate) item: ItemTrait,
    /// Its name on the wire.
    pub(crate) name: String,
    pub(crate) methods: Vec<Method>,
}

pub(crate) struct Method {
    pub(crate) ident: Ident,
    /// Its name on the wire.
    pub(crate) name: String,
    /// Its doc comments, for the proxies.
    pub(crate) docs: Vec<Attribute>,
    pub(crate) params: Vec<Param>,
    /// `None` for `()`.
    pub(crate) output: Option<Type>,
}

pub(crate) struct Param {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
    pub(crate) role: Role,
}

pub(crate) enum Role {
    /// An argument on the wire.
    Arg,
    /// An argument on the wire, a callback of this interface (`Callback<dyn X>`).
    Callback(Type),
    /// `&mut Context<'_>`: the call's context, not on the wire.
    Context,
    /// `Reply<T>`: the method answers later with a `T`.
    Reply(Type),
}

impl Declared {
    pub(crate) fn parse(mut item: ItemTrait, kind: Kind) -> syn::Result<Self> {
        let mut errors = Errors::default();
        let name = errors.take(rpc_name(&mut item.attrs)).flatten();
        let name = name.unwrap_or_else(|| item.ident.unraw().to_string());
        if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
            errors.push(Error::new_spanned(&item.generics, "a declared trait cannot be generic"));
        }
        let mut methods = Vec::new();
        for member in &mut item.items {
            let TraitItem::Fn(f) = member else {
                errors.push(Error::new_spanned(member, "a declared trait holds methods only"));
                continue;
            };
            let wire = errors.take(rpc_name(&mut f.attrs)).flatten();
            let docs = f.attrs.iter().filter(|a| a.path().is_ident("doc")).cloned().collect();
            if let Some(method) = errors.take(Method::parse(&f.sig, wire, docs, kind)) {
                if methods.iter().any(|m: &Method| m.name == method.name) {
                    let message = format!("a second method named `{}` on the wire", method.name);
                    errors.push(Error::new(f.sig.ident.span(), message));
                }
                methods.push(method);
            }
        }
        errors.finish(Self { item, name, methods })
    }
}

impl Method {
    fn parse(
        sig: &syn::Signature,
        name: Option<String>,
        docs: Vec<Attribute>,
        kind: Kind,
    ) -> syn::Result<Self> {
        let mut errors = Errors::default();
        if let Some(token) = sig.asyncness {
            let message = "a declared method is synchronous: to answer later, take a `Reply<T>`";
            errors.push(Error::new(token.span(), message));
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            let message = "a declared method cannot be generic: its types are fixed on the wire";
            errors.push(Error::new_spanned(&sig.generics, message));
        }
        let mut inputs = sig.inputs.iter();
        match inputs.next() {
            Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
            other => {
                let message = "a declared method takes `&self` (keep mutable state in a Mutex, \
                               or a Cell in a per-connection instance)";
                errors.push(match other {
                    Some(input) => Error::new_spanned(input, message),
                    None => Error::new(sig.ident.span(), message),
                });
            }
        }
        let mut params = Vec::new();
        for input in inputs {
            if let Some(param) = errors.take(Param::parse(input, kind)) {
                params.push(param);
            }
        }
        for (role, what) in [(is_context as fn(&Role) -> bool, "`Context`"), (is_reply, "`Reply`")]
        {
            if let Some(second) = params.iter().filter(|p| role(&p.role)).nth(1) {
                errors.push(Error::new_spanned(&second.ty, format!("a second {what} parameter")));
            }
        }
        let output = match &sig.output {
            ReturnType::Type(_, ty) if !matches!(&**ty, Type::Tuple(t) if t.elems.is_empty()) => {
                Some((**ty).clone())
            }
            _ => None,
        };
        if let (Some(output), true) = (&output, params.iter().any(|p| is_reply(&p.role))) {
            let message = "a method that takes a `Reply` answers through it: it returns nothing";
            errors.push(Error::new_spanned(output, message));
        }
        let name = name.unwrap_or_else(|| sig.ident.unraw().to_string());
        errors.finish(Self { ident: sig.ident.clone(), name, docs, params, output })
    }

    /// The parameters on the wire, in order.
    pub(crate) fn args(&self) -> impl Iterator<Item = &Param> {
        self.params.iter().filter(|p| matches!(p.role, Role::Arg | Role::Callback(_)))
    }

    /// The names of the parameters on the wire, as descriptions give them.
    pub(crate) fn arg_names(&self) -> Vec<String> {
        self.args().map(|p| p.ident.unraw().to_string()).collect()
    }
}

impl Param {
    fn parse(input: &FnArg, kind: Kind) -> syn::Result<Self> {
        let FnArg::Typed(typed) = input else {
            return Err(Error::new_spanned(input, "`self` comes first"));
        };
        let ident = match &*typed.pat {
            Pat::Ident(p) if p.by_ref.is_none() && p.mutability.is_none() && p.subpat.is_none() => {
                p.ident.clone()
            }
            pat => {
                let message = "a parameter needs a plain name: it names the argument on the wire";
                return Err(Error::new_spanned(pat, message));
            }
        };
        let ty = (*typed.ty).clone();
        let role = role(&ty);
        if kind == Kind::Callback && matches!(role, Role::Context | Role::Reply(_)) {
            let message = "a callback method runs on the client: it takes no `Context` or `Reply`";
            return Err(Error::new_spanned(ty, message));
        }
        Ok(Self { ident, ty, role })
    }
}

fn is_context(role: &Role) -> bool {
    matches!(role, Role::Context)
}

fn is_reply(role: &Role) -> bool {
    matches!(role, Role::Reply(_))
}

/// What a parameter of type `ty` is, by the name of its type: `&mut Context<..>`,
/// `Reply<T>`, `Callback<T>` (however they are imported), or an argument.
fn role(ty: &Type) -> Role {
    if let Type::Reference(r) = ty
        && r.mutability.is_some()
        && last_segment(&r.elem).is_some_and(|(name, _)| name == "Context")
    {
        return Role::Context;
    }
    match last_segment(ty) {
        Some((name, Some(arg))) if name == "Reply" => Role::Reply(arg),
        Some((name, Some(arg))) if name == "Callback" => Role::Callback(arg),
        _ => Role::Arg,
    }
}

/// The types of `Result<T, E>` when `ty` is written so.
pub(crate) fn result_types(ty: &Type) -> Option<(Type, Type)> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    let PathArguments::AngleBracketed(args) = &last.arguments else { return None };
    let args: Vec<&GenericArgument> = args.args.iter().collect();
    match (last.ident == "Result", &args[..]) {
        (true, [GenericArgument::Type(t), GenericArgument::Type(e)]) => {
            Some((t.clone(), e.clone()))
        }
        _ => None,
    }
}

/// The last segment's name of a path type, and its one type argument if it has exactly one.
fn last_segment(ty: &Type) -> Option<(&Ident, Option<Type>)> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    let arg = match &last.arguments {
        PathArguments::AngleBracketed(args) if args.args.len() == 1 => match &args.args[0] {
            GenericArgument::Type(t) => Some(t.clone()),
            _ => None,
        },
        _ => None,
    };
    Some((&last.ident, arg))
}

/// The name given by `#[rpc(name = "...")]` among `attrs`, which loses the attribute.
fn rpc_name(attrs: &mut Vec<Attribute>) -> syn::Result<Option<String>> {
    let mut name = None;
    let mut result = Ok(());
    attrs.retain(|attr| {
        if !attr.path().is_ident("rpc") {
            return true;
        }
        let parsed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                let lit: LitStr = meta.value()?.parse()?;
                name = Some(lit.value());
                Ok(())
            } else {
                Err(meta.error("the one `rpc` option is `name = \"...\"`"))
            }
        });
        result = result.clone().and(parsed);
        false
    });
    result.map(|()| name)
}

/// Errors gathered over a declaration, so that one compile reports them all.
#[derive(Default)]
struct Errors(Option<Error>);

impl Errors {
    fn push(&mut self, error: Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn take<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|e| self.push(e)).ok()
    }

    fn finish<T>(self, value: T) -> syn::Result<T> {
        self.0.map_or(Ok(value), Err)
    }
}

/// An identifier of the generated code that the user's names cannot capture or shadow.
pub(crate) fn hidden(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}
