//! Unit tests of `wire`, for IPv4 and IPv6 alike; checksums are checked
//! against an independent sum written out here and against values
//! computed by hand (`v6`).

use super::*;
use pnet::packet::ipv4::MutableIpv4Packet;
use pnet::packet::ipv6::MutableIpv6Packet;
use rstest::rstest;
use std::net::{Ipv4Addr, Ipv6Addr};

mod v6;

/// A prober's address, its destination and a router between them.
#[derive(Clone, Copy, Debug)]
pub(super) struct Hosts {
    pub(super) me: IpAddr,
    pub(super) dst: IpAddr,
    pub(super) router: IpAddr,
    pub(super) elsewhere: IpAddr,
}

pub(super) const V4: Hosts = Hosts {
    me: IpAddr::V4(Ipv4Addr::new(10, 200, 0, 2)),
    dst: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
    router: IpAddr::V4(Ipv4Addr::new(10, 200, 0, 1)),
    elsewhere: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9)),
};

pub(super) const V6: Hosts = Hosts {
    me: IpAddr::V6(Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 2)),
    dst: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
    router: IpAddr::V6(Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 1)),
    elsewhere: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9)),
};

/// An ICMP (ICMPv6, by the family of `dst`) error of `kind` and `code`
/// quoting `transport`, sent from `src` to `dst` over `protocol`.
pub(super) fn error(
    (kind, code): (u8, u8),
    (src, dst): (IpAddr, IpAddr),
    protocol: IpNextHeaderProtocol,
    transport: &[u8],
) -> Vec<u8> {
    let mut quoted = match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let mut quoted = vec![0u8; 20];
            let mut ip = MutableIpv4Packet::new(&mut quoted).unwrap();
            ip.set_version(4);
            ip.set_header_length(5);
            ip.set_total_length(u16::try_from(20 + transport.len()).unwrap());
            ip.set_next_level_protocol(protocol);
            ip.set_source(src);
            ip.set_destination(dst);
            quoted
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let mut quoted = vec![0u8; 40];
            let mut ip = MutableIpv6Packet::new(&mut quoted).unwrap();
            ip.set_version(6);
            ip.set_payload_length(u16::try_from(transport.len()).unwrap());
            ip.set_next_header(protocol);
            ip.set_hop_limit(64);
            ip.set_source(src);
            ip.set_destination(dst);
            quoted
        }
        _ => panic!("mixed families"),
    };
    quoted.extend_from_slice(transport);
    let mut icmp = vec![kind, code, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&quoted);
    icmp
}

/// Destination unreachable and time exceeded, by family.
fn unreachable(hosts: Hosts) -> u8 {
    if hosts.dst.is_ipv6() { 1 } else { 3 }
}

fn time_exceeded(hosts: Hosts) -> u8 {
    if hosts.dst.is_ipv6() { 3 } else { 11 }
}

fn echo(hosts: Hosts, id: u16, seq: u16) -> [u8; ECHO_LEN] {
    let mut buf = [0u8; ECHO_LEN];
    echo_request(&mut buf, (hosts.me, hosts.dst), id, seq, &Token::random());
    buf
}

/// The 16-bit one's complement sum of `bytes` (padded to an even length).
pub(super) fn ones_complement_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The pseudo-header of RFC 9293 §3.1 (IPv4) or RFC 8200 §8.1 (IPv6),
/// written out field by field.
pub(super) fn pseudo_header(src: IpAddr, dst: IpAddr, protocol: u8, len: usize) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let mut header = [src.octets(), dst.octets()].concat();
            header.extend_from_slice(&[0, protocol]);
            header.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
            header
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let mut header = [src.octets(), dst.octets()].concat();
            header.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
            header.extend_from_slice(&[0, 0, 0, protocol]);
            header
        }
        _ => panic!("mixed families"),
    }
}

#[rstest]
#[case::v4(V4)]
#[case::v6(V6)]
fn an_echo_request_has_its_family_type_and_a_valid_checksum(#[case] hosts: Hosts) {
    let buf = echo(hosts, 7, 3);
    assert_eq!(buf[0], if hosts.dst.is_ipv6() { 128 } else { 8 });
    assert_eq!(&buf[4..8], &[0, 7, 0, 3]);
    // A valid checksum makes the sum over what it covers all ones: the
    // message alone for ICMP, with the pseudo-header for ICMPv6.
    let covered = match hosts.dst {
        IpAddr::V4(_) => buf.to_vec(),
        IpAddr::V6(_) => [
            pseudo_header(hosts.me, hosts.dst, 58, ECHO_LEN),
            buf.to_vec(),
        ]
        .concat(),
    };
    assert_eq!(ones_complement_sum(&covered), 0xffff);
}

