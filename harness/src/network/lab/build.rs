//! Building a lab: its settings, its namespaces, bridge, gateway, uplink,
//! forwarding and NAT.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};

use super::*;
use crate::common::subnet::AddressPool;
use crate::kernel::netlink::Socket;
use crate::kernel::rtnl::Peer;

/// Ranges a lab subnet may not overlap.
const RESERVED: [(Ipv4Addr, u8, &str); 5] = [
    (
        UPLINK_SUBNET,
        UPLINK_PREFIX,
        "the lab's uplink to the outside network",
    ),
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\""),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved"),
];

/// Settings of a lab; see [`Lab::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct LabBuilder {
    subnet: String,
    subnet6: String,
    stack: Stack,
    nat66: bool,
    bridge: String,
    ahead: u32,
}

impl Default for LabBuilder {
    fn default() -> Self {
        Self {
            subnet: DEFAULT_SUBNET.to_owned(),
            subnet6: DEFAULT_SUBNET6.to_owned(),
            stack: Stack::default(),
            nat66: false,
            bridge: DEFAULT_BRIDGE.to_owned(),
            ahead: super::warm::DEPTH,
        }
    }
}

impl LabBuilder {
    /// The subnet of the bridge, in CIDR notation (default `10.200.0.0/16`).
    /// The gateway is its first host; containers get the following ones.
    /// It must be a `/8` to `/30` and not overlap `198.18.0.0/24` (the
    /// uplink), loopback, multicast or other reserved ranges.
    pub fn subnet(mut self, subnet: &str) -> Self {
        subnet.clone_into(&mut self.subnet);
        self
    }

    /// Which IP families the bridge's network carries (default
    /// [`Stack::V4`]). With IPv6 ([`Stack::Dual`], [`Stack::V6`]), the
    /// gateway and every container get an address of the IPv6 subnet
    /// ([`LabBuilder::subnet6`]) and a default route through the gateway,
    /// at once (no duplicate address detection, no router
    /// advertisements); the lab routes IPv6 to the outside host without
    /// NAT, so the outside sees containers' own addresses. The uplink
    /// and the outside host always carry both families.
    pub fn stack(mut self, stack: Stack) -> Self {
        self.stack = stack;
        self
    }

    /// The IPv6 subnet of the bridge (default `fd00:200::/64`, unique local
    /// addresses), used when the [`stack`](LabBuilder::stack) has IPv6: a
    /// `/64`, not overlapping the uplink's `2001:db8::/64`, link-local or
    /// multicast addresses. The gateway is `…::1`; a container's address
    /// ends in its IPv4 address's host part, octet by octet (`10.200.1.5`
    /// is `fd00:200::1:5`).
    pub fn subnet6(mut self, subnet: &str) -> Self {
        subnet.clone_into(&mut self.subnet6);
        self
    }

    /// Whether the lab translates IPv6 too (default `false`: IPv6 is
    /// routed, as IPv6 networks are, and the outside host sees
    /// containers' own addresses). With NAT66, the gateway masquerades
    /// what containers send to the outside behind
    /// [`Lab::public_addr6`], as it does for IPv4, and the outside host has
    /// no route back to the bridge's IPv6 subnet.
    pub fn nat66(mut self, nat66: bool) -> Self {
        self.nat66 = nat66;
        self
    }

    /// How many network namespaces the lab keeps ready for its next
    /// containers, in each process that starts containers on it (default
    /// 2; 0 for none). From its second container in a process on, a thread
    /// of lower priority makes each namespace with an `eth0` (down) whose
    /// peer is a port of the bridge, so that a container's start joins one
    /// instead of waiting for the kernel to make them. That spares about a
    /// third of a start when the test leaves time between its starts (see
    /// the README's Performance); back to back, the thread cannot keep up
    /// and starts cost what they did. Each container still has a network
    /// namespace of its own, used by no other, configured at its start as
    /// one it made would be. The bridge then has up to `n` ports without
    /// carrier per such process besides those of its containers; they go
    /// once the lab's handles and containers in that process have (and
    /// with the process, however it ends).
    pub fn ahead(mut self, n: u32) -> Self {
        self.ahead = n;
        self
    }

    /// The name of the bridge (default `br0`).
    pub fn bridge(mut self, name: &str) -> Self {
        name.clone_into(&mut self.bridge);
        self
    }

