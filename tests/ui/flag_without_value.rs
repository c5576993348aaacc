use netns_harness::netns_test;

#[netns_test(timeout)]
fn a_test() {}

fn main() {
    a_test();
}
