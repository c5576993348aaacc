//! Parsing and expansion of `#[netns_test]`.
//!
//! Every check runs whatever the others found, and all their errors are
//! reported together, each on its own token (as rstest does), so a user
//! fixes them in one round instead of one per build.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Attribute, Expr, ExprLit, FnArg, ItemFn, Lit, LitStr, Meta, Path, ReturnType, Token};

const VALID: &str = "valid arguments are `timeout = \"10s\"`, `network = \"private\"`, `fs = \"host\"`, `link = \"latency=50ms loss=1%\"`, `ip = \"dual\"`, `nat = \"symmetric\"`, `flavor = \"multi_thread\"`, `worker_threads = 4` and `crate = \"name\"`";

/// The errors found so far in one `#[netns_test]`, combined into one
/// [`syn::Error`] that expands to a `compile_error!` per error, each on its
/// own token.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    /// Adds `err` after the errors found so far.
    fn push(&mut self, err: syn::Error) {
        match &mut self.0 {
            Some(errors) => errors.combine(err),
            None => self.0 = Some(err),
        }
    }

    /// The value of `result`, or `None` after keeping its error.
    fn check<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|err| self.push(err)).ok()
    }

    /// A `compile_error!` per error found.
    fn to_compile_error(&self) -> TokenStream {
        self.0
            .as_ref()
            .map(syn::Error::to_compile_error)
            .unwrap_or_default()
    }

    /// `value` if no error was found, else all of them.
    fn finish<T>(self, value: T) -> syn::Result<T> {
        match self.0 {
            Some(errors) => Err(errors),
            None => Ok(value),
        }
    }
}

/// One of the arguments `#[netns_test(...)]` takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Timeout,
    Network,
    Fs,
    Link,
    Ip,
    Nat,
    Flavor,
    WorkerThreads,
    Crate,
}

impl Key {
    /// The argument spelled `name`, if there is one.
    fn named(name: &str) -> Option<Self> {
        match name {
            "timeout" => Some(Self::Timeout),
            "network" => Some(Self::Network),
            "fs" => Some(Self::Fs),
            "link" => Some(Self::Link),
            "ip" => Some(Self::Ip),
            "nat" => Some(Self::Nat),
            "flavor" => Some(Self::Flavor),
            "worker_threads" => Some(Self::WorkerThreads),
            "crate" => Some(Self::Crate),
            _ => None,
        }
    }

    /// How the argument is written, for messages.
    fn example(self) -> &'static str {
        match self {
            Self::Timeout => "timeout = \"10s\"",
            Self::Network => "network = \"private\"",
            Self::Fs => "fs = \"host\"",
            Self::Link => "link = \"latency=50ms loss=1%\"",
            Self::Ip => "ip = \"dual\"",
            Self::Nat => "nat = \"symmetric\"",
            Self::Flavor => "flavor = \"multi_thread\"",
            Self::WorkerThreads => "worker_threads = 4",
            Self::Crate => "crate = \"name\"",
        }
    }
}

/// The tokio runtime an `async fn` body runs on, as `#[tokio::test]`
/// names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    CurrentThread,
    MultiThread,
}

