//! Unit tests of `wire`.

use super::*;
use pnet::packet::ipv4::MutableIpv4Packet;

pub(super) const DST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub(super) const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);

/// An ICMP error of `code` from the router quoting `transport` sent to
/// `dst` over `protocol`.
pub(super) fn unreachable(code: u8, dst: Ipv4Addr, protocol: u8, transport: &[u8]) -> Vec<u8> {
    let mut quoted = vec![0u8; 20 + transport.len()];
    let mut ip = MutableIpv4Packet::new(&mut quoted).unwrap();
    ip.set_version(4);
    ip.set_header_length(5);
    ip.set_total_length(u16::try_from(20 + transport.len()).unwrap());
    ip.set_next_level_protocol(IpNextHeaderProtocol(protocol));
    ip.set_source(Ipv4Addr::new(10, 200, 0, 2));
    ip.set_destination(dst);
    quoted[20..].copy_from_slice(transport);
    let mut icmp = vec![IcmpTypes::DestinationUnreachable.0, code, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&quoted);
    icmp
}

pub(super) fn classify(bytes: &[u8], from: Ipv4Addr, id: u16) -> Option<IcmpAnswer> {
    classify_icmp(&IcmpPacket::new(bytes).unwrap(), IpAddr::V4(from), DST, id)
}

#[test]
pub(super) fn an_echo_reply_is_ours_only_with_our_identifier_and_from_the_destination() {
    let mut buf = [0u8; ECHO_LEN];
    echo_request(&mut buf, 7, 3, &Token::random());
    buf[0] = IcmpTypes::EchoReply.0;
    assert!(matches!(classify(&buf, DST, 7), Some(IcmpAnswer::Reply(3))));
    assert!(
        classify(&buf, DST, 8).is_none(),
        "another probe's identifier"
    );
    assert!(
        classify(&buf, ROUTER, 7).is_none(),
        "not from the destination"
    );
}

#[test]
pub(super) fn an_icmp_error_counts_only_when_it_quotes_our_echo() {
    let mut echo = [0u8; ECHO_LEN];
    echo_request(&mut echo, 7, 1, &Token::random());
    let icmp = IpNextHeaderProtocols::Icmp.0;
    for (code, reason) in [
        (0, Reason::NetworkUnreachable),
        (1, Reason::HostUnreachable),
        (13, Reason::Prohibited),
        (4, Reason::Unreachable(4)),
    ] {
        let error = unreachable(code, DST, icmp, &echo);
        match classify(&error, ROUTER, 7) {
            Some(IcmpAnswer::Error(got)) => assert_eq!(got, reason),
            _ => panic!("code {code} not classified"),
        }
    }
    assert!(classify(&unreachable(1, DST, icmp, &echo), ROUTER, 8).is_none());
    let elsewhere = Ipv4Addr::new(198, 18, 0, 9);
    assert!(classify(&unreachable(1, elsewhere, icmp, &echo), ROUTER, 7).is_none());
    assert!(classify(&unreachable(1, DST, icmp, &echo[..4]), ROUTER, 7).is_none());
}

#[test]
pub(super) fn a_segment_answers_a_syn_only_from_its_destination_acknowledging_it() {
    let flow = Flow {
        src: Ipv4Addr::new(10, 200, 0, 2),
        src_port: 61_000,
        dst: DST,
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
    assert_eq!(
        answer(DST, 80, 61_000, 42, syn_ack),
        Some(SynAnswer::Accepted)
    );
    assert_eq!(answer(DST, 80, 61_000, 42, reset), Some(SynAnswer::Reset));
    assert_eq!(answer(DST, 80, 61_000, 43, syn_ack), None, "another SYN's");
    assert_eq!(answer(DST, 81, 61_000, 42, syn_ack), None, "another port");
    assert_eq!(answer(DST, 80, 61_001, 42, syn_ack), None, "another probe");
    assert_eq!(
        answer(ROUTER, 80, 61_000, 42, syn_ack),
        None,
        "another host"
    );
    assert_eq!(
        answer(DST, 80, 61_000, 42, TcpFlags::ACK),
        None,
        "a bare ACK"
    );
}

#[test]
pub(super) fn an_icmp_error_about_tcp_must_quote_our_ports() {
    let mut buf = [0u8; 20];
    let syn = tcp_segment(
        &mut buf,
        (Ipv4Addr::new(10, 200, 0, 2), 61_000),
        (DST, 80),
        1,
        0,
        TcpFlags::SYN,
    )
    .packet()
    .to_vec();
    let tcp = IpNextHeaderProtocols::Tcp.0;
    let error = unreachable(3, DST, tcp, &syn);
    let packet = IcmpPacket::new(&error).unwrap();
    assert_eq!(icmp_error_about_tcp(&packet, DST, 80, 61_000), Some(3));
    assert_eq!(icmp_error_about_tcp(&packet, DST, 81, 61_000), None);
    assert_eq!(icmp_error_about_tcp(&packet, DST, 80, 61_001), None);
    let icmp = IpNextHeaderProtocols::Icmp.0;
    let other = unreachable(3, DST, icmp, &syn);
    assert_eq!(
        icmp_error_about_tcp(&IcmpPacket::new(&other).unwrap(), DST, 80, 61_000),
        None
    );
}
