//! The prober, scenario by scenario, each verdict checked against a system
//! tool (`ping`, `nc`, `ss`, `nft`) run in the same place.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::fd::AsRawFd;
use std::time::Duration;

use netns_harness::Error;
use netns_harness::matrix::{Check, Endpoint, Matrix};
use netns_harness::prelude::*;
use netns_harness::probe::{
    IcmpOutcome, ProbeOptions, Prober, Reason, TcpMode, TcpOutcome, UdpOutcome,
};
use netns_harness_suite::{in_netns, needs, read_line, require, run_in_netns, serve_outside, tool};

fn options() -> ProbeOptions {
    ProbeOptions::default().timeout(Duration::from_secs(1))
}

/// A peer listening on the TCP ports given as arguments; prints
/// "listening", then "accepted <port>" for each connection.
fn listener() {
    let ports: Vec<u16> = std::env::args()
        .skip(1)
        .map(|p| p.parse().unwrap())
        .collect();
    let listeners: Vec<TcpListener> = ports
        .iter()
        .map(|p| TcpListener::bind(("0.0.0.0", *p)).unwrap())
        .collect();
    println!("listening");
    std::thread::scope(|s| {
        for (listener, port) in listeners.iter().zip(&ports) {
            s.spawn(move || {
                for _ in listener.incoming() {
                    println!("accepted {port}");
                }
            });
        }
    });
}

fn start_listener(net: &Net, ports: &[u16]) -> Container {
    let mut peer = net
        .spawn(
            &Spec::function(listener)
                .args(ports.iter().map(u16::to_string))
                .stdout(Stdio::Piped),
        )
        .unwrap();
    let mut out = BufReader::new(peer.take_stdout().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "listening");
    // Keep reading so the peer never blocks on a full pipe; report accepts.
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            eprintln!("peer: {line}");
        }
    });
    peer
}

fn sleeper(net: &Net) -> Container {
    net.spawn(&Spec::command("sleep").arg("600")).unwrap()
}

/// Runs a system tool in `pid`'s network namespace (pid as this container
/// sees it); returns (success, stdout + stderr).
fn tool_in(pid: u32, program: &str, args: &[&str]) -> (bool, String) {
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    run_in_netns(std::os::fd::AsFd::as_fd(&netns), program, args)
}

/// Runs a system tool here.
fn run_here(program: &str, args: &[&str]) -> (bool, String) {
    tool_in(std::process::id(), program, args)
}

fn ping(addr: IpAddr) -> (bool, String) {
    run_here("ping", &["-c", "1", "-W", "1", &addr.to_string()])
}

fn nc(addr: IpAddr, port: u16) -> (bool, String) {
    run_here(
        "nc",
        &["-v", "-z", "-w", "1", &addr.to_string(), &port.to_string()],
    )
}

#[needs("nsenter", "ping")]
#[netns_test]
fn icmp_reaches_a_peer_the_gateway_and_the_outside(net: Net) {
    let peer = sleeper(&net);
    for target in [peer.addr(), net.gateway(), net.outside_addr()] {
        let outcome = Prober::here().icmp(target, options().count(2)).unwrap();
        let IcmpOutcome::Reachable { received, sent, .. } = outcome else {
            panic!("{target}: {outcome}");
        };
        assert_eq!((received, sent), (2, 2));
        let (ok, text) = ping(target);
        assert!(ok, "ping disagrees for {target}: {text}");
    }
}

