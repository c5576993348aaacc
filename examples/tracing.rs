//! The harness's steps as a user's `tracing` subscriber sees them: a lab
//! built, the waits for its links, a container spawned and torn down, each
//! with its timing. A `#[netns_test]` body that installs a subscriber sees
//! the same events of the containers it starts, in its captured output.
//!
//! `cargo run --example tracing` (root or rootless mode)

use std::time::Duration;

use netns_harness::{Lab, Spec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .without_time()
        .init();
    tracing::info!("building a lab of our own");
    let lab = Lab::builder().subnet("10.77.0.0/24").build()?;
    let mut container = lab.spawn(&Spec::command("true").name("short-lived"))?;
    let status = container.wait_timeout(Duration::from_secs(5))?;
    tracing::info!(?status, "the container's program ended");
    drop(container);
    Ok(())
}
