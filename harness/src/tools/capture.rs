//! Packet capture on an interface of a lab namespace: what the far side of
//! the NAT saw, and which of the flows a probe sent ([`Observations::find`]).
//! The frames are recorded by `crate::kernel::packet` (every frame whole up to
//! [`SNAPLEN`], with its true length; a bounded stop even on a flooded
//! port).

use std::fmt;
use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::time::SystemTime;

use pnet::packet::ethernet::{EtherTypes, EthernetPacket};
use pnet::packet::icmp::IcmpPacket;
use pnet::packet::ip::{IpNextHeaderProtocol, IpNextHeaderProtocols};
use pnet::packet::ipv4::Ipv4Packet;
use pnet::packet::tcp::{TcpFlags, TcpPacket};
use pnet::packet::udp::UdpPacket;

use crate::common::error::{Error, Result};
pub use crate::kernel::packet::{DRAIN_TIME, RING_BYTES, SNAPLEN};
use crate::kernel::packet::{Frame, Recording};
use crate::tools::probe::{Flow, Mark};

/// The transport protocol of a captured packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// ICMP, with its type.
    Icmp(u8),
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// Another IP protocol number.
    Other(u8),
}

/// One IPv4 packet seen on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Its protocol.
    pub protocol: Protocol,
    /// Its source address.
    pub src: Ipv4Addr,
    /// Its source port (TCP and UDP).
    pub src_port: Option<u16>,
    /// Its destination address.
    pub dst: Ipv4Addr,
    /// Its destination port (TCP and UDP).
    pub dst_port: Option<u16>,
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = |addr: Ipv4Addr, port: Option<u16>| match port {
            Some(port) => format!("{addr}:{port}"),
            None => addr.to_string(),
        };
        let protocol = match self.protocol {
            Protocol::Icmp(kind) => format!("icmp type {kind}"),
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

/// The fields of an IPv4 packet that tell flows apart.
struct Parsed<'f> {
    observed: Observed,
    /// ICMP echo (request or reply): its identifier.
    echo_id: Option<u16>,
    /// TCP: sequence number, acknowledgement number, flags.
    tcp: Option<(u32, u32, u8)>,
    /// The transport payload (ICMP: after the 8-byte header).
    payload: &'f [u8],
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
        IpNextHeaderProtocols::Icmp => {
            let kind = IcmpPacket::new(transport)?.get_icmp_type().0;
            parsed.observed.protocol = Protocol::Icmp(kind);
            // Echo reply (0) and request (8): identifier, sequence, data.
            if kind == 0 || kind == 8 {
                parsed.echo_id = Some(u16::from_be_bytes([*transport.get(4)?, *transport.get(5)?]));
            }
            parsed.payload = transport.get(8..).unwrap_or_default();
        }
        _ => {}
    }
    Some(())
}

fn parse(frame: &[u8]) -> Option<Parsed<'_>> {
    let ethernet = EthernetPacket::new(frame)?;
    if ethernet.get_ethertype() != EtherTypes::Ipv4 {
        return None;
    }
    // Borrow the IP packet from `frame` itself, so the payload outlives
    // the parsers.
    let ip = Ipv4Packet::new(frame.get(EthernetPacket::minimum_packet_size()..)?)?;
    let header = usize::from(ip.get_header_length()) * 4;
    let total = usize::from(ip.get_total_length());
    let start = EthernetPacket::minimum_packet_size() + header;
    // A truncated frame has fewer bytes than the IP header says; a
    // segmentation-offload frame may say 0.
    let end = match total {
        0 => frame.len(),
        total => frame.len().min(start + total.saturating_sub(header)),
    };
    let transport = frame.get(start..end)?;
    let mut parsed = Parsed {
        observed: Observed {
            protocol: Protocol::Other(ip.get_next_level_protocol().0),
            src: ip.get_source(),
            src_port: None,
            dst: ip.get_destination(),
            dst_port: None,
        },
        echo_id: None,
        tcp: None,
        payload: &[],
    };
    parse_transport(&mut parsed, ip.get_next_level_protocol(), transport)?;
    Some(parsed)
}

impl crate::Lab {
    /// Starts capturing on the outside host's end of the uplink: what the
    /// far side of the NAT sees. Stop it with [`Capture::stop`].
    pub fn capture_outside(&self) -> Result<Capture> {
        Capture::start(self.outside_netns(), "eth0")
    }
}

/// A running capture of the frames crossing one interface, both ways; it
/// keeps the last [`RING_BYTES`] of them.
#[derive(Debug)]
pub struct Capture {
    interface: String,
    recording: Recording,
}

