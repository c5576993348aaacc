use netns_harness::netns_test;

#[netns_test(network = "public")]
fn a_test() {}

fn main() {
    a_test();
}
