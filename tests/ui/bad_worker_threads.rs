use netns_harness::netns_test;

#[netns_test(flavor = "multi_thread", worker_threads = 0)]
async fn no_workers() {}

#[netns_test(flavor = "multi_thread", worker_threads = "4")]
async fn quoted() {}

fn main() {
    no_workers();
    quoted();
}
