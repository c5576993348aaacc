//! Can this machine run netns tests? Prints each check, the mode tests will
//! use, and a fix for every failure; exits 0 when tests can run, 1 when not.
//!
//! `cargo run --example doctor`

fn main() {
    let report = netns_harness::doctor::report();
    print!("{report}");
    std::process::exit(if report.can_run() { 0 } else { 1 });
}
