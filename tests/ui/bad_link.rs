use netns_harness::prelude::*;

#[netns_test(link = "latncy=50ms")]
fn misspelled_key() {}

#[netns_test(link = "loss=120%")]
fn loss_above_everything() {}

#[netns_test(link = "latency=5ms jitter=10ms")]
fn jitter_above_latency() {}

fn main() {
    let _ = (misspelled_key, loss_above_everything, jitter_above_latency);
}
