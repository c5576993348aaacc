//! A NAT's state over time, measured with real datagrams from the
//! internet's public hosts: a flush ("router reboot") forgets mappings and
//! keeps forwards, a port forward reaches its container from outside and
//! hairpinned, an idle mapping dies after the UDP timeout and not
//! before, hairpinning can be turned off; the `conntrack` and `nft` tools
//! see the same; the hole-punching example's matrix is RFC 4787's; and a
//! topology leaves the host as it found it.

use std::fs::File;
use std::io::{BufRead, BufReader, Lines};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use netns_harness::prelude::*;
use netns_harness::{Error, Filtering, Mapping, Nat, Network, Preset, Protocol, Topology, stun};
use netns_harness_suite::{
    HostState, in_netns, nat_behaviour_behind, needs, tool, udp_echo, with_netns,
};

#[path = "../examples/holepunch.rs"]
#[expect(
    dead_code,
    reason = "the example's `main`, which prints what the test checks"
)]
mod holepunch;

/// In a container: maps a UDP socket through the router with the STUN
/// server given as argument, prints the mapping, then prints every
/// datagram that arrives, one line each.
fn mapped_listener() {
    let server: SocketAddr = std::env::args().nth(1).unwrap().parse().unwrap();
    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
    let mapped = stun::binding(&socket, server, Duration::from_secs(3)).unwrap();
    println!("{mapped}");
    let mut buf = [0u8; 512];
    loop {
        let (n, _) = socket.recv_from(&mut buf).unwrap();
        println!("{}", String::from_utf8_lossy(&buf[..n]));
    }
}

/// A container listening behind `lab`'s router, and its mapping.
struct Listener {
    _container: Container,
    lines: std::sync::mpsc::Receiver<String>,
    mapped: SocketAddr,
}

impl Listener {
    fn start(lab: &Lab, server: SocketAddr) -> Listener {
        let mut container = lab
            .spawn(
                &Spec::function(mapped_listener)
                    .arg(server.to_string())
                    .stdout(Stdio::Piped),
            )
            .unwrap();
        let mut lines: Lines<BufReader<File>> =
            BufReader::new(container.take_stdout().unwrap()).lines();
        let mapped = lines.next().unwrap().unwrap().parse().unwrap();
        let (send, receive) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Listener {
            _container: container,
            lines: receive,
            mapped,
        }
    }

    /// Whether `text`, sent to the mapping from a fresh socket of the
    /// public host whose namespace is `from` every 100 ms, arrives within
    /// `patience`.
    fn hears(&self, from: std::os::fd::BorrowedFd<'_>, text: &str, patience: Duration) -> bool {
        let mapped = self.mapped;
        let socket = with_netns(from, || UdpSocket::bind("0.0.0.0:0").unwrap());
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            socket.send_to(text.as_bytes(), mapped).unwrap();
            while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                if line == text {
                    return true;
                }
            }
        }
        false
    }
}

/// How long a datagram that should arrive may take (a loaded machine), and
/// how long one that should not is waited for.
const PATIENT: Duration = Duration::from_secs(5);
const BRIEF: Duration = Duration::from_millis(700);

fn full_cone(name: &str) -> (Topology, Lab) {
    let topology = Topology::builder()
        .network(Network::new(name).preset(Preset::FullCone))
        .build()
        .unwrap();
    let lab = topology.network(name).unwrap();
    (topology, lab)
}

/// After a flush, what got in through a mapping no longer does, the
/// router's conntrack table and mapping set are empty, and a forward
/// still carries datagrams to its container.
#[needs("conntrack", "nft")]
#[test]
fn a_flush_forgets_mappings_and_keeps_forwards() {
    let (topology, lab) = full_cone("home");
    let hosts = topology.hosts();
    let listener = Listener::start(&lab, hosts[0].stun());
    assert!(
        listener.hears(hosts[1].netns(), "before", PATIENT),
        "full cone let nothing in"
    );
    let listing = in_netns(lab.lab_netns(), "conntrack", &["-L", "-p", "udp"]);
    assert!(
        listing.contains(&format!("dport={}", listener.mapped.port())),
        "{listing}"
    );
    for wrong in [
        SocketAddr::new(hosts[0].addr().into(), 9),
        SocketAddr::new(lab.gateway(), 9),
    ] {
        let err = lab.forward(Protocol::Udp, 4444, wrong).unwrap_err();
        assert!(
            err.to_string()
                .contains("a host address of the lab's subnet"),
            "{err}"
        );
    }
    let mut echo = lab
        .spawn(&Spec::function(udp_echo).arg("5000").stdout(Stdio::Piped))
        .unwrap();
    netns_harness_suite::read_line(echo.take_stdout().unwrap());
    lab.forward(Protocol::Udp, 4444, SocketAddr::new(echo.addr(), 5000))
        .unwrap();
    let front = SocketAddr::new(lab.public_addr(), 4444);

    lab.flush_nat().unwrap();
    let listing = in_netns(lab.lab_netns(), "conntrack", &["-L", "-p", "udp"]);
    assert!(
        !listing.contains("dport="),
        "conntrack still lists:\n{listing}"
    );
    let mappings = in_netns(
        lab.lab_netns(),
        "nft",
        &["list", "map", "ip", "netns_harness_nat", "mappings"],
    );
    assert!(
        mappings.contains("map mappings") && !mappings.contains("elements"),
        "mappings survived:\n{mappings}"
    );
    assert!(
        !listener.hears(hosts[1].netns(), "after", BRIEF),
        "a flushed mapping let a datagram in"
    );
    let through_forward = with_netns(hosts[1].netns(), || echoed(front, "forwarded", PATIENT));
    assert!(through_forward, "the forward did not survive the flush");
}

