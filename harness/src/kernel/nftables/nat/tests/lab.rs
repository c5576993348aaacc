//! Routers that translate real datagrams: two hosts on a bridge behind a
//! router, and an outside namespace holding two public addresses, all in
//! namespaces these tests create; UDP sockets opened inside them.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use super::*;
use crate::kernel::nftables::{NatRules, add_forward, flush_nat, install_nat, remove_forward};
use crate::kernel::rtnl::{Peer, Rtnl};
use crate::kernel::userns::create_netns;

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const HOST1: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
const HOST2: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 3);
const PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const FAR1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const FAR2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
pub(super) const SEED: u32 = 0x5eed_1234;
/// How long a datagram that should not arrive is waited for, once those
/// that should have arrived.
const GRACE: Duration = Duration::from_millis(500);
const PATIENCE: Duration = Duration::from_secs(5);

/// The namespaces of a test: two hosts, their router, the outside.
struct Lab {
    host1: OwnedFd,
    host2: OwnedFd,
    router: OwnedFd,
    outside: OwnedFd,
    nft: Socket,
}

/// Waits until `ready` holds, at most [`PATIENCE`].
fn wait(what: &str, mut ready: impl FnMut() -> Result<bool>) {
    let deadline = Instant::now() + PATIENCE;
    while !ready().unwrap() {
        assert!(Instant::now() < deadline, "{what} never became ready");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A host on the bridge: `eth0` with `addr`/24, routed through the router.
fn host(router: &mut Rtnl, bridge: u32, port: &str, addr: Ipv4Addr) -> OwnedFd {
    let (netns, mut rtnl) = create_netns(|| Rtnl::open("host")).unwrap();
    let peer = Peer {
        name: "eth0",
        netns: netns.as_fd(),
        mac: None,
    };
    router.add_veth(port, Some(bridge), &peer).unwrap();
    rtnl.set_up(1).unwrap();
    let eth0 = rtnl.link_index("eth0").unwrap();
    rtnl.set_up(eth0).unwrap();
    rtnl.add_address(eth0, addr, 24).unwrap();
    wait("a host's eth0", || Ok(rtnl.link_state("eth0")?.up));
    wait("a bridge port", || Ok(router.link_state(port)?.forwarding));
    rtnl.add_route(Ipv4Addr::UNSPECIFIED, 0, GATEWAY).unwrap();
    netns
}

impl Lab {
    /// The namespaces, links and addresses, and the router's NAT.
    fn new(nat: Nat) -> Lab {
        let (router, (mut rtnl, mut nft)) = create_netns(|| {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|e| Error::os("", e))?;
            let nft = Socket::open(libc::NETLINK_NETFILTER).map_err(|e| Error::os("", e))?;
            Ok((Rtnl::open("router")?, nft))
        })
        .unwrap();
        rtnl.set_up(1).unwrap();
        rtnl.add_bridge("br0", [2, 0, 10, 9, 0, 1]).unwrap();
        let bridge = rtnl.link_index("br0").unwrap();
        rtnl.add_address(bridge, GATEWAY, 24).unwrap();
        let (outside, mut far) = create_netns(|| Rtnl::open("outside")).unwrap();
        let peer = Peer {
            name: "eth0",
            netns: outside.as_fd(),
            mac: None,
        };
        rtnl.add_veth("uplink", None, &peer).unwrap();
        let uplink = rtnl.link_index("uplink").unwrap();
        rtnl.add_address(uplink, PUBLIC, 24).unwrap();
        far.set_up(1).unwrap();
        let eth0 = far.link_index("eth0").unwrap();
        far.set_up(eth0).unwrap();
        for addr in [FAR1, FAR2] {
            far.add_address(eth0, addr, 24).unwrap();
        }
        wait("the uplink", || Ok(rtnl.link_state("uplink")?.up));
        wait("the outside's eth0", || Ok(far.link_state("eth0")?.up));
        let host1 = host(&mut rtnl, bridge, "lan1", HOST1);
        let host2 = host(&mut rtnl, bridge, "lan2", HOST2);
        let rules = NatRules {
            lan: "10.9.0.0/24".parse().unwrap(),
            lan_if: "br0",
            wan_if: "uplink",
            public: PUBLIC,
            nat,
            seed: SEED,
        };
        install_nat(router.as_fd(), &mut nft, &rules).unwrap();
        Lab {
            host1,
            host2,
            router,
            outside,
            nft,
        }
    }

    /// A UDP socket bound to `addr` in namespace `netns`.
    fn socket(netns: &OwnedFd, addr: SocketAddrV4) -> UdpSocket {
        netns::run_in(netns.as_fd(), || {
            UdpSocket::bind(addr).map_err(|e| Error::os(format!("bind {addr}"), e))
        })
        .unwrap()
    }

    fn host1(&self, port: u16) -> UdpSocket {
        Lab::socket(&self.host1, SocketAddrV4::new(HOST1, port))
    }

    fn host2(&self, port: u16) -> UdpSocket {
        Lab::socket(&self.host2, SocketAddrV4::new(HOST2, port))
    }

    fn far(&self, addr: Ipv4Addr, port: u16) -> UdpSocket {
        Lab::socket(&self.outside, SocketAddrV4::new(addr, port))
    }
}

fn send(from: &UdpSocket, token: &str, to: SocketAddr) {
    from.send_to(token.as_bytes(), to).unwrap();
}

/// What `socket` receives, token and sender: until every token of
/// `expected` arrived (at most [`PATIENCE`]), then for [`GRACE`] more.
fn collect(socket: &UdpSocket, expected: &[&str]) -> BTreeSet<(String, SocketAddr)> {
    let mut got = BTreeSet::new();
    let mut deadline = Instant::now() + if expected.is_empty() { GRACE } else { PATIENCE };
    let mut complete = expected.is_empty();
    let mut buf = [0; 128];
    while let Some(left) = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
    {
        socket.set_read_timeout(Some(left)).unwrap();
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                got.insert((String::from_utf8_lossy(&buf[..n]).into_owned(), from));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("receive: {e}"),
        }
        if !complete && expected.iter().all(|t| got.iter().any(|(g, _)| g == t)) {
            complete = true;
            deadline = Instant::now() + GRACE;
        }
    }
    got
}

