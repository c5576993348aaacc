//! IPv6 packets with checksums computed by hand, outside this crate and
//! pnet: the one's complement sum of the RFC 8200 §8.1 pseudo-header
//! (source, destination, upper-layer length as 32 bits, 3 zero bytes,
//! next header) and the message, its checksum field zero.

use super::*;

const ME: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 2);
const PEER: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 3);

#[test]
fn an_icmpv6_echo_request_has_the_checksum_computed_by_hand() {
    // fd00:99::2 > fd00:99::3, type 128, id 7, seq 3, payload 00 01 … 0f:
    // words fd00+0099+0002 (twice, +0003), length 0018, next header 003a,
    // message 8000+0007+0003+0001+0203+…+0e0f; folded and inverted: 4c2a.
    let token = Token::from_bytes(std::array::from_fn(|i| i as u8));
    let mut buf = [0u8; ECHO_LEN];
    let packet = echo_request(&mut buf, (ME.into(), PEER.into()), 7, 3, &token);
    assert_eq!(&packet[..8], &[128, 0, 0x4c, 0x2a, 0, 7, 0, 3]);
    assert_eq!(&packet[8..], token.as_bytes());
}

#[test]
fn a_tcp_syn_over_ipv6_has_the_checksum_computed_by_hand() {
    // fd00:99::2 port 61000 > fd00:99::3 port 8080, seq 01020304, SYN,
    // window 64240, length 20, next header 6: checksum a7da.
    let mut buf = [0u8; 20];
    let segment = tcp_segment(
        &mut buf,
        (ME.into(), 61_000),
        (PEER.into(), 8080),
        0x0102_0304,
        0,
        TcpFlags::SYN,
    );
    assert_eq!(segment.get_checksum(), 0xa7da);
    assert_eq!(
        segment.packet(),
        [
            0xee, 0x48, 0x1f, 0x90, 1, 2, 3, 4, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0xa7, 0xda, 0,
            0
        ]
    );
}

#[test]
fn a_checksum_mismatch_would_be_seen() {
    // The same SYN with the peer's address one bit off sums differently:
    // the hand-computed value above is not a constant of the builder.
    let mut buf = [0u8; 20];
    let other = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 7);
    let segment = tcp_segment(
        &mut buf,
        (ME.into(), 61_000),
        (other.into(), 8080),
        0x0102_0304,
        0,
        TcpFlags::SYN,
    );
    assert_ne!(segment.get_checksum(), 0xa7da);
    let covered = [
        pseudo_header(ME.into(), other.into(), 6, 20),
        segment.packet().to_vec(),
    ]
    .concat();
    assert_eq!(ones_complement_sum(&covered), 0xffff);
}