#[needs("nsenter", "nft", "nc", "ss")]
#[netns_test(timeout = "30s")]
fn tcp_open_closed_dropped_and_rejected(net: Net) {
    let peer = start_listener(&net, &[8080, 9000, 9001, 9002]);
    let pid = peer.pid();
    for rule in [
        "add table ip f",
        "add chain ip f in { type filter hook input priority 0 ; }",
        "add rule ip f in tcp dport 9000 drop",
        "add rule ip f in tcp dport 9001 reject",
        "add rule ip f in tcp dport 9002 reject with icmp type admin-prohibited",
    ] {
        let args: Vec<&str> = rule.split(' ').collect();
        let (ok, text) = tool_in(pid, "nft", &args);
        assert!(ok, "nft {rule}: {text}");
    }
    // Port, SYN verdict, connect() verdict (the kernel reports "prohibited"
    // to connect() as EHOSTUNREACH), what nc says.
    type Verdict = fn(&TcpOutcome) -> bool;
    let open: Verdict = |o| matches!(o, TcpOutcome::Open { .. });
    let closed: Verdict = |o| matches!(o, TcpOutcome::Closed { .. });
    let dropped: Verdict = |o| {
        *o == TcpOutcome::Filtered {
            reason: Reason::Timeout,
        }
    };
    let cases: [(u16, Verdict, Verdict, &str); 5] = [
        (8080, open, open, "succeeded"),
        (8081, closed, closed, "Connection refused"),
        (9000, dropped, dropped, "timed out"),
        (9001, closed, closed, "Connection refused"),
        (
            9002,
            |o| {
                *o == TcpOutcome::Filtered {
                    reason: Reason::Prohibited,
                }
            },
            |o| {
                *o == TcpOutcome::Filtered {
                    reason: Reason::HostUnreachable,
                }
            },
            "No route to host",
        ),
    ];
    for (port, syn_verdict, connect_verdict, nc_says) in cases {
        let syn = Prober::here().tcp(peer.addr(), port, options()).unwrap();
        assert!(syn_verdict(&syn), "SYN probe of port {port}: {syn}");
        let connect = Prober::here()
            .tcp(peer.addr(), port, options().tcp_mode(TcpMode::Connect))
            .unwrap();
        assert!(
            connect_verdict(&connect),
            "connect() probe of port {port}: {connect}"
        );
        let (_, text) = nc(peer.addr(), port);
        assert!(
            text.contains(nc_says),
            "nc disagrees for port {port}: {text}"
        );
    }
    // The SYN probe's half-open connection was reset: the server has no
    // connection left (the connect() probe and nc made real ones, which
    // they closed), as ss shows.
    let (ok, states) = tool_in(pid, "ss", &["-Htan", "state", "syn-recv"]);
    assert!(
        ok && states.trim().is_empty(),
        "half-open connections remain: {states}"
    );
}

#[needs("nsenter", "ss")]
#[netns_test]
fn a_syn_probe_leaves_the_server_no_connection(net: Net) {
    let peer = start_listener(&net, &[8080]);
    let outcome = Prober::here().tcp(peer.addr(), 8080, options()).unwrap();
    assert!(outcome.is_open(), "{outcome}");
    let quiet = netns_harness_suite::eventually(Duration::from_secs(5), || {
        let (_, states) = tool_in(peer.pid(), "ss", &["-Htan", "sport", "= :8080"]);
        states.lines().all(|l| l.starts_with("LISTEN"))
    });
    let (_, states) = tool_in(peer.pid(), "ss", &["-Htan", "sport", "= :8080"]);
    assert!(quiet, "the server kept a connection of the probe: {states}");
}

#[needs("nsenter", "nft")]
#[netns_test]
fn udp_open_closed_and_silent(net: Net) {
    fn echo() {
        let socket = std::net::UdpSocket::bind(("0.0.0.0", 5300)).unwrap();
        let silent = std::net::UdpSocket::bind(("0.0.0.0", 5301)).unwrap();
        println!("listening");
        let mut buf = [0u8; 512];
        loop {
            let (n, from) = socket.recv_from(&mut buf).unwrap();
            socket.send_to(&buf[..n], from).unwrap();
            let _ = &silent;
        }
    }
    let mut peer = net
        .spawn(&Spec::function(echo).stdout(Stdio::Piped))
        .unwrap();
    assert_eq!(read_line(peer.take_stdout().unwrap()), "listening");
    // nft counts, here, the replies and the ICMP errors that come back.
    for rule in [
        "add table ip answers".to_owned(),
        "add chain ip answers in { type filter hook input priority 0 ; }".to_owned(),
        format!("add rule ip answers in ip saddr {} udp sport 5300 counter", peer.addr()),
        "add rule ip answers in icmp type destination-unreachable icmp code port-unreachable counter".to_owned(),
    ] {
        let args: Vec<&str> = rule.split(' ').collect();
        let (ok, text) = run_here("nft", &args);
        assert!(ok, "nft {rule}: {text}");
    }
    let counters = || {
        let (_, text) = run_here("nft", &["list", "chain", "ip", "answers", "in"]);
        let packets: Vec<u64> = text
            .lines()
            .filter_map(|l| l.split("packets ").nth(1)?.split(' ').next()?.parse().ok())
            .collect();
        (packets[0], packets[1])
    };
    let probe = |port| {
        Prober::here()
            .udp(peer.addr(), port, b"hello", options())
            .unwrap()
    };
    assert!(matches!(probe(5300), UdpOutcome::Open { .. }));
    assert_eq!(counters(), (1, 0), "nft saw no reply from the echo port");
    assert_eq!(probe(5301), UdpOutcome::OpenOrFiltered);
    assert_eq!(counters(), (1, 0), "nft saw an answer from the silent port");
    assert_eq!(probe(5302), UdpOutcome::Closed);
    assert_eq!(
        counters(),
        (1, 1),
        "nft saw no port-unreachable from the closed port"
    );
}

