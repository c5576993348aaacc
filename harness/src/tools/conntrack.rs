//! The NAT's connection-tracking table, read over netlink (ctnetlink,
//! `NETLINK_NETFILTER`) in the lab namespace: what `conntrack -L` lists,
//! IPv4 and IPv6 entries alike.
//!
//! An entry's original tuple is the flow as the container sent it; its
//! reply tuple is what the far side answers to, so its destination is the
//! translated source. [`Table::find`] finds the entry of a probe's
//! [`Flow`] by its original tuple, which is unique in the table: a second,
//! independent witness of the NAT next to a capture
//! ([`Observations::find`](crate::tools::capture::Observations::find)).

use std::fmt;
use std::net::IpAddr;
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

/// The ICMP and ICMPv6 attributes of `enum ctattr_l4proto`, which
/// `netlink-packet-netfilter` leaves untyped.
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;

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
    /// ICMP or ICMPv6: the echo identifier, type and code.
    Icmp {
        /// The identifier.
        id: u16,
        /// The type (8 for an echo request in the original direction, 128
        /// for an ICMPv6 one).
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
    /// The source address, IPv4 or IPv6.
    pub src: IpAddr,
    /// The destination address, of the same family.
    pub dst: IpAddr,
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
    pub fn translated_source(&self) -> (IpAddr, u16) {
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
    /// flow's protocol, addresses and ports (ICMP, ICMPv6: identifier).
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
            58 => "icmpv6".to_owned(),
            6 => "tcp".to_owned(),
            17 => "udp".to_owned(),
            n => format!("proto {n}"),
        };
        write!(f, "{name} {} {}", self.original, self.reply)
    }
}

/// The IPv4 and IPv6 entries of a namespace's connection-tracking table,
/// as read at one moment (`conntrack -L -f ipv4` and `conntrack -L -f
/// ipv6`).
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
        let operation = "list the connection-tracking table (conntrack -L)";
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
    /// `public` (NAT44, or NAT66 for an IPv6 flow); returns its entry.
    ///
    /// # Panics
    /// Naming the flow and listing the table, when the flow has no entry,
    /// or an entry without source NAT or translated to another address.
    #[track_caller]
    pub fn assert_translated(&self, flow: &Flow, public: impl Into<IpAddr>) -> &Entry {
        let public = public.into();
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

/// `conntrack -L`: the `IPCTNL_MSG_CT_GET` dump request, for every family
/// (`AF_UNSPEC`: IPv4 and IPv6).
fn dump_request() -> netlink_packet_core::NetlinkMessage<NetfilterMessage> {
    let header = NetfilterHeader::new(NetfilterProtoFamily::Unspec, NFNETLINK_V0, 0);
    request(
        NetfilterMessage::new(header, ConntrackMessage::Get(Vec::new())),
        NLM_F_DUMP,
    )
}

/// An entry from an `IPCTNL_MSG_CT_NEW` reply; `None` for anything but an
/// IPv4 or IPv6 connection.
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
                        IPTuple::SourceAddress(addr) => src = Some(*addr),
                        IPTuple::DestinationAddress(addr) => dst = Some(*addr),
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
                                CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => {
                                    id = parse_u16_be(&value).ok();
                                }
                                CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMPV6_TYPE => {
                                    kind = parse_u8(&value).ok();
                                }
                                CTA_PROTO_ICMP_CODE | CTA_PROTO_ICMPV6_CODE => {
                                    code = parse_u8(&value).ok();
                                }
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
        (Protocol::Icmp | Protocol::Ipv6Icmp, _, _, Some(id)) => Ports::Icmp {
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
mod tests;
