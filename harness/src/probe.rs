//! The prober: ICMP echo, TCP (SYN or `connect()`) and UDP reachability,
//! from any network namespace of a lab, with raw sockets and packets built
//! and parsed by pnet.
//!
//! A [`Prober`] belongs to one namespace: the calling thread's
//! ([`Prober::here`]) or another one ([`Prober::in_netns`]), whose sockets
//! are opened by a short-lived thread that enters it, so the caller never
//! leaves its own namespace. Each probe has sockets of its own and matches
//! answers by ICMP identifier and sequence, or by TCP ports and sequence, so
//! concurrent probes never take each other's answers.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use pnet::packet::Packet;
use pnet::packet::icmp::echo_reply::EchoReplyPacket;
use pnet::packet::icmp::echo_request::MutableEchoRequestPacket;
use pnet::packet::icmp::{IcmpPacket, IcmpTypes};
use pnet::packet::ip::IpNextHeaderProtocols;
use pnet::packet::ipv4::Ipv4Packet;
use pnet::packet::tcp::{MutableTcpPacket, TcpFlags};
use pnet::transport::{
    TransportChannelType, TransportProtocol, TransportReceiver, TransportSender, icmp_packet_iter,
    tcp_packet_iter, transport_channel,
};

use crate::error::{Error, Result};
use crate::{netns, sys};

/// Why a destination did not answer as hoped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No answer within the timeout.
    Timeout,
    /// The prober's namespace has no route to the destination (known at
    /// once, without sending).
    NoRoute,
    /// ICMP destination unreachable: network unreachable.
    NetworkUnreachable,
    /// ICMP destination unreachable: host unreachable (e.g. ARP failed).
    HostUnreachable,
    /// ICMP destination unreachable: administratively prohibited (a
    /// firewall's `reject`).
    Prohibited,
    /// ICMP destination unreachable: port unreachable.
    PortUnreachable,
    /// Another ICMP destination-unreachable code.
    Unreachable(u8),
}

impl Reason {
    fn from_icmp_code(code: u8) -> Self {
        match code {
            0 | 6 | 11 => Reason::NetworkUnreachable,
            1 | 7 | 12 => Reason::HostUnreachable,
            3 => Reason::PortUnreachable,
            9 | 10 | 13 => Reason::Prohibited,
            other => Reason::Unreachable(other),
        }
    }

    fn from_send_error(err: &std::io::Error) -> Option<Self> {
        match err.raw_os_error() {
            Some(libc::ENETUNREACH) => Some(Reason::NoRoute),
            Some(libc::EHOSTUNREACH) => Some(Reason::HostUnreachable),
            Some(libc::EACCES | libc::EPERM) => Some(Reason::Prohibited),
            _ => None,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Timeout => f.write_str("no answer before the timeout"),
            Reason::NoRoute => f.write_str("no route"),
            Reason::NetworkUnreachable => f.write_str("network unreachable"),
            Reason::HostUnreachable => f.write_str("host unreachable"),
            Reason::Prohibited => f.write_str("administratively prohibited"),
            Reason::PortUnreachable => f.write_str("port unreachable"),
            Reason::Unreachable(code) => write!(f, "destination unreachable (code {code})"),
        }
    }
}

/// The outcome of an ICMP echo probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpOutcome {
    /// At least one echo was answered; `rtt` is the fastest answer.
    Reachable {
        /// The shortest round trip.
        rtt: Duration,
        /// How many echoes were answered.
        received: u16,
        /// How many were sent.
        sent: u16,
    },
    /// No echo was answered.
    Unreachable {
        /// The most telling answer: an ICMP error if one came, else a timeout.
        reason: Reason,
    },
}

impl IcmpOutcome {
    /// Whether an echo was answered.
    pub fn is_reachable(&self) -> bool {
        matches!(self, IcmpOutcome::Reachable { .. })
    }
}

impl fmt::Display for IcmpOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IcmpOutcome::Reachable {
                rtt,
                received,
                sent,
            } => {
                write!(
                    f,
                    "reachable ({received}/{sent} answered, best rtt {rtt:?})"
                )
            }
            IcmpOutcome::Unreachable { reason } => write!(f, "unreachable: {reason}"),
        }
    }
}

