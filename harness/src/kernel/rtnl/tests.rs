//! Unit tests of `rtnl`.

use std::net::Ipv6Addr;
use std::os::fd::AsFd;

use netlink_packet_core::{NLM_F_REQUEST, NetlinkPayload};

use netlink_packet_route::link::InfoPortKind;

use super::*;
use crate::kernel::netlink::bytes_of;

/// `message` as the kernel receives it, parsed back by
/// `netlink-packet-route`: its flags and its payload.
fn parsed(message: NetlinkMessage<RouteNetlinkMessage>) -> (u16, RouteNetlinkMessage) {
    let bytes = bytes_of(message);
    let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
    assert_eq!(message.header.length as usize, bytes.len());
    match message.payload {
        NetlinkPayload::InnerMessage(inner) => (message.header.flags, inner),
        other => panic!("not an rtnetlink message: {other:?}"),
    }
}

const CREATE: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;

#[test]
fn a_veth_request_is_read_back_with_its_peer_in_its_namespace() {
    let netns = std::fs::File::open("/proc/self/ns/net").unwrap();
    let mac = [0x02, 0, 10, 200, 0, 2];
    let peer = Peer {
        name: "eth0",
        netns: netns.as_fd(),
        mac: Some(mac),
    };
    let (flags, message) = parsed(veth_request("v1", Some(7), &peer));
    assert_eq!(flags, CREATE);
    let RouteNetlinkMessage::NewLink(veth) = message else {
        panic!("not RTM_NEWLINK: {message:?}");
    };
    assert_eq!(veth.header.flags, LinkFlags::Up);
    assert_eq!(veth.header.change_mask, LinkFlags::Up);
    assert!(
        veth.attributes
            .contains(&LinkAttribute::IfName("v1".into()))
    );
    assert!(veth.attributes.contains(&LinkAttribute::Controller(7)));
    let infos = veth
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => Some(infos),
            _ => None,
        })
        .expect("IFLA_LINKINFO");
    assert_eq!(infos[0], LinkInfo::Kind(InfoKind::Veth));
    let LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(far))) = &infos[1] else {
        panic!("no VETH_INFO_PEER: {infos:?}");
    };
    assert_eq!(far.header.index, 0);
    assert_eq!(
        far.attributes,
        [
            LinkAttribute::IfName("eth0".into()),
            LinkAttribute::NetNsFd(netns.as_raw_fd()),
            LinkAttribute::Address(mac.to_vec()),
        ]
    );
}

#[test]
fn a_bridge_request_has_its_address_no_forward_delay_and_no_snooping() {
    let mac = [0x02, 0, 10, 200, 0, 1];
    let (flags, message) = parsed(bridge_request("br0", mac));
    assert_eq!(flags, CREATE);
    let RouteNetlinkMessage::NewLink(bridge) = message else {
        panic!("not RTM_NEWLINK: {message:?}");
    };
    assert_eq!(
        bridge.attributes,
        [
            LinkAttribute::IfName("br0".into()),
            LinkAttribute::Address(mac.to_vec()),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Bridge),
                LinkInfo::Data(InfoData::Bridge(vec![
                    InfoBridge::ForwardDelay(0),
                    InfoBridge::MulticastSnooping(false),
                ])),
            ]),
        ]
    );
}

#[test]
fn detaching_clears_up_and_the_master() {
    let (flags, message) = parsed(detach_request("v1"));
    assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK);
    let RouteNetlinkMessage::SetLink(port) = message else {
        panic!("not RTM_SETLINK: {message:?}");
    };
    assert_eq!(port.header.flags, LinkFlags::empty());
    assert_eq!(port.header.change_mask, LinkFlags::Up);
    assert_eq!(
        port.attributes,
        [
            LinkAttribute::IfName("v1".into()),
            LinkAttribute::Controller(0)
        ]
    );
}

#[test]
fn an_address_request_has_its_broadcast() {
    let addr = Ipv4Addr::new(10, 200, 0, 1);
    let (flags, message) = parsed(address_request(3, addr, 16));
    assert_eq!(flags, CREATE);
    let RouteNetlinkMessage::NewAddress(address) = message else {
        panic!("not RTM_NEWADDR: {message:?}");
    };
    assert_eq!(address.header.family, AddressFamily::Inet);
    assert_eq!((address.header.prefix_len, address.header.index), (16, 3));
    assert_eq!(
        address.attributes,
        [
            AddressAttribute::Local(IpAddr::V4(addr)),
            AddressAttribute::Address(IpAddr::V4(addr)),
            AddressAttribute::Broadcast(Ipv4Addr::new(10, 200, 255, 255)),
        ]
    );
}

#[test]
fn a_forwarding_bridge_port_is_found_in_its_link_info() {
    let mut port = named("v1");
    port.attributes.push(LinkAttribute::OperState(State::Up));
    port.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::PortKind(InfoPortKind::Bridge),
        LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::State(
            BridgePortState::Forwarding,
        )])),
    ]));
    let (_, message) = parsed(request(RouteNetlinkMessage::NewLink(port), 0));
    let RouteNetlinkMessage::NewLink(port) = message else {
        panic!("not RTM_NEWLINK: {message:?}");
    };
    let state = LinkState::of(&port);
    assert!(state.up && state.forwarding);
    let state = LinkState::of(&named("v1"));
    assert!(!state.up && !state.forwarding);
}

#[test]
fn ipv6_address_and_route_requests_are_read_back() {
    let addr: std::net::Ipv6Addr = "fd00:200::1".parse().unwrap();
    let (flags, message) = parsed(v6::address6_request(3, addr, 64));
    assert_eq!(flags, CREATE);
    let RouteNetlinkMessage::NewAddress(address) = message else {
        panic!("not RTM_NEWADDR: {message:?}");
    };
    assert_eq!(
        (
            address.header.family,
            address.header.prefix_len,
            address.header.index
        ),
        (AddressFamily::Inet6, 64, 3)
    );
    assert!(address.attributes.contains(&AddressAttribute::Flags(
        netlink_packet_route::address::AddressFlags::Nodad
    )));
    assert!(
        address
            .attributes
            .contains(&AddressAttribute::Local(addr.into()))
    );
    let (network, gateway): (Ipv6Addr, Ipv6Addr) = (
        "fd00:200::".parse().unwrap(),
        "2001:db8::1".parse().unwrap(),
    );
    let (flags, message) = parsed(v6::route_request(network.into(), 64, gateway.into(), true));
    assert_eq!(flags, CREATE);
    let RouteNetlinkMessage::NewRoute(route) = message else {
        panic!("not RTM_NEWROUTE: {message:?}");
    };
    use netlink_packet_route::route::{RouteAddress, RouteAttribute};
    assert_eq!(route.header.destination_prefix_length, 64);
    assert_eq!(
        route.attributes,
        [
            RouteAttribute::Destination(RouteAddress::Inet6(network)),
            RouteAttribute::Gateway(RouteAddress::Inet6(gateway)),
        ]
    );
    let default = Ipv4Addr::UNSPECIFIED.into();
    let (_, message) = parsed(v6::route_request(
        default,
        0,
        Ipv4Addr::new(203, 0, 113, 1).into(),
        false,
    ));
    let RouteNetlinkMessage::DelRoute(route) = message else {
        panic!("not RTM_DELROUTE: {message:?}");
    };
    assert_eq!(route.header.address_family, AddressFamily::Inet);
    assert_eq!(route.header.destination_prefix_length, 0);
}
