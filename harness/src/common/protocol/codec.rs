//! The codec every byte encoding of the protocol shares: integers in
//! little-endian order, strings and lists with a 32-bit length in front,
//! nothing left over at the end; hex text for environment variables.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

use super::{HostEntry, LabView};
use crate::common::nat::{Filtering, Mapping, Nat, Router, Uplink};
use crate::common::subnet::{Addressing, Ipv4Subnet, Ipv6Subnet, Stack};

/// Builds a message's bytes.
#[derive(Default)]
pub(super) struct Writer(Vec<u8>);

impl Writer {
    pub(super) fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }

    pub(super) fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(super) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(super) fn fd(&mut self, fd: RawFd) -> &mut Self {
        self.u32(fd.cast_unsigned())
    }

    pub(super) fn addr(&mut self, addr: Ipv4Addr) -> &mut Self {
        self.0.extend_from_slice(&addr.octets());
        self
    }

    pub(super) fn addr6(&mut self, addr: Ipv6Addr) -> &mut Self {
        self.0.extend_from_slice(&addr.octets());
        self
    }

    /// An address of either family: its version, then its bytes.
    pub(super) fn ip(&mut self, addr: IpAddr) -> &mut Self {
        match addr {
            IpAddr::V4(addr) => self.u8(4).addr(addr),
            IpAddr::V6(addr) => self.u8(6).addr6(addr),
        }
    }

    /// Which families a lab carries, in which subnets: its stack, its
    /// subnets (address and prefix length each), whether it translates
    /// IPv6.
    pub(super) fn addressing(&mut self, a: &Addressing) -> &mut Self {
        self.stack(a.stack)
            .addr(a.subnet.network())
            .u8(a.subnet.prefix())
            .addr6(a.subnet6.network())
            .u8(a.subnet6.prefix())
            .u8(u8::from(a.nat66))
    }

    /// A lab's uplink: its addresses, then its router (0 masquerade, 1
    /// routed, 2 a NAT: its mapping, filtering, hairpinning and UDP
    /// timeout in milliseconds), then whether it is on an internet segment.
    pub(super) fn uplink(&mut self, u: &Uplink) -> &mut Self {
        self.addr(u.public).addr(u.outside);
        match u.router {
            Router::Masquerade => self.u8(0),
            Router::Routed => self.u8(1),
            Router::Translating(nat) => {
                let ms = u64::try_from(nat.udp_timeout.as_millis()).unwrap_or(u64::MAX);
                self.u8(2)
                    .u8(nat.mapping as u8)
                    .u8(nat.filtering as u8)
                    .u8(u8::from(nat.hairpinning))
                    .u64(ms)
            }
        }
        .u8(u8::from(u.internet))
    }

    pub(super) fn len(&mut self, len: usize) -> &mut Self {
        self.u32(u32::try_from(len).unwrap_or(u32::MAX))
    }

    pub(super) fn str(&mut self, s: &str) -> &mut Self {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    /// Which families: 4, 6 or 46.
    pub(super) fn stack(&mut self, stack: Stack) -> &mut Self {
        self.u8(match stack {
            Stack::V4 => 4,
            Stack::V6 => 6,
            Stack::Dual => 46,
        })
    }

    /// What a lab handle of another process may do.
    pub(super) fn view(&mut self, view: &LabView) -> &mut Self {
        self.addressing(&view.addressing)
            .uplink(&view.uplink)
            .str(&view.bridge)
            .u32(view.bridge_index)
            .str(&view.port_prefix)
            .u32(view.ahead)
            .addrs(&view.addrs)
            .len(view.hosts.len());
        for host in &view.hosts {
            self.len(host.addrs.len());
            for &addr in &host.addrs {
                self.ip(addr);
            }
            match &host.name {
                None => self.u8(0),
                Some(name) => self.u8(1).str(name),
            };
            self.len(host.aliases.len());
            for alias in &host.aliases {
                self.str(alias);
            }
        }
        self
    }

    /// A list of IPv4 addresses.
    pub(super) fn addrs(&mut self, addrs: &[Ipv4Addr]) -> &mut Self {
        self.len(addrs.len());
        for &addr in addrs {
            self.addr(addr);
        }
        self
    }

    pub(super) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }

    /// The bytes as text for an environment variable: two hex digits each.
    pub(super) fn finish_hex(&mut self) -> String {
        self.finish().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The bytes [`Writer::finish_hex`] wrote as `text`.
pub(super) fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Reads a message's bytes back, in the order they were written.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl Reader<'_> {
    pub(super) fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    pub(super) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    pub(super) fn fd(&mut self) -> Option<RawFd> {
        Some(self.u32()?.cast_signed())
    }

    pub(super) fn addr(&mut self) -> Option<Ipv4Addr> {
        let octets: [u8; 4] = self.take(4)?.try_into().ok()?;
        Some(Ipv4Addr::from(octets))
    }

    pub(super) fn addr6(&mut self) -> Option<Ipv6Addr> {
        let octets: [u8; 16] = self.take(16)?.try_into().ok()?;
        Some(Ipv6Addr::from(octets))
    }

    pub(super) fn ip(&mut self) -> Option<IpAddr> {
        match self.u8()? {
            4 => Some(IpAddr::V4(self.addr()?)),
            6 => Some(IpAddr::V6(self.addr6()?)),
            _ => None,
        }
    }

    pub(super) fn stack(&mut self) -> Option<Stack> {
        match self.u8()? {
            4 => Some(Stack::V4),
            6 => Some(Stack::V6),
            46 => Some(Stack::Dual),
            _ => None,
        }
    }

    pub(super) fn view(&mut self) -> Option<LabView> {
        let (addressing, uplink) = (self.addressing()?, self.uplink()?);
        let (bridge, bridge_index, port_prefix) = (self.str()?, self.u32()?, self.str()?);
        let ahead = self.u32()?;
        let addrs = self.addrs()?;
        let count = self.len()?;
        let hosts = (0..count)
            .map(|_| {
                let count = self.len()?;
                let addrs = (0..count).map(|_| self.ip()).collect::<Option<_>>()?;
                let name = match self.u8()? {
                    0 => None,
                    1 => Some(self.str()?),
                    _ => return None,
                };
                let count = self.len()?;
                let aliases = (0..count).map(|_| self.str()).collect::<Option<_>>()?;
                Some(HostEntry {
                    addrs,
                    name,
                    aliases,
                })
            })
            .collect::<Option<_>>()?;
        Some(LabView {
            addressing,
            uplink,
            bridge,
            bridge_index,
            port_prefix,
            ahead,
            addrs,
            hosts,
        })
    }

    pub(super) fn addrs(&mut self) -> Option<Vec<Ipv4Addr>> {
        let count = self.len()?;
        (0..count).map(|_| self.addr()).collect()
    }

    pub(super) fn addressing(&mut self) -> Option<Addressing> {
        Some(Addressing {
            stack: self.stack()?,
            subnet: Ipv4Subnet::new(self.addr()?, self.u8()?).ok()?,
            subnet6: Ipv6Subnet::new(self.addr6()?, self.u8()?).ok()?,
            nat66: self.u8()? != 0,
        })
    }

    pub(super) fn uplink(&mut self) -> Option<Uplink> {
        let (public, outside) = (self.addr()?, self.addr()?);
        let router = match self.u8()? {
            0 => Router::Masquerade,
            1 => Router::Routed,
            2 => {
                use Filtering as F;
                use Mapping as M;
                let mapping = [
                    M::EndpointIndependent,
                    M::AddressDependent,
                    M::AddressAndPortDependent,
                ];
                let filtering = [
                    F::EndpointIndependent,
                    F::AddressDependent,
                    F::AddressAndPortDependent,
                ];
                let mapping = *mapping.get(usize::from(self.u8()?))?;
                let filtering = *filtering.get(usize::from(self.u8()?))?;
                let hairpinning = self.u8()? != 0;
                let timeout = std::time::Duration::from_millis(self.u64()?);
                Router::Translating(
                    Nat::new(mapping, filtering)
                        .hairpinning(hairpinning)
                        .udp_timeout(timeout),
                )
            }
            _ => return None,
        };
        Some(Uplink {
            public,
            outside,
            router,
            internet: self.u8()? != 0,
        })
    }

    pub(super) fn len(&mut self) -> Option<usize> {
        usize::try_from(self.u32()?).ok()
    }

    pub(super) fn str(&mut self) -> Option<String> {
        let len = self.len()?;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }

    /// `value`, if nothing is left over.
    pub(super) fn end<T>(self, value: T) -> Option<T> {
        self.0.is_empty().then_some(value)
    }
}