/// The outcome of a TCP probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpOutcome {
    /// The port accepts connections (SYN-ACK; the half-open connection was
    /// reset, so the server never saw it).
    Open {
        /// Until the SYN-ACK.
        rtt: Duration,
    },
    /// Nothing listens there (RST, or ICMP port unreachable).
    Closed {
        /// Until the answer.
        rtt: Duration,
    },
    /// No usable answer: dropped, prohibited, or unreachable.
    Filtered {
        /// Why.
        reason: Reason,
    },
}

impl TcpOutcome {
    /// Whether the port is open.
    pub fn is_open(&self) -> bool {
        matches!(self, TcpOutcome::Open { .. })
    }
}

impl fmt::Display for TcpOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TcpOutcome::Open { rtt } => write!(f, "open (rtt {rtt:?})"),
            TcpOutcome::Closed { rtt } => write!(f, "closed (rtt {rtt:?})"),
            TcpOutcome::Filtered { reason } => write!(f, "filtered: {reason}"),
        }
    }
}

/// The outcome of a UDP probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpOutcome {
    /// A datagram came back.
    Open {
        /// Until the reply.
        rtt: Duration,
    },
    /// ICMP port unreachable: nothing listens there.
    Closed,
    /// No answer: a listener that does not reply, or a firewall that drops.
    OpenOrFiltered,
    /// Another ICMP error, or no route.
    Unreachable {
        /// Why.
        reason: Reason,
    },
}

impl fmt::Display for UdpOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UdpOutcome::Open { rtt } => write!(f, "open (rtt {rtt:?})"),
            UdpOutcome::Closed => f.write_str("closed"),
            UdpOutcome::OpenOrFiltered => f.write_str("open or filtered (no answer)"),
            UdpOutcome::Unreachable { reason } => write!(f, "unreachable: {reason}"),
        }
    }
}

/// How a TCP probe asks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TcpMode {
    /// A raw SYN, answered by SYN-ACK, RST or an ICMP error (the default).
    #[default]
    Syn,
    /// A plain `connect()`, for namespaces without raw sockets; a
    /// connection that succeeds is closed at once. The kernel reports an
    /// ICMP "administratively prohibited" to `connect()` as host
    /// unreachable, so that is the reason given.
    Connect,
}

/// Settings of a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct ProbeOptions {
    count: u16,
    interval: Duration,
    timeout: Duration,
    tcp_mode: TcpMode,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            count: 1,
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(1),
            tcp_mode: TcpMode::Syn,
        }
    }
}

impl ProbeOptions {
    /// ICMP: how many echoes to send (default 1).
    pub fn count(mut self, count: u16) -> Self {
        self.count = count;
        self
    }

    /// ICMP: the pause between echoes (default 200 ms).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How long to wait for an answer after the last request (default 1 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// TCP: SYN or `connect()` (default SYN).
    pub fn tcp_mode(mut self, mode: TcpMode) -> Self {
        self.tcp_mode = mode;
        self
    }

    fn validate(&self) -> Result<()> {
        let invalid = |reason: &str| {
            Err(Error::InvalidProbe {
                reason: reason.to_owned(),
            })
        };
        if self.timeout.is_zero() {
            return invalid(
                "the timeout is zero; give the destination some time to answer, e.g. 1 s",
            );
        }
        if self.count == 0 {
            return invalid("the count is zero; send at least one echo");
        }
        Ok(())
    }
}

fn validate_destination(dst: Ipv4Addr) -> Result<()> {
    let why = if dst.is_unspecified() {
        "it is the unspecified address 0.0.0.0"
    } else if dst.is_multicast() {
        "it is a multicast address"
    } else if dst.is_broadcast() {
        "it is the broadcast address"
    } else {
        return Ok(());
    };
    Err(Error::InvalidProbe {
        reason: format!("cannot probe {dst}: {why}; probe a unicast address"),
    })
}

