use netns_harness::prelude::*;

#[netns_test(ip = "ipv6")]
fn misspelled_stack() {}

#[netns_test(ip = "V4")]
fn capital_letter() {}

fn main() {
    let _ = (misspelled_stack, capital_letter);
}
