use netns_harness::netns_test;

#[netns_test]
#[test]
fn a_test() {}

fn main() {}
