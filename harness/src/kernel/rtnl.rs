//! rtnetlink requests the lab needs, each the equivalent of one `ip`
//! command, built and parsed with the types of `netlink-packet-route`.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NetlinkMessage};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    BridgePortState, InfoBridge, InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoVeth,
    LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage, State,
};
use netlink_packet_route::neighbour::NeighbourMessage;
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::common::error::{Error, Result};
use crate::kernel::netlink::{Refusal, Socket, request};

/// A veth's MTU when it is created.
pub(crate) const DEFAULT_MTU: u32 = 1500;

/// What [`Rtnl::link_state`] finds.
pub(crate) struct LinkState {
    /// Operationally up: the kernel has processed its carrier (and given it
    /// a queue); until then, what it sends is dropped.
    pub up: bool,
    /// A bridge port in the forwarding state.
    pub forwarding: bool,
}

impl LinkState {
    /// The state `link` reports.
    fn of(link: &LinkMessage) -> Self {
        let up = link
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::OperState(State::Up)));
        let forwarding = link
            .attributes
            .iter()
            .filter_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => Some(infos),
                _ => None,
            })
            .flatten()
            .filter_map(|info| match info {
                LinkInfo::PortData(InfoPortData::BridgePort(port)) => Some(port),
                _ => None,
            })
            .flatten()
            .any(|a| matches!(a, InfoBridgePort::State(BridgePortState::Forwarding)));
        Self { up, forwarding }
    }
}

/// The far end of a veth pair: its name, namespace and hardware address.
pub(crate) struct Peer<'a> {
    pub name: &'a str,
    pub netns: BorrowedFd<'a>,
    pub mac: Option<[u8; 6]>,
}

/// A link message addressed to link `index` (0: by the name among its
/// attributes) that sets the `IFF_UP` flag to `up`.
fn link(index: u32, up: bool) -> LinkMessage {
    let mut link = LinkMessage::default();
    link.header.index = index;
    link.header.change_mask = LinkFlags::Up;
    if up {
        link.header.flags = LinkFlags::Up;
    }
    link
}

/// A link message that names link `name`.
fn named(name: &str) -> LinkMessage {
    let mut link = LinkMessage::default();
    link.attributes.push(LinkAttribute::IfName(name.to_owned()));
    link
}

/// `ip link add <name> address <mac> up type bridge forward_delay 0 mcast_snooping 0`
fn bridge_request(name: &str, mac: [u8; 6]) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut bridge = link(0, true);
    bridge.attributes = vec![
        LinkAttribute::IfName(name.to_owned()),
        LinkAttribute::Address(mac.to_vec()),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bridge),
            // Without multicast snooping, the bridge floods IPv6 neighbour
            // solicitations to every port (and its own stack) at once,
            // instead of waiting for members to report.
            LinkInfo::Data(InfoData::Bridge(vec![
                InfoBridge::ForwardDelay(0),
                InfoBridge::MulticastSnooping(false),
            ])),
        ]),
    ];
    request(
        RouteNetlinkMessage::NewLink(bridge),
        NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
    )
}

/// `ip link add <name> [master <master>] up type veth peer <peer> netns <fd> [address <mac>]`
fn veth_request(
    name: &str,
    master: Option<u32>,
    peer: &Peer<'_>,
) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut far = named(peer.name);
    far.attributes
        .push(LinkAttribute::NetNsFd(peer.netns.as_raw_fd()));
    if let Some(mac) = peer.mac {
        far.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    let mut veth = link(0, true);
    veth.attributes.push(LinkAttribute::IfName(name.to_owned()));
    if let Some(master) = master {
        veth.attributes.push(LinkAttribute::Controller(master));
    }
    veth.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(far))),
    ]));
    request(
        RouteNetlinkMessage::NewLink(veth),
        NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
    )
}