#[rstest]
#[case::v4(V4)]
#[case::v6(V6)]
fn a_tcp_segment_has_a_valid_checksum_over_its_pseudo_header(#[case] hosts: Hosts) {
    let mut buf = [0u8; 20];
    let flags = TcpFlags::SYN;
    let segment = tcp_segment(&mut buf, (hosts.me, 61_000), (hosts.dst, 80), 41, 0, flags);
    let covered = [
        pseudo_header(hosts.me, hosts.dst, 6, 20),
        segment.packet().to_vec(),
    ]
    .concat();
    assert_eq!(ones_complement_sum(&covered), 0xffff);
    // Another destination, another checksum: the pseudo-header counts.
    let mut other = [0u8; 20];
    let moved = tcp_segment(
        &mut other,
        (hosts.me, 61_000),
        (hosts.elsewhere, 80),
        41,
        0,
        flags,
    );
    assert_ne!(moved.get_checksum(), segment.get_checksum());
}

#[rstest]
#[case::v4(V4)]
#[case::v6(V6)]
fn an_echo_reply_is_ours_only_with_our_identifier_and_from_the_destination(#[case] hosts: Hosts) {
    let mut reply = echo(hosts, 7, 3);
    reply[0] = Family::of(hosts.dst).echo_reply();
    let classify = |from, id| classify_icmp(&reply, from, hosts.dst, id);
    assert_eq!(classify(hosts.dst, 7), Some(IcmpAnswer::Reply(3)));
    assert_eq!(classify(hosts.dst, 8), None, "another probe's identifier");
    assert_eq!(classify(hosts.router, 7), None, "not from the destination");
    // Our own request is no reply.
    let request = echo(hosts, 7, 3);
    assert_eq!(classify_icmp(&request, hosts.dst, hosts.dst, 7), None);
}

#[rstest]
#[case::v4(V4, &[(0, Reason::NetworkUnreachable), (1, Reason::HostUnreachable), (3, Reason::PortUnreachable), (13, Reason::Prohibited), (4, Reason::Unreachable(4))])]
#[case::v6(V6, &[(0, Reason::NetworkUnreachable), (1, Reason::Prohibited), (3, Reason::HostUnreachable), (4, Reason::PortUnreachable), (5, Reason::Prohibited), (6, Reason::Prohibited), (2, Reason::Unreachable(2))])]
fn an_icmp_error_counts_only_when_it_quotes_our_echo(
    #[case] hosts: Hosts,
    #[case] codes: &[(u8, Reason)],
) {
    let request = echo(hosts, 7, 1);
    let icmp = Family::of(hosts.dst).icmp();
    let about =
        |kind, code, dst, transport: &[u8]| error((kind, code), (hosts.me, dst), icmp, transport);
    let classify = |message: &[u8], id| classify_icmp(message, hosts.router, hosts.dst, id);
    for &(code, reason) in codes {
        let message = about(unreachable(hosts), code, hosts.dst, &request);
        assert_eq!(
            classify(&message, 7),
            Some(IcmpAnswer::Error(reason)),
            "code {code}"
        );
    }
    let expired = about(time_exceeded(hosts), 0, hosts.dst, &request);
    assert_eq!(
        classify(&expired, 7),
        Some(IcmpAnswer::Error(Reason::TimeExceeded))
    );
    let message = about(unreachable(hosts), 1, hosts.dst, &request);
    assert_eq!(classify(&message, 8), None, "another probe's echo");
    let elsewhere = about(unreachable(hosts), 1, hosts.elsewhere, &request);
    assert_eq!(classify(&elsewhere, 7), None, "an echo to another host");
    let cut = about(unreachable(hosts), 1, hosts.dst, &request[..4]);
    assert_eq!(classify(&cut, 7), None, "too short to hold the identifier");
    let tcp = error(
        (unreachable(hosts), 1),
        (hosts.me, hosts.dst),
        IpNextHeaderProtocols::Tcp,
        &request,
    );
    assert_eq!(classify(&tcp, 7), None, "quotes a TCP segment");
}