/// The arguments of one `#[netns_test(...)]`, each set at most once. The
/// runtime's arguments keep the span of their name, for the errors that
/// concern the argument as a whole.
#[derive(Default)]
struct Configuration {
    timeout_ms: Option<u64>,
    private: Option<bool>,
    /// The `netns_harness::Fs` variant.
    fs: Option<&'static str>,
    /// The conditions of the test's `eth0`, checked.
    link: Option<String>,
    /// The `netns_harness::Stack` variant.
    ip: Option<&'static str>,
    /// The `netns_harness::Preset` variant, and the span of its name.
    nat: Option<(&'static str, Span)>,
    flavor: Option<(Flavor, Span)>,
    worker_threads: Option<(usize, Span)>,
    krate: Option<Path>,
}

impl Configuration {
    /// Parses `timeout = "…", network = "…", fs = "…", link = "…",
    /// flavor = "…", worker_threads = N, crate = "…"` for a function that
    /// is `async` or not. Every argument is checked, and the error holds one
    /// error per bad argument: unknown, given twice, without a value, with a
    /// value of the wrong kind or not a valid timeout, network, filesystem,
    /// link, flavor, number of workers or crate path, or a runtime argument
    /// that does not apply ([`Configuration::check_runtime`]).
    fn parse(args: TokenStream, is_async: bool) -> syn::Result<Self> {
        let mut config = Self::default();
        let mut given = Vec::new();
        let mut errors = Errors::default();
        for meta in Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args)? {
            let name = meta.path().to_token_stream().to_string();
            let Some(key) = Key::named(&name) else {
                errors.push(syn::Error::new_spanned(
                    meta.path(),
                    format!("unknown argument `{name}`; {VALID}"),
                ));
                continue;
            };
            if given.contains(&key) {
                errors.push(syn::Error::new_spanned(
                    &meta,
                    format!("`{name}` is given more than once"),
                ));
                continue;
            }
            given.push(key);
            errors.check(config.set(key, &meta));
        }
        errors.check(config.check_runtime(is_async));
        if let (Some((_, span)), Some(ip)) = (config.nat, config.ip)
            && ip != "V4"
        {
            errors.push(syn::Error::new(
                span,
                "a `nat` network carries IPv4 only; drop `ip = …` or `nat = …`",
            ));
        }
        errors.finish(config)
    }

    /// Rejects runtime arguments that do not apply, as `#[tokio::test]`
    /// does: any on a function that is not `async` (it has no runtime), and
    /// `worker_threads` without `flavor = "multi_thread"`. Each error is on
    /// the argument's name.
    fn check_runtime(&self, is_async: bool) -> syn::Result<()> {
        let mut errors = Errors::default();
        if !is_async {
            let given = [
                self.flavor.map(|(_, span)| (span, "flavor")),
                self.worker_threads
                    .map(|(_, span)| (span, "worker_threads")),
            ];
            for (span, name) in given.into_iter().flatten() {
                errors.push(syn::Error::new(
                    span,
                    format!("`{name}` only applies to an `async fn`, which runs on a tokio runtime; this body is a plain `fn`"),
                ));
            }
        } else if let Some((_, span)) = self.worker_threads
            && self.flavor.map(|(flavor, _)| flavor) != Some(Flavor::MultiThread)
        {
            errors.push(syn::Error::new(
                span,
                "`worker_threads` needs `flavor = \"multi_thread\"`: the `current_thread` runtime (the default) runs everything on the body's thread",
            ));
        }
        errors.finish(())
    }

    /// Sets `key`, given for the first time as `meta`.
    fn set(&mut self, key: Key, meta: &Meta) -> syn::Result<()> {
        let Meta::NameValue(nv) = meta else {
            return Err(syn::Error::new_spanned(
                meta,
                format!(
                    "`{}` needs a value, e.g. `{}`",
                    meta.path().to_token_stream(),
                    key.example()
                ),
            ));
        };
        let string = || string_value(&nv.value, key);
        let name = nv.path.span();
        match key {
            Key::Timeout => self.timeout_ms = Some(parse_timeout(&string()?)?),
            Key::Network => self.private = Some(parse_network(&string()?)?),
            Key::Fs => self.fs = Some(parse_fs(&string()?)?),
            Key::Link => self.link = Some(parse_link(&string()?)?),
            Key::Ip => self.ip = Some(parse_ip(&string()?)?),
            Key::Nat => self.nat = Some((parse_nat(&string()?)?, name)),
            Key::Flavor => self.flavor = Some((parse_flavor(&string()?)?, name)),
            Key::WorkerThreads => {
                self.worker_threads = Some((parse_worker_threads(&nv.value)?, name));
            }
            Key::Crate => self.krate = Some(string()?.parse::<Path>()?),
        }
        Ok(())
    }
}

/// The string literal `expr`, the value given for `key`.
fn string_value(expr: &Expr, key: Key) -> syn::Result<LitStr> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.clone()),
        _ => Err(syn::Error::new_spanned(
            expr,
            format!("the value must be a string, e.g. `{}`", key.example()),
        )),
    }
}

