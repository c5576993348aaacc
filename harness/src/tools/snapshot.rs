//! Snapshots of a network, read from the kernel with no external tool: a
//! namespace's links, addresses, routes and neighbours, and a lab's ports
//! and NAT counter, as text. The failure report (`failure`) is made of them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};

use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, State};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};

use crate::common::error::Result;
use crate::kernel::netlink::Socket;
use crate::kernel::nftables::Sources;
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
            if let Some(ip) = address_text(&address) {
                addresses.entry(address.header.index).or_default().push(ip);
            }
        }
        let names = Names(
            links
                .iter()
                .map(|link| (link.header.index, Link::of(link).name))
                .collect(),
        );
        let mut out = String::new();
        for link in &links {
            let ips = addresses.get(&link.header.index).map(|ips| ips.join(" "));
            let _ = writeln!(out, "{}", link_line(link, &names, &ips.unwrap_or_default()));
        }
        for route in rtnl.routes()? {
            if let Some(line) = route_line(&route, &names) {
                let _ = writeln!(out, "{line}");
            }
        }
        for neighbour in rtnl.neighbours()? {
            if let Some(line) = neighbour_line(&neighbour, &names) {
                let _ = writeln!(out, "{line}");
            }
        }
        Ok(out)
    })
}

/// Interface names by index, as a snapshot shows them.
struct Names(HashMap<u32, String>);

impl Names {
    fn of(&self, index: u32) -> String {
        self.0
            .get(&index)
            .cloned()
            .unwrap_or_else(|| format!("if{index}"))
    }
}

/// An address as `ip addr` shows it: `10.200.0.2/16`.
fn address_text(address: &AddressMessage) -> Option<String> {
    let ip = address.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) | AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    })?;
    Some(format!("{ip}/{}", address.header.prefix_len))
}

/// `  link eth0 UP 02:00:0a:c8:00:02 10.200.0.2/16 …`
fn link_line(link: &LinkMessage, names: &Names, ips: &str) -> String {
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
    format!("  link {} {state}{mac} {ips}", names.of(link.header.index))
}

/// `  route default via 10.200.0.1 dev eth0`, for the main table's routes
/// (of IPv6, those beyond the link: not link-local nor multicast).
fn route_line(route: &RouteMessage, names: &Names) -> Option<String> {
    if route.header.table != RouteHeader::RT_TABLE_MAIN {
        return None;
    }
    let (mut dst, mut via, mut dev) = (None, None, None);
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(IpAddr::V4(*ip)),
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst = Some(IpAddr::V6(*ip)),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = Some(IpAddr::V4(*ip)),
            RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => via = Some(IpAddr::V6(*ip)),
            RouteAttribute::Oif(index) => dev = Some(names.of(*index)),
            _ => {}
        }
    }
    if dst.is_some_and(|ip| link_scoped(ip) || ip.is_multicast()) {
        return None;
    }
    let prefix = route.header.destination_prefix_length;
    let dst = match dst {
        Some(dst) if prefix > 0 => format!("{dst}/{prefix}"),
        _ => "default".to_owned(),
    };
    let via = via.map(|ip| format!(" via {ip}")).unwrap_or_default();
    let dev = dev.map(|dev| format!(" dev {dev}")).unwrap_or_default();
    Some(format!("  route {dst}{via}{dev}"))
}

/// `  neigh 10.200.0.1 dev eth0 lladdr 02:00:0a:c8:00:01 REACHABLE`, for
/// neighbours of either family (of IPv6, not link-local nor multicast ones).
fn neighbour_line(neighbour: &NeighbourMessage, names: &Names) -> Option<String> {
    let (mut ip, mut mac) = (None, None);
    for attribute in &neighbour.attributes {
        match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(addr)) => {
                ip = Some(IpAddr::V4(*addr));
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(addr)) => {
                ip = Some(IpAddr::V6(*addr)).filter(|ip| !link_scoped(*ip) && !ip.is_multicast());
            }
            NeighbourAttribute::LinkLayerAddress(addr) => mac = Some(lladdr(addr)),
            _ => {}
        }
    }
    let mac = mac.map(|mac| format!(" lladdr {mac}")).unwrap_or_default();
    Some(format!(
        "  neigh {} dev {}{mac} {}",
        ip?,
        names.of(neighbour.header.ifindex),
        neighbour_state(neighbour.header.state)
    ))
}

