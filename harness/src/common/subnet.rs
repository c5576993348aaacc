//! IPv4 and IPv6 subnets for labs, which families a lab carries, and the
//! allocation of container addresses.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::common::error::Error;

mod v6;
pub(crate) use v6::Addressing;
pub use v6::{Ipv6Subnet, Stack};

/// An IPv4 subnet such as `10.200.0.0/16`: a network address whose host bits
/// are zero, and a prefix length.
///
/// ```
/// use netns_harness::Ipv4Subnet;
/// let subnet: Ipv4Subnet = "10.200.0.0/16".parse()?;
/// assert_eq!(subnet.prefix(), 16);
/// assert!("10.200.0.1/16".parse::<Ipv4Subnet>().is_err()); // host bits set
/// # Ok::<(), netns_harness::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Subnet {
    /// The subnet `network/prefix`. Fails when the prefix is over 32 or the
    /// network address has host bits set.
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidSubnet {
            subnet: format!("{network}/{prefix}"),
            reason,
        };
        if prefix > 32 {
            return Err(invalid("the prefix length must be at most 32".into()));
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

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) & u32::from(self.netmask()))
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The netmask, e.g. `255.255.0.0` for a `/16`.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(self.prefix))
                .unwrap_or(0),
        )
    }

    /// The broadcast address (all host bits set).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !u32::from(self.netmask()))
    }

    /// Whether `addr` is inside the subnet.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & u32::from(self.netmask()) == u32::from(self.network)
    }

    /// Whether the two subnets share any address.
    pub fn overlaps(&self, other: &Ipv4Subnet) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// The `n`th address of the subnet (0 is the network address).
    pub(crate) fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network).wrapping_add(n))
    }

    /// How many addresses the subnet holds, network and broadcast included.
    pub(crate) fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }
}

impl fmt::Display for Ipv4Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Subnet {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let (addr, prefix) = split_cidr(s, "IPv4", "10.200.0.0/16", 32)?;
        Self::new(addr, prefix)
    }
}

/// The address and the prefix length of `s`, CIDR notation for an
/// address of `family` (such as `example`) with a prefix up to `max`.
fn split_cidr<A: FromStr>(s: &str, family: &str, example: &str, max: u8) -> Result<(A, u8), Error> {
    let invalid = |reason: String| Error::InvalidSubnet {
        subnet: s.to_owned(),
        reason,
    };
    let (addr, prefix) = s
        .split_once('/')
        .ok_or_else(|| invalid(format!("expected CIDR notation such as {example}")))?;
    let addr: A = addr
        .parse()
        .map_err(|_| invalid(format!("the address part is not an {family} address")))?;
    let prefix: u8 = prefix
        .parse()
        .map_err(|_| invalid(format!("the prefix length is not a number from 0 to {max}")))?;
    Ok((addr, prefix))
}

/// Which addresses a pool hands out.
#[derive(Debug)]
enum Slots {
    /// A run of consecutive addresses starting at this one.
    Range(u32),
    /// These addresses (a block handed to a test's container).
    List(Vec<Ipv4Addr>),
}

/// Hands out container addresses: those of a lab subnet but the network
/// address, the gateway (the first host) and the broadcast address; or a
/// given list of them.
///
/// Allocation goes round the pool before reusing an address, so a released
/// address is not handed out again while others are free.
#[derive(Debug)]
pub(crate) struct AddressPool {
    slots: Slots,
    in_use: Vec<bool>,
    next: usize,
}

impl AddressPool {
    /// The first container address is the subnet's second host.
    const FIRST: u32 = 2;

    /// The container addresses of `subnet`.
    pub(crate) fn new(subnet: Ipv4Subnet) -> Self {
        let capacity = subnet.size().saturating_sub(u64::from(Self::FIRST) + 1);
        Self {
            slots: Slots::Range(u32::from(subnet.nth(Self::FIRST))),
            in_use: vec![false; usize::try_from(capacity).unwrap_or(usize::MAX)],
            next: 0,
        }
    }

    /// Exactly `addrs`.
    pub(crate) fn from_list(addrs: Vec<Ipv4Addr>) -> Self {
        Self {
            in_use: vec![false; addrs.len()],
            slots: Slots::List(addrs),
            next: 0,
        }
    }

    /// Adds `addrs` to a pool made of a list.
    pub(crate) fn extend(&mut self, addrs: Vec<Ipv4Addr>) {
        if let Slots::List(list) = &mut self.slots {
            self.in_use.extend(addrs.iter().map(|_| false));
            list.extend(addrs);
        }
    }

