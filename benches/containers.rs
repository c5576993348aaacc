//! `cargo bench --bench containers [-- --quick]`: what a container and a
//! `#[netns_test]` cost.
//!
//! Prints a table, then one `bench:` line of `key=value` figures to compare
//! across commits.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use netns_harness::{Lab, Spec};

/// Percentile `p` (0 to 100) of sorted `samples`, in milliseconds.
fn percentile(sorted: &[Duration], p: usize) -> f64 {
    let i = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1e3
}

/// Spawns a container until it is ready (eth0 addressed, default route set,
/// program executed) and tears it down (kill, reap, port off the bridge,
/// address freed), `n` times; returns the sorted durations.
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

/// A crate with `n` trivial `#[test]`s and `n` trivial `#[netns_test]`s, in
/// two test targets, under `target/bench-overhead`.
fn overhead_crate(n: usize) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/bench-overhead");
    std::fs::create_dir_all(dir.join("tests")).expect("create the overhead crate");
    let manifest = format!(
        "[package]\nname = \"overhead\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n\
         [dependencies]\nnetns-harness = {{ path = {:?} }}\n\n[workspace]\n",
        root.join("harness")
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("write Cargo.toml");
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).expect("copy Cargo.lock");
    std::fs::create_dir_all(dir.join("src")).expect("create src");
    std::fs::write(dir.join("src/lib.rs"), "").expect("write lib.rs");
    let mut plain = String::new();
    let mut netns = String::from("use netns_harness::netns_test;\n");
    for i in 0..n {
        let _ = writeln!(plain, "#[test]\nfn t{i}() {{}}");
        let _ = writeln!(netns, "#[netns_test]\nfn t{i}() {{}}");
    }
    std::fs::write(dir.join("tests/plain.rs"), plain).expect("write plain.rs");
    std::fs::write(dir.join("tests/netns.rs"), netns).expect("write netns.rs");
    dir
}

/// Wall time of `command`, which must succeed.
fn time(mut command: Command) -> Duration {
    let start = Instant::now();
    let out = command.output().expect("run");
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

/// Per-test overhead of `#[netns_test]` over `#[test]`, in ms, under
/// libtest (the binaries cargo test runs) and under `cargo nextest run`:
/// the best of `rounds` runs of each suite, difference divided by `n`.
fn per_test_overhead(n: usize, rounds: usize) -> (f64, f64) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let dir = overhead_crate(n);
    let target = dir.join("target");
    let cargo_in = |args: &[&str]| {
        let mut c = Command::new(&cargo);
        c.args(args)
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", &target);
        c
    };
    let built = cargo_in(&["test", "--release", "--no-run", "--message-format=json"])
        .output()
        .expect("build");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let stdout = String::from_utf8_lossy(&built.stdout);
    let binary = |name: &str| {
        let line = stdout
            .lines()
            .find(|l| {
                l.contains(&format!("\"name\":\"{name}\"")) && l.contains("\"executable\":\"")
            })
            .expect("a test binary");
        let start = line.find("\"executable\":\"").expect("executable") + 14;
        PathBuf::from(&line[start..start + line[start..].find('"').expect("quote")])
    };
    let best =
        |make: &dyn Fn() -> Command| (0..rounds).map(|_| time(make())).min().expect("rounds");
    let per_test = |netns: Duration, plain: Duration| {
        (netns.as_secs_f64() - plain.as_secs_f64()) * 1e3 / n as f64
    };
    let (plain_bin, netns_bin) = (binary("plain"), binary("netns"));
    let libtest = per_test(
        best(&|| Command::new(&netns_bin)),
        best(&|| Command::new(&plain_bin)),
    );
    let nextest = |test: &str| {
        let mut c = cargo_in(&["nextest", "run", "--release", "--test", test]);
        c.env("NEXTEST_HIDE_PROGRESS_BAR", "1");
        c
    };
    let nextest = per_test(best(&|| nextest("netns")), best(&|| nextest("plain")));
    (libtest, nextest)
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
    let (tests, rounds) = (200, if quick { 1 } else { 3 });
    let (overhead_libtest, overhead_nextest) = per_test_overhead(tests, rounds);

    println!("{:<52} {:>9} {:>9} {:>9}", "", "p50", "p90", "p99");
    println!(
        "{:<52} {p50:>7.2}ms {p90:>7.2}ms {p99:>7.2}ms",
        format!("per container, {n} one after another")
    );
    println!(
        "{:<52} {overhead_libtest:>7.2}ms",
        format!("#[netns_test] over #[test], {tests} tests, libtest")
    );
    println!(
        "{:<52} {overhead_nextest:>7.2}ms",
        format!("#[netns_test] over #[test], {tests} tests, nextest")
    );
    println!(
        "bench: per_container_ms_p50={p50:.2} per_container_ms_p90={p90:.2} per_container_ms_p99={p99:.2} \
         per_test_overhead_ms={overhead_libtest:.2} per_test_overhead_nextest_ms={overhead_nextest:.2}"
    );
}
