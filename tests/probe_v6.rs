//! The prober, the capture and conntrack over the lab's own IPv6, each
//! verdict checked against a system tool (`ping -6`, `nc -6`, `ss`, `nft`,
//! `tcpdump`, `conntrack`) run in the same place.
//!
//! The tests that run in a container take a dual-stack network
//! (`#[netns_test(ip = "dual")]`, the process's shared dual-stack lab) and
//! change nothing but their own and their peers' namespaces; the NAT66
//! test builds a lab of its own (`LabBuilder::nat66`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use netns_harness::Stack;
use netns_harness::capture::{Capture, Observations, Protocol, Translation};
use netns_harness::conntrack::Table;
use netns_harness::prelude::*;
use netns_harness::probe::{
    Flow, IcmpOutcome, Mark, ProbeOptions, Prober, Reason, TcpMode, TcpOutcome, UdpOutcome,
};
use netns_harness_suite::{
    conntrack_tool_agrees, eventually, in_netns, needs, read_line, require, run_in_netns, tool,
};

fn options() -> ProbeOptions {
    ProbeOptions::default().timeout(Duration::from_secs(1))
}

/// A container's IPv6 address: every host of a dual-stack lab has one.
fn v6(container: &Container) -> Ipv6Addr {
    container
        .addr6()
        .expect("a dual-stack container has an IPv6 address")
}

/// The test's own network namespace.
fn own_netns() -> std::fs::File {
    std::fs::File::open("/proc/thread-self/ns/net").unwrap()
}

/// Runs a system tool in the test's own namespace.
fn run_here(program: &str, args: &[&str]) -> (bool, String) {
    run_in_netns(own_netns().as_fd(), program, args)
}

/// `ping -6 -c 1 -W wait addr` in `netns`.
fn ping6(netns: BorrowedFd<'_>, addr: Ipv6Addr, wait: u64) -> (bool, String) {
    let (addr, wait) = (addr.to_string(), wait.to_string());
    run_in_netns(netns, "ping", &["-6", "-n", "-c", "1", "-W", &wait, &addr])
}

/// What `nc -v -z` (`family` `-4` or `-6`) says of `addr`'s `port`.
fn nc(family: &str, addr: IpAddr, port: u16, wait: u64) -> String {
    let (addr, port, wait) = (addr.to_string(), port.to_string(), wait.to_string());
    run_here("nc", &[family, "-v", "-z", "-w", &wait, &addr, &port]).1
}

/// Applies nft commands, each a line of words, in `netns`.
fn nft(netns: BorrowedFd<'_>, commands: &[&str]) {
    for command in commands {
        let args: Vec<&str> = command.split(' ').collect();
        in_netns(netns, "nft", &args);
    }
}

fn sleeper(net: &Net) -> Container {
    net.spawn(&Spec::command("sleep").arg("600")).unwrap()
}

/// In a peer: listens on TCP ports given as `v6:PORT` (bound to `[::]`)
/// or `v4:PORT` (bound to `0.0.0.0` only); prints "listening".
fn listener() {
    let listeners: Vec<TcpListener> = std::env::args()
        .skip(1)
        .map(|arg| {
            let (family, port) = arg.split_once(':').unwrap();
            let any: IpAddr = match family {
                "v6" => Ipv6Addr::UNSPECIFIED.into(),
                _ => Ipv4Addr::UNSPECIFIED.into(),
            };
            TcpListener::bind((any, port.parse().unwrap())).unwrap()
        })
        .collect();
    println!("listening");
    std::thread::scope(|s| {
        for listener in &listeners {
            s.spawn(move || for _ in listener.incoming() {});
        }
    });
}

fn listener_on(ports: &[&str]) -> Spec {
    Spec::function(listener)
        .args(ports.iter().copied())
        .stdout(Stdio::Piped)
}

/// The container `spawned`, once it printed "listening".
fn listening(spawned: netns_harness::Result<Container>) -> Container {
    let mut server = spawned.unwrap();
    assert_eq!(read_line(server.take_stdout().unwrap()), "listening");
    server
}

