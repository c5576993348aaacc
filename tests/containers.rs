//! Containers on the shared lab: reachability across the bridge, NAT towards
//! the outside, isolation, scale. Each claim is checked with a system tool
//! (`ping`, `ip`, `ps`, `nft`) as well as through the harness.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::Duration;

use netns_harness::{Container, Lab, Spec, Stdio};
use netns_harness_suite::{bridge_ports, in_netns, links, needs, read_line, tool};

const TIMEOUT: Duration = Duration::from_secs(20);
const PORT: u16 = 7000;

/// Runs `spec` in a new container of the shared lab and returns its standard
/// output, asserting that it succeeded.
fn run(lab: &Lab, spec: Spec) -> String {
    let mut container = lab
        .spawn(&spec.stdout(Stdio::Piped).stderr(Stdio::Piped))
        .expect("spawn");
    let out = container.output(TIMEOUT).expect("output");
    assert!(
        out.status.success(),
        "container {} failed with {}: {}{}",
        container.name(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sleeper(lab: &Lab, name: &str) -> Container {
    lab.spawn(&Spec::command("sleep").arg("600").name(name))
        .expect("spawn a sleeper")
}

/// An echo server: prints "listening", then for one connection prints the
/// peer's address and echoes one line back prefixed with "echo: ".
fn echo_server() {
    let listener = TcpListener::bind(("0.0.0.0", PORT)).expect("bind");
    println!("listening");
    let (stream, peer) = listener.accept().expect("accept");
    println!("{}", peer.ip());
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).expect("read");
    (&stream)
        .write_all(format!("echo: {line}").as_bytes())
        .expect("write");
}

/// Connects to the echo server at the address in its first argument, sends
/// a line and prints the answer.
fn echo_client() {
    let server: Ipv4Addr = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .expect("server address argument");
    let stream = TcpStream::connect((server, PORT)).expect("connect");
    (&stream).write_all(b"hello\n").expect("write");
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).expect("read");
    print!("{line}");
}

fn start_echo_server(lab: &Lab, outside: bool) -> (Container, BufReader<std::fs::File>) {
    let spec = Spec::function(echo_server)
        .name("echo")
        .stdout(Stdio::Piped);
    let mut server = if outside {
        lab.spawn_outside(&spec)
    } else {
        lab.spawn(&spec)
    }
    .expect("spawn the echo server");
    let mut out = BufReader::new(server.take_stdout().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "listening");
    (server, out)
}

#[needs("ping")]
#[test]
fn two_containers_ping_each_other_with_system_ping() {
    let lab = Lab::shared().unwrap();
    let a = sleeper(&lab, "a");
    let b = sleeper(&lab, "b");
    for (from, to) in [(&a, &b), (&b, &a)] {
        let out = run(
            &lab,
            Spec::command("ping")
                .args(["-c", "2", "-W", "2", &to.addr().to_string()])
                .name(format!("from-{}", from.name())),
        );
        assert!(out.contains("2 received"), "{out}");
    }
}

#[test]
fn rust_code_in_containers_talks_tcp_across_the_bridge() {
    let lab = Lab::shared().unwrap();
    let (mut server, mut server_out) = start_echo_server(&lab, false);
    let mut client = lab
        .spawn(
            &Spec::function(echo_client)
                .arg(server.addr().to_string())
                .stdout(Stdio::Piped),
        )
        .unwrap();
    let answer = read_line(client.take_stdout().unwrap());
    assert_eq!(answer, "echo: hello");
    assert!(client.wait_timeout(TIMEOUT).unwrap().unwrap().success());
    let mut peer = String::new();
    server_out.read_line(&mut peer).unwrap();
    assert_eq!(
        peer.trim(),
        client.addr().to_string(),
        "the server saw the client's own address"
    );
    assert!(server.wait_timeout(TIMEOUT).unwrap().unwrap().success());
}

#[needs("nsenter", "nft")]
#[test]
fn the_outside_sees_the_nat_address_not_the_container() {
    let lab = Lab::shared().unwrap();
    let (mut server, mut server_out) = start_echo_server(&lab, true);
    assert_eq!(server.addr(), lab.outside_addr());
    let out = run(
        &lab,
        Spec::function(echo_client).arg(lab.outside_addr().to_string()),
    );
    assert_eq!(out.trim(), "echo: hello");
    let mut peer = String::new();
    server_out.read_line(&mut peer).unwrap();
    let peer: Ipv4Addr = peer.trim().parse().unwrap();
    assert_eq!(peer, lab.public_addr());
    assert!(
        !lab.subnet().contains(peer),
        "{peer} is a container address"
    );
    assert!(server.wait_timeout(TIMEOUT).unwrap().unwrap().success());

    // nft, run in the lab namespace, shows the masquerade rule and that it
    // matched traffic.
    let ruleset = in_netns(lab.lab_netns(), "nft", &["list", "ruleset"]);
    let rule = ruleset
        .lines()
        .find(|l| l.contains("masquerade"))
        .unwrap_or_else(|| panic!("no masquerade rule in:\n{ruleset}"));
    assert!(
        rule.contains(&format!("ip saddr {}", lab.subnet())),
        "{rule}"
    );
    assert!(rule.contains("oifname \"uplink\""), "{rule}");
    assert!(
        !rule.contains("packets 0 "),
        "the rule never matched: {rule}"
    );
}

#[needs("nsenter", "ip", "ping")]
#[test]
fn without_nat_the_outside_has_no_route_back() {
    // The outside host knows only the uplink subnet: it cannot reach a
    // container address, so connectivity really depends on the NAT.
    let lab = Lab::shared().unwrap();
    let target = sleeper(&lab, "target");
    let mut probe = lab
        .spawn_outside(
            &Spec::command("ping")
                .args(["-c", "1", "-W", "1", &target.addr().to_string()])
                .stdout(Stdio::Piped)
                .stderr(Stdio::Piped),
        )
        .unwrap();
    let out = probe.output(TIMEOUT).unwrap();
    assert!(
        !out.status.success(),
        "the outside reached a container directly"
    );
    let routes = in_netns(lab.outside_netns(), "ip", &["route"]);
    assert!(!routes.contains("default"), "{routes}");
}

#[needs("ip", "ps")]
#[test]
fn a_container_sees_only_its_own_links_addresses_routes_and_processes() {
    let lab = Lab::shared().unwrap();
    let other = sleeper(&lab, "other");
    let out = run(
        &lab,
        Spec::command("sh")
            .args([
                "-c",
                "ip -o link; echo ---; ip -o -4 addr; echo ---; ip route; echo ---; \
                 ps -e -o pid=,comm=; echo ---; uname -n",
            ])
            .name("viewer"),
    );
    let parts: Vec<&str> = out.split("---\n").collect();
    let [links, addrs, routes, ps, hostname] = parts[..] else {
        panic!("unexpected output: {out}");
    };
    let names: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap())
        .collect();
    assert_eq!(names, ["lo", "eth0"], "{links}");
    let own: Vec<&str> = addrs.lines().filter(|l| l.contains(" eth0 ")).collect();
    assert_eq!(own.len(), 1, "{addrs}");
    assert!(
        !addrs.contains(&format!("{} ", other.addr())),
        "sees another container's address: {addrs}"
    );
    assert!(
        routes.contains(&format!("default via {} dev eth0", lab.gateway())),
        "{routes}"
    );
    assert!(
        routes.contains(&format!("{} dev eth0", lab.subnet())),
        "{routes}"
    );
    assert_eq!(routes.lines().count(), 2, "{routes}");
    // PID 1 is the shell; ps and its siblings are its children; nothing of
    // the host or of the other container is visible.
    let pids: Vec<(u32, &str)> = ps
        .lines()
        .map(|l| {
            let (pid, comm) = l.trim().split_once(' ').unwrap();
            (pid.parse().unwrap(), comm.trim())
        })
        .collect();
    assert_eq!(pids[0], (1, "sh"), "{ps}");
    assert!(
        pids.iter().all(|(_, comm)| *comm == "sh" || *comm == "ps"),
        "{ps}"
    );
    assert!(pids.len() <= 3, "{ps}");
    assert_eq!(hostname.trim(), "viewer");
}

