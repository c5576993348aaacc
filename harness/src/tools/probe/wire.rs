//! Probes on the wire: raw sockets opened close-on-exec, the packets a
//! probe sends (built with pnet), and what the answers that come back mean
//! for it (unit-tested without privileges).

use super::*;
use crate::common::error::{Error, Result};
use crate::kernel::sys;
use pnet::packet::Packet;
use pnet::packet::icmp::echo_reply::EchoReplyPacket;
use pnet::packet::icmp::echo_request::MutableEchoRequestPacket;
use pnet::packet::icmp::{IcmpPacket, IcmpTypes};
use pnet::packet::ip::{IpNextHeaderProtocol, IpNextHeaderProtocols};
use pnet::packet::ipv4::Ipv4Packet;
use pnet::packet::tcp::{MutableTcpPacket, TcpFlags, TcpPacket};
use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

pub(super) fn io_error(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::os(what, e)
}

/// A raw IPv4 socket of one protocol, opened close-on-exec
/// ([`sys::raw_socket`]).
///
/// pnet's `transport_channel` opens its socket without `SOCK_CLOEXEC` and
/// cannot be given one, and setting `FD_CLOEXEC` afterwards leaves a window
/// in which a container cloned by another thread inherits the socket; so
/// the prober opens its raw sockets itself (pnet still builds and parses
/// the packets).
pub(super) struct RawSocket {
    pub(super) file: File,
}

impl RawSocket {
    /// Opens a raw socket of `protocol` in the calling thread's namespace.
    ///
    /// # References
    /// `raw(7)`
    pub(super) fn open(protocol: IpNextHeaderProtocol) -> std::io::Result<RawSocket> {
        Ok(RawSocket {
            file: File::from(sys::raw_socket(protocol.0)?),
        })
    }

    /// Sends `packet` (a transport header and payload; the kernel adds the
    /// IP header) to `dst`.
    ///
    /// # References
    /// `sendto(2)`
    pub(super) fn send_to(&self, packet: &[u8], dst: Ipv4Addr) -> std::io::Result<()> {
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(dst).to_be(),
            },
            sin_zero: [0; 8],
        };
        loop {
            // SAFETY: `packet` and `addr` are valid for the lengths given.
            let sent = unsafe {
                libc::sendto(
                    self.file.as_raw_fd(),
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if sent >= 0 {
                return Ok(());
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Receives one datagram (call it once [`sys::poll_any`] said the
    /// socket is readable): its IPv4 packet.
    pub(super) fn recv<'b>(&self, buf: &'b mut [u8]) -> std::io::Result<Option<Ipv4Packet<'b>>> {
        let n = (&self.file).read(buf)?;
        Ok(Ipv4Packet::new(&buf[..n]))
    }

    pub(super) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}

/// An echo request's length: its header, then a [`Token`].
pub(super) const ECHO_LEN: usize = 8 + Token::LEN;

/// Builds an echo request with `id`, `seq` and `token` as payload in `buf`.
pub(super) fn echo_request<'b>(
    buf: &'b mut [u8; ECHO_LEN],
    id: u16,
    seq: u16,
    token: &Token,
) -> MutableEchoRequestPacket<'b> {
    let mut packet = MutableEchoRequestPacket::new(buf).expect("ECHO_LEN bytes hold an echo");
    packet.set_icmp_type(IcmpTypes::EchoRequest);
    packet.set_identifier(id);
    packet.set_sequence_number(seq);
    packet.set_payload(token.as_bytes());
    let checksum = pnet::util::checksum(packet.packet(), 1);
    packet.set_checksum(checksum);
    packet
}

/// Builds a TCP segment without options in `buf`.
pub(super) fn tcp_segment(
    buf: &mut [u8; 20],
    (src, sport): (Ipv4Addr, u16),
    (dst, dport): (Ipv4Addr, u16),
    seq: u32,
    ack: u32,
    flags: u8,
) -> MutableTcpPacket<'_> {
    let mut segment = MutableTcpPacket::new(buf).expect("20 bytes hold a TCP header");
    segment.set_source(sport);
    segment.set_destination(dport);
    segment.set_sequence(seq);
    segment.set_acknowledgement(ack);
    segment.set_data_offset(5);
    segment.set_flags(flags);
    segment.set_window(64240);
    let checksum = pnet::packet::tcp::ipv4_checksum(&segment.to_immutable(), &src, &dst);
    segment.set_checksum(checksum);
    segment
}

