//! A body that emulates its own link (on a kernel without netem) takes
//! the emulator with it when it ends: the runner then deletes the veth
//! pair that stood in for its port, so nothing of it stays in the lab. A
//! binary of its own, so that no other test's emulator is in the lab.

use netns_harness::prelude::*;
use netns_harness_suite::{in_netns, needs};

/// Sets netem-class conditions on its own link and ends with them.
#[netns_test]
#[ignore = "run by an_emulated_body_link_leaves_nothing_in_the_lab"]
fn a_body_that_ends_with_an_emulated_link(net: Net) {
    net.link()
        .unwrap()
        .set(Direction::Out, &"latency=5ms".parse().unwrap())
        .unwrap();
}

#[test]
#[needs("ip", "nsenter")]
fn an_emulated_body_link_leaves_nothing_in_the_lab() {
    let lab = Lab::shared().unwrap();
    let links = || in_netns(lab.lab_netns(), "ip", &["-o", "link"]);
    a_body_that_ends_with_an_emulated_link();
    let after = links();
    assert!(!after.contains(": em-"), "{after}");
    assert!(!after.contains(": ew-"), "{after}");
}
