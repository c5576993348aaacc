//! The runtime behind `#[netns_test]`, `Net`, a body's output, the tokio
//! runtime of `async` bodies, and what runs before `main`. Uses every other
//! layer.

pub(crate) mod entry;
pub(crate) mod net;
pub(crate) mod output;
pub(crate) mod runner;
// Without the `tokio` feature, a stand-in that makes `async fn` bodies a
// compile error naming the feature.
#[cfg_attr(not(feature = "tokio"), path = "runtime_off.rs")]
pub mod runtime;
