//! Teardown: whatever way a test ends (success, panic, error, SIGKILL of
//! the whole process), no process, interface or namespace of it remains,
//! and the host is as it was.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{Command, Stdio};
use std::time::Duration;

use netns_harness::{Container, Error, Lab, Spec};
use netns_harness_suite::{
    HostState, bridge_ports, dies_with_test, eventually, find_line, in_netns, links,
    namespace_holders, needs, process_alive,
};

const GONE_WITHIN: Duration = Duration::from_secs(10);
const REPORTS_WITHIN: Duration = Duration::from_secs(30);
const VICTIM_VAR: &str = "NETNS_HARNESS_SUITE_VICTIM";

fn sleeper(lab: &Lab) -> Container {
    lab.spawn(&Spec::command("sleep").arg("600"))
        .expect("spawn a sleeper")
}

fn fd_inode(fd: BorrowedFd<'_>) -> u64 {
    std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .expect("stat a namespace descriptor")
        .ino()
}

fn netns_inode_of(pid: u32) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .expect("stat a container's namespace")
        .ino()
}

/// A lab with room for exactly one container, so that a leaked address
/// makes the next spawn fail; without namespaces made ahead, so that the
/// bridge's ports are its containers'.
fn one_slot_lab() -> Lab {
    Lab::builder()
        .subnet("10.90.0.0/30")
        .ahead(0)
        .build()
        .unwrap()
}

#[needs("nsenter", "ip")]
#[test]
fn a_panic_releases_the_container_its_port_and_its_address() {
    let lab = one_slot_lab();
    let mut pid = 0;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let container = sleeper(&lab);
        pid = container.pid();
        assert_eq!(bridge_ports(&lab), 1);
        panic!("the test body fails");
    }));
    assert!(result.is_err());
    assert!(
        !process_alive(pid),
        "container process {pid} survived the panic"
    );
    assert_eq!(bridge_ports(&lab), 0, "its bridge port survived the panic");
    drop(sleeper(&lab)); // its address is free again
}

#[needs("nsenter", "ip")]
#[test]
fn an_error_return_releases_the_container_its_port_and_its_address() {
    let lab = one_slot_lab();
    let mut pid = 0;
    let mut body = || -> Result<(), Error> {
        let container = sleeper(&lab);
        pid = container.pid();
        lab.spawn(&Spec::command("no-such-command-here"))?;
        unreachable!("the spawn above fails");
    };
    let err = body().unwrap_err();
    assert!(matches!(err, Error::CommandNotFound { .. }), "{err}");
    assert!(!process_alive(pid));
    assert_eq!(bridge_ports(&lab), 0);
    drop(sleeper(&lab));
}

#[test]
fn dropping_a_lab_and_its_containers_destroys_every_namespace() {
    let lab = Lab::builder().subnet("10.91.0.0/24").build().unwrap();
    let lab_ns = fd_inode(lab.lab_netns());
    let outside_ns = fd_inode(lab.outside_netns());
    let containers: Vec<Container> = (0..3).map(|_| sleeper(&lab)).collect();
    let pids: Vec<u32> = containers.iter().map(Container::pid).collect();
    let container_ns: Vec<u64> = pids.iter().map(|&p| netns_inode_of(p)).collect();
    // Only this process holds it. (A child another test clones meanwhile
    // holds a copy of every descriptor until it executes its program or
    // exits, a few milliseconds: wait that out.)
    let me = [std::process::id()];
    assert!(
        eventually(GONE_WITHIN, || namespace_holders(lab_ns) == me),
        "the lab's namespace is held by {:?}",
        namespace_holders(lab_ns)
    );
    drop(containers);
    drop(lab);
    for pid in pids {
        assert!(!process_alive(pid));
    }
    for ns in [lab_ns, outside_ns].into_iter().chain(container_ns) {
        assert!(
            eventually(GONE_WITHIN, || namespace_holders(ns).is_empty()),
            "namespace {ns} is still held by {:?}",
            namespace_holders(ns)
        );
    }
}

#[needs("nsenter", "ip")]
#[test]
fn the_devices_of_dropped_containers_leave_the_lab_namespace() {
    // No namespace made ahead: the lab namespace's devices are the lab's
    // and its containers'.
    let lab = Lab::builder()
        .subnet("10.96.0.0/24")
        .ahead(0)
        .build()
        .unwrap();
    let before = links(lab.lab_netns());
    assert_eq!(before, ["lo", lab.bridge(), "uplink"]);
    for _ in 0..20 {
        drop(sleeper(&lab));
    }
    assert_eq!(bridge_ports(&lab), 0);
    assert!(
        eventually(GONE_WITHIN, || links(lab.lab_netns()) == before),
        "left in the lab namespace: {:?}",
        links(lab.lab_netns())
    );
}

