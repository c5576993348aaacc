//! Bad input gets a typed error that says what was wrong and how to fix it,
//! and leaves nothing behind: no process, no bridge port, no address.

use std::os::unix::fs::PermissionsExt;

use netns_harness::{Error, Lab, Spec};
use netns_harness_suite::{HostState, assert_spawn_fails, bridge_ports, needs, run_unprivileged};
use rstest::rstest;

#[rstest]
#[case(
    "sixteen-bytes-16",
    "16 bytes long; Linux interface names are at most 15 bytes"
)]
#[case("", "must not be empty")]
#[case(
    "web server",
    "contains ' '; use only ASCII letters, digits, '-' and '_'"
)]
#[case("-x", "must not start with '-'")]
#[needs("nsenter", "ip", "ping")]
fn an_invalid_container_name_is_refused(#[case] name: &str, #[case] message: &str) {
    let err = assert_spawn_fails(Spec::command("true").name(name), message);
    assert!(matches!(err, Error::InvalidName { .. }));
}

#[rstest]
#[case("bridge-name-is-long", "at most 15 bytes")]
#[case("br/0", "contains '/'")]
#[case("uplink", "the name of the lab's uplink")]
#[needs("ip", "nft")]
fn an_invalid_bridge_name_is_refused(#[case] bridge: &str, #[case] message: &str) {
    let before = HostState::capture();
    let err = Lab::builder().bridge(bridge).build().unwrap_err();
    assert!(matches!(err, Error::InvalidName { .. }), "{err}");
    assert!(err.to_string().contains(message), "{err}");
    HostState::capture().assert_unchanged(&before);
}

#[needs("ip", "nft")]
#[test]
fn a_netlink_refusal_names_the_request_the_namespace_and_the_kernel_error() {
    // `lo` exists in every namespace: the kernel refuses a bridge of that name.
    let before = HostState::capture();
    let err = Lab::builder().bridge("lo").build().unwrap_err();
    assert!(matches!(err, Error::Netlink { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "failed to add bridge lo in lab namespace: File exists (os error 17)"
    );
    HostState::capture().assert_unchanged(&before);
}

#[rstest]
#[case("10.200.0.0", "expected CIDR notation such as 10.200.0.0/16")]
#[case("10.200.0.300/16", "not an IPv4 address")]
#[case("10.200.0.0/40", "at most 32")]
#[case(
    "10.200.0.1/16",
    "host bits are set; the network address of this prefix is 10.200.0.0/16"
)]
#[case("10.200.0.0/31", "no room for a gateway and a container")]
#[case("10.0.0.0/7", "use a prefix from /8 to /30")]
#[case("198.18.0.0/16", "overlaps 198.18.0.0/24, the lab's uplink")]
#[case("127.1.0.0/16", "overlaps 127.0.0.0/8, loopback")]
#[case("224.1.0.0/16", "multicast")]
#[needs("ip", "nft")]
fn an_invalid_subnet_is_refused(#[case] subnet: &str, #[case] message: &str) {
    let before = HostState::capture();
    let err = Lab::builder().subnet(subnet).build().unwrap_err();
    assert!(matches!(err, Error::InvalidSubnet { .. }), "{err}");
    assert!(err.to_string().contains(message), "{err}");
    assert!(err.to_string().contains(subnet), "{err}");
    HostState::capture().assert_unchanged(&before);
}

#[needs("nsenter", "ip")]
#[test]
fn a_full_subnet_says_so_and_recovers_when_a_container_goes() {
    // No namespace made ahead: the bridge's ports are its containers'.
    let lab = Lab::builder()
        .subnet("10.95.0.0/29")
        .ahead(0)
        .build()
        .unwrap();
    let mut held: Vec<_> = (0..5)
        .map(|_| lab.spawn(&Spec::command("sleep").arg("600")).unwrap())
        .collect();
    let err = lab.spawn(&Spec::command("true")).unwrap_err();
    assert!(
        matches!(err, Error::AddressesExhausted { capacity: 5, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("10.95.0.0/29"), "{err}");
    assert!(err.to_string().contains("larger subnet"), "{err}");
    assert_eq!(bridge_ports(&lab), 5);
    held.pop();
    let freed = lab.spawn(&Spec::command("sleep").arg("600")).unwrap();
    assert!(lab.subnet().contains(freed.addr4().unwrap()));
}

#[needs("nsenter", "ip", "ping")]
#[test]
fn a_missing_command_is_refused_before_anything_is_made() {
    let err = assert_spawn_fails(
        Spec::command("no-such-command-here"),
        "command \"no-such-command-here\" not found: no executable of that name in PATH",
    );
    assert!(matches!(err, Error::CommandNotFound { .. }));
    let err = assert_spawn_fails(
        Spec::command("/no/such/path"),
        "no executable file at that path",
    );
    assert!(matches!(err, Error::CommandNotFound { .. }));
}

#[needs("nsenter", "ip", "ping")]
#[test]
fn a_container_that_fails_before_it_is_ready_reports_the_stage() {
    // An executable file that is not a program: the container gets as far
    // as execve, which fails with ENOEXEC.
    // A directory of its own, created with a random name: nobody else can
    // have prepared, or swap, what the container executes. In the host's
    // /tmp, so the container sees the host's (`Fs::Host`; its own is empty).
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("not-a-program");
    std::fs::write(&bogus, [0u8, 1, 2, 3]).unwrap();
    std::fs::set_permissions(&bogus, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = assert_spawn_fails(
        Spec::command(&bogus).fs(netns_harness::Fs::Host),
        "failed while executing the program",
    );
    dir.close().unwrap();
    assert!(matches!(err, Error::ContainerSetup { .. }), "{err}");
    assert!(err.to_string().contains("Exec format error"), "{err}");
}

#[needs("unshare")]
#[test]
fn no_privileges_and_no_rootless_mode_names_the_fix() {
    run_unprivileged("unsupported_child");
}

#[test]
#[ignore = "a child process of no_privileges_and_no_rootless_mode_names_the_fix"]
fn unsupported_child() {
    let err = Lab::builder().build().unwrap_err();
    let Error::Unsupported { reason, fix } = &err else {
        panic!("expected Unsupported, got {err}");
    };
    assert!(reason.contains("not root"), "{reason}");
    assert!(
        fix.contains("unset NETNS_HARNESS_ROOTLESS") && fix.contains("run the tests as root"),
        "{fix}"
    );
}
