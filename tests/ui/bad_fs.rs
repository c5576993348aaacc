use netns_harness::netns_test;

#[netns_test(fs = "overlayfs")]
fn a_test() {}

fn main() {
    a_test();
}