#[rstest]
#[case::v4(V4)]
#[case::v6(V6)]
fn a_segment_answers_a_syn_only_from_its_destination_acknowledging_it(#[case] hosts: Hosts) {
    let flow = Flow {
        src: hosts.me,
        src_port: 61_000,
        dst: hosts.dst,
        dst_port: 80,
        mark: Mark::Tcp { isn: 41 },
    };
    let answer = |from, sport, dport, ack, flags| {
        let mut buf = [0u8; 20];
        let segment = tcp_segment(&mut buf, (from, sport), (flow.src, dport), 9, ack, flags);
        syn_answer(from, &segment.to_immutable(), &flow, 41)
    };
    let syn_ack = TcpFlags::SYN | TcpFlags::ACK;
    let reset = TcpFlags::RST | TcpFlags::ACK;
    let dst = hosts.dst;
    assert_eq!(
        answer(dst, 80, 61_000, 42, syn_ack),
        Some(SynAnswer::Accepted)
    );
    assert_eq!(answer(dst, 80, 61_000, 42, reset), Some(SynAnswer::Reset));
    assert_eq!(answer(dst, 80, 61_000, 43, syn_ack), None, "another SYN's");
    assert_eq!(answer(dst, 81, 61_000, 42, syn_ack), None, "another port");
    assert_eq!(answer(dst, 80, 61_001, 42, syn_ack), None, "another probe");
    assert_eq!(
        answer(hosts.router, 80, 61_000, 42, syn_ack),
        None,
        "another host"
    );
    assert_eq!(
        answer(dst, 80, 61_000, 42, TcpFlags::ACK),
        None,
        "a bare ACK"
    );
}

#[rstest]
#[case::v4(V4, 3)]
#[case::v6(V6, 4)]
fn an_icmp_error_about_tcp_must_quote_our_ports(
    #[case] hosts: Hosts,
    #[case] port_unreachable: u8,
) {
    let mut buf = [0u8; 20];
    let syn = tcp_segment(
        &mut buf,
        (hosts.me, 61_000),
        (hosts.dst, 80),
        1,
        0,
        TcpFlags::SYN,
    )
    .packet()
    .to_vec();
    let tcp = IpNextHeaderProtocols::Tcp;
    let kind = (unreachable(hosts), port_unreachable);
    let message = error(kind, (hosts.me, hosts.dst), tcp, &syn);
    let about = |dport, sport| icmp_error_about_tcp(&message, hosts.dst, dport, sport);
    assert_eq!(about(80, 61_000), Some(Reason::PortUnreachable));
    assert_eq!(about(81, 61_000), None);
    assert_eq!(about(80, 61_001), None);
    let expired = error((time_exceeded(hosts), 0), (hosts.me, hosts.dst), tcp, &syn);
    assert_eq!(
        icmp_error_about_tcp(&expired, hosts.dst, 80, 61_000),
        Some(Reason::TimeExceeded)
    );
    let other = error(
        kind,
        (hosts.me, hosts.dst),
        Family::of(hosts.dst).icmp(),
        &syn,
    );
    assert_eq!(icmp_error_about_tcp(&other, hosts.dst, 80, 61_000), None);
}

#[test]
fn an_ipv4_message_is_not_read_as_an_icmpv6_one() {
    // An ICMP echo reply (type 0) is no ICMPv6 echo reply (type 129), and
    // an ICMP destination unreachable (3) is an ICMPv6 time exceeded.
    let mut reply = echo(V4, 7, 3);
    reply[0] = 0;
    assert_eq!(classify_icmp(&reply, V6.dst, V6.dst, 7), None);
    let request = echo(V6, 7, 1);
    let v4_error = error(
        (3, 1),
        (V4.me, V4.dst),
        IpNextHeaderProtocols::Icmp,
        &request,
    );
    assert_eq!(classify_icmp(&v4_error, V6.router, V6.dst, 7), None);
}

#[test]
fn an_ipv4_raw_read_loses_its_header_and_an_ipv6_one_has_none() {
    let mut datagram = vec![0u8; 24];
    let mut ip = MutableIpv4Packet::new(&mut datagram).unwrap();
    ip.set_version(4);
    ip.set_header_length(5);
    ip.set_total_length(24);
    datagram[20..].copy_from_slice(&[1, 2, 3, 4]);
    assert_eq!(
        family::payload_of(Family::V4, &datagram),
        Some(&[1, 2, 3, 4][..])
    );
    // A header longer than the datagram: nothing to read.
    datagram[0] = 0x4f;
    assert_eq!(family::payload_of(Family::V4, &datagram), None);
    assert_eq!(
        family::payload_of(Family::V6, &datagram[20..]),
        Some(&[1, 2, 3, 4][..])
    );
}