/// What answered a SYN probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SynAnswer {
    /// A SYN-ACK: the port is open.
    Accepted,
    /// A reset: the port is closed.
    Reset,
    /// An ICMP destination-unreachable error, with its code.
    Icmp(u8),
}

/// A SYN probe's raw sockets: TCP to send and read answers, ICMP to read
/// errors.
pub(super) struct SynSockets {
    pub(super) tcp: RawSocket,
    pub(super) icmp: RawSocket,
}

impl SynSockets {
    /// Sends a segment of `flow` with sequence number `seq` and `flags`.
    pub(super) fn send(&self, flow: &Flow, seq: u32, flags: u8) -> std::io::Result<()> {
        let mut header = [0u8; 20];
        let segment = tcp_segment(
            &mut header,
            (flow.src, flow.src_port),
            (flow.dst, flow.dst_port),
            seq,
            0,
            flags,
        );
        self.tcp.send_to(segment.packet(), flow.dst)
    }

    /// Waits at most `left` for the next packet on either socket; what it
    /// says about `flow` (whose SYN had sequence number `seq`), if anything.
    pub(super) fn answer(
        &self,
        flow: &Flow,
        seq: u32,
        left: Duration,
        buf: &mut [u8],
    ) -> Result<Option<SynAnswer>> {
        let fds = [self.tcp.raw_fd(), self.icmp.raw_fd()];
        let Some(ready) = sys::poll_any(&fds, left).map_err(io_error("wait for TCP"))? else {
            return Ok(None);
        };
        if ready == 0 {
            let Some(ip) = self.tcp.recv(buf).map_err(io_error("receive TCP"))? else {
                return Ok(None);
            };
            let answer = TcpPacket::new(ip.payload())
                .and_then(|segment| syn_answer(ip.get_source(), &segment, flow, seq));
            Ok(answer)
        } else {
            let Some(ip) = self.icmp.recv(buf).map_err(io_error("receive ICMP"))? else {
                return Ok(None);
            };
            let answer = IcmpPacket::new(ip.payload()).and_then(|packet| {
                icmp_error_about_tcp(&packet, flow.dst, flow.dst_port, flow.src_port)
            });
            Ok(answer.map(SynAnswer::Icmp))
        }
    }
}

/// What a segment from `from` says about the SYN of `flow` with sequence
/// number `seq`: nothing unless it comes from its destination port to its
/// source port and acknowledges that SYN.
pub(super) fn syn_answer(
    from: Ipv4Addr,
    segment: &TcpPacket<'_>,
    flow: &Flow,
    seq: u32,
) -> Option<SynAnswer> {
    let ours = from == flow.dst
        && segment.get_source() == flow.dst_port
        && segment.get_destination() == flow.src_port
        && segment.get_acknowledgement() == seq.wrapping_add(1);
    let flags = segment.get_flags();
    if !ours {
        None
    } else if flags & TcpFlags::RST != 0 {
        Some(SynAnswer::Reset)
    } else if flags & (TcpFlags::SYN | TcpFlags::ACK) == TcpFlags::SYN | TcpFlags::ACK {
        Some(SynAnswer::Accepted)
    } else {
        None
    }
}

/// The echoes of an ICMP probe sent so far, and what answered them.
#[derive(Default)]
pub(super) struct EchoTally {
    /// When each echo (by sequence number) was sent.
    pub(super) sent_at: Vec<Instant>,
    /// The fastest reply.
    pub(super) best: Option<Duration>,
    pub(super) received: u16,
    /// The last ICMP error about them.
    pub(super) error: Option<Reason>,
    pub(super) errors: u16,
}

impl EchoTally {
    /// How many echoes a reply or an error answered.
    pub(super) fn answered(&self) -> u16 {
        self.received.saturating_add(self.errors)
    }

