//! Parsing of the attributes' options, checks of the function, and the
//! expansion.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Attribute, Expr, Ident, ItemFn, Lit, Token};

/// Which attribute is being expanded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Main,
    Test,
}

impl Kind {
    fn attr_name(self) -> &'static str {
        match self {
            Kind::Main => "#[fulcrum::main]",
            Kind::Test => "#[fulcrum::test]",
        }
    }
}

/// The scheduler the generated runtime uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sched {
    /// Multi-thread, `Scheduler::Dlb`.
    Dlb,
    /// Multi-thread, `Scheduler::WorkStealing`.
    Stealing,
    /// `Builder::new_current_thread()`.
    Current,
}

/// The DLB backend the generated runtime asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DlbBackend {
    /// `Backend::Auto`.
    Auto,
    /// `Backend::Software`.
    Soft,
    /// `Backend::Hardware { device: 0 }`.
    Hw,
}

/// What the options asked for, after defaults and checks.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) scheduler: Sched,
    /// `None`: do not call `worker_threads` (the runtime's default, the
    /// available parallelism). Always `None` for [`Sched::Current`].
    pub(crate) workers: Option<usize>,
    /// `None`: do not call `dlb_backend` (the runtime's default, `Auto`).
    pub(crate) dlb: Option<DlbBackend>,
    /// `None`: `::fulcrum`.
    pub(crate) crate_path: Option<syn::Path>,
    /// `start_paused = true`: the runtime's clock starts paused.
    pub(crate) start_paused: bool,
}

/// Worker count of `#[fulcrum::test]` when `workers` is not given.
pub(crate) const TEST_DEFAULT_WORKERS: usize = 2;

/// The option names, as listed in messages.
const KNOWN: [&str; 7] = [
    "workers",
    "worker_threads",
    "scheduler",
    "flavor",
    "dlb",
    "start_paused",
    "crate",
];

fn unknown(name: &Ident) -> syn::Error {
    syn::Error::new(
        name.span(),
        format!(
            "unknown option `{name}`; expected one of: {}",
            KNOWN.join(", ")
        ),
    )
}

/// One `name = value` of the attribute's arguments.
struct RawOption {
    name: Ident,
    value: Expr,
}

impl Parse for RawOption {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if !input.peek(Ident::peek_any) {
            return Err(input.error(format!(
                "expected an option such as `workers = 4`; the options are: {}",
                KNOWN.join(", ")
            )));
        }
        // `parse_any` so that the keyword `crate` is accepted as a name.
        let name = Ident::parse_any(input)?;
        if !input.peek(Token![=]) {
            if !KNOWN.iter().any(|k| name == k) {
                return Err(unknown(&name));
            }
            let example = match name.to_string().as_str() {
                "workers" | "worker_threads" => "4",
                "scheduler" => "\"dlb\"",
                "flavor" => "\"multi_thread\"",
                "dlb" => "\"auto\"",
                "start_paused" => "true",
                _ => "\"path::to::fulcrum\"",
            };
            return Err(syn::Error::new(
                name.span(),
                format!("the option `{name}` needs a value, as in `{name} = {example}`"),
            ));
        }
        input.parse::<Token![=]>()?;
        let value = input.parse::<Expr>()?;
        Ok(RawOption { name, value })
    }
}

/// Looks through the invisible groups that `macro_rules!` wraps `$x:expr`
/// fragments in.
fn ungroup(expr: &Expr) -> &Expr {
    match expr {
        Expr::Group(g) => ungroup(&g.expr),
        Expr::Paren(p) => ungroup(&p.expr),
        e => e,
    }
}

fn lit_str(name: &Ident, value: &Expr, accepted: &str) -> syn::Result<syn::LitStr> {
    match ungroup(value) {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.clone()),
        other => Err(syn::Error::new_spanned(
            other,
            format!("`{name}` expects a string literal: one of {accepted}"),
        )),
    }
}

