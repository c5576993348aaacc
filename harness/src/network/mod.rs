//! Network objects: labs, with their bridge, gateway, NAT and outside host;
//! their links, with conditions and faults.
//! Uses `kernel` and `common`.

pub(crate) mod lab;
pub(crate) mod link;