    pub(super) fn record(&mut self, answer: IcmpAnswer) {
        match answer {
            IcmpAnswer::Reply(seq) => {
                if let Some(at) = self.sent_at.get(usize::from(seq)) {
                    let rtt = at.elapsed();
                    self.best = Some(self.best.map_or(rtt, |b| b.min(rtt)));
                    self.received += 1;
                }
            }
            IcmpAnswer::Error(reason) => {
                self.error = Some(reason);
                self.errors += 1;
            }
        }
    }

    /// The outcome of `sent` echoes.
    pub(super) fn outcome(&self, sent: u16) -> IcmpOutcome {
        match self.best {
            Some(rtt) => IcmpOutcome::Reachable {
                rtt,
                received: self.received,
                sent,
            },
            None => IcmpOutcome::Unreachable {
                reason: self.error.unwrap_or(Reason::Timeout),
            },
        }
    }
}

/// Waits at most `left` for the next ICMP packet on `socket`; what it says
/// about the echoes `id` to `dst`, if anything.
pub(super) fn next_icmp_answer(
    socket: &RawSocket,
    buf: &mut [u8],
    dst: Ipv4Addr,
    id: u16,
    left: Duration,
) -> Result<Option<IcmpAnswer>> {
    if sys::poll_any(&[socket.raw_fd()], left)
        .map_err(io_error("wait for ICMP"))?
        .is_none()
    {
        return Ok(None);
    }
    let Some(ip) = socket.recv(buf).map_err(io_error("receive ICMP"))? else {
        return Ok(None);
    };
    let from = IpAddr::V4(ip.get_source());
    Ok(IcmpPacket::new(ip.payload()).and_then(|packet| classify_icmp(&packet, from, dst, id)))
}

pub(super) enum IcmpAnswer {
    Reply(u16),
    Error(Reason),
}

/// What an ICMP packet from `from` says about our echoes `id` to `dst`.
pub(super) fn classify_icmp(
    packet: &IcmpPacket<'_>,
    from: IpAddr,
    dst: Ipv4Addr,
    id: u16,
) -> Option<IcmpAnswer> {
    match packet.get_icmp_type() {
        IcmpTypes::EchoReply if from == IpAddr::V4(dst) => {
            let reply = EchoReplyPacket::new(packet.packet())?;
            (reply.get_identifier() == id).then(|| IcmpAnswer::Reply(reply.get_sequence_number()))
        }
        IcmpTypes::DestinationUnreachable => {
            let (inner, data) = quoted(packet)?;
            let echo_id = u16::from_be_bytes([*data.get(4)?, *data.get(5)?]);
            let ours = inner.get_destination() == dst
                && inner.get_next_level_protocol() == IpNextHeaderProtocols::Icmp
                && data.first() == Some(&IcmpTypes::EchoRequest.0)
                && echo_id == id;
            ours.then(|| IcmpAnswer::Error(Reason::from_icmp_code(packet.get_icmp_code().0)))
        }
        _ => None,
    }
}

/// The code of an ICMP destination-unreachable error about our SYN from
/// `sport` to `dst:dport`, if `packet` is one.
pub(super) fn icmp_error_about_tcp(
    packet: &IcmpPacket<'_>,
    dst: Ipv4Addr,
    dport: u16,
    sport: u16,
) -> Option<u8> {
    if packet.get_icmp_type() != IcmpTypes::DestinationUnreachable {
        return None;
    }
    let (inner, data) = quoted(packet)?;
    let ports = (
        u16::from_be_bytes([*data.first()?, *data.get(1)?]),
        u16::from_be_bytes([*data.get(2)?, *data.get(3)?]),
    );
    let ours = inner.get_destination() == dst
        && inner.get_next_level_protocol() == IpNextHeaderProtocols::Tcp
        && ports == (sport, dport);
    ours.then(|| packet.get_icmp_code().0)
}

/// The IPv4 header an ICMP error quotes, and the transport bytes after it.
pub(super) fn quoted<'p>(packet: &'p IcmpPacket<'_>) -> Option<(Ipv4Packet<'p>, &'p [u8])> {
    // type, code, checksum, 4 unused bytes, then the quoted datagram
    let inner_bytes = packet.packet().get(8..)?;
    let inner = Ipv4Packet::new(inner_bytes)?;
    let header_len = usize::from(inner.get_header_length()) * 4;
    let data = inner_bytes.get(header_len..)?;
    Some((inner, data))
}

#[cfg(test)]
mod tests;
