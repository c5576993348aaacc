//! What a topology is made of, as its user describes it: networks and
//! their routers' behaviours, checked before anything is made.

use std::collections::HashSet;

use super::{INTERNET_SUBNET, Topology};
use crate::common::error::{Error, Result};
use crate::common::nat::{Nat, Preset, Router};
use crate::common::subnet::Ipv4Subnet;

/// What a network's router does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Behaviour {
    Preset(Preset),
    Nat(Nat),
}

/// A network of a [`Topology`]: a LAN (bridge, subnet) behind a router,
/// attached to the internet or behind another network.
///
/// ```no_run
/// use netns_harness::{Network, Preset, Topology};
/// let topology = Topology::builder()
///     .network(Network::new("home").preset(Preset::FullCone))
///     .network(Network::new("office").subnet("10.9.0.0/24").preset(Preset::Symmetric))
///     .build()?;
/// let home = topology.network("home")?;
/// # Ok::<(), netns_harness::Error>(())
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Network {
    pub(super) name: String,
    pub(super) subnet: Option<String>,
    pub(super) behind: Option<String>,
    pub(super) behaviour: Behaviour,
}

impl Network {
    /// A network named `name` (unique in its topology), behind a
    /// port-restricted cone NAT on the internet, with the next free `/24`
    /// of `10.128.0.0/9`.
    pub fn new(name: &str) -> Network {
        Network {
            name: name.to_owned(),
            subnet: None,
            behind: None,
            behaviour: Behaviour::Preset(Preset::PortRestrictedCone),
        }
    }

    /// Its subnet, in CIDR notation (a `/8` to `/30`, overlapping no other
    /// network's nor the internet's `203.0.113.0/24`). Without it, the
    /// next free `/24` of `10.128.0.0/9` (of `198.51.100.0/24` in `/28`s
    /// for [`Preset::None`], public addresses).
    pub fn subnet(mut self, subnet: &str) -> Network {
        self.subnet = Some(subnet.to_owned());
        self
    }

    /// Attached to network `upstream` of the topology (its router's public
    /// side gets an address of `upstream`'s subnet) rather than to the
    /// internet: a NAT behind a NAT.
    pub fn behind(mut self, upstream: &str) -> Network {
        self.behind = Some(upstream.to_owned());
        self
    }

    /// Its router behaves as `preset` says. [`Preset::Cgnat`] makes two
    /// networks: `<name>-carrier`, the carrier's (a `/24` of
    /// `100.64.0.0/10`), and this one behind it; both routers are
    /// port-restricted cones.
    pub fn preset(mut self, preset: Preset) -> Network {
        self.behaviour = Behaviour::Preset(preset);
        self
    }

    /// Its router translates with exactly these behaviours.
    pub fn nat(mut self, nat: Nat) -> Network {
        self.behaviour = Behaviour::Nat(nat);
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What its router does.
    pub(super) fn router(&self) -> Router {
        match self.behaviour {
            Behaviour::Nat(nat) => Router::Translating(nat),
            Behaviour::Preset(preset) => preset.nat().map_or(Router::Routed, Router::Translating),
        }
    }
}

/// Settings of a topology; see [`Topology::builder`].
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct TopologyBuilder {
    networks: Vec<Network>,
}

impl TopologyBuilder {
    /// Adds a network.
    pub fn network(mut self, network: Network) -> TopologyBuilder {
        self.networks.push(network);
        self
    }

    /// Checks every network (names, attachments, subnets), then creates
    /// the internet, its hosts and responders, and the networks, upstream
    /// ones first. Nothing is left when it fails.
    pub fn build(self) -> Result<Topology> {
        let order = order(&self.networks)?;
        // Subnets given explicitly are checked against each other and the
        // internet's before anything is made.
        let mut given = Vec::new();
        for network in &self.networks {
            if let Some(text) = &network.subnet {
                let subnet = crate::network::lab::validate_subnet(text)?;
                check_overlap(&network.name, subnet, &given)?;
                given.push((network.name.clone(), subnet));
            }
            if let Router::Translating(nat) = network.router() {
                super::check_timeout(&network.name, nat.udp_timeout)?;
            }
        }
        let topology = Topology::empty()?;
        topology.reserve(&given);
        for i in order {
            topology.add(self.networks[i].clone())?;
        }
        Ok(topology)
    }
}

/// The networks' indices, upstream networks before those behind them; an
/// error for a name used twice, an unknown upstream, a network behind
/// itself or a cycle.
pub(super) fn order(networks: &[Network]) -> Result<Vec<usize>> {
    let mut seen = HashSet::new();
    for network in networks {
        crate::common::names::validate(&network.name)?;
        if !seen.insert(network.name.as_str()) {
            return Err(invalid(
                &network.name,
                "is named twice; give each network a name of its own",
            ));
        }
    }
    let index = |name: &str| networks.iter().position(|n| n.name == name);
    for network in networks {
        let Some(upstream) = &network.behind else {
            continue;
        };
        if network.router() == Router::Routed {
            return Err(invalid(&network.name, ROUTED_BEHIND));
        }
        if *upstream == network.name {
            return Err(invalid(
                &network.name,
                "is behind itself; put it behind another network, or on the internet (no .behind)",
            ));
        }
        if index(upstream).is_none() {
            let known: Vec<_> = networks.iter().map(|n| n.name.as_str()).collect();
            return Err(invalid(
                &network.name,
                &format!(
                    "is behind {upstream:?}, which is not a network of the topology; its networks are {}",
                    known.join(", ")
                ),
            ));
        }
    }
    let mut order = Vec::new();
    for start in 0..networks.len() {
        let mut path = vec![start];
        let mut at = start;
        while let Some(up) = networks[at].behind.as_deref().and_then(index) {
            if path.contains(&up) {
                path.push(up);
                let names: Vec<_> = path.iter().map(|&i| networks[i].name.as_str()).collect();
                return Err(invalid(
                    &networks[start].name,
                    &format!(
                        "is in a cycle ({}); one of them must be on the internet (no .behind)",
                        names.join(" behind ")
                    ),
                ));
            }
            path.push(up);
            at = up;
        }
        for &i in path.iter().rev() {
            if !order.contains(&i) {
                order.push(i);
            }
        }
    }
    Ok(order)
}

/// Why a routed network may not be behind another.
pub(super) const ROUTED_BEHIND: &str = "routes public addresses (no NAT), so it must be on the internet; \
     drop .behind, or give it a NAT";

pub(super) fn invalid(network: &str, reason: &str) -> Error {
    Error::InvalidTopology {
        network: network.to_owned(),
        reason: reason.to_owned(),
    }
}

/// An error if `subnet` of network `name` overlaps one of `others` or
/// the internet.
pub(super) fn check_overlap(
    name: &str,
    subnet: Ipv4Subnet,
    others: &[(String, Ipv4Subnet)],
) -> Result<()> {
    let internet: Ipv4Subnet = INTERNET_SUBNET.parse()?;
    let clash = std::iter::once(("the internet", &internet))
        .chain(others.iter().map(|(n, s)| (n.as_str(), s)))
        .find(|(_, other)| other.overlaps(&subnet));
    match clash {
        Some((other, other_subnet)) => Err(invalid(
            name,
            &format!(
                "has subnet {subnet}, which overlaps {other_subnet} of {other}; \
                 give each network a subnet of its own"
            ),
        )),
        None => Ok(()),
    }
}
