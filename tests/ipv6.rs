//! IPv6: dual-stack and IPv6-only labs. Containers get their addresses and
//! default routes at once (`ip -6 addr`, `ip -6 route` inside them say
//! so), reach each other, the gateway and the outside host over IPv6
//! (`ping -6`), the outside host sees their own addresses (routed, no
//! NAT), IPv6-only containers have no IPv4, names resolve to both
//! families with libc's resolver, `#[netns_test(ip = "…")]` gives a test
//! such a network, and a bad IPv6 subnet is a typed error.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use netns_harness::matrix::{Check, Endpoint, Matrix};
use netns_harness::prelude::*;
use netns_harness::probe::ProbeOptions;
use netns_harness::{Error, Stack};
use netns_harness_suite::{HostState, find_line, in_netns, needs, run_test_in_child_with};

const TIMEOUT: Duration = Duration::from_secs(30);

fn lab(stack: Stack) -> Lab {
    Lab::builder().stack(stack).build().expect("lab")
}

/// Runs `program args` in a new container of `lab`: its exit code and
/// output (standard error with it).
fn run(lab: &Lab, program: &str, args: &[&str]) -> (Option<i32>, String) {
    let spec = Spec::command(program)
        .args(args)
        .stdout(Stdio::Piped)
        .stderr_to_stdout();
    let out = lab
        .spawn(&spec)
        .expect("spawn")
        .output(TIMEOUT)
        .expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `ping -c1` of `addr` from a new container of `lab`: whether it answered.
fn pings(lab: &Lab, addr: IpAddr) -> (bool, String) {
    let family = if addr.is_ipv6() { "-6" } else { "-4" };
    let (code, out) = run(lab, "ping", &[family, "-c1", "-W2", &addr.to_string()]);
    (code == Some(0), out)
}

fn sleeper(lab: &Lab) -> Container {
    lab.spawn(&Spec::command("sleep").arg("600"))
        .expect("spawn")
}

#[needs("ip")]
#[test]
fn a_dual_stack_container_has_both_addresses_and_default_routes_at_once() {
    let lab = lab(Stack::Dual);
    assert_eq!(lab.stack(), Stack::Dual);
    let (code, out) = run(
        &lab,
        "sh",
        &[
            "-c",
            "ip -6 addr show dev eth0; ip -6 route; ip -4 addr show dev eth0",
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    let gateway6 = lab
        .gateway6()
        .expect("a dual-stack lab has an IPv6 gateway");
    assert_eq!(gateway6, "fd00:200::1".parse::<Ipv6Addr>().unwrap());
    // The next container takes the next address: both families end alike.
    let container = sleeper(&lab);
    let (v4, v6) = (
        container.addr4().expect("an IPv4 address"),
        container.addr6().expect("an IPv6 address"),
    );
    let [_, _, b, c] = v4.octets();
    let expected = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, b.into(), c.into());
    assert_eq!(v6, expected, "{v4}");
    assert!(lab.subnet6().unwrap().contains(v6), "{v6}");
    assert!(out.contains("inet6 fd00:200::"), "no IPv6 address: {out}");
    assert!(
        !out.contains("tentative"),
        "duplicate address detection ran: {out}"
    );
    assert!(
        out.contains(&format!("default via {gateway6} dev eth0")),
        "no IPv6 default route: {out}"
    );
    assert!(out.contains("inet 10.200."), "no IPv4 address: {out}");
}

#[needs("ping")]
#[test]
fn dual_stack_containers_reach_each_other_the_gateway_and_the_outside_over_ipv6() {
    let lab = lab(Stack::Dual);
    let peer = sleeper(&lab);
    for addr in [
        IpAddr::V6(peer.addr6().unwrap()),
        IpAddr::V6(lab.gateway6().unwrap()),
        IpAddr::V6(lab.outside_addr6().unwrap()),
        peer.addr(),
        lab.outside_addr(),
    ] {
        let (answered, out) = pings(&lab, addr);
        assert!(answered, "ping {addr} failed: {out}");
    }
    // An address of the subnet that no container has: no answer.
    let nobody = lab.subnet6().unwrap().network().segments();
    let nobody = Ipv6Addr::new(nobody[0], nobody[1], 0, 0, 0, 0, 0xdead, 0xbeef);
    let (answered, out) = pings(&lab, IpAddr::V6(nobody));
    assert!(!answered, "{nobody} answered: {out}");
}

#[needs("ping", "ip")]
#[test]
fn an_ipv6_only_container_has_no_ipv4_and_reaches_its_peers_and_the_outside_over_ipv6() {
    let lab = lab(Stack::V6);
    assert_eq!(
        lab.subnet6().map(|s| s.to_string()).as_deref(),
        Some("fd00:200::/64")
    );
    let (code, out) = run(&lab, "sh", &["-c", "ip -4 addr show dev eth0; ip -4 route"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("inet "), "an IPv4 address: {out}");
    assert!(!out.contains("default"), "an IPv4 route: {out}");
    let peer = sleeper(&lab);
    assert_eq!((peer.addrs().len(), peer.addr4()), (1, None));
    assert!(peer.addr().is_ipv6() && lab.gateway().is_ipv6());
    for addr in [peer.addr(), lab.gateway(), lab.outside_addr()] {
        let (answered, out) = pings(&lab, addr);
        assert!(answered, "ping {addr} failed: {out}");
    }
    let (answered, out) = pings(&lab, IpAddr::V4(lab.outside_addr4()));
    assert!(!answered, "reached the outside over IPv4: {out}");
}

/// The source address the outside host sees on a TCP connection over IPv6
/// from a new container of `lab`, and that container.
fn seen_from_outside(lab: &Lab) -> (String, Container) {
    // netcat-openbsd says where a connection came from on standard error.
    let mut server = lab
        .spawn_outside(
            &Spec::command("nc")
                .args(["-6", "-n", "-v", "-l", "-p", "7000"])
                .stdout(Stdio::Piped)
                .stderr_to_stdout(),
        )
        .expect("spawn the server");
    let stdout = server.take_stdout().expect("its output");
    let outside = lab.outside_addr6().unwrap().to_string();
    let script = format!("until echo hi | nc -6 -n -N {outside} 7000; do sleep 0.05; done");
    let mut client = lab
        .spawn(&Spec::command("sh").args(["-c", &script]))
        .expect("spawn the client");
    let prefix = "Connection received on ";
    let line = find_line(stdout, TIMEOUT, move |l| l.starts_with(prefix))
        .expect("the outside host received no connection");
    client.wait_timeout(TIMEOUT).expect("the client ends");
    let source = line[prefix.len()..].split(' ').next().unwrap_or_default();
    (source.to_owned(), client)
}

#[needs("nc")]
#[test]
fn the_outside_host_sees_a_containers_own_ipv6_address() {
    let lab = lab(Stack::Dual);
    let (source, client) = seen_from_outside(&lab);
    assert_eq!(source, client.addr6().unwrap().to_string());
}

#[needs("nc", "nft")]
#[test]
fn with_nat66_the_outside_host_sees_the_labs_address() {
    let lab = Lab::builder()
        .stack(Stack::Dual)
        .nat66(true)
        .build()
        .unwrap();
    let (source, client) = seen_from_outside(&lab);
    assert_eq!(source, lab.public_addr6().unwrap().to_string());
    assert_ne!(source, client.addr6().unwrap().to_string());
    let table = in_netns(
        lab.lab_netns(),
        "nft",
        &["list", "table", "ip6", "netns_harness"],
    );
    assert!(
        table.contains("ip6 saddr fd00:200::/64 oifname \"uplink\" counter packets")
            && !table.contains("counter packets 0 "),
        "{table}"
    );
    // No route back from the outside: it reaches only the lab's address.
    let routes = in_netns(lab.outside_netns(), "ip", &["-6", "route"]);
    assert!(!routes.contains("fd00:200::/64"), "{routes}");
}

#[needs("getent")]
#[test]
fn names_resolve_to_both_families_with_libcs_resolver() {
    let lab = lab(Stack::Dual);
    let db = lab
        .spawn(&Spec::command("sleep").arg("600").name("db"))
        .expect("spawn db");
    let (code, out) = run(
        &lab,
        "sh",
        &[
            "-c",
            "getent ahostsv6 db; getent ahostsv4 db; getent ahostsv6 outside",
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    for addr in [
        db.addr6().unwrap().to_string(),
        db.addr().to_string(),
        lab.outside_addr6().unwrap().to_string(),
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(&addr)),
            "{addr} missing: {out}"
        );
    }
    assert_eq!(lab.resolve("db").unwrap(), db.addrs());
}

#[test]
fn a_bad_ipv6_subnet_is_a_typed_error() {
    for (subnet, says) in [
        ("fd00:1::/48", "is a /64"),
        ("2001:db8::/64", "the lab's uplink"),
        ("fd00:1::5/64", "host bits are set"),
        ("10.0.0.0/24", "not an IPv6 address"),
    ] {
        let err = Lab::builder()
            .stack(Stack::Dual)
            .subnet6(subnet)
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidSubnet { .. }), "{err:?}");
        assert!(err.to_string().contains(says), "{subnet}: {err}");
    }
    let err = Lab::builder().nat66(true).build().unwrap_err();
    assert!(err.to_string().contains("carries IPv4 only"), "{err}");
}

#[needs("ip", "nft")]
#[test]
fn a_dual_stack_lab_with_nat66_leaves_the_host_as_it_was() {
    let before = HostState::capture();
    let lab = Lab::builder()
        .stack(Stack::Dual)
        .nat66(true)
        .build()
        .unwrap();
    let (answered, out) = pings(&lab, IpAddr::V6(lab.outside_addr6().unwrap()));
    assert!(answered, "{out}");
    drop(lab);
    HostState::capture().assert_unchanged(&before);
}

#[netns_test(ip = "dual")]
fn a_dual_stack_test_knows_both_of_its_addresses(net: Net) {
    assert_eq!(net.stack(), Stack::Dual);
    let addr6 = net.addr6().expect("an IPv6 address");
    let own = std::fs::read_to_string("/proc/net/if_inet6").unwrap();
    let hex: String = addr6.octets().iter().map(|b| format!("{b:02x}")).collect();
    assert!(own.contains(&hex), "{addr6} is not on eth0: {own}");
    let peer = net.spawn(&Spec::command("sleep").arg("60")).unwrap();
    assert!(peer.addr6().is_some());
    let socket = std::net::UdpSocket::bind("[::]:0").unwrap();
    socket
        .connect((net.outside_addr6().unwrap(), 9))
        .expect("a route to the outside host over IPv6");
}

#[netns_test(ip = "v6")]
fn an_ipv6_only_test_has_no_ipv4_route(net: Net) {
    assert_eq!(net.stack(), Stack::V6);
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let err = socket.connect((net.lab().outside_addr4(), 9)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "{err}");
    assert!(net.outside_addr().is_ipv6() && net.addr().is_ipv6());
}

#[needs("ping")]
#[test]
fn cutting_the_lab_off_cuts_ipv6_too() {
    let lab = lab(Stack::Dual);
    let outside = IpAddr::V6(lab.outside_addr6().unwrap());
    assert!(pings(&lab, outside).0);
    let fault = lab.cut_off(netns_harness::Ways::Both).unwrap();
    let (answered, out) = pings(&lab, outside);
    assert!(!answered, "IPv6 crossed a cut-off lab: {out}");
    assert!(pings(&lab, IpAddr::V6(lab.gateway6().unwrap())).0);
    assert!(fault.counts().unwrap().1 > 0);
    drop(fault);
    assert!(pings(&lab, outside).0);
}

/// Fails on purpose in a dual-stack network: its report must show both
/// families.
#[netns_test(ip = "dual")]
#[ignore = "fails on purpose; run by a_dual_stack_failure_report_shows_both_families"]
fn a_failing_dual_stack_test(net: Net) {
    panic!("deliberately, at {:?}", net.addr6());
}

#[test]
fn a_dual_stack_failure_report_shows_both_families() {
    let name = "a_failing_dual_stack_test";
    let run = run_test_in_child_with(name, &["--nocapture"], TIMEOUT).expect("it ended");
    assert!(!run.status.success(), "{}", run.output);
    let container = run
        .output
        .lines()
        .find(|l| l.starts_with("container a_failing_dual_ ("))
        .unwrap_or_else(|| panic!("no container line: {}", run.output));
    assert!(
        container.contains(", fd00:200::") && container.contains("(10.200."),
        "{container}"
    );
    for line in [
        "lab 10.200.0.0/16, fd00:200::/64 (gateway 10.200.0.1, fd00:200::1, \
         NAT as 198.18.0.1; IPv6 routed):",
        "  route default via fd00:200::1 dev eth0",
        "  route fd00:200::/64 dev eth0",
    ] {
        assert!(
            run.output.contains(line),
            "{line:?} missing: {}",
            run.output
        );
    }
}

#[test]
fn an_ipv6_only_matrix_shows_routed_ipv6_open_from_outside_unless_nat66() {
    for nat66 in [false, true] {
        let lab = Lab::builder()
            .stack(Stack::V6)
            .nat66(nat66)
            .build()
            .unwrap();
        let [a, b] = [0, 1].map(|_| sleeper(&lab));
        let endpoints = [
            Endpoint::container(&a).unwrap(),
            Endpoint::container(&b).unwrap(),
            Endpoint::gateway(&lab).unwrap(),
            Endpoint::outside(&lab).unwrap(),
        ];
        let options = ProbeOptions::default().timeout(Duration::from_millis(500));
        let matrix = Matrix::probe(&endpoints, &[Check::Icmp], options).unwrap();
        println!("nat66 {nat66}:\n{matrix}");
        // Routed IPv6: the outside host has a route back to every
        // container. NAT66: it reaches the lab's uplink only.
        matrix.assert_expected(|from, to, _| !(nat66 && from == "outside") || to == "outside");
        assert_eq!(
            matrix.reaches("outside", a.name(), Check::Icmp),
            Some(!nat66)
        );
    }
}
