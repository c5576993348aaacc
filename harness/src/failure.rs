//! What a failed `#[netns_test]` leaves for its user: a report of the
//! network at the moment it failed, a pcap of its traffic, and, on request,
//! the network itself kept alive to be entered with `nsenter`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::time::Duration;

use crate::capture::Capture;
use crate::container::Container;
use crate::lab::Lab;
use crate::{report, sys};

/// Set to `1` to keep a failed test's container and lab alive, and print
/// how to enter them, until Enter is pressed or [`KEEP_SECONDS_VAR`] pass.
pub const KEEP_VAR: &str = "NETNS_HARNESS_KEEP_ON_FAILURE";
/// How long a kept network waits for Enter, in seconds (default 600).
pub const KEEP_SECONDS_VAR: &str = "NETNS_HARNESS_KEEP_SECONDS";
/// Set to `0` to not capture tests' traffic (no pcap on failure).
pub const CAPTURE_VAR: &str = "NETNS_HARNESS_CAPTURE";

fn env_is(var: &str, value: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == value)
}

/// Whether failed tests are kept for inspection.
pub(crate) fn keep_requested() -> bool {
    env_is(KEEP_VAR, "1")
}

/// Whether tests' traffic is captured.
pub(crate) fn capture_enabled() -> bool {
    !env_is(CAPTURE_VAR, "0")
}

/// Where a test's failure artifacts go: `target/netns-harness/<test>/`
/// when the test binary is in a Cargo target directory, else under the
/// temporary directory.
fn artifacts_dir(test: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            let deps = exe.parent()?;
            (deps.file_name()? == "deps").then(|| deps.parent()?.parent().map(PathBuf::from))?
        });
    let base = target
        .unwrap_or_else(std::env::temp_dir)
        .join("netns-harness");
    base.join(test.replace("::", "-"))
}

/// The report printed at the end of a failed test's output, also written
/// with the capture to the test's artifacts directory.
pub(crate) fn report(
    test: &str,
    lab: &Lab,
    container: &Container,
    view_prefix: &str,
    peers: &str,
    capture: Option<Capture>,
) -> String {
    let mut out = format!("\n--- netns-harness report for {test} ---\n");
    let _ = writeln!(
        out,
        "container {} ({}):",
        container.name(),
        container.addr()
    );
    match report::namespace_state(container.netns()) {
        Ok(state) => out.push_str(&state),
        Err(e) => {
            let _ = writeln!(out, "  (unreadable: {e})");
        }
    }
    let _ = writeln!(
        out,
        "lab {} (gateway {}, NAT as {}):",
        lab.subnet(),
        lab.gateway(),
        lab.public_addr()
    );
    let own_port = container.port_name().unwrap_or_default();
    match report::lab_state(&lab.inner, &[own_port, view_prefix]) {
        Ok(state) => out.push_str(&state),
        Err(e) => {
            let _ = writeln!(out, "  (unreadable: {e})");
        }
    }
    let _ = writeln!(out, "peers:");
    if peers.trim().is_empty() {
        let _ = writeln!(out, "  none");
    } else {
        out.push_str(peers);
    }
    let dir = artifacts_dir(test);
    let written = std::fs::create_dir_all(&dir).map_err(|e| e.to_string()).and_then(|()| {
        if let Some(capture) = capture {
            let seen = capture.stop();
            let path = dir.join("capture.pcap");
            seen.write_pcap(&path).map_err(|e| e.to_string())?;
            let _ = writeln!(
                out,
                "capture of {own_port}: {} frames (the last {} KiB at most) in {} (tcpdump -nr it)",
                seen.frames(),
                crate::capture::RING_BYTES / 1024,
                path.display()
            );
        } else {
            let _ = writeln!(out, "capture: off ({CAPTURE_VAR}=0)");
        }
        std::fs::write(dir.join("report.txt"), &out).map_err(|e| e.to_string())
    });
    if let Err(e) = written {
        let _ = writeln!(out, "(could not write to {}: {e})", dir.display());
    }
    out.push_str("---\n");
    out
}

/// Keeps the failed test's network alive and says how to enter it, until
/// Enter is pressed or the time limit passes. Writes straight to the
/// terminal: libtest would hide it until the end.
pub(crate) fn keep(test: &str, lab: &Lab, container: &Container) {
    let seconds = std::env::var(KEEP_SECONDS_VAR)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let me = std::process::id();
    let user = if crate::is_rootless() {
        " --user --preserve-credentials"
    } else {
        ""
    };
    let mut err = std::io::stderr();
    let _ = writeln!(
        err,
        "netns-harness: {test} failed; its network is kept ({KEEP_VAR}=1):\n  \
         its container:  nsenter --target {}{user} --net --mount --uts --ipc --pid\n  \
         the lab (bridge {}, NAT):  nsenter --target {me}{user} --net=/proc/{me}/fd/{}\n  \
         the outside host:  nsenter --target {me}{user} --net=/proc/{me}/fd/{}\n\
         press Enter to tear it down (or wait {seconds} s)",
        container.pid(),
        lab.bridge(),
        lab.lab_netns().as_raw_fd(),
        lab.outside_netns().as_raw_fd(),
    );
    let stdin = std::io::stdin();
    let limit = Duration::from_secs(seconds);
    if sys::poll_readable(stdin.as_fd(), Some(limit)).unwrap_or(false) {
        let mut line = String::new();
        // End-of-file (no terminal): fall back to the time limit.
        if stdin.read_line(&mut line).unwrap_or(0) == 0 {
            std::thread::sleep(limit);
        }
    }
}
