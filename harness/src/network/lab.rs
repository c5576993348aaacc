//! The lab: a bridge with a gateway, NAT and an "outside" network, all in
//! namespaces of the test process, never in the host's.
//!
//! ```text
//!  container ns          lab ns                                outside ns
//!  eth0 10.200.0.2 ───── v0 ─┐
//!  eth0 10.200.0.3 ───── v1 ─┤ br0 10.200.0.1   uplink 198.18.0.1 ──── eth0 198.18.0.2
//!                            └ ip_forward=1, masquerade 10.200.0.0/16 out of uplink
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::common::error::{Error, Result};
use crate::common::nat::{Router, Uplink};
use crate::common::protocol::{HostEntry, LabView};
use crate::common::subnet::{AddressPool, Addressing, Ipv4Subnet, Ipv6Subnet, Stack};
use crate::kernel::netlink::Socket;
use crate::kernel::netns::SETUP_TIMEOUT;
use crate::kernel::nftables;
use crate::kernel::rtnl::Rtnl;
use crate::network::hosts::Hosts;
use crate::network::keeper;
use crate::{common::names, kernel::netns};

/// The default lab subnet.
pub const DEFAULT_SUBNET: &str = "10.200.0.0/16";
pub use v6::DEFAULT_SUBNET6;
use v6::{OUTSIDE_ADDR6, PUBLIC_ADDR6};

mod build;
mod keeping;
pub(crate) use keeping::run as keep;
mod shared;
pub(crate) use shared::share;
mod lease;
mod upstream;
pub(crate) use lease::Lease;
mod v6;
pub(crate) mod warm;
pub use build::LabBuilder;
pub(crate) use build::{outside_host, validate_subnet};
pub(crate) use upstream::{Upstream, UpstreamRoute};

/// The default name of the lab's bridge.
pub const DEFAULT_BRIDGE: &str = "br0";
/// The name of the lab's link towards the outside network; the NAT rewrites
/// sources to its address.
pub const UPLINK: &str = "uplink";
/// The subnet between the lab and the outside network (a benchmarking
/// range of RFC 2544, never routed on the internet).
const UPLINK_SUBNET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
const UPLINK_PREFIX: u8 = 24;
/// The default lab's uplink: its end of it (the NAT's public address),
/// the outside host at the other end, and the kernel's masquerade.
pub(crate) const DEFAULT_UPLINK: Uplink = Uplink {
    public: Ipv4Addr::new(198, 18, 0, 1),
    outside: Ipv4Addr::new(198, 18, 0, 2),
    router: Router::Masquerade,
    internet: false,
};
/// The outside host's addresses that a lab addressed as `addressing`
/// reaches over `uplink`: of the families its containers have (the
/// default lab's outside host has both; a topology's internet is IPv4).
pub(crate) fn outside_addrs(addressing: &Addressing, uplink: &Uplink) -> Vec<IpAddr> {
    let v4 = addressing
        .stack
        .has_v4()
        .then_some(IpAddr::V4(uplink.outside));
    let v6 = addressing
        .stack
        .has_v6()
        .then_some(IpAddr::V6(OUTSIDE_ADDR6));
    v4.into_iter().chain(v6).collect()
}

