//! Under nextest, the test processes of a run share the labs of the run's
//! keeper, and the keeper goes with the run. A script named
//! `cargo-nextest` stands in for nextest here (the harness takes a test
//! process whose parent has that name, with nextest's variables, for one
//! of a nextest run), so that what happens after the run ends can be seen
//! without anything killing the run's processes for it.

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use netns_harness::prelude::*;
use netns_harness_suite::{dies_with_test, eventually};

/// Marks the processes of the stand-in run: its test processes and the
/// keeper inherit it.
const MARK_VAR: &str = "NETNS_HARNESS_SUITE_KEEPER";

/// Every process whose environment carries `mark`.
fn marked(mark: &str) -> Vec<u32> {
    netns_harness_suite::marked(MARK_VAR, mark)
}

/// Says which lab namespace and user namespace the test's lab is in, and
/// the test's address.
#[netns_test]
#[ignore = "run by a_nextest_run_shares_the_keepers_lab_and_the_keeper_goes_with_it"]
fn says_its_lab(net: Net) {
    let fd = net.lab().lab_netns().as_raw_fd();
    let ns = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
    let user = std::fs::read_link("/proc/self/ns/user").unwrap();
    println!(
        "KEEPER-VIEW {} {} {}",
        ns.display(),
        user.display(),
        net.addr()
    );
}

/// Says what shaping the shared lab's uplink gives.
#[test]
#[ignore = "run by a_nextest_run_shares_the_keepers_lab_and_the_keeper_goes_with_it"]
fn shapes_the_shared_uplink() {
    match Lab::shared().unwrap().uplink() {
        Ok(_) => println!("UPLINK shaped"),
        Err(e) => println!("UPLINK refused: {e}"),
    }
}

/// The stand-in run: four tests at once, one that tries the shared
/// uplink, one with the keeper off; then it says "paused" and waits for a
/// line.
const SCRIPT: &str = r#"#!/bin/sh
set -e
# Each test process a child of this script, as nextest's are of nextest.
run() { exec "$TEST_BINARY" --exact "$1" --ignored --nocapture; }
pids=""
for i in 1 2 3 4; do
  "$TEST_BINARY" --exact says_its_lab --ignored --nocapture >"$DIR/view.$i" 2>&1 &
  pids="$pids $!"
done
for pid in $pids; do wait "$pid"; done
cat "$DIR"/view.*
(run shapes_the_shared_uplink)
(NETNS_HARNESS_KEEPER=0 run says_its_lab)
echo paused
read -r line
"#;

/// The keeper of the stand-in run, by the variable its launcher set.
fn keeper_of(mark: &str) -> Vec<u32> {
    marked(mark)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|kv| kv.starts_with(b"NETNS_HARNESS_KEEPER_ROLE="))
            })
        })
        .collect()
}

#[test]
fn a_nextest_run_shares_the_keepers_lab_and_the_keeper_goes_with_it() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("cargo-nextest");
    std::fs::write(&script, SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mark = format!("{}-run", std::process::id());
    let mut run = dies_with_test(
        Command::new(&script)
            .env("TEST_BINARY", std::env::current_exe().unwrap())
            .env("DIR", dir.path())
            .env("NEXTEST_RUN_ID", &mark)
            .env("NEXTEST_EXECUTION_MODE", "process-per-test")
            .env(MARK_VAR, &mark)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    )
    .spawn()
    .unwrap();
    let mut text = String::new();
    let mut stdout = BufReader::new(run.stdout.take().unwrap());
    while !text.ends_with("paused\n") {
        assert!(
            stdout.read_line(&mut text).unwrap() > 0,
            "the run ended early:\n{text}"
        );
    }
    let views: Vec<Vec<&str>> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("KEEPER-VIEW "))
        .map(|l| l.split(' ').collect())
        .collect();
    assert_eq!(views.len(), 5, "{text}");
    // Four processes at once, one lab (the keeper's), in one user namespace
    // (the keeper's lab user namespace), four addresses on it.
    let mut addrs: Vec<&str> = views[..4].iter().map(|v| v[2]).collect();
    addrs.sort_unstable();
    addrs.dedup();
    assert_eq!(addrs.len(), 4, "{text}");
    for view in &views[1..4] {
        assert_eq!(view[..2], views[0][..2], "{text}");
    }
    // With the keeper off, a lab of the process's own, in a user namespace
    // of its own.
    assert_ne!(views[4][0], views[0][0], "{text}");
    assert_ne!(views[4][1], views[0][1], "{text}");
    // The uplink every process of the run shares is not one's to shape.
    assert!(
        text.contains("UPLINK refused: invalid topology")
            && text.contains("nextest run's shared lab"),
        "{text}"
    );

    // One keeper, which holds no descriptor of a test process: /dev/null
    // for its standard streams, no pipe, no file.
    let keepers = keeper_of(&mark);
    assert_eq!(keepers.len(), 1, "{keepers:?}");
    let fds: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{}/fd", keepers[0]))
        .unwrap()
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path()).unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                target.display().to_string(),
            )
        })
        .collect();
    for (fd, target) in &fds {
        let standard = ["0", "1", "2"].contains(&fd.as_str());
        assert!(
            if standard {
                target == "/dev/null"
            } else {
                !target.starts_with('/') && !target.starts_with("pipe:")
            },
            "the keeper holds {fd} -> {target}: {fds:?}"
        );
    }

    // The run is over: the keeper is gone.
    writeln!(run.stdin.take().unwrap(), "go").unwrap();
    assert!(run.wait().unwrap().success());
    assert!(
        eventually(Duration::from_secs(10), || marked(&mark).is_empty()),
        "the run's keeper outlives it: {:?}",
        marked(&mark)
    );
}
