//! A failed test's pcap: the recording of its bridge port, written next to
//! its report.

use std::fmt::Write as _;
use std::path::Path;

use crate::common::settings::CAPTURE_VAR;
use crate::kernel::packet::Recording;
use crate::tools::capture::{Capture, RING_BYTES};

/// The report's line when the test was not recorded.
pub(super) fn off() -> String {
    format!("capture: off ({CAPTURE_VAR}=0)\n")
}

/// Stops `recording` (of the port `own_port`), writes it to
/// `dir/capture.pcap` and returns the report's line about it.
pub(super) fn write(dir: &Path, own_port: &str, recording: Recording) -> std::io::Result<String> {
    let seen = Capture::of(recording, own_port).stop();
    let path = dir.join("capture.pcap");
    seen.write_pcap(&path).map_err(std::io::Error::other)?;
    let mut line = String::new();
    let _ = writeln!(
        line,
        "capture of {own_port}: {} frames (the last {} KiB at most) in {} (tcpdump -nr it)",
        seen.frames(),
        RING_BYTES / 1024,
        path.display()
    );
    Ok(line)
}
