//! Packet capture on an interface of a lab namespace: what the far side of
//! the NAT saw, and which of the flows a probe sent ([`Observations::find`]),
//! over IPv4 and IPv6: whether the NAT (NAT44, or NAT66 where one is set
//! up) rewrote its source, or it was routed as sent (IPv6's default).
//! The frames are recorded by `crate::kernel::packet` (every frame whole up to
//! [`SNAPLEN`], with its true length; a bounded stop even on a flooded
//! port).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::time::SystemTime;

use pnet::packet::tcp::TcpFlags;

use crate::common::error::{Error, Result};
pub use crate::kernel::packet::{DRAIN_TIME, RING_BYTES, SNAPLEN};
use crate::kernel::packet::{Frame, Recording};
use crate::tools::probe::{Flow, Mark};

mod parse;
pub use parse::{Observed, Protocol};
use parse::{Parsed, parse};

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
    /// when it was translated, the private one when it leaked or was
    /// routed as sent (IPv6 without NAT66).
    pub src: IpAddr,
    /// Its source port as seen there; for ICMP, the echo identifier.
    pub src_port: u16,
    /// Whether its source address was rewritten on the way (NAT44,
    /// NAT66); `false` when it arrived from the address it was sent from.
    pub rewritten: bool,
    /// How many of the flow's packets were seen going out.
    pub packets: usize,
    /// How many answers to it were seen coming back to `src:src_port`.
    pub replies: usize,
}

impl fmt::Display for Translation {
    /// `seen from 198.18.0.1:40001, rewritten (1 packets out, 1 replies)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = SocketAddr::new(self.src, self.src_port);
        let how = if self.rewritten {
            "rewritten"
        } else {
            "as sent"
        };
        write!(
            f,
            "seen from {source}, {how} ({} packets out, {} replies)",
            self.packets, self.replies
        )
    }
}

/// Whether `packet` is one the flow sent (with its source as seen here).
fn outgoing(flow: &Flow, packet: &Parsed<'_>) -> Option<(IpAddr, u16)> {
    let seen = &packet.observed;
    if seen.dst != flow.dst {
        return None;
    }
    let ours = match flow.mark {
        Mark::Icmp { token } => {
            seen.protocol == Protocol::echo_request(flow.dst)
                && packet.payload.starts_with(token.as_bytes())
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
fn answers(flow: &Flow, (src, port): (IpAddr, u16), packet: &Parsed<'_>) -> bool {
    let seen = &packet.observed;
    if seen.src != flow.dst || seen.dst != src {
        return false;
    }
    match flow.mark {
        Mark::Icmp { token } => {
            seen.protocol == Protocol::echo_reply(flow.dst)
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
    /// seen, and whether its source address was rewritten on the way
    /// ([`Translation::rewritten`]). `None` when none of its packets
    /// crossed the interface.
    pub fn find(&self, flow: &Flow) -> Option<Translation> {
        let parsed: Vec<Parsed<'_>> = self.frames.iter().filter_map(|f| parse(&f.data)).collect();
        let mut out = parsed.iter().filter_map(|p| outgoing(flow, p));
        let source = out.next()?;
        let packets = 1 + out.count();
        let replies = parsed.iter().filter(|p| answers(flow, source, p)).count();
        Some(Translation {
            src: source.0,
            src_port: source.1,
            rewritten: source.0 != flow.src,
            packets,
            replies,
        })
    }

    /// Asserts that `flow` crossed the interface with its source rewritten
    /// to `public` (NAT44, or NAT66 for an IPv6 flow), and that its private
    /// source address never appeared there; returns how it was seen.
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
    pub fn assert_translated(&self, flow: &Flow, public: impl Into<IpAddr>) -> Translation {
        let public = public.into();
        let seen = self.assert_seen(flow);
        assert!(
            seen.rewritten,
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

    /// Asserts that `flow` crossed the interface from the very address it
    /// was sent from, routed without NAT (IPv6's default in a lab);
    /// returns how it was seen.
    ///
    /// # Panics
    /// Naming the flow and listing the packets seen, when the flow was not
    /// seen, or was seen with its source rewritten.
    #[track_caller]
    pub fn assert_not_translated(&self, flow: &Flow) -> Translation {
        let seen = self.assert_seen(flow);
        assert!(
            !seen.rewritten,
            "the flow {flow} crossed {} translated to {}, not from its own address; {}",
            self.interface,
            seen.src,
            self.listing()
        );
        seen
    }

    /// How `flow` was seen; panics, listing the packets, if it was not.
    #[track_caller]
    fn assert_seen(&self, flow: &Flow) -> Translation {
        let Some(seen) = self.find(flow) else {
            panic!(
                "the flow {flow} was not seen on {}; {}",
                self.interface,
                self.listing()
            );
        };
        seen
    }
}

#[cfg(test)]
mod tests;
