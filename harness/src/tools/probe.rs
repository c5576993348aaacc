//! The prober: ICMP echo, TCP (SYN or `connect()`) and UDP reachability,
//! over IPv4 and IPv6 alike (ICMPv6 echo and errors, TCP SYN over raw IPv6
//! sockets), from any network namespace of a lab, with raw sockets and
//! packets built and parsed by pnet. A probe speaks the family of the
//! address it is given.
//!
//! A [`Prober`] belongs to one namespace: the calling thread's
//! ([`Prober::here`]) or another one ([`Prober::in_netns`]), whose sockets
//! are opened by a short-lived thread that enters it, so the caller never
//! leaves its own namespace. Each probe has sockets of its own and matches
//! answers by ICMP identifier and sequence, or by TCP ports and sequence, so
//! concurrent probes never take each other's answers.
//!
//! The `*_flow` probes ([`Prober::icmp_flow`], [`Prober::tcp_flow`],
//! [`Prober::udp_flow`]) also return the [`Flow`] they sent: its addresses
//! and what marks its packets wherever they go (a random token in the
//! payload, a random TCP initial sequence number), so that a capture on the
//! far side of the NAT (`capture::Observations::find`) or the NAT's
//! connection-tracking table (`conntrack::Table::find`) can find that very
//! flow among a busy lab's traffic.
//!
//! Every socket a probe opens is close-on-exec from its creation, so no
//! container started meanwhile by another thread inherits it.

use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pnet::packet::ip::{IpNextHeaderProtocol, IpNextHeaderProtocols};
use pnet::packet::tcp::TcpFlags;

use crate::common::error::{Error, Result};
use crate::kernel::netns;

mod flow;
mod outcome;
mod wire;
pub use flow::*;
pub use outcome::*;
use wire::*;

/// Probes from one network namespace.
#[derive(Clone, Debug)]
pub struct Prober {
    /// `None`: the namespace of the thread that probes.
    netns: Option<Arc<OwnedFd>>,
}

impl Prober {
    /// Probes from the calling thread's network namespace (in a
    /// `#[netns_test]`, the test's container).
    pub fn here() -> Prober {
        Prober { netns: None }
    }

    /// Probes from the network namespace `netns` (e.g.
    /// [`Lab::outside_netns`](crate::Lab::outside_netns) or
    /// [`Container::netns`](crate::Container::netns)), without the caller
    /// entering it.
    pub fn in_netns(netns: BorrowedFd<'_>) -> Result<Prober> {
        let fd = netns
            .try_clone_to_owned()
            .map_err(io_error("duplicate a namespace descriptor"))?;
        Ok(Prober {
            netns: Some(Arc::new(fd)),
        })
    }