    /// Creates the lab: its namespaces, bridge, gateway, uplink, forwarding
    /// and NAT. Everything is released when the [`Lab`] and all its
    /// containers are dropped, or when the process ends.
    pub fn build(self) -> Result<Lab> {
        let started = Instant::now();
        let addressing = self.addressing()?;
        let (outside_ns, mut outside) = crate::kernel::userns::create_netns(outside_host)?;
        let Gateway {
            lab_ns,
            mut rtnl,
            mut nft,
            bridge_index,
        } = self.gateway(&addressing)?;
        rtnl.add_veth(
            UPLINK,
            None,
            &Peer {
                name: "eth0",
                netns: outside_ns.as_fd(),
                mac: None,
            },
        )?;
        let uplink_index = rtnl.link_index(UPLINK)?;
        rtnl.add_address(uplink_index, DEFAULT_UPLINK.public, UPLINK_PREFIX)?;
        let outside_eth0 = outside.link_index("eth0")?;
        outside.set_up(outside_eth0)?;
        outside.add_address(outside_eth0, DEFAULT_UPLINK.outside, UPLINK_PREFIX)?;
        if self.stack.has_v4() {
            let sources = nftables::Sources::V4(addressing.subnet);
            nftables::install_masquerade(&mut nft, sources, UPLINK)?;
        }
        if let Some(gateway) = addressing.addr6(addressing.gateway()) {
            let setup = v6::Setup {
                bridge: &self.bridge,
                bridge_index,
                uplink: UPLINK,
                uplink_index,
                outside_eth0,
                gateway,
                subnet6: addressing.subnet6,
                routed: !addressing.nat66,
            };
            v6::configure(&lab_ns, &mut rtnl, &mut outside, &setup)?;
            if addressing.nat66 {
                let sources = nftables::Sources::V6(addressing.subnet6);
                nftables::install_masquerade(&mut nft, sources, UPLINK)?;
            }
        }
        // Both ends of the uplink carry traffic only once the kernel has
        // processed their carrier.
        wait_for(UPLINK, "come up", || Ok(rtnl.link_state(UPLINK)?.up))?;
        wait_for("eth0 of the outside host", "come up", || {
            Ok(outside.link_state("eth0")?.up)
        })?;
        tracing::debug!(subnet = %addressing.subnet, bridge = self.bridge, elapsed = ?started.elapsed(), "lab built");
        let gateway = Gateway {
            lab_ns,
            rtnl,
            nft,
            bridge_index,
        };
        Ok(gateway.into_lab(
            self,
            addressing,
            DEFAULT_UPLINK,
            outside_ns,
            Upstream::default(),
        ))
    }

    /// The addressing the settings describe, checked.
    fn addressing(&self) -> Result<Addressing> {
        let subnet = validate_subnet(&self.subnet)?;
        let addressing = Addressing {
            stack: self.stack,
            subnet,
            subnet6: v6::validate_subnet6(&self.subnet6)?,
            nat66: self.nat66,
        };
        if self.nat66 && !self.stack.has_v6() {
            return Err(Error::InvalidSubnet {
                subnet: self.subnet6.clone(),
                reason: "NAT66 translates the lab's IPv6 subnet, but the lab carries IPv4 only; \
                         add .stack(Stack::Dual) or .stack(Stack::V6), or drop .nat66(true)"
                    .to_owned(),
            });
        }
        names::validate(&self.bridge)?;
        if self.bridge == UPLINK {
            return Err(Error::InvalidName {
                name: self.bridge.clone(),
                reason: format!(
                    "{UPLINK:?} is the name of the lab's uplink; choose another bridge name"
                ),
            });
        }
        Ok(addressing)
    }

    /// The lab namespace with its bridge and the gateway's address on it.
    fn gateway(&self, addressing: &Addressing) -> Result<Gateway> {
        let (lab_ns, (mut rtnl, nft)) = crate::kernel::userns::create_netns(lab_router)?;
        rtnl.set_up(LOOPBACK_INDEX)?;
        let gateway = addressing.gateway();
        rtnl.add_bridge(&self.bridge, mac_for(gateway))?;
        let bridge_index = rtnl.link_index(&self.bridge)?;
        if self.stack.has_v4() {
            rtnl.add_address(bridge_index, gateway, addressing.subnet.prefix())?;
        }
        Ok(Gateway {
            lab_ns,
            rtnl,
            nft,
            bridge_index,
        })
    }