/// The one datagram `socket` receives within [`PATIENCE`]: its sender.
fn sender_of(socket: &UdpSocket, token: &str) -> SocketAddrV4 {
    let got = collect(socket, &[token]);
    let senders: Vec<_> = got
        .iter()
        .filter(|(t, _)| t == token)
        .map(|(_, s)| *s)
        .collect();
    match senders[..] {
        [SocketAddr::V4(sender)] => sender,
        _ => panic!("{token}: received {got:?}"),
    }
}

fn public(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(PUBLIC, port))
}

fn at(addr: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(addr, port))
}

/// RFC 4787 section 4.1: the public port one host endpoint gets towards
/// `.10:3478`, `.11:3478` and `.10:3479`, and which of them are equal.
#[rstest::rstest]
#[case::endpoint_independent(Mapping::EndpointIndependent, [true, true])]
#[case::address_dependent(Mapping::AddressDependent, [false, true])]
#[case::address_and_port_dependent(Mapping::AddressAndPortDependent, [false, false])]
fn each_mapping_reuses_a_public_port_as_rfc_4787_says(
    #[case] mapping: Mapping,
    #[case] same_as_first: [bool; 2],
) {
    let timeout = Duration::from_secs(77);
    let lab = Lab::new(Nat::new(mapping, Filtering::AddressAndPortDependent).udp_timeout(timeout));
    let host = lab.host1(5000);
    let destinations = [(FAR1, 3478), (FAR2, 3478), (FAR1, 3479)];
    let mut ports = Vec::new();
    for (addr, port) in destinations {
        let far = lab.far(addr, port);
        let token = format!("{mapping} to {addr}:{port}");
        send(&host, &token, at(addr, port));
        let sender = sender_of(&far, &token);
        assert_eq!(*sender.ip(), PUBLIC, "{token}");
        // The port on the wire is the hash of the mapping's key.
        let (host_addr, host_port, dst_port) =
            (HOST1.octets(), 5000u16.to_be_bytes(), port.to_be_bytes());
        let key: &[&[u8]] = match mapping {
            Mapping::EndpointIndependent => &[&host_addr, &host_port],
            Mapping::AddressDependent => &[&host_addr, &host_port, &addr.octets()],
            Mapping::AddressAndPortDependent => {
                &[&host_addr, &host_port, &addr.octets(), &dst_port]
            }
        };
        assert_eq!(sender.port(), expected_port(key), "{token}");
        ports.push(sender.port());
    }
    assert_eq!(
        [ports[1] == ports[0], ports[2] == ports[0]],
        same_as_first,
        "{mapping}: {ports:?}"
    );
    let sysctl = netns::run_in(lab.router.as_fd(), || {
        let read = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/net/netfilter/{name}")).unwrap()
        };
        Ok([
            read("nf_conntrack_udp_timeout"),
            read("nf_conntrack_udp_timeout_stream"),
        ])
    })
    .unwrap();
    assert_eq!(sysctl, ["77\n", "77\n"]);
}

