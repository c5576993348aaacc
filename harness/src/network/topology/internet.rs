//! The internet segment's parts: its public hosts, its core router's
//! settings, and the routers' settings checked on the way.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;

use super::{CORE, INTERNET_PREFIX, PublicHost, STUN_PORTS};
use crate::common::error::{Error, Result};
use crate::kernel::rtnl::{Peer, Rtnl};
use crate::network::lab::{mac_for, wait_for};
use crate::network::stun::Responder;

/// The seed of the routers' port-choosing hash: from
/// [`SEED_VAR`](crate::SEED_VAR) when set, else random.
pub(super) fn seed() -> u32 {
    let seed = crate::common::settings::get().seed.unwrap_or_else(|| {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(std::process::id())
    });
    (seed ^ (seed >> 32)) as u32
}

/// An error unless `timeout` is whole seconds, at least one (what both
/// the router's sets and its conntrack can keep).
pub(super) fn check_timeout(network: &str, timeout: std::time::Duration) -> Result<()> {
    if timeout.as_secs() == 0 || timeout.subsec_nanos() != 0 {
        return Err(Error::InvalidNat {
            nat: format!("udp_timeout {timeout:?} of network {network:?}"),
            reason:
                "a UDP mapping timeout is whole seconds, at least one, e.g. Duration::from_secs(30)"
                    .to_owned(),
        });
    }
    Ok(())
}

/// The core router (the calling thread's namespace) sends no ICMP
/// redirects. A public host's reply to a routed network leaves through the
/// core, which forwards it to the network's router on the same segment;
/// with a redirect, the host would remember that router for the
/// container's address, and send there still once the network is gone
/// and its subnet is another router's.
pub(super) fn no_redirects() -> Result<()> {
    for conf in ["all", "default", "inet"] {
        let path = format!("/proc/sys/net/ipv4/conf/{conf}/send_redirects");
        std::fs::write(&path, "0")
            .map_err(|e| Error::os("turn off ICMP redirects on the internet's core router", e))?;
    }
    Ok(())
}

/// Public host number `n`: a namespace with `eth0` on the internet's
/// bridge, holding `addrs`, its default route through the core router,
/// and a STUN responder.
pub(super) fn public_host(
    internet: &mut Rtnl,
    bridge: u32,
    n: usize,
    addrs: [Ipv4Addr; 2],
) -> Result<PublicHost> {
    let name = format!("host{n}");
    let (netns, mut rtnl) = crate::kernel::userns::create_netns(crate::network::lab::outside_host)?;
    internet.add_veth(
        &format!("h{n}"),
        Some(bridge),
        &Peer {
            name: "eth0",
            netns: netns.as_fd(),
            mac: Some(mac_for(addrs[0])),
        },
    )?;
    let eth0 = rtnl.link_index("eth0")?;
    rtnl.set_up(eth0)?;
    for addr in addrs {
        rtnl.add_address(eth0, addr, INTERNET_PREFIX)?;
    }
    rtnl.add_route(Ipv4Addr::UNSPECIFIED, 0, CORE)?;
    wait_for(&name, "come up", || Ok(rtnl.link_state("eth0")?.up))?;
    let responder = crate::kernel::netns::run_in(netns.as_fd(), || {
        Responder::start(addrs[0].into(), addrs[1].into(), STUN_PORTS)
    })?;
    Ok(PublicHost {
        name,
        addrs,
        netns,
        _responder: responder,
    })
}
