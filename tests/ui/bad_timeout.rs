use netns_harness::netns_test;

#[netns_test(timeout = "10x")]
fn a_test() {}

fn main() {
    a_test();
}