#[needs("nsenter", "ip", "ping")]
#[test]
fn each_container_has_its_own_address_and_port_on_the_bridge() {
    // No namespace made ahead: the bridge's ports are its containers'.
    let lab = Lab::builder()
        .subnet("10.78.0.0/24")
        .ahead(0)
        .build()
        .unwrap();
    let a = sleeper(&lab, "a");
    let b = sleeper(&lab, "b");
    assert_ne!(a.addr(), b.addr());
    for c in [&a, &b] {
        assert!(lab.subnet().contains(c.addr4().unwrap()));
        assert_ne!(c.addr(), lab.gateway());
    }
    // ip in the lab namespace: the bridge has the gateway address, and
    // ports appear and disappear with containers.
    let addrs = in_netns(
        lab.lab_netns(),
        "ip",
        &["-o", "-4", "addr", "show", "dev", lab.bridge()],
    );
    assert!(
        addrs.contains(&format!("{}/{}", lab.gateway(), lab.subnet().prefix())),
        "{addrs}"
    );
    assert_eq!(bridge_ports(&lab), 2);
    let c = sleeper(&lab, "c");
    assert_eq!(bridge_ports(&lab), 3);
    // Its MAC is derived from its address, as `ip neigh` in a peer shows.
    let neighbours = run(
        &lab,
        Spec::command("sh").args([
            "-c",
            "ping -c1 -W2 \"$0\" >/dev/null && ip neigh",
            &c.addr().to_string(),
        ]),
    );
    let mac = format!(
        "02:00:{}",
        c.addr4()
            .unwrap()
            .octets()
            .map(|o| format!("{o:02x}"))
            .join(":")
    );
    assert!(
        neighbours.contains(&format!("{} dev eth0 lladdr {mac}", c.addr())),
        "{neighbours}"
    );
    drop(c);
    assert_eq!(
        bridge_ports(&lab),
        2,
        "the port of a dropped container remains"
    );
    assert!(links(lab.lab_netns()).contains(&netns_harness::UPLINK.to_owned()));
}