/// Polls `ready` until it holds, pausing 50 µs, then twice as long each
/// time up to 5 ms, for at most [`SETUP_TIMEOUT`]; then fails with an
/// [`Error::Timeout`] saying that `name` did not `what`.
pub(crate) fn wait_for(
    name: &str,
    what: &'static str,
    mut ready: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let started = Instant::now();
    let deadline = started + SETUP_TIMEOUT;
    let mut pause = Duration::from_micros(50);
    while !ready()? {
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                name: name.to_owned(),
                what,
                timeout: SETUP_TIMEOUT,
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
    tracing::trace!(name, what, waited = ?started.elapsed(), "waited");
    Ok(())
}

/// A locally administered MAC derived from the address, so that a reused
/// address never meets a stale neighbour entry with another MAC (the
/// gateway's too: it never changes).
pub(crate) fn mac_for(addr: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = addr.octets();
    [0x02, 0x00, a, b, c, d]
}

/// The state shared by a lab and its containers.
pub(crate) struct LabInner {
    /// Namespaces made ahead (see [`warm`]); first, so its thread stops first.
    warm: warm::Warm,
    addressing: Addressing,
    uplink: Uplink,
    /// What ties a network of a topology to the rest of it.
    upstream: Upstream,
    bridge: String,
    bridge_index: u32,
    lab_ns: OwnedFd,
    outside_ns: OwnedFd,
    rtnl: Mutex<Rtnl>,
    /// The lab namespace's nf_tables socket, opened on first use by a
    /// handle that did not build the lab.
    nft: Mutex<Option<Socket>>,
    pool: Mutex<AddressPool>,
    /// The names of its hosts.
    hosts: Mutex<Hosts>,
    /// Starts the names of its bridge ports; unique among every process's.
    port_prefix: String,
    next_port: Arc<AtomicU32>,
    /// Numbers the blocks handed to test containers (see [`LabInner::view_prefix`]).
    next_view: AtomicU32,
    /// The keeper of the lab, which gives it more addresses when its pool
    /// runs out (a handle on a keeper's lab).
    keeper: Option<&'static keeper::Client>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LabInner {
    /// The lab namespace's rtnetlink socket.
    pub(crate) fn rtnl(&self) -> MutexGuard<'_, Rtnl> {
        lock(&self.rtnl)
    }

    /// Runs `f` with the lab namespace's nf_tables socket.
    pub(crate) fn with_nft<T>(&self, f: impl FnOnce(&mut Socket) -> Result<T>) -> Result<T> {
        let mut nft = lock(&self.nft);
        let socket = match &mut *nft {
            Some(socket) => socket,
            none => none.insert(netns::run_in(self.lab_ns.as_fd(), || {
                Socket::open(libc::NETLINK_NETFILTER)
                    .map_err(|e| Error::os("open an nf_tables socket in the lab namespace", e))
            })?),
        };
        f(socket)
    }

    /// The names of the lab's hosts.
    pub(crate) fn hosts(&self) -> MutexGuard<'_, Hosts> {
        lock(&self.hosts)
    }

    /// Takes a free container address (asking the lab's keeper for more
    /// when the pool has none left).
    pub(crate) fn lease(self: &Arc<Self>) -> Result<Lease> {
        let mut pool = lock(&self.pool);
        let mut addr = pool.allocate();
        if let (None, Some(keeper)) = (addr, self.keeper) {
            pool.extend(keeper.addresses(self.addressing.stack)?);
            addr = pool.allocate();
        }
        let addr = addr.ok_or_else(|| Error::AddressesExhausted {
            subnet: self.addressing.subnet.to_string(),
            capacity: pool.capacity(),
        })?;
        Ok(Lease {
            lab: Arc::clone(self),
            addr,
        })
    }

    /// While what this returns lives, the lab (a network of a topology)
    /// is not quite gone: its subnet is not free for another network.
    pub(crate) fn claim(&self) -> Option<std::sync::Weak<()>> {
        self.upstream.claim.as_ref().map(Arc::downgrade)
    }

    /// Keeps `addr` from containers (a host of the lab that is not one has
    /// it).
    pub(crate) fn reserve(&self, addr: Ipv4Addr) {
        lock(&self.pool).reserve(addr);
    }

    /// A fresh name for a bridge port, unique in the lab.
    pub(crate) fn port_name(&self) -> String {
        let n = self.next_port.fetch_add(1, Ordering::Relaxed);
        format!("{}{n:x}", self.port_prefix)
    }

    /// A fresh port-name prefix for another process that adds ports to the
    /// lab (a test's container spawning peers, a test process using its
    /// keeper's lab): this handle's prefix and `t<n>p`, never a prefix of
    /// this handle's names (its prefix and a hex number) nor of another
    /// view's.
    pub(crate) fn view_prefix(&self) -> String {
        let n = self.next_view.fetch_add(1, Ordering::Relaxed);
        format!("{}t{n:x}p", self.port_prefix)
    }

    /// What a handle of another process may do on the lab: create ports
    /// named `port_prefix…`, hand out `addrs`, know `hosts` by name.
    pub(crate) fn view(
        &self,
        port_prefix: String,
        addrs: Vec<Ipv4Addr>,
        hosts: Vec<HostEntry>,
    ) -> LabView {
        LabView {
            addressing: self.addressing,
            uplink: self.uplink,
            bridge: self.bridge.clone(),
            bridge_index: self.bridge_index,
            port_prefix,
            ahead: self.warm.depth(),
            addrs,
            hosts,
        }
    }

    pub(crate) fn addressing(&self) -> &Addressing {
        &self.addressing
    }

    pub(crate) fn uplink(&self) -> &Uplink {
        &self.uplink
    }

    pub(crate) fn bridge(&self) -> &str {
        &self.bridge
    }

    pub(crate) fn bridge_index(&self) -> u32 {
        self.bridge_index
    }

    pub(crate) fn lab_ns(&self) -> &OwnedFd {
        &self.lab_ns
    }

    pub(crate) fn outside_ns(&self) -> &OwnedFd {
        &self.outside_ns
    }

    /// A handle on a lab made by another process, from descriptors of its
    /// namespaces that this process inherited or received: it creates
    /// ports named `port_prefix…`, hands out only `addrs` (and those the
    /// lab's `keeper` adds) and knows the `hosts` by name.
    pub(crate) fn adopt(
        view: LabView,
        lab_ns: OwnedFd,
        outside_ns: OwnedFd,
        keeper: Option<&'static keeper::Client>,
    ) -> Result<Self> {
        let rtnl = netns::run_in(lab_ns.as_fd(), || Rtnl::open("lab"))?;
        Ok(Self {
            addressing: view.addressing,
            uplink: view.uplink,
            upstream: Upstream::default(),
            bridge: view.bridge,
            bridge_index: view.bridge_index,
            lab_ns,
            outside_ns,
            rtnl: Mutex::new(rtnl),
            nft: Mutex::new(None),
            pool: Mutex::new(AddressPool::from_list(view.addrs)),
            hosts: Mutex::new(Hosts::new(&view.addressing, &view.uplink, view.hosts)),
            port_prefix: view.port_prefix,
            next_port: Arc::default(),
            warm: warm::Warm::new(view.ahead),
            next_view: AtomicU32::new(0),
            keeper,
        })
    }
}

