use netns_harness::netns_test;

// No runtime to configure: each argument is an error.
#[netns_test(flavor = "multi_thread", worker_threads = 2)]
fn a_test() {}

fn main() {
    a_test();
}