/// RFC 4787 section 5: after the host sent to `.10:3478`, which of
/// `.10:3478`, `.10:3479` and `.11:3478` get a datagram back in.
#[rstest::rstest]
#[case::endpoint_independent(Filtering::EndpointIndependent, [true, true, true])]
#[case::address_dependent(Filtering::AddressDependent, [true, true, false])]
#[case::address_and_port_dependent(Filtering::AddressAndPortDependent, [true, false, false])]
fn each_filtering_lets_in_whom_rfc_4787_says(
    #[case] filtering: Filtering,
    #[case] admitted: [bool; 3],
) {
    let lab = Lab::new(Nat::new(Mapping::EndpointIndependent, filtering));
    let host = lab.host1(5000);
    let peers = [(FAR1, 3478), (FAR1, 3479), (FAR2, 3478)]
        .map(|(addr, port)| (lab.far(addr, port), at(addr, port)));
    send(&host, "hello", peers[0].1);
    let mapped = sender_of(&peers[0].0, "hello");
    let mut expected = Vec::new();
    let mut tokens = Vec::new();
    for ((far, addr), admitted) in peers.iter().zip(admitted) {
        let token = format!("{filtering}: from {addr}");
        send(far, &token, SocketAddr::V4(mapped));
        if admitted {
            expected.push((token.clone(), *addr));
        }
        tokens.push(token);
    }
    let wanted: Vec<&str> = expected.iter().map(|(t, _)| t.as_str()).collect();
    let got = collect(&host, &wanted);
    assert_eq!(
        got,
        expected.into_iter().collect(),
        "{filtering}, all sent: {tokens:?}"
    );
}

/// Two hosts behind the router reach each other through their public
/// endpoints, and see each other's (RFC 4787 REQ-9); without hairpinning,
/// not at all.
#[rstest::rstest]
#[case::on(true)]
#[case::off(false)]
fn hosts_reach_each_others_public_endpoint_only_with_hairpinning(#[case] hairpinning: bool) {
    let nat = Nat::new(
        Mapping::EndpointIndependent,
        Filtering::AddressAndPortDependent,
    );
    let lab = Lab::new(nat.hairpinning(hairpinning));
    let (host1, host2, far) = (lab.host1(5000), lab.host2(6000), lab.far(FAR1, 3478));
    send(&host1, "host1 out", at(FAR1, 3478));
    let public1 = sender_of(&far, "host1 out");
    send(&host2, "host2 out", at(FAR1, 3478));
    let public2 = sender_of(&far, "host2 out");
    send(&host1, "hairpin", SocketAddr::V4(public2));
    if !hairpinning {
        assert_eq!(collect(&host2, &[]), BTreeSet::new());
        return;
    }
    assert_eq!(sender_of(&host2, "hairpin"), public1);
    send(&host2, "hairpin back", SocketAddr::V4(public1));
    assert_eq!(sender_of(&host1, "hairpin back"), public2);
}

