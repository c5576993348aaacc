//! `Net`: what a `#[netns_test]` body knows of its network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::common::error::Result;
use crate::common::subnet::{Ipv4Subnet, Stack};
use crate::network::lab::Lab;
use crate::network::link::{End, Link};
use crate::process::container::{Container, Spec};

/// The network of a [`netns_test`](crate::netns_test) body: its own address
/// on the lab's bridge, the lab's gateway, subnet, NAT and outside host, and
/// the means to start peers there. Peers die with the test.
///
/// Take it as the test function's parameter, or call [`Net::current`]:
///
/// ```no_run
/// use netns_harness::prelude::*;
///
/// #[netns_test]
/// fn reaches_a_peer(net: Net) {
///     let peer = net.spawn(&Spec::command("sleep").arg("30")).unwrap();
///     let status = std::process::Command::new("ping")
///         .args(["-c1", &peer.addr().to_string()])
///         .status()
///         .unwrap();
///     assert!(status.success());
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Net {
    lab: Lab,
    addr: Ipv4Addr,
    port: String,
}

impl Net {
    pub(crate) fn new(lab: Lab, addr: Ipv4Addr, port: String) -> Self {
        Self { lab, addr, port }
    }

    /// This container's link to the bridge (its `eth0` and its port), to
    /// set conditions on and take down; see [`Link`].
    ///
    /// ```no_run
    /// use netns_harness::prelude::*;
    ///
    /// #[netns_test]
    /// fn survives_a_lossy_link(net: Net) {
    ///     let link = net.link().unwrap();
    ///     link.set_both(&"loss=5%".parse().unwrap()).unwrap();
    ///     // … the code under test, over a lossy link …
    /// }
    /// ```
    pub fn link(&self) -> Result<Link> {
        let own = std::fs::File::open("/proc/thread-self/ns/net")
            .map_err(|e| crate::Error::os("open this container's network namespace", e))?;
        let lab = self
            .lab
            .lab_netns()
            .try_clone_to_owned()
            .map_err(|e| crate::Error::os("duplicate the lab's namespace descriptor", e))?;
        Ok(Link::new(
            End::new(own.into(), "eth0", "container", false),
            End::new(lab, &self.port, "lab", true),
            "this test's eth0".to_owned(),
        ))
    }

    /// This container's address (on its `eth0`): its IPv4 address,
    /// unless its network is IPv6-only (see [`Net::stack`]).
    pub fn addr(&self) -> IpAddr {
        self.addressing().addrs(self.addr)[0]
    }

    /// This container's IPv4 address, when its network carries IPv4.
    pub fn addr4(&self) -> Option<Ipv4Addr> {
        self.stack().has_v4().then_some(self.addr)
    }

    /// This container's IPv6 address, when its network carries IPv6.
    pub fn addr6(&self) -> Option<Ipv6Addr> {
        self.addressing().addr6(self.addr)
    }

    fn addressing(&self) -> &crate::common::subnet::Addressing {
        self.lab.inner.addressing()
    }

    /// Which IP families this container's network carries: what
    /// `#[netns_test(ip = "…")]` asked for.
    pub fn stack(&self) -> Stack {
        self.lab.stack()
    }

    /// The gateway, this container's default route (see [`Lab::gateway`]).
    pub fn gateway(&self) -> IpAddr {
        self.lab.gateway()
    }

    /// The gateway's IPv4 address, when this container's network carries
    /// IPv4.
    pub fn gateway4(&self) -> Option<Ipv4Addr> {
        self.lab.gateway4()
    }

    /// The gateway's IPv6 address, this container's IPv6 default route,
    /// when its network carries IPv6.
    pub fn gateway6(&self) -> Option<Ipv6Addr> {
        self.lab.gateway6()
    }

    /// The lab's IPv4 subnet.
    pub fn subnet(&self) -> Ipv4Subnet {
        self.lab.subnet()
    }

    /// The lab's end of the uplink: what the outside sees as this
    /// container's source address when the lab translates it (always for
    /// IPv4 in the default lab; behind a topology's routers, see
    /// [`Lab::public_addr`]).
    pub fn public_addr(&self) -> IpAddr {
        self.lab.public_addr()
    }

    /// The outside host's address, of the family [`Net::addr`] has.
    pub fn outside_addr(&self) -> IpAddr {
        self.lab.outside_addr()
    }

    /// The outside host's IPv6 address, when this container's network
    /// carries IPv6 (it sees [`Net::addr6`] as the source: IPv6 is routed,
    /// unless the lab was built with [`LabBuilder::nat66`](crate::LabBuilder::nat66)).
    pub fn outside_addr6(&self) -> Option<Ipv6Addr> {
        self.lab.outside_addr6()
    }

    /// Blackholes `addr` for this container until the guard is dropped:
    /// what it sends there is discarded (`connect` and `send` fail with
    /// `EINVAL`, as with `ip route add blackhole`).
    pub fn blackhole(&self, addr: impl Into<IpAddr>) -> Result<crate::Blackhole> {
        let own = std::fs::File::open("/proc/thread-self/ns/net")
            .map_err(|e| crate::Error::os("open this container's network namespace", e))?;
        crate::network::fault::Blackhole::add(std::os::fd::AsFd::as_fd(&own), addr.into())
    }

    /// The addresses of the lab's host named `name`: the gateway
    /// ([`GATEWAY_NAME`](crate::GATEWAY_NAME)), the outside host
    /// ([`OUTSIDE_NAME`](crate::OUTSIDE_NAME)), this test's container, the
    /// containers of the lab alive when the test started (concurrent
    /// tests' under their test names), and the peers this body started
    /// that are alive, by name and alias; see [`Lab::resolve`]. Unlike
    /// this container's `/etc/hosts`, written at its start, it knows the
    /// peers started since.
    ///
    /// ```no_run
    /// use netns_harness::prelude::*;
    ///
    /// #[netns_test]
    /// fn finds_its_peer(net: Net) {
    ///     let peer = net.spawn(&Spec::command("sleep").arg("30").alias("db")).unwrap();
    ///     assert_eq!(net.resolve("db").unwrap(), [peer.addr()]);
    /// }
    /// ```
    pub fn resolve(&self, name: &str) -> Result<Vec<std::net::IpAddr>> {
        self.lab.resolve(name)
    }

    /// The lab, for anything else ([`Lab::spawn`] equals [`Net::spawn`]).
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// Starts a peer container on the same bridge (see [`Lab::spawn`]). A
    /// test can have up to [`MAX_PEERS`](crate::MAX_PEERS) peers alive at once.
    pub fn spawn(&self, spec: &Spec) -> Result<Container> {
        self.lab.spawn(spec)
    }

    /// Starts a process on the outside host (see [`Lab::spawn_outside`]).
    pub fn spawn_outside(&self, spec: &Spec) -> Result<Container> {
        self.lab.spawn_outside(spec)
    }
}
