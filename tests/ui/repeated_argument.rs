use netns_harness::netns_test;

#[netns_test(timeout = "1s", timeout = "2s")]
fn a_test() {}

fn main() {
    a_test();
}
