//! A router namespace that translates like a NAT of a given RFC 4787
//! behaviour ([`Nat`]): one nf_tables table, installed over netlink in one
//! transaction, plus the router's conntrack UDP timeouts.
//!
//! # What the router does
//!
//! A host's endpoint gets a public port chosen by a hash, not by the
//! kernel's search for a free port: `jhash` (Bob Jenkins' hash, as the
//! kernel computes it) of the mapping's key, with the rules' `seed`,
//! scaled into the 40000 ports from 20000 to 59999. So a host endpoint
//! always gets the same public port for the same key, however often the
//! router reboots, and another key almost always another port:
//!
//! | mapping | key of the hash |
//! |---|---|
//! | endpoint-independent | host address, host port |
//! | address-dependent | those, destination address |
//! | address-and-port-dependent | those, destination port |
//!
//! The table, in `nft`'s words (`<hash>` is `jhash ct original ip saddr .
//! ct original proto-src [. ct original ip daddr [. ct original
//! proto-dst]] mod 40000 seed <seed> offset 20000`; the NAT only
//! translates TCP and UDP):
//!
//! ```text
//! table ip netns_harness_nat {
//!   set transports { type inet_proto; elements = { tcp, udp } }
//!   map mappings { type inet_proto . inet_service : ipv4_addr . inet_service;
//!                  flags dynamic,timeout; timeout <udp timeout>; }
//!   set peers { type inet_service . inet_proto . ipv4_addr; flags dynamic,timeout; timeout <udp timeout>; }
//!   map forwards { type inet_proto . inet_service : ipv4_addr . inet_service; }
//!   chain postrouting { type nat hook postrouting priority srcnat;
//!     oifname <wan> ip saddr <lan> meta l4proto @transports snat to <public> : <hash>
//!     # hairpinning only: the receiver sees the sender's public endpoint
//!     oifname <lan_if> ip saddr <lan> ct status dnat meta l4proto @transports snat to <public> : <hash>
//!   }
//!   chain mapping { type filter hook postrouting priority srcnat + 10;
//!     oifname <wan> meta l4proto @transports ct direction original ct status snat
//!       update @mappings { meta l4proto . th sport : ct original ip saddr . ct original proto-src }
//!     oifname <wan> meta l4proto @transports ct direction reply ct status dnat
//!       meta l4proto . th sport != @forwards
//!       update @mappings { meta l4proto . th sport : ct reply ip saddr . ct reply proto-src }
//!     # address-dependent filtering only
//!     oifname <wan> meta l4proto @transports update @peers { th sport . meta l4proto . ip daddr }
//!   }
//!   chain prerouting { type nat hook prerouting priority dstnat;
//!     iifname <wan> ip daddr <public> meta l4proto @transports dnat to meta l4proto . th dport map @forwards
//!     # endpoint-independent filtering
//!     iifname <wan> ip daddr <public> meta l4proto @transports dnat to meta l4proto . th dport map @mappings
//!     # address-dependent filtering, instead
//!     iifname <wan> ip daddr <public> meta l4proto @transports th dport . meta l4proto . ip saddr @peers
//!       dnat to meta l4proto . th dport map @mappings
//!     # hairpinning only
//!     iifname <lan_if> ip daddr <public> meta l4proto @transports dnat to meta l4proto . th dport map @forwards
//!     iifname <lan_if> ip daddr <public> meta l4proto @transports dnat to meta l4proto . th dport map @mappings
//!   }
//!   chain input { type filter hook input priority filter;
//!     iifname <wan> meta l4proto @transports ct state new drop
//!     # without hairpinning
//!     iifname <lan_if> ip daddr <public> meta l4proto @transports drop
//!   }
//!   chain forward { type filter hook forward priority filter;
//!     iifname <wan> ct state new ct status & dnat == 0 drop
//!   }
//! }
//! ```
//!
//! - **Mapping**: `mappings` maps each public port in use to the host
//!   endpoint behind it, for as long as it carries traffic (refreshed by
//!   every packet out, and forgotten after the UDP timeout).
//! - **Filtering**: with address-and-port-dependent filtering, conntrack
//!   alone lets in exactly the endpoints the host sent to; anything else
//!   addressed to the router is new and dropped. Endpoint-independent
//!   filtering translates any packet to a mapped port back to its host;
//!   address-dependent filtering only those from an address the mapping
//!   sent to (`peers`).
//! - **Port forwards** ([`add_forward`]) are static elements of `forwards`,
//!   looked up before the mappings.
//! - **Hairpinning**: a host reaches another host's public endpoint (or a
//!   port forward) from the LAN, and the receiver sees the sender's public
//!   endpoint (RFC 4787 REQ-9). Hairpinned packets are not filtered: any
//!   host behind the router reaches any mapping.
//! - **A real NAT drops the unsolicited**: nothing new from the public side
//!   reaches the router's TCP or UDP (ICMP echo does) or the LAN, unless a
//!   forward or a mapping translated it.
//! - **Timeouts**: the sets forget an idle mapping after the UDP timeout,
//!   and so does conntrack (`nf_conntrack_udp_timeout` and
//!   `nf_conntrack_udp_timeout_stream`); the router sends no ICMP
//!   redirects (`send_redirects=0`), since hairpinned packets leave by
//!   the interface they came in.
//!
//! Two keys of the same protocol that hash to the same public port cannot
//! both reach the same destination endpoint (conntrack's reply tuples
//! would be equal): the second connection's packets are dropped (one
//! chance in 40000 per pair). A port forward on a port a mapping uses
//! takes that port's new inbound connections.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::BorrowedFd;
use std::time::Duration;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NetlinkMessage};
use netlink_packet_netfilter::conntrack::ConntrackMessage;
use netlink_packet_netfilter::nftables::{
    DataAttribute, ListAttribute, NfTablesMessage, SetElementAttribute, SetElementList,
    SetElementMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};

