//! Faults a test switches on and off: a partition between two containers
//! or between the lab and the outside, one way or both, and drops of exact
//! packets of a matching flow (the 3rd SYN-ACK, every 10th datagram to
//! port 53) on a link. Each is an nf_tables table of its own, owned by the
//! [`Fault`] guard's netlink socket: dropping the guard heals the fault,
//! and the kernel heals it too if the process ends any other way. And a
//! destination blackholed in a container ([`Blackhole`], a route).

use std::net::IpAddr;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::common::error::{Error, Result};
use crate::kernel::netlink::Socket;
use crate::kernel::netns;
use crate::kernel::nftables::{self, FaultHook, FaultTable};
use crate::kernel::rtnl::Rtnl;
use crate::network::lab::{Lab, UPLINK, mac_for};
use crate::network::link::{Direction, Link};

/// One way or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ways {
    /// Only from the first to the second.
    OneWay,
    /// Both ways.
    Both,
}

/// Which packets a packet fault looks at: IPv4 or IPv6 packets of one
/// transport protocol, with optional ports and TCP flags.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Packets {
    protocol: u8,
    name: &'static str,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    /// TCP flags under a mask: (mask, value, name).
    flags: Option<(u8, u8, &'static str)>,
}

/// TCP's SYN and ACK flags.
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

impl Packets {
    fn protocol(protocol: u8, name: &'static str) -> Self {
        Self {
            protocol,
            name,
            src_port: None,
            dst_port: None,
            flags: None,
        }
    }

    /// UDP datagrams.
    pub fn udp() -> Self {
        Self::protocol(17, "udp")
    }

    /// TCP segments.
    pub fn tcp() -> Self {
        Self::protocol(6, "tcp")
    }

    /// ICMP messages (IPv4's).
    pub fn icmp() -> Self {
        Self::protocol(1, "icmp")
    }

    /// ICMPv6 messages, neighbour discovery's included.
    pub fn icmpv6() -> Self {
        Self::protocol(58, "icmpv6")
    }

    /// Only those from port `port`.
    pub fn src_port(mut self, port: u16) -> Self {
        self.src_port = Some(port);
        self
    }

    /// Only those to port `port`.
    pub fn dst_port(mut self, port: u16) -> Self {
        self.dst_port = Some(port);
        self
    }

    /// Only SYN-ACKs (TCP).
    pub fn syn_ack(mut self) -> Self {
        self.flags = Some((SYN | ACK, SYN | ACK, "syn-ack"));
        self
    }

    /// Only SYNs without ACK (TCP).
    pub fn syn(mut self) -> Self {
        self.flags = Some((SYN | ACK, SYN, "syn"));
        self
    }

    fn describe(&self) -> String {
        let mut text = self.name.to_owned();
        if let Some((_, _, flags)) = self.flags {
            text = format!("{text} {flags}");
        }
        if let Some(port) = self.src_port {
            text = format!("{text} from port {port}");
        }
        if let Some(port) = self.dst_port {
            text = format!("{text} to port {port}");
        }
        text
    }

    fn expressions(&self) -> Result<Vec<nftables::Expression>> {
        if self.flags.is_some() && self.protocol != 6 {
            return Err(Error::InvalidFault {
                reason: format!(
                    "{} packets have no TCP flags; use Packets::tcp()",
                    self.name
                ),
            });
        }
        let icmp = match self.protocol {
            1 => Some("ICMP"),
            58 => Some("ICMPv6"),
            _ => None,
        };
        if let Some(icmp) = icmp
            && (self.src_port.is_some() || self.dst_port.is_some())
        {
            return Err(Error::InvalidFault {
                reason: format!("{icmp} has no ports; use Packets::udp() or Packets::tcp()"),
            });
        }
        let mut out: Vec<nftables::Expression> = nftables::l4_protocol(self.protocol).into();
        if let Some(port) = self.src_port {
            out.extend(nftables::transport_u16(0, port));
        }
        if let Some(port) = self.dst_port {
            out.extend(nftables::transport_u16(2, port));
        }
        if let Some((mask, value, _)) = self.flags {
            out.extend(nftables::tcp_flags(mask, value));
        }
        Ok(out)
    }
}

