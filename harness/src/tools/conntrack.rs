//! The NAT's connection-tracking table, read over netlink (ctnetlink,
//! `NETLINK_NETFILTER`) in the lab namespace: what `conntrack -L` lists.
//!
//! An entry's original tuple is the flow as the container sent it; its
//! reply tuple is what the far side answers to, so its destination is the
//! translated source. [`Table::find`] finds the entry of a probe's
//! [`Flow`] by its original tuple, which is unique in the table: a second,
//! independent witness of the NAT next to a capture
//! ([`Observations::find`](crate::tools::capture::Observations::find)).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::BorrowedFd;

use netlink_packet_core::{DefaultNla, NLA_TYPE_MASK, NLM_F_DUMP, Nla, parse_u8, parse_u16_be};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Status,
    Tuple as TupleAttribute,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};

use crate::common::error::{Error, Result};
use crate::kernel::netlink::{Refusal, Socket, request};
use crate::kernel::netns;
use crate::tools::probe::{Flow, Mark};

/// `NFNETLINK_V0`
const NFNETLINK_V0: u8 = 0;

/// The ICMP attributes of `enum ctattr_l4proto`, which
/// `netlink-packet-netfilter` leaves untyped.
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;

/// The ports of a [`Tuple`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ports {
    /// TCP, UDP and other protocols with ports.
    Ports {
        /// The source port.
        src: u16,
        /// The destination port.
        dst: u16,
    },
    /// ICMP: the echo identifier, type and code.
    Icmp {
        /// The identifier.
        id: u16,
        /// The type (8 for an echo request in the original direction).
        kind: u8,
        /// The code.
        code: u8,
    },
    /// A protocol that conntrack tracks by addresses only.
    None,
}

/// One direction of a tracked connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// The IP protocol number.
    pub protocol: u8,
    /// The source address.
    pub src: Ipv4Addr,
    /// The destination address.
    pub dst: Ipv4Addr,
    /// Ports, or ICMP identifier.
    pub ports: Ports,
}

impl fmt::Display for Tuple {
    /// As `conntrack -L` prints a tuple.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "src={} dst={}", self.src, self.dst)?;
        match self.ports {
            Ports::Ports { src, dst } => write!(f, " sport={src} dport={dst}"),
            Ports::Icmp { id, kind, code } => write!(f, " type={kind} code={code} id={id}"),
            Ports::None => Ok(()),
        }
    }
}

/// One entry of the connection-tracking table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The connection as its initiator sent it.
    pub original: Tuple,
    /// The connection as its answers travel: its destination is the
    /// original source after NAT.
    pub reply: Tuple,
    /// The `IPS_*` status bits.
    pub status: u32,
}

impl Entry {
    /// The original source as translated by the NAT (the reply tuple's
    /// destination): address and port, or ICMP identifier.
    pub fn translated_source(&self) -> (Ipv4Addr, u16) {
        let port = match self.reply.ports {
            Ports::Ports { dst, .. } => dst,
            Ports::Icmp { id, .. } => id,
            Ports::None => 0,
        };
        (self.reply.dst, port)
    }

    /// Whether the NAT rewrites the entry's source (`IPS_SRC_NAT`).
    pub fn is_source_nat(&self) -> bool {
        Status::from_bits_retain(self.status).contains(Status::SrcNat)
    }

    /// Whether the entry is the one `flow` made: its original tuple is the
    /// flow's protocol, addresses and ports (ICMP: identifier).
    pub fn is_of(&self, flow: &Flow) -> bool {
        let o = &self.original;
        let ports = match (o.ports, flow.mark) {
            (Ports::Icmp { id, .. }, Mark::Icmp { .. }) => id == flow.src_port,
            (Ports::Ports { src, dst }, Mark::Tcp { .. } | Mark::Udp { .. }) => {
                (src, dst) == (flow.src_port, flow.dst_port)
            }
            _ => false,
        };
        o.protocol == flow.protocol() && o.src == flow.src && o.dst == flow.dst && ports
    }
}

impl fmt::Display for Entry {
    /// As `conntrack -L` prints an entry (protocol, both tuples).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.original.protocol {
            1 => "icmp".to_owned(),
            6 => "tcp".to_owned(),
            17 => "udp".to_owned(),
            n => format!("proto {n}"),
        };
        write!(f, "{name} {} {}", self.original, self.reply)
    }
}

/// The IPv4 entries of a namespace's connection-tracking table, as read
/// at one moment (`conntrack -L -f ipv4`).
#[derive(Clone, Debug)]
pub struct Table {
    entries: Vec<Entry>,
}

