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
use crate::common::protocol::LabView;
use crate::common::subnet::{AddressPool, Addressing, Ipv4Subnet, Ipv6Subnet, Stack};
use crate::kernel::netlink::Socket;
use crate::kernel::netns::SETUP_TIMEOUT;
use crate::kernel::nftables;
use crate::kernel::rtnl::{Peer, Rtnl};
use crate::network::hosts::Hosts;
use crate::{common::names, kernel::netns};

/// The default lab subnet.
pub const DEFAULT_SUBNET: &str = "10.200.0.0/16";
pub use v6::DEFAULT_SUBNET6;
use v6::{OUTSIDE_ADDR6, PUBLIC_ADDR6};

mod v6;

/// The default name of the lab's bridge.
pub const DEFAULT_BRIDGE: &str = "br0";
/// The name of the lab's link towards the outside network; the NAT rewrites
/// sources to its address.
pub const UPLINK: &str = "uplink";
/// The subnet between the lab and the outside network (a benchmarking
/// range of RFC 2544, never routed on the internet).
const UPLINK_SUBNET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
const UPLINK_PREFIX: u8 = 24;
/// The lab's end of the uplink: the NAT's public address.
const PUBLIC_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The outside host's address.
pub(crate) const OUTSIDE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
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
}

impl Default for LabBuilder {
    fn default() -> Self {
        Self {
            subnet: DEFAULT_SUBNET.to_owned(),
            subnet6: DEFAULT_SUBNET6.to_owned(),
            stack: Stack::default(),
            nat66: false,
            bridge: DEFAULT_BRIDGE.to_owned(),
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
        let subnet = validate_subnet(&self.subnet)?;
        let addressing = Addressing {
            stack: self.stack,
            subnet,
            subnet6: v6::validate_subnet6(&self.subnet6)?,
        };
        names::validate(&self.bridge)?;
        if self.bridge == UPLINK {
            return Err(Error::InvalidName {
                name: self.bridge,
                reason: format!(
                    "{UPLINK:?} is the name of the lab's uplink; choose another bridge name"
                ),
            });
        }
        let (outside_ns, mut outside) = crate::kernel::userns::create_netns(outside_host)?;
        let (lab_ns, (mut rtnl, mut nft)) = crate::kernel::userns::create_netns(lab_router)?;
        rtnl.set_up(LOOPBACK_INDEX)?;
        rtnl.add_bridge(&self.bridge, mac_for(subnet.nth(1)))?;
        let bridge_index = rtnl.link_index(&self.bridge)?;
        if self.stack.has_v4() {
            rtnl.add_address(bridge_index, subnet.nth(1), subnet.prefix())?;
        }
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
        rtnl.add_address(uplink_index, PUBLIC_ADDR, UPLINK_PREFIX)?;
        let outside_eth0 = outside.link_index("eth0")?;
        outside.set_up(outside_eth0)?;
        outside.add_address(outside_eth0, OUTSIDE_ADDR, UPLINK_PREFIX)?;
        if self.stack.has_v4() {
            nftables::install_masquerade(&mut nft, nftables::Sources::V4(subnet), UPLINK)?;
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
                routed: !self.nat66,
            };
            v6::configure(&lab_ns, &mut rtnl, &mut outside, &setup)?;
            if self.nat66 {
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
        tracing::debug!(%subnet, bridge = self.bridge, elapsed = ?started.elapsed(), "lab built");
        Ok(Lab {
            inner: Arc::new(LabInner {
                addressing,
                bridge: self.bridge,
                bridge_index,
                lab_ns,
                outside_ns,
                rtnl: Mutex::new(rtnl),
                pool: Mutex::new(AddressPool::new(subnet)),
                hosts: Mutex::new(Hosts::new(&addressing, Vec::new())),
                port_prefix: "v".to_owned(),
                next_port: AtomicU32::new(0),
                next_view: AtomicU32::new(0),
            }),
        })
    }
}

const LOOPBACK_INDEX: u32 = 1;

/// The outside host's addresses that a lab addressed as `addressing`
/// reaches: of the families its containers have (the outside host has
/// both).
pub(crate) fn outside_addrs(addressing: &Addressing) -> Vec<IpAddr> {
    let v4 = addressing
        .stack
        .has_v4()
        .then_some(IpAddr::V4(OUTSIDE_ADDR));
    let v6 = addressing
        .stack
        .has_v6()
        .then_some(IpAddr::V6(OUTSIDE_ADDR6));
    v4.into_iter().chain(v6).collect()
}

/// The process's shared labs.
struct Shared {
    /// In a test container: the test's lab.
    adopted: Option<Lab>,
    /// Made by [`Lab::shared_with`], one per stack.
    made: Vec<Lab>,
}

static SHARED: Mutex<Shared> = Mutex::new(Shared {
    adopted: None,
    made: Vec::new(),
});

/// Makes `lab` the process's shared lab: a test container's lab, which
/// its body reaches through [`Lab::shared`] as through its `Net`.
pub(crate) fn share(lab: &Lab) {
    lock(&SHARED).adopted = Some(lab.clone());
}

/// In the outside host's new namespace: `lo` up, and a netlink socket.
fn outside_host() -> Result<Rtnl> {
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

fn validate_subnet(text: &str) -> Result<Ipv4Subnet> {
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

/// A locally administered MAC derived from the address, so that a reused
/// address never meets a stale neighbour entry with another MAC (the
/// gateway's too: it never changes).
pub(crate) fn mac_for(addr: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = addr.octets();
    [0x02, 0x00, a, b, c, d]
}

/// The state shared by a lab and its containers.
pub(crate) struct LabInner {
    addressing: Addressing,
    bridge: String,
    bridge_index: u32,
    lab_ns: OwnedFd,
    outside_ns: OwnedFd,
    rtnl: Mutex<Rtnl>,
    pool: Mutex<AddressPool>,
    /// The names of its hosts.
    hosts: Mutex<Hosts>,
    /// Starts the names of the bridge ports this handle creates; unique
    /// among every process that creates ports in the lab.
    port_prefix: String,
    next_port: AtomicU32,
    /// Numbers the blocks handed to test containers (see [`LabInner::view_prefix`]).
    next_view: AtomicU32,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LabInner {
    /// The lab namespace's rtnetlink socket.
    pub(crate) fn rtnl(&self) -> MutexGuard<'_, Rtnl> {
        lock(&self.rtnl)
    }

    /// The names of the lab's hosts.
    pub(crate) fn hosts(&self) -> MutexGuard<'_, Hosts> {
        lock(&self.hosts)
    }

    /// Takes a free container address.
    pub(crate) fn lease(self: &Arc<Self>) -> Result<Lease> {
        let mut pool = lock(&self.pool);
        let addr = pool.allocate().ok_or_else(|| Error::AddressesExhausted {
            subnet: self.addressing.subnet.to_string(),
            capacity: pool.capacity(),
        })?;
        Ok(Lease {
            lab: Arc::clone(self),
            addr,
        })
    }

    /// A fresh name for a bridge port, unique in the lab.
    pub(crate) fn port_name(&self) -> String {
        let n = self.next_port.fetch_add(1, Ordering::Relaxed);
        format!("{}{n:x}", self.port_prefix)
    }

    /// A fresh port-name prefix for another process that adds ports to the
    /// lab (a test's container spawning peers): `t<n>p`, never a prefix of
    /// this handle's names (`v<n>`) nor of another view's.
    pub(crate) fn view_prefix(&self) -> String {
        format!("t{:x}p", self.next_view.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn subnet(&self) -> Ipv4Subnet {
        self.addressing.subnet
    }

    pub(crate) fn addressing(&self) -> &Addressing {
        &self.addressing
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
    /// namespaces that this process inherited: it creates ports named
    /// `port_prefix…`, hands out only `addrs` and knows the `hosts` by
    /// name.
    pub(crate) fn adopt(view: LabView, lab_ns: OwnedFd, outside_ns: OwnedFd) -> Result<Self> {
        let rtnl = netns::run_in(lab_ns.as_fd(), || Rtnl::open("lab"))?;
        Ok(Self {
            addressing: view.addressing,
            bridge: view.bridge,
            bridge_index: view.bridge_index,
            lab_ns,
            outside_ns,
            rtnl: Mutex::new(rtnl),
            pool: Mutex::new(AddressPool::from_list(view.addrs)),
            hosts: Mutex::new(Hosts::new(&view.addressing, view.hosts)),
            port_prefix: view.port_prefix,
            next_port: AtomicU32::new(0),
            next_view: AtomicU32::new(0),
        })
    }
}

/// A container address taken from a lab's pool, returned when dropped.
pub(crate) struct Lease {
    lab: Arc<LabInner>,
    addr: Ipv4Addr,
}

impl Lease {
    pub(crate) fn addr(&self) -> Ipv4Addr {
        self.addr
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        lock(&self.lab.pool).release(self.addr);
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.addr)
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

    /// The process's shared lab with default settings, created on first use
    /// and kept until the process ends. Every test of a test binary that
    /// calls this shares one bridge, so containers of concurrent tests can
    /// reach each other; use [`Lab::builder`] for a lab of one's own.
    ///
    /// Inside the body of a [`netns_test`](crate::netns_test), this is the
    /// lab of the test's own network ([`Net::lab`](crate::Net::lab)).
    pub fn shared() -> Result<Lab> {
        Lab::shared_with(Stack::default())
    }

    /// The process's shared lab whose network carries `stack`: one per
    /// stack, each made on first use (see [`Lab::shared`]). Inside the
    /// body of a [`netns_test`](crate::netns_test), the test's own lab,
    /// whatever `stack`.
    pub fn shared_with(stack: Stack) -> Result<Lab> {
        let mut shared = lock(&SHARED);
        if let Some(adopted) = &shared.adopted {
            return Ok(adopted.clone());
        }
        if let Some(lab) = shared.made.iter().find(|lab| lab.stack() == stack) {
            return Ok(lab.clone());
        }
        let lab = Lab::builder().stack(stack).build()?;
        shared.made.push(lab.clone());
        Ok(lab)
    }

    /// The bridge's subnet.
    pub fn subnet(&self) -> Ipv4Subnet {
        self.inner.addressing.subnet
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

    /// The lab's end of the uplink: the NAT's public address, which the
    /// outside network sees as the source of every container's IPv4
    /// traffic ([`Lab::public_addr4`]); in an IPv6-only lab,
    /// [`Lab::public_addr6`].
    pub fn public_addr(&self) -> IpAddr {
        self.primary(PUBLIC_ADDR, PUBLIC_ADDR6)
    }

    /// The NAT's public IPv4 address, the lab's end of the uplink.
    pub fn public_addr4(&self) -> Ipv4Addr {
        PUBLIC_ADDR
    }

    /// The lab's IPv6 address on the uplink: the outside host's route to
    /// the bridge's IPv6 subnet (IPv6 is routed, not translated), or with
    /// [`LabBuilder::nat66`] the source the outside host sees.
    pub fn public_addr6(&self) -> Ipv6Addr {
        PUBLIC_ADDR6
    }

    /// The address of the outside host, the far end of the uplink: of the
    /// family [`Lab::gateway`] has.
    pub fn outside_addr(&self) -> IpAddr {
        self.primary(OUTSIDE_ADDR, OUTSIDE_ADDR6)
    }

    /// The outside host's IPv4 address (it has one whatever the lab's
    /// stack).
    pub fn outside_addr4(&self) -> Ipv4Addr {
        OUTSIDE_ADDR
    }

    /// The outside host's IPv6 address (it has one whatever the lab's
    /// stack).
    pub fn outside_addr6(&self) -> Ipv6Addr {
        OUTSIDE_ADDR6
    }

    /// The link between the lab and the outside host: [`Direction::Out`](crate::Direction::Out)
    /// is what the lab sends to the outside (containers' traffic after
    /// NAT), [`Direction::In`](crate::Direction::In) what comes back.
    pub fn uplink(&self) -> Result<crate::Link> {
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| Error::os("duplicate a network namespace's descriptor", e))
        };
        Ok(crate::network::link::Link::new(
            crate::network::link::End::new(dup(&self.inner.lab_ns)?, UPLINK, "lab", false),
            crate::network::link::End::new(dup(&self.inner.outside_ns)?, "eth0", "outside", false),
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
