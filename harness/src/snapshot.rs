//! Snapshots of a network, read from the kernel with no external tool: a
//! namespace's links, addresses, routes and neighbours, and a lab's ports
//! and NAT counter, as text. The failure report (`failure`) is made of them.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd};

use crate::error::Result;
use crate::lab::LabInner;
use crate::netlink::{self, Socket};
use crate::{netns, nftables};

const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_STATS64: u16 = 23;

/// `ip addr`, `ip route` and `ip neigh` of the namespace `netns`.
pub(crate) fn namespace_state(netns: BorrowedFd<'_>) -> Result<String> {
    netns::run_in(netns, || {
        let mut out = String::new();
        for iface in pnet::datalink::interfaces() {
            let state = match (iface.is_up(), iface.is_running()) {
                (true, true) => "UP",
                (true, false) => "UP, NO-CARRIER",
                _ => "DOWN",
            };
            let ips: Vec<String> = iface.ips.iter().map(ToString::to_string).collect();
            let mac = iface.mac.map(|m| format!(" {m}")).unwrap_or_default();
            let _ = writeln!(out, "  link {} {state}{mac} {}", iface.name, ips.join(" "));
        }
        let read = |table: &str| {
            std::fs::read_to_string(format!("/proc/thread-self/net/{table}")).unwrap_or_default()
        };
        for line in read("route").lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(dev), Some(dst), Some(gw), Some(mask)) = (
                f.first(),
                hex_addr(f.get(1)),
                hex_addr(f.get(2)),
                hex_addr(f.get(7)),
            ) else {
                continue;
            };
            let prefix = u32::from(mask).count_ones();
            let via = if gw.is_unspecified() {
                String::new()
            } else {
                format!(" via {gw}")
            };
            let dst = if prefix == 0 {
                "default".to_owned()
            } else {
                format!("{dst}/{prefix}")
            };
            let _ = writeln!(out, "  route {dst}{via} dev {dev}");
        }
        for line in read("arp").lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [ip, _, flags, mac, _, dev, ..] = f[..] {
                let state = if flags == "0x0" {
                    "INCOMPLETE"
                } else {
                    "REACHABLE"
                };
                let _ = writeln!(out, "  neigh {ip} dev {dev} lladdr {mac} {state}");
            }
        }
        Ok(out)
    })
}

/// An IPv4 address as `/proc/net/route` prints it (hex, host order).
fn hex_addr(field: Option<&&str>) -> Option<Ipv4Addr> {
    u32::from_str_radix(field?, 16)
        .ok()
        .map(|n| Ipv4Addr::from(n.swap_bytes()))
}

/// The lab's bridge ports whose names start with one of `prefixes` (with
/// their state and packet counts), how many others there are, and the NAT
/// rule's counters.
pub(crate) fn lab_state(lab: &LabInner, own_port: &str, peer_prefix: &str) -> Result<String> {
    let mut out = String::new();
    let links = {
        let mut rtnl = lab.rtnl();
        rtnl.dump_links()?
    };
    let mut others = 0;
    for reply in &links {
        let Some(attrs) = reply.get(16..) else {
            continue;
        };
        let mut link = Link::default();
        for (kind, payload) in netlink::attributes(attrs) {
            match kind {
                IFLA_IFNAME => {
                    link.name = String::from_utf8_lossy(payload)
                        .trim_end_matches('\0')
                        .to_owned()
                }
                IFLA_MASTER => link.master = payload.try_into().ok().map(u32::from_ne_bytes),
                IFLA_OPERSTATE => link.up = payload.first() == Some(&6), // IF_OPER_UP
                IFLA_STATS64 => {
                    let counter = |i: usize| {
                        payload
                            .get(i * 8..i * 8 + 8)
                            .and_then(|b| b.try_into().ok())
                            .map_or(0, u64::from_ne_bytes)
                    };
                    (link.rx, link.tx) = (counter(0), counter(1));
                }
                _ => {}
            }
        }
        if link.master != Some(lab.bridge_index()) {
            continue;
        }
        if is_test_port(&link.name, own_port, peer_prefix) {
            let state = if link.up { "up" } else { "down" };
            let _ = writeln!(
                out,
                "  port {} of {} {state}, {} packets from the container, {} to it",
                link.name,
                lab.bridge(),
                link.rx,
                link.tx
            );
        } else {
            others += 1;
        }
    }
    if others > 0 {
        let _ = writeln!(out, "  ({others} ports of other tests on {})", lab.bridge());
    }
    let (packets, bytes) = netns::run_in(lab.lab_ns().as_fd(), || {
        let mut socket = Socket::open(libc::NETLINK_NETFILTER)
            .map_err(|e| crate::Error::os("open an nf_tables socket in the lab namespace", e))?;
        nftables::masquerade_counter(&mut socket)
    })?;
    let _ = writeln!(
        out,
        "  nat: ip saddr {} oifname \"{}\" masquerade: {packets} packets, {bytes} bytes",
        lab.subnet(),
        crate::UPLINK
    );
    Ok(out)
}

/// Whether bridge port `name` is the test's: its own port, named exactly,
/// or one of its peers', named `<peer_prefix><n>` (a prefix that ends in a
/// letter no port number contains, so `t1p` never matches `t10p…`).
fn is_test_port(name: &str, own_port: &str, peer_prefix: &str) -> bool {
    name == own_port || (!peer_prefix.is_empty() && name.starts_with(peer_prefix))
}

#[derive(Default)]
struct Link {
    name: String,
    master: Option<u32>,
    up: bool,
    rx: u64,
    tx: u64,
}

#[cfg(test)]
mod tests {
    use super::is_test_port;

    #[test]
    fn a_test_sees_only_its_own_ports() {
        assert!(is_test_port("v1", "v1", "t3p"));
        assert!(!is_test_port("v10", "v1", "t3p"));
        assert!(!is_test_port("v1ff", "v1", "t3p"));
        assert!(is_test_port("t3p0", "v1", "t3p"));
        assert!(is_test_port("t3pa", "v1", "t3p"));
        assert!(!is_test_port("t30p0", "v1", "t3p"));
        assert!(!is_test_port("t1p0", "v1", ""));
    }
}
