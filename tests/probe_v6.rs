//! The prober, the capture and conntrack over IPv6, each verdict checked
//! against a system tool (`ping -6`, `nc -6`, `nft`, `tcpdump`,
//! `conntrack`) run in the same place.
//!
//! The lab itself carries IPv4 only: each test gives the containers it
//! uses an IPv6 address on their `eth0` with `ip -6 addr add … nodad`,
//! derived from their IPv4 address so that tests running at once in the
//! shared lab never collide: `fd00:99::` and the IPv4 address as its two
//! last groups, in one /64 on the lab's bridge.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use netns_harness::capture::{Capture, Protocol};
use netns_harness::prelude::*;
use netns_harness::probe::{
    IcmpOutcome, ProbeOptions, Prober, Reason, TcpMode, TcpOutcome, UdpOutcome,
};
use netns_harness_suite::{in_netns, needs, read_line, require, tool};

fn options() -> ProbeOptions {
    ProbeOptions::default().timeout(Duration::from_secs(1))
}

/// The IPv6 address of the container with the (unique) IPv4 address `v4`.
fn v6_of(v4: impl Into<IpAddr>) -> Ipv6Addr {
    let low = match v4.into() {
        IpAddr::V4(v4) => v4.to_bits(),
        IpAddr::V6(v6) => v6.to_bits() as u32,
    };
    Ipv6Addr::from_bits((0xfd00_0099u128 << 96) | u128::from(low))
}

/// Gives the namespace `netns`, of the container with IPv4 address `v4`,
/// its IPv6 address on `eth0`; returns it.
fn add_v6(netns: BorrowedFd<'_>, v4: impl Into<IpAddr>) -> Ipv6Addr {
    let addr = v6_of(v4);
    let cidr = format!("{addr}/64");
    in_netns(
        netns,
        "ip",
        &["-6", "addr", "add", &cidr, "dev", "eth0", "nodad"],
    );
    addr
}

/// The test's own network namespace.
fn own_netns() -> std::fs::File {
    std::fs::File::open("/proc/thread-self/ns/net").unwrap()
}

/// Gives the test's own container its IPv6 address.
fn add_own_v6(net: &Net) -> Ipv6Addr {
    add_v6(own_netns().as_fd(), net.addr())
}