impl Table {
    /// Reads the table of the network namespace `netns`, normally the lab
    /// namespace where the NAT is ([`Lab::lab_netns`](crate::Lab::lab_netns));
    /// the caller stays in its own namespace.
    ///
    /// ```no_run
    /// use netns_harness::conntrack::Table;
    /// use netns_harness::probe::{ProbeOptions, Prober};
    /// use netns_harness::prelude::*;
    ///
    /// #[netns_test]
    /// fn the_nat_tracks_my_echo(net: Net) {
    ///     let sent = Prober::here()
    ///         .icmp_flow(net.outside_addr(), ProbeOptions::default())
    ///         .unwrap();
    ///     let table = Table::read(net.lab().lab_netns()).unwrap();
    ///     table.assert_translated(&sent.flow, net.public_addr());
    /// }
    /// ```
    pub fn read(netns: BorrowedFd<'_>) -> Result<Table> {
        let operation = "list the connection-tracking table (conntrack -L -f ipv4)";
        let mut socket = netns::run_in(netns, || {
            Socket::open(libc::NETLINK_NETFILTER).map_err(|e| {
                Error::os(
                    "open a netfilter netlink socket in the lab namespace".to_owned(),
                    e,
                )
            })
        })?;
        let replies = socket
            .dump(dump_request())
            .map_err(|Refusal { error, message }| Error::Netlink {
                operation: operation.to_owned(),
                namespace: "lab",
                source: error,
                kernel_message: message,
            })?;
        Ok(Table {
            entries: replies.iter().filter_map(entry).collect(),
        })
    }

    /// Every entry.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry `flow` made, if the table has it.
    pub fn find(&self, flow: &Flow) -> Option<&Entry> {
        self.entries.iter().find(|e| e.is_of(flow))
    }

    /// Asserts that the table tracks `flow` with its source translated to
    /// `public`; returns its entry.
    ///
    /// # Panics
    /// Naming the flow and listing the table, when the flow has no entry,
    /// or an entry without source NAT or translated to another address.
    #[track_caller]
    pub fn assert_translated(&self, flow: &Flow, public: Ipv4Addr) -> &Entry {
        let Some(entry) = self.find(flow) else {
            panic!("the flow {flow} has no conntrack entry; {self}");
        };
        let (src, _) = entry.translated_source();
        assert!(
            entry.is_source_nat() && src == public,
            "the flow {flow} is tracked as {entry}, not translated to {public}; {self}"
        );
        entry
    }
}

impl fmt::Display for Table {
    /// The entries, one a line (at most the last 40).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const LISTED: usize = 40;
        if self.entries.is_empty() {
            return f.write_str("the conntrack table is empty");
        }
        let skipped = self.entries.len().saturating_sub(LISTED);
        write!(f, "conntrack table ({} entries", self.entries.len())?;
        if skipped > 0 {
            write!(f, ", the last {LISTED}")?;
        }
        f.write_str("):")?;
        self.entries[skipped..]
            .iter()
            .try_for_each(|e| write!(f, "\n  {e}"))
    }
}

/// `conntrack -L -f ipv4`: the `IPCTNL_MSG_CT_GET` dump request.
fn dump_request() -> netlink_packet_core::NetlinkMessage<NetfilterMessage> {
    let header = NetfilterHeader::new(NetfilterProtoFamily::IPv4, NFNETLINK_V0, 0);
    request(
        NetfilterMessage::new(header, ConntrackMessage::Get(Vec::new())),
        NLM_F_DUMP,
    )
}

/// An entry from an `IPCTNL_MSG_CT_NEW` reply; `None` for anything but
/// IPv4.
fn entry(reply: &NetfilterMessage) -> Option<Entry> {
    let NetfilterMessageInner::Conntrack(ConntrackMessage::New(attributes)) = &reply.inner else {
        return None;
    };
    let (mut original, mut reply, mut status) = (None, None, 0);
    for attribute in attributes {
        match attribute {
            ConntrackAttribute::CtaTupleOrig(t) => original = tuple(t),
            ConntrackAttribute::CtaTupleReply(t) => reply = tuple(t),
            ConntrackAttribute::CtaStatus(s) => status = s.bits(),
            _ => {}
        }
    }
    Some(Entry {
        original: original?,
        reply: reply?,
        status,
    })
}

/// The value of an attribute `netlink-packet-netfilter` leaves untyped.
fn value_of(attribute: &DefaultNla) -> Vec<u8> {
    let mut value = vec![0; attribute.value_len()];
    attribute.emit_value(&mut value);
    value
}