/// A lab: the bridge containers attach to, its gateway with NAT, and an
/// outside network standing in for the internet. Cloning a `Lab` gives
/// another handle to the same lab.
///
/// ```no_run
/// use netns_harness::{Lab, Spec};
/// let lab = Lab::shared()?;
/// let out = lab
///     .spawn(&Spec::command("ping").args(["-c1", &lab.gateway().to_string()]))?
///     .output(std::time::Duration::from_secs(5))?;
/// assert!(out.status.success());
/// # Ok::<(), netns_harness::Error>(())
/// ```
#[derive(Clone)]
pub struct Lab {
    pub(crate) inner: Arc<LabInner>,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("addressing", &self.inner.addressing)
            .field("bridge", &self.inner.bridge)
            .finish_non_exhaustive()
    }
}

impl Lab {
    /// Settings for a lab of one's own.
    pub fn builder() -> LabBuilder {
        LabBuilder::default()
    }

    pub(crate) fn from_inner(inner: LabInner) -> Lab {
        Lab {
            inner: Arc::new(inner),
        }
    }

    /// The bridge's subnet.
    pub fn subnet(&self) -> Ipv4Subnet {
        self.inner.addressing.subnet
    }

    /// The bridge's subnets of the families its network carries, as
    /// text: `10.200.0.0/16, fd00:200::/64`.
    pub(crate) fn subnets(&self) -> String {
        let a = &self.inner.addressing;
        let v4 = a.stack.has_v4().then(|| a.subnet.to_string());
        let v6 = a.stack.has_v6().then(|| a.subnet6.to_string());
        v4.into_iter().chain(v6).collect::<Vec<_>>().join(", ")
    }

    /// Which IP families the bridge's network carries.
    pub fn stack(&self) -> Stack {
        self.inner.addressing.stack
    }

    /// The bridge's IPv6 subnet, when its network carries IPv6.
    pub fn subnet6(&self) -> Option<Ipv6Subnet> {
        let addressing = &self.inner.addressing;
        addressing.stack.has_v6().then_some(addressing.subnet6)
    }

    /// The bridge's name.
    pub fn bridge(&self) -> &str {
        &self.inner.bridge
    }

    /// Of `v4` and `v6`, the address of the family the bridge's network
    /// carries first: IPv4, unless it is IPv6-only.
    fn primary(&self, v4: Ipv4Addr, v6: Ipv6Addr) -> IpAddr {
        match self.inner.addressing.stack {
            Stack::V6 => IpAddr::V6(v6),
            Stack::V4 | Stack::Dual => IpAddr::V4(v4),
        }
    }

    /// The gateway: the bridge's address, every container's default
    /// route; its IPv4 address, unless the lab is IPv6-only.
    pub fn gateway(&self) -> IpAddr {
        let addressing = &self.inner.addressing;
        addressing.addrs(addressing.gateway())[0]
    }

    /// The gateway's IPv4 address, when the bridge's network carries IPv4.
    pub fn gateway4(&self) -> Option<Ipv4Addr> {
        let addressing = &self.inner.addressing;
        addressing.stack.has_v4().then(|| addressing.gateway())
    }

    /// The gateway's IPv6 address, when the bridge's network carries IPv6.
    pub fn gateway6(&self) -> Option<Ipv6Addr> {
        let addressing = &self.inner.addressing;
        addressing.addr6(addressing.gateway())
    }

