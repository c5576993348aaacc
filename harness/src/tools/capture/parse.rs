//! What a captured Ethernet frame holds, for telling flows apart: its IPv4
//! or IPv6 addresses (past IPv6 extension headers), its transport protocol
//! and ports, ICMP and ICMPv6 echo identifiers, TCP sequence numbers, and
//! the payload that carries a probe's token.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use pnet::packet::ethernet::{EtherTypes, EthernetPacket};
use pnet::packet::icmp::IcmpTypes;
use pnet::packet::icmpv6::Icmpv6Types;
use pnet::packet::ip::{IpNextHeaderProtocol, IpNextHeaderProtocols};
use pnet::packet::ipv4::Ipv4Packet;
use pnet::packet::ipv6::Ipv6Packet;
use pnet::packet::tcp::TcpPacket;
use pnet::packet::udp::UdpPacket;

/// The transport protocol of a captured packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// ICMP (over IPv4), with its type.
    Icmp(u8),
    /// ICMPv6, with its type (128 echo request, 129 echo reply, 1
    /// destination unreachable, 135 and 136 neighbour discovery…).
    Icmpv6(u8),
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// Another IP protocol number (or IPv6 next header, e.g. 44 for a
    /// fragment after the first).
    Other(u8),
}

impl Protocol {
    /// An echo request of the family of `addr`: ICMP type 8, ICMPv6 128.
    pub(super) fn echo_request(addr: IpAddr) -> Protocol {
        match addr {
            IpAddr::V4(_) => Protocol::Icmp(IcmpTypes::EchoRequest.0),
            IpAddr::V6(_) => Protocol::Icmpv6(Icmpv6Types::EchoRequest.0),
        }
    }

    /// An echo reply of the family of `addr`: ICMP type 0, ICMPv6 129.
    pub(super) fn echo_reply(addr: IpAddr) -> Protocol {
        match addr {
            IpAddr::V4(_) => Protocol::Icmp(IcmpTypes::EchoReply.0),
            IpAddr::V6(_) => Protocol::Icmpv6(Icmpv6Types::EchoReply.0),
        }
    }
}

/// One IPv4 or IPv6 packet seen on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Its protocol.
    pub protocol: Protocol,
    /// Its source address.
    pub src: IpAddr,
    /// Its source port (TCP and UDP).
    pub src_port: Option<u16>,
    /// Its destination address, of the same family.
    pub dst: IpAddr,
    /// Its destination port (TCP and UDP).
    pub dst_port: Option<u16>,
}

impl fmt::Display for Observed {
    /// `tcp 10.0.0.2:61000 > 198.18.0.2:80`,
    /// `icmp6 type 128 fd00::2 > fd00::3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = |addr: IpAddr, port: Option<u16>| match port {
            Some(port) => SocketAddr::new(addr, port).to_string(),
            None => addr.to_string(),
        };
        let protocol = match self.protocol {
            Protocol::Icmp(kind) => format!("icmp type {kind}"),
            Protocol::Icmpv6(kind) => format!("icmp6 type {kind}"),
            Protocol::Tcp => "tcp".to_owned(),
            Protocol::Udp => "udp".to_owned(),
            Protocol::Other(n) => format!("ip proto {n}"),
        };
        write!(
            f,
            "{protocol} {} > {}",
            end(self.src, self.src_port),
            end(self.dst, self.dst_port)
        )
    }
}

/// The fields of an IP packet that tell flows apart.
pub(super) struct Parsed<'f> {
    pub(super) observed: Observed,
    /// ICMP or ICMPv6 echo (request or reply): its identifier.
    pub(super) echo_id: Option<u16>,
    /// TCP: sequence number, acknowledgement number, flags.
    pub(super) tcp: Option<(u32, u32, u8)>,
    /// The transport payload (ICMP: after the 8-byte header).
    pub(super) payload: &'f [u8],
}

