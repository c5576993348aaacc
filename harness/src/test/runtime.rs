//! The tokio runtime an `async fn` body runs on, built as `#[tokio::test]`
//! builds it: `flavor = "current_thread"` (the default) or
//! `flavor = "multi_thread"` with `worker_threads = N`.

use std::future::Future;

/// Which tokio runtime an `async` body runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Everything on the body's thread (tokio's `new_current_thread`).
    CurrentThread,
    /// A pool of worker threads (tokio's `new_multi_thread`): as many as
    /// `worker_threads`, or one per CPU.
    MultiThread {
        /// `worker_threads = N`, when given.
        worker_threads: Option<usize>,
    },
}

/// Runs `future` to completion on a fresh tokio runtime of `flavor`, with
/// I/O and timers, as the body of an `async` test.
pub fn block_on<F: Future>(flavor: Flavor, future: F) -> F::Output {
    let mut builder = match flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Flavor::MultiThread { worker_threads } => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = worker_threads {
                builder.worker_threads(n);
            }
            builder
        }
    };
    tracing::debug!(?flavor, "starting the body's tokio runtime");
    builder
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("netns-harness: cannot start a tokio runtime: {e}"))
        .block_on(future)
}

/// What `#[netns_test]` expands an `async fn` body's call to:
/// `block_on(flavor, body)`.
#[doc(hidden)]
#[macro_export]
macro_rules! __netns_harness_async_body {
    ($flavor:expr, $body:expr) => {
        $crate::__private::runtime::block_on($flavor, $body)
    };
}