/// `"250ms"`, `"10s"`, `"2m"` in milliseconds.
fn parse_timeout(lit: &LitStr) -> syn::Result<u64> {
    let text = lit.value();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let factor = match unit {
        "ms" => Some(1),
        "s" => Some(1_000),
        "m" => Some(60_000),
        _ => None,
    };
    match (number.parse::<u64>(), factor) {
        (Ok(n), Some(f)) if n > 0 => n
            .checked_mul(f)
            .ok_or_else(|| syn::Error::new(lit.span(), format!("timeout {text:?} is too long"))),
        _ => Err(syn::Error::new(
            lit.span(),
            format!(
                "invalid timeout {text:?}: expected a positive whole number followed by `ms`, `s` or `m`, e.g. \"10s\""
            ),
        )),
    }
}

fn parse_network(lit: &LitStr) -> syn::Result<bool> {
    match lit.value().as_str() {
        "shared" => Ok(false),
        "private" => Ok(true),
        other => Err(syn::Error::new(
            lit.span(),
            format!(
                "invalid network {other:?}: expected \"shared\" (the process's bridge, the default) or \"private\" (a bridge of the test's own)"
            ),
        )),
    }
}

/// The `Fs` variant `fs = "…"` names.
fn parse_fs(lit: &LitStr) -> syn::Result<&'static str> {
    match lit.value().as_str() {
        "private" => Ok("Private"),
        "overlay" => Ok("Overlay"),
        "host" => Ok("Host"),
        other => Err(syn::Error::new(
            lit.span(),
            format!(
                "invalid fs {other:?}: expected \"private\" (its own /tmp, /run, /var/tmp and /etc network files, the default), \"overlay\" (the same over a copy-on-write view of all the host's files) or \"host\" (the host's files as they are)"
            ),
        )),
    }
}

/// The `Stack` variant `ip = "…"` names.
fn parse_ip(lit: &LitStr) -> syn::Result<&'static str> {
    match lit.value().as_str() {
        "v4" => Ok("V4"),
        "v6" => Ok("V6"),
        "dual" => Ok("Dual"),
        other => Err(syn::Error::new(
            lit.span(),
            format!(
                "invalid ip {other:?}: expected \"v4\" (IPv4 only, the default), \"v6\" (IPv6 only) or \"dual\" (both)"
            ),
        )),
    }
}

/// The `Preset` variant `nat = "…"` names (`Preset::ALL` of the harness,
/// by name).
fn parse_nat(lit: &LitStr) -> syn::Result<&'static str> {
    match lit.value().as_str() {
        "full-cone" => Ok("FullCone"),
        "restricted-cone" => Ok("RestrictedCone"),
        "port-restricted-cone" => Ok("PortRestrictedCone"),
        "symmetric" => Ok("Symmetric"),
        "none" => Ok("None"),
        "cgnat" => Ok("Cgnat"),
        other => Err(syn::Error::new(
            lit.span(),
            format!(
                "invalid nat {other:?}: expected \"full-cone\", \"restricted-cone\", \"port-restricted-cone\", \"symmetric\", \"none\" (routed public addresses) or \"cgnat\" (a home NAT behind a carrier NAT)"
            ),
        )),
    }
}

/// `flavor = "…"`: a tokio runtime, spelled as `#[tokio::test]` spells it.
fn parse_flavor(lit: &LitStr) -> syn::Result<Flavor> {
    match lit.value().as_str() {
        "current_thread" => Ok(Flavor::CurrentThread),
        "multi_thread" => Ok(Flavor::MultiThread),
        other => Err(syn::Error::new(
            lit.span(),
            format!(
                "invalid flavor {other:?}: expected \"current_thread\" (everything on the body's thread, the default) or \"multi_thread\" (a pool of worker threads)"
            ),
        )),
    }
}

/// `worker_threads = N`: a whole number of at least 1, unquoted as
/// `#[tokio::test]` takes it.
fn parse_worker_threads(expr: &Expr) -> syn::Result<usize> {
    let Expr::Lit(ExprLit {
        lit: Lit::Int(int), ..
    }) = expr
    else {
        return Err(syn::Error::new_spanned(
            expr,
            "the value must be a whole number, e.g. `worker_threads = 4`",
        ));
    };
    match int.base10_parse::<usize>()? {
        0 => Err(syn::Error::new(
            int.span(),
            "`worker_threads` must be at least 1",
        )),
        n => Ok(n),
    }
}

