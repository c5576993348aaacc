//! Topologies: several networks, each a LAN behind a router of its own
//! behaviour, attached to an internet segment or to another network
//! (chained NAT), and an internet with public hosts of two addresses each.
//!
//! ```text
//!  host1 ns  eth0 203.0.113.10, .11 ─┐  internet ns              router ns "home"             containers
//!  host2 ns  eth0 203.0.113.20, .21 ─┤  inet 203.0.113.1 ──┬── uplink 203.0.113.2 [NAT] br0 10.128.0.1 ── eth0 10.128.0.2
//!                                    └─ (core: routes)     │
//!                                                          └── uplink 203.0.113.3 [NAT] br0 100.64.0.1 ── uplink 100.64.0.2 [NAT] br0 10.128.1.1 …
//!                                                              router ns "x-carrier"                     router ns "x"
//! ```
//!
//! Every network is a [`Lab`]: containers are spawned on it with
//! [`Lab::spawn`], its router is its lab namespace, [`Lab::public_addr`]
//! its address upstream, and [`Lab::outside_addr`] the first public host.
//! Each public host runs a STUN responder (RFC 5389, with RFC 5780's
//! `CHANGE-REQUEST`) on both its addresses, ports [`STUN_PORTS`], so that
//! [`stun::classify`](crate::stun::classify) measures a router's behaviour
//! from a container.

use std::any::Any;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::{AssertUnwindSafe, RefUnwindSafe};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::common::error::{Error, Result};
use crate::common::nat::{Preset, Router};
use crate::common::subnet::Ipv4Subnet;
use crate::network::lab::{Lab, LabBuilder, LabInner};
use crate::network::stun::Responder;

/// The internet segment's subnet (TEST-NET-3 of RFC 5737, never routed on
/// the real internet). Its core router is the first address; routers
/// and containers on the internet get addresses from `.2` up, skipping
/// the public hosts'.
pub const INTERNET_SUBNET: &str = "203.0.113.0/24";
const INTERNET_PREFIX: u8 = 24;
/// The internet's core router: the gateway of public hosts and routers.
const CORE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The ports of the STUN responder of every public host, on both its
/// addresses.
pub const STUN_PORTS: [u16; 2] = [3478, 3479];
/// The public hosts' addresses, two each.
const HOST_ADDRS: [[Ipv4Addr; 2]; 2] = [
    [
        Ipv4Addr::new(203, 0, 113, 10),
        Ipv4Addr::new(203, 0, 113, 11),
    ],
    [
        Ipv4Addr::new(203, 0, 113, 20),
        Ipv4Addr::new(203, 0, 113, 21),
    ],
];
/// Where networks without a subnet of their own get one, a `/24` each in
/// order: behind a NAT, in carrier NAT's shared address space (RFC 6598),
/// and routed (public addresses, TEST-NET-2 of RFC 5737, in `/28`s).
const PRIVATE_POOL: (Ipv4Addr, u8, u8) = (Ipv4Addr::new(10, 128, 0, 0), 9, 24);
const CARRIER_POOL: (Ipv4Addr, u8, u8) = (Ipv4Addr::new(100, 64, 0, 0), 10, 24);
const PUBLIC_POOL: (Ipv4Addr, u8, u8) = (Ipv4Addr::new(198, 51, 100, 0), 24, 28);

/// A host of the internet segment: two public addresses, a STUN responder
/// on each (ports [`STUN_PORTS`]), and its namespace. Servers of one's own
/// run on the internet in containers of [`Topology::internet`] (with a
/// public address each), or on `host1` with [`Lab::spawn_outside`] of any
/// network of the topology.
#[derive(Debug)]
pub struct PublicHost {
    name: String,
    addrs: [Ipv4Addr; 2],
    netns: OwnedFd,
    _responder: Responder,
}

impl PublicHost {
    /// Its name: `host1`, `host2`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its two addresses, primary first.
    pub fn addrs(&self) -> [Ipv4Addr; 2] {
        self.addrs
    }

