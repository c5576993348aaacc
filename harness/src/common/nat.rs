//! NAT behaviours in the words of RFC 4787: how a router maps a host's
//! endpoint to a public one (mapping), which outside endpoints may send
//! back through that mapping (filtering), whether hosts behind it reach
//! each other through their public endpoints (hairpinning), and the
//! presets with the usual names.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::common::error::Error;

/// When a router reuses a public endpoint for a host's endpoint (RFC 4787,
/// section 4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mapping {
    /// One public endpoint per host endpoint, whatever the destination.
    EndpointIndependent,
    /// A public endpoint per host endpoint and destination address.
    AddressDependent,
    /// A public endpoint per host endpoint, destination address and port
    /// ("symmetric").
    AddressAndPortDependent,
}

/// Which outside endpoints a router lets send to a host through its
/// mapping (RFC 4787, section 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Filtering {
    /// Any outside endpoint.
    EndpointIndependent,
    /// Only addresses the host has sent to from that mapping, from any port.
    AddressDependent,
    /// Only the exact endpoints (address and port) the host has sent to.
    AddressAndPortDependent,
}

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mapping::EndpointIndependent => "endpoint-independent mapping",
            Mapping::AddressDependent => "address-dependent mapping",
            Mapping::AddressAndPortDependent => "address-and-port-dependent mapping",
        })
    }
}

impl fmt::Display for Filtering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Filtering::EndpointIndependent => "endpoint-independent filtering",
            Filtering::AddressDependent => "address-dependent filtering",
            Filtering::AddressAndPortDependent => "address-and-port-dependent filtering",
        })
    }
}

/// A transport protocol a router translates and forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP
    Tcp,
    /// UDP
    Udp,
}

impl Protocol {
    /// Its IP protocol number.
    pub(crate) fn number(self) -> u8 {
        match self {
            Protocol::Tcp => libc::IPPROTO_TCP as u8,
            Protocol::Udp => libc::IPPROTO_UDP as u8,
        }
    }

    /// Its name, as `nft` writes it: `tcp`, `udp`.
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The UDP mapping timeout of a router unless set: RFC 4787's REQ-5
/// minimum, two minutes.
pub const DEFAULT_UDP_TIMEOUT: Duration = Duration::from_secs(120);

/// How a router translates: its mapping and filtering behaviours,
/// hairpinning, and how long an idle UDP mapping lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Nat {
    /// How it maps.
    pub mapping: Mapping,
    /// What it lets in.
    pub filtering: Filtering,
    /// Whether a host reaches another host behind the same router through
    /// that host's public endpoint (the packet arrives from the sender's
    /// public endpoint, RFC 4787 REQ-9).
    pub hairpinning: bool,
    /// How long a UDP mapping lives without traffic.
    pub udp_timeout: Duration,
}

impl Nat {
    /// A NAT of these behaviours, with hairpinning and the default UDP
    /// timeout.
    pub const fn new(mapping: Mapping, filtering: Filtering) -> Nat {
        Nat {
            mapping,
            filtering,
            hairpinning: true,
            udp_timeout: DEFAULT_UDP_TIMEOUT,
        }
    }

    /// With hairpinning on or off.
    pub const fn hairpinning(mut self, on: bool) -> Nat {
        self.hairpinning = on;
        self
    }

    /// With this UDP mapping timeout (at least a second).
    pub const fn udp_timeout(mut self, timeout: Duration) -> Nat {
        self.udp_timeout = timeout;
        self
    }
}

impl fmt::Display for Nat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, {}", self.mapping, self.filtering)?;
        if !self.hairpinning {
            f.write_str(", no hairpinning")?;
        }
        Ok(())
    }
}

/// What a lab's router does between its bridge and its uplink.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Router {
    /// The default lab's: the kernel's masquerade (it keeps a host's port
    /// when it can and lets in only replies).
    Masquerade,
    /// A NAT of chosen behaviours (a network of a
    /// [`Topology`](crate::Topology)).
    Translating(Nat),
    /// No translation: the bridge's subnet is routed (and the internet
    /// segment's core router).
    Routed,
}

impl fmt::Display for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Router::Masquerade => f.write_str("masquerade"),
            Router::Translating(nat) => write!(f, "NAT with {nat}"),
            Router::Routed => f.write_str("routed, no NAT"),
        }
    }
}