#[needs("nsenter", "ping")]
#[netns_test(ip = "dual", timeout = "40s")]
fn icmpv6_echo_verdicts_agree_with_ping(net: Net) {
    let (me, here) = (net.addr6().unwrap(), own_netns());
    let peer = sleeper(&net);
    let reachable = [
        (v6(&peer), 2),
        (net.gateway6().unwrap(), 1),
        (net.outside_addr6().unwrap(), 1),
    ];
    for (dst, count) in reachable {
        let sent = Prober::here()
            .icmp_flow(dst, options().count(count))
            .unwrap();
        let IcmpOutcome::Reachable {
            received, sent: n, ..
        } = sent.outcome
        else {
            panic!("{dst}: {}", sent.outcome);
        };
        assert_eq!((received, n), (count, count), "{dst}");
        assert_eq!((sent.flow.src, sent.flow.protocol()), (IpAddr::V6(me), 58));
        let (ok, text) = ping6(here.as_fd(), dst, 1);
        assert!(ok, "ping -6 disagrees for {dst}: {text}");
    }

    // Nobody has this address of the /64 (a host's last groups are its
    // IPv4 octets, never above 0xff): neighbour discovery fails, and the
    // kernel says "address unreachable", to the prober and to ping.
    let s = net.lab().subnet6().unwrap().network().segments();
    let nobody = Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0xdead, 0xbeef);
    let slow = options().timeout(Duration::from_secs(6));
    let unreachable = |reason| IcmpOutcome::Unreachable { reason };
    assert_eq!(
        Prober::here().icmp(nobody, slow).unwrap(),
        unreachable(Reason::HostUnreachable)
    );
    let (ok, text) = ping6(here.as_fd(), nobody, 6);
    assert!(
        !ok && text.contains("Address unreachable"),
        "ping -6 disagrees for {nobody}: {text}"
    );

    // Beyond the bridge's and the uplink's /64s the gateway has no route:
    // its own prober and ping know at once, and to an echo from here it
    // answers "no route to destination".
    let far: Ipv6Addr = "2001:db8:ffff::1".parse().unwrap();
    let gateway = net.lab().lab_netns();
    assert_eq!(
        Prober::in_netns(gateway).unwrap().icmp(far, slow).unwrap(),
        unreachable(Reason::NoRoute)
    );
    let (ok, text) = ping6(gateway, far, 1);
    assert!(
        !ok && text.contains("Network is unreachable"),
        "ping -6 on the gateway disagrees: {text}"
    );
    assert_eq!(
        Prober::here().tcp(far, 80, slow).unwrap(),
        TcpOutcome::Filtered {
            reason: Reason::NetworkUnreachable
        }
    );
    let (ok, text) = ping6(here.as_fd(), far, 2);
    assert!(
        !ok && text.contains("No route"),
        "ping -6 disagrees: {text}"
    );

    // An IPv4-mapped address is probed as the IPv4 address it is.
    let gateway4 = net.gateway4().unwrap();
    let sent = Prober::here()
        .icmp_flow(gateway4.to_ipv6_mapped(), options())
        .unwrap();
    assert!(sent.outcome.is_reachable(), "{}", sent.outcome);
    assert_eq!(sent.flow.dst, IpAddr::V4(gateway4));
}