    /// Its primary address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addrs[0]
    }

    /// Its STUN responder's primary endpoint (the primary address, the
    /// first of [`STUN_PORTS`]): where RFC 5780's tests start.
    pub fn stun(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.addrs[0], STUN_PORTS[0]))
    }

    /// Its network namespace.
    pub fn netns(&self) -> BorrowedFd<'_> {
        self.netns.as_fd()
    }
}

/// A subnet a network has.
struct Taken {
    name: String,
    subnet: Ipv4Subnet,
    /// The network's claim ([`LabInner::claim`]); `None` while it is
    /// being built or reserved by [`TopologyBuilder::build`].
    by: Option<Weak<()>>,
}

impl Taken {
    fn alive(&self) -> bool {
        self.by.as_ref().is_none_or(|by| by.strong_count() > 0)
    }
}

/// A network of the topology, by name.
struct Member {
    name: String,
    subnet: Ipv4Subnet,
    lab: Lab,
    /// Whether it is behind a carrier network of its own
    /// ([`Preset::Cgnat`]), `<name>-carrier`, which goes with it.
    carrier: bool,
}

struct Inner {
    internet: Lab,
    /// Held by every network too: their STUN responders and host2's
    /// namespace live while any network of the topology does.
    /// (Unwind-safe as far as a lab is concerned: nothing of them changes
    /// once built, and a `Lab` stays `RefUnwindSafe`.)
    hosts: Arc<AssertUnwindSafe<Vec<PublicHost>>>,
    members: Mutex<Vec<Member>>,
    /// Held while a network is added by name, so that a name is checked
    /// and registered at once.
    adding: Mutex<()>,
    /// The networks' subnets: free again once the network is gone (`None`
    /// while it is being built).
    taken: Mutex<Vec<Taken>>,
    seed: u32,
}

/// Several networks behind routers of chosen NAT behaviours, and an
/// internet segment with two public hosts of two addresses each, all in
/// namespaces of the test process. Cloning gives another handle to the
/// same topology; it is torn down when the last handle and every network
/// and container of it are dropped.
///
/// ```no_run
/// use netns_harness::{Network, Preset, Spec, Topology};
/// let topology = Topology::builder()
///     .network(Network::new("home").preset(Preset::FullCone))
///     .build()?;
/// let home = topology.network("home")?;
/// let client = home.spawn(&Spec::command("ping").args(["-c1", "203.0.113.10"]))?;
/// # Ok::<(), netns_harness::Error>(())
/// ```
#[derive(Clone)]
pub struct Topology {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let members = lock(&self.inner.members);
        let names: Vec<_> = members.iter().map(|m| (&m.name, m.subnet)).collect();
        f.debug_struct("Topology")
            .field("networks", &names)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The process's shared topology (see [`Topology::shared`]).
static SHARED: Mutex<Option<Topology>> = Mutex::new(None);

impl Topology {
    /// Settings for a topology.
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder::default()
    }

    /// The process's shared topology: its internet and public hosts, made
    /// on first use. `#[netns_test(nat = "…")]` puts each test's network on
    /// it, unnamed (not one [`Topology::network`] finds).
    pub fn shared() -> Result<Topology> {
        let mut shared = lock(&SHARED);
        if let Some(topology) = &*shared {
            return Ok(topology.clone());
        }
        let topology = Topology::empty()?;
        *shared = Some(topology.clone());
        Ok(topology)
    }

    /// The internet and its hosts, without networks.
    fn empty() -> Result<Topology> {
        let started = std::time::Instant::now();
        let mut hosts = Vec::new();
        let internet = LabBuilder::default()
            .subnet(INTERNET_SUBNET)
            .bridge("inet")
            .build_segment(|rtnl, bridge| {
                for (i, addrs) in HOST_ADDRS.into_iter().enumerate() {
                    hosts.push(public_host(rtnl, bridge, i + 1, addrs)?);
                }
                let outside = hosts[0]
                    .netns
                    .try_clone()
                    .map_err(|e| Error::os("duplicate a public host's namespace descriptor", e))?;
                Ok((HOST_ADDRS[0][0], outside))
            })?;
        for addr in HOST_ADDRS.iter().flatten() {
            internet.inner.reserve(*addr);
        }
        crate::kernel::netns::run_in(internet.lab_netns(), no_redirects)?;
        tracing::debug!(elapsed = ?started.elapsed(), "internet built");
        Ok(Topology {
            inner: Arc::new(Inner {
                internet,
                hosts: Arc::new(AssertUnwindSafe(hosts)),
                members: Mutex::new(Vec::new()),
                adding: Mutex::new(()),
                taken: Mutex::new(Vec::new()),
                seed: seed(),
            }),
        })
    }

