//! IPv6 addresses, and routes of either family, over rtnetlink.

use std::net::{IpAddr, Ipv6Addr};

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NetlinkMessage};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::Rtnl;
use crate::common::error::Result;
use crate::kernel::netlink::request;

/// `ip -6 address add <addr>/<prefix> dev <index> nodad`
pub(super) fn address6_request(
    index: u32,
    addr: Ipv6Addr,
    prefix: u8,
) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut address = AddressMessage::default();
    address.header.family = AddressFamily::Inet6;
    address.header.prefix_len = prefix;
    address.header.index = index;
    address.attributes = vec![
        AddressAttribute::Local(IpAddr::V6(addr)),
        AddressAttribute::Address(IpAddr::V6(addr)),
        AddressAttribute::Flags(AddressFlags::Nodad),
    ];
    request(
        RouteNetlinkMessage::NewAddress(address),
        NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
    )
}

/// `ip route add <network>/<prefix> via <gateway>`, of the family of
/// `network` (`gateway` is of the same family); `ip route del` with `add`
/// false.
pub(super) fn route_request(
    network: IpAddr,
    prefix: u8,
    gateway: IpAddr,
    add: bool,
) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut route = RouteMessage::default();
    route.header.address_family = match network {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    route.header.destination_prefix_length = prefix;
    route.header.table = libc::RT_TABLE_MAIN;
    route.header.protocol = RouteProtocol::Static;
    route.header.scope = RouteScope::Universe;
    route.header.kind = RouteType::Unicast;
    route.attributes = vec![
        RouteAttribute::Destination(RouteAddress::from(network)),
        RouteAttribute::Gateway(RouteAddress::from(gateway)),
    ];
    if add {
        request(
            RouteNetlinkMessage::NewRoute(route),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
    } else {
        request(RouteNetlinkMessage::DelRoute(route), NLM_F_ACK)
    }
}

impl Rtnl {
    /// `ip -6 address add <addr>/<prefix> dev <index> nodad`: usable at
    /// once, without duplicate address detection.
    pub(crate) fn add_address6(&mut self, index: u32, addr: Ipv6Addr, prefix: u8) -> Result<()> {
        let msg = address6_request(index, addr, prefix);
        self.request(
            || format!("add address {addr}/{prefix} to link {index}"),
            msg,
        )
        .map(drop)
    }

    /// `ip route add <network>/<prefix> via <gateway>`, of either family
    /// (`0.0.0.0/0` is the default route).
    pub(crate) fn add_route(
        &mut self,
        network: impl Into<IpAddr>,
        prefix: u8,
        gateway: impl Into<IpAddr>,
    ) -> Result<()> {
        self.route(true, network.into(), prefix, gateway.into())
    }

    /// `ip route del <network>/<prefix> via <gateway>`
    pub(crate) fn delete_route(
        &mut self,
        network: impl Into<IpAddr>,
        prefix: u8,
        gateway: impl Into<IpAddr>,
    ) -> Result<()> {
        self.route(false, network.into(), prefix, gateway.into())
    }

    fn route(&mut self, add: bool, network: IpAddr, prefix: u8, gateway: IpAddr) -> Result<()> {
        let verb = if add { "add" } else { "delete" };
        let msg = route_request(network, prefix, gateway, add);
        self.request(
            || format!("{verb} the route {network}/{prefix} via {gateway}"),
            msg,
        )
        .map(drop)
    }
}