/// `link = "…"`: conditions the harness's own parser accepts.
fn parse_link(lit: &LitStr) -> syn::Result<String> {
    let text = lit.value();
    match text.parse::<netns_harness_conditions::Conditions>() {
        Ok(_) => Ok(text),
        Err(e) => Err(syn::Error::new(
            lit.span(),
            format!("invalid link conditions {text:?}: {e}"),
        )),
    }
}

/// The runtime crate as the user's crate names it: `crate = "…"`, else the
/// name of the `netns-harness` dependency in its manifest.
fn runtime_crate(explicit: Option<Path>) -> TokenStream {
    if let Some(path) = explicit {
        return quote!(#path);
    }
    // `Itself` means a doctest or test target of netns-harness, which reach
    // the library by its own name.
    match proc_macro_crate::crate_name("netns-harness") {
        Ok(proc_macro_crate::FoundCrate::Name(name)) => {
            let ident = syn::Ident::new(&name, Span::call_site());
            quote!(::#ident)
        }
        Ok(proc_macro_crate::FoundCrate::Itself) | Err(_) => quote!(::netns_harness),
    }
}

/// Rejects what a container test cannot be: generic, a method, or taking
/// more than one parameter. Every rule is checked; the error holds one error
/// per broken rule.
fn check_signature(func: &ItemFn) -> syn::Result<()> {
    let sig = &func.sig;
    let mut errors = Errors::default();
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        let err = "a #[netns_test] function cannot be generic: its body runs in another process, which calls it by name";
        errors.push(match sig.generics.params.first() {
            Some(param) => syn::Error::new_spanned(param, err),
            None => syn::Error::new_spanned(&sig.generics.where_clause, err),
        });
    }
    if let Some(receiver) = sig.receiver() {
        errors.push(syn::Error::new_spanned(
            receiver,
            "a #[netns_test] function cannot take `self`: write a free function",
        ));
    }
    if let Some(extra) = sig.inputs.iter().nth(1) {
        errors.push(syn::Error::new_spanned(
            extra,
            "a #[netns_test] function takes at most one parameter, its network: `fn name(net: Net)`",
        ));
    }
    errors.finish(())
}

/// Whether `attr` makes a function a test: `#[test]`, `#[tokio::test]`,
/// `#[async_std::test]`, any path whose last segment is `test` (as rstest
/// recognizes them). `#[rstest]`, `#[case]` and `#[netns_test]` are not.
fn is_test_attribute(attr: &Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|segment| segment.ident == "test")
}

/// Whether the user wrote `attr` in the source, as opposed to a macro that
/// expanded before `#[netns_test]` generating it. The name of a written
/// attribute is its own source text; a generated one has the span of the
/// macro that made it (rstest's `#[test]` reads `#[rstest]`), or none.
fn written_in_source(attr: &Attribute) -> bool {
    attr.path().segments.last().is_some_and(|segment| {
        segment.ident.span().source_text().as_deref() == Some(&*segment.ident.to_string())
    })
}

/// Checks the test attributes already on the function and tells whether it
/// has one. A test attribute the user wrote next to `#[netns_test]` is an
/// error: it would make a second test, or drop ours. One that another macro
/// generated is kept instead of our own `#[test]`, so that macros compose:
/// `#[rstest] #[case(…)] #[netns_test]` renders each case with `#[test]`.
fn existing_test_attribute(attrs: &[Attribute]) -> syn::Result<bool> {
    let mut errors = Errors::default();
    let mut generated = false;
    for attr in attrs.iter().filter(|attr| is_test_attribute(attr)) {
        if written_in_source(attr) {
            let path = attr.path().to_token_stream().to_string().replace(' ', "");
            // Any other than the standard one (`#[tokio::test]`,
            // `#[async_std::test]`) is there to run an `async fn`.
            let standard = attr.path().is_ident("test")
                || attr
                    .path()
                    .segments
                    .first()
                    .is_some_and(|first| first.ident == "core" || first.ident == "std");
            let runtime = if standard {
                ""
            } else {
                ", and runs an `async fn` on a runtime of its own"
            };
            errors.push(syn::Error::new_spanned(
                attr,
                format!(
                    "remove `#[{path}]`: #[netns_test] already makes the function a test{runtime}"
                ),
            ));
        } else {
            generated = true;
        }
    }
    errors.finish(generated)
}

