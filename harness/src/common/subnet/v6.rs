//! IPv6 prefixes, and which families a lab's network carries.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::Ipv4Subnet;
use crate::common::error::Error;

/// Which IP families a lab's network carries: its gateway's and its
/// containers' addresses and default routes. Shown as
/// `#[netns_test(ip = "…")]` spells it: `v4`, `v6`, `dual`.
///
/// The uplink and the outside host carry IPv4 always, and IPv6 when
/// the lab does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Stack {
    /// IPv4 only (the default): containers have an IPv6 link-local
    /// address and nothing else of IPv6.
    #[default]
    V4,
    /// IPv6 only: no IPv4 address on the gateway or the containers.
    V6,
    /// Both.
    Dual,
}

impl Stack {
    /// Whether it carries IPv4.
    pub fn has_v4(self) -> bool {
        self != Stack::V6
    }

    /// Whether it carries IPv6.
    pub fn has_v6(self) -> bool {
        self != Stack::V4
    }
}

impl fmt::Display for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stack::V4 => "v4",
            Stack::V6 => "v6",
            Stack::Dual => "dual",
        })
    }
}

/// Which families a lab carries, in which subnets, and so the addresses of
/// each of its hosts.
///
/// A host's IPv6 address ends in its IPv4 address's host part, octet by
/// octet (`10.200.1.5` ↔ `fd00:200::1:5`), so that the two families'
/// addresses of a host are easy to pair; an IPv6-only lab still numbers
/// its hosts from its IPv4 subnet, which then only numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Addressing {
    pub stack: Stack,
    pub subnet: Ipv4Subnet,
    pub subnet6: Ipv6Subnet,
    /// Whether the lab translates IPv6 (else it routes it).
    pub nat66: bool,
}

impl Addressing {
    /// The addresses of the host numbered `addr`, of the families the lab
    /// carries, IPv4 first.
    pub(crate) fn addrs(&self, addr: Ipv4Addr) -> Vec<IpAddr> {
        let v4 = self.stack.has_v4().then_some(IpAddr::V4(addr));
        v4.into_iter()
            .chain(self.addr6(addr).map(IpAddr::V6))
            .collect()
    }

    /// The IPv6 address of the host numbered `addr`, when the lab carries
    /// IPv6.
    pub(crate) fn addr6(&self, addr: Ipv4Addr) -> Option<Ipv6Addr> {
        let host = u32::from(addr).wrapping_sub(u32::from(self.subnet.network()));
        let [_, a, b, c] = host.to_be_bytes();
        let id = u64::from(a) << 32 | u64::from(b) << 16 | u64::from(c);
        self.stack.has_v6().then(|| self.subnet6.with_id(id))
    }

    /// The number (IPv4 address) of the host of the lab at `addr`, of
    /// either family; `None` for an address outside the lab's subnets.
    pub(crate) fn number_of(&self, addr: IpAddr) -> Option<Ipv4Addr> {
        match addr {
            IpAddr::V4(addr) => (self.stack.has_v4() && self.subnet.contains(addr)).then_some(addr),
            IpAddr::V6(addr) => {
                let id = u128::from(addr) & !self.subnet6.mask();
                let octet = |shift: u32| {
                    u32::try_from((id >> shift) & 0xffff)
                        .ok()
                        .filter(|o| *o <= 0xff)
                };
                let host = octet(32)? << 16 | octet(16)? << 8 | octet(0)?;
                let number = Ipv4Addr::from(u32::from(self.subnet.network()).wrapping_add(host));
                let fits = (id >> 48) == 0 && self.subnet.contains(number);
                (self.stack.has_v6() && self.subnet6.contains(addr) && fits).then_some(number)
            }
        }
    }

    /// The gateway's number (its IPv4 address).
    pub(crate) fn gateway(&self) -> Ipv4Addr {
        self.subnet.nth(1)
    }
}

/// An IPv6 subnet such as `fd00:200::/64`: a network address whose host
/// bits are zero, and a prefix length.
///
/// ```
/// use netns_harness::Ipv6Subnet;
/// let subnet: Ipv6Subnet = "fd00:200::/64".parse()?;
/// assert_eq!(subnet.prefix(), 64);
/// assert!("fd00:200::1/64".parse::<Ipv6Subnet>().is_err()); // host bits set
/// # Ok::<(), netns_harness::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv6Subnet {
    network: Ipv6Addr,
    prefix: u8,
}