/// A fault in force until dropped. Its rules count what they matched and
/// dropped.
pub struct Fault {
    live: Arc<Live>,
}

/// A fault's table, and what it does.
struct Live {
    table: Mutex<FaultTable>,
    description: String,
}

impl Live {
    fn counts(&self) -> Result<(u64, u64)> {
        let rules = self
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .counters()?;
        Ok(tally(&rules))
    }
}

/// The faults of this process still in force.
static LIVE: Mutex<Vec<Weak<Live>>> = Mutex::new(Vec::new());

/// The faults of this process in force, with their counts, one line each.
pub(crate) fn in_force() -> Vec<String> {
    let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
    live.retain(|fault| fault.strong_count() > 0);
    live.iter()
        .filter_map(Weak::upgrade)
        .map(|fault| match fault.counts() {
            Ok((matched, dropped)) => format!(
                "fault {}: {matched} matched, {dropped} dropped",
                fault.description
            ),
            Err(e) => format!("fault {}: (counters unreadable: {e})", fault.description),
        })
        .collect()
}

impl std::fmt::Debug for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.live.description)
    }
}

impl Fault {
    fn install(
        netns: BorrowedFd<'_>,
        namespace: &'static str,
        hook: &FaultHook,
        description: String,
        rules: Vec<Vec<nftables::Expression>>,
    ) -> Result<Fault> {
        let socket = netns::run_in(netns, || {
            Socket::open(libc::NETLINK_NETFILTER).map_err(|e| {
                Error::os(
                    format!("open an nf_tables socket in the {namespace} namespace"),
                    e,
                )
            })
        })?;
        let table = FaultTable::install(socket, namespace, hook, &description, rules)?;
        let live = Arc::new(Live {
            table: Mutex::new(table),
            description,
        });
        LIVE.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(&live));
        Ok(Fault { live })
    }

    /// What it does, e.g. `drop the 3rd tcp syn-ack into eth0`.
    pub fn description(&self) -> &str {
        &self.live.description
    }

    /// The packets it matched so far (for a packet fault, those it
    /// counted towards the one to drop), and the packets it dropped.
    pub fn counts(&self) -> Result<(u64, u64)> {
        self.live.counts()
    }
}

/// What rules counted, summed: each rule's first counter is what it
/// matched, its last what it dropped.
fn tally(rules: &[Vec<u64>]) -> (u64, u64) {
    rules.iter().fold((0, 0), |(matched, dropped), rule| {
        (
            matched + rule.first().copied().unwrap_or(0),
            dropped + rule.last().copied().unwrap_or(0),
        )
    })
}

impl Lab {
    /// Cuts `a` off from `b` (containers of this lab, by address), one way
    /// (what `a` sends to `b` is lost) or both, until the returned guard
    /// is dropped. Frames are dropped on the bridge, ARP included.
    pub fn partition(
        &self,
        a: impl Into<IpAddr>,
        b: impl Into<IpAddr>,
        ways: Ways,
    ) -> Result<Fault> {
        let (a, b) = (a.into(), b.into());
        let number = |addr: IpAddr| {
            self.inner
                .addressing()
                .number_of(addr)
                .ok_or_else(|| Error::InvalidFault {
                    reason: format!(
                        "{addr} is not an address of this lab's bridge ({}); partition its containers by their addresses",
                        self.subnets()
                    ),
                })
        };
        let (from, to) = (number(a)?, number(b)?);
        let rule = |from, to| {
            let mut rule: Vec<nftables::Expression> = Vec::new();
            rule.extend(nftables::ether(true, mac_for(from)));
            rule.extend(nftables::ether(false, mac_for(to)));
            rule.push(nftables::count());
            rule.push(nftables::drop_verdict());
            rule
        };
        let mut rules = vec![rule(from, to)];
        if ways == Ways::Both {
            rules.push(rule(to, from));
        }
        let arrow = if ways == Ways::Both { "<->" } else { "->" };
        Fault::install(
            self.lab_netns(),
            "lab",
            &FaultHook::BridgeForward,
            format!("partition {a} {arrow} {b}"),
            rules,
        )
    }

