//! What differs between IPv4 and IPv6 for a probe: the socket domain, the
//! ICMP protocol and its message types, what an ICMP error's type and code
//! mean, the IP header an ICMP error quotes, and the pseudo-header a
//! transport checksum covers. Everything else is one code path.

use pnet::packet::icmp::IcmpTypes;
use pnet::packet::icmpv6::Icmpv6Types;
use pnet::packet::ip::{IpNextHeaderProtocol, IpNextHeaderProtocols};
use pnet::packet::ipv4::Ipv4Packet;
use pnet::packet::ipv6::Ipv6Packet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::super::Reason;

/// An address family: IPv4 or IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::tools::probe) enum Family {
    /// IPv4, with ICMP.
    V4,
    /// IPv6, with ICMPv6.
    V6,
}

/// What an ICMP error quotes of the datagram that caused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::tools::probe) struct Quoted<'p> {
    /// The quoted datagram's destination.
    pub(in crate::tools::probe) dst: IpAddr,
    /// Its transport protocol.
    pub(in crate::tools::probe) protocol: IpNextHeaderProtocol,
    /// The quoted transport bytes (at least the first 8 of its header).
    pub(in crate::tools::probe) transport: &'p [u8],
}

impl Family {
    /// The family of `addr`.
    pub(in crate::tools::probe) fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The socket domain (`AF_INET`, `AF_INET6`).
    pub(in crate::tools::probe) fn domain(self) -> rustix::net::AddressFamily {
        match self {
            Family::V4 => rustix::net::AddressFamily::INET,
            Family::V6 => rustix::net::AddressFamily::INET6,
        }
    }

    /// The unspecified address (`0.0.0.0`, `::`), to bind to.
    pub(in crate::tools::probe) fn unspecified(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }

    /// Its ICMP: ICMP (1) or ICMPv6 (58).
    pub(in crate::tools::probe) fn icmp(self) -> IpNextHeaderProtocol {
        match self {
            Family::V4 => IpNextHeaderProtocols::Icmp,
            Family::V6 => IpNextHeaderProtocols::Icmpv6,
        }
    }

    /// The type of an echo request (8, 128).
    pub(in crate::tools::probe) fn echo_request(self) -> u8 {
        match self {
            Family::V4 => IcmpTypes::EchoRequest.0,
            Family::V6 => Icmpv6Types::EchoRequest.0,
        }
    }

    /// The type of an echo reply (0, 129).
    pub(in crate::tools::probe) fn echo_reply(self) -> u8 {
        match self {
            Family::V4 => IcmpTypes::EchoReply.0,
            Family::V6 => Icmpv6Types::EchoReply.0,
        }
    }

    /// Why a destination was not reached, if an ICMP message of `kind` and
    /// `code` is an error that says so: destination unreachable (by code)
    /// or time exceeded. `None` for any other message.
    ///
    /// # References
    /// RFC 792 and RFC 1812 §5.2.7.1 (ICMP), RFC 4443 §3.1 (ICMPv6).
    pub(in crate::tools::probe) fn reason(self, kind: u8, code: u8) -> Option<Reason> {
        match self {
            Family::V4 if kind == IcmpTypes::TimeExceeded.0 => Some(Reason::TimeExceeded),
            Family::V4 if kind == IcmpTypes::DestinationUnreachable.0 => Some(match code {
                0 | 6 | 11 => Reason::NetworkUnreachable,
                1 | 7 | 12 => Reason::HostUnreachable,
                3 => Reason::PortUnreachable,
                9 | 10 | 13 => Reason::Prohibited,
                other => Reason::Unreachable(other),
            }),
            Family::V6 if kind == Icmpv6Types::TimeExceeded.0 => Some(Reason::TimeExceeded),
            Family::V6 if kind == Icmpv6Types::DestinationUnreachable.0 => Some(match code {
                // no route to destination
                0 => Reason::NetworkUnreachable,
                // address unreachable (neighbour discovery failed)
                3 => Reason::HostUnreachable,
                4 => Reason::PortUnreachable,
                // administratively prohibited, source address failed
                // ingress/egress policy, reject route to destination
                1 | 5 | 6 => Reason::Prohibited,
                other => Reason::Unreachable(other),
            }),
            _ => None,
        }
    }

    /// The datagram an ICMP error quotes after its 8-byte header: an IPv4
    /// header (of the length it says) or an IPv6 header (40 bytes; a
    /// probe's own datagrams have no extension headers).
    pub(in crate::tools::probe) fn quoted(self, message: &[u8]) -> Option<Quoted<'_>> {
        let inner = message.get(8..)?;
        match self {
            Family::V4 => {
                let ip = Ipv4Packet::new(inner)?;
                let header = usize::from(ip.get_header_length()) * 4;
                Some(Quoted {
                    dst: IpAddr::V4(ip.get_destination()),
                    protocol: ip.get_next_level_protocol(),
                    transport: inner.get(header..)?,
                })
            }
            Family::V6 => {
                let ip = Ipv6Packet::new(inner)?;
                Some(Quoted {
                    dst: IpAddr::V6(ip.get_destination()),
                    protocol: ip.get_next_header(),
                    transport: inner.get(Ipv6Packet::minimum_packet_size()..)?,
                })
            }
        }
    }
}

/// The Internet checksum of `bytes` (a TCP segment, an ICMPv6 message)
/// sent from `src` to `dst` over `protocol`, pseudo-header included,
/// skipping the 16-bit word `skipword` (the checksum field itself).
///
/// Both addresses are of one family, the source being chosen for the
/// destination; a mixed pair is summed as IPv6, the IPv4 address mapped.
///
/// # References
/// RFC 9293 §3.1 (IPv4), RFC 8200 §8.1 (IPv6).
pub(in crate::tools::probe) fn pseudo_header_checksum(
    bytes: &[u8],
    skipword: usize,
    src: IpAddr,
    dst: IpAddr,
    protocol: IpNextHeaderProtocol,
) -> u16 {
    use pnet::packet::util::{ipv4_checksum, ipv6_checksum};
    let as_v6 = |addr: IpAddr| match addr {
        IpAddr::V4(addr) => addr.to_ipv6_mapped(),
        IpAddr::V6(addr) => addr,
    };
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            ipv4_checksum(bytes, skipword, &[], &src, &dst, protocol)
        }
        _ => ipv6_checksum(bytes, skipword, &[], &as_v6(src), &as_v6(dst), protocol),
    }
}

/// The checksum of an ICMP message (`bytes`, its checksum field at word
/// 1): over the message alone for ICMP, with the pseudo-header of `src`
/// and `dst` for ICMPv6.
pub(in crate::tools::probe) fn icmp_checksum(bytes: &[u8], src: IpAddr, dst: IpAddr) -> u16 {
    match Family::of(dst) {
        Family::V4 => pnet::packet::util::checksum(bytes, 1),
        Family::V6 => pseudo_header_checksum(bytes, 1, src, dst, IpNextHeaderProtocols::Icmpv6),
    }
}

/// The transport bytes and protocol of an IP packet whose fixed header
/// starts `packet`, as a raw socket of `family` reads it: IPv4 datagrams
/// come with their header, IPv6 ones without.
pub(in crate::tools::probe) fn payload_of(family: Family, packet: &[u8]) -> Option<&[u8]> {
    match family {
        Family::V4 => {
            let ip = Ipv4Packet::new(packet)?;
            let header = usize::from(ip.get_header_length()) * 4;
            let end = usize::from(ip.get_total_length())
                .min(packet.len())
                .max(header);
            packet.get(header..end)
        }
        Family::V6 => Some(packet),
    }
}
