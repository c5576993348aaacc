//! What a network of a topology knows and does as a [`Lab`]: its NAT, its
//! port forwards, a flush, the internet's hosts.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use super::{HOST_ADDRS, STUN_PORTS};
use crate::common::error::{Error, Result};
use crate::common::nat::{Nat, Protocol, Router};
use crate::network::lab::Lab;

/// What a network of a topology knows of its place in it.
impl Lab {
    /// The NAT of the lab's router, for a network of a [`Topology`](crate::Topology) that
    /// translates: its mapping and filtering behaviours, hairpinning and
    /// UDP timeout. `None` for a routed network ([`Preset::None`](crate::Preset::None)) and for
    /// the default lab, whose router is the kernel's masquerade.
    pub fn nat(&self) -> Option<Nat> {
        match self.inner.uplink().router {
            Router::Translating(nat) => Some(nat),
            Router::Masquerade | Router::Routed => None,
        }
    }

    /// Forwards the router's public `port` of `protocol` to `to`, a
    /// container's endpoint on the lab: what arrives there from upstream
    /// goes to `to`, and with hairpinning what a container of the lab sends
    /// to [`Lab::public_addr`]`:port` too. For a network of a [`Topology`](crate::Topology)
    /// whose router translates; a port already forwarded is
    /// [`Error::PortForwarded`].
    pub fn forward(&self, protocol: Protocol, port: u16, to: SocketAddr) -> Result<()> {
        let to = self.forwardable(protocol, port, to)?;
        self.inner
            .with_nft(|nft| crate::kernel::nftables::add_forward(nft, protocol, port, to))
    }

    /// Drops the forward of the router's public `port` of `protocol`.
    pub fn unforward(&self, protocol: Protocol, port: u16) -> Result<()> {
        self.translating(&format!("unforward {protocol} port {port}"))?;
        self.inner
            .with_nft(|nft| crate::kernel::nftables::remove_forward(nft, protocol, port))
    }

    /// Reboots the router's NAT: every mapping and the connections it
    /// tracks are forgotten (its conntrack table is flushed), its port
    /// forwards stay. For a network of a [`Topology`](crate::Topology) whose router
    /// translates.
    pub fn flush_nat(&self) -> Result<()> {
        self.translating("flush the NAT")?;
        self.inner.with_nft(crate::kernel::nftables::flush_nat)
    }

    /// An error unless the router translates with rules of the harness.
    fn translating(&self, what: &str) -> Result<Nat> {
        self.nat().ok_or_else(|| Error::InvalidNat {
            nat: what.to_owned(),
            reason: format!(
                "this lab's router does not translate with a NAT of its own ({}); \
                 use a network of a Topology with a NAT preset",
                self.inner.uplink().router
            ),
        })
    }

    /// `to` as an IPv4 endpoint of the lab's subnet, for a forward.
    fn forwardable(&self, protocol: Protocol, port: u16, to: SocketAddr) -> Result<SocketAddrV4> {
        let what = format!("forward {protocol} port {port} to {to}");
        self.translating(&what)?;
        let subnet = self.subnet();
        let host = |ip: Ipv4Addr| {
            let last = u32::from(subnet.network()) | !u32::from(subnet.netmask());
            subnet.contains(ip)
                && ip != subnet.network()
                && Some(ip) != self.gateway4()
                && u32::from(ip) != last
        };
        match to {
            SocketAddr::V4(to) if host(*to.ip()) && port != 0 && to.port() != 0 => Ok(to),
            _ => Err(Error::InvalidNat {
                nat: what,
                reason: format!(
                    "a forward goes from a port other than 0 to a port other than 0 of a host \
                     address of the lab's subnet {subnet} (not its network, gateway or broadcast address)"
                ),
            }),
        }
    }

    /// The addresses of the internet's public hosts (two each, primary
    /// first), for a network of a [`Topology`](crate::Topology); empty for the default lab.
    pub fn public_hosts(&self) -> Vec<[Ipv4Addr; 2]> {
        if self.inner.uplink().internet {
            HOST_ADDRS.to_vec()
        } else {
            Vec::new()
        }
    }

    /// The primary endpoint of each public host's STUN responder (see
    /// [`PublicHost::stun`](crate::PublicHost::stun)), for a network of a [`Topology`](crate::Topology); empty for
    /// the default lab.
    pub fn stun_servers(&self) -> Vec<SocketAddr> {
        self.public_hosts()
            .into_iter()
            .map(|[primary, _]| SocketAddr::V4(SocketAddrV4::new(primary, STUN_PORTS[0])))
            .collect()
    }
}
