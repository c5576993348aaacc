use netns_harness::netns_test;

#[netns_test(speed = "fast")]
fn a_test() {}

fn main() {
    a_test(); // still defined: editors keep working
}
