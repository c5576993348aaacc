//! The `#[netns_test]` attribute of netns-harness. Use it through
//! `netns_harness::netns_test`; the work happens in the `netns-harness`
//! crate, which this attribute only calls.

mod entry;

use proc_macro::TokenStream;

/// Runs a test function's body in a freshly cloned container attached to
/// the test process's lab bridge. See `netns_harness::netns_test` for the
/// documentation.
#[proc_macro_attribute]
pub fn netns_test(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::netns_test(args.into(), item.into()).into()
}
