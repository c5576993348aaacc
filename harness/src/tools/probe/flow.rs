//! The flows a probe sends, each marked so that nothing else looks like it
//! (an ICMP identifier and payload token, a UDP payload token, a TCP
//! source port and initial sequence number), to be found elsewhere: in a
//! capture of the far side, in the NAT's conntrack table.

use pnet::packet::ip::IpNextHeaderProtocols;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};

/// Distinguishes probes: ICMP identifiers, TCP source ports. Consecutive
/// within a process, from a random start: test containers are all PID 1,
/// and identical identifiers from several containers at once can meet in
/// the NAT, which then drops one of them.
pub(super) fn next_id() -> u16 {
    static NEXT_ID: OnceLock<AtomicU16> = OnceLock::new();
    NEXT_ID
        .get_or_init(|| AtomicU16::new(random_u64() as u16))
        .fetch_add(1, Ordering::Relaxed)
}

/// TCP source ports of SYN probes: above Linux's ephemeral range
/// (32768–60999), so they never meet a connection of the namespace.
pub(super) fn syn_source_port() -> u16 {
    61000 + next_id() % 4500
}

/// 64 random bits: SipHash, keyed from the operating system's randomness
/// (a fresh `RandomState` per call), of a per-process counter.
pub(super) fn random_u64() -> u64 {
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

#[cfg(test)]
impl Token {
    /// A token of these bytes, for packets with known checksums.
    pub(crate) fn from_bytes(bytes: [u8; Self::LEN]) -> Token {
        Token(bytes)
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
    /// The source address, of the destination's family (unspecified when
    /// the namespace had no route).
    pub src: IpAddr,
    /// The source port; for ICMP, the echo identifier.
    pub src_port: u16,
    /// The destination address: IPv4 or IPv6.
    pub dst: IpAddr,
    /// The destination port; 0 for ICMP.
    pub dst_port: u16,
    /// What marks its packets.
    pub mark: Mark,
}

impl Flow {
    /// Its IP protocol number (1 ICMP, 58 ICMPv6, 6 TCP, 17 UDP).
    pub fn protocol(&self) -> u8 {
        match self.mark {
            Mark::Icmp { .. } if self.dst.is_ipv6() => IpNextHeaderProtocols::Icmpv6.0,
            Mark::Icmp { .. } => IpNextHeaderProtocols::Icmp.0,
            Mark::Tcp { .. } => IpNextHeaderProtocols::Tcp.0,
            Mark::Udp { .. } => IpNextHeaderProtocols::Udp.0,
        }
    }
}

impl fmt::Display for Flow {
    /// `icmp echo 10.0.0.2 > 198.18.0.2 id 7 token …`,
    /// `tcp [fd00::2]:61000 > [fd00::3]:80 isn 41`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (src, dst) = (self.src, self.dst);
        let from = SocketAddr::new(src, self.src_port);
        let to = SocketAddr::new(dst, self.dst_port);
        match self.mark {
            Mark::Icmp { token } => {
                let icmp = if dst.is_ipv6() { "icmp6" } else { "icmp" };
                let id = self.src_port;
                write!(f, "{icmp} echo {src} > {dst} id {id} token {token}")
            }
            Mark::Udp { token } => write!(f, "udp {from} > {to} token {token}"),
            Mark::Tcp { isn } => write!(f, "tcp {from} > {to} isn {isn}"),
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