    /// Cuts the lab's network off from the outside, one way (what the
    /// containers send out is lost) or both, until the returned guard is
    /// dropped: the gateway drops what it would forward.
    pub fn cut_off(&self, ways: Ways) -> Result<Fault> {
        let rule = |from: &str, to: &str| {
            let mut rule: Vec<nftables::Expression> = Vec::new();
            rule.extend(nftables::ifname(true, from));
            rule.extend(nftables::ifname(false, to));
            rule.push(nftables::count());
            rule.push(nftables::drop_verdict());
            rule
        };
        let mut rules = vec![rule(self.bridge(), UPLINK)];
        if ways == Ways::Both {
            rules.push(rule(UPLINK, self.bridge()));
        }
        let arrow = if ways == Ways::Both { "<->" } else { "->" };
        Fault::install(
            self.lab_netns(),
            "lab",
            &FaultHook::Forward,
            format!("cut {} {arrow} outside", self.subnets()),
            rules,
        )
    }
}

/// A destination blackholed in one network namespace until dropped: a
/// `blackhole` route, so that what is sent there is discarded at once.
pub struct Blackhole {
    rtnl: Rtnl,
    addr: IpAddr,
}

impl std::fmt::Debug for Blackhole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "blackhole {}", self.addr)
    }
}

impl Blackhole {
    /// Blackholes `addr` in the namespace `netns`.
    pub(crate) fn add(netns: BorrowedFd<'_>, addr: IpAddr) -> Result<Blackhole> {
        let mut rtnl = netns::run_in(netns, || Rtnl::open("container"))?;
        rtnl.blackhole(addr, true)?;
        Ok(Blackhole { rtnl, addr })
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        if let Err(e) = self.rtnl.blackhole(self.addr, false) {
            eprintln!("netns-harness: {e}");
        }
    }
}

/// `1st`, `2nd`, `3rd`, `4th`, …
fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

impl Link {
    /// Drops the `n`th of the `packets` crossing the link in `direction`
    /// from now on (counting from 1), and no other, until the guard is
    /// dropped: the same packet on every run.
    pub fn drop_nth(&self, direction: Direction, packets: &Packets, n: u32) -> Result<Fault> {
        if n == 0 {
            return Err(Error::InvalidFault {
                reason: "packets are counted from 1: the first is drop_nth(…, 1)".to_owned(),
            });
        }
        self.drop_packets(
            direction,
            packets,
            u32::MAX,
            n - 1,
            format!("the {}", ordinal(n)),
        )
    }

    /// Drops every `n`th of the `packets` crossing the link in `direction`
    /// (the `n`th, the `2n`th, …) until the guard is dropped.
    pub fn drop_every(&self, direction: Direction, packets: &Packets, n: u32) -> Result<Fault> {
        if n < 2 {
            return Err(Error::InvalidFault {
                reason: format!(
                    "every {n}th packet is {}; use n from 2",
                    if n == 0 { "nothing" } else { "all" }
                ),
            });
        }
        self.drop_packets(
            direction,
            packets,
            n,
            n - 1,
            format!("every {}", ordinal(n)),
        )
    }

    fn drop_packets(
        &self,
        direction: Direction,
        packets: &Packets,
        modulus: u32,
        value: u32,
        which: String,
    ) -> Result<Fault> {
        let mut rule = packets.expressions()?;
        rule.push(nftables::count());
        rule.extend(nftables::numgen_is(modulus, value));
        rule.push(nftables::count());
        rule.push(nftables::drop_verdict());
        let (netns, name, label) = self.first_end();
        let egress = direction == Direction::Out;
        let hook = FaultHook::Device {
            name: name.to_owned(),
            egress,
        };
        let description = format!(
            "drop {which} {} {} {name}",
            packets.describe(),
            if egress { "out of" } else { "into" }
        );
        Fault::install(netns, label, &hook, description, vec![rule])
    }
}
