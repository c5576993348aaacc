use netns_harness::netns_test;

#[netns_test]
#[tokio::test]
async fn a_test() {}

fn main() {}