/// Where a lab's router meets its upstream network: its IPv4 address there
/// (the source the outside sees when it translates), the outside host
/// its containers know as `outside`, what the router does, and whether
/// the lab is part of a topology (whose internet has the public hosts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Uplink {
    pub public: std::net::Ipv4Addr,
    pub outside: std::net::Ipv4Addr,
    pub router: Router,
    pub internet: bool,
}

/// The usual names of router behaviours, for
/// `#[netns_test(nat = "…")]` and [`Preset::from_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preset {
    /// `"full-cone"`: endpoint-independent mapping and filtering.
    FullCone,
    /// `"restricted-cone"`: endpoint-independent mapping,
    /// address-dependent filtering.
    RestrictedCone,
    /// `"port-restricted-cone"`: endpoint-independent mapping,
    /// address-and-port-dependent filtering.
    PortRestrictedCone,
    /// `"symmetric"`: address-and-port-dependent mapping and filtering.
    Symmetric,
    /// `"none"`: no translation; the router routes a subnet of public
    /// addresses and filters nothing.
    None,
    /// `"cgnat"`: a home router (port-restricted cone) whose public side is
    /// in the shared address space `100.64.0.0/10` of RFC 6598, behind a
    /// carrier router (port-restricted cone too) that holds the public
    /// address.
    Cgnat,
}

impl Preset {
    /// Every preset, in the order of the table in the README.
    pub const ALL: [Preset; 6] = [
        Preset::FullCone,
        Preset::RestrictedCone,
        Preset::PortRestrictedCone,
        Preset::Symmetric,
        Preset::None,
        Preset::Cgnat,
    ];

    /// The preset's name.
    pub const fn name(self) -> &'static str {
        match self {
            Preset::FullCone => "full-cone",
            Preset::RestrictedCone => "restricted-cone",
            Preset::PortRestrictedCone => "port-restricted-cone",
            Preset::Symmetric => "symmetric",
            Preset::None => "none",
            Preset::Cgnat => "cgnat",
        }
    }

    /// The translation of the router in front of the hosts: `None` for
    /// [`Preset::None`]. For [`Preset::Cgnat`], the home router's (the
    /// carrier's is the same).
    pub const fn nat(self) -> Option<Nat> {
        use Filtering as F;
        use Mapping as M;
        let (mapping, filtering) = match self {
            Preset::FullCone => (M::EndpointIndependent, F::EndpointIndependent),
            Preset::RestrictedCone => (M::EndpointIndependent, F::AddressDependent),
            Preset::PortRestrictedCone | Preset::Cgnat => {
                (M::EndpointIndependent, F::AddressAndPortDependent)
            }
            Preset::Symmetric => (M::AddressAndPortDependent, F::AddressAndPortDependent),
            Preset::None => return None,
        };
        Some(Nat::new(mapping, filtering))
    }

    /// The names of every preset, quoted, for messages.
    pub fn names() -> String {
        Preset::ALL
            .iter()
            .map(|p| format!("\"{}\"", p.name()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = Error;

    /// A preset by its name; an unknown name is [`Error::InvalidNat`],
    /// listing the names.
    fn from_str(name: &str) -> Result<Preset, Error> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| Error::InvalidNat {
                nat: name.to_owned(),
                reason: format!(
                    "no NAT preset has this name; the presets are {}",
                    Preset::names()
                ),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_found_by_name_and_unknown_names_list_them() {
        for preset in Preset::ALL {
            assert_eq!(preset.name().parse::<Preset>().unwrap(), preset);
        }
        let message = "cone".parse::<Preset>().unwrap_err().to_string();
        assert!(message.contains("\"cone\""), "{message}");
        assert!(
            message.contains("\"full-cone\", \"restricted-cone\""),
            "{message}"
        );
    }

    #[test]
    fn the_cone_presets_map_independently_of_the_endpoint() {
        for preset in [
            Preset::FullCone,
            Preset::RestrictedCone,
            Preset::PortRestrictedCone,
        ] {
            assert_eq!(preset.nat().unwrap().mapping, Mapping::EndpointIndependent);
        }
        assert_eq!(
            Preset::Symmetric.nat().unwrap().mapping,
            Mapping::AddressAndPortDependent
        );
        assert_eq!(Preset::None.nat(), None);
    }
}
