use netns_harness::netns_test;

#[netns_test(flavor = "multi_threaded")]
async fn a_test() {}

fn main() {
    a_test();
}
