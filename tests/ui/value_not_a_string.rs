use netns_harness::netns_test;

#[netns_test(timeout = 10)]
fn a_test() {}

fn main() {
    a_test();
}