/// Whether `ip` is an IPv6 link-local address.
fn link_scoped(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
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
    let addressing = lab.addressing();
    // A topology's router has no masquerade rule: the lab line names its NAT.
    let masquerades = lab.uplink().router == crate::common::nat::Router::Masquerade;
    let v4 = (masquerades && addressing.stack.has_v4()).then_some(Sources::V4(addressing.subnet));
    let v6 = addressing.nat66.then_some(Sources::V6(addressing.subnet6));
    for sources in v4.into_iter().chain(v6) {
        let (packets, bytes) = netns::run_in(lab.lab_ns().as_fd(), || {
            let mut socket = Socket::open(libc::NETLINK_NETFILTER).map_err(|e| {
                crate::Error::os("open an nf_tables socket in the lab namespace", e)
            })?;
            nftables::masquerade_counter(&mut socket, sources)
        })?;
        let _ = writeln!(
            out,
            "  nat: {sources} oifname \"{}\" masquerade: {packets} packets, {bytes} bytes",
            crate::UPLINK
        );
    }
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
    use std::net::Ipv4Addr;

    use super::*;

    fn names() -> Names {
        Names(HashMap::from([
            (1, "lo".to_owned()),
            (2, "eth0".to_owned()),
        ]))
    }

    #[test]
    fn routes_read_as_ip_route_prints_them() {
        let mut route = RouteMessage::default();
        route.header.table = RouteHeader::RT_TABLE_MAIN;
        route.attributes = vec![
            RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(10, 200, 0, 1))),
            RouteAttribute::Oif(2),
        ];
        assert_eq!(
            route_line(&route, &names()).as_deref(),
            Some("  route default via 10.200.0.1 dev eth0")
        );
        route.header.destination_prefix_length = 16;
        route.attributes = vec![
            RouteAttribute::Destination(RouteAddress::Inet(Ipv4Addr::new(10, 200, 0, 0))),
            RouteAttribute::Oif(7),
        ];
        assert_eq!(
            route_line(&route, &names()).as_deref(),
            Some("  route 10.200.0.0/16 dev if7")
        );
        route.header.table = 255; // local
        assert_eq!(route_line(&route, &names()), None);
    }

    #[test]
    fn links_and_neighbours_read_as_ip_prints_them() {
        let mut link = LinkMessage::default();
        link.header.index = 2;
        link.header.flags = LinkFlags::Up;
        link.attributes = vec![LinkAttribute::Address(vec![2, 0, 10, 200, 0, 2])];
        assert_eq!(
            link_line(&link, &names(), "10.200.0.2/16"),
            "  link eth0 UP, NO-CARRIER 02:00:0a:c8:00:02 10.200.0.2/16"
        );
        let mut neighbour = NeighbourMessage::default();
        neighbour.header.ifindex = 2;
        neighbour.header.state = NeighbourState::Reachable;
        assert_eq!(neighbour_line(&neighbour, &names()), None, "no address");
        neighbour.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::Inet(Ipv4Addr::new(10, 200, 0, 1))),
            NeighbourAttribute::LinkLayerAddress(vec![2, 0, 10, 200, 0, 1]),
        ];
        assert_eq!(
            neighbour_line(&neighbour, &names()).as_deref(),
            Some("  neigh 10.200.0.1 dev eth0 lladdr 02:00:0a:c8:00:01 REACHABLE")
        );
    }

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