/// A tuple from the attributes of a `CTA_TUPLE_*` nest.
fn tuple(nest: &[TupleAttribute]) -> Option<Tuple> {
    let (mut src, mut dst, mut protocol) = (None, None, None);
    let (mut sport, mut dport) = (None, None);
    let (mut id, mut kind, mut code) = (None, None, None);
    for attribute in nest {
        match attribute {
            TupleAttribute::Ip(ip) => {
                for attribute in ip {
                    match attribute {
                        IPTuple::SourceAddress(IpAddr::V4(addr)) => src = Some(*addr),
                        IPTuple::DestinationAddress(IpAddr::V4(addr)) => dst = Some(*addr),
                        _ => {}
                    }
                }
            }
            TupleAttribute::Proto(proto) => {
                for attribute in proto {
                    match attribute {
                        ProtoTuple::Protocol(p) => protocol = Some(u8::from(*p)),
                        ProtoTuple::SourcePort(port) => sport = Some(*port),
                        ProtoTuple::DestinationPort(port) => dport = Some(*port),
                        ProtoTuple::Other(nla) => {
                            let value = value_of(nla);
                            match nla.kind() & NLA_TYPE_MASK {
                                CTA_PROTO_ICMP_ID => id = parse_u16_be(&value).ok(),
                                CTA_PROTO_ICMP_TYPE => kind = parse_u8(&value).ok(),
                                CTA_PROTO_ICMP_CODE => code = parse_u8(&value).ok(),
                                _ => {}
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let protocol = protocol?;
    let ports = match (Protocol::from(protocol), sport, dport, id) {
        (Protocol::Icmp, _, _, Some(id)) => Ports::Icmp {
            id,
            kind: kind.unwrap_or(0),
            code: code.unwrap_or(0),
        },
        (_, Some(src), Some(dst), _) => Ports::Ports { src, dst },
        _ => Ports::None,
    };
    Some(Tuple {
        protocol,
        src: src?,
        dst: dst?,
        ports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tuple nest as the kernel writes it (`ctnetlink_dump_tuples`).
    fn tuple_nest(t: &Tuple) -> Vec<TupleAttribute> {
        let mut proto = vec![ProtoTuple::Protocol(Protocol::from(t.protocol))];
        match t.ports {
            Ports::Ports { src, dst } => {
                proto.push(ProtoTuple::SourcePort(src));
                proto.push(ProtoTuple::DestinationPort(dst));
            }
            Ports::Icmp { id, kind, code } => {
                proto.push(ProtoTuple::Other(DefaultNla::new(
                    CTA_PROTO_ICMP_ID,
                    id.to_be_bytes().to_vec(),
                )));
                proto.push(ProtoTuple::Other(DefaultNla::new(
                    CTA_PROTO_ICMP_TYPE,
                    vec![kind],
                )));
                proto.push(ProtoTuple::Other(DefaultNla::new(
                    CTA_PROTO_ICMP_CODE,
                    vec![code],
                )));
            }
            Ports::None => {}
        }
        vec![
            TupleAttribute::Ip(vec![
                IPTuple::SourceAddress(IpAddr::V4(t.src)),
                IPTuple::DestinationAddress(IpAddr::V4(t.dst)),
            ]),
            TupleAttribute::Proto(proto),
        ]
    }

    /// The reply the kernel sends for an entry, serialized and parsed back.
    fn reply_of(original: &Tuple, reply: &Tuple, status: Status) -> NetfilterMessage {
        let header = NetfilterHeader::new(NetfilterProtoFamily::IPv4, NFNETLINK_V0, 0);
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
    fn the_dump_request_asks_for_ipv4_entries() {
        let bytes = crate::kernel::netlink::bytes_of(dump_request());
        let message =
            netlink_packet_core::NetlinkMessage::<NetfilterMessage>::deserialize(&bytes).unwrap();
        assert_eq!(message.header.flags & NLM_F_DUMP, NLM_F_DUMP);
        let netlink_packet_core::NetlinkPayload::InnerMessage(get) = message.payload else {
            panic!("not a netfilter message");
        };
        assert_eq!(get.header.family, NetfilterProtoFamily::IPv4);
        assert_eq!(get.inner, ConntrackMessage::Get(Vec::new()).into());
    }

    #[test]
    fn an_icmp_entry_is_read_back_with_its_identifier() {
        let original = Tuple {
            protocol: 1,
            src: Ipv4Addr::new(10, 200, 0, 2),
            dst: Ipv4Addr::new(198, 18, 0, 2),
            ports: Ports::Icmp {
                id: 4242,
                kind: 8,
                code: 0,
            },
        };
        let reply = Tuple {
            src: original.dst,
            dst: Ipv4Addr::new(198, 18, 0, 1),
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
            src: Ipv4Addr::new(10, 200, 0, 2),
            dst: Ipv4Addr::new(198, 18, 0, 2),
            ports: Ports::Ports {
                src: 40000,
                dst: 53,
            },
        };
        let reply = Tuple {
            protocol: 17,
            src: original.dst,
            dst: Ipv4Addr::new(198, 18, 0, 1),
            ports: Ports::Ports {
                src: 53,
                dst: 40001,
            },
        };
        let status = Status::from_bits_retain(0x1be);
        let entry = entry(&reply_of(&original, &reply, status)).expect("an entry");
        assert_eq!((entry.original, entry.reply), (original, reply));
        assert!(entry.is_source_nat());
        assert_eq!(
            entry.translated_source(),
            (Ipv4Addr::new(198, 18, 0, 1), 40001)
        );
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
}
