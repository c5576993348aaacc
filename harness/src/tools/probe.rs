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

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use pnet::packet::Packet;
use pnet::packet::icmp::echo_reply::EchoReplyPacket;
use pnet::packet::icmp::echo_request::MutableEchoRequestPacket;
use pnet::packet::icmp::{IcmpPacket, IcmpTypes};
use pnet::packet::ip::{IpNextHeaderProtocol, IpNextHeaderProtocols};
use pnet::packet::ipv4::Ipv4Packet;
use pnet::packet::tcp::{MutableTcpPacket, TcpFlags, TcpPacket};

use crate::common::error::{Error, Result};
use crate::{kernel::netns, kernel::sys};

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
        .get_or_init(|| AtomicU16::new(random_u64() as u16))
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

/// 64 random bits: SipHash, keyed from the operating system's randomness
/// (a fresh `RandomState` per call), of a per-process counter.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// 16 random bytes a probe puts in its packets' payload, so that they can
/// be told apart from every other packet of the lab, whatever the NAT did
/// to their addresses, ports and identifiers.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token([u8; 16]);

impl Token {
    /// The token's length in bytes.
    pub const LEN: usize = 16;

    /// A fresh random token.
    pub fn random() -> Token {
        let mut bytes = [0u8; Self::LEN];
        bytes[..8].copy_from_slice(&random_u64().to_be_bytes());
        bytes[8..].copy_from_slice(&random_u64().to_be_bytes());
        Token(bytes)
    }

    /// Its bytes, as they appear in a packet.
    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({self})")
    }
}

/// What marks the packets of a [`Flow`], unchanged by NAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mark {
    /// ICMP echo requests whose payload is `token` (their replies carry it
    /// back).
    Icmp {
        /// The payload of every echo of the flow.
        token: Token,
    },
    /// A UDP datagram whose payload ends with `token`.
    Udp {
        /// The last bytes of the datagram.
        token: Token,
    },
    /// A TCP SYN with this random initial sequence number (the SYN-ACK
    /// acknowledges `isn + 1`).
    Tcp {
        /// The initial sequence number.
        isn: u32,
    },
}

/// A flow a probe sent, as it left the prober's namespace: enough to find
/// it again on the far side of a NAT or in the NAT's connection-tracking
/// table, among any number of other flows with the same addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    /// The source address (unspecified when the namespace had no route).
    pub src: Ipv4Addr,
    /// The source port; for ICMP, the echo identifier.
    pub src_port: u16,
    /// The destination address.
    pub dst: Ipv4Addr,
    /// The destination port; 0 for ICMP.
    pub dst_port: u16,
    /// What marks its packets.
    pub mark: Mark,
}

impl Flow {
    /// Its IP protocol number (1 ICMP, 6 TCP, 17 UDP).
    pub fn protocol(&self) -> u8 {
        match self.mark {
            Mark::Icmp { .. } => IpNextHeaderProtocols::Icmp.0,
            Mark::Tcp { .. } => IpNextHeaderProtocols::Tcp.0,
            Mark::Udp { .. } => IpNextHeaderProtocols::Udp.0,
        }
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (src, dst) = (self.src, self.dst);
        let (sport, dport) = (self.src_port, self.dst_port);
        match self.mark {
            Mark::Icmp { token } => write!(f, "icmp echo {src} > {dst} id {sport} token {token}"),
            Mark::Udp { token } => write!(f, "udp {src}:{sport} > {dst}:{dport} token {token}"),
            Mark::Tcp { isn } => write!(f, "tcp {src}:{sport} > {dst}:{dport} isn {isn}"),
        }
    }
}

/// A probe's outcome and the flow it sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent<O> {
    /// What the destination answered.
    pub outcome: O,
    /// What was sent, to find it elsewhere.
    pub flow: Flow,
}

/// A raw IPv4 socket of one protocol, opened close-on-exec.
///
/// pnet's `transport_channel` opens its socket without `SOCK_CLOEXEC` and
/// cannot be given one, and setting `FD_CLOEXEC` afterwards leaves a window
/// in which a container cloned by another thread inherits the socket; so
/// the prober opens its raw sockets itself (pnet still builds and parses
/// the packets). Reads return whole IPv4 datagrams, header included.
struct RawSocket {
    file: File,
}