/// Fills in what the transport header and payload of `parsed` say.
fn parse_transport<'f>(
    parsed: &mut Parsed<'f>,
    protocol: IpNextHeaderProtocol,
    transport: &'f [u8],
) -> Option<()> {
    match protocol {
        IpNextHeaderProtocols::Tcp => {
            let tcp = TcpPacket::new(transport)?;
            parsed.observed.protocol = Protocol::Tcp;
            parsed.observed.src_port = Some(tcp.get_source());
            parsed.observed.dst_port = Some(tcp.get_destination());
            parsed.tcp = Some((
                tcp.get_sequence(),
                tcp.get_acknowledgement(),
                tcp.get_flags(),
            ));
            let offset = usize::from(tcp.get_data_offset()) * 4;
            parsed.payload = transport.get(offset..).unwrap_or_default();
        }
        IpNextHeaderProtocols::Udp => {
            let udp = UdpPacket::new(transport)?;
            parsed.observed.protocol = Protocol::Udp;
            parsed.observed.src_port = Some(udp.get_source());
            parsed.observed.dst_port = Some(udp.get_destination());
            parsed.payload = transport.get(UdpPacket::minimum_packet_size()..)?;
        }
        IpNextHeaderProtocols::Icmp | IpNextHeaderProtocols::Icmpv6 => {
            let kind = *transport.first()?;
            let src = parsed.observed.src;
            parsed.observed.protocol = match protocol {
                IpNextHeaderProtocols::Icmp => Protocol::Icmp(kind),
                _ => Protocol::Icmpv6(kind),
            };
            // Echoes of both families: identifier, sequence, data.
            let echo = [Protocol::echo_request(src), Protocol::echo_reply(src)];
            if echo.contains(&parsed.observed.protocol) {
                parsed.echo_id = Some(u16::from_be_bytes([*transport.get(4)?, *transport.get(5)?]));
            }
            parsed.payload = transport.get(8..).unwrap_or_default();
        }
        _ => {}
    }
    Some(())
}

/// IPv6 extension headers whose length is `(byte 1 + 1) * 8`: hop-by-hop
/// options, routing, destination options, mobility, HIP, shim6.
const EXTENSIONS: [u8; 6] = [0, 43, 60, 135, 139, 140];
/// The fragment header (8 bytes).
const FRAGMENT: u8 = 44;
/// The authentication header (`(byte 1 + 2) * 4` bytes).
const AUTHENTICATION: u8 = 51;

/// The transport protocol and bytes of an IPv6 payload whose first header
/// is `next`, past its extension headers. A fragment after the first has no
/// transport header: it is reported as protocol 44 with no bytes. ESP and
/// unknown headers end the walk.
///
/// # References
/// RFC 8200 §4, RFC 4302 (AH).
fn ipv6_transport(
    mut next: IpNextHeaderProtocol,
    mut bytes: &[u8],
) -> Option<(IpNextHeaderProtocol, &[u8])> {
    loop {
        let len = match next.0 {
            kind if EXTENSIONS.contains(&kind) => (usize::from(*bytes.get(1)?) + 1) * 8,
            AUTHENTICATION => (usize::from(*bytes.get(1)?) + 2) * 4,
            FRAGMENT => {
                let offset = u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]) >> 3;
                if offset != 0 {
                    return Some((next, &[]));
                }
                8
            }
            _ => return Some((next, bytes)),
        };
        next = IpNextHeaderProtocol(*bytes.first()?);
        bytes = bytes.get(len..)?;
    }
}

/// The IP header of `frame`'s packet: addresses, transport protocol, and
/// the transport bytes. A truncated frame has fewer bytes than the IP
/// header says; a segmentation-offload frame may say 0.
fn ip_of(frame: &[u8]) -> Option<(IpAddr, IpAddr, IpNextHeaderProtocol, &[u8])> {
    let ethernet = EthernetPacket::new(frame)?;
    // Borrow the IP packet from `frame` itself, so the payload outlives
    // the parsers.
    let packet = frame.get(EthernetPacket::minimum_packet_size()..)?;
    let bounded = |start: usize, len: usize| match len {
        0 => packet.get(start..),
        len => packet.get(start..packet.len().min(start + len)),
    };
    match ethernet.get_ethertype() {
        EtherTypes::Ipv4 => {
            let ip = Ipv4Packet::new(packet)?;
            let header = usize::from(ip.get_header_length()) * 4;
            let total = usize::from(ip.get_total_length());
            let transport = bounded(header, total.saturating_sub(header))?;
            let (src, dst) = (ip.get_source().into(), ip.get_destination().into());
            Some((src, dst, ip.get_next_level_protocol(), transport))
        }
        EtherTypes::Ipv6 => {
            let ip = Ipv6Packet::new(packet)?;
            let payload = bounded(
                Ipv6Packet::minimum_packet_size(),
                usize::from(ip.get_payload_length()),
            )?;
            let (protocol, transport) = ipv6_transport(ip.get_next_header(), payload)?;
            let (src, dst) = (ip.get_source().into(), ip.get_destination().into());
            Some((src, dst, protocol, transport))
        }
        _ => None,
    }
}

/// What `frame` says, if it is an IPv4 or IPv6 packet.
pub(super) fn parse(frame: &[u8]) -> Option<Parsed<'_>> {
    let (src, dst, protocol, transport) = ip_of(frame)?;
    let mut parsed = Parsed {
        observed: Observed {
            protocol: Protocol::Other(protocol.0),
            src,
            src_port: None,
            dst,
            dst_port: None,
        },
        echo_id: None,
        tcp: None,
        payload: &[],
    };
    parse_transport(&mut parsed, protocol, transport)?;
    Some(parsed)
}