    /// Runs `f` in the prober's namespace: directly, or on a thread that
    /// enters it (for socket creation and blocking calls).
    fn inside<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        match &self.netns {
            None => f(),
            Some(netns) => netns::run_in(netns.as_fd(), f),
        }
    }

    fn raw_socket(&self, family: Family, protocol: IpNextHeaderProtocol) -> Result<RawSocket> {
        self.inside(|| {
            RawSocket::open(family, protocol).map_err(io_error(
                "open a raw socket (it needs CAP_NET_RAW; use TcpMode::Connect without it)",
            ))
        })
    }

    /// The source address the namespace would use towards `dst`, or the
    /// reason it has no route.
    fn source_for(&self, dst: IpAddr) -> Result<std::result::Result<IpAddr, Reason>> {
        self.inside(|| {
            let socket = UdpSocket::bind((Family::of(dst).unspecified(), 0))
                .map_err(io_error("open a UDP socket"))?;
            match socket.connect((dst, 9)) {
                Ok(()) => Ok(Ok(socket
                    .local_addr()
                    .map_err(io_error("read a socket's address"))?
                    .ip())),
                Err(e) => Reason::from_send_error(&e)
                    .map(Err)
                    .ok_or_else(|| Error::os(format!("look up the route to {dst}"), e)),
            }
        })
    }

    /// Sends ICMP echo requests to `dst` (ICMPv6 ones to an IPv6 address)
    /// and waits for their replies.
    ///
    /// ```no_run
    /// use std::net::{Ipv4Addr, Ipv6Addr};
    /// use netns_harness::probe::{ProbeOptions, Prober};
    /// let outcome = Prober::here().icmp(Ipv4Addr::new(10, 200, 0, 1), ProbeOptions::default())?;
    /// assert!(outcome.is_reachable(), "{outcome}");
    /// let dst: Ipv6Addr = "fd00:99::1".parse().unwrap();
    /// let outcome = Prober::here().icmp(dst, ProbeOptions::default())?;
    /// assert!(outcome.is_reachable(), "{outcome}");
    /// # Ok::<(), netns_harness::Error>(())
    /// ```
    pub fn icmp(&self, dst: impl Into<IpAddr>, options: ProbeOptions) -> Result<IcmpOutcome> {
        self.echo(dst.into(), options).map(|sent| sent.outcome)
    }

    /// As [`Prober::icmp`], and returns the flow sent: echoes with a random
    /// identifier, each carrying the flow's random [`Token`] as payload.
    ///
    /// ```no_run
    /// use std::net::Ipv4Addr;
    /// use netns_harness::probe::{ProbeOptions, Prober};
    /// let sent = Prober::here().icmp_flow(Ipv4Addr::new(198, 18, 0, 2), ProbeOptions::default())?;
    /// println!("{}: {}", sent.flow, sent.outcome);
    /// # Ok::<(), netns_harness::Error>(())
    /// ```
    pub fn icmp_flow(
        &self,
        dst: impl Into<IpAddr>,
        options: ProbeOptions,
    ) -> Result<Sent<IcmpOutcome>> {
        self.echo(dst.into(), options)
    }

    fn echo(&self, dst: IpAddr, options: ProbeOptions) -> Result<Sent<IcmpOutcome>> {
        options.validate()?;
        let dst = validate_destination(dst)?;
        let family = Family::of(dst);
        let id = next_id();
        let token = Token::random();
        let mut flow = Flow {
            src: family.unspecified(),
            src_port: id,
            dst,
            dst_port: 0,
            mark: Mark::Icmp { token },
        };
        let unreachable = |reason, flow| {
            Ok(Sent {
                outcome: IcmpOutcome::Unreachable { reason },
                flow,
            })
        };
        flow.src = match self.source_for(dst)? {
            Ok(src) => src,
            Err(reason) => return unreachable(reason, flow),
        };
        let socket = self.raw_socket(family, family.icmp())?;
        let mut buf = vec![0u8; 2048];
        let mut tally = EchoTally::default();
        let mut next_send = Instant::now();
        let mut deadline = next_send;
        loop {
            let now = Instant::now();
            if tally.sent_at.len() < usize::from(options.count) && now >= next_send {
                let seq = tally.sent_at.len() as u16;
                let mut echo = [0u8; ECHO_LEN];
                let packet = echo_request(&mut echo, (flow.src, dst), id, seq, &token);
                tally.sent_at.push(Instant::now());
                if let Err(e) = socket.send_to(packet, dst) {
                    return match Reason::from_send_error(&e) {
                        Some(reason) => unreachable(reason, flow),
                        None => Err(Error::os(format!("send an ICMP echo to {dst}"), e)),
                    };
                }
                next_send = now + options.interval;
                deadline = now + options.timeout;
            }
            let all_sent = tally.sent_at.len() == usize::from(options.count);
            // Every echo answered, by a reply or an ICMP error, or time is up.
            if all_sent && (tally.answered() >= options.count || Instant::now() >= deadline) {
                break;
            }
            // Until the next echo is due, or after the last one its timeout.
            let wait_until = if all_sent { deadline } else { next_send };
            let left = wait_until.saturating_duration_since(Instant::now());
            if let Some(answer) = next_icmp_answer(&socket, &mut buf, dst, id, left)? {
                tally.record(answer);
            }
        }
        let outcome = tally.outcome(options.count);
        Ok(Sent { outcome, flow })
    }

    /// Probes TCP port `port` of `dst`, over IPv4 or IPv6.
    ///
    /// ```no_run
    /// use std::net::Ipv6Addr;
    /// use netns_harness::probe::{ProbeOptions, Prober};
    /// let server: Ipv6Addr = "fd00:99::3".parse().unwrap();
    /// let outcome = Prober::here().tcp(server, 8080, ProbeOptions::default())?;
    /// assert!(outcome.is_open(), "{outcome}");
    /// # Ok::<(), netns_harness::Error>(())
    /// ```
    pub fn tcp(
        &self,
        dst: impl Into<IpAddr>,
        port: u16,
        options: ProbeOptions,
    ) -> Result<TcpOutcome> {
        options.validate()?;
        let dst = validate_destination(dst.into())?;
        validate_port(port)?;
        match options.tcp_mode {
            TcpMode::Syn => self.tcp_syn(dst, port, options.timeout).map(|s| s.outcome),
            TcpMode::Connect => self.tcp_connect(dst, port, options.timeout),
        }
    }

    /// As [`Prober::tcp`] with [`TcpMode::Syn`], and returns the flow sent:
    /// a SYN from a port of its own with a random initial sequence number.
    /// With [`TcpMode::Connect`] the kernel chooses the sequence number, so
    /// the flow could not be told apart: that is an [`Error::InvalidProbe`].
    pub fn tcp_flow(
        &self,
        dst: impl Into<IpAddr>,
        port: u16,
        options: ProbeOptions,
    ) -> Result<Sent<TcpOutcome>> {
        options.validate()?;
        let dst = validate_destination(dst.into())?;
        validate_port(port)?;
        if options.tcp_mode == TcpMode::Connect {
            return Err(Error::InvalidProbe {
                reason: "a TCP flow is marked by its initial sequence number, which only \
                         TcpMode::Syn chooses; use TcpMode::Syn"
                    .to_owned(),
            });
        }
        self.tcp_syn(dst, port, options.timeout)
    }

    fn tcp_connect(&self, dst: IpAddr, port: u16, timeout: Duration) -> Result<TcpOutcome> {
        self.inside(|| {
            let start = Instant::now();
            Ok(
                match TcpStream::connect_timeout(&SocketAddr::from((dst, port)), timeout) {
                    Ok(_) => TcpOutcome::Open {
                        rtt: start.elapsed(),
                    },
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        TcpOutcome::Closed {
                            rtt: start.elapsed(),
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => TcpOutcome::Filtered {
                        reason: Reason::Timeout,
                    },
                    Err(e) => match Reason::from_send_error(&e) {
                        Some(reason) => TcpOutcome::Filtered { reason },
                        None => {
                            let to = SocketAddr::new(dst, port);
                            return Err(Error::os(format!("connect to {to}"), e));
                        }
                    },
                },
            )
        })
    }

    fn tcp_syn(&self, dst: IpAddr, port: u16, timeout: Duration) -> Result<Sent<TcpOutcome>> {
        let family = Family::of(dst);
        let sport = syn_source_port();
        let seq = random_u64() as u32;
        let mut flow = Flow {
            src: family.unspecified(),
            src_port: sport,
            dst,
            dst_port: port,
            mark: Mark::Tcp { isn: seq },
        };
        let done = |outcome, flow| Ok(Sent { outcome, flow });
        flow.src = match self.source_for(dst)? {
            Ok(src) => src,
            Err(reason) => return done(TcpOutcome::Filtered { reason }, flow),
        };
        let sockets = SynSockets {
            tcp: self.raw_socket(family, IpNextHeaderProtocols::Tcp)?,
            icmp: self.raw_socket(family, family.icmp())?,
        };
        let start = Instant::now();
        if let Err(e) = sockets.send(&flow, seq, TcpFlags::SYN) {
            return match Reason::from_send_error(&e) {
                Some(reason) => done(TcpOutcome::Filtered { reason }, flow),
                None => Err(Error::os(
                    format!("send a TCP SYN to {}", SocketAddr::new(dst, port)),
                    e,
                )),
            };
        }
        let deadline = start + timeout;
        let mut buf = vec![0u8; 2048];
        let outcome = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break TcpOutcome::Filtered {
                    reason: Reason::Timeout,
                };
            }
            let answer = sockets.answer(&flow, seq, left, &mut buf)?;
            let rtt = start.elapsed();
            match answer {
                None => {}
                Some(SynAnswer::Reset) => break TcpOutcome::Closed { rtt },
                Some(SynAnswer::Accepted) => {
                    // Reset the half-open connection (the kernel would too,
                    // finding no socket for it) so the server never sees it.
                    let _ = sockets.send(&flow, seq.wrapping_add(1), TcpFlags::RST);
                    break TcpOutcome::Open { rtt };
                }
                Some(SynAnswer::Icmp(Reason::PortUnreachable)) => break TcpOutcome::Closed { rtt },
                Some(SynAnswer::Icmp(reason)) => break TcpOutcome::Filtered { reason },
            }
        };
        done(outcome, flow)
    }

    /// Sends `payload` to UDP port `port` of `dst` and waits for a reply or
    /// an ICMP (ICMPv6) error.
    pub fn udp(
        &self,
        dst: impl Into<IpAddr>,
        port: u16,
        payload: &[u8],
        options: ProbeOptions,
    ) -> Result<UdpOutcome> {
        self.udp_datagram(dst.into(), port, payload, options)
            .map(|(outcome, ..)| outcome)
    }

    /// As [`Prober::udp`], with the flow's random [`Token`] appended to
    /// `payload` (so the datagram is `payload` followed by
    /// [`Token::LEN`] bytes), and returns the flow sent.
    pub fn udp_flow(
        &self,
        dst: impl Into<IpAddr>,
        port: u16,
        payload: &[u8],
        options: ProbeOptions,
    ) -> Result<Sent<UdpOutcome>> {
        let token = Token::random();
        let mut datagram = payload.to_vec();
        datagram.extend_from_slice(token.as_bytes());
        let (outcome, from, to) = self.udp_datagram(dst.into(), port, &datagram, options)?;
        let flow = Flow {
            src: from.ip(),
            src_port: from.port(),
            dst: to.ip(),
            dst_port: to.port(),
            mark: Mark::Udp { token },
        };
        Ok(Sent { outcome, flow })
    }

    /// Sends `datagram`; returns the outcome, the socket's own address and
    /// where it sent (`dst` as validated).
    fn udp_datagram(
        &self,
        dst: IpAddr,
        port: u16,
        datagram: &[u8],
        options: ProbeOptions,
    ) -> Result<(UdpOutcome, SocketAddr, SocketAddr)> {
        options.validate()?;
        let dst = validate_destination(dst)?;
        validate_port(port)?;
        let unspecified = Family::of(dst).unspecified();
        let socket = self
            .inside(|| UdpSocket::bind((unspecified, 0)).map_err(io_error("open a UDP socket")))?;
        let local = |socket: &UdpSocket| {
            socket
                .local_addr()
                .unwrap_or(SocketAddr::new(unspecified, 0))
        };
        let to = SocketAddr::new(dst, port);
        if let Err(e) = socket.connect(to) {
            return match Reason::from_send_error(&e) {
                Some(reason) => Ok((UdpOutcome::Unreachable { reason }, local(&socket), to)),
                None => Err(Error::os(format!("connect a UDP socket to {to}"), e)),
            };
        }
        let src = local(&socket);
        socket
            .set_read_timeout(Some(options.timeout))
            .map_err(io_error("set a socket timeout"))?;
        let start = Instant::now();
        if let Err(e) = socket.send(datagram) {
            return match Reason::from_send_error(&e) {
                Some(reason) => Ok((UdpOutcome::Unreachable { reason }, src, to)),
                None => Err(Error::os(format!("send to {to}"), e)),
            };
        }
        let mut buf = [0u8; 2048];
        let outcome = match socket.recv(&mut buf) {
            Ok(_) => UdpOutcome::Open {
                rtt: start.elapsed(),
            },
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => UdpOutcome::Closed,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                UdpOutcome::OpenOrFiltered
            }
            Err(e) => match Reason::from_send_error(&e) {
                Some(reason) => UdpOutcome::Unreachable { reason },
                None => return Err(Error::os(format!("receive from {to}"), e)),
            },
        };
        Ok((outcome, src, to))
    }
}