/// Runs a system tool in the test's own namespace; (success, stdout +
/// stderr).
fn run_here(program: &str, args: &[&str]) -> (bool, String) {
    let out = tool("nsenter")
        .arg(format!("--net=/proc/{}/ns/net", std::process::id()))
        .arg(require(program))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn sleeper(net: &Net) -> (Container, Ipv6Addr) {
    let peer = net.spawn(&Spec::command("sleep").arg("600")).unwrap();
    let addr = add_v6(peer.netns(), peer.addr());
    (peer, addr)
}

/// In a peer: listens on TCP ports given as `v6:PORT` (bound to `[::]`)
/// or `v4:PORT` (bound to `0.0.0.0` only); prints "listening".
fn listener() {
    let listeners: Vec<TcpListener> = std::env::args()
        .skip(1)
        .map(|arg| {
            let (family, port) = arg.split_once(':').unwrap();
            let port: u16 = port.parse().unwrap();
            let any: IpAddr = match family {
                "v6" => Ipv6Addr::UNSPECIFIED.into(),
                _ => Ipv4Addr::UNSPECIFIED.into(),
            };
            TcpListener::bind((any, port)).unwrap()
        })
        .collect();
    println!("listening");
    std::thread::scope(|s| {
        for listener in &listeners {
            s.spawn(move || for _ in listener.incoming() {});
        }
    });
}

fn start_listener(net: &Net, ports: &[&str]) -> (Container, Ipv6Addr) {
    let mut peer = net
        .spawn(
            &Spec::function(listener)
                .args(ports.iter().copied())
                .stdout(Stdio::Piped),
        )
        .unwrap();
    assert_eq!(read_line(peer.take_stdout().unwrap()), "listening");
    let addr = add_v6(peer.netns(), peer.addr());
    (peer, addr)
}

#[needs("nsenter", "ip", "ping")]
#[netns_test(timeout = "30s")]
fn icmpv6_echo_reaches_a_peer_and_ping_agrees(net: Net) {
    let me = add_own_v6(&net);
    let (_peer, peer) = sleeper(&net);
    let sent = Prober::here().icmp_flow(peer, options().count(2)).unwrap();
    let IcmpOutcome::Reachable {
        received, sent: n, ..
    } = sent.outcome
    else {
        panic!("{peer}: {}", sent.outcome);
    };
    assert_eq!((received, n), (2, 2));
    assert_eq!(sent.flow.src, IpAddr::V6(me));
    assert_eq!(sent.flow.protocol(), 58);
    let (ok, text) = run_here("ping", &["-6", "-c", "1", "-W", "1", &peer.to_string()]);
    assert!(ok, "ping -6 disagrees for {peer}: {text}");

    // Nobody has this address of the /64: neighbour discovery fails, and
    // the kernel says "address unreachable", to the prober and to ping.
    let nobody = v6_of(Ipv4Addr::new(255, 255, 255, 254));
    let slow = options().timeout(Duration::from_secs(6));
    assert_eq!(
        Prober::here().icmp(nobody, slow).unwrap(),
        IcmpOutcome::Unreachable {
            reason: Reason::HostUnreachable
        }
    );
    let (ok, text) = run_here("ping", &["-6", "-c", "1", "-W", "6", &nobody.to_string()]);
    assert!(
        !ok && text.contains("Address unreachable"),
        "ping -6 disagrees for {nobody}: {text}"
    );

    // Outside the /64 there is no IPv6 route at all: known at once.
    let far: Ipv6Addr = "2001:db8::1".parse().unwrap();
    assert_eq!(
        Prober::here().tcp(far, 80, slow).unwrap(),
        TcpOutcome::Filtered {
            reason: Reason::NoRoute
        }
    );
    let (ok, text) = run_here("ping", &["-6", "-c", "1", "-W", "1", &far.to_string()]);
    assert!(
        !ok && text.contains("unreachable"),
        "ping -6 disagrees: {text}"
    );

    // An IPv4-mapped address is probed as the IPv4 address it is.
    let mapped = net.gateway4().unwrap().to_ipv6_mapped();
    let sent = Prober::here().icmp_flow(mapped, options()).unwrap();
    assert!(sent.outcome.is_reachable(), "{}", sent.outcome);
    assert_eq!(sent.flow.dst, net.gateway());
}

#[needs("nsenter", "ip", "nft", "nc", "ss")]
#[netns_test(timeout = "30s")]
fn tcp_over_ipv6_open_closed_dropped_and_rejected(net: Net) {
    add_own_v6(&net);
    let (peer, addr) = start_listener(&net, &["v6:8080", "v6:9000", "v6:9001", "v6:9002"]);
    for rule in [
        "add table ip6 f",
        "add chain ip6 f in { type filter hook input priority 0 ; }",
        "add rule ip6 f in tcp dport 9000 drop",
        "add rule ip6 f in tcp dport 9001 reject",
        "add rule ip6 f in tcp dport 9002 reject with icmpv6 type admin-prohibited",
    ] {
        let args: Vec<&str> = rule.split(' ').collect();
        in_netns(peer.netns(), "nft", &args);
    }
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
        let (_, text) = run_here(
            "nc",
            &[
                "-6",
                "-v",
                "-z",
                "-w",
                "3",
                &addr.to_string(),
                &port.to_string(),
            ],
        );
        assert!(
            text.contains(nc_says),
            "nc -6 disagrees for port {port}: {text}"
        );
    }
    // The SYN probes' half-open connections were reset: none is left.
    let quiet = netns_harness_suite::eventually(Duration::from_secs(5), || {
        in_netns(peer.netns(), "ss", &["-Htan", "state", "syn-recv"])
            .trim()
            .is_empty()
    });
    assert!(quiet, "half-open connections remain");
}

