//! Unit tests of `capture`: frames built here, IPv4 and IPv6, found or
//! not by the flows that sent them.

use super::*;
use crate::kernel::packet::Ring;
use crate::tools::probe::Token;

#[test]
fn a_truncated_frame_keeps_its_true_length_in_the_pcap() {
    let mut ring = Ring::default();
    let buf = vec![7u8; 64];
    ring.push(&buf, 70_000); // truncated: 64 bytes kept of 70000
    ring.push(&buf[..60], 60); // whole
    let seen = Observations {
        interface: "eth0".to_owned(),
        frames: ring.frames.into(),
        packets: Vec::new(),
    };
    assert_eq!(
        seen.frame_lengths().collect::<Vec<_>>(),
        [(64, 70_000), (60, 60)]
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truncated.pcap");
    seen.write_pcap(&path).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let mut reader = pcap_file::pcap::PcapReader::new(file).unwrap();
    assert_eq!(reader.header().snaplen, SNAPLEN as u32);
    let mut lengths = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.unwrap();
        lengths.push((packet.data.len(), packet.orig_len));
    }
    assert_eq!(lengths, [(64, 70_000), (60, 60)]);
}

/// Observations of `frames`, as a capture on eth0 would make them.
fn observations(frames: &[Vec<u8>]) -> Observations {
    let mut ring = Ring::default();
    for frame in frames {
        ring.push(frame, frame.len());
    }
    let frames: Vec<_> = ring.frames.into();
    Observations {
        interface: "eth0".to_owned(),
        packets: frames
            .iter()
            .filter_map(|f| parse::parse(&f.data).map(|p| p.observed))
            .collect(),
        frames,
    }
}

/// An Ethernet frame of an IP packet from `src` to `dst`: `headers` (IPv6
/// extension headers, the first of type `next`) then `transport` of
/// `protocol`.
fn frame_with(
    (src, dst): (IpAddr, IpAddr),
    next: u8,
    headers: &[u8],
    protocol: u8,
    transport: &[u8],
) -> Vec<u8> {
    let mut frame = vec![0u8; 14];
    frame[12..14].copy_from_slice(match src {
        IpAddr::V4(_) => &[0x08, 0x00],
        IpAddr::V6(_) => &[0x86, 0xdd],
    });
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let total = u16::try_from(20 + transport.len()).unwrap();
            frame.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, protocol, 0, 0]);
            frame[16..18].copy_from_slice(&total.to_be_bytes());
            frame.extend_from_slice(&src.octets());
            frame.extend_from_slice(&dst.octets());
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let payload = u16::try_from(headers.len() + transport.len()).unwrap();
            frame.extend_from_slice(&[0x60, 0, 0, 0]);
            frame.extend_from_slice(&payload.to_be_bytes());
            frame.extend_from_slice(&[next, 64]);
            frame.extend_from_slice(&src.octets());
            frame.extend_from_slice(&dst.octets());
            frame.extend_from_slice(headers);
        }
        _ => panic!("mixed families"),
    }
    frame.extend_from_slice(transport);
    frame
}

fn frame(ends: (IpAddr, IpAddr), protocol: u8, transport: &[u8]) -> Vec<u8> {
    frame_with(ends, protocol, &[], protocol, transport)
}

/// An echo of `kind` with `id` and `token` (checksum left zero: the
/// capture does not check it).
fn echo(kind: u8, id: u16, token: &Token) -> Vec<u8> {
    let mut icmp = vec![kind, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&[0, 0]);
    icmp.extend_from_slice(token.as_bytes());
    icmp
}