impl Capture {
    /// Starts capturing on `interface` of the namespace `netns`; the
    /// caller stays in its own namespace. Packets are recorded from the
    /// moment this returns.
    pub fn start(netns: BorrowedFd<'_>, interface: &str) -> Result<Capture> {
        Ok(Self::of(Recording::start(netns, interface)?, interface))
    }

    /// The capture a recording of `interface` makes.
    pub(crate) fn of(recording: Recording, interface: &str) -> Capture {
        Capture {
            interface: interface.to_owned(),
            recording,
        }
    }

    /// Stops and returns what was seen: every frame read until the call,
    /// then what was already queued, for at most [`DRAIN_TIME`] (on a
    /// flooded port the queue never empties; the stop still returns).
    pub fn stop(self) -> Observations {
        let frames = self.recording.finish();
        Observations {
            interface: self.interface,
            packets: frames
                .iter()
                .filter_map(|f| parse(&f.data).map(|p| p.observed))
                .collect(),
            frames,
        }
    }
}

/// What the far side of a NAT saw of one [`Flow`] (see
/// [`Observations::find`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The flow's source address as seen there: the NAT's public address
    /// when it was translated, the private one when it leaked.
    pub src: Ipv4Addr,
    /// Its source port as seen there; for ICMP, the echo identifier.
    pub src_port: u16,
    /// How many of the flow's packets were seen going out.
    pub packets: usize,
    /// How many answers to it were seen coming back to `src:src_port`.
    pub replies: usize,
}

impl fmt::Display for Translation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seen from {}:{} ({} packets out, {} replies)",
            self.src, self.src_port, self.packets, self.replies
        )
    }
}

/// Whether `packet` is one the flow sent (with its source as seen here).
fn outgoing(flow: &Flow, packet: &Parsed<'_>) -> Option<(Ipv4Addr, u16)> {
    let seen = &packet.observed;
    if seen.dst != flow.dst {
        return None;
    }
    let ours = match flow.mark {
        Mark::Icmp { token } => {
            seen.protocol == Protocol::Icmp(8) && packet.payload.starts_with(token.as_bytes())
        }
        Mark::Udp { token } => {
            seen.protocol == Protocol::Udp
                && seen.dst_port == Some(flow.dst_port)
                && packet.payload.ends_with(token.as_bytes())
        }
        Mark::Tcp { isn } => {
            // The SYN, and the reset the prober sends after a SYN-ACK.
            seen.dst_port == Some(flow.dst_port)
                && packet.tcp.is_some_and(|(seq, _, flags)| {
                    (flags & TcpFlags::SYN != 0 && flags & TcpFlags::ACK == 0 && seq == isn)
                        || (flags & TcpFlags::RST != 0 && seq == isn.wrapping_add(1))
                })
        }
    };
    let port = match flow.mark {
        Mark::Icmp { .. } => packet.echo_id?,
        _ => seen.src_port?,
    };
    ours.then_some((seen.src, port))
}

/// Whether `packet` answers the flow, whose source was seen as `src:port`.
fn answers(flow: &Flow, (src, port): (Ipv4Addr, u16), packet: &Parsed<'_>) -> bool {
    let seen = &packet.observed;
    if seen.src != flow.dst || seen.dst != src {
        return false;
    }
    match flow.mark {
        Mark::Icmp { token } => {
            seen.protocol == Protocol::Icmp(0)
                && packet.echo_id == Some(port)
                && packet.payload.starts_with(token.as_bytes())
        }
        Mark::Udp { .. } => {
            seen.protocol == Protocol::Udp
                && seen.src_port == Some(flow.dst_port)
                && seen.dst_port == Some(port)
        }
        Mark::Tcp { isn } => {
            seen.src_port == Some(flow.dst_port)
                && seen.dst_port == Some(port)
                && packet.tcp.is_some_and(|(_, ack, flags)| {
                    flags & TcpFlags::ACK != 0 && ack == isn.wrapping_add(1)
                })
        }
    }
}

/// The packets a [`Capture`] saw.
#[derive(Clone, Debug)]
pub struct Observations {
    interface: String,
    frames: Vec<Frame>,
    packets: Vec<Observed>,
}

/// How many packets a failed assertion lists, the last ones.
const LISTED: usize = 40;

impl Observations {
    /// How many frames were kept.
    pub fn frames(&self) -> usize {
        self.frames.len()
    }

    /// Each kept frame's length: `(bytes kept, bytes on the wire)`; the
    /// first is smaller when the frame was longer than [`SNAPLEN`].
    pub fn frame_lengths(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.frames.iter().map(|f| (f.data.len(), f.len))
    }

