use netns_harness::netns_test;

#[netns_test]
struct NotATest;

fn main() {
    let _ = NotATest;
}
