//! A thousand containers, one after another: the test process's
//! descriptors, threads and memory return to where they started, and the
//! host is unchanged. Alone in its binary, so nothing else moves the
//! process's counts.

use std::time::{Duration, Instant};

use netns_harness::{Lab, Spec};
use netns_harness_suite::{HostState, bridge_ports, eventually, needs};

const CONTAINERS: usize = 1000;
/// Memory the allocator may keep after the run (freed blocks it holds).
const RSS_SLACK_KIB: u64 = 4096;

/// (open descriptors, threads, resident KiB) of this process.
fn usage() -> (usize, u64, u64) {
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (fds, field("Threads:"), field("VmRSS:"))
}

#[needs("nsenter", "ip", "nft")]
#[test]
fn a_thousand_containers_leave_no_trace() {
    let host = HostState::capture();
    let lab = Lab::builder().subnet("10.98.0.0/22").build().unwrap();
    let spec = Spec::command("sleep").arg("600");
    for _ in 0..20 {
        drop(lab.spawn(&spec).unwrap()); // starts the spawner thread and the like
    }
    // The lab keeps namespaces ready (two, with a port each): measure
    // when they are.
    let settled = || {
        assert!(
            eventually(Duration::from_secs(30), || bridge_ports(&lab) == 2),
            "the lab has not made its two namespaces ahead"
        );
        usage()
    };
    let (fds, threads, rss) = settled();
    let start = Instant::now();
    for _ in 0..CONTAINERS {
        drop(lab.spawn(&spec).unwrap());
    }
    let elapsed = start.elapsed();
    let (fds_after, threads_after, rss_after) = settled();
    println!(
        "soak: {CONTAINERS} containers in {elapsed:?}; fds {fds} -> {fds_after}, threads {threads} -> {threads_after}, \
         VmRSS {rss} KiB -> {rss_after} KiB"
    );
    assert_eq!(fds_after, fds, "descriptors leaked");
    assert_eq!(threads_after, threads, "threads leaked");
    assert!(
        rss_after <= rss + RSS_SLACK_KIB,
        "memory grew from {rss} KiB to {rss_after} KiB"
    );
    drop(lab);
    HostState::capture().assert_unchanged(&host);
}
