//! `#[needs("tool", …)]` for the suite's tests: written before `#[test]`
//! or `#[netns_test]`, it ignores the test, with a reason naming what to
//! install, when the suite's build script did not find one of the tools in
//! `PATH` (its `has_<tool>` cfg is unset):
//!
//! ```text
//! #[needs("nsenter", "tcpdump")]
//! #[test]
//! fn reads_the_capture() { … }
//! ```
//!
//! expands to the test with
//! `#[cfg_attr(not(all(has_nsenter, has_tcpdump)), ignore = "needs nsenter, tcpdump: install util-linux, tcpdump")]`
//! before it. The tools and their packages are the suite's own table,
//! `src/tools.rs`; a tool not in it is a compile error.
//!
//! With rstest, write it after the last `#[case]`: rstest gives the
//! attributes written before a `#[case]` to that case only.

use proc_macro::{Delimiter, Group, Literal, Punct, Spacing, Span, TokenStream, TokenTree};

#[path = "../../src/tools.rs"]
mod tools;

/// Ignores the test it is put on when one of the named tools was not found
/// at build time; see the crate's documentation.
#[proc_macro_attribute]
pub fn needs(attr: TokenStream, item: TokenStream) -> TokenStream {
    match ignore_unless_found(attr) {
        Ok(attribute) => attribute.into_iter().chain(item).collect(),
        // The test is still emitted, so that only the error shows.
        Err(error) => error.into_iter().chain(item).collect(),
    }
}

/// `#[cfg_attr(not(all(has_a, has_b)), ignore = "…")]` for the tools
/// listed in `attr`, or a `compile_error!` on the offending token.
fn ignore_unless_found(attr: TokenStream) -> Result<TokenStream, TokenStream> {
    let mut programs = Vec::new();
    let mut packages: Vec<&str> = Vec::new();
    for token in attr {
        match &token {
            TokenTree::Punct(p) if p.as_char() == ',' => continue,
            TokenTree::Literal(literal) => {
                let text = literal.to_string();
                let program = text
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .ok_or_else(|| error(token.span(), "expected a tool's name, as a string"))?
                    .to_owned();
                let Some((_, package)) = tools::TOOLS.iter().find(|(name, _)| *name == program)
                else {
                    let known: Vec<&str> = tools::TOOLS.iter().map(|(name, _)| *name).collect();
                    return Err(error(
                        token.span(),
                        &format!(
                            "`{program}` is not in src/tools.rs; known tools: {}",
                            known.join(", ")
                        ),
                    ));
                };
                if !packages.contains(package) {
                    packages.push(package);
                }
                programs.push(program);
            }
            _ => return Err(error(token.span(), "expected a tool's name, as a string")),
        }
    }
    if programs.is_empty() {
        return Err(error(
            Span::call_site(),
            "name the tools the test needs: #[needs(\"tcpdump\")]",
        ));
    }
    let found = programs
        .iter()
        .map(|program| tools::cfg_name(program))
        .collect::<Vec<_>>()
        .join(", ");
    let reason = format!(
        "needs {}: install {}",
        programs.join(", "),
        packages.join(", ")
    );
    let attribute = format!(
        "#[cfg_attr(not(all({found})), ignore = {})]",
        Literal::string(&reason)
    );
    Ok(attribute
        .parse()
        .expect("the attribute is made of valid tokens"))
}

/// `compile_error!(message)` at `span`.
fn error(span: Span, message: &str) -> TokenStream {
    let mut literal = Literal::string(message);
    literal.set_span(span);
    let mut bang = Punct::new('!', Spacing::Alone);
    bang.set_span(span);
    let mut body = Group::new(Delimiter::Parenthesis, TokenTree::from(literal).into());
    body.set_span(span);
    let mut semi = Punct::new(';', Spacing::Alone);
    semi.set_span(span);
    let mut name = proc_macro::Ident::new("compile_error", span);
    name.set_span(span);
    [TokenTree::from(name), bang.into(), body.into(), semi.into()]
        .into_iter()
        .collect()
}