/// A port forward lets anyone in, even through a symmetric NAT, and from
/// the LAN through hairpinning; a second one of the same port is refused;
/// a router reboot forgets the mappings but keeps the forwards.
#[test]
fn forwards_stay_and_mappings_go_when_the_router_reboots() {
    let mut lab = Lab::new(Nat::new(
        Mapping::EndpointIndependent,
        Filtering::EndpointIndependent,
    ));
    let to = SocketAddrV4::new(HOST2, 7000);
    add_forward(&mut lab.nft, Protocol::Udp, 8000, to).unwrap();
    let refused = add_forward(
        &mut lab.nft,
        Protocol::Udp,
        8000,
        SocketAddrV4::new(HOST1, 9),
    )
    .unwrap_err();
    assert!(
        matches!(refused, Error::PortForwarded { protocol: "udp", port: 8000, to: SocketAddr::V4(t) } if t == to),
        "{refused:?}"
    );
    // Another protocol's port 8000 is free.
    add_forward(
        &mut lab.nft,
        Protocol::Tcp,
        8000,
        SocketAddrV4::new(HOST1, 22),
    )
    .unwrap();
    let (host1, server, far1, far2) = (
        lab.host1(5000),
        lab.host2(7000),
        lab.far(FAR1, 3478),
        lab.far(FAR2, 3478),
    );
    send(&far2, "forwarded", public(8000));
    assert_eq!(
        sender_of(&server, "forwarded"),
        SocketAddrV4::new(FAR2, 3478)
    );
    send(&host1, "mapped", at(FAR1, 3478));
    let mapped = sender_of(&far1, "mapped");
    send(&host1, "forwarded from the lan", public(8000));
    assert_eq!(sender_of(&server, "forwarded from the lan"), mapped);
    send(&far2, "through the mapping", SocketAddr::V4(mapped));
    assert_eq!(
        sender_of(&host1, "through the mapping"),
        SocketAddrV4::new(FAR2, 3478)
    );

    flush_nat(&mut lab.nft).unwrap();
    let far3 = lab.far(FAR2, 3479);
    send(&far3, "after the reboot", SocketAddr::V4(mapped));
    assert_eq!(collect(&host1, &[]), BTreeSet::new());
    // Not even from the endpoint the host sent to: conntrack forgot it.
    send(
        &far1,
        "from the host's peer after the reboot",
        SocketAddr::V4(mapped),
    );
    assert_eq!(collect(&host1, &[]), BTreeSet::new());
    send(&far3, "forwarded after the reboot", public(8000));
    assert_eq!(
        sender_of(&server, "forwarded after the reboot"),
        SocketAddrV4::new(FAR2, 3479)
    );
    // The forward's reply leaves from it; it makes no mapping that would
    // outlive it.
    send(&server, "reply", at(FAR2, 3479));
    assert_eq!(sender_of(&far3, "reply"), SocketAddrV4::new(PUBLIC, 8000));

    // A removed forward takes no new connection, and its port is free
    // again (a new peer: the old one's connection lives on in conntrack).
    remove_forward(&mut lab.nft, Protocol::Udp, 8000).unwrap();
    let far4 = lab.far(FAR1, 3480);
    send(&far4, "to a removed forward", public(8000));
    assert_eq!(collect(&server, &[]), BTreeSet::new());
    let other = lab.host1(7000);
    add_forward(
        &mut lab.nft,
        Protocol::Udp,
        8000,
        SocketAddrV4::new(HOST1, 7000),
    )
    .unwrap();
    send(&far4, "forwarded elsewhere", public(8000));
    assert_eq!(
        sender_of(&other, "forwarded elsewhere"),
        SocketAddrV4::new(FAR1, 3480)
    );
}