    /// Adds `network` (checked against the networks there are), and
    /// returns it. With [`Preset::Cgnat`], its carrier's network comes
    /// first, named `<name>-carrier`.
    pub fn add(&self, network: Network) -> Result<Lab> {
        self.make(&network, true)
    }

    /// A network as `add` makes it, registered by name or (a test's
    /// network) not.
    pub(crate) fn make(&self, network: &Network, register: bool) -> Result<Lab> {
        crate::common::names::validate(&network.name)?;
        if let Router::Translating(nat) = network.router() {
            check_timeout(&network.name, nat.udp_timeout)?;
        }
        let _adding = register.then(|| lock(&self.inner.adding));
        let carrier_name = format!("{}-carrier", network.name);
        let cgnat = network.behaviour == Behaviour::Preset(Preset::Cgnat);
        for name in std::iter::once(&network.name).chain(cgnat.then_some(&carrier_name)) {
            if register && self.find(name).is_some() {
                return Err(invalid(
                    name,
                    "is a network of the topology already; choose another name",
                ));
            }
        }
        if cgnat {
            let carrier = Network {
                name: carrier_name,
                subnet: None,
                behind: network.behind.clone(),
                behaviour: Behaviour::Preset(Preset::PortRestrictedCone),
            };
            let carrier_lab = self.build_one(&carrier, CARRIER_POOL)?;
            let home = Network {
                behaviour: Behaviour::Preset(Preset::PortRestrictedCone),
                ..network.clone()
            };
            let lab = self.build_on(&home, &carrier_lab.inner, PRIVATE_POOL)?;
            if register {
                self.register(&carrier.name, carrier_lab, false);
                self.register(&network.name, lab.clone(), true);
            }
            return Ok(lab);
        }
        let pool = match network.router() {
            Router::Routed => PUBLIC_POOL,
            _ => PRIVATE_POOL,
        };
        let lab = self.build_one(network, pool)?;
        if register {
            self.register(&network.name, lab.clone(), false);
        }
        Ok(lab)
    }

    /// Takes network `name` out of the topology (and its carrier's, for
    /// [`Preset::Cgnat`]): it goes once the last handle on it (a [`Lab`], a
    /// container of it, a network behind it) is dropped, and its subnet
    /// with it, free for another network.
    pub fn remove(&self, name: &str) -> Result<()> {
        let mut members = lock(&self.inner.members);
        let before = members.len();
        let carrier = format!("{name}-carrier");
        let is_cgnat = members.iter().any(|m| m.name == name && m.carrier);
        members.retain(|m| m.name != name && !(is_cgnat && m.name == carrier));
        if members.len() == before {
            return Err(invalid(name, "is not a network of the topology"));
        }
        Ok(())
    }

    fn register(&self, name: &str, lab: Lab, carrier: bool) {
        lock(&self.inner.members).push(Member {
            name: name.to_owned(),
            subnet: lab.subnet(),
            lab,
            carrier,
        });
    }