/// A TCP header from `sport` to `dport` with `seq`, `ack` and `flags`.
fn segment(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.extend_from_slice(&[0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    tcp
}

fn v6(text: &str) -> IpAddr {
    IpAddr::V6(text.parse().unwrap())
}

const ME: &str = "fd00:99::2";
const PEER: &str = "fd00:98::2";
const ROUTER: &str = "fd00:98::1";

fn icmpv6_flow(token: Token) -> Flow {
    Flow {
        src: v6(ME),
        src_port: 77,
        dst: v6(PEER),
        dst_port: 0,
        mark: Mark::Icmp { token },
    }
}

#[test]
fn an_icmpv6_echo_routed_as_sent_is_found_by_its_token_not_rewritten() {
    let (ours, theirs) = (Token::random(), Token::random());
    let flow = icmpv6_flow(ours);
    let there = (v6(ME), v6(PEER));
    let back = (v6(PEER), v6(ME));
    let seen = observations(&[
        // A neighbour's echo with the same identifier, and its reply.
        frame(there, 58, &echo(128, 77, &theirs)),
        frame(back, 58, &echo(129, 77, &theirs)),
        // Neighbour discovery: ICMPv6, no echo.
        frame(there, 58, &[135, 0, 0, 0, 0, 0, 0, 0]),
        frame(there, 58, &echo(128, 77, &ours)),
        frame(back, 58, &echo(129, 77, &ours)),
    ]);
    let translation = seen.find(&flow).expect("the flow was seen");
    assert_eq!(
        translation,
        Translation {
            src: v6(ME),
            src_port: 77,
            rewritten: false,
            packets: 1,
            replies: 1,
        }
    );
    assert_eq!(seen.assert_not_translated(&flow), translation);
    let nat = std::panic::catch_unwind(|| seen.assert_translated(&flow, v6(ROUTER)));
    assert!(nat.is_err(), "an untranslated flow passed as translated");
    assert_eq!(seen.packets()[2].protocol, Protocol::Icmpv6(135));
    assert_eq!(
        seen.packets()[3].to_string(),
        "icmp6 type 128 fd00:99::2 > fd00:98::2"
    );
    assert_eq!(seen.find(&icmpv6_flow(Token::random())), None, "never sent");
}

#[test]
fn a_nat66_rewrite_is_found_like_a_nat44_one() {
    // Masquerade on the router: the far side sees the router's address,
    // and another identifier.
    let token = Token::random();
    let flow = icmpv6_flow(token);
    let seen = observations(&[
        frame((v6(ROUTER), v6(PEER)), 58, &echo(128, 5000, &token)),
        frame((v6(PEER), v6(ROUTER)), 58, &echo(129, 5000, &token)),
    ]);
    let translation = seen.assert_translated(&flow, v6(ROUTER));
    assert!(translation.rewritten);
    assert_eq!((translation.src_port, translation.replies), (5000, 1));
    assert_eq!(
        translation.to_string(),
        "seen from [fd00:98::1]:5000, rewritten (1 packets out, 1 replies)"
    );
    let routed = std::panic::catch_unwind(|| seen.assert_not_translated(&flow));
    assert!(routed.is_err(), "a translated flow passed as routed");
    let elsewhere = std::panic::catch_unwind(|| seen.assert_translated(&flow, v6("fd00:98::9")));
    assert!(
        elsewhere.is_err(),
        "translated to another address, yet it passed"
    );
}

#[test]
fn a_tcp_syn_over_ipv6_is_found_by_its_sequence_number_past_extension_headers() {
    let isn = 0x5eed;
    let flow = Flow {
        src: v6(ME),
        src_port: 61_000,
        dst: v6(PEER),
        dst_port: 8080,
        mark: Mark::Tcp { isn },
    };
    // Hop-by-hop options (8 bytes, next: destination options), then
    // destination options (16 bytes, next: TCP).
    let mut headers = vec![60, 0, 1, 4, 0, 0, 0, 0];
    headers.extend_from_slice(&[6, 1, 1, 12]);
    headers.extend_from_slice(&[0; 12]);
    let syn = segment(61_000, 8080, isn, 0, TcpFlags::SYN);
    let syn_ack = segment(8080, 61_000, 9, isn + 1, TcpFlags::SYN | TcpFlags::ACK);
    let other_syn = segment(61_001, 8080, isn + 7, 0, TcpFlags::SYN);
    // A later fragment: no transport header to read.
    let fragment = [6, 0, 0x05, 0xa8, 0, 0, 0, 1];
    let seen = observations(&[
        frame((v6(ME), v6(PEER)), 6, &other_syn),
        frame_with((v6(ME), v6(PEER)), 0, &headers, 6, &syn),
        frame((v6(PEER), v6(ME)), 6, &syn_ack),
        frame_with((v6(ME), v6(PEER)), 44, &fragment, 6, &syn),
    ]);
    let translation = seen.assert_not_translated(&flow);
    assert_eq!((translation.packets, translation.replies), (1, 1));
    assert_eq!(seen.packets()[1].dst_port, Some(8080));
    assert_eq!(seen.packets()[3].protocol, Protocol::Other(44));
    assert_eq!(
        seen.packets()[1].to_string(),
        "tcp [fd00:99::2]:61000 > [fd00:98::2]:8080"
    );
}

#[test]
fn udp_flows_of_both_families_are_found_by_their_token() {
    let v4 = |text: &str| IpAddr::V4(text.parse().unwrap());
    for (me, peer, public) in [
        (v4("10.200.0.2"), v4("198.18.0.2"), v4("198.18.0.1")),
        (v6(ME), v6(PEER), v6(ROUTER)),
    ] {
        let token = Token::random();
        let flow = Flow {
            src: me,
            src_port: 40_000,
            dst: peer,
            dst_port: 53,
            mark: Mark::Udp { token },
        };
        let mut datagram = vec![0u8; 8];
        datagram[..2].copy_from_slice(&40_001u16.to_be_bytes());
        datagram[2..4].copy_from_slice(&53u16.to_be_bytes());
        datagram.extend_from_slice(b"hello");
        datagram.extend_from_slice(token.as_bytes());
        let mut answer = datagram.clone();
        answer[..2].copy_from_slice(&53u16.to_be_bytes());
        answer[2..4].copy_from_slice(&40_001u16.to_be_bytes());
        let seen = observations(&[
            frame((public, peer), 17, &datagram),
            frame((peer, public), 17, &answer),
        ]);
        let translation = seen.assert_translated(&flow, public);
        assert_eq!((translation.src_port, translation.replies), (40_001, 1));
    }
}