    /// Writes the frames to `path` as a pcap file (Ethernet, snapshot
    /// length [`SNAPLEN`], each frame with its true length), readable by
    /// `tcpdump -r` and Wireshark.
    pub fn write_pcap(&self, path: &Path) -> Result<()> {
        let failed = |e: pcap_file::PcapError| {
            Error::os(
                format!("write the capture {}", path.display()),
                std::io::Error::other(e),
            )
        };
        let file = crate::kernel::sys::create_file(path)
            .map_err(|e| Error::os(format!("create the capture {}", path.display()), e))?;
        let header = pcap_file::pcap::PcapHeader {
            snaplen: SNAPLEN as u32,
            endianness: pcap_file::Endianness::native(),
            ..pcap_file::pcap::PcapHeader::default()
        };
        let mut writer =
            pcap_file::pcap::PcapWriter::with_header(std::io::BufWriter::new(file), header)
                .map_err(failed)?;
        for frame in &self.frames {
            let at = frame
                .at
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            let len = u32::try_from(frame.len).unwrap_or(u32::MAX);
            writer
                .write_packet(&pcap_file::pcap::PcapPacket::new(at, len, &frame.data))
                .map_err(failed)?;
        }
        Ok(())
    }

    /// Every packet, in the order seen.
    pub fn packets(&self) -> &[Observed] {
        &self.packets
    }

    /// The last [`LISTED`] packets seen, one a line, for failure messages.
    fn listing(&self) -> String {
        if self.packets.is_empty() {
            return format!("nothing was seen on {}", self.interface);
        }
        let skipped = self.packets.len().saturating_sub(LISTED);
        let lines: Vec<String> = self.packets[skipped..]
            .iter()
            .map(|p| format!("  {p}"))
            .collect();
        let head = if skipped > 0 {
            format!(
                "seen on {} ({} packets, the last {LISTED}):",
                self.interface,
                self.packets.len()
            )
        } else {
            format!("seen on {}:", self.interface)
        };
        format!("{head}\n{}", lines.join("\n"))
    }

    /// Finds `flow` among the packets seen, by what marks it (its token,
    /// or its TCP initial sequence number), not by its addresses: how its
    /// source looked here, and how many of its packets and answers were
    /// seen. `None` when none of its packets crossed the interface.
    pub fn find(&self, flow: &Flow) -> Option<Translation> {
        let parsed: Vec<Parsed<'_>> = self.frames.iter().filter_map(|f| parse(&f.data)).collect();
        let mut out = parsed.iter().filter_map(|p| outgoing(flow, p));
        let source = out.next()?;
        let packets = 1 + out.count();
        let replies = parsed.iter().filter(|p| answers(flow, source, p)).count();
        Some(Translation {
            src: source.0,
            src_port: source.1,
            packets,
            replies,
        })
    }

    /// Asserts that `flow` crossed the interface with its source rewritten
    /// to `public`, and that its private source address never appeared
    /// there; returns how it was seen.
    ///
    /// ```no_run
    /// use netns_harness::prelude::*;
    /// use netns_harness::probe::{ProbeOptions, Prober};
    ///
    /// #[netns_test]
    /// fn the_nat_rewrites_my_echo(net: Net) {
    ///     let capture = net.lab().capture_outside().unwrap();
    ///     let sent = Prober::here()
    ///         .icmp_flow(net.outside_addr(), ProbeOptions::default())
    ///         .unwrap();
    ///     capture.stop().assert_translated(&sent.flow, net.public_addr());
    /// }
    /// ```
    ///
    /// # Panics
    /// Naming the flow and listing the packets seen, when the flow was not
    /// seen, was seen untranslated or translated to another address, or
    /// when the private address appeared on the interface.
    #[track_caller]
    pub fn assert_translated(&self, flow: &Flow, public: Ipv4Addr) -> Translation {
        let Some(seen) = self.find(flow) else {
            panic!(
                "the flow {flow} was not seen on {}; {}",
                self.interface,
                self.listing()
            );
        };
        assert!(
            seen.src != flow.src,
            "the flow {flow} crossed {} untranslated, from its private address {}; {}",
            self.interface,
            flow.src,
            self.listing()
        );
        assert!(
            seen.src == public,
            "the flow {flow} was translated to {}, not to the NAT's address {public}; {}",
            seen.src,
            self.listing()
        );
        let leaked = self
            .packets
            .iter()
            .filter(|p| p.src == flow.src || p.dst == flow.src)
            .count();
        assert!(
            leaked == 0,
            "the private address {} of the flow {flow} appeared on {} ({leaked} packets); {}",
            flow.src,
            self.interface,
            self.listing()
        );
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::packet::Ring;

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
}