impl Ipv6Subnet {
    /// The subnet `network/prefix`. Fails when the prefix is over 128 or
    /// the network address has host bits set.
    pub fn new(network: Ipv6Addr, prefix: u8) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidSubnet {
            subnet: format!("{network}/{prefix}"),
            reason,
        };
        if prefix > 128 {
            return Err(invalid("the prefix length must be at most 128".into()));
        }
        let subnet = Self { network, prefix };
        if subnet.network() != network {
            return Err(invalid(format!(
                "host bits are set; the network address of this prefix is {}/{prefix}",
                subnet.network()
            )));
        }
        Ok(subnet)
    }

    /// The mask of the network bits.
    pub(crate) fn mask(&self) -> u128 {
        u128::MAX
            .checked_shl(128 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// The network address.
    pub fn network(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.network) & self.mask())
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `addr` is inside the subnet.
    pub fn contains(&self, addr: Ipv6Addr) -> bool {
        u128::from(addr) & self.mask() == u128::from(self.network)
    }

    /// Whether the two subnets share any address.
    pub fn overlaps(&self, other: &Ipv6Subnet) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// The address of the subnet whose interface identifier is `id`.
    pub(crate) fn with_id(&self, id: u64) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.network) | u128::from(id) & !self.mask())
    }
}

impl fmt::Display for Ipv6Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv6Subnet {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let (addr, prefix) = super::split_cidr(s, "IPv6", "fd00:200::/64", 128)?;
        Self::new(addr, prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("fd00:200::/64", 64)]
    #[case("2001:db8::/32", 32)]
    #[case("::/0", 0)]
    fn parses_valid_subnets(#[case] text: &str, #[case] prefix: u8) {
        let subnet: Ipv6Subnet = text.parse().unwrap();
        assert_eq!(subnet.prefix(), prefix);
        assert_eq!(subnet.to_string(), text);
    }

    #[rstest]
    #[case("fd00:200::", "CIDR")]
    #[case("10.0.0.0/8", "not an IPv6 address")]
    #[case("fd00::/129", "at most 128")]
    #[case(
        "fd00:200::5/64",
        "host bits are set; the network address of this prefix is fd00:200::/64"
    )]
    fn rejects_invalid_subnets(#[case] text: &str, #[case] reason: &str) {
        let err = text.parse::<Ipv6Subnet>().unwrap_err().to_string();
        assert!(err.contains(reason), "{err}");
    }

    #[test]
    fn a_hosts_ipv6_address_ends_in_its_ipv4_host_part() {
        let lab = |subnet: &str| Addressing {
            stack: Stack::Dual,
            subnet: subnet.parse().unwrap(),
            subnet6: "fd00:200::/64".parse().unwrap(),
            nat66: false,
        };
        let of = |a: &str| {
            lab("10.200.0.0/16")
                .addr6(a.parse().unwrap())
                .unwrap()
                .to_string()
        };
        assert_eq!(of("10.200.0.1"), "fd00:200::1");
        assert_eq!(of("10.200.1.5"), "fd00:200::1:5");
        assert_eq!(of("10.200.255.254"), "fd00:200::ff:fe");
        let wide = lab("10.0.0.0/8");
        assert_eq!(
            wide.addr6("10.1.2.3".parse().unwrap()).unwrap().to_string(),
            "fd00:200::1:2:3"
        );
        let v4 = Addressing {
            stack: Stack::V4,
            ..wide
        };
        assert_eq!(v4.addrs(wide.gateway()), [IpAddr::V4(wide.gateway())]);
        let v6 = Addressing {
            stack: Stack::V6,
            ..wide
        };
        assert_eq!(
            v6.addrs(wide.gateway()),
            ["fd00:200::1".parse::<IpAddr>().unwrap()]
        );
        let dual = lab("10.200.0.0/16");
        let host: Ipv4Addr = "10.200.1.5".parse().unwrap();
        for addr in dual.addrs(host) {
            assert_eq!(dual.number_of(addr), Some(host), "{addr}");
        }
        for stranger in [
            "fd00:200::1:100",
            "fd00:201::5",
            "10.201.0.5",
            "fd00:200::1:0:0:5",
        ] {
            assert_eq!(
                dual.number_of(stranger.parse().unwrap()),
                None,
                "{stranger}"
            );
        }
    }

    #[test]
    fn ids_fill_the_host_bits_only() {
        let subnet: Ipv6Subnet = "fd00:200::/64".parse().unwrap();
        assert_eq!(
            subnet.with_id(0x1_0005),
            "fd00:200::1:5".parse::<Ipv6Addr>().unwrap()
        );
        assert!(subnet.contains(subnet.with_id(u64::MAX)));
        let other: Ipv6Subnet = "fd00:200::/48".parse().unwrap();
        assert!(subnet.overlaps(&other) && other.overlaps(&subnet));
        assert!(!subnet.overlaps(&"fd00:201::/64".parse().unwrap()));
    }
}
