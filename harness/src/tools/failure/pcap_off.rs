//! A failed test's pcap without the `capture` feature: there is none, since
//! no test is recorded (a [`Recording`] cannot exist).

use std::path::Path;

use crate::kernel::packet::Recording;

/// The report's line: nothing was recorded.
pub(super) fn off() -> String {
    "capture: off (netns-harness was built without its `capture` feature)\n".to_owned()
}

/// Never called: no [`Recording`] exists without the `capture` feature.
pub(super) fn write(_dir: &Path, _own_port: &str, recording: Recording) -> std::io::Result<String> {
    match recording {}
}
