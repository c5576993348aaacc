//! `kernel::packet` without the `capture` feature: no interface is ever
//! recorded. A [`Recording`] cannot exist, so the code that carries one
//! (a container's capture, a failure report's pcap) compiles unchanged and
//! is never reached: the runner asks for no capture.

use std::os::fd::BorrowedFd;

use crate::common::error::{Error, Result};

/// A recording of an interface's frames; none can be made without the
/// `capture` feature.
#[derive(Debug)]
pub(crate) enum Recording {}

impl Recording {
    /// Fails: netns-harness was built without its `capture` feature.
    pub(crate) fn start(_netns: BorrowedFd<'_>, interface: &str) -> Result<Recording> {
        Err(Error::os(
            format!("record {interface}: netns-harness was built without its `capture` feature"),
            std::io::ErrorKind::Unsupported.into(),
        ))
    }
}