#[needs("nsenter", "ip", "ping")]
#[test]
fn thirty_two_containers_on_one_bridge_all_reachable_from_one() {
    // No namespace made ahead: the bridge's ports are its containers'.
    let lab = Lab::builder()
        .subnet("10.77.0.0/24")
        .ahead(0)
        .build()
        .unwrap();
    let targets: Vec<Container> = (0..31).map(|i| sleeper(&lab, &format!("t{i}"))).collect();
    let ports = in_netns(
        lab.lab_netns(),
        "ip",
        &["-o", "link", "show", "master", lab.bridge()],
    );
    assert_eq!(ports.lines().count(), 31, "{ports}");
    let script = "for a in \"$@\"; do ping -c 1 -W 2 \"$a\" >/dev/null || { echo \"unreachable $a\"; exit 1; }; done; echo all";
    let mut args = vec!["-c".to_owned(), script.to_owned(), "sh".to_owned()];
    args.extend(targets.iter().map(|t| t.addr().to_string()));
    let out = run(&lab, Spec::command("sh").args(args).name("prober"));
    assert_eq!(out.trim(), "all");
}

#[needs("nsenter", "ip", "ping")]
#[test]
fn ipv6_link_local_addresses_are_usable_at_once() {
    // No duplicate address detection: addresses are not "tentative" and a
    // peer answers on its link-local address right after it started.
    let lab = Lab::shared().unwrap();
    let target = sleeper(&lab, "v6target");
    let netns = format!("--net=/proc/{}/ns/net", target.pid());
    let shown = tool("nsenter")
        .args([
            netns.as_str(),
            "ip",
            "-6",
            "-o",
            "addr",
            "show",
            "dev",
            "eth0",
            "scope",
            "link",
        ])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(!shown.contains("tentative"), "{shown}");
    let link_local = shown
        .split_whitespace()
        .find_map(|w| w.strip_suffix("/64"))
        .unwrap_or_else(|| panic!("no link-local address: {shown}"))
        .to_owned();
    // Two echoes half a second apart (neighbour discovery on a loaded
    // machine may lose the first); duplicate address detection would hold
    // the addresses back for over a second.
    let target = format!("{link_local}%eth0");
    let out = run(
        &lab,
        Spec::command("ping").args(["-6", "-c2", "-i0.5", "-W1", &target]),
    );
    assert!(!out.contains(" 0 received"), "{out}");
}

#[needs("nsenter", "ip", "ping")]
#[test]
fn the_gateway_keeps_its_mac_as_containers_come_and_go() {
    // A bridge without an address of its own would take its lowest port's,
    // and containers' cached gateway entries would go stale.
    let lab = Lab::builder().subnet("10.79.0.0/24").build().unwrap();
    let mac = || {
        let shown = in_netns(lab.lab_netns(), "ip", &["-o", "link", "show", lab.bridge()]);
        shown
            .split("link/ether ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    let gateway = format!(
        "02:00:{}",
        lab.gateway4()
            .unwrap()
            .octets()
            .map(|o| format!("{o:02x}"))
            .join(":")
    );
    assert_eq!(mac(), gateway);
    let first = sleeper(&lab, "first");
    let others: Vec<Container> = (0..8).map(|i| sleeper(&lab, &format!("o{i}"))).collect();
    drop(others);
    assert_eq!(mac(), gateway);
    let neighbours = run(
        &lab,
        Spec::command("sh").args([
            "-c",
            "ping -c1 -W2 \"$0\" >/dev/null && ip neigh",
            &lab.gateway().to_string(),
        ]),
    );
    assert!(
        neighbours.contains(&format!("{} dev eth0 lladdr {gateway}", lab.gateway())),
        "{neighbours}"
    );
    drop(first);
}
