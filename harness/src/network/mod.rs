//! Network objects: labs, with their bridge, gateway, NAT and outside host;
//! their links, with conditions and faults.
//! Uses `kernel` and `common`.

pub(crate) mod fault;
pub(crate) mod hosts;
pub(crate) mod keeper;
pub(crate) mod lab;
pub(crate) mod link;
pub mod stun;
pub(crate) mod topology;

/// What this process has in force that goes with it: its faults and the
/// link conditions it emulates, one line each, for a failure report.
pub(crate) fn in_force() -> Vec<String> {
    let mut lines = fault::in_force();
    lines.extend(link::emulated());
    lines
}
