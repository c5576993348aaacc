//! Probes on the wire, over IPv4 and IPv6: raw sockets opened
//! close-on-exec, the packets a probe sends (built with pnet), and what the
//! answers that come back mean for it (unit-tested without privileges).

use super::*;
use crate::common::error::{Error, Result};
use crate::kernel::sys;
use pnet::packet::Packet;
use pnet::packet::ip::{IpNextHeaderProtocol, IpNextHeaderProtocols};
use pnet::packet::tcp::{MutableTcpPacket, TcpFlags, TcpPacket};
use rustix::net::{RecvFlags, SendFlags};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

mod family;
mod icmp;
pub(super) use family::Family;
pub(super) use icmp::*;

pub(super) fn io_error(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::os(what, e)
}

/// A raw IPv4 or IPv6 socket of one protocol, opened close-on-exec
/// ([`sys::raw_socket`]).
///
/// pnet's `transport_channel` opens its socket without `SOCK_CLOEXEC` and
/// cannot be given one, and setting `FD_CLOEXEC` afterwards leaves a window
/// in which a container cloned by another thread inherits the socket; so
/// the prober opens its raw sockets itself (pnet still builds and parses
/// the packets).
///
/// The kernel builds the IP header of what is sent (no `IP_HDRINCL`, no
/// `IPV6_HDRINCL`), choosing the source address by its routes; reads
/// return the transport bytes ([`RawSocket::recv`] strips the IPv4 header
/// an IPv4 raw socket returns; an IPv6 one returns none).
pub(super) struct RawSocket {
    fd: OwnedFd,
    family: Family,
}

/// A datagram a [`RawSocket`] read.
pub(super) struct Received<'b> {
    /// Who sent it.
    pub(super) from: IpAddr,
    /// Its transport bytes (ICMP message, TCP segment).
    pub(super) payload: &'b [u8],
}

impl RawSocket {
    /// Opens a raw socket of `family` and `protocol` in the calling
    /// thread's namespace.
    ///
    /// # References
    /// `raw(7)`, `ipv6(7)`
    pub(super) fn open(
        family: Family,
        protocol: IpNextHeaderProtocol,
    ) -> std::io::Result<RawSocket> {
        let fd = sys::raw_socket(family.domain(), protocol.0)?;
        Ok(RawSocket { fd, family })
    }

    /// Sends `packet` (a transport header and payload; the kernel adds the
    /// IP header) to `dst`.
    ///
    /// # References
    /// `sendto(2)`
    pub(super) fn send_to(&self, packet: &[u8], dst: IpAddr) -> std::io::Result<()> {
        loop {
            match rustix::net::sendto(
                &self.fd,
                packet,
                SendFlags::empty(),
                &SocketAddr::new(dst, 0),
            ) {
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Receives one datagram (call it once [`sys::poll_any`] said the
    /// socket is readable); `None` for one too short to parse, or when a
    /// signal interrupted the read.
    ///
    /// # References
    /// `recvfrom(2)`
    pub(super) fn recv<'b>(&self, buf: &'b mut [u8]) -> std::io::Result<Option<Received<'b>>> {
        let (n, _, from) = match rustix::net::recvfrom(&self.fd, &mut *buf, RecvFlags::empty()) {
            Ok(received) => received,
            Err(rustix::io::Errno::INTR) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(from) = from.and_then(|a| SocketAddr::try_from(a).ok()) else {
            return Ok(None);
        };
        let buf = &buf[..n.min(buf.len())];
        Ok(
            family::payload_of(self.family, buf).map(|payload| Received {
                from: from.ip(),
                payload,
            }),
        )
    }

    pub(super) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// Builds a TCP segment without options in `buf`, its checksum over the
/// pseudo-header of `src` and `dst` (raw sockets leave it to us).
pub(super) fn tcp_segment(
    buf: &mut [u8; 20],
    (src, sport): (IpAddr, u16),
    (dst, dport): (IpAddr, u16),
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
    // The checksum is the TCP header's ninth 16-bit word.
    let checksum =
        family::pseudo_header_checksum(segment.packet(), 8, src, dst, IpNextHeaderProtocols::Tcp);
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
    /// An ICMP error, and what it means.
    Icmp(Reason),
}

/// A SYN probe's raw sockets, of its destination's family: TCP to send
/// and read answers, ICMP (ICMPv6) to read errors.
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
        let (socket, what) = match ready {
            0 => (&self.tcp, "receive TCP"),
            _ => (&self.icmp, "receive ICMP"),
        };
        let Some(received) = socket.recv(buf).map_err(io_error(what))? else {
            return Ok(None);
        };
        Ok(match ready {
            0 => TcpPacket::new(received.payload)
                .and_then(|segment| syn_answer(received.from, &segment, flow, seq)),
            _ => icmp_error_about_tcp(received.payload, flow.dst, flow.dst_port, flow.src_port)
                .map(SynAnswer::Icmp),
        })
    }
}

/// What a segment from `from` says about the SYN of `flow` with sequence
/// number `seq`: nothing unless it comes from its destination port to its
/// source port and acknowledges that SYN.
pub(super) fn syn_answer(
    from: IpAddr,
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

/// Waits at most `left` for the next ICMP (ICMPv6) packet on `socket`;
/// what it says about the echoes `id` to `dst`, if anything.
pub(super) fn next_icmp_answer(
    socket: &RawSocket,
    buf: &mut [u8],
    dst: IpAddr,
    id: u16,
    left: Duration,
) -> Result<Option<IcmpAnswer>> {
    if sys::poll_any(&[socket.raw_fd()], left)
        .map_err(io_error("wait for ICMP"))?
        .is_none()
    {
        return Ok(None);
    }
    let Some(received) = socket.recv(buf).map_err(io_error("receive ICMP"))? else {
        return Ok(None);
    };
    Ok(classify_icmp(received.payload, received.from, dst, id))
}

#[cfg(test)]
mod tests;
