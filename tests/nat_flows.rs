//! NAT verdicts per flow, in the shared lab while other tests send through
//! the same NAT with the same public address: each test finds its own
//! flow by its token or sequence number, on the far side (capture) and in
//! the NAT's conntrack table, and the `conntrack` tool agrees; a test that
//! sent nothing finds nothing, however busy its neighbours are.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use netns_harness::conntrack::Table;
use netns_harness::prelude::*;
use netns_harness::probe::{Flow, Mark, ProbeOptions, Prober, Token};
use netns_harness_suite::{conntrack_tool_agrees, needs, serve_outside, udp_echo};
use rstest::rstest;

fn options() -> ProbeOptions {
    ProbeOptions::default().timeout(Duration::from_secs(2))
}

/// On the outside host: a TCP listener on the port given as argument.
fn tcp_listener() {
    let port: u16 = std::env::args().nth(1).unwrap().parse().unwrap();
    let listener = TcpListener::bind(("0.0.0.0", port)).unwrap();
    println!("listening");
    for _ in listener.incoming() {}
}

/// Which probe a case sends.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Echoes to the outside host.
    Icmp(u16),
    /// A SYN to a closed port of the outside host (answered by RST).
    TcpClosed,
    /// A SYN to a listener on the outside host (answered by SYN-ACK).
    TcpOpen,
    /// A datagram to an echo server on the outside host.
    Udp,
}

// Twelve tests at once in the shared lab: all leave through the same NAT
// with the same public address, to the same outside host; each must find
// its own flow and nobody else's.
#[rstest]
#[case::icmp_1(Kind::Icmp(1), 0)]
#[case::icmp_2(Kind::Icmp(2), 1)]
#[case::icmp_3(Kind::Icmp(3), 2)]
#[case::tcp_closed_1(Kind::TcpClosed, 3)]
#[case::tcp_closed_2(Kind::TcpClosed, 4)]
#[case::tcp_closed_3(Kind::TcpClosed, 5)]
#[case::tcp_open_1(Kind::TcpOpen, 6)]
#[case::tcp_open_2(Kind::TcpOpen, 7)]
#[case::tcp_open_3(Kind::TcpOpen, 8)]
#[case::udp_1(Kind::Udp, 9)]
#[case::udp_2(Kind::Udp, 10)]
#[case::udp_3(Kind::Udp, 11)]
#[needs("nsenter", "conntrack")]
#[netns_test(timeout = "30s")]
fn each_test_finds_its_own_flow_through_the_shared_nat(#[case] kind: Kind, #[case] n: u16) {
    let net = Net::current();
    // A port of the outside host for this case alone: the outside
    // namespace is shared by every test of the process.
    let port = 7600 + n;
    let _server = match kind {
        Kind::TcpOpen => Some(serve_outside(&net, tcp_listener, port)),
        Kind::Udp => Some(serve_outside(&net, udp_echo, port)),
        Kind::Icmp(_) | Kind::TcpClosed => None,
    };
    let capture = net.lab().capture_outside().unwrap();
    let prober = Prober::here();
    let outside = net.outside_addr();
    let (flow, sent) = match kind {
        Kind::Icmp(count) => {
            let sent = prober.icmp_flow(outside, options().count(count)).unwrap();
            assert!(sent.outcome.is_reachable(), "{}", sent.outcome);
            (sent.flow, count as usize)
        }
        Kind::TcpClosed | Kind::TcpOpen => {
            let sent = prober.tcp_flow(outside, port, options()).unwrap();
            let open = matches!(kind, Kind::TcpOpen);
            assert_eq!(sent.outcome.is_open(), open, "{}", sent.outcome);
            // The SYN; after a SYN-ACK, the prober's reset and the
            // kernel's (it finds no socket for the SYN-ACK either).
            (sent.flow, if open { 3 } else { 1 })
        }
        Kind::Udp => {
            let sent = prober.udp_flow(outside, port, b"hello", options()).unwrap();
            assert!(
                matches!(sent.outcome, netns_harness::probe::UdpOutcome::Open { .. }),
                "{}",
                sent.outcome
            );
            (sent.flow, 1)
        }
    };
    assert_eq!(flow.src, net.addr());
    let seen = capture.stop();
    let translation = seen.assert_translated(&flow, net.public_addr());
    assert_eq!(translation.packets, sent, "{flow}: {translation}");
    assert!(translation.replies >= 1, "{flow}: {translation}");

    // The second witness: the NAT's own table, read over netlink.
    let table = Table::read(net.lab().lab_netns()).unwrap();
    if matches!(kind, Kind::TcpClosed) {
        // A reset answering a SYN ends the connection's entry at once
        // (the kernel kills it in SYN_SENT); only the capture saw it.
        assert_eq!(table.find(&flow), None, "{table}");
        return;
    }
    let entry = table.assert_translated(&flow, net.public_addr());
    assert_eq!(
        entry.translated_source(),
        (translation.src, translation.src_port),
        "conntrack ({entry}) and the capture ({translation}) disagree on {flow}"
    );
    // And the third: the conntrack tool.
    conntrack_tool_agrees(net.lab().lab_netns(), &flow, entry);
}