/// Reads a string option whose value must be one of `table`'s names;
/// returns the matching value and the text given.
fn choice<T: Copy>(
    name: &Ident,
    value: &Expr,
    what: &str,
    table: &[(&str, T)],
) -> syn::Result<(T, String)> {
    let accepted = table
        .iter()
        .map(|(n, _)| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let s = lit_str(name, value, &accepted)?;
    let text = s.value();
    match table.iter().find(|(n, _)| *n == text) {
        Some(&(_, v)) => Ok((v, text)),
        None => Err(syn::Error::new(
            s.span(),
            format!("unknown {what} `{text}`; expected one of: {accepted}"),
        )),
    }
}

/// The options seen so far, each with the name it was given under (for
/// messages and spans) and its position (to report conflicts on the later
/// one).
#[derive(Default)]
struct Seen {
    workers: Option<(Ident, usize)>,
    scheduler: Option<(Ident, Sched, String, usize)>,
    flavor: Option<(Ident, Sched, String, usize)>,
    dlb: Option<(Ident, DlbBackend)>,
    start_paused: Option<(Ident, bool)>,
    crate_path: Option<(Ident, syn::Path)>,
}

/// Collects errors so that every mistake is reported, not only the first.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

fn duplicate(name: &Ident, first: &Ident) -> syn::Error {
    let msg = if name == first {
        format!("duplicate option `{name}`")
    } else {
        format!("`{name}` is an alias of `{first}`, which is already set")
    };
    syn::Error::new(name.span(), msg)
}

/// Parses the attribute's arguments into a [`Config`], with `kind`'s
/// defaults.
pub(crate) fn parse_config(args: TokenStream, kind: Kind) -> syn::Result<Config> {
    let options = Punctuated::<RawOption, Token![,]>::parse_terminated.parse2(args)?;
    let mut errors = Errors::default();
    let mut seen = Seen::default();

    // The first name each option was given under, by canonical name.
    let mut given: Vec<(&'static str, Ident)> = Vec::new();
    for (index, RawOption { name, value }) in options.into_iter().enumerate() {
        let canonical = match KNOWN.iter().find(|k| name == **k) {
            Some(&"worker_threads") => "workers",
            Some(k) => k,
            None => {
                errors.push(unknown(&name));
                continue;
            }
        };
        if let Some((_, first)) = given.iter().find(|(c, _)| *c == canonical) {
            errors.push(duplicate(&name, first));
            continue;
        }
        given.push((canonical, name.clone()));
        match canonical {
            "workers" => {
                let n = match ungroup(&value) {
                    Expr::Lit(syn::ExprLit {
                        lit: Lit::Int(int), ..
                    }) => match int.base10_parse::<usize>() {
                        Ok(0) => Err(syn::Error::new_spanned(
                            int,
                            format!("`{name}` must be at least 1"),
                        )),
                        Ok(n) => Ok(n),
                        Err(e) => Err(syn::Error::new_spanned(
                            int,
                            format!("`{name}` must fit a `usize`: {e}"),
                        )),
                    },
                    other => Err(syn::Error::new_spanned(
                        other,
                        format!("`{name}` expects an integer literal, as in `{name} = 4`"),
                    )),
                };
                match n {
                    Ok(n) => seen.workers = Some((name, n)),
                    Err(e) => errors.push(e),
                }
            }
            "scheduler" => {
                let table = [
                    ("dlb", Sched::Dlb),
                    ("stealing", Sched::Stealing),
                    ("current", Sched::Current),
                ];
                match choice(&name, &value, "scheduler", &table) {
                    Ok((sched, text)) => seen.scheduler = Some((name, sched, text, index)),
                    Err(e) => errors.push(e),
                }
            }
            "flavor" => {
                // The scheduler of a multi-thread runtime is the `scheduler`
                // option's business; DLB by default.
                let table = [
                    ("multi_thread", Sched::Dlb),
                    ("current_thread", Sched::Current),
                ];
                match choice(&name, &value, "flavor", &table) {
                    Ok((sched, text)) => seen.flavor = Some((name, sched, text, index)),
                    Err(e) => errors.push(e),
                }
            }
            "dlb" => {
                let table = [
                    ("auto", DlbBackend::Auto),
                    ("soft", DlbBackend::Soft),
                    ("hw", DlbBackend::Hw),
                ];
                match choice(&name, &value, "DLB backend", &table) {
                    Ok((backend, _)) => seen.dlb = Some((name, backend)),
                    Err(e) => errors.push(e),
                }
            }
            "start_paused" => match ungroup(&value) {
                Expr::Lit(syn::ExprLit {
                    lit: Lit::Bool(b), ..
                }) => seen.start_paused = Some((name, b.value)),
                other => errors.push(syn::Error::new_spanned(
                    other,
                    format!("`{name}` expects `true` or `false`"),
                )),
            },
            "crate" => {
                let parsed = match ungroup(&value) {
                    Expr::Lit(syn::ExprLit {
                        lit: Lit::Str(s), ..
                    }) => s.parse::<syn::Path>().map_err(|_| {
                        syn::Error::new(
                            s.span(),
                            "`crate` expects a path, as in `crate = \"my_crate::fulcrum\"`",
                        )
                    }),
                    Expr::Path(p) if p.qself.is_none() && p.attrs.is_empty() => Ok(p.path.clone()),
                    other => Err(syn::Error::new_spanned(
                        other,
                        "`crate` expects a path, as in `crate = \"my_crate::fulcrum\"`",
                    )),
                };
                match parsed {
                    Ok(path) => seen.crate_path = Some((name, path)),
                    Err(e) => errors.push(e),
                }
            }
            _ => unreachable!("`{canonical}` is in KNOWN"),
        }
    }

    // `flavor` and `scheduler` together must agree: `multi_thread` goes with
    // "dlb" or "stealing", `current_thread` with "current".
    let scheduler = match (&seen.scheduler, &seen.flavor) {
        (Some((s_name, sched, s_text, s_index)), Some((f_name, flavor, f_text, f_index))) => {
            let agree = (*sched == Sched::Current) == (*flavor == Sched::Current);
            if !agree {
                // Report on whichever came second.
                let (later, msg) = if s_index > f_index {
                    (
                        s_name,
                        format!("`scheduler = \"{s_text}\"` contradicts `flavor = \"{f_text}\"`"),
                    )
                } else {
                    (
                        f_name,
                        format!("`flavor = \"{f_text}\"` contradicts `scheduler = \"{s_text}\"`"),
                    )
                };
                errors.push(syn::Error::new(later.span(), msg));
            }
            *sched
        }
        (Some((_, sched, ..)), None) | (None, Some((_, sched, ..))) => *sched,
        // A paused clock needs the current-thread runtime; with no
        // scheduler asked for, `start_paused = true` picks it (tokio's
        // test default), so that tokio's `#[tokio::test(start_paused =
        // true)]` ports by renaming.
        (None, None) if matches!(seen.start_paused, Some((_, true))) => Sched::Current,
        (None, None) => Sched::Dlb,
    };

    if let Some((name, true)) = &seen.start_paused {
        if scheduler != Sched::Current {
            errors.push(syn::Error::new(
                name.span(),
                "`start_paused = true` needs the current-thread scheduler \
                 (`flavor = \"current_thread\"`, or no scheduler option): only its clock \
                 can be paused",
            ));
        }
    }

    if scheduler == Sched::Current {
        if let Some((name, _)) = &seen.workers {
            errors.push(syn::Error::new(
                name.span(),
                format!(
                    "`{name}` cannot be set with the current-thread scheduler, \
                     which runs everything on the calling thread"
                ),
            ));
        }
        if let Some((name, _)) = &seen.dlb {
            errors.push(syn::Error::new(
                name.span(),
                "`dlb` cannot be set with the current-thread scheduler, which has no DLB queue",
            ));
        }
    }
    errors.finish()?;

    let workers = match (scheduler, seen.workers) {
        (Sched::Current, _) => None,
        (_, Some((_, n))) => Some(n),
        (_, None) => match kind {
            Kind::Main => None,
            Kind::Test => Some(TEST_DEFAULT_WORKERS),
        },
    };
    Ok(Config {
        scheduler,
        workers,
        dlb: seen.dlb.map(|(_, b)| b),
        crate_path: seen.crate_path.map(|(_, p)| p),
        start_paused: matches!(seen.start_paused, Some((_, true))),
    })
}

fn is_test_attr(attr: &Attribute) -> bool {
    let segments: Vec<String> = attr
        .path()
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    match segments.as_slice() {
        [only] => only == "test",
        [first, .., last] => last == "test" && (first == "core" || first == "std"),
        [] => false,
    }
}

/// The checks of the function itself.
fn check_fn(item: &ItemFn, kind: Kind) -> syn::Result<()> {
    let mut errors = Errors::default();
    let sig = &item.sig;
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new_spanned(
            sig.fn_token,
            "the `async` keyword is missing from the function declaration",
        ));
    }
    let who = match kind {
        Kind::Main if sig.ident == "main" => Some("main"),
        Kind::Main => None,
        Kind::Test => Some("test"),
    };
    if let Some(who) = who {
        if !sig.inputs.is_empty() {
            errors.push(syn::Error::new_spanned(
                &sig.inputs,
                format!("the {who} function cannot accept arguments"),
            ));
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            let span_of: &dyn ToTokens = if sig.generics.params.is_empty() {
                &sig.generics.where_clause
            } else {
                &sig.generics
            };
            errors.push(syn::Error::new_spanned(
                span_of,
                format!("the {who} function cannot have generic parameters"),
            ));
        }
    }
    if kind == Kind::Test {
        if let Some(attr) = item.attrs.iter().find(|a| is_test_attr(a)) {
            errors.push(syn::Error::new_spanned(
                attr,
                "a second test attribute is supplied: `#[fulcrum::test]` already makes \
                 the function a test; remove this one",
            ));
        }
    }
    errors.finish()
}