/// `ip link set dev <name> down nomaster`
fn detach_request(name: &str) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut port = link(0, false);
    port.attributes = vec![
        LinkAttribute::IfName(name.to_owned()),
        LinkAttribute::Controller(0),
    ];
    request(RouteNetlinkMessage::SetLink(port), NLM_F_ACK)
}

/// `ip addr add <addr>/<prefix> brd + dev <index>`
fn address_request(index: u32, addr: Ipv4Addr, prefix: u8) -> NetlinkMessage<RouteNetlinkMessage> {
    let host_mask = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
    let broadcast = Ipv4Addr::from(u32::from(addr) | host_mask);
    let mut address = AddressMessage::default();
    address.header.family = AddressFamily::Inet;
    address.header.prefix_len = prefix;
    address.header.index = index;
    address.attributes = vec![
        AddressAttribute::Local(IpAddr::V4(addr)),
        AddressAttribute::Address(IpAddr::V4(addr)),
        AddressAttribute::Broadcast(broadcast),
    ];
    request(
        RouteNetlinkMessage::NewAddress(address),
        NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
    )
}

/// An rtnetlink socket in one namespace of the lab.
pub(crate) struct Rtnl {
    socket: Socket,
    namespace: &'static str,
}

impl Rtnl {
    /// Opens a socket in the calling thread's namespace; `namespace` names
    /// it in errors.
    pub(crate) fn open(namespace: &'static str) -> Result<Self> {
        let socket = Socket::open(libc::NETLINK_ROUTE).map_err(|e| {
            Error::os(
                format!("open a netlink socket in the {namespace} namespace"),
                e,
            )
        })?;
        Ok(Self { socket, namespace })
    }

    /// The error of `operation`, which the kernel refused.
    fn refused(&self, operation: String, Refusal { error, message }: Refusal) -> Error {
        Error::Netlink {
            operation,
            namespace: self.namespace,
            source: error,
            kernel_message: message,
        }
    }

    fn request(
        &mut self,
        operation: impl FnOnce() -> String,
        message: NetlinkMessage<RouteNetlinkMessage>,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.socket
            .transact(&mut [message])
            .map_err(|refusal| self.refused(operation(), refusal))
    }

    fn dump(
        &mut self,
        operation: &str,
        message: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.socket
            .dump(request(message, NLM_F_DUMP))
            .map_err(|refusal| self.refused(operation.to_owned(), refusal))
    }

    /// `ip link set dev <index> up`
    pub(crate) fn set_up(&mut self, index: u32) -> Result<()> {
        let msg = request(RouteNetlinkMessage::SetLink(link(index, true)), NLM_F_ACK);
        self.request(|| format!("set link {index} up"), msg)
            .map(drop)
    }

    /// `ip link set dev <index> down`
    pub(crate) fn set_down(&mut self, index: u32) -> Result<()> {
        let msg = request(RouteNetlinkMessage::SetLink(link(index, false)), NLM_F_ACK);
        self.request(|| format!("set link {index} down"), msg)
            .map(drop)
    }

