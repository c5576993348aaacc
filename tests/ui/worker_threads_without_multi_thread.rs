use netns_harness::netns_test;

// The default flavor, then current_thread said outright: both refused.
#[netns_test(worker_threads = 2)]
async fn by_default() {}

#[netns_test(flavor = "current_thread", worker_threads = 2)]
async fn said_outright() {}

fn main() {
    by_default();
    said_outright();
}
