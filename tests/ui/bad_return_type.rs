use netns_harness::netns_test;

#[netns_test]
fn a_test() -> u32 {
    7
}

fn main() {}
