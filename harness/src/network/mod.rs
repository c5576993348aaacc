//! Network objects: labs, with their bridge, gateway, NAT and outside host.
//! Uses `kernel` and `common`.

pub(crate) mod lab;