use super::{Refusal, Socket, batch, nft_of};
use crate::common::error::{Error, Result};
use crate::common::nat::{Nat, Protocol};
use crate::common::subnet::Ipv4Subnet;
use crate::kernel::netlink::request;
use crate::kernel::netns;

mod expr;
mod ruleset;
use ruleset::nat_batch;

/// The NAT's table, in the router namespace.
const NAT_TABLE: &str = "netns_harness_nat";
/// The first public port of a mapping, and how many there are.
const FIRST_PORT: u16 = 20000;
const PORTS: u16 = 40000;
/// Its sets and maps: the protocols it translates, the public ports in
/// use, the addresses each one sent to, the port forwards.
const TRANSPORTS: &str = "transports";
const MAPPINGS: &str = "mappings";
const PEERS: &str = "peers";
const FORWARDS: &str = "forwards";

/// A router's NAT: its networks, its public address, its behaviour.
#[derive(Clone, Debug)]
pub(crate) struct NatRules<'a> {
    /// The LAN behind the router.
    pub lan: Ipv4Subnet,
    /// The router's LAN interface (a bridge, e.g. `br0`).
    pub lan_if: &'a str,
    /// Its public interface (e.g. `uplink`).
    pub wan_if: &'a str,
    /// Its public address, on `wan_if`.
    pub public: Ipv4Addr,
    /// How it translates.
    pub nat: Nat,
    /// The seed of the hash that chooses public ports.
    pub seed: u32,
}

/// The error of `operation`, refused by the router's kernel.
fn refused(operation: String) -> impl FnOnce(Refusal) -> Error {
    move |Refusal { error, message }| Error::Netlink {
        operation,
        namespace: "router",
        source: error,
        kernel_message: message,
    }
}

/// An nf_tables message of the NAT's table (`ip`).
fn ip(message: NfTablesMessage, flags: u16) -> NetlinkMessage<NetfilterMessage> {
    nft_of(NetfilterProtoFamily::IPv4, message, flags)
}