#[needs("nsenter", "ip", "nc")]
#[netns_test(timeout = "30s")]
fn a_server_bound_to_the_ipv4_wildcard_only_is_closed_over_ipv6(net: Net) {
    add_own_v6(&net);
    let (peer, v6) = start_listener(&net, &["v4:8081"]);
    let v4 = peer.addr();
    for mode in [TcpMode::Syn, TcpMode::Connect] {
        let over_v4 = Prober::here()
            .tcp(v4, 8081, options().tcp_mode(mode))
            .unwrap();
        assert!(over_v4.is_open(), "{mode:?} over IPv4: {over_v4}");
        let over_v6 = Prober::here()
            .tcp(v6, 8081, options().tcp_mode(mode))
            .unwrap();
        assert!(
            matches!(over_v6, TcpOutcome::Closed { .. }),
            "{mode:?} over IPv6: {over_v6}"
        );
    }
    let nc = |family: &str, addr: String| {
        run_here("nc", &[family, "-v", "-z", "-w", "1", &addr, "8081"]).1
    };
    let text = nc("-4", v4.to_string());
    assert!(text.contains("succeeded"), "nc -4: {text}");
    let text = nc("-6", v6.to_string());
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

#[needs("nsenter", "ip", "nft")]
#[netns_test(timeout = "30s")]
fn udp_over_ipv6_open_closed_and_silent(net: Net) {
    add_own_v6(&net);
    let mut peer = net
        .spawn(&Spec::function(udp_echo).stdout(Stdio::Piped))
        .unwrap();
    assert_eq!(read_line(peer.take_stdout().unwrap()), "listening");
    let addr = add_v6(peer.netns(), peer.addr());
    // nft counts, here, the ICMPv6 port-unreachable errors that come back.
    let own = own_netns();
    for rule in [
        "add table ip6 answers",
        "add chain ip6 answers in { type filter hook input priority 0 ; }",
        "add rule ip6 answers in icmpv6 type destination-unreachable icmpv6 code port-unreachable counter",
    ] {
        let args: Vec<&str> = rule.split(' ').collect();
        in_netns(own.as_fd(), "nft", &args);
    }
    let errors = || {
        let text = in_netns(
            own.as_fd(),
            "nft",
            &["list", "chain", "ip6", "answers", "in"],
        );
        text.split("packets ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
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

#[needs("nsenter", "ip", "unshare", "tcpdump")]
#[netns_test(timeout = "30s")]
fn a_capture_finds_a_v6_flow_among_others_and_tcpdump_reads_it(net: Net) {
    let me = add_own_v6(&net);
    let (server, addr) = start_listener(&net, &["v6:8080"]);
    let (neighbour, other) = sleeper(&net);
    let capture = Capture::start(server.netns(), "eth0").unwrap();
    // Three flows at once to the server: an echo and a SYN from here, an
    // echo from a neighbour, all with the same identifiers' space.
    let neighbour_prober = Prober::in_netns(neighbour.netns()).unwrap();
    let (echo, syn, theirs) = std::thread::scope(|s| {
        let theirs = s.spawn(|| {
            neighbour_prober
                .icmp_flow(addr, options().count(3))
                .unwrap()
        });
        let echo = s.spawn(|| Prober::here().icmp_flow(addr, options()).unwrap());
        let syn = Prober::here().tcp_flow(addr, 8080, options()).unwrap();
        (echo.join().unwrap(), syn, theirs.join().unwrap())
    });
    assert!(echo.outcome.is_reachable(), "{}", echo.outcome);
    assert!(syn.outcome.is_open(), "{}", syn.outcome);
    assert!(theirs.outcome.is_reachable(), "{}", theirs.outcome);
    let seen = capture.stop();

    // Each flow found by its token or ISN, from its own address: IPv6 on
    // a bridge is not translated.
    let mine = seen.assert_not_translated(&echo.flow);
    assert_eq!(
        (mine.src, mine.packets, mine.replies),
        (IpAddr::V6(me), 1, 1)
    );
    let neighbours = seen.assert_not_translated(&theirs.flow);
    assert_eq!((neighbours.src, neighbours.packets), (IpAddr::V6(other), 3));
    // The SYN, then the prober's reset and the kernel's.
    let tcp = seen.assert_not_translated(&syn.flow);
    assert_eq!((tcp.src, tcp.packets, tcp.replies), (IpAddr::V6(me), 3, 1));
    let echoes = seen
        .packets()
        .iter()
        .filter(|p| p.protocol == Protocol::Icmpv6(128) && p.dst == IpAddr::V6(addr))
        .count();
    assert_eq!(echoes, 4, "{:?}", seen.packets());

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
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // -vv prints the IPv6 header on a line of its own; join it with the
    // transport line after it.
    text = text.replace(")\n    ", ") ");
    let line = |wanted: &[&str]| {
        text.lines()
            .find(|l| wanted.iter().all(|w| l.contains(w)))
            .unwrap_or_else(|| panic!("tcpdump shows no line with {wanted:?}:\n{text}"))
            .to_owned()
    };
    let request = line(&[
        "IP6",
        &format!("{me} > {addr}: [icmp6 sum ok] ICMP6, echo request"),
    ]);
    assert!(
        request.contains(&format!("id {}", echo.flow.src_port)),
        "{request}"
    );
    line(&[
        "IP6",
        &format!("{addr} > {me}: [icmp6 sum ok] ICMP6, echo reply"),
    ]);
    let netns_harness::probe::Mark::Tcp { isn } = syn.flow.mark else {
        unreachable!()
    };
    let syn_line = line(&[
        "IP6",
        &format!("{me}.{} > {addr}.8080: Flags [S]", syn.flow.src_port),
    ]);
    assert!(
        syn_line.contains(&format!("seq {isn},")) && syn_line.contains("(correct)"),
        "the SYN's checksum: {syn_line}"
    );
    let mut raw = Vec::new();
    std::fs::File::open(&path)
        .unwrap()
        .read_to_end(&mut raw)
        .unwrap();
    assert!(raw.len() > 24, "an empty pcap");
}

#[needs("nsenter", "ip", "nft", "sh", "conntrack")]
#[netns_test(timeout = "30s")]
fn a_nat66_rewrite_is_seen_by_the_capture_and_conntrack_as_the_conntrack_tool_says(net: Net) {
    // me --(bridge, fd00:99::/64)-- router --(veth, fd00:98::/64)-- server;
    // the router masquerades what leaves towards the server, which has
    // no route back to fd00:99::/64: only translated flows are answered.
    add_own_v6(&net);
    let (server, _) = start_listener(&net, &["v6:8080"]);
    let (router, via) = sleeper(&net);
    let (inside, outside): (Ipv6Addr, Ipv6Addr) =
        ("fd00:98::1".parse().unwrap(), "fd00:98::2".parse().unwrap());
    let peer = format!("netns {}", server.pid());
    let mut link = vec![
        "link", "add", "up0", "type", "veth", "peer", "name", "down0",
    ];
    link.extend(peer.split(' '));
    in_netns(router.netns(), "ip", &link);
    for (netns, addr) in [(router.netns(), inside), (server.netns(), outside)] {
        let (cidr, dev) = (
            format!("{addr}/64"),
            if addr == inside { "up0" } else { "down0" },
        );
        in_netns(
            netns,
            "ip",
            &["-6", "addr", "add", &cidr, "dev", dev, "nodad"],
        );
        in_netns(netns, "ip", &["link", "set", dev, "up"]);
    }
    let forwarding = "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding";
    in_netns(router.netns(), "sh", &["-c", forwarding]);
    for rule in [
        "add table ip6 nat",
        "add chain ip6 nat post { type nat hook postrouting priority 100 ; }",
        "add rule ip6 nat post oifname up0 masquerade",
    ] {
        let args: Vec<&str> = rule.split(' ').collect();
        in_netns(router.netns(), "nft", &args);
    }
    let own = own_netns();
    let via = via.to_string();
    in_netns(
        own.as_fd(),
        "ip",
        &["-6", "route", "add", "fd00:98::/64", "via", &via],
    );

    let capture = Capture::start(server.netns(), "down0").unwrap();
    let slow = options().timeout(Duration::from_secs(3));
    let echo = Prober::here().icmp_flow(outside, slow).unwrap();
    assert!(echo.outcome.is_reachable(), "{}", echo.outcome);
    let syn = Prober::here().tcp_flow(outside, 8080, slow).unwrap();
    assert!(syn.outcome.is_open(), "{}", syn.outcome);
    let seen = capture.stop();
    let table = netns_harness::conntrack::Table::read(router.netns()).unwrap();
    for (flow, protocol) in [(echo.flow, "icmpv6"), (syn.flow, "tcp")] {
        let translation = seen.assert_translated(&flow, inside);
        assert!(translation.replies >= 1, "{flow}: {translation}");
        let entry = table.assert_translated(&flow, inside);
        assert_eq!(
            entry.translated_source(),
            (translation.src, translation.src_port),
            "conntrack ({entry}) and the capture ({translation}) disagree on {flow}"
        );
        // The conntrack tool lists the same tuples.
        let listing = in_netns(
            router.netns(),
            "conntrack",
            &["-L", "-f", "ipv6", "-p", protocol],
        );
        let line = listing
            .lines()
            .find(|l| l.contains(&format!(" {} ", entry.original)))
            .unwrap_or_else(|| panic!("conntrack -L lists no {}:\n{listing}", entry.original));
        assert!(
            line.contains(&format!(" {} ", entry.reply)),
            "conntrack -L shows another reply tuple than {}: {line}",
            entry.reply
        );
    }
}