    /// A network of a topology: a lab whose router's uplink is a port of
    /// `upstream`'s bridge, with an address of `upstream`'s subnet and its
    /// default route through `upstream`'s gateway, doing `router`
    /// (`seed` chooses a NAT's ports); its containers know `outside` as the
    /// outside host, whose namespace is `outside_ns`; it keeps `keep` (the
    /// topology's public hosts) alive. IPv4 only.
    pub(crate) fn build_behind(
        self,
        upstream: &Arc<LabInner>,
        router: Router,
        outside: (Ipv4Addr, OwnedFd),
        seed: u32,
        keep: Arc<dyn std::any::Any + Send + Sync + std::panic::RefUnwindSafe>,
    ) -> Result<Lab> {
        let started = Instant::now();
        let addressing = self.addressing()?;
        let mut gateway = self.gateway(&addressing)?;
        let lease = upstream.lease()?;
        let port = upstream.port_name();
        upstream.rtnl().add_veth(
            &port,
            Some(upstream.bridge_index()),
            &Peer {
                name: UPLINK,
                netns: gateway.lab_ns.as_fd(),
                mac: Some(mac_for(lease.addr())),
            },
        )?;
        netns::run_in(gateway.lab_ns.as_fd(), no_bridge_netfilter)?;
        let rtnl = &mut gateway.rtnl;
        let uplink_index = rtnl.link_index(UPLINK)?;
        rtnl.set_up(uplink_index)?;
        let upstream_subnet = upstream.addressing().subnet;
        rtnl.add_address(uplink_index, lease.addr(), upstream_subnet.prefix())?;
        rtnl.add_route(Ipv4Addr::UNSPECIFIED, 0, upstream.addressing().gateway())?;
        let mut route = None;
        match router {
            Router::Translating(nat) => {
                let rules = nftables::NatRules {
                    lan: addressing.subnet,
                    lan_if: &self.bridge,
                    wan_if: UPLINK,
                    public: lease.addr(),
                    nat,
                    seed,
                };
                nftables::install_nat(gateway.lab_ns.as_fd(), &mut gateway.nft, &rules)?;
            }
            Router::Masquerade => {
                let sources = nftables::Sources::V4(addressing.subnet);
                nftables::install_masquerade(&mut gateway.nft, sources, UPLINK)?;
            }
            Router::Routed => {
                let subnet = addressing.subnet;
                upstream
                    .rtnl()
                    .add_route(subnet.network(), subnet.prefix(), lease.addr())?;
                route = Some(UpstreamRoute {
                    upstream: Arc::clone(upstream),
                    subnet,
                    via: lease.addr(),
                });
            }
        }
        wait_for(UPLINK, "come up", || {
            Ok(gateway.rtnl.link_state(UPLINK)?.up)
        })?;
        tracing::debug!(subnet = %addressing.subnet, %router, elapsed = ?started.elapsed(), "network built");
        let uplink = Uplink {
            public: lease.addr(),
            outside: outside.0,
            router,
            internet: true,
        };
        let upstream = Upstream {
            _route: route,
            lease: Some((lease, port)),
            _keep: Some(keep),
            claim: Some(Arc::new(())),
        };
        Ok(gateway.into_lab(self, addressing, uplink, outside.1, upstream))
    }
}

impl LabBuilder {
    /// A segment without uplink nor NAT, whose gateway routes (a
    /// topology's internet): `hosts` attaches its hosts to the bridge
    /// (given the lab namespace's socket and the bridge's index) and
    /// returns the one containers know as the outside host.
    pub(crate) fn build_segment(
        self,
        hosts: impl FnOnce(&mut Rtnl, u32) -> Result<(Ipv4Addr, OwnedFd)>,
    ) -> Result<Lab> {
        let addressing = self.addressing()?;
        let mut gateway = self.gateway(&addressing)?;
        let (outside, outside_ns) = hosts(&mut gateway.rtnl, gateway.bridge_index)?;
        let uplink = Uplink {
            public: addressing.gateway(),
            outside,
            router: Router::Routed,
            internet: true,
        };
        Ok(gateway.into_lab(self, addressing, uplink, outside_ns, Upstream::default()))
    }
}

/// A lab namespace with its bridge, before its uplink.
struct Gateway {
    lab_ns: OwnedFd,
    rtnl: Rtnl,
    nft: Socket,
    bridge_index: u32,
}

impl Gateway {
    fn into_lab(
        self,
        settings: LabBuilder,
        addressing: Addressing,
        uplink: Uplink,
        outside_ns: OwnedFd,
        upstream: Upstream,
    ) -> Lab {
        Lab::from_inner(LabInner {
            addressing,
            uplink,
            upstream,
            bridge: settings.bridge,
            bridge_index: self.bridge_index,
            lab_ns: self.lab_ns,
            outside_ns,
            rtnl: Mutex::new(self.rtnl),
            nft: Mutex::new(Some(self.nft)),
            pool: Mutex::new(AddressPool::new(addressing.subnet)),
            hosts: Mutex::new(Hosts::new(&addressing, &uplink, Vec::new())),
            port_prefix: "v".to_owned(),
            next_port: Default::default(),
            warm: super::warm::Warm::new(settings.ahead),
            next_view: AtomicU32::new(0),
            keeper: None,
        })
    }
}

