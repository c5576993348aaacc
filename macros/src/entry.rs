//! Parsing and expansion of `#[netns_test]`.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, FnArg, ItemFn, Lit, LitStr, Meta, Path, ReturnType, Token};

const VALID: &str =
    "valid arguments are `timeout = \"10s\"`, `network = \"private\"` and `crate = \"name\"`";

/// The arguments of one `#[netns_test(...)]`, each set at most once.
#[derive(Default)]
struct Configuration {
    timeout_ms: Option<u64>,
    private: Option<bool>,
    krate: Option<Path>,
}

impl Configuration {
    fn parse(args: TokenStream) -> syn::Result<Self> {
        let mut config = Self::default();
        let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args)?;
        for meta in metas {
            let name = meta.path().to_token_stream().to_string();
            let Meta::NameValue(nv) = &meta else {
                return Err(syn::Error::new(
                    meta.span(),
                    format!("`{name}` needs a value, e.g. `{name} = \"…\"`; {VALID}"),
                ));
            };
            let value = string_value(&nv.value, &name)?;
            match name.as_str() {
                "timeout" => set(&mut config.timeout_ms, parse_timeout(&value)?, &meta)?,
                "network" => set(&mut config.private, parse_network(&value)?, &meta)?,
                "crate" => set(&mut config.krate, value.parse::<Path>()?, &meta)?,
                _ => {
                    return Err(syn::Error::new(
                        meta.path().span(),
                        format!("unknown argument `{name}`; {VALID}"),
                    ));
                }
            }
        }
        Ok(config)
    }
}

fn set<T>(slot: &mut Option<T>, value: T, meta: &Meta) -> syn::Result<()> {
    if slot.is_some() {
        let name = meta.path().to_token_stream().to_string();
        return Err(syn::Error::new(
            meta.span(),
            format!("`{name}` is given more than once"),
        ));
    }
    *slot = Some(value);
    Ok(())
}

fn string_value(expr: &Expr, name: &str) -> syn::Result<LitStr> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.clone()),
        _ => Err(syn::Error::new(
            expr.span(),
            format!("`{name}` takes a string, e.g. `{name} = \"…\"`"),
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
/// more than one parameter.
fn check_signature(func: &ItemFn) -> syn::Result<()> {
    let sig = &func.sig;
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        let span = sig
            .generics
            .params
            .first()
            .map_or_else(|| sig.generics.span(), Spanned::span);
        return Err(syn::Error::new(
            span,
            "a #[netns_test] function cannot be generic: its body runs in another process, which calls it by name",
        ));
    }
    if let Some(receiver) = sig.receiver() {
        return Err(syn::Error::new(
            receiver.span(),
            "a #[netns_test] function cannot take `self`: write a free function",
        ));
    }
    if let Some(extra) = sig.inputs.iter().nth(1) {
        return Err(syn::Error::new(
            extra.span(),
            "a #[netns_test] function takes at most one parameter, its network: `fn name(net: Net)`",
        ));
    }
    Ok(())
}

/// Expands `#[netns_test(args)]` on `item`. On error the item is emitted
/// unchanged next to the error, so editors keep working.
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
            return with_item(err, item);
        }
    };
    let config = match Configuration::parse(args).and_then(|c| check_signature(&func).map(|()| c)) {
        Ok(config) => config,
        Err(err) => return with_item(err, item),
    };
    expand(func, config)
}

fn with_item(err: syn::Error, item: TokenStream) -> TokenStream {
    let err = err.to_compile_error();
    quote!(#err #item)
}

fn expand(func: ItemFn, config: Configuration) -> TokenStream {
    let krate = runtime_crate(config.krate);
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = func;
    let name = &sig.ident;
    let has_test_attr = attrs
        .iter()
        .any(|a| a.path().segments.last().is_some_and(|s| s.ident == "test"));
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
    let call = if asyncness.is_some() {
        quote!(#krate::__private::block_on(__netns_harness_body(#args)))
    } else {
        quote!(__netns_harness_body(#args))
    };
    let timeout_ms = config.timeout_ms.unwrap_or(60_000);
    let network = if config.private.unwrap_or(false) {
        quote!(#krate::__private::Network::Private)
    } else {
        quote!(#krate::__private::Network::Shared)
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

    #[test]
    fn repeated_and_unknown_arguments_are_errors() {
        let err = |args: TokenStream| Configuration::parse(args).err().map(|e| e.to_string());
        assert_eq!(
            err(quote!(timeout = "1s", timeout = "2s")).unwrap(),
            "`timeout` is given more than once"
        );
        assert!(
            err(quote!(speed = "fast"))
                .unwrap()
                .starts_with("unknown argument `speed`")
        );
        assert!(
            err(quote!(network = "public"))
                .unwrap()
                .starts_with("invalid network \"public\"")
        );
        assert!(
            err(quote!(private))
                .unwrap()
                .starts_with("`private` needs a value")
        );
        assert!(
            err(quote!(timeout = 10))
                .unwrap()
                .starts_with("`timeout` takes a string")
        );
        assert!(err(quote!(timeout = "5s", network = "private", crate = "nh")).is_none());
    }
}
