//! `async fn` bodies without the `tokio` feature: a compile error on the
//! body's `async`, naming the feature to enable.

/// What `#[netns_test]` expands an `async fn` body's call to: without the
/// `tokio` feature, an error that says to enable it.
#[doc(hidden)]
#[macro_export]
macro_rules! __netns_harness_async_body {
    ($($tokens:tt)*) => {
        ::core::compile_error!(
            "an `async fn` #[netns_test] needs the `tokio` feature of netns-harness, which is off: \
             enable it (`netns-harness = { version = \"…\", features = [\"tokio\"] }`; it is a \
             default feature) or make the body a plain `fn`"
        )
    };
}