/// Writes the router's sysctls (in the calling thread's namespace).
fn sysctls(rules: &NatRules) -> Result<()> {
    let seconds = rules
        .nat
        .udp_timeout
        .max(Duration::from_secs(1))
        .as_secs()
        .to_string();
    let lan = format!("/proc/sys/net/ipv4/conf/{}/send_redirects", rules.lan_if);
    let settings = [
        (
            "/proc/sys/net/netfilter/nf_conntrack_udp_timeout",
            seconds.as_str(),
        ),
        (
            "/proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream",
            seconds.as_str(),
        ),
        ("/proc/sys/net/ipv4/conf/all/send_redirects", "0"),
        ("/proc/sys/net/ipv4/conf/default/send_redirects", "0"),
        (lan.as_str(), "0"),
    ];
    for (path, value) in settings {
        std::fs::write(path, value)
            .map_err(|e| Error::os(format!("set {path} to {value} in the router namespace"), e))?;
    }
    Ok(())
}

/// Installs the NAT (see the [module](self)) in one nf_tables transaction,
/// then the router's conntrack UDP timeouts and `send_redirects=0`.
/// `router_ns` is the router's namespace; `socket` an `NETLINK_NETFILTER`
/// socket opened in it. A second install fails: the table exists.
pub(crate) fn install_nat(
    router_ns: BorrowedFd<'_>,
    socket: &mut Socket,
    rules: &NatRules,
) -> Result<()> {
    socket
        .transact(&mut nat_batch(rules))
        .map(drop)
        .map_err(refused(format!(
            "add table ip {NAT_TABLE} ({} on {} behind {})",
            rules.nat, rules.wan_if, rules.public
        )))?;
    // The nat expressions loaded conntrack: its sysctls exist now.
    netns::run_in(router_ns, || sysctls(rules))
}

/// `<key> : <data>` elements of set `name` (or a flush of it, without
/// elements, with [`NfTablesMessage::DeleteSetElement`]).
fn elements(name: &str, elements: Vec<Vec<SetElementAttribute>>) -> SetElementMessage {
    let mut attributes = vec![
        SetElementList::Table(NAT_TABLE.to_owned()),
        SetElementList::Set(name.to_owned()),
    ];
    if !elements.is_empty() {
        attributes.push(SetElementList::Elements(
            elements.into_iter().map(ListAttribute::Element).collect(),
        ));
    }
    SetElementMessage { attributes }
}

/// A value of a set element: a key or a map's data.
fn value(bytes: Vec<u8>) -> DataAttribute {
    DataAttribute::Value(bytes)
}

/// The key of `forwards` and `mappings`: a protocol and a port, each in a
/// register of its own.
fn port_key(protocol: Protocol, port: u16) -> Vec<u8> {
    let mut key = vec![protocol.number(), 0, 0, 0];
    key.extend(port.to_be_bytes());
    key.extend([0, 0]);
    key
}

/// The data of `forwards` and `mappings`: an address and a port, each in
/// a register of its own.
fn endpoint(to: SocketAddrV4) -> Vec<u8> {
    let mut data = to.ip().octets().to_vec();
    data.extend(to.port().to_be_bytes());
    data.extend([0, 0]);
    data
}

/// `nft add element ip netns_harness_nat forwards { <protocol> . <port> :
/// <to address> . <to port> }`: the router's public `port` of `protocol`
/// goes to `to`, from the public side and, with hairpinning, from the
/// LAN. A port already forwarded is [`Error::PortForwarded`].
pub(crate) fn add_forward(
    socket: &mut Socket,
    protocol: Protocol,
    port: u16,
    to: SocketAddrV4,
) -> Result<()> {
    let element = vec![
        SetElementAttribute::Key(value(port_key(protocol, port))),
        SetElementAttribute::Data(value(endpoint(to))),
    ];
    let message = NfTablesMessage::NewSetElement(elements(FORWARDS, vec![element]));
    let mut messages = [
        batch(ControlMessage::BatchBegin),
        ip(message, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK),
        batch(ControlMessage::BatchEnd),
    ];
    let operation = format!(
        "add element ip {NAT_TABLE} {FORWARDS} {{ {} . {port} : {to} }}",
        protocol.name()
    );
    let refusal = match socket.transact(&mut messages) {
        Ok(_) => return Ok(()),
        Err(refusal) => refusal,
    };
    if refusal.error.raw_os_error() == Some(libc::EEXIST)
        && let Some(existing) = forwarded(socket, protocol, port)?
    {
        return Err(Error::PortForwarded {
            protocol: protocol.name(),
            port,
            to: existing.into(),
        });
    }
    Err(refused(operation)(refusal))
}