impl RawSocket {
    /// Opens a raw socket of `protocol` in the calling thread's namespace.
    ///
    /// # References
    /// `raw(7)`
    fn open(protocol: IpNextHeaderProtocol) -> std::io::Result<RawSocket> {
        // SAFETY: socket takes no pointers.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::c_int::from(protocol.0),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: socket succeeded, so `fd` is open and ours alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(RawSocket {
            file: File::from(fd),
        })
    }

    /// Sends `packet` (a transport header and payload; the kernel adds the
    /// IP header) to `dst`.
    ///
    /// # References
    /// `sendto(2)`
    fn send_to(&self, packet: &[u8], dst: Ipv4Addr) -> std::io::Result<()> {
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
    fn recv<'b>(&self, buf: &'b mut [u8]) -> std::io::Result<Option<Ipv4Packet<'b>>> {
        let n = (&self.file).read(buf)?;
        Ok(Ipv4Packet::new(&buf[..n]))
    }

    fn raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
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

    fn raw_socket(&self, protocol: IpNextHeaderProtocol) -> Result<RawSocket> {
        self.inside(|| {
            RawSocket::open(protocol).map_err(io_error(
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
        self.icmp_flow(dst, options).map(|sent| sent.outcome)
    }

    /// As [`Prober::icmp`], and returns the flow sent: echoes with a random
    /// identifier, each carrying the flow's random [`Token`] as payload.
    ///
    /// ```no_run
    /// use netns_harness::probe::{ProbeOptions, Prober};
    /// let sent = Prober::here().icmp_flow("198.18.0.2".parse().unwrap(), ProbeOptions::default())?;
    /// println!("{}: {}", sent.flow, sent.outcome);
    /// # Ok::<(), netns_harness::Error>(())
    /// ```
    pub fn icmp_flow(&self, dst: Ipv4Addr, options: ProbeOptions) -> Result<Sent<IcmpOutcome>> {
        options.validate()?;
        validate_destination(dst)?;
        let id = next_id();
        let token = Token::random();
        let mut flow = Flow {
            src: Ipv4Addr::UNSPECIFIED,
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
        let socket = self.raw_socket(IpNextHeaderProtocols::Icmp)?;
        let mut buf = vec![0u8; 2048];
        let mut tally = EchoTally::default();
        let mut next_send = Instant::now();
        let mut deadline = next_send;
        loop {
            let now = Instant::now();
            if tally.sent_at.len() < usize::from(options.count) && now >= next_send {
                let seq = tally.sent_at.len() as u16;
                let mut echo = [0u8; ECHO_LEN];
                let packet = echo_request(&mut echo, id, seq, &token);
                tally.sent_at.push(Instant::now());
                if let Err(e) = socket.send_to(packet.packet(), dst) {
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

    /// Probes TCP port `port` of `dst`.
    pub fn tcp(&self, dst: Ipv4Addr, port: u16, options: ProbeOptions) -> Result<TcpOutcome> {
        options.validate()?;
        validate_destination(dst)?;
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
        dst: Ipv4Addr,
        port: u16,
        options: ProbeOptions,
    ) -> Result<Sent<TcpOutcome>> {
        options.validate()?;
        validate_destination(dst)?;
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

    fn tcp_syn(&self, dst: Ipv4Addr, port: u16, timeout: Duration) -> Result<Sent<TcpOutcome>> {
        let sport = syn_source_port();
        let seq = random_u64() as u32;
        let mut flow = Flow {
            src: Ipv4Addr::UNSPECIFIED,
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
            tcp: self.raw_socket(IpNextHeaderProtocols::Tcp)?,
            icmp: self.raw_socket(IpNextHeaderProtocols::Icmp)?,
        };
        let start = Instant::now();
        if let Err(e) = sockets.send(&flow, seq, TcpFlags::SYN) {
            return match Reason::from_send_error(&e) {
                Some(reason) => done(TcpOutcome::Filtered { reason }, flow),
                None => Err(Error::os(format!("send a TCP SYN to {dst}:{port}"), e)),
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
                Some(SynAnswer::Icmp(code)) => match Reason::from_icmp_code(code) {
                    Reason::PortUnreachable => break TcpOutcome::Closed { rtt },
                    reason => break TcpOutcome::Filtered { reason },
                },
            }
        };
        done(outcome, flow)
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
        self.udp_datagram(dst, port, payload, options)
            .map(|(outcome, _)| outcome)
    }

    /// As [`Prober::udp`], with the flow's random [`Token`] appended to
    /// `payload` (so the datagram is `payload` followed by
    /// [`Token::LEN`] bytes), and returns the flow sent.
    pub fn udp_flow(
        &self,
        dst: Ipv4Addr,
        port: u16,
        payload: &[u8],
        options: ProbeOptions,
    ) -> Result<Sent<UdpOutcome>> {
        let token = Token::random();
        let mut datagram = payload.to_vec();
        datagram.extend_from_slice(token.as_bytes());
        let (outcome, src) = self.udp_datagram(dst, port, &datagram, options)?;
        let flow = Flow {
            src: *src.ip(),
            src_port: src.port(),
            dst,
            dst_port: port,
            mark: Mark::Udp { token },
        };
        Ok(Sent { outcome, flow })
    }

    /// Sends `datagram`; returns the outcome and the socket's own address.
    fn udp_datagram(
        &self,
        dst: Ipv4Addr,
        port: u16,
        datagram: &[u8],
        options: ProbeOptions,
    ) -> Result<(UdpOutcome, std::net::SocketAddrV4)> {
        options.validate()?;
        validate_destination(dst)?;
        validate_port(port)?;
        let socket = self.inside(|| {
            UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(io_error("open a UDP socket"))
        })?;
        let local = |socket: &UdpSocket| match socket.local_addr() {
            Ok(SocketAddr::V4(addr)) => addr,
            _ => std::net::SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        };
        if let Err(e) = socket.connect((dst, port)) {
            return match Reason::from_send_error(&e) {
                Some(reason) => Ok((UdpOutcome::Unreachable { reason }, local(&socket))),
                None => Err(Error::os(
                    format!("connect a UDP socket to {dst}:{port}"),
                    e,
                )),
            };
        }
        let src = local(&socket);
        socket
            .set_read_timeout(Some(options.timeout))
            .map_err(io_error("set a socket timeout"))?;
        let start = Instant::now();
        if let Err(e) = socket.send(datagram) {
            return match Reason::from_send_error(&e) {
                Some(reason) => Ok((UdpOutcome::Unreachable { reason }, src)),
                None => Err(Error::os(format!("send to {dst}:{port}"), e)),
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
                None => return Err(Error::os(format!("receive from {dst}:{port}"), e)),
            },
        };
        Ok((outcome, src))
    }
}

/// An echo request's length: its header, then a [`Token`].
const ECHO_LEN: usize = 8 + Token::LEN;

/// Builds an echo request with `id`, `seq` and `token` as payload in `buf`.
fn echo_request<'b>(
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

/// What answered a SYN probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SynAnswer {
    /// A SYN-ACK: the port is open.
    Accepted,
    /// A reset: the port is closed.
    Reset,
    /// An ICMP destination-unreachable error, with its code.
    Icmp(u8),
}

/// A SYN probe's raw sockets: TCP to send and read answers, ICMP to read
/// errors.
struct SynSockets {
    tcp: RawSocket,
    icmp: RawSocket,
}

impl SynSockets {
    /// Sends a segment of `flow` with sequence number `seq` and `flags`.
    fn send(&self, flow: &Flow, seq: u32, flags: u8) -> std::io::Result<()> {
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
    fn answer(
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
fn syn_answer(from: Ipv4Addr, segment: &TcpPacket<'_>, flow: &Flow, seq: u32) -> Option<SynAnswer> {
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
struct EchoTally {
    /// When each echo (by sequence number) was sent.
    sent_at: Vec<Instant>,
    /// The fastest reply.
    best: Option<Duration>,
    received: u16,
    /// The last ICMP error about them.
    error: Option<Reason>,
    errors: u16,
}

impl EchoTally {
    /// How many echoes a reply or an error answered.
    fn answered(&self) -> u16 {
        self.received.saturating_add(self.errors)
    }

    fn record(&mut self, answer: IcmpAnswer) {
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
    fn outcome(&self, sent: u16) -> IcmpOutcome {
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
fn next_icmp_answer(
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

#[cfg(test)]
mod tests {
    use super::*;
    use pnet::packet::ipv4::MutableIpv4Packet;

    const DST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);

    /// An ICMP error of `code` from the router quoting `transport` sent to
    /// `dst` over `protocol`.
    fn unreachable(code: u8, dst: Ipv4Addr, protocol: u8, transport: &[u8]) -> Vec<u8> {
        let mut quoted = vec![0u8; 20 + transport.len()];
        let mut ip = MutableIpv4Packet::new(&mut quoted).unwrap();
        ip.set_version(4);
        ip.set_header_length(5);
        ip.set_total_length(u16::try_from(20 + transport.len()).unwrap());
        ip.set_next_level_protocol(IpNextHeaderProtocol(protocol));
        ip.set_source(Ipv4Addr::new(10, 200, 0, 2));
        ip.set_destination(dst);
        quoted[20..].copy_from_slice(transport);
        let mut icmp = vec![IcmpTypes::DestinationUnreachable.0, code, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&quoted);
        icmp
    }

    fn classify(bytes: &[u8], from: Ipv4Addr, id: u16) -> Option<IcmpAnswer> {
        classify_icmp(&IcmpPacket::new(bytes).unwrap(), IpAddr::V4(from), DST, id)
    }

    #[test]
    fn an_echo_reply_is_ours_only_with_our_identifier_and_from_the_destination() {
        let mut buf = [0u8; ECHO_LEN];
        echo_request(&mut buf, 7, 3, &Token::random());
        buf[0] = IcmpTypes::EchoReply.0;
        assert!(matches!(classify(&buf, DST, 7), Some(IcmpAnswer::Reply(3))));
        assert!(
            classify(&buf, DST, 8).is_none(),
            "another probe's identifier"
        );
        assert!(
            classify(&buf, ROUTER, 7).is_none(),
            "not from the destination"
        );
    }

    #[test]
    fn an_icmp_error_counts_only_when_it_quotes_our_echo() {
        let mut echo = [0u8; ECHO_LEN];
        echo_request(&mut echo, 7, 1, &Token::random());
        let icmp = IpNextHeaderProtocols::Icmp.0;
        for (code, reason) in [
            (0, Reason::NetworkUnreachable),
            (1, Reason::HostUnreachable),
            (13, Reason::Prohibited),
            (4, Reason::Unreachable(4)),
        ] {
            let error = unreachable(code, DST, icmp, &echo);
            match classify(&error, ROUTER, 7) {
                Some(IcmpAnswer::Error(got)) => assert_eq!(got, reason),
                _ => panic!("code {code} not classified"),
            }
        }
        assert!(classify(&unreachable(1, DST, icmp, &echo), ROUTER, 8).is_none());
        let elsewhere = Ipv4Addr::new(198, 18, 0, 9);
        assert!(classify(&unreachable(1, elsewhere, icmp, &echo), ROUTER, 7).is_none());
        assert!(classify(&unreachable(1, DST, icmp, &echo[..4]), ROUTER, 7).is_none());
    }

    #[test]
    fn a_segment_answers_a_syn_only_from_its_destination_acknowledging_it() {
        let flow = Flow {
            src: Ipv4Addr::new(10, 200, 0, 2),
            src_port: 61_000,
            dst: DST,
            dst_port: 80,
            mark: Mark::Tcp { isn: 41 },
        };
        let answer = |from, sport, dport, ack, flags| {
            let mut buf = [0u8; 20];
            let segment = tcp_segment(&mut buf, (from, sport), (flow.src, dport), 9, ack, flags);
            syn_answer(from, &segment.to_immutable(), &flow, 41)
        };
        let syn_ack = TcpFlags::SYN | TcpFlags::ACK;
        let reset = TcpFlags::RST | TcpFlags::ACK;
        assert_eq!(
            answer(DST, 80, 61_000, 42, syn_ack),
            Some(SynAnswer::Accepted)
        );
        assert_eq!(answer(DST, 80, 61_000, 42, reset), Some(SynAnswer::Reset));
        assert_eq!(answer(DST, 80, 61_000, 43, syn_ack), None, "another SYN's");
        assert_eq!(answer(DST, 81, 61_000, 42, syn_ack), None, "another port");
        assert_eq!(answer(DST, 80, 61_001, 42, syn_ack), None, "another probe");
        assert_eq!(
            answer(ROUTER, 80, 61_000, 42, syn_ack),
            None,
            "another host"
        );
        assert_eq!(
            answer(DST, 80, 61_000, 42, TcpFlags::ACK),
            None,
            "a bare ACK"
        );
    }

    #[test]
    fn an_icmp_error_about_tcp_must_quote_our_ports() {
        let mut buf = [0u8; 20];
        let syn = tcp_segment(
            &mut buf,
            (Ipv4Addr::new(10, 200, 0, 2), 61_000),
            (DST, 80),
            1,
            0,
            TcpFlags::SYN,
        )
        .packet()
        .to_vec();
        let tcp = IpNextHeaderProtocols::Tcp.0;
        let error = unreachable(3, DST, tcp, &syn);
        let packet = IcmpPacket::new(&error).unwrap();
        assert_eq!(icmp_error_about_tcp(&packet, DST, 80, 61_000), Some(3));
        assert_eq!(icmp_error_about_tcp(&packet, DST, 81, 61_000), None);
        assert_eq!(icmp_error_about_tcp(&packet, DST, 80, 61_001), None);
        let icmp = IpNextHeaderProtocols::Icmp.0;
        let other = unreachable(3, DST, icmp, &syn);
        assert_eq!(
            icmp_error_about_tcp(&IcmpPacket::new(&other).unwrap(), DST, 80, 61_000),
            None
        );
    }
}
