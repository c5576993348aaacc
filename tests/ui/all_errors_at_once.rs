use netns_harness::{Net, netns_test};

// Two bad arguments and a bad signature: all three are reported.
#[netns_test(speed = "fast", timeout = "10x")]
fn a_test(net: Net, other: Net) {
    let _ = (net, other);
}

fn main() {}
