use netns_harness::netns_test;

struct Suite;

impl Suite {
    #[netns_test]
    fn a_test(&self) {}
}

fn main() {
    Suite.a_test();
}
