//! A lab's IPv6: a unique local /64 on the bridge, documentation space on
//! the uplink, routed without NAT.
//!
//! ```text
//!  container ns            lab ns                                     outside ns
//!  eth0 fd00:200::2 ───── v0 ─┐
//!  eth0 fd00:200::3 ───── v1 ─┤ br0 fd00:200::1   uplink 2001:db8::1 ──── eth0 2001:db8::2
//!                             └ forwarding=1                    route fd00:200::/64 via 2001:db8::1
//! ```
//!
//! Which address a host gets: [`Addressing`](crate::common::subnet::Addressing).

use std::net::Ipv6Addr;
use std::os::fd::{AsFd, OwnedFd};

use crate::common::error::{Error, Result};
use crate::common::subnet::Ipv6Subnet;
use crate::kernel::netns;
use crate::kernel::rtnl::Rtnl;

/// The default IPv6 subnet of a lab's bridge.
pub const DEFAULT_SUBNET6: &str = "fd00:200::/64";
/// The subnet between the lab and the outside network (RFC 3849's
/// documentation prefix, never routed on the internet).
const UPLINK_SUBNET6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0);
const UPLINK_PREFIX6: u8 = 64;
/// The lab's end of the uplink.
pub(crate) const PUBLIC_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// The outside host's address.
pub(crate) const OUTSIDE_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// Ranges a lab's IPv6 subnet may not overlap.
const RESERVED6: [(Ipv6Addr, u8, &str); 4] = [
    (
        UPLINK_SUBNET6,
        UPLINK_PREFIX6,
        "the lab's uplink to the outside network",
    ),
    (
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
        "link-local addresses",
    ),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast"),
    (
        Ipv6Addr::UNSPECIFIED,
        96,
        "the unspecified, loopback and IPv4-compatible addresses",
    ),
];

/// The lab's IPv6 subnet from its text: a /64 (what hosts configure
/// themselves in), clear of the uplink's and of special ranges.
pub(crate) fn validate_subnet6(text: &str) -> Result<Ipv6Subnet> {
    let subnet: Ipv6Subnet = text.parse()?;
    let invalid = |reason: String| Error::InvalidSubnet {
        subnet: text.to_owned(),
        reason,
    };
    if subnet.prefix() != 64 {
        return Err(invalid(format!(
            "a lab's IPv6 subnet is a /64 (the size of every IPv6 LAN), not a /{}; \
             use for example {DEFAULT_SUBNET6}",
            subnet.prefix()
        )));
    }
    for (network, prefix, what) in RESERVED6 {
        let reserved = Ipv6Subnet::new(network, prefix)?;
        if subnet.overlaps(&reserved) {
            return Err(invalid(format!(
                "it overlaps {reserved}, {what}; choose another range such as {DEFAULT_SUBNET6}"
            )));
        }
    }
    Ok(subnet)
}

/// A new lab's IPv6: its links, its gateway's address and subnet, and
/// whether the outside host routes to the subnet (no NAT66).
pub(crate) struct Setup<'a> {
    pub bridge: &'a str,
    pub bridge_index: u32,
    pub uplink: &'a str,
    pub uplink_index: u32,
    pub outside_eth0: u32,
    pub gateway: Ipv6Addr,
    pub subnet6: Ipv6Subnet,
    pub routed: bool,
}

/// Gives a new lab IPv6 as `setup` says: forwarding, the gateway's and
/// the uplink's addresses (IPv6 is off on the lab's links until then, so
/// that bridge ports get none), the outside host's, and unless it
/// translates (NAT66) the outside host's route back to the bridge's
/// subnet.
pub(crate) fn configure(
    lab_ns: &OwnedFd,
    lab: &mut Rtnl,
    outside: &mut Rtnl,
    setup: &Setup<'_>,
) -> Result<()> {
    netns::run_in(lab_ns.as_fd(), || {
        let write = |path: String, value: &str| {
            std::fs::write(&path, value)
                .map_err(|e| Error::os(format!("write {value} to {path} in the lab namespace"), e))
        };
        write("/proc/sys/net/ipv6/conf/all/forwarding".into(), "1")?;
        for link in [setup.bridge, setup.uplink] {
            write(format!("/proc/sys/net/ipv6/conf/{link}/disable_ipv6"), "0")?;
        }
        Ok(())
    })?;
    let subnet6 = setup.subnet6;
    lab.add_address6(setup.bridge_index, setup.gateway, subnet6.prefix())?;
    lab.add_address6(setup.uplink_index, PUBLIC_ADDR6, UPLINK_PREFIX6)?;
    outside.add_address6(setup.outside_eth0, OUTSIDE_ADDR6, UPLINK_PREFIX6)?;
    if setup.routed {
        outside.add_route(subnet6.network(), subnet6.prefix(), PUBLIC_ADDR6)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lab_subnet6_is_a_free_64() {
        assert!(validate_subnet6("fd00:1::/64").is_ok());
        let err = |s: &str| validate_subnet6(s).unwrap_err().to_string();
        assert!(
            err("fd00:1::/48").contains("is a /64"),
            "{}",
            err("fd00:1::/48")
        );
        assert!(err("2001:db8::/64").contains("uplink"));
        assert!(err("fe80::/64").contains("link-local"));
        assert!(err("fd00:1::/x").contains("not a number"));
    }
}