    /// How many addresses the pool has.
    pub(crate) fn capacity(&self) -> u32 {
        u32::try_from(self.in_use.len()).unwrap_or(u32::MAX)
    }

    fn addr(&self, slot: usize) -> Ipv4Addr {
        match &self.slots {
            Slots::Range(first) => Ipv4Addr::from(first.wrapping_add(slot as u32)),
            Slots::List(addrs) => addrs[slot],
        }
    }

    fn slot(&self, addr: Ipv4Addr) -> Option<usize> {
        match &self.slots {
            Slots::Range(first) => Some(u32::from(addr).wrapping_sub(*first) as usize),
            Slots::List(addrs) => addrs.iter().position(|a| *a == addr),
        }
        .filter(|&slot| slot < self.in_use.len())
    }

    /// A free address, or `None` when all are taken.
    pub(crate) fn allocate(&mut self) -> Option<Ipv4Addr> {
        let len = self.in_use.len();
        let slot = (0..len)
            .map(|i| (self.next + i) % len)
            .find(|&i| !self.in_use[i])?;
        self.in_use[slot] = true;
        self.next = (slot + 1) % len;
        Some(self.addr(slot))
    }

    /// Takes `addr` out of the pool for good (a host that is not a
    /// container has it).
    pub(crate) fn reserve(&mut self, addr: Ipv4Addr) {
        if let Some(slot) = self.slot(addr) {
            self.in_use[slot] = true;
        }
    }

    /// Returns `addr` to the pool.
    pub(crate) fn release(&mut self, addr: Ipv4Addr) {
        if let Some(slot) = self.slot(addr) {
            self.in_use[slot] = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("10.200.0.0/16", "10.200.0.0", 16)]
    #[case("192.168.7.0/24", "192.168.7.0", 24)]
    #[case("10.0.0.4/30", "10.0.0.4", 30)]
    fn parses_valid_subnets(#[case] text: &str, #[case] network: Ipv4Addr, #[case] prefix: u8) {
        let subnet: Ipv4Subnet = text.parse().unwrap();
        assert_eq!((subnet.network(), subnet.prefix()), (network, prefix));
        assert_eq!(subnet.to_string(), text);
    }

    #[rstest]
    #[case("10.200.0.0", "CIDR")]
    #[case("10.200.0/16", "not an IPv4 address")]
    #[case("10.200.0.0/33", "at most 32")]
    #[case("10.200.0.0/x", "not a number")]
    #[case(
        "10.200.0.1/16",
        "host bits are set; the network address of this prefix is 10.200.0.0/16"
    )]
    fn rejects_invalid_subnets(#[case] text: &str, #[case] reason: &str) {
        let err = text.parse::<Ipv4Subnet>().unwrap_err().to_string();
        assert!(err.contains(reason), "{err}");
        assert!(err.contains(text), "{err}");
    }

    #[test]
    fn pool_skips_network_gateway_and_broadcast_and_goes_round() {
        let mut pool = AddressPool::new("10.0.0.0/29".parse().unwrap());
        assert_eq!(pool.capacity(), 5);
        let got: Vec<_> = (0..5).map(|_| pool.allocate().unwrap()).collect();
        let want: Vec<Ipv4Addr> = (2..=6).map(|h| Ipv4Addr::new(10, 0, 0, h)).collect();
        assert_eq!(got, want);
        assert_eq!(pool.allocate(), None);
        pool.release(Ipv4Addr::new(10, 0, 0, 4));
        assert_eq!(pool.allocate(), Some(Ipv4Addr::new(10, 0, 0, 4)));
    }

    #[test]
    fn a_pool_of_a_list_hands_out_exactly_the_list() {
        let addrs = vec![Ipv4Addr::new(10, 0, 0, 9), Ipv4Addr::new(10, 0, 0, 3)];
        let mut pool = AddressPool::from_list(addrs.clone());
        assert_eq!(
            [pool.allocate(), pool.allocate(), pool.allocate()],
            [Some(addrs[0]), Some(addrs[1]), None]
        );
        pool.release(addrs[1]);
        pool.release(Ipv4Addr::new(10, 0, 0, 4)); // not in the pool: ignored
        assert_eq!(pool.allocate(), Some(addrs[1]));
    }

    #[test]
    fn pool_does_not_reuse_a_released_address_while_others_are_free() {
        let mut pool = AddressPool::new("10.0.0.0/24".parse().unwrap());
        let first = pool.allocate().unwrap();
        pool.release(first);
        assert_ne!(pool.allocate(), Some(first));
    }
}
