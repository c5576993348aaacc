//! `cargo bench --bench containers [-- --quick]`: what a container costs.
//!
//! Prints a table, then one `bench:` line of `key=value` figures to compare
//! across commits.

use std::time::{Duration, Instant};

use netns_harness::{Lab, Spec};

/// Percentile `p` (0 to 100) of sorted `samples`, in milliseconds.
fn percentile(sorted: &[Duration], p: usize) -> f64 {
    let i = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1e3
}

/// Spawns a container until it is ready (eth0 addressed, default route set,
/// program executed) and tears it down (kill, reap, port deleted, address
/// freed), `n` times; returns the sorted durations.
fn per_container(lab: &Lab, n: usize) -> Vec<Duration> {
    let spec = Spec::command("sleep").arg("600");
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            let start = Instant::now();
            drop(lab.spawn(&spec).expect("spawn"));
            start.elapsed()
        })
        .collect();
    samples.sort();
    samples
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 100 } else { 400 };
    let lab = Lab::builder().subnet("10.250.0.0/16").build().expect("lab");
    per_container(&lab, 10); // warm up
    let samples = per_container(&lab, n);
    let (p50, p90, p99) = (
        percentile(&samples, 50),
        percentile(&samples, 90),
        percentile(&samples, 99),
    );
    println!(
        "{:<40} {:>9} {:>9} {:>9}",
        "per container (spawn until ready + teardown)", "p50 ms", "p90 ms", "p99 ms"
    );
    println!(
        "{:<40} {p50:>9.2} {p90:>9.2} {p99:>9.2}",
        format!("{n} containers, one after another")
    );
    println!(
        "bench: per_container_ms_p50={p50:.2} per_container_ms_p90={p90:.2} per_container_ms_p99={p99:.2}"
    );
}