    /// `ip link set dev <index> mtu <mtu>`
    pub(crate) fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.attributes.push(LinkAttribute::Mtu(mtu));
        let msg = request(RouteNetlinkMessage::SetLink(message), NLM_F_ACK);
        self.request(|| format!("set the MTU of link {index} to {mtu}"), msg)
            .map(drop)
    }

    /// `ip route add blackhole <addr>/32` (or `/128`) (`add`), or `ip route
    /// del` of it.
    pub(crate) fn blackhole(&mut self, addr: IpAddr, add: bool) -> Result<()> {
        use netlink_packet_route::route::{
            RouteAddress, RouteAttribute, RouteProtocol, RouteScope, RouteType,
        };
        let mut route = RouteMessage::default();
        let (family, len) = match addr {
            IpAddr::V4(_) => (AddressFamily::Inet, 32),
            IpAddr::V6(_) => (AddressFamily::Inet6, 128),
        };
        route.header.address_family = family;
        route.header.destination_prefix_length = len;
        route.header.table = libc::RT_TABLE_MAIN;
        route.header.protocol = RouteProtocol::Static;
        route.header.scope = RouteScope::Universe;
        route.header.kind = RouteType::BlackHole;
        route.attributes = vec![RouteAttribute::Destination(RouteAddress::from(addr))];
        let (message, flags, verb) = match add {
            true => (
                RouteNetlinkMessage::NewRoute(route),
                NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                "add",
            ),
            false => (RouteNetlinkMessage::DelRoute(route), NLM_F_ACK, "delete"),
        };
        self.request(
            || format!("{verb} the route blackhole {addr}"),
            request(message, flags),
        )
        .map(drop)
    }

    /// `ip link del <name>`, if there is such a link (a veth's peer goes
    /// with it).
    pub(crate) fn delete(&mut self, name: &str) -> Result<()> {
        let msg = request(RouteNetlinkMessage::DelLink(named(name)), NLM_F_ACK);
        match self.request(|| format!("delete link {name}"), msg) {
            Err(Error::Netlink { source, .. }) if source.raw_os_error() == Some(libc::ENODEV) => {
                Ok(())
            }
            other => other.map(drop),
        }
    }

    /// `ip link set dev <index> master <master>` (`nomaster` for 0).
    pub(crate) fn set_master(&mut self, index: u32, master: u32) -> Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.attributes.push(LinkAttribute::Controller(master));
        let msg = request(RouteNetlinkMessage::SetLink(message), NLM_F_ACK);
        self.request(
            || format!("set the master of link {index} to {master}"),
            msg,
        )
        .map(drop)
    }

    /// The bridge link `name` is a port of, if it is one.
    pub(crate) fn master(&mut self, name: &str) -> Result<Option<u32>> {
        Ok(self
            .link(name)?
            .attributes
            .into_iter()
            .find_map(|a| match a {
                LinkAttribute::Controller(master) => Some(master),
                _ => None,
            }))
    }

    /// `ip link set dev <index> alias <text>`
    pub(crate) fn set_alias(&mut self, index: u32, text: &str) -> Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message
            .attributes
            .push(LinkAttribute::IfAlias(text.to_owned()));
        let msg = request(RouteNetlinkMessage::SetLink(message), NLM_F_ACK);
        self.request(|| format!("set the alias of link {index}"), msg)
            .map(drop)
    }

    /// The alias of link `name`, `None` when there is no such link.
    pub(crate) fn alias(&mut self, name: &str) -> Result<Option<String>> {
        match self.link(name) {
            Ok(link) => Ok(link.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::IfAlias(alias) => Some(alias),
                _ => None,
            })),
            Err(Error::Netlink { source, .. }) if source.raw_os_error() == Some(libc::ENODEV) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The MTU of link `name`.
    pub(crate) fn mtu(&mut self, name: &str) -> Result<u32> {
        Ok(self
            .link(name)?
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Mtu(mtu) => Some(*mtu),
                _ => None,
            })
            .unwrap_or(DEFAULT_MTU))
    }

    /// `ip link add <name> address <mac> up type bridge forward_delay 0 mcast_snooping 0`.
    /// A bridge without an address of its own takes the lowest of its
    /// ports', so it would change as containers come and go, and every
    /// container's cached gateway address with it.
    pub(crate) fn add_bridge(&mut self, name: &str, mac: [u8; 6]) -> Result<()> {
        self.request(|| format!("add bridge {name}"), bridge_request(name, mac))
            .map(drop)
    }

    /// `ip link add <name> [master <master>] up type veth peer <peer> netns <fd> [address <mac>]`:
    /// both ends are created where they will live, so nothing is moved
    /// between namespaces afterwards. The peer stays down (the kernel cannot
    /// open it before the pair is complete); whoever owns its namespace
    /// brings it up.
    pub(crate) fn add_veth(
        &mut self,
        name: &str,
        master: Option<u32>,
        peer: &Peer<'_>,
    ) -> Result<()> {
        self.request(
            || format!("add veth {name} with peer {}", peer.name),
            veth_request(name, master, peer),
        )
        .map(drop)
    }

    /// `ip link set dev <name> down nomaster`: takes a port off its bridge
    /// without unregistering the device, which would wait for an RCU
    /// barrier (tens of milliseconds).
    pub(crate) fn detach(&mut self, name: &str) -> Result<()> {
        self.request(
            || format!("detach link {name} from its bridge"),
            detach_request(name),
        )
        .map(drop)
    }

    /// Every link of the namespace (`ip -s link`).
    pub(crate) fn links(&mut self) -> Result<Vec<LinkMessage>> {
        let replies = self.dump(
            "list links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(link),
                _ => None,
            })
            .collect())
    }

    /// Every address of the namespace, of both families (`ip addr`).
    pub(crate) fn addresses(&mut self) -> Result<Vec<AddressMessage>> {
        let mut query = AddressMessage::default();
        query.header.family = AddressFamily::Unspec;
        let replies = self.dump("list addresses", RouteNetlinkMessage::GetAddress(query))?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewAddress(address) => Some(address),
                _ => None,
            })
            .collect())
    }

    /// Every route of the namespace, of both families and every table
    /// (`ip route show table all`, and `ip -6`).
    pub(crate) fn routes(&mut self) -> Result<Vec<RouteMessage>> {
        let mut query = RouteMessage::default();
        query.header.address_family = AddressFamily::Unspec;
        let replies = self.dump("list routes", RouteNetlinkMessage::GetRoute(query))?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewRoute(route) => Some(route),
                _ => None,
            })
            .collect())
    }

    /// Every neighbour of the namespace, of both families (`ip neigh`).
    pub(crate) fn neighbours(&mut self) -> Result<Vec<NeighbourMessage>> {
        let mut query = NeighbourMessage::default();
        query.header.family = AddressFamily::Unspec;
        let replies = self.dump("list neighbours", RouteNetlinkMessage::GetNeighbour(query))?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewNeighbour(neighbour) => Some(neighbour),
                _ => None,
            })
            .collect())
    }

    /// Link `name` without its counters (`ip -d link show <name>`): the
    /// kernel skips writing them and we skip parsing them, on a path each
    /// container takes several times while its port comes up.
    fn link(&mut self, name: &str) -> Result<LinkMessage> {
        let operation = || format!("look up link {name}");
        let mut query = named(name);
        query
            .attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        let replies = self.request(
            operation,
            request(RouteNetlinkMessage::GetLink(query), NLM_F_ACK),
        )?;
        replies
            .into_iter()
            .find_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(link),
                _ => None,
            })
            .ok_or_else(|| Error::Netlink {
                operation: operation(),
                namespace: self.namespace,
                source: std::io::Error::from(std::io::ErrorKind::InvalidData),
                kernel_message: Some("no link message in the reply".into()),
            })
    }

    /// The index of link `name` (`ip link show <name>`).
    pub(crate) fn link_index(&mut self, name: &str) -> Result<u32> {
        Ok(self.link(name)?.header.index)
    }

    /// The operational state of link `name`, and its state as a bridge
    /// port if it is one (`ip -d link show <name>`).
    pub(crate) fn link_state(&mut self, name: &str) -> Result<LinkState> {
        Ok(LinkState::of(&self.link(name)?))
    }

    /// `ip addr add <addr>/<prefix> brd + dev <index>`
    pub(crate) fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        self.request(
            || format!("add address {addr}/{prefix} to link {index}"),
            address_request(index, addr, prefix),
        )
        .map(drop)
    }
}

mod tc;
mod v6;
pub(crate) use tc::{Shaping, needs_netem};

#[cfg(test)]
mod tests;
