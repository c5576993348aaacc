use netns_harness::{Net, netns_test};

#[netns_test]
fn a_test(net: Net, other: Net) {
    let _ = (net, other);
}

fn main() {}