/// In a peer: sends ICMP, TCP and UDP flows to the outside host (address
/// and UDP echo port as arguments) until killed; prints "sending" once the
/// first of each was answered.
fn busy_neighbour() {
    let mut args = std::env::args().skip(1);
    let outside: Ipv4Addr = args.next().unwrap().parse().unwrap();
    let port: u16 = args.next().unwrap().parse().unwrap();
    let prober = Prober::here();
    let options = ProbeOptions::default().timeout(Duration::from_secs(2));
    for round in 0.. {
        let icmp = prober.icmp_flow(outside, options).unwrap();
        let tcp = prober.tcp_flow(outside, 9, options).unwrap();
        let udp = prober.udp_flow(outside, port, b"busy", options).unwrap();
        if round == 0 {
            assert!(icmp.outcome.is_reachable(), "{}", icmp.outcome);
            assert!(
                matches!(tcp.outcome, netns_harness::probe::TcpOutcome::Closed { .. }),
                "{}",
                tcp.outcome
            );
            assert!(
                matches!(udp.outcome, netns_harness::probe::UdpOutcome::Open { .. }),
                "{}",
                udp.outcome
            );
            println!("sending");
        }
    }
}

/// The flows this container would have sent, had it sent anything: its
/// own address, fresh identifiers and tokens.
fn flows_never_sent(net: &Net, udp_port: u16) -> [Flow; 3] {
    let flow = |src_port, dst_port, mark| Flow {
        src: net.addr(),
        src_port,
        dst: net.outside_addr(),
        dst_port,
        mark,
    };
    [
        flow(
            4242,
            0,
            Mark::Icmp {
                token: Token::random(),
            },
        ),
        flow(61234, 9, Mark::Tcp { isn: 0x5eed_f00d }),
        flow(
            40000,
            udp_port,
            Mark::Udp {
                token: Token::random(),
            },
        ),
    ]
}

#[netns_test(timeout = "30s")]
fn a_test_that_sent_nothing_finds_nothing_while_its_neighbours_send(net: Net) {
    let port = 7700;
    let _echo = serve_outside(&net, udp_echo, port);
    let capture = net.lab().capture_outside().unwrap();
    // Four neighbours on the same bridge, sending through the same NAT
    // with the same public address to the same outside host.
    let neighbours: Vec<Container> = (0..4)
        .map(|_| {
            let mut peer = net
                .spawn(
                    &Spec::function(busy_neighbour)
                        .args([net.outside_addr().to_string(), port.to_string()])
                        .stdout(Stdio::Piped),
                )
                .unwrap();
            let mut out = BufReader::new(peer.take_stdout().unwrap());
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            assert_eq!(line.trim(), "sending");
            peer
        })
        .collect();
    let seen = capture.stop();
    let table = Table::read(net.lab().lab_netns()).unwrap();

    // An address-only check would be fooled: the outside did see packets
    // from the NAT's address, and the table has translated entries.
    let from_public = seen
        .packets()
        .iter()
        .filter(|p| p.src == net.public_addr() && p.dst == net.outside_addr())
        .count();
    assert!(
        from_public >= 12,
        "the neighbours were not busy: {from_public}"
    );
    assert!(
        table.entries().iter().filter(|e| e.is_source_nat()).count() >= 12,
        "{table}"
    );

    for flow in flows_never_sent(&net, port) {
        assert_eq!(seen.find(&flow), None, "{flow}");
        assert_eq!(table.find(&flow), None, "{flow}");
        let capture_verdict = std::panic::catch_unwind(|| {
            seen.assert_translated(&flow, net.public_addr());
        });
        let message = panic_message(capture_verdict.expect_err("the capture assertion passed"));
        assert!(
            message.contains(&format!("the flow {flow} was not seen on eth0")),
            "{message}"
        );
        let table_verdict = std::panic::catch_unwind(|| {
            table.assert_translated(&flow, net.public_addr());
        });
        let message = panic_message(table_verdict.expect_err("the conntrack assertion passed"));
        assert!(
            message.contains(&format!("the flow {flow} has no conntrack entry")),
            "{message}"
        );
    }
    // Not a single packet of this container reached the outside.
    assert!(seen.packets().iter().all(|p| p.src != net.addr()));
    drop(neighbours);
}

#[netns_test(timeout = "30s")]
fn a_flow_to_a_peer_is_not_a_flow_through_the_nat(net: Net) {
    // The flow exists, but it never crossed the NAT: both witnesses say so.
    let peer = net.spawn(&Spec::command("sleep").arg("600")).unwrap();
    let capture = net.lab().capture_outside().unwrap();
    let sent = Prober::here().icmp_flow(peer.addr(), options()).unwrap();
    assert!(sent.outcome.is_reachable(), "{}", sent.outcome);
    let seen = capture.stop();
    assert_eq!(seen.find(&sent.flow), None);
    // Bridged traffic may be tracked (br_netfilter), but never translated.
    let table = Table::read(net.lab().lab_netns()).unwrap();
    let entry = table.find(&sent.flow);
    assert!(entry.is_none_or(|e| !e.is_source_nat()), "{table}");
    let verdict = std::panic::catch_unwind(|| {
        table.assert_translated(&sent.flow, net.public_addr());
    });
    assert!(verdict.is_err(), "the conntrack assertion passed: {table}");
}

#[netns_test]
fn a_tcp_flow_needs_a_syn_probe(net: Net) {
    let err = Prober::here()
        .tcp_flow(
            net.outside_addr(),
            80,
            options().tcp_mode(netns_harness::probe::TcpMode::Connect),
        )
        .unwrap_err();
    assert!(
        matches!(&err, netns_harness::Error::InvalidProbe { reason } if reason.contains("TcpMode::Syn")),
        "{err}"
    );
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}
