use netns_harness::prelude::*;

#[netns_test(nat = "cone")]
fn unknown_preset() {}

#[netns_test(nat = "symmetric", ip = "dual")]
fn nat_is_ipv4_only() {}

fn main() {
    let _ = (unknown_preset, nat_is_ipv4_only);
}