    /// The lab's end of the uplink, of the family [`Lab::gateway`] has:
    /// the NAT's public address, which the outside network sees as the
    /// source of every container's IPv4 traffic ([`Lab::public_addr4`]).
    /// In an IPv6-only lab, [`Lab::public_addr6`]: a source the outside
    /// sees only with [`LabBuilder::nat66`]; IPv6 is routed otherwise, and
    /// the outside sees containers' own addresses. In a network of a
    /// [`Topology`](crate::Topology), its router's address on the upstream
    /// network: what the internet sees when the router translates and is on
    /// the internet; behind a carrier ([`Preset::Cgnat`](crate::Preset::Cgnat)
    /// or [`Network::behind`](crate::Network::behind)) the internet sees the
    /// carrier's address, and a routed network's containers keep their own.
    pub fn public_addr(&self) -> IpAddr {
        self.primary(self.inner.uplink.public, PUBLIC_ADDR6)
    }

    /// The lab's IPv4 address on the uplink: the source the outside sees
    /// for containers' IPv4 traffic (the uplink has it whatever the lab's
    /// stack; an IPv6-only lab sends no IPv4 there). In a topology, see
    /// [`Lab::public_addr`].
    pub fn public_addr4(&self) -> Ipv4Addr {
        self.inner.uplink.public
    }

    /// The lab's IPv6 address on the uplink, when the lab carries IPv6:
    /// the outside host's route to the bridge's IPv6 subnet (IPv6 is
    /// routed, not translated), or with [`LabBuilder::nat66`] the source
    /// the outside host sees.
    pub fn public_addr6(&self) -> Option<Ipv6Addr> {
        self.inner.addressing.stack.has_v6().then_some(PUBLIC_ADDR6)
    }

    /// The address of the outside host, the far end of the uplink: of the
    /// family [`Lab::gateway`] has. In a topology, the internet's `host1`
    /// (its primary address), which [`Lab::spawn_outside`] runs on.
    pub fn outside_addr(&self) -> IpAddr {
        self.primary(self.inner.uplink.outside, OUTSIDE_ADDR6)
    }

    /// The outside host's IPv4 address (it has one whatever the lab's
    /// stack).
    pub fn outside_addr4(&self) -> Ipv4Addr {
        self.inner.uplink.outside
    }

    /// The outside host's IPv6 address, when the lab carries IPv6 (the
    /// uplink and the outside host have IPv6 only then).
    pub fn outside_addr6(&self) -> Option<Ipv6Addr> {
        self.inner
            .addressing
            .stack
            .has_v6()
            .then_some(OUTSIDE_ADDR6)
    }

    /// The link between the lab and the outside host: [`Direction::Out`](crate::Direction::Out)
    /// is what the lab sends to the outside (containers' traffic after
    /// NAT), [`Direction::In`](crate::Direction::In) what comes back. In a
    /// topology, the router's link to its port on the upstream network's
    /// bridge; [`Error::InvalidTopology`] for the internet segment (it has
    /// no uplink) and in a test body (whose handle does not reach the
    /// upstream's namespace). [`Error::InvalidTopology`] too for the shared
    /// lab of a test process under nextest (the run's: see "nextest" in the
    /// crate's documentation).
    pub fn uplink(&self) -> Result<crate::Link> {
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| Error::os("duplicate a network namespace's descriptor", e))
        };
        use crate::network::link::End;
        if self.inner.keeper.is_some() {
            return Err(Error::InvalidTopology {
                network: self.subnets(),
                reason: "is the nextest run's shared lab, whose uplink every test process of the \
                         run uses (and a condition a killed test left on it would stay for the \
                         rest of the run); shape the uplink of a lab of the test's own \
                         (network = \"private\", or Lab::builder())"
                    .to_owned(),
            });
        }
        if self.inner.uplink.internet && self.inner.upstream.lease.is_none() {
            return Err(Error::InvalidTopology {
                network: self.subnets(),
                reason: "has no uplink this handle reaches: a topology's internet has none, and \
                         in a test body the far end is in the runner's namespaces; set conditions \
                         on the test's own link (Net::link) instead"
                    .to_owned(),
            });
        }
        let far = match &self.inner.upstream.lease {
            Some((lease, port)) => End::new(dup(&lease.lab.lab_ns)?, port, "upstream", true),
            None => End::new(dup(&self.inner.outside_ns)?, "eth0", "outside", false),
        };
        Ok(crate::network::link::Link::new(
            End::new(dup(&self.inner.lab_ns)?, UPLINK, "lab", false),
            far,
            "the lab's uplink".to_owned(),
        ))
    }

    /// The lab namespace (bridge, gateway, NAT), e.g. to enter it with
    /// `setns(2)` from a thread of one's own.
    pub fn lab_netns(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.lab_ns.as_fd()
    }

    /// The outside network's namespace.
    pub fn outside_netns(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.outside_ns.as_fd()
    }
}