/// `nft delete element ip netns_harness_nat forwards { <protocol> .
/// <port> }`: the router's public `port` of `protocol` no longer goes
/// anywhere (connections it made live on in conntrack).
pub(crate) fn remove_forward(socket: &mut Socket, protocol: Protocol, port: u16) -> Result<()> {
    let key = vec![SetElementAttribute::Key(value(port_key(protocol, port)))];
    let message = NfTablesMessage::DeleteSetElement(elements(FORWARDS, vec![key]));
    let mut messages = [
        batch(ControlMessage::BatchBegin),
        ip(message, NLM_F_ACK),
        batch(ControlMessage::BatchEnd),
    ];
    socket
        .transact(&mut messages)
        .map(drop)
        .map_err(refused(format!(
            "delete element ip {NAT_TABLE} {FORWARDS} {{ {} . {port} }}",
            protocol.name()
        )))
}

/// Where the router forwards its public `port` of `protocol`, if it does
/// (`nft get element ip netns_harness_nat forwards { … }`).
fn forwarded(socket: &mut Socket, protocol: Protocol, port: u16) -> Result<Option<SocketAddrV4>> {
    let key = vec![SetElementAttribute::Key(value(port_key(protocol, port)))];
    let query = NfTablesMessage::GetSetElement(elements(FORWARDS, vec![key]));
    let replies = socket
        .transact(&mut [ip(query, NLM_F_ACK)])
        .map_err(refused(format!(
            "get element ip {NAT_TABLE} {FORWARDS} {{ {} . {port} }}",
            protocol.name()
        )))?;
    Ok(replies.iter().find_map(forward_target))
}

/// The data of the first element of a `forwards` reply.
fn forward_target(reply: &NetfilterMessage) -> Option<SocketAddrV4> {
    let NetfilterMessageInner::NfTables(NfTablesMessage::NewSetElement(message)) = &reply.inner
    else {
        return None;
    };
    message.attributes.iter().find_map(|list| {
        let SetElementList::Elements(elements) = list else {
            return None;
        };
        elements.iter().find_map(|element| {
            let ListAttribute::Element(attributes) = element else {
                return None;
            };
            attributes.iter().find_map(|attribute| match attribute {
                SetElementAttribute::Data(DataAttribute::Value(v)) if v.len() == 8 => {
                    let addr = Ipv4Addr::new(v[0], v[1], v[2], v[3]);
                    Some(SocketAddrV4::new(addr, u16::from_be_bytes([v[4], v[5]])))
                }
                _ => None,
            })
        })
    })
}

/// A "router reboot": flushes the router's conntrack table (`conntrack
/// -F`), then every dynamic mapping and peer (`nft flush set …`); port
/// forwards stay. Conntrack goes first: a packet in between makes a
/// connection whose mapping its next packet adds again.
pub(crate) fn flush_nat(socket: &mut Socket) -> Result<()> {
    let header = NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, 0);
    let flush = request(
        NetfilterMessage::new(header, ConntrackMessage::Delete(Vec::new())),
        NLM_F_ACK,
    );
    socket
        .transact(&mut [flush])
        .map_err(refused("flush the conntrack table".to_owned()))?;
    let mut messages = vec![batch(ControlMessage::BatchBegin)];
    for set in [MAPPINGS, PEERS] {
        messages.push(ip(
            NfTablesMessage::DeleteSetElement(elements(set, Vec::new())),
            NLM_F_ACK,
        ));
    }
    messages.push(batch(ControlMessage::BatchEnd));
    socket
        .transact(&mut messages)
        .map(drop)
        .map_err(refused(format!(
            "flush set ip {NAT_TABLE} {MAPPINGS} and {PEERS}"
        )))
}

#[cfg(test)]
mod tests;
