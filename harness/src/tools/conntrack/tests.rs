//! Unit tests of `conntrack`: replies as the kernel writes them,
//! serialized and parsed back.

use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(text: &str) -> IpAddr {
    IpAddr::V6(text.parse::<Ipv6Addr>().unwrap())
}

/// A tuple nest as the kernel writes it (`ctnetlink_dump_tuples`).
fn tuple_nest(t: &Tuple) -> Vec<TupleAttribute> {
    let mut proto = vec![ProtoTuple::Protocol(Protocol::from(t.protocol))];
    match t.ports {
        Ports::Ports { src, dst } => {
            proto.push(ProtoTuple::SourcePort(src));
            proto.push(ProtoTuple::DestinationPort(dst));
        }
        Ports::Icmp { id, kind, code } => {
            let (id_nla, type_nla, code_nla) = match t.src {
                IpAddr::V4(_) => (CTA_PROTO_ICMP_ID, CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE),
                IpAddr::V6(_) => (
                    CTA_PROTO_ICMPV6_ID,
                    CTA_PROTO_ICMPV6_TYPE,
                    CTA_PROTO_ICMPV6_CODE,
                ),
            };
            let nla = |kind, value| ProtoTuple::Other(DefaultNla::new(kind, value));
            proto.push(nla(id_nla, id.to_be_bytes().to_vec()));
            proto.push(nla(type_nla, vec![kind]));
            proto.push(nla(code_nla, vec![code]));
        }
        Ports::None => {}
    }
    vec![
        TupleAttribute::Ip(vec![
            IPTuple::SourceAddress(t.src),
            IPTuple::DestinationAddress(t.dst),
        ]),
        TupleAttribute::Proto(proto),
    ]
}

/// The reply the kernel sends for an entry, serialized and parsed back.
fn reply_of(original: &Tuple, reply: &Tuple, status: Status) -> NetfilterMessage {
    let family = match original.src {
        IpAddr::V4(_) => NetfilterProtoFamily::IPv4,
        IpAddr::V6(_) => NetfilterProtoFamily::IPv6,
    };
    let header = NetfilterHeader::new(family, NFNETLINK_V0, 0);
    let message = NetfilterMessage::new(
        header,
        ConntrackMessage::New(vec![
            ConntrackAttribute::CtaTupleOrig(tuple_nest(original)),
            ConntrackAttribute::CtaTupleReply(tuple_nest(reply)),
            ConntrackAttribute::CtaStatus(status),
        ]),
    );
    let bytes = crate::kernel::netlink::bytes_of(request(message, 0));
    match netlink_packet_core::NetlinkMessage::<NetfilterMessage>::deserialize(&bytes)
        .unwrap()
        .payload
    {
        netlink_packet_core::NetlinkPayload::InnerMessage(m) => m,
        other => panic!("not a netfilter message: {other:?}"),
    }
}

#[test]
fn the_dump_request_asks_for_entries_of_every_family() {
    let bytes = crate::kernel::netlink::bytes_of(dump_request());
    let message =
        netlink_packet_core::NetlinkMessage::<NetfilterMessage>::deserialize(&bytes).unwrap();
    assert_eq!(message.header.flags & NLM_F_DUMP, NLM_F_DUMP);
    let netlink_packet_core::NetlinkPayload::InnerMessage(get) = message.payload else {
        panic!("not a netfilter message");
    };
    assert_eq!(get.header.family, NetfilterProtoFamily::Unspec);
    assert_eq!(get.inner, ConntrackMessage::Get(Vec::new()).into());
}

#[test]
fn an_icmp_entry_is_read_back_with_its_identifier() {
    let original = Tuple {
        protocol: 1,
        src: v4(10, 200, 0, 2),
        dst: v4(198, 18, 0, 2),
        ports: Ports::Icmp {
            id: 4242,
            kind: 8,
            code: 0,
        },
    };
    let reply = Tuple {
        src: original.dst,
        dst: v4(198, 18, 0, 1),
        ports: Ports::Icmp {
            id: 4242,
            kind: 0,
            code: 0,
        },
        ..original
    };
    let entry = entry(&reply_of(&original, &reply, Status::Confirmed)).expect("an entry");
    assert_eq!((entry.original, entry.reply), (original, reply));
    assert!(!entry.is_source_nat());
    assert_eq!(entry.translated_source(), (reply.dst, 4242));
}

