//! What a failed `#[netns_test]` leaves for its user: a report of the
//! network at the moment it failed, a pcap of its traffic, and, on request,
//! the network itself kept alive to be entered with `nsenter`.

use crate::common::nat::Router;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use crate::common::protocol::{Outcome, Peer};
use crate::common::settings::{self, KEEP_VAR};
use crate::kernel::packet::Recording;
use crate::network::lab::Lab;
use crate::network::link::{Conditions, Direction};
use crate::process::container::Container;
use crate::{kernel::sys, tools::snapshot};

// Without the `capture` feature no test is recorded, and a stand-in says so.
#[cfg_attr(not(feature = "capture"), path = "failure/pcap_off.rs")]
mod pcap;

/// Where a failed test's artifacts go: under the Cargo target directory
/// (`CARGO_TARGET_DIR`, or the one the test binary was built in),
/// `netns-harness/<package>/<binary>/<test>/`, and below that
/// `nextest-<run id>-<attempt>/` under nextest, so that two tests of the same
/// name in two test binaries, and the retries of one, never meet. `None`
/// when the binary lies outside any target directory: nothing is written
/// then (never to a shared temporary directory).
fn artifacts_dir(test: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let deps = exe.parent()?;
            (deps.file_name()? == "deps").then(|| deps.parent()?.parent().map(PathBuf::from))?
        })?;
    Some(target.join("netns-harness").join(artifacts_key(
        std::env::var("CARGO_PKG_NAME").ok().as_deref(),
        &exe.file_name()?.to_string_lossy(),
        test,
        std::env::var("NEXTEST_RUN_ID").ok().as_deref(),
        std::env::var("NEXTEST_ATTEMPT").ok().as_deref(),
    )))
}

/// The relative path of a test's artifacts (see [`artifacts_dir`]); every
/// component is made safe for a file name.
fn artifacts_key(
    package: Option<&str>,
    exe: &str,
    test: &str,
    run: Option<&str>,
    attempt: Option<&str>,
) -> PathBuf {
    let safe = |s: &str| -> String {
        let s: String = s
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if s.is_empty() || s.starts_with('.') {
            format!("_{s}")
        } else {
            s
        }
    };
    // Cargo names test binaries `<target>-<16 hex digits>`.
    let binary = match exe.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name
        }
        _ => exe,
    };
    let mut key = PathBuf::from(safe(package.unwrap_or("unknown-package")));
    key.push(safe(binary));
    key.push(safe(&test.replace("::", "-")));
    if let Some(run) = run {
        key.push(format!(
            "nextest-{}-{}",
            safe(run),
            safe(attempt.unwrap_or("1"))
        ));
    }
    key
}

/// Makes `dir` and its missing parents, refusing a symbolic link anywhere
/// below `base`, so that nothing is written through a link planted there.
fn make_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a directory", dir.display()),
            ));
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    if let Some(parent) = dir.parent() {
        make_dir(parent)?;
    }
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// The report printed at the end of a failed test's output, also written
/// with the capture to the test's artifacts directory.
pub(crate) fn report(
    test: &str,
    lab: &Lab,
    container: &Container,
    view_prefix: &str,
    said: Option<&Outcome>,
    capture: Option<Recording>,
    seed: u64,
) -> String {
    let mut out = format!("\n--- netns-harness report for {test} ---\n");
    let list = |addrs: &[IpAddr]| {
        addrs
            .iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "container {} ({}):",
        container.name(),
        list(container.addrs())
    );
    push_state(&mut out, snapshot::namespace_state(container.netns()));
    let gateways: Vec<IpAddr> = (lab.gateway4().map(IpAddr::V4).into_iter())
        .chain(lab.gateway6().map(IpAddr::V6))
        .collect();
    let mut nat = Vec::new();
    if lab.gateway4().is_some() {
        let public = lab.public_addr4();
        nat.push(match lab.inner.uplink().router {
            Router::Masquerade => format!("NAT as {public}"),
            Router::Translating(behaviour) => format!("NAT as {public} ({behaviour})"),
            Router::Routed => format!("routed, no NAT, via {public}"),
        });
    }
    match lab.public_addr6() {
        Some(public) if lab.inner.addressing().nat66 => nat.push(format!("NAT66 as {public}")),
        Some(_) => nat.push("IPv6 routed".to_owned()),
        None => {}
    }
    let _ = writeln!(
        out,
        "lab {} (gateway {}, {}):",
        lab.subnets(),
        list(&gateways),
        nat.join("; ")
    );
    let own_port = container.port_name().unwrap_or_default();
    push_state(
        &mut out,
        snapshot::lab_state(&lab.inner, own_port, view_prefix),
    );
    out.push_str(&peer_lines(said.map(|o| o.peers.as_slice())));
    out.push_str(&link_lines(container, lab, seed));
    out.push_str(&in_force_lines(said));
    match artifacts_dir(test) {
        Some(dir) => {
            if let Err(e) = write_artifacts(&dir, &mut out, own_port, capture) {
                let _ = writeln!(out, "(could not write to {}: {e})", dir.display());
            }
        }
        None => out.push_str(
            "(no artifacts written: the test binary is not in a Cargo target directory; set CARGO_TARGET_DIR)\n",
        ),
    }
    out.push_str("---\n");
    out
}

