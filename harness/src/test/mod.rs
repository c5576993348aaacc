//! The runtime behind `#[netns_test]`, `Net`, a body's output, and what runs
//! before `main`. Uses every other layer.

pub(crate) mod entry;
pub(crate) mod net;
pub(crate) mod output;
pub(crate) mod runner;
