//! Snapshots of a network, read from the kernel with no external tool: a
//! namespace's links, addresses, routes and neighbours, and a lab's ports
//! and NAT counter, as text. The failure report (`failure`) is made of them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};

use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, State};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader};

use crate::common::error::Result;
use crate::kernel::netlink::Socket;
use crate::kernel::rtnl::Rtnl;
use crate::network::lab::LabInner;
use crate::{kernel::netns, kernel::nftables};

/// `ip link`, `ip addr`, `ip route` and `ip neigh` of the namespace
/// `netns`, read with rtnetlink dumps from a thread that enters it.
pub(crate) fn namespace_state(netns: BorrowedFd<'_>) -> Result<String> {
    netns::run_in(netns, || {
        let mut rtnl = Rtnl::open("container")?;
        let links = rtnl.links()?;
        let mut addresses: HashMap<u32, Vec<String>> = HashMap::new();
        for address in rtnl.addresses()? {
            let local = address.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) | AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = local {
                addresses
                    .entry(address.header.index)
                    .or_default()
                    .push(format!("{ip}/{}", address.header.prefix_len));
            }
        }
        let names: HashMap<u32, String> = links
            .iter()
            .map(|link| (link.header.index, Link::of(link).name))
            .collect();
        let name_of = |index: u32| {
            names
                .get(&index)
                .cloned()
                .unwrap_or_else(|| format!("if{index}"))
        };
        let mut out = String::new();
        for link in &links {
            let flags = link.header.flags;
            let state = match (
                flags.contains(LinkFlags::Up),
                flags.contains(LinkFlags::Running),
            ) {
                (true, true) => "UP",
                (true, false) => "UP, NO-CARRIER",
                _ => "DOWN",
            };
            let mac = link
                .attributes
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::Address(mac) => Some(format!(" {}", lladdr(mac))),
                    _ => None,
                })
                .unwrap_or_default();
            let ips = addresses
                .get(&link.header.index)
                .map(|ips| ips.join(" "))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  link {} {state}{mac} {ips}",
                name_of(link.header.index)
            );
        }
        for route in rtnl.routes()? {
            if route.header.table != RouteHeader::RT_TABLE_MAIN {
                continue;
            }
            let (mut dst, mut via, mut dev) = (None, None, None);
            for attribute in &route.attributes {
                match attribute {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = Some(*ip),
                    RouteAttribute::Oif(index) => dev = Some(name_of(*index)),
                    _ => {}
                }
            }
            let prefix = route.header.destination_prefix_length;
            let dst = match dst {
                Some(dst) if prefix > 0 => format!("{dst}/{prefix}"),
                _ => "default".to_owned(),
            };
            let via = via.map(|ip| format!(" via {ip}")).unwrap_or_default();
            let dev = dev.map(|dev| format!(" dev {dev}")).unwrap_or_default();
            let _ = writeln!(out, "  route {dst}{via}{dev}");
        }
        for neighbour in rtnl.neighbours()? {
            let (mut ip, mut mac) = (None, None);
            for attribute in &neighbour.attributes {
                match attribute {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(addr)) => {
                        ip = Some(IpAddr::V4(*addr));
                    }
                    NeighbourAttribute::LinkLayerAddress(addr) => mac = Some(lladdr(addr)),
                    _ => {}
                }
            }
            let Some(ip) = ip else { continue };
            let mac = mac.map(|mac| format!(" lladdr {mac}")).unwrap_or_default();
            let _ = writeln!(
                out,
                "  neigh {ip} dev {}{mac} {}",
                name_of(neighbour.header.ifindex),
                neighbour_state(neighbour.header.state)
            );
        }
        Ok(out)
    })
}

/// A hardware address as `ip` prints it.
fn lladdr(bytes: &[u8]) -> String {
    let octets: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    octets.join(":")
}

/// A neighbour's state as `ip neigh` prints it.
fn neighbour_state(state: NeighbourState) -> String {
    match state {
        NeighbourState::Incomplete => "INCOMPLETE".to_owned(),
        NeighbourState::Reachable => "REACHABLE".to_owned(),
        NeighbourState::Stale => "STALE".to_owned(),
        NeighbourState::Delay => "DELAY".to_owned(),
        NeighbourState::Probe => "PROBE".to_owned(),
        NeighbourState::Failed => "FAILED".to_owned(),
        NeighbourState::Noarp => "NOARP".to_owned(),
        NeighbourState::Permanent => "PERMANENT".to_owned(),
        NeighbourState::None => "NONE".to_owned(),
        other => format!("{other:?}"),
    }
}

/// The lab's bridge ports whose names start with one of `prefixes` (with
/// their state and packet counts), how many others there are, and the NAT
/// rule's counters.
pub(crate) fn lab_state(lab: &LabInner, own_port: &str, peer_prefix: &str) -> Result<String> {
    let mut out = String::new();
    let links = {
        let mut rtnl = lab.rtnl();
        rtnl.links()?
    };
    let mut others = 0;
    for link in links.iter().map(Link::of) {
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

/// What the report says of a link.
#[derive(Default)]
struct Link {
    name: String,
    master: Option<u32>,
    up: bool,
    rx: u64,
    tx: u64,
}

impl Link {
    /// The name, master, state and packet counts `link` reports.
    fn of(link: &LinkMessage) -> Self {
        let mut out = Link::default();
        for attribute in &link.attributes {
            match attribute {
                LinkAttribute::IfName(name) => out.name.clone_from(name),
                LinkAttribute::Controller(master) => out.master = Some(*master),
                LinkAttribute::OperState(state) => out.up = *state == State::Up,
                LinkAttribute::Stats64(stats) => {
                    (out.rx, out.tx) = (stats.rx_packets, stats.tx_packets)
                }
                _ => {}
            }
        }
        out
    }
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