/// An idle mapping lives for the UDP timeout, as set, then dies: the
/// `conntrack` tool shows the timeout, and a datagram from outside gets
/// in well within it and not after it.
#[needs("conntrack")]
#[test]
fn an_idle_mapping_lives_for_the_udp_timeout() {
    let timeout = Duration::from_secs(4);
    let nat =
        Nat::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent).udp_timeout(timeout);
    let topology = Topology::builder()
        .network(Network::new("short").nat(nat))
        .build()
        .unwrap();
    let lab = topology.network("short").unwrap();
    assert_eq!(lab.nat(), Some(nat));
    let hosts = topology.hosts();
    let listener = Listener::start(&lab, hosts[0].stun());
    // The mapping's last outbound datagram (the STUN request) left before
    // this; receiving does not refresh a mapping of a NAT.
    let mapped_by = Instant::now();
    let listing = in_netns(lab.lab_netns(), "conntrack", &["-L", "-p", "udp"]);
    let line = listing
        .lines()
        .find(|l| l.contains("dport=3478"))
        .expect("the STUN flow");
    let left: u64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(left <= 4, "conntrack gives the mapping {left} s: {line}");
    std::thread::sleep(Duration::from_millis(2500).saturating_sub(mapped_by.elapsed()));
    assert!(
        listener.hears(hosts[1].netns(), "alive", Duration::from_secs(1)),
        "the mapping died before its timeout"
    );
    std::thread::sleep((timeout + Duration::from_millis(1500)).saturating_sub(mapped_by.elapsed()));
    assert!(
        !listener.hears(hosts[1].netns(), "stale", BRIEF),
        "the mapping outlived its timeout"
    );
    let listing = in_netns(lab.lab_netns(), "conntrack", &["-L", "-p", "udp"]);
    assert!(!listing.contains("dport=3478"), "{listing}");
}

/// With hairpinning off, the classifier says so; the same NAT with it on
/// hairpins (tests/topology.rs).
#[test]
fn hairpinning_off_is_measured_off() {
    let nat =
        Nat::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent).hairpinning(false);
    let topology = Topology::builder()
        .network(Network::new("nohair").nat(nat))
        .build()
        .unwrap();
    let lab = topology.network("nohair").unwrap();
    let (ok, text) = nat_behaviour_behind(&lab, topology.hosts()[0].stun());
    assert!(ok, "{text}");
    assert_eq!(
        text,
        "NAT: endpoint-independent mapping, endpoint-independent filtering, no hairpinning"
    );
}

/// The example's matrix, written out from RFC 4787's behaviours: rows are
/// peer A's preset, columns peer B's, in `Preset::ALL`'s order (full cone,
/// restricted cone, port-restricted cone, symmetric, none, carrier NAT).
/// Symmetric NAT defeats a peer behind a port-restricted filter (either
/// kind, carrier NAT too) or another symmetric NAT; everything else
/// connects.
const EXPECTED: [&str; 6] = [
    "✓ ✓ ✓ ✓ ✓ ✓",
    "✓ ✓ ✓ ✓ ✓ ✓",
    "✓ ✓ ✓ · ✓ ✓",
    "✓ ✓ · · ✓ ·",
    "✓ ✓ ✓ ✓ ✓ ✓",
    "✓ ✓ ✓ · ✓ ✓",
];

