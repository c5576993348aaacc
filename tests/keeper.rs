//! Under nextest, the test processes of a run share the labs of the run's
//! keeper, and the keeper goes with the run. A script named
//! `cargo-nextest` stands in for nextest here (the harness takes a test
//! process whose parent has that name, with nextest's variables, for one
//! of a nextest run), so that what happens after the run ends can be seen
//! without anything killing the run's processes for it.

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use netns_harness::prelude::*;
use netns_harness_suite::{dies_with_test, eventually};

/// Marks the processes of the stand-in run: its test processes and the
/// keeper inherit it.
const MARK_VAR: &str = "NETNS_HARNESS_SUITE_KEEPER";

/// Every process whose environment carries `mark`.
fn marked(mark: &str) -> Vec<u32> {
    let needle = format!("{MARK_VAR}={mark}");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .collect()
}

/// Says which lab namespace the test's lab is, and the test's address.
#[netns_test]
#[ignore = "run by a_nextest_run_shares_the_keepers_lab_and_the_keeper_goes_with_it"]
fn says_its_lab(net: Net) {
    let fd = net.lab().lab_netns().as_raw_fd();
    let ns = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
    println!("KEEPER-VIEW {} {}", ns.display(), net.addr());
}

#[test]
fn a_nextest_run_shares_the_keepers_lab_and_the_keeper_goes_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("cargo-nextest");
    std::fs::write(
        &script,
        "#!/bin/sh\nset -e\nfor keeper in 1 1 0; do\n  \
         NETNS_HARNESS_KEEPER=$keeper \"$TEST_BINARY\" --exact says_its_lab --ignored --nocapture\n\
         done\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mark = format!("{}-run", std::process::id());
    let out = dies_with_test(
        Command::new(&script)
            .env("TEST_BINARY", std::env::current_exe().unwrap())
            .env("NEXTEST_RUN_ID", &mark)
            .env("NEXTEST_EXECUTION_MODE", "process-per-test")
            .env(MARK_VAR, &mark),
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let views: Vec<Vec<&str>> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("KEEPER-VIEW "))
        .map(|l| l.split(' ').collect())
        .collect();
    assert_eq!(views.len(), 3, "{text}");
    // Two processes, one lab (the keeper's), two addresses on it.
    assert_eq!(views[0][0], views[1][0], "{text}");
    assert_ne!(views[0][1], views[1][1], "{text}");
    // With the keeper off, a lab of the process's own.
    assert_ne!(views[2][0], views[0][0], "{text}");
    // The run is over: the keeper is gone.
    assert!(
        eventually(Duration::from_secs(10), || marked(&mark).is_empty()),
        "the run's keeper outlives it: {:?}",
        marked(&mark)
    );
}