const LOOPBACK_INDEX: u32 = 1;

/// In the outside host's new namespace: `lo` up, and a netlink socket.
pub(crate) fn outside_host() -> Result<Rtnl> {
    no_dad_on_new_links("outside")?;
    let mut rtnl = Rtnl::open("outside")?;
    rtnl.set_up(LOOPBACK_INDEX)?;
    Ok(rtnl)
}

/// In the lab's new namespace: forwarding on, no IPv6 addresses on ports
/// to come, and netlink sockets for links and nf_tables.
fn lab_router() -> Result<(Rtnl, Socket)> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| Error::os("enable IPv4 forwarding in the lab namespace", e))?;
    // Bridge ports need no IPv6 address of their own: without one, a new
    // port costs no address generation, DAD or MLD (the bridge still
    // carries containers' IPv6 traffic).
    no_dad_on_new_links("lab")?;
    if std::path::Path::new(IPV6_DEFAULT_DISABLE).exists() {
        std::fs::write(IPV6_DEFAULT_DISABLE, "1")
            .map_err(|e| Error::os("disable IPv6 addresses on the lab's ports", e))?;
    }
    let nft = Socket::open(libc::NETLINK_NETFILTER)
        .map_err(|e| Error::os("open an nf_tables socket in the lab namespace", e))?;
    Ok((Rtnl::open("lab")?, nft))
}

/// Frames bridged between two ports of a bridge of the calling thread's
/// namespace stay out of its IP hooks (`br_netfilter`, when the kernel
/// has it, passes them through by default): a router's NAT then sees only
/// what it routes. Otherwise a packet a container sends to its own public
/// endpoint (hairpinning) is translated back to it as a bridged frame, and
/// the bridge drops it, since it would leave by the port it came in by.
fn no_bridge_netfilter() -> Result<()> {
    for family in ["iptables", "ip6tables", "arptables"] {
        let path = format!("/proc/sys/net/bridge/bridge-nf-call-{family}");
        if std::path::Path::new(&path).exists() {
            std::fs::write(&path, "0").map_err(|e| {
                Error::os(
                    format!("turn off bridge-nf-call-{family} in a router's namespace"),
                    e,
                )
            })?;
        }
    }
    Ok(())
}

/// IPv6 for links created afterwards in the calling thread's namespace.
const IPV6_DEFAULT_DISABLE: &str = "/proc/sys/net/ipv6/conf/default/disable_ipv6";

/// Links created afterwards in the calling thread's namespace (`namespace`,
/// for errors) use their IPv6 addresses at once, without duplicate address
/// detection: until it ends (a second), a link-local address is tentative,
/// and the lab's IPv6 forwarding to the outside host fails.
fn no_dad_on_new_links(namespace: &str) -> Result<()> {
    let path = "/proc/sys/net/ipv6/conf/default/accept_dad";
    if std::path::Path::new(path).exists() {
        std::fs::write(path, "0").map_err(|e| {
            Error::os(
                format!("turn off IPv6 duplicate address detection in the {namespace} namespace"),
                e,
            )
        })?;
    }
    Ok(())
}

pub(crate) fn validate_subnet(text: &str) -> Result<Ipv4Subnet> {
    let subnet: Ipv4Subnet = text.parse()?;
    let invalid = |reason: String| Error::InvalidSubnet {
        subnet: text.to_owned(),
        reason,
    };
    if !(8..=30).contains(&subnet.prefix()) {
        return Err(invalid(format!(
            "a /{} has {}; use a prefix from /8 to /30 (a /30 holds the gateway and one container)",
            subnet.prefix(),
            if subnet.prefix() > 30 {
                "no room for a gateway and a container"
            } else {
                "more addresses than a lab can use"
            }
        )));
    }
    for (network, prefix, what) in RESERVED {
        let reserved = Ipv4Subnet::new(network, prefix)?;
        if subnet.overlaps(&reserved) {
            return Err(invalid(format!(
                "it overlaps {reserved}, {what}; choose another range such as {DEFAULT_SUBNET}"
            )));
        }
    }
    Ok(subnet)
}