/// The hole-punching example's code, run here: its matrix is the one
/// RFC 4787 predicts, as written out above, and as the example predicts.
#[test]
fn the_hole_punching_example_connects_the_pairs_rfc_4787_predicts() {
    let connected = holepunch::punch_every_pair().unwrap();
    let rows: Vec<String> = (0..Preset::ALL.len())
        .map(|i| {
            let marks: Vec<_> = (0..Preset::ALL.len())
                .map(|j| if connected[&(i, j)] { "✓" } else { "·" })
                .collect();
            marks.join(" ")
        })
        .collect();
    assert_eq!(rows, EXPECTED);
    for (i, &a) in Preset::ALL.iter().enumerate() {
        for (j, &b) in Preset::ALL.iter().enumerate() {
            assert_eq!(connected[&(i, j)], holepunch::predicted(a, b), "{a} × {b}");
        }
    }
}

/// Building, using and dropping a topology changes nothing on the host,
/// its conntrack timeouts included (a router sets its own).
#[needs("ip", "nft")]
#[test]
fn a_topology_leaves_the_host_unchanged() {
    let before = HostState::capture();
    let timeouts = || {
        let out = tool("cat")
            .args([
                "/proc/sys/net/netfilter/nf_conntrack_udp_timeout",
                "/proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let host_timeouts;
    {
        let nat = Nat::new(Mapping::AddressDependent, Filtering::AddressDependent)
            .udp_timeout(Duration::from_secs(5));
        let topology = Topology::builder()
            .network(Network::new("a").nat(nat))
            .network(Network::new("b").preset(Preset::Cgnat))
            .network(Network::new("c").preset(Preset::None))
            .build()
            .unwrap();
        let lab = topology.network("a").unwrap();
        let listener = Listener::start(&lab, topology.hosts()[0].stun());
        assert!(listener.mapped.port() >= 20000);
        host_timeouts = timeouts();
        assert_ne!(
            host_timeouts, "5\n5\n",
            "the host took a router's UDP timeout"
        );
    }
    HostState::capture().assert_unchanged(&before);
    assert_eq!(timeouts(), host_timeouts);
}

/// Sends `text` from a fresh socket in the calling thread's namespace to
/// `to` every 200 ms, until its echo comes back or `wait` has passed.
fn echoed(to: SocketAddr, text: &str, wait: Duration) -> bool {
    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        socket.send_to(text.as_bytes(), to).unwrap();
        if matches!(socket.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == text.as_bytes()) {
            return true;
        }
    }
    false
}

/// A port forward reaches the container from a public host, and, with
/// hairpinning, from a neighbour on the LAN; a second forward of the same
/// port is a typed error; the `nft` tool lists the forward.
#[needs("nft")]
#[test]
fn a_port_forward_reaches_the_container_from_the_internet_and_the_lan() {
    let topology = Topology::builder()
        .network(Network::new("home").preset(Preset::PortRestrictedCone))
        .build()
        .unwrap();
    let home = topology.network("home").unwrap();
    let mut server = home
        .spawn(&Spec::function(udp_echo).arg("5000").stdout(Stdio::Piped))
        .unwrap();
    netns_harness_suite::read_line(server.take_stdout().unwrap());
    let Some(std::net::IpAddr::V4(public)) = Some(home.public_addr()) else {
        unreachable!()
    };
    let to = SocketAddr::new(server.addr(), 5000);
    home.forward(Protocol::Udp, 40000, to).unwrap();
    let err = home.forward(Protocol::Udp, 40000, to).unwrap_err();
    assert!(
        matches!(err, Error::PortForwarded { port: 40000, .. }),
        "{err:?}"
    );
    let listing = in_netns(home.lab_netns(), "nft", &["list", "ruleset"]);
    assert!(
        listing.contains(&format!("udp . 40000 : {} . 5000", server.addr())),
        "{listing}"
    );
    let front = SocketAddr::from((public, 40000));
    let from_host = netns_harness_suite::with_netns(topology.hosts()[0].netns(), || {
        echoed(front, "from host1", Duration::from_secs(2))
    });
    assert!(
        from_host,
        "the forward did not reach the container from host1"
    );
    let neighbour = home
        .spawn(&Spec::function(echo_once).arg(front.to_string()))
        .unwrap()
        .output(Duration::from_secs(5))
        .unwrap();
    assert!(
        neighbour.status.success(),
        "hairpinned forward: {:?}",
        neighbour
    );
}

/// In a container: succeeds when the echo server at the argument answers.
fn echo_once() {
    let to: SocketAddr = std::env::args().nth(1).unwrap().parse().unwrap();
    assert!(echoed(to, "hairpin", Duration::from_secs(2)));
}