    fn find(&self, name: &str) -> Option<Lab> {
        lock(&self.inner.members)
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.lab.clone())
    }

    /// Builds `network` behind its upstream (the internet unless it says).
    fn build_one(&self, network: &Network, pool: (Ipv4Addr, u8, u8)) -> Result<Lab> {
        match &network.behind {
            None => self.build_on(network, &self.inner.internet.inner, pool),
            Some(upstream) => {
                let Some(up) = self.find(upstream) else {
                    return Err(invalid(
                        &network.name,
                        &format!("is behind {upstream:?}, which is not a network of the topology"),
                    ));
                };
                if network.router() == Router::Routed {
                    return Err(invalid(&network.name, spec::ROUTED_BEHIND));
                }
                self.build_on(network, &up.inner, pool)
            }
        }
    }

    fn build_on(
        &self,
        network: &Network,
        upstream: &Arc<LabInner>,
        pool: (Ipv4Addr, u8, u8),
    ) -> Result<Lab> {
        let subnet = self.take_subnet(network, pool)?;
        let outside = self.inner.hosts[0]
            .netns
            .try_clone()
            .map_err(|e| Error::os("duplicate a public host's namespace descriptor", e))?;
        let built = LabBuilder::default()
            .subnet(&subnet.to_string())
            .build_behind(
                upstream,
                network.router(),
                (HOST_ADDRS[0][0], outside),
                self.inner.seed,
                Arc::clone(&self.inner.hosts) as Arc<dyn Any + Send + Sync + RefUnwindSafe>,
            );
        let mut taken = lock(&self.inner.taken);
        match &built {
            Ok(lab) => {
                if let Some(entry) = taken.iter_mut().find(|t| t.subnet == subnet) {
                    entry.by = lab.inner.claim();
                }
            }
            Err(_) => taken.retain(|t| t.subnet != subnet),
        }
        built
    }

    /// Reserves the subnets `given` by name before any network is built,
    /// so that no network without a subnet of its own takes one of them.
    pub(super) fn reserve(&self, given: &[(String, Ipv4Subnet)]) {
        lock(&self.inner.taken).extend(given.iter().map(|(name, subnet)| Taken {
            name: name.clone(),
            subnet: *subnet,
            by: None,
        }));
    }

    /// The network's subnet, as given or the next free one of `pool`,
    /// checked against every other network's and taken.
    fn take_subnet(&self, network: &Network, pool: (Ipv4Addr, u8, u8)) -> Result<Ipv4Subnet> {
        let mut taken = lock(&self.inner.taken);
        taken.retain(Taken::alive);
        let subnet = match &network.subnet {
            Some(text) => {
                let subnet = crate::network::lab::validate_subnet(text)?;
                // Reserved by the builder, before any network was made.
                let reserved = |t: &Taken| t.name == network.name && t.subnet == subnet;
                if taken.iter().any(|t| t.by.is_none() && reserved(t)) {
                    return Ok(subnet);
                }
                subnet
            }
            None => {
                let (base, prefix, size) = pool;
                let block = Ipv4Subnet::new(base, prefix)?;
                let count = 1u32 << (size - prefix);
                (0..count)
                    .filter_map(|i| {
                        let first = u32::from(base) + (i << (32 - size));
                        Ipv4Subnet::new(Ipv4Addr::from(first), size).ok()
                    })
                    .find(|s| !taken.iter().any(|t| t.subnet.overlaps(s)))
                    .ok_or_else(|| {
                        invalid(
                            &network.name,
                            &format!("needs a subnet, and every one of {block} is taken; give it one with .subnet"),
                        )
                    })?
            }
        };
        let others: Vec<_> = taken.iter().map(|t| (t.name.clone(), t.subnet)).collect();
        check_overlap(&network.name, subnet, &others)?;
        taken.push(Taken {
            name: network.name.clone(),
            subnet,
            by: None,
        });
        Ok(subnet)
    }

    /// The network named `name`.
    pub fn network(&self, name: &str) -> Result<Lab> {
        self.find(name).ok_or_else(|| {
            let members = lock(&self.inner.members);
            let known: Vec<_> = members.iter().map(|m| m.name.as_str()).collect();
            invalid(
                name,
                &format!(
                    "is not a network of the topology; its networks are {}",
                    known.join(", ")
                ),
            )
        })
    }

    /// The internet's public hosts: `host1` and `host2`.
    pub fn hosts(&self) -> &[PublicHost] {
        &self.inner.hosts.0
    }

    /// The internet segment, as a lab without NAT: spawn servers with
    /// public addresses on it ([`Lab::spawn`]); its gateway is the core
    /// router every network's router and public host routes through.
    pub fn internet(&self) -> &Lab {
        &self.inner.internet
    }
}

mod internet;
mod lab;
mod spec;
use internet::{check_timeout, no_redirects, public_host, seed};
use spec::{Behaviour, check_overlap, invalid};
pub use spec::{Network, TopologyBuilder};
