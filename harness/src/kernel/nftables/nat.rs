//! TEMPORARY stand-in until the nat branch is merged.
use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;

use crate::common::error::Result;
use crate::common::nat::Nat;
use crate::common::subnet::Ipv4Subnet;
use crate::kernel::netlink::Socket;

pub(crate) struct NatRules<'a> {
    pub lan: Ipv4Subnet,
    pub lan_if: &'a str,
    pub wan_if: &'a str,
    pub public: Ipv4Addr,
    pub nat: Nat,
    pub seed: u32,
}

pub(crate) fn install_nat(_: BorrowedFd<'_>, _: &mut Socket, _: &NatRules) -> Result<()> {
    Ok(())
}