#[needs("nsenter", "ping")]
#[netns_test]
fn no_route_is_reported_without_waiting(net: Net) {
    // The outside host has no route to the lab's subnet.
    let outside = Prober::in_netns(net.lab().outside_netns()).unwrap();
    let slow = options().timeout(Duration::from_secs(30));
    assert_eq!(
        outside.icmp(net.addr(), slow).unwrap(),
        IcmpOutcome::Unreachable {
            reason: Reason::NoRoute
        }
    );
    assert_eq!(
        outside.tcp(net.addr(), 80, slow).unwrap(),
        TcpOutcome::Filtered {
            reason: Reason::NoRoute
        }
    );
    let fd = net.lab().outside_netns().as_raw_fd();
    require("ping");
    let out = tool("nsenter")
        .arg(format!("--net=/proc/{}/fd/{fd}", std::process::id()))
        .args(["ping", "-c", "1", "-W", "1", &net.addr().to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("Network is unreachable"),
        "ping disagrees: {text}"
    );
}

#[needs("nsenter", "ip", "ping")]
#[netns_test]
fn a_peer_whose_link_is_down_is_unreachable(net: Net) {
    let peer = sleeper(&net);
    assert!(
        Prober::here()
            .icmp(peer.addr(), options())
            .unwrap()
            .is_reachable()
    );
    let (ok, text) = tool_in(peer.pid(), "ip", &["link", "set", "eth0", "down"]);
    assert!(ok, "{text}");
    // A fresh address on the bridge: no neighbour entry to fall back on.
    let outcome = Prober::here().icmp(peer.addr(), options()).unwrap();
    assert!(!outcome.is_reachable(), "{outcome}");
    assert!(!ping(peer.addr()).0, "ping still reaches the peer");
}

#[needs("nsenter", "nft")]
#[netns_test]
fn the_far_side_sees_the_nat_address_for_icmp_and_tcp(net: Net) {
    fn outside_listener() {
        let listener = TcpListener::bind(("0.0.0.0", 7300)).unwrap();
        println!("listening");
        for _ in listener.incoming() {}
    }
    let mut server = net
        .spawn_outside(&Spec::function(outside_listener).stdout(Stdio::Piped))
        .unwrap();
    assert_eq!(read_line(server.take_stdout().unwrap()), "listening");
    // nft in the outside namespace counts what arrives, by source.
    let nft = |rule: &str| {
        let args: Vec<&str> = rule.split(' ').collect();
        in_netns(net.lab().outside_netns(), "nft", &args)
    };
    nft("add table ip count");
    nft("add chain ip count in { type filter hook input priority 0 ; }");
    nft(&format!(
        "add rule ip count in ip saddr {} counter comment \"public\"",
        net.public_addr()
    ));
    nft(&format!(
        "add rule ip count in ip saddr {} counter comment \"private\"",
        net.subnet()
    ));

    let capture = net.lab().capture_outside().unwrap();
    let echo = Prober::here()
        .icmp_flow(net.outside_addr(), options())
        .unwrap();
    assert!(echo.outcome.is_reachable(), "{}", echo.outcome);
    let syn = Prober::here()
        .tcp_flow(net.outside_addr(), 7300, options())
        .unwrap();
    assert!(syn.outcome.is_open(), "{}", syn.outcome);
    let seen = capture.stop();
    for flow in [echo.flow, syn.flow] {
        let translation = seen.assert_translated(&flow, net.public_addr());
        assert!(translation.replies >= 1, "{flow}: {translation}");
    }
    let from_public: Vec<_> = seen
        .packets()
        .iter()
        .filter(|p| p.src == net.public_addr())
        .collect();
    assert!(
        from_public
            .iter()
            .any(|p| matches!(p.protocol, netns_harness::capture::Protocol::Icmp(8)))
    );
    assert!(
        from_public.iter().any(
            |p| p.protocol == netns_harness::capture::Protocol::Tcp && p.dst_port == Some(7300)
        )
    );

    let counters = nft("list table ip count");
    let count = |tag: &str| {
        let line = counters.lines().find(|l| l.contains(tag)).unwrap();
        let packets = line
            .split("packets ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        packets.parse::<u64>().unwrap()
    };
    assert!(count("\"public\"") >= 2, "{counters}");
    assert_eq!(count("\"private\""), 0, "{counters}");

    // And the other way: the outside cannot open a connection to us.
    let listener = TcpListener::bind((net.addr(), 7400)).unwrap();
    let outside = Prober::in_netns(net.lab().outside_netns()).unwrap();
    let attempt = outside.tcp(net.addr(), 7400, options()).unwrap();
    assert!(
        !attempt.is_open(),
        "the outside opened a connection to the container: {attempt}"
    );
    drop(listener);
}

#[netns_test]
fn sixteen_concurrent_probes_each_get_their_own_answer(net: Net) {
    let peer = start_listener(&net, &[8080]);
    let nobody = net.subnet().broadcast().to_bits() - 1; // no container has it
    let nobody = Ipv4Addr::from_bits(nobody);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..16u16)
            .map(|i| {
                let peer = peer.addr();
                s.spawn(move || {
                    let prober = Prober::here();
                    match i % 4 {
                        0 => assert!(
                            prober.icmp(peer, options()).unwrap().is_reachable(),
                            "probe {i}"
                        ),
                        1 => assert!(
                            !prober.icmp(nobody, options()).unwrap().is_reachable(),
                            "probe {i}"
                        ),
                        2 => assert!(
                            prober.tcp(peer, 8080, options()).unwrap().is_open(),
                            "probe {i}"
                        ),
                        _ => {
                            let o = prober.tcp(peer, 8100 + i, options()).unwrap();
                            assert!(matches!(o, TcpOutcome::Closed { .. }), "probe {i}: {o}");
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}

#[test]
fn bad_probe_input_is_refused_with_the_reason() {
    let prober = Prober::here();
    let invalid = |r: netns_harness::Result<String>| match r {
        Err(Error::InvalidProbe { reason }) => reason,
        other => panic!("expected InvalidProbe, got {other:?}"),
    };
    let gw = Ipv4Addr::new(10, 200, 0, 1);
    let cases = [
        (
            invalid(prober.tcp(gw, 0, options()).map(|o| o.to_string())),
            "port 0 cannot be probed; give a port from 1 to 65535",
        ),
        (
            invalid(
                prober
                    .icmp(Ipv4Addr::UNSPECIFIED, options())
                    .map(|o| o.to_string()),
            ),
            "cannot probe 0.0.0.0: it is the unspecified address",
        ),
        (
            invalid(
                prober
                    .icmp(Ipv4Addr::new(224, 0, 0, 1), options())
                    .map(|o| o.to_string()),
            ),
            "cannot probe 224.0.0.1: it is a multicast address",
        ),
        (
            invalid(
                prober
                    .udp(Ipv4Addr::BROADCAST, 53, b"x", options())
                    .map(|o| o.to_string()),
            ),
            "it is the broadcast address",
        ),
        (
            invalid(
                prober
                    .icmp(gw, options().timeout(Duration::ZERO))
                    .map(|o| o.to_string()),
            ),
            "the timeout is zero",
        ),
        (
            invalid(prober.icmp(gw, options().count(0)).map(|o| o.to_string())),
            "the count is zero",
        ),
    ];
    for (reason, expected) in cases {
        assert!(reason.contains(expected), "{reason:?} lacks {expected:?}");
    }
}

#[needs("nsenter", "ping")]
#[netns_test(timeout = "30s")]
fn a_reachability_matrix_shows_who_reaches_whom(net: Net) {
    let server = start_listener(&net, &[8080]);
    let idle = sleeper(&net);
    let endpoints = [
        Endpoint::new("me", net.addr(), Prober::here()),
        Endpoint::container(&server).unwrap(),
        Endpoint::container(&idle).unwrap(),
        Endpoint::gateway(net.lab()).unwrap(),
        Endpoint::outside(net.lab()).unwrap(),
    ];
    let server_name = server.name().to_owned();
    let checks = [Check::Icmp, Check::Tcp(8080)];
    let matrix = Matrix::probe(&endpoints, &checks, options()).unwrap();
    println!("{matrix}");
    // The outside reaches nobody in the lab (no route back without NAT);
    // everyone else reaches everyone by ICMP; only the server listens.
    let expected = |from: &str, to: &str, check: Check| match check {
        Check::Icmp => from != "outside" || to == "outside",
        Check::Tcp(_) => from != "outside" && to == server_name,
    };
    matrix.assert_expected(expected);
    assert_eq!(matrix.reaches("me", "outside", Check::Icmp), Some(true));
    assert_eq!(matrix.reaches("outside", "me", Check::Icmp), Some(false));
    // A wrong expectation shows exactly the cells that differ.
    let wrong = matrix.differences(|from, to, check| {
        expected(from, to, check) ^ (from == "outside" && to == "gateway" && check == Check::Icmp)
    });
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert!(
        wrong[0]
            .starts_with("outside -> gateway icmp: expected reachable, got unreachable: no route"),
        "{wrong:?}"
    );
    // And ping agrees with a few cells.
    assert!(ping(server.addr()).0 && ping(net.outside_addr()).0);
}

/// In a peer: sends UDP datagrams to the address given as argument (the
/// gateway's discard port) in a tight loop until killed; prints "flooding"
/// once it has sent a thousand.
fn udp_flood() {
    let target: Ipv4Addr = std::env::args().nth(1).unwrap().parse().unwrap();
    let socket = std::net::UdpSocket::bind(("0.0.0.0", 0)).unwrap();
    socket.connect((target, 9)).unwrap();
    let payload = [0x55u8; 1400];
    for sent in 0u64.. {
        // Port unreachable errors come back as ECONNREFUSED: keep going.
        let _ = socket.send(&payload);
        if sent == 1000 {
            println!("flooding");
        }
    }
}

/// On the outside host: accepts connections on the port given as
/// argument and reads them to the end.
fn tcp_sink() {
    let port: u16 = std::env::args().nth(1).unwrap().parse().unwrap();
    let listener = TcpListener::bind(("0.0.0.0", port)).unwrap();
    println!("listening");
    for stream in listener.incoming() {
        std::io::copy(&mut stream.unwrap(), &mut std::io::sink()).unwrap();
    }
}

#[netns_test(timeout = "30s")]
fn a_capture_of_a_flooded_port_stops_promptly(net: Net) {
    let mut flooder = net
        .spawn(
            &Spec::function(udp_flood)
                .arg(net.gateway().to_string())
                .stdout(Stdio::Piped),
        )
        .unwrap();
    let capture = netns_harness::capture::Capture::start(flooder.netns(), "eth0").unwrap();
    assert_eq!(read_line(flooder.take_stdout().unwrap()), "flooding");
    // The flood goes on: the capture's socket is never idle, so a capture
    // that looked at its stop flag only when idle would never stop. Wait
    // until frames queue up on it faster than it reads them (the Rmem
    // column of the namespace's packet sockets).
    let queued = || {
        std::fs::read_to_string(format!("/proc/{}/net/packet", flooder.pid()))
            .unwrap()
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(6)?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
    };
    let saturated = netns_harness_suite::eventually(Duration::from_secs(10), || queued() > 100_000);
    assert!(
        saturated,
        "the capture's queue never filled: {} bytes",
        queued()
    );
    let started = std::time::Instant::now();
    let seen = capture.stop();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "stopping the capture of a flooded port took {took:?}"
    );
    // It kept what it read of the flood.
    assert!(seen.frames() > 50, "only {} frames", seen.frames());
    println!("stopped in {took:?} with {} frames", seen.frames());
}

#[needs("unshare", "tcpdump")]
#[netns_test(timeout = "30s")]
fn a_capture_keeps_offloaded_frames_whole_with_their_true_length(net: Net) {
    use std::io::Write;
    let port = 7900;
    let _sink = serve_outside(&net, tcp_sink, port);
    let own = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
    let capture =
        netns_harness::capture::Capture::start(std::os::fd::AsFd::as_fd(&own), "eth0").unwrap();
    let mut stream = std::net::TcpStream::connect((net.outside_addr(), port)).unwrap();
    stream.write_all(&vec![0x42; 4 << 20]).unwrap();
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(stream);
    let seen = capture.stop();
    let (kept, len) = seen
        .frame_lengths()
        .max_by_key(|&(_, len)| len)
        .expect("frames were captured");
    // Segmentation offload: the socket saw frames far larger than the MTU,
    // and kept them whole (pnet's default buffer would have cut them to 4 KiB).
    assert!(len > 16_384, "the largest frame has {len} bytes");
    assert_eq!(kept, len, "a {len}-byte frame was truncated to {kept}");
    assert!(seen.frame_lengths().all(|(kept, len)| kept <= len));

    // The pcap records each frame's kept and true lengths...
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("offload.pcap");
    seen.write_pcap(&path).unwrap();
    let pcap = std::fs::read(&path).unwrap();
    let word = |at: usize| u32::from_ne_bytes(pcap[at..at + 4].try_into().unwrap()) as usize;
    assert_eq!(word(16), 262_144, "snapshot length");
    let mut records = Vec::new();
    let mut at = 24;
    while at < pcap.len() {
        let (kept, len) = (word(at + 8), word(at + 12));
        records.push((kept, len));
        at += 16 + kept;
    }
    assert_eq!(records, seen.frame_lengths().collect::<Vec<_>>());
    // ... and tcpdump reads them back, run as a user other than root: as
    // root it insists on dropping its privileges, which the user namespace
    // of a rootless test does not allow (no setgroups).
    require("tcpdump");
    let out = tool("unshare")
        .args(["--user", "--map-user=65534", "--map-group=65534"])
        .args(["tcpdump", "-e", "-n", "-r"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "… ethertype IPv4 (0x0800), length 65226: …" per frame.
    let largest = text
        .lines()
        .filter_map(|l| {
            l.split(", length ")
                .nth(1)?
                .split(':')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max();
    assert_eq!(largest, Some(len), "tcpdump disagrees:\n{text}");
}

/// The socket descriptors of this process, with whether each is
/// close-on-exec (`O_CLOEXEC` in the flags of `/proc/self/fdinfo`).
fn sockets() -> std::collections::HashMap<String, bool> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .filter_map(|fd| {
            let name = fd.file_name().to_string_lossy().into_owned();
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{name}")).ok()?;
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?.trim();
            let flags = u32::from_str_radix(flags, 8).ok()?;
            Some((name, flags & libc::O_CLOEXEC as u32 != 0))
        })
        .collect()
}

#[netns_test]
fn the_capture_and_probe_sockets_are_close_on_exec(net: Net) {
    let before = sockets();
    let opened = |now: &std::collections::HashMap<String, bool>| {
        now.iter()
            .filter(|(fd, _)| !before.contains_key(*fd))
            .map(|(fd, cloexec)| (fd.clone(), *cloexec))
            .collect::<Vec<_>>()
    };
    let capture = net.lab().capture_outside().unwrap();
    let captured = opened(&sockets());
    assert!(!captured.is_empty(), "no packet socket appeared");
    assert!(captured.iter().all(|(_, c)| *c), "{captured:?}");
    drop(capture);
    // While a SYN probe waits for an answer that never comes (nobody has
    // that address), its raw sockets are open.
    let nobody = Ipv4Addr::from_bits(net.subnet().broadcast().to_bits() - 1);
    std::thread::scope(|s| {
        let probe = s.spawn(|| {
            Prober::here()
                .tcp_flow(nobody, 80, options().timeout(Duration::from_secs(3)))
                .unwrap()
        });
        let mut seen = Vec::new();
        let found = netns_harness_suite::eventually(Duration::from_secs(2), || {
            seen = opened(&sockets());
            seen.len() >= 2
        });
        assert!(found, "the probe's raw sockets did not appear: {seen:?}");
        assert!(seen.iter().all(|(_, c)| *c), "{seen:?}");
        let _ = probe.join();
    });
}