/// Expands `#[fulcrum::main]` or `#[fulcrum::test]` (`kind`) with the
/// attribute's `args` on `item`.
pub(crate) fn expand(args: TokenStream, item: TokenStream, kind: Kind) -> TokenStream {
    let item_fn: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            let e = syn::Error::new(
                e.span(),
                format!("{} applies to an `async fn`: {e}", kind.attr_name()),
            );
            // The item as it was, so that the rest of the crate still sees it.
            let mut out = item;
            out.extend(e.to_compile_error());
            return out;
        }
    };
    let checked = check_fn(&item_fn, kind);
    let config = parse_config(args, kind);
    match (checked, config) {
        (Ok(()), Ok(config)) => generate(item_fn, kind, &config),
        (checked, config) => {
            let mut errors = Errors::default();
            if let Err(e) = checked {
                errors.push(e);
            }
            if let Err(e) = config {
                errors.push(e);
            }
            let mut out = fallback(item_fn, kind);
            if let Err(e) = errors.finish() {
                out.extend(e.to_compile_error());
            }
            out
        }
    }
}

/// The outer and the inner (`#![...]`) attributes, apart.
fn split_attrs(attrs: Vec<Attribute>) -> (Vec<Attribute>, Vec<Attribute>) {
    attrs
        .into_iter()
        .partition(|a| matches!(a.style, syn::AttrStyle::Outer))
}