fn validate_port(port: u16) -> Result<()> {
    if port == 0 {
        return Err(Error::InvalidProbe {
            reason: "port 0 cannot be probed; give a port from 1 to 65535".to_owned(),
        });
    }
    Ok(())
}

/// Distinguishes probes: ICMP identifiers, TCP source ports. Consecutive
/// within a process, from a random start: test containers are all PID 1,
/// and identical identifiers from several containers at once can meet in
/// the NAT, which then drops one of them.
fn next_id() -> u16 {
    static NEXT_ID: OnceLock<AtomicU16> = OnceLock::new();
    NEXT_ID
        .get_or_init(|| {
            use std::hash::{BuildHasher, Hasher};
            // RandomState's keys come from the operating system's randomness.
            let random = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            AtomicU16::new(random as u16)
        })
        .fetch_add(1, Ordering::Relaxed)
}

/// TCP source ports of SYN probes: above Linux's ephemeral range
/// (32768–60999), so they never meet a connection of the namespace.
fn syn_source_port() -> u16 {
    61000 + next_id() % 4500
}

fn io_error(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::os(what, e)
}

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

    fn channel(
        &self,
        protocol: pnet::packet::ip::IpNextHeaderProtocol,
    ) -> Result<(TransportSender, TransportReceiver)> {
        self.inside(|| {
            transport_channel(
                4096,
                TransportChannelType::Layer4(TransportProtocol::Ipv4(protocol)),
            )
            .map_err(io_error(
                "open a raw socket (it needs CAP_NET_RAW; use TcpMode::Connect without it)",
            ))
        })
    }

    /// The source address the namespace would use towards `dst`, or the
    /// reason it has no route.
    fn source_for(&self, dst: Ipv4Addr) -> Result<std::result::Result<Ipv4Addr, Reason>> {
        self.inside(|| {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
                .map_err(io_error("open a UDP socket"))?;
            match socket.connect((dst, 9)) {
                Ok(()) => match socket
                    .local_addr()
                    .map_err(io_error("read a socket's address"))?
                {
                    SocketAddr::V4(addr) => Ok(Ok(*addr.ip())),
                    SocketAddr::V6(_) => Ok(Err(Reason::NoRoute)),
                },
                Err(e) => Reason::from_send_error(&e)
                    .map(Err)
                    .ok_or_else(|| Error::os(format!("look up the route to {dst}"), e)),
            }
        })
    }

    /// Sends ICMP echo requests to `dst` and waits for their replies.
    ///
    /// ```no_run
    /// use netns_harness::probe::{ProbeOptions, Prober};
    /// let outcome = Prober::here().icmp("10.200.0.1".parse().unwrap(), ProbeOptions::default())?;
    /// assert!(outcome.is_reachable(), "{outcome}");
    /// # Ok::<(), netns_harness::Error>(())
    /// ```
    pub fn icmp(&self, dst: Ipv4Addr, options: ProbeOptions) -> Result<IcmpOutcome> {
        options.validate()?;
        validate_destination(dst)?;
        let (mut tx, mut rx) = self.channel(IpNextHeaderProtocols::Icmp)?;
        let rx_fd = rx.socket.fd;
        let mut replies = icmp_packet_iter(&mut rx);
        let id = next_id();
        let mut sent_at: Vec<Instant> = Vec::new();
        let mut best: Option<Duration> = None;
        let mut received = 0u16;
        let mut error: Option<Reason> = None;
        let mut errors = 0u16;
        let mut next_send = Instant::now();
        let mut deadline = next_send;
        loop {
            let now = Instant::now();
            if sent_at.len() < usize::from(options.count) && now >= next_send {
                let seq = sent_at.len() as u16;
                let mut buf = [0u8; 16];
                let packet = echo_request(&mut buf, id, seq);
                sent_at.push(Instant::now());
                if let Err(e) = tx.send_to(packet, IpAddr::V4(dst)) {
                    return match Reason::from_send_error(&e) {
                        Some(reason) => Ok(IcmpOutcome::Unreachable { reason }),
                        None => Err(Error::os(format!("send an ICMP echo to {dst}"), e)),
                    };
                }
                next_send = now + options.interval;
                deadline = now + options.timeout;
            }
            let all_sent = sent_at.len() == usize::from(options.count);
            // Every echo answered, by a reply or an ICMP error, or time is up.
            let answered = received.saturating_add(errors) >= options.count;
            if all_sent && (answered || Instant::now() >= deadline) {
                break;
            }
            // Until the next echo is due, or after the last one its timeout.
            let wait_until = if all_sent { deadline } else { next_send };
            let left = wait_until.saturating_duration_since(Instant::now());
            if sys::poll_any(&[rx_fd], left)
                .map_err(io_error("wait for ICMP"))?
                .is_none()
            {
                continue;
            }
            let (packet, from) = replies.next().map_err(io_error("receive ICMP"))?;
            match classify_icmp(&packet, from, dst, id) {
                Some(IcmpAnswer::Reply(seq)) => {
                    if let Some(at) = sent_at.get(usize::from(seq)) {
                        let rtt = at.elapsed();
                        best = Some(best.map_or(rtt, |b| b.min(rtt)));
                        received += 1;
                    }
                }
                Some(IcmpAnswer::Error(reason)) => {
                    error = Some(reason);
                    errors += 1;
                }
                None => {}
            }
        }
        Ok(match best {
            Some(rtt) => IcmpOutcome::Reachable {
                rtt,
                received,
                sent: options.count,
            },
            None => IcmpOutcome::Unreachable {
                reason: error.unwrap_or(Reason::Timeout),
            },
        })
    }

    /// Probes TCP port `port` of `dst`.
    pub fn tcp(&self, dst: Ipv4Addr, port: u16, options: ProbeOptions) -> Result<TcpOutcome> {
        options.validate()?;
        validate_destination(dst)?;
        validate_port(port)?;
        match options.tcp_mode {
            TcpMode::Syn => self.tcp_syn(dst, port, options.timeout),
            TcpMode::Connect => self.tcp_connect(dst, port, options.timeout),
        }
    }

    fn tcp_connect(&self, dst: Ipv4Addr, port: u16, timeout: Duration) -> Result<TcpOutcome> {
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
                        None => return Err(Error::os(format!("connect to {dst}:{port}"), e)),
                    },
                },
            )
        })
    }

    fn tcp_syn(&self, dst: Ipv4Addr, port: u16, timeout: Duration) -> Result<TcpOutcome> {
        let src = match self.source_for(dst)? {
            Ok(src) => src,
            Err(reason) => return Ok(TcpOutcome::Filtered { reason }),
        };
        let (mut tcp_tx, mut tcp_rx) = self.channel(IpNextHeaderProtocols::Tcp)?;
        let (_, mut icmp_rx) = self.channel(IpNextHeaderProtocols::Icmp)?;
        let fds = [tcp_rx.socket.fd, icmp_rx.socket.fd];
        let mut segments = tcp_packet_iter(&mut tcp_rx);
        let mut errors = icmp_packet_iter(&mut icmp_rx);
        let sport = syn_source_port();
        let seq = u32::from(next_id()) << 16 | u32::from(sport);
        let mut buf = [0u8; 20];
        let syn = tcp_segment(&mut buf, (src, sport), (dst, port), seq, 0, TcpFlags::SYN);
        let start = Instant::now();
        if let Err(e) = tcp_tx.send_to(syn, IpAddr::V4(dst)) {
            return match Reason::from_send_error(&e) {
                Some(reason) => Ok(TcpOutcome::Filtered { reason }),
                None => Err(Error::os(format!("send a TCP SYN to {dst}:{port}"), e)),
            };
        }
        let deadline = start + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(TcpOutcome::Filtered {
                    reason: Reason::Timeout,
                });
            }
            let Some(ready) = sys::poll_any(&fds, left).map_err(io_error("wait for TCP"))? else {
                continue;
            };
            if ready == 0 {
                let (segment, from) = segments.next().map_err(io_error("receive TCP"))?;
                let answers = from == IpAddr::V4(dst)
                    && segment.get_source() == port
                    && segment.get_destination() == sport
                    && segment.get_acknowledgement() == seq.wrapping_add(1);
                if !answers {
                    continue;
                }
                let flags = segment.get_flags();
                let rtt = start.elapsed();
                if flags & TcpFlags::RST != 0 {
                    return Ok(TcpOutcome::Closed { rtt });
                }
                if flags & (TcpFlags::SYN | TcpFlags::ACK) == TcpFlags::SYN | TcpFlags::ACK {
                    // Reset the half-open connection (the kernel would too,
                    // finding no socket for it) so the server never sees it.
                    let mut buf = [0u8; 20];
                    let rst = tcp_segment(
                        &mut buf,
                        (src, sport),
                        (dst, port),
                        seq.wrapping_add(1),
                        0,
                        TcpFlags::RST,
                    );
                    let _ = tcp_tx.send_to(rst, IpAddr::V4(dst));
                    return Ok(TcpOutcome::Open { rtt });
                }
            } else {
                let (packet, _) = errors.next().map_err(io_error("receive ICMP"))?;
                if let Some(code) = icmp_error_about_tcp(&packet, dst, port, sport) {
                    return Ok(match Reason::from_icmp_code(code) {
                        Reason::PortUnreachable => TcpOutcome::Closed {
                            rtt: start.elapsed(),
                        },
                        reason => TcpOutcome::Filtered { reason },
                    });
                }
            }
        }
    }

    /// Sends `payload` to UDP port `port` of `dst` and waits for a reply or
    /// an ICMP error.
    pub fn udp(
        &self,
        dst: Ipv4Addr,
        port: u16,
        payload: &[u8],
        options: ProbeOptions,
    ) -> Result<UdpOutcome> {
        options.validate()?;
        validate_destination(dst)?;
        validate_port(port)?;
        let socket = self.inside(|| {
            UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(io_error("open a UDP socket"))
        })?;
        if let Err(e) = socket.connect((dst, port)) {
            return match Reason::from_send_error(&e) {
                Some(reason) => Ok(UdpOutcome::Unreachable { reason }),
                None => Err(Error::os(
                    format!("connect a UDP socket to {dst}:{port}"),
                    e,
                )),
            };
        }
        socket
            .set_read_timeout(Some(options.timeout))
            .map_err(io_error("set a socket timeout"))?;
        let start = Instant::now();
        if let Err(e) = socket.send(payload) {
            return match Reason::from_send_error(&e) {
                Some(reason) => Ok(UdpOutcome::Unreachable { reason }),
                None => Err(Error::os(format!("send to {dst}:{port}"), e)),
            };
        }
        let mut buf = [0u8; 2048];
        Ok(match socket.recv(&mut buf) {
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
                None => return Err(Error::os(format!("receive from {dst}:{port}"), e)),
            },
        })
    }
}

