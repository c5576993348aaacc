//! The doctor says whether tests can run here, and what to fix when not.

use netns_harness::doctor::{self, Mode};
use netns_harness_suite::{needs, run_unprivileged};

#[test]
fn on_this_machine_every_check_passes() {
    let report = doctor::report();
    let text = report.to_string();
    assert!(report.can_run(), "{text}");
    let expected = if netns_harness::is_rootless() {
        Mode::Rootless
    } else {
        Mode::Root
    };
    assert_eq!(report.mode, expected, "{text}");
    let names: Vec<&str> = report.checks.iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            "privileges",
            "user namespaces",
            "container isolation",
            "network namespace",
            "bridge",
            "veth pair",
            "nf_tables",
            "raw sockets",
            "container"
        ]
    );
    assert!(report.checks.iter().all(|c| c.detail.is_ok()), "{text}");
}

#[needs("unshare")]
#[test]
fn without_privileges_it_fails_and_names_the_fix() {
    // The same situation as on a machine without unprivileged user
    // namespaces.
    run_unprivileged("doctor_without_privileges");
}

#[test]
#[ignore = "a child process of without_privileges_it_fails_and_names_the_fix"]
fn doctor_without_privileges() {
    let report = doctor::report();
    let text = report.to_string();
    assert!(!report.can_run(), "{text}");
    assert_eq!(report.mode, Mode::Unsupported);
    assert!(
        text.contains("FAIL  privileges: the process is not root"),
        "{text}"
    );
    assert!(
        text.contains("fix: unset NETNS_HARNESS_ROOTLESS, or run the tests as root"),
        "{text}"
    );
    assert!(text.contains("mode: none"), "{text}");
}