/// Expands `#[netns_test(args)]` on `item`. On error the item is emitted
/// unchanged next to the errors, so editors keep working.
pub(crate) fn netns_test(args: TokenStream, item: TokenStream) -> TokenStream {
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(func) => func,
        Err(_) => {
            let span = item
                .clone()
                .into_iter()
                .next()
                .map_or_else(Span::call_site, |t| t.span());
            let err = syn::Error::new(
                span,
                "#[netns_test] goes on a function, e.g. `#[netns_test] fn reaches_the_gateway() { … }`",
            );
            return with_item(err.to_compile_error(), item);
        }
    };
    match (
        Configuration::parse(args, func.sig.asyncness.is_some()),
        check_signature(&func),
        existing_test_attribute(&func.attrs),
    ) {
        (Ok(config), Ok(()), Ok(has_test_attr)) => expand(func, config, has_test_attr),
        (config, signature, test_attr) => {
            let mut errors = Errors::default();
            errors.check(config);
            errors.check(signature);
            errors.check(test_attr);
            with_item(errors.to_compile_error(), item)
        }
    }
}

/// The `compile_error!`s of `errors`, then `item` unchanged.
fn with_item(errors: TokenStream, item: TokenStream) -> TokenStream {
    quote!(#errors #item)
}

/// The call of an `async` body with arguments `args`: on the runtime the
/// configuration names, through the harness's `async_body!`, which is a
/// compile error naming the feature when the harness has no `tokio`.
fn async_call(
    krate: &TokenStream,
    span: Span,
    config: &Configuration,
    args: TokenStream,
) -> TokenStream {
    let flavor = match config.flavor {
        Some((Flavor::MultiThread, _)) => {
            let workers = match config.worker_threads {
                Some((n, _)) => quote!(::core::option::Option::Some(#n)),
                None => quote!(::core::option::Option::None),
            };
            quote!(#krate::__private::runtime::Flavor::MultiThread { worker_threads: #workers })
        }
        Some((Flavor::CurrentThread, _)) | None => {
            quote!(#krate::__private::runtime::Flavor::CurrentThread)
        }
    };
    // The invocation's span is where the error of a harness without
    // `tokio` shows: each of its tokens gets the span of `async`.
    let here: TokenStream = krate
        .clone()
        .into_iter()
        .map(|mut token| {
            token.set_span(span);
            token
        })
        .collect();
    quote_spanned!(span=> #here::__private::async_body!(#flavor, __netns_harness_body(#args)))
}

/// The test function: our `#[test]` (unless `has_test_attr`: another macro
/// gave it one), which runs the body in a container.
fn expand(func: ItemFn, config: Configuration, has_test_attr: bool) -> TokenStream {
    let krate = runtime_crate(config.krate.clone());
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = func;
    let name = &sig.ident;
    let test_attr = if has_test_attr {
        quote!()
    } else {
        quote!(#[::core::prelude::v1::test])
    };
    let asyncness = &sig.asyncness;
    let inputs = &sig.inputs;
    let output = match &sig.output {
        ReturnType::Default => quote!(),
        ReturnType::Type(arrow, ty) => quote!(#arrow #ty),
    };
    // Without cfg(test) the test function is compiled out, so the return
    // type is checked here, where `cargo check` and editors see it.
    let return_check = match &sig.output {
        ReturnType::Default => quote!(),
        ReturnType::Type(_, ty) => quote_spanned! {ty.span()=>
            #[cfg(not(test))]
            const _: () = {
                fn __netns_harness_returns() where #ty: #krate::__private::TestResult {}
            };
        },
    };
    let args = match inputs.first() {
        Some(FnArg::Typed(param)) => quote_spanned!(param.ty.span()=> #krate::Net::current()),
        _ => quote!(),
    };
    let call = match asyncness {
        Some(token) => async_call(&krate, token.span, &config, args),
        None => quote!(__netns_harness_body(#args)),
    };
    let timeout_ms = config.timeout_ms.unwrap_or(60_000);
    let network = if config.private.unwrap_or(false) {
        quote!(#krate::__private::Network::Private)
    } else {
        quote!(#krate::__private::Network::Shared)
    };
    let fs = syn::Ident::new(config.fs.unwrap_or("Private"), Span::call_site());
    let link = config.link.unwrap_or_default();
    let stack = syn::Ident::new(config.ip.unwrap_or("V4"), Span::call_site());
    let nat = match config.nat {
        Some((preset, _)) => {
            let preset = syn::Ident::new(preset, Span::call_site());
            quote!(::core::option::Option::Some(#krate::Preset::#preset))
        }
        None => quote!(::core::option::Option::None),
    };
    quote! {
        #return_check
        #(#attrs)*
        #test_attr
        #vis fn #name() {
            #asyncness fn __netns_harness_body(#inputs) #output #block
            const __NETNS_HARNESS_NAME: &str =
                ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#name));
            fn __netns_harness_entry() {
                #krate::__private::run_in_container(__NETNS_HARNESS_NAME, || #call)
            }
            #krate::__private::run_test(&#krate::__private::Test {
                name: __NETNS_HARNESS_NAME,
                timeout: ::core::time::Duration::from_millis(#timeout_ms),
                network: #network,
                fs: #krate::Fs::#fs,
                link: #link,
                stack: #krate::Stack::#stack,
                nat: #nat,
                entry: __netns_harness_entry,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout(text: &str) -> syn::Result<u64> {
        parse_timeout(&LitStr::new(text, Span::call_site()))
    }

    #[test]
    fn timeouts_take_ms_s_and_m() {
        assert_eq!(timeout("250ms").unwrap(), 250);
        assert_eq!(timeout("10s").unwrap(), 10_000);
        assert_eq!(timeout("2m").unwrap(), 120_000);
        for bad in ["", "10", "s", "0s", "1.5s", "10h", "-1s"] {
            assert!(timeout(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// The message of every error `result` holds.
    fn messages<T>(result: syn::Result<T>) -> Vec<String> {
        result
            .err()
            .into_iter()
            .flatten()
            .map(|err| err.to_string())
            .collect()
    }

    /// The message of every error in what `Configuration::parse` returns.
    fn argument_errors(args: TokenStream) -> Vec<String> {
        messages(Configuration::parse(args, true))
    }

    #[test]
    fn each_bad_argument_is_one_error() {
        let error = |args| match &argument_errors(args)[..] {
            [one] => one.clone(),
            many => panic!("expected one error, got {many:?}"),
        };
        assert_eq!(
            error(quote!(timeout = "1s", timeout = "2s")),
            "`timeout` is given more than once"
        );
        assert!(error(quote!(speed = "fast")).starts_with("unknown argument `speed`; valid"));
        assert!(error(quote!(private)).starts_with("unknown argument `private`"));
        assert!(error(quote!(network = "public")).starts_with("invalid network \"public\""));
        assert!(error(quote!(fs = "overlayfs")).starts_with("invalid fs \"overlayfs\""));
        assert!(
            error(quote!(nat = "cone")).starts_with("invalid nat \"cone\": expected \"full-cone\"")
        );
        assert_eq!(
            error(quote!(nat = "symmetric", ip = "dual")),
            "a `nat` network carries IPv4 only; drop `ip = …` or `nat = …`"
        );
        assert!(error(quote!(ip = "ipv6")).starts_with(
            "invalid ip \"ipv6\": expected \"v4\" (IPv4 only, the default), \"v6\" (IPv6 only) or \"dual\""
        ));
        assert!(error(quote!(timeout = "10x")).starts_with("invalid timeout \"10x\""));
        assert_eq!(
            error(quote!(timeout)),
            "`timeout` needs a value, e.g. `timeout = \"10s\"`"
        );
        assert_eq!(
            error(quote!(timeout = 10)),
            "the value must be a string, e.g. `timeout = \"10s\"`"
        );
        assert!(error(quote!(crate = "not a path")).starts_with("unexpected token"));
    }

    #[test]
    fn every_argument_is_checked() {
        let errors = argument_errors(quote!(
            speed = "fast",
            timeout = "1s",
            timeout = "2s",
            network = "public",
            crate,
            network = "private",
            timeout = 10,
        ));
        assert_eq!(errors.len(), 6, "{errors:#?}");
        assert!(errors[0].starts_with("unknown argument `speed`"));
        assert!(errors[1].starts_with("`timeout` is given more than once"));
        assert!(errors[2].starts_with("invalid network"));
        assert!(errors[3].starts_with("`crate` needs a value"));
        assert!(errors[4].starts_with("`network` is given more than once"));
        assert!(errors[5].starts_with("`timeout` is given more than once"));
    }

    #[test]
    fn good_arguments_are_set() {
        let config = Configuration::parse(
            quote!(timeout = "5s", network = "private", crate = "nh"),
            false,
        )
        .unwrap();
        assert_eq!(config.timeout_ms, Some(5_000));
        assert_eq!(config.private, Some(true));
        assert_eq!(config.krate.unwrap().to_token_stream().to_string(), "nh");
        let config = Configuration::parse(quote!(fs = "host"), false).unwrap();
        assert_eq!(config.fs, Some("Host"));
        let config = Configuration::parse(quote!(ip = "dual"), false).unwrap();
        assert_eq!(config.ip, Some("Dual"));
        let config = Configuration::parse(quote!(ip = "v6"), false).unwrap();
        assert_eq!(config.ip, Some("V6"));
        let config = Configuration::parse(quote!(nat = "port-restricted-cone"), false).unwrap();
        assert_eq!(config.nat.map(|(p, _)| p), Some("PortRestrictedCone"));
        let config = Configuration::parse(quote!(fs = "overlay"), false).unwrap();
        assert_eq!(config.fs, Some("Overlay"));
        let config =
            Configuration::parse(quote!(flavor = "multi_thread", worker_threads = 4), true)
                .unwrap();
        assert_eq!(config.flavor.map(|(f, _)| f), Some(Flavor::MultiThread));
        assert_eq!(config.worker_threads.map(|(n, _)| n), Some(4));
        let config = Configuration::parse(quote!(), false).unwrap();
        assert!(config.timeout_ms.is_none() && config.private.is_none() && config.fs.is_none());
    }

    fn signature_errors(item: TokenStream) -> Vec<String> {
        messages(check_signature(&syn::parse2(item).unwrap()))
    }

    #[test]
    fn every_signature_rule_is_checked() {
        assert!(
            signature_errors(quote!(
                fn a(net: Net) {}
            ))
            .is_empty()
        );
        assert!(
            signature_errors(quote!(
                async fn a() -> Result<(), E> {}
            ))
            .is_empty()
        );
        let errors = signature_errors(quote!(
            fn a<T>(&self, net: Net) {}
        ));
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(errors[0].contains("cannot be generic"));
        assert!(errors[1].contains("cannot take `self`"));
        assert!(errors[2].contains("at most one parameter"));
        let errors = signature_errors(quote!(
            fn a()
            where
                u8: Copy,
            {
            }
        ));
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].contains("cannot be generic"));
    }

    #[test]
    fn test_attributes_are_paths_ending_in_test() {
        let func: ItemFn = syn::parse2(quote! {
            #[test]
            #[tokio::test]
            #[async_std::test(flavor = "x")]
            #[::core::prelude::v1::test]
            #[rstest]
            #[case(1)]
            #[netns_test]
            #[testing]
            #[should_panic]
            fn a() {}
        })
        .unwrap();
        let tests: Vec<bool> = func.attrs.iter().map(is_test_attribute).collect();
        assert_eq!(
            tests,
            [true, true, true, true, false, false, false, false, false]
        );
    }

    #[test]
    fn a_generated_test_attribute_replaces_ours() {
        // Tokens made by `quote!` have no source text, like those of a
        // macro that expanded before ours (rstest's `#[test]`).
        let attrs = |item| syn::parse2::<ItemFn>(item).unwrap().attrs;
        assert!(
            existing_test_attribute(&attrs(quote!(
                #[test]
                fn a() {}
            )))
            .unwrap()
        );
        assert!(
            !existing_test_attribute(&attrs(quote!(
                #[ignore]
                fn a() {}
            )))
            .unwrap()
        );
    }

    #[test]
    fn all_errors_come_out_with_the_item() {
        let out = netns_test(
            quote!(speed = "fast", timeout = "10x"),
            quote!(
                fn a_test<T>(net: Net, other: Net) {}
            ),
        )
        .to_string();
        assert_eq!(out.matches("compile_error").count(), 4, "{out}");
        assert!(
            out.ends_with(
                &quote!(
                    fn a_test<T>(net: Net, other: Net) {}
                )
                .to_string()
            )
        );
    }
}