#[needs("nsenter", "nft", "nc", "ss")]
#[netns_test(ip = "dual", timeout = "40s")]
fn tcp_over_ipv6_open_closed_dropped_and_rejected(net: Net) {
    let peer = listening(net.spawn(&listener_on(&["v6:8080", "v6:9000", "v6:9001", "v6:9002"])));
    let addr = v6(&peer);
    nft(
        peer.netns(),
        &[
            "add table ip6 f",
            "add chain ip6 f in { type filter hook input priority 0 ; }",
            "add rule ip6 f in tcp dport 9000 drop",
            "add rule ip6 f in tcp dport 9001 reject",
            "add rule ip6 f in tcp dport 9002 reject with icmpv6 type admin-prohibited",
        ],
    );
    type Verdict<'v> = &'v dyn Fn(&TcpOutcome) -> bool;
    let open = |o: &TcpOutcome| o.is_open();
    let closed = |o: &TcpOutcome| matches!(o, TcpOutcome::Closed { .. });
    let filtered = |reason| move |o: &TcpOutcome| *o == TcpOutcome::Filtered { reason };
    // Port, the verdict of both the SYN and the connect() probe (unlike
    // IPv4's, the kernel reports ICMPv6 "administratively prohibited" to
    // connect() as such: EACCES), what nc says.
    let cases: [(u16, Verdict<'_>, &str); 5] = [
        (8080, &open, "succeeded"),
        (8081, &closed, "Connection refused"),
        (9000, &filtered(Reason::Timeout), "timed out"),
        // nft's plain `reject` in an ip6 table: ICMPv6 port unreachable.
        (9001, &closed, "Connection refused"),
        (9002, &filtered(Reason::Prohibited), "Permission denied"),
    ];
    for (port, verdict, nc_says) in cases {
        let syn = Prober::here().tcp(addr, port, options()).unwrap();
        assert!(verdict(&syn), "SYN probe of [{addr}]:{port}: {syn}");
        // The kernel reports an ICMPv6 error to connect() once the SYN
        // was retransmitted, after 1 s (nc -6 takes that second too).
        let slow = options().timeout(Duration::from_secs(3));
        let connect = Prober::here()
            .tcp(addr, port, slow.tcp_mode(TcpMode::Connect))
            .unwrap();
        assert!(
            verdict(&connect),
            "connect() probe of [{addr}]:{port}: {connect}"
        );
        let text = nc("-6", addr.into(), port, 3);
        assert!(
            text.contains(nc_says),
            "nc -6 disagrees for port {port}: {text}"
        );
    }
    // The SYN probes' half-open connections were reset: none is left.
    let quiet = eventually(Duration::from_secs(5), || {
        in_netns(peer.netns(), "ss", &["-Htan", "state", "syn-recv"])
            .trim()
            .is_empty()
    });
    assert!(quiet, "half-open connections remain");
}

#[needs("nsenter", "nc")]
#[netns_test(ip = "dual", timeout = "30s")]
fn a_server_bound_to_the_ipv4_wildcard_only_is_closed_over_ipv6(net: Net) {
    let peer = listening(net.spawn(&listener_on(&["v4:8081"])));
    let (over_v4, over_v6) = (IpAddr::V4(peer.addr4().unwrap()), IpAddr::V6(v6(&peer)));
    for mode in [TcpMode::Syn, TcpMode::Connect] {
        let probe = |dst| Prober::here().tcp(dst, 8081, options().tcp_mode(mode));
        let v4 = probe(over_v4).unwrap();
        assert!(v4.is_open(), "{mode:?} over IPv4: {v4}");
        let v6 = probe(over_v6).unwrap();
        assert!(
            matches!(v6, TcpOutcome::Closed { .. }),
            "{mode:?} over IPv6: {v6}"
        );
    }
    let text = nc("-4", over_v4, 8081, 1);
    assert!(text.contains("succeeded"), "nc -4: {text}");
    let text = nc("-6", over_v6, 8081, 1);
    assert!(text.contains("Connection refused"), "nc -6: {text}");
}

/// In a peer: a UDP echo server on `[::]:5300` and a silent socket on
/// `[::]:5301`; prints "listening".
fn udp_echo() {
    let socket = UdpSocket::bind(("::", 5300)).unwrap();
    let _silent = UdpSocket::bind(("::", 5301)).unwrap();
    println!("listening");
    let mut buf = [0u8; 512];
    loop {
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        socket.send_to(&buf[..n], from).unwrap();
    }
}

#[needs("nsenter", "nft")]
#[netns_test(ip = "dual", timeout = "30s")]
fn udp_over_ipv6_open_closed_and_silent(net: Net) {
    let peer = listening(net.spawn(&Spec::function(udp_echo).stdout(Stdio::Piped)));
    let addr = v6(&peer);
    // nft counts, here, the ICMPv6 port-unreachable errors that come back.
    let own = own_netns();
    nft(
        own.as_fd(),
        &[
            "add table ip6 answers",
            "add chain ip6 answers in { type filter hook input priority 0 ; }",
            "add rule ip6 answers in icmpv6 type destination-unreachable icmpv6 code port-unreachable counter",
        ],
    );
    let errors = || {
        let text = in_netns(
            own.as_fd(),
            "nft",
            &["list", "chain", "ip6", "answers", "in"],
        );
        let packets = text.split("packets ").nth(1).unwrap().split(' ').next();
        packets.unwrap().parse::<u64>().unwrap()
    };
    let probe = |port| {
        Prober::here()
            .udp_flow(addr, port, b"hello", options())
            .unwrap()
    };
    let echo = probe(5300);
    assert!(
        matches!(echo.outcome, UdpOutcome::Open { .. }),
        "{}",
        echo.outcome
    );
    assert_eq!(echo.flow.dst, IpAddr::V6(addr));
    assert_eq!(probe(5301).outcome, UdpOutcome::OpenOrFiltered);
    assert_eq!(errors(), 0, "an error came from an open port");
    assert_eq!(probe(5302).outcome, UdpOutcome::Closed);
    assert_eq!(errors(), 1, "nft saw no ICMPv6 port unreachable");
}

/// How `seen` saw `flow`, found by its token or ISN; panics if it did not.
fn found(seen: &Observations, flow: &Flow) -> Translation {
    seen.find(flow)
        .unwrap_or_else(|| panic!("{flow} was not seen: {:?}", seen.packets()))
}

#[needs("unshare", "tcpdump")]
#[netns_test(ip = "dual", timeout = "30s")]
fn a_capture_finds_each_of_several_v6_flows_and_tcpdump_reads_it(net: Net) {
    let me = IpAddr::V6(net.addr6().unwrap());
    let server = listening(net.spawn(&listener_on(&["v6:8080"])));
    let neighbour = sleeper(&net);
    let (addr, other) = (v6(&server), IpAddr::V6(v6(&neighbour)));
    let capture = Capture::start(server.netns(), "eth0").unwrap();
    let outside = net.lab().capture_outside().unwrap();
    // Four flows at once: to the server an echo and a SYN from here and
    // three echoes from a neighbour, all with the same identifiers'
    // space; an echo from here to the outside host, through the gateway.
    let neighbour_prober = Prober::in_netns(neighbour.netns()).unwrap();
    let icmp = |prober: &Prober, dst, count| prober.icmp_flow(dst, options().count(count));
    let (echo, syn, theirs, routed) = std::thread::scope(|s| {
        let theirs = s.spawn(|| icmp(&neighbour_prober, addr, 3).unwrap());
        let echo = s.spawn(|| icmp(&Prober::here(), addr, 1).unwrap());
        let routed = s.spawn(|| icmp(&Prober::here(), net.outside_addr6().unwrap(), 1).unwrap());
        let syn = Prober::here().tcp_flow(addr, 8080, options()).unwrap();
        let join = |t: std::thread::ScopedJoinHandle<'_, _>| t.join().unwrap();
        (join(echo), syn, join(theirs), join(routed))
    });
    for icmp in [&echo, &theirs, &routed] {
        assert!(icmp.outcome.is_reachable(), "{}", icmp.outcome);
    }
    assert!(syn.outcome.is_open(), "{}", syn.outcome);
    let (seen, beyond) = (capture.stop(), outside.stop());

    // Each flow found by its token or ISN, from its own address: IPv6 is
    // routed, not translated, on the bridge as beyond the gateway. The
    // SYN, then the prober's reset and the kernel's (the last may still be
    // on its way when the capture stops).
    let sent = |t: Translation| (t.src, t.rewritten, t.packets, t.replies);
    assert_eq!(sent(found(&seen, &echo.flow)), (me, false, 1, 1));
    assert_eq!(sent(found(&seen, &theirs.flow)), (other, false, 3, 3));
    let (src, rewritten, packets, replies) = sent(found(&seen, &syn.flow));
    assert_eq!((src, rewritten, replies), (me, false, 1));
    assert!(
        (2..=3).contains(&packets),
        "{packets} packets of the SYN's flow"
    );
    assert_eq!(sent(found(&beyond, &routed.flow)), (me, false, 1, 1));
    assert_eq!(seen.find(&routed.flow), None, "seen on the server's link");
    let echoes = seen.packets().iter();
    let echoes =
        echoes.filter(|p| p.protocol == Protocol::Icmpv6(128) && p.dst == IpAddr::V6(addr));
    assert_eq!(echoes.count(), 4, "{:?}", seen.packets());

    // tcpdump reads the pcap back: ICMP6 and TCP over IPv6, and finds the
    // checksums the prober computed correct (-vv checks them).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v6.pcap");
    seen.write_pcap(&path).unwrap();
    let out = tool("unshare")
        .args(["--user", "--map-user=65534", "--map-group=65534"])
        .arg(require("tcpdump"))
        .args(["-n", "-S", "-vv", "-r"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // -vv prints the IPv6 header on a line of its own; join it with the
    // transport line after it.
    let text = String::from_utf8_lossy(&out.stdout).replace(")\n    ", ") ");
    let line = |wanted: &[&str]| {
        text.lines()
            .find(|l| wanted.iter().all(|w| l.contains(w)))
            .unwrap_or_else(|| panic!("tcpdump shows no line with {wanted:?}:\n{text}"))
            .to_owned()
    };
    let request = format!("{me} > {addr}: [icmp6 sum ok] ICMP6, echo request");
    let request = line(&["IP6", &request, &format!("id {},", echo.flow.src_port)]);
    line(&[
        "IP6",
        &format!("{addr} > {me}: [icmp6 sum ok] ICMP6, echo reply"),
    ]);
    let Mark::Tcp { isn } = syn.flow.mark else {
        unreachable!()
    };
    let syn_line = format!("{me}.{} > {addr}.8080: Flags [S]", syn.flow.src_port);
    let syn_line = line(&["IP6", &syn_line, &format!("seq {isn},")]);
    assert!(
        syn_line.contains("(correct)"),
        "the SYN's checksum: {syn_line}\n{request}"
    );
}

#[needs("nsenter", "nft", "conntrack")]
#[test]
fn nat66_through_the_gateway_agrees_with_the_capture_conntrack_and_its_tool() {
    let lab = Lab::builder()
        .stack(Stack::Dual)
        .nat66(true)
        .build()
        .unwrap();
    let public = lab.public_addr6().unwrap();
    let _server = listening(lab.spawn_outside(&listener_on(&["v6:8080"])));
    let client = lab.spawn(&Spec::command("sleep").arg("600")).unwrap();
    let prober = Prober::in_netns(client.netns()).unwrap();
    // The outside host has no route back to the bridge's /64: only what
    // the gateway translated is answered.
    let capture = lab.capture_outside().unwrap();
    let slow = options().timeout(Duration::from_secs(3));
    let echo = prober
        .icmp_flow(lab.outside_addr6().unwrap(), slow)
        .unwrap();
    assert!(echo.outcome.is_reachable(), "{}", echo.outcome);
    let syn = prober
        .tcp_flow(lab.outside_addr6().unwrap(), 8080, slow)
        .unwrap();
    assert!(syn.outcome.is_open(), "{}", syn.outcome);
    let seen = capture.stop();
    let table = Table::read(lab.lab_netns()).unwrap();
    for flow in [echo.flow, syn.flow] {
        assert_eq!(flow.src, IpAddr::V6(v6(&client)));
        let translation = found(&seen, &flow);
        assert!(
            translation.rewritten && translation.src == public,
            "{flow}: {translation}"
        );
        assert!(translation.replies >= 1, "{flow}: {translation}");
        seen.assert_translated(&flow, public);
        let entry = table.assert_translated(&flow, public);
        assert_eq!(
            entry.translated_source(),
            (translation.src, translation.src_port),
            "conntrack ({entry}) and the capture ({translation}) disagree on {flow}"
        );
        // The conntrack tool, in the lab namespace, lists the same tuples.
        conntrack_tool_agrees(lab.lab_netns(), &flow, entry);
    }
    // nft's counter of the masquerade in the lab namespace saw them.
    let table = in_netns(
        lab.lab_netns(),
        "nft",
        &["list", "table", "ip6", "netns_harness"],
    );
    assert!(
        table.contains("masquerade") && !table.contains("counter packets 0 "),
        "{table}"
    );
}