#[test]
fn an_entry_is_read_back_with_both_tuples_and_its_translation() {
    let original = Tuple {
        protocol: 17,
        src: v4(10, 200, 0, 2),
        dst: v4(198, 18, 0, 2),
        ports: Ports::Ports {
            src: 40000,
            dst: 53,
        },
    };
    let reply = Tuple {
        protocol: 17,
        src: original.dst,
        dst: v4(198, 18, 0, 1),
        ports: Ports::Ports {
            src: 53,
            dst: 40001,
        },
    };
    let status = Status::from_bits_retain(0x1be);
    let entry = entry(&reply_of(&original, &reply, status)).expect("an entry");
    assert_eq!((entry.original, entry.reply), (original, reply));
    assert!(entry.is_source_nat());
    assert_eq!(entry.translated_source(), (v4(198, 18, 0, 1), 40001));
    let token = crate::tools::probe::Token::random();
    let flow = Flow {
        src: original.src,
        src_port: 40000,
        dst: original.dst,
        dst_port: 53,
        mark: Mark::Udp { token },
    };
    assert!(entry.is_of(&flow));
    assert!(!entry.is_of(&Flow {
        src_port: 40001,
        ..flow
    }));
    assert_eq!(
        entry.to_string(),
        "udp src=10.200.0.2 dst=198.18.0.2 sport=40000 dport=53 \
         src=198.18.0.2 dst=198.18.0.1 sport=53 dport=40001"
    );
}

#[test]
fn an_icmpv6_entry_is_read_back_with_its_identifier_and_matches_its_flow() {
    let original = Tuple {
        protocol: 58,
        src: v6("fd00:99::2"),
        dst: v6("2001:db8::2"),
        ports: Ports::Icmp {
            id: 4242,
            kind: 128,
            code: 0,
        },
    };
    let reply = Tuple {
        src: original.dst,
        dst: original.src,
        ports: Ports::Icmp {
            id: 4242,
            kind: 129,
            code: 0,
        },
        ..original
    };
    let entry = entry(&reply_of(&original, &reply, Status::Confirmed)).expect("an entry");
    assert_eq!((entry.original, entry.reply), (original, reply));
    // Routed, not translated: the answers go back to the original source.
    assert!(!entry.is_source_nat());
    assert_eq!(entry.translated_source(), (original.src, 4242));
    let flow = Flow {
        src: original.src,
        src_port: 4242,
        dst: original.dst,
        dst_port: 0,
        mark: Mark::Icmp {
            token: crate::tools::probe::Token::random(),
        },
    };
    assert!(entry.is_of(&flow));
    assert!(!entry.is_of(&Flow {
        src_port: 4243,
        ..flow
    }));
    // The same identifier and addresses over ICMP would be another entry.
    let mut icmp = entry;
    icmp.original.protocol = 1;
    assert!(!icmp.is_of(&flow));
    assert_eq!(
        entry.to_string(),
        "icmpv6 src=fd00:99::2 dst=2001:db8::2 type=128 code=0 id=4242 \
         src=2001:db8::2 dst=fd00:99::2 type=129 code=0 id=4242"
    );
}

#[test]
fn a_nat66_entry_shows_the_translated_ipv6_source() {
    let original = Tuple {
        protocol: 6,
        src: v6("fd00:99::2"),
        dst: v6("fd00:98::2"),
        ports: Ports::Ports {
            src: 61000,
            dst: 8080,
        },
    };
    let reply = Tuple {
        protocol: 6,
        src: original.dst,
        dst: v6("fd00:98::1"),
        ports: Ports::Ports {
            src: 8080,
            dst: 61000,
        },
    };
    let entry = entry(&reply_of(
        &original,
        &reply,
        Status::from_bits_retain(0x1be),
    ))
    .expect("an entry");
    assert!(entry.is_source_nat());
    assert_eq!(entry.translated_source(), (v6("fd00:98::1"), 61000));
    let table = Table {
        entries: vec![entry],
    };
    let flow = Flow {
        src: original.src,
        src_port: 61000,
        dst: original.dst,
        dst_port: 8080,
        mark: Mark::Tcp { isn: 7 },
    };
    assert_eq!(table.assert_translated(&flow, v6("fd00:98::1")), &entry);
    let wrong = std::panic::catch_unwind(|| {
        table.assert_translated(&flow, v6("fd00:98::9"));
    });
    assert!(
        wrong.is_err(),
        "translated to another address, yet it passed"
    );
}
