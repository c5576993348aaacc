//! What a probe reports, and how it is asked: outcomes, the reasons a
//! destination did not answer, options and their validation.

use crate::common::error::{Error, Result};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// Why a destination did not answer as hoped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No answer within the timeout.
    Timeout,
    /// The prober's namespace has no route to the destination (known at
    /// once, without sending).
    NoRoute,
    /// ICMP destination unreachable: network unreachable; ICMPv6: no
    /// route to destination.
    NetworkUnreachable,
    /// ICMP destination unreachable: host unreachable (e.g. ARP failed);
    /// ICMPv6: address unreachable (e.g. neighbour discovery failed).
    HostUnreachable,
    /// ICMP destination unreachable: administratively prohibited (a
    /// firewall's `reject`); ICMPv6 also: source address failed policy,
    /// reject route.
    Prohibited,
    /// ICMP or ICMPv6 destination unreachable: port unreachable.
    PortUnreachable,
    /// ICMP or ICMPv6 time exceeded: the hop limit (TTL) ran out on the way,
    /// e.g. in a routing loop.
    TimeExceeded,
    /// Another destination-unreachable code, of ICMP or of ICMPv6 by the
    /// destination's family.
    Unreachable(u8),
}

impl Reason {
    pub(super) fn from_send_error(err: &std::io::Error) -> Option<Self> {
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
            Reason::TimeExceeded => f.write_str("time exceeded (hop limit reached)"),
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
    /// unreachable, so that is the reason given (ICMPv6's as prohibited).
    ///
    /// Over IPv6 the kernel may take an ICMPv6 error about the first SYN
    /// as a soft error and report it only when the retransmitted SYN
    /// (after 1 s) meets it again, as measured on Linux 6.18 with `nc -6`
    /// too: give such probes a timeout above 1 s.
    Connect,
}

/// Settings of a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct ProbeOptions {
    pub(super) count: u16,
    pub(super) interval: Duration,
    pub(super) timeout: Duration,
    pub(super) tcp_mode: TcpMode,
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

    pub(super) fn validate(&self) -> Result<()> {
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

/// `dst` as it will be probed (an IPv4-mapped IPv6 address as IPv4), or
/// why it cannot be.
pub(super) fn validate_destination(dst: IpAddr) -> Result<IpAddr> {
    let dst = dst.to_canonical();
    let why = match dst {
        _ if dst.is_unspecified() => "it is the unspecified address",
        _ if dst.is_multicast() => "it is a multicast address",
        IpAddr::V4(v4) if v4.is_broadcast() => "it is the broadcast address",
        // A link-local destination needs an interface (a scope), which a
        // probe does not take.
        IpAddr::V6(v6) if v6.is_unicast_link_local() => {
            "it is link-local, which needs an interface to be sent on"
        }
        _ => return Ok(dst),
    };
    Err(Error::InvalidProbe {
        reason: format!("cannot probe {dst}: {why}; probe a unicast address"),
    })
}

pub(super) fn validate_port(port: u16) -> Result<()> {
    if port == 0 {
        return Err(Error::InvalidProbe {
            reason: "port 0 cannot be probed; give a port from 1 to 65535".to_owned(),
        });
    }
    Ok(())
}