/// Builds an echo request with `id` and `seq` in `buf`.
fn echo_request(buf: &mut [u8; 16], id: u16, seq: u16) -> MutableEchoRequestPacket<'_> {
    let mut packet = MutableEchoRequestPacket::new(buf).expect("16 bytes hold an echo request");
    packet.set_icmp_type(IcmpTypes::EchoRequest);
    packet.set_identifier(id);
    packet.set_sequence_number(seq);
    packet.set_payload(b"netns-ha");
    let checksum = pnet::util::checksum(packet.packet(), 1);
    packet.set_checksum(checksum);
    packet
}

/// Builds a TCP segment without options in `buf`.
fn tcp_segment(
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

enum IcmpAnswer {
    Reply(u16),
    Error(Reason),
}

/// What an ICMP packet from `from` says about our echoes `id` to `dst`.
fn classify_icmp(
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
fn icmp_error_about_tcp(
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
fn quoted<'p>(packet: &'p IcmpPacket<'_>) -> Option<(Ipv4Packet<'p>, &'p [u8])> {
    // type, code, checksum, 4 unused bytes, then the quoted datagram
    let inner_bytes = packet.packet().get(8..)?;
    let inner = Ipv4Packet::new(inner_bytes)?;
    let header_len = usize::from(inner.get_header_length()) * 4;
    let data = inner_bytes.get(header_len..)?;
    Some((inner, data))
}