#[needs("nsenter", "ip")]
#[test]
fn namespaces_made_ahead_wait_as_ports_without_carrier_and_go_with_the_lab() {
    let lab = Lab::builder()
        .subnet("10.96.1.0/24")
        .ahead(2)
        .build()
        .unwrap();
    let lab_ns = fd_inode(lab.lab_netns());
    // From the second container on, the lab makes namespaces ahead.
    for _ in 0..3 {
        drop(sleeper(&lab));
    }
    let ports = || {
        in_netns(
            lab.lab_netns(),
            "ip",
            &["-o", "link", "show", "master", lab.bridge()],
        )
    };
    assert!(
        eventually(GONE_WITHIN, || bridge_ports(&lab) == 2),
        "{}",
        ports()
    );
    // Their eth0 is down until a container takes them: no carrier,
    // nothing passes.
    let name = |line: &str| {
        line.split(": ")
            .nth(1)
            .unwrap()
            .split('@')
            .next()
            .unwrap()
            .to_owned()
    };
    let listed = ports();
    let waiting: Vec<String> = listed.lines().map(name).collect();
    for port in listed.lines() {
        assert!(!port.contains("LOWER_UP"), "{port}");
    }
    // A container takes one (the only port with carrier is one of them);
    // the lab makes another.
    let taken = sleeper(&lab);
    assert!(
        eventually(GONE_WITHIN, || bridge_ports(&lab) == 3),
        "{}",
        ports()
    );
    let listed = ports();
    let carried: Vec<String> = listed
        .lines()
        .filter(|p| p.contains("LOWER_UP"))
        .map(name)
        .collect();
    assert_eq!(carried.len(), 1, "{listed}");
    assert!(
        waiting.contains(&carried[0]),
        "{carried:?} not in {waiting:?}"
    );
    drop(taken);
    drop(lab);
    assert!(
        eventually(GONE_WITHIN, || namespace_holders(lab_ns).is_empty()),
        "the lab's namespace is still held by {:?}",
        namespace_holders(lab_ns)
    );
}

#[needs("ip", "nft", "ping")]
#[test]
fn a_lab_lifecycle_leaves_the_host_unchanged() {
    let before = HostState::capture();
    {
        let lab = Lab::builder().subnet("10.92.0.0/24").build().unwrap();
        let a = sleeper(&lab);
        let out = lab
            .spawn(
                &Spec::command("ping")
                    .args(["-c", "1", "-W", "2", &a.addr().to_string()])
                    .stdout(netns_harness::Stdio::Null),
            )
            .unwrap()
            .output(Duration::from_secs(10))
            .unwrap();
        assert!(out.status.success());
    }
    HostState::capture().assert_unchanged(&before);
}

/// Run by `sigkill_of_the_test_process_leaves_nothing` in a child process:
/// builds a lab with containers, reports what it made, and waits to be
/// killed. Run alone, it checks that the report is complete.
#[test]
#[ignore = "a child process of sigkill_of_the_test_process_leaves_nothing"]
fn sigkill_victim() {
    let lab = Lab::builder().subnet("10.93.0.0/24").build().unwrap();
    let mut containers: Vec<Container> = (0..3).map(|_| sleeper(&lab)).collect();
    containers.push(
        lab.spawn_outside(&Spec::command("sleep").arg("600"))
            .unwrap(),
    );
    let mut report = format!(
        "report {} {} {}",
        std::process::id(),
        fd_inode(lab.lab_netns()),
        fd_inode(lab.outside_netns())
    );
    for c in &containers {
        report += &format!(" {}:{}", c.pid(), netns_inode_of(c.pid()));
    }
    println!("{report}");
    assert_eq!(report.split(' ').count(), 4 + containers.len());
    if std::env::var_os(VICTIM_VAR).is_some() {
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }
}

#[needs("ip", "nft")]
#[test]
fn sigkill_of_the_test_process_leaves_nothing() {
    let before = HostState::capture();
    let mut victim = dies_with_test(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "sigkill_victim", "--ignored", "--nocapture"])
            .env(VICTIM_VAR, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )
    .spawn()
    .unwrap();
    let Some(report) = find_line(victim.stdout.take().unwrap(), REPORTS_WITHIN, |l| {
        l.starts_with("report ")
    }) else {
        victim.kill().unwrap();
        victim.wait().unwrap();
        panic!("the victim did not report within {REPORTS_WITHIN:?}");
    };
    let fields: Vec<&str> = report.split(' ').skip(1).collect();
    assert_eq!(fields[0].parse::<u32>().unwrap(), victim.id());
    let mut namespaces: Vec<u64> = fields[1..3].iter().map(|f| f.parse().unwrap()).collect();
    let mut pids = Vec::new();
    for entry in &fields[3..] {
        let (pid, ns) = entry.split_once(':').unwrap();
        pids.push(pid.parse::<u32>().unwrap());
        namespaces.push(ns.parse().unwrap());
    }
    assert!(pids.iter().all(|&p| process_alive(p)));

    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();

    for pid in pids {
        assert!(
            eventually(GONE_WITHIN, || !process_alive(pid)),
            "container process {pid} outlived the killed test process"
        );
    }
    for ns in namespaces {
        assert!(
            eventually(GONE_WITHIN, || namespace_holders(ns).is_empty()),
            "namespace {ns} outlived the killed test process, held by {:?}",
            namespace_holders(ns)
        );
    }
    HostState::capture().assert_unchanged(&before);
}