/// The successful expansion.
fn generate(item: ItemFn, kind: Kind, config: &Config) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        mut sig,
        block,
    } = item;
    sig.asyncness = None;
    let (outer, inner) = split_attrs(attrs);

    // As tokio does: when the body's type does not match the declared
    // return type, rustc points at the generated `return`, which carries the
    // span of the body's last statement.
    let (last_start, last_end) = {
        let mut tokens = block
            .stmts
            .last()
            .map(ToTokens::into_token_stream)
            .unwrap_or_default()
            .into_iter();
        let start = tokens.next().map_or_else(Span::call_site, |t| t.span());
        let end = tokens.last().map_or(start, |t| t.span());
        (start, end)
    };

    let krate = match &config.crate_path {
        Some(path) => path.to_token_stream(),
        None => quote!(::fulcrum),
    };
    let private = quote!(#krate::__private);

    let mut builder = match config.scheduler {
        Sched::Current => quote!(#private::Builder::new_current_thread()),
        Sched::Dlb => quote! {
            #private::Builder::new_multi_thread().scheduler(#private::Scheduler::Dlb)
        },
        Sched::Stealing => quote! {
            #private::Builder::new_multi_thread().scheduler(#private::Scheduler::WorkStealing)
        },
    };
    if let Some(n) = config.workers {
        builder = quote!(#builder.worker_threads(#n));
    }
    if let Some(backend) = config.dlb {
        let backend = match backend {
            DlbBackend::Auto => quote!(#private::Backend::Auto),
            DlbBackend::Soft => quote!(#private::Backend::Software),
            DlbBackend::Hw => quote!(#private::Backend::Hardware { device: 0 }),
        };
        builder = quote!(#builder.dlb_backend(#backend));
    }
    if config.start_paused {
        builder = quote!(#builder.start_paused(true));
    }
    let builder = quote_spanned!(last_start=> #builder.enable_all());

    let (test_attr, body) = match kind {
        Kind::Main => (quote!(), quote!(let body = async #block;)),
        Kind::Test => {
            // As tokio does for tests: block on a `Pin<&mut dyn Future>`, so
            // that a suite of many tests does not instantiate `block_on`
            // once per test.
            let output = match &sig.output {
                syn::ReturnType::Default => quote!(()),
                syn::ReturnType::Type(_, ty) => quote!(#ty),
            };
            (
                quote!(#[::core::prelude::v1::test]),
                quote! {
                    let body = async #block;
                    let body = ::core::pin::pin!(body);
                    let body: ::core::pin::Pin<
                        &mut dyn ::core::future::Future<Output = #output>,
                    > = body;
                },
            )
        }
    };

    let run = quote_spanned! {last_end=>
        #[allow(clippy::expect_used, clippy::diverging_sub_expression, clippy::needless_return)]
        {
            let rt = match #builder.build() {
                ::core::result::Result::Ok(rt) => rt,
                ::core::result::Result::Err(e) => {
                    ::core::panic!("failed to build the Fulcrum runtime: {}", e)
                }
            };
            return rt.block_on(body);
        }
    };

    quote! {
        #test_attr
        #(#outer)*
        #vis #sig {
            #(#inner)*
            #body
            #run
        }
    }
}

/// What is emitted beside the errors: the function, no longer `async`, with
/// its body type-checked in an async block that is never run. It names
/// nothing of the runtime, so that a mistake in the attribute (even in
/// `crate = ...`) is the only error reported, and the function stays
/// visible to the rest of the crate and to IDEs.
fn fallback(item: ItemFn, kind: Kind) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        mut sig,
        block,
    } = item;
    sig.asyncness = None;
    let (outer, inner) = split_attrs(attrs);
    let outer = outer.into_iter().filter(|a| !is_test_attr(a));

    // A `main` or a test cannot take arguments nor be generic: drop them
    // (rustc would add its own errors for them), and bind the arguments in
    // the body so that it still type-checks.
    let mut bindings = Vec::new();
    if kind == Kind::Test || sig.ident == "main" {
        sig.generics = syn::Generics::default();
        for arg in std::mem::take(&mut sig.inputs) {
            if let syn::FnArg::Typed(syn::PatType { pat, ty, .. }) = arg {
                bindings.push(quote!(let #pat: #ty = ::core::unreachable!();));
            }
        }
    }
    let span = block.span();
    quote_spanned! {span=>
        #(#outer)*
        #[allow(dead_code, unreachable_code, unused_variables, clippy::diverging_sub_expression)]
        #vis #sig {
            #(#inner)*
            #(#bindings)*
            let body = async #block;
            ::core::mem::drop(body);
            ::core::unreachable!()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str, kind: Kind) -> syn::Result<Config> {
        parse_config(args.parse().expect("tokens"), kind)
    }

    fn err(args: &str) -> String {
        match parse(args, Kind::Main) {
            Ok(c) => panic!("`{args}` parsed: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults() {
        let main = parse("", Kind::Main).unwrap();
        assert_eq!(main.scheduler, Sched::Dlb);
        assert_eq!(main.workers, None);
        assert_eq!(main.dlb, None);
        assert!(main.crate_path.is_none());

        let test = parse("", Kind::Test).unwrap();
        assert_eq!(test.scheduler, Sched::Dlb);
        assert_eq!(test.workers, Some(TEST_DEFAULT_WORKERS));
    }

    #[test]
    fn options() {
        let c = parse("workers = 4, scheduler = \"stealing\"", Kind::Main).unwrap();
        assert_eq!(c.scheduler, Sched::Stealing);
        assert_eq!(c.workers, Some(4));

        let c = parse("worker_threads = 3, dlb = \"soft\",", Kind::Test).unwrap();
        assert_eq!(c.scheduler, Sched::Dlb);
        assert_eq!(c.workers, Some(3));
        assert_eq!(c.dlb, Some(DlbBackend::Soft));

        let c = parse("dlb = \"hw\"", Kind::Main).unwrap();
        assert_eq!(c.dlb, Some(DlbBackend::Hw));
        let c = parse("dlb = \"auto\"", Kind::Main).unwrap();
        assert_eq!(c.dlb, Some(DlbBackend::Auto));

        let c = parse("scheduler = \"current\"", Kind::Test).unwrap();
        assert_eq!(c.scheduler, Sched::Current);
        assert_eq!(c.workers, None, "no default worker count when current");

        let c = parse("crate = \"my::fulcrum\"", Kind::Main).unwrap();
        let path = c.crate_path.unwrap().to_token_stream().to_string();
        assert_eq!(path, "my :: fulcrum");
        let c = parse("crate = ::my::fulcrum", Kind::Main).unwrap();
        let path = c.crate_path.unwrap().to_token_stream().to_string();
        assert_eq!(path, ":: my :: fulcrum");
    }

    #[test]
    fn tokio_spellings() {
        let c = parse("flavor = \"multi_thread\", worker_threads = 4", Kind::Main).unwrap();
        assert_eq!(c.scheduler, Sched::Dlb);
        assert_eq!(c.workers, Some(4));

        let c = parse("flavor = \"current_thread\"", Kind::Test).unwrap();
        assert_eq!(c.scheduler, Sched::Current);

        let c = parse(
            "flavor = \"multi_thread\", scheduler = \"stealing\"",
            Kind::Main,
        )
        .unwrap();
        assert_eq!(c.scheduler, Sched::Stealing);
        let c = parse(
            "scheduler = \"current\", flavor = \"current_thread\"",
            Kind::Main,
        )
        .unwrap();
        assert_eq!(c.scheduler, Sched::Current);
    }

    #[test]
    fn errors() {
        assert_eq!(
            err("x = 1"),
            "unknown option `x`; expected one of: workers, worker_threads, scheduler, flavor, dlb, start_paused, crate"
        );
        assert_eq!(err("workers = 0"), "`workers` must be at least 1");
        assert_eq!(
            err("workers = \"4\""),
            "`workers` expects an integer literal, as in `workers = 4`"
        );
        assert_eq!(
            err("workers = 2, scheduler = \"current\""),
            "`workers` cannot be set with the current-thread scheduler, which runs everything on the calling thread"
        );
        assert_eq!(
            err("workers = 2, workers = 3"),
            "duplicate option `workers`"
        );
        assert_eq!(
            err("workers = 2, worker_threads = 3"),
            "`worker_threads` is an alias of `workers`, which is already set"
        );
        assert_eq!(
            err("scheduler = \"fast\""),
            "unknown scheduler `fast`; expected one of: \"dlb\", \"stealing\", \"current\""
        );
        assert_eq!(
            err("dlb = \"gpu\""),
            "unknown DLB backend `gpu`; expected one of: \"auto\", \"soft\", \"hw\""
        );
        assert_eq!(
            err("flavor = \"multi\""),
            "unknown flavor `multi`; expected one of: \"multi_thread\", \"current_thread\""
        );
        assert_eq!(
            err("flavor = \"current_thread\", scheduler = \"dlb\""),
            "`scheduler = \"dlb\"` contradicts `flavor = \"current_thread\"`"
        );
        assert_eq!(
            err("dlb = \"soft\", flavor = \"current_thread\""),
            "`dlb` cannot be set with the current-thread scheduler, which has no DLB queue"
        );
        assert_eq!(
            err("workers"),
            "the option `workers` needs a value, as in `workers = 4`"
        );
        assert!(err("crate = \"not a path\"").starts_with("`crate` expects a path"));
        assert!(err("4").starts_with("expected an option such as `workers = 4`"));
    }

    #[test]
    fn start_paused() {
        let c = parse("start_paused = true", Kind::Test).unwrap();
        assert_eq!(
            c.scheduler,
            Sched::Current,
            "picks the current-thread runtime"
        );
        assert!(c.start_paused);
        assert_eq!(c.workers, None);
        let c = parse(
            "flavor = \"current_thread\", start_paused = true",
            Kind::Main,
        )
        .unwrap();
        assert!(c.start_paused);
        let c = parse("start_paused = false", Kind::Test).unwrap();
        assert_eq!(c.scheduler, Sched::Dlb);
        assert!(!c.start_paused);
        assert!(err("flavor = \"multi_thread\", start_paused = true")
            .starts_with("`start_paused = true` needs the current-thread scheduler"));
        assert!(err("start_paused = true, workers = 2").starts_with("`workers` cannot be set"));
        assert_eq!(
            err("start_paused = 1"),
            "`start_paused` expects `true` or `false`"
        );
        let out = expand_str("start_paused = true", "async fn t() {}", Kind::Test);
        assert!(
            out.contains("new_current_thread () . start_paused (true)"),
            "{out}"
        );
    }

    #[test]
    fn every_error_is_reported() {
        let e = parse("workers = 0, dlb = \"x\", y = 1, workers = 2", Kind::Main).unwrap_err();
        assert_eq!(e.into_iter().count(), 4);
        // A name without a value stops the parse: only that one is reported.
        let e = parse("workers = 0, multi_thread", Kind::Main).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown option `multi_thread`; expected one of: workers, worker_threads, scheduler, flavor, dlb, start_paused, crate"
        );
    }

    fn expand_str(args: &str, item: &str, kind: Kind) -> String {
        expand(args.parse().unwrap(), item.parse().unwrap(), kind).to_string()
    }

    #[test]
    fn expansion() {
        let out = expand_str("", "async fn main() { work().await }", Kind::Main);
        assert!(!out.contains("async fn"), "{out}");
        assert!(out.contains(":: fulcrum :: __private :: Builder :: new_multi_thread ()"));
        assert!(out.contains("scheduler (:: fulcrum :: __private :: Scheduler :: Dlb)"));
        assert!(!out.contains("worker_threads"), "{out}");
        assert!(!out.contains("dlb_backend"), "{out}");
        assert!(out.contains("block_on (body)"), "{out}");
        assert!(
            out.contains("failed to build the Fulcrum runtime: {}"),
            "{out}"
        );

        let out = expand_str(
            "crate = \"x::f\", dlb = \"hw\"",
            "/// Doc.\n#[should_panic] pub async fn t() -> Result<(), E> { Ok(()) }",
            Kind::Test,
        );
        assert!(
            out.starts_with("# [:: core :: prelude :: v1 :: test] # [doc ="),
            "{out}"
        );
        assert!(
            out.contains("# [should_panic] pub fn t () -> Result < () , E >"),
            "{out}"
        );
        assert!(out.contains("worker_threads (2usize)"), "{out}");
        assert!(out.contains("x :: f :: __private :: Backend :: Hardware { device : 0 }"));
        assert!(out.contains("Output = Result < () , E >"), "{out}");

        let out = expand_str(
            "flavor = \"current_thread\"",
            "async fn main() {}",
            Kind::Main,
        );
        assert!(out.contains("Builder :: new_current_thread ()"), "{out}");
        assert!(!out.contains("Scheduler"), "{out}");
    }

    #[test]
    fn fallback_on_error() {
        // The function survives, not async, and names nothing of the
        // runtime; the error follows.
        let out = expand_str(
            "workers = 0",
            "async fn main() { work().await }",
            Kind::Main,
        );
        assert!(out.contains("fn main ()"), "{out}");
        assert!(!out.contains("async fn"), "{out}");
        assert!(!out.contains("__private"), "{out}");
        assert!(out.contains("compile_error !"), "{out}");

        let out = expand_str("", "fn main(args: Vec<String>) {}", Kind::Main);
        assert!(out.contains("fn main ()"), "{out}");
        assert!(out.contains("let args : Vec < String > = :: core :: unreachable ! ()"));
        assert_eq!(out.matches("compile_error !").count(), 2, "{out}");

        let out = expand_str("", "#[test] async fn t() {}", Kind::Test);
        assert!(!out.contains("# [test]"), "{out}");
        assert!(out.contains("a second test attribute"), "{out}");

        let out = expand_str("", "struct S;", Kind::Main);
        assert!(out.starts_with("struct S ;"), "{out}");
        assert!(out.contains("applies to an `async fn`"), "{out}");
    }
}