/// The report's `links:` block: the conditions in force on the test's own
/// link and on the uplink, as the kernel reports them, with what they
/// dropped, and the seed to rerun with.
fn link_lines(container: &Container, lab: &Lab, seed: u64) -> String {
    let mut out = format!(
        "links (seed {seed}: {}={seed} reruns with the same random choices):\n",
        crate::SEED_VAR
    );
    let links = [("eth0", container.link()), ("uplink", lab.uplink())];
    for (name, link) in links {
        for direction in Direction::BOTH {
            let line = link
                .as_ref()
                .map_err(ToString::to_string)
                .and_then(|l| l.shaping(direction).map_err(|e| e.to_string()));
            let _ = match line {
                Ok(s) if s.conditions == Conditions::default() => {
                    writeln!(out, "  {name} {direction}: none")
                }
                Ok(s) => writeln!(
                    out,
                    "  {name} {direction}: {} ({})",
                    s.conditions,
                    s.dropped.map_or_else(
                        || "emulated in userspace".to_owned(),
                        |n| format!("{n} packets dropped")
                    )
                ),
                Err(e) => writeln!(out, "  {name} {direction}: (unreadable: {e})"),
            };
        }
    }
    out
}

/// The report's `in force:` block: the faults and emulated link
/// conditions the body had when it panicked (they went with its process).
fn in_force_lines(said: Option<&Outcome>) -> String {
    let mut out = "in force when the body failed:\n".to_owned();
    match said.map(|o| &o.in_force) {
        None => out
            .push_str("  (unknown: the body was killed at its timeout, and its faults with it)\n"),
        Some(lines) if lines.is_empty() => out.push_str("  no fault, no emulated link\n"),
        Some(lines) => {
            for line in lines {
                let _ = writeln!(out, "  {line}");
            }
        }
    }
    out
}

/// Appends a snapshot, or why it could not be taken.
fn push_state(out: &mut String, state: crate::Result<String>) {
    match state {
        Ok(state) => out.push_str(&state),
        Err(e) => {
            let _ = writeln!(out, "  (unreadable: {e})");
        }
    }
}

/// The report's `peers:` block: what the body started and how each ended
/// (`None`: the body never said, killed at its timeout).
fn peer_lines(peers: Option<&[Peer]>) -> String {
    let mut out = "peers:\n".to_owned();
    match peers {
        None => out.push_str("  (killed with the container at the timeout)\n"),
        Some([]) => out.push_str("  none\n"),
        Some(peers) => {
            for peer in peers {
                let how = peer.ended.as_deref().unwrap_or("running");
                let _ = writeln!(out, "  {} {}: {how}", peer.name, peer.addr);
            }
        }
    }
    out
}

/// Writes the capture, and the report so far, to `dir`.
fn write_artifacts(
    dir: &Path,
    out: &mut String,
    own_port: &str,
    capture: Option<Recording>,
) -> std::io::Result<()> {
    make_dir(dir)?;
    let line = match capture {
        Some(recording) => pcap::write(dir, own_port, recording)?,
        None => pcap::off(),
    };
    out.push_str(&line);
    sys::create_file(&dir.join("report.txt"))?.write_all(out.as_bytes())
}

/// Keeps the failed test's network alive and says how to enter it, until
/// Enter is pressed or the time limit passes. Writes straight to the
/// terminal: libtest would hide it until the end.
pub(crate) fn keep(test: &str, lab: &Lab, container: &Container) {
    let limit = settings::get().keep_for;
    let seconds = limit.as_secs();
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
    if sys::poll_readable(stdin.as_fd(), Some(limit)).unwrap_or(false) {
        let mut line = String::new();
        // End-of-file (no terminal): fall back to the time limit.
        if stdin.read_line(&mut line).unwrap_or(0) == 0 {
            std::thread::sleep(limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Peer, artifacts_key, peer_lines};
    use std::path::Path;

    #[test]
    fn the_peers_block_says_how_each_ended() {
        use std::net::Ipv4Addr;
        let peer = |pid, ended: Option<&str>| Peer {
            pid,
            name: format!("p{pid}"),
            addr: Ipv4Addr::new(10, 200, 0, 3).into(),
            ended: ended.map(str::to_owned),
        };
        assert_eq!(
            peer_lines(Some(&[
                peer(7, None),
                peer(8, Some("ended with exit status: 0"))
            ])),
            "peers:\n  p7 10.200.0.3: running\n  p8 10.200.0.3: ended with exit status: 0\n"
        );
        assert_eq!(peer_lines(Some(&[])), "peers:\n  none\n");
        assert!(peer_lines(None).contains("timeout"));
    }

    #[test]
    fn artifacts_of_two_binaries_and_of_retries_never_meet() {
        let key = |exe, run, attempt| artifacts_key(Some("suite"), exe, "a::smoke", run, attempt);
        assert_eq!(
            key("probe-3e4fc7e2faeaaa09", None, None),
            Path::new("suite/probe/a-smoke")
        );
        assert_ne!(
            key("probe-3e4fc7e2faeaaa09", None, None),
            key("teardown-9690d0d28e8f000a", None, None)
        );
        assert_eq!(
            key("probe-3e4fc7e2faeaaa09", Some("5d1c"), Some("2")),
            Path::new("suite/probe/a-smoke/nextest-5d1c-2")
        );
        assert_eq!(
            artifacts_key(None, "../x", "../../etc", Some("a/b"), None),
            Path::new("unknown-package/_.._x/_.._.._etc/nextest-a_b-1")
        );
    }
}
