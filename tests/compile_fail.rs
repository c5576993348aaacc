//! Misuses of `#[netns_test]` are compile errors on the offending token that
//! say what is allowed, and the function is still emitted (each case uses
//! it, so a missing function would show up as another error).
//! Regenerate the expected output with
//! `TRYBUILD=overwrite cargo test --test compile_fail -- --include-ignored`.
//!
//! trybuild builds the cases against this package's dependencies, where
//! the harness has all its features; what a crate without them sees is
//! checked on `tests/minimal`, built by cargo.

use std::path::Path;

use netns_harness_suite::{cargo, needs, tree_dies_with_test};

/// trybuild runs cargo, which runs rustc: they run in a PID namespace that
/// dies with this test, so that none of them outlives it.
#[needs("unshare")]
#[test]
fn misuses_of_netns_test_are_compile_errors() {
    let out = tree_dies_with_test(std::env::current_exe().expect("the test binary"))
        .args(["--exact", "compile_fail_cases", "--include-ignored"])
        .args(["--nocapture", "--test-threads=1"])
        .output()
        .expect("run the compile-fail cases");
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the compile-fail cases failed");
    assert!(
        stdout.contains("1 passed"),
        "the compile-fail cases did not run"
    );
}

#[test]
#[ignore = "run by misuses_of_netns_test_are_compile_errors, in a PID namespace of its own"]
fn compile_fail_cases() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}

/// With none of the harness's optional features (`tests/minimal`), plain
/// bodies build, and an `async fn` body is one compile error, on its
/// `async`, naming the `tokio` feature.
#[needs("unshare")]
#[test]
fn an_async_body_without_the_tokio_feature_is_an_error_naming_it() {
    let minimal = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/minimal");
    let source = std::fs::read_to_string(minimal.join("src/lib.rs")).expect("the minimal crate");
    let (line, text) = source
        .lines()
        .enumerate()
        .find(|(_, text)| text.contains("async fn an_async_body"))
        .expect("the minimal crate's async test");
    let column = text.find("async").expect("its `async`");
    let out = tree_dies_with_test(cargo())
        .args([
            "check",
            "--tests",
            "--message-format=short",
            "--manifest-path",
        ])
        .arg(minimal.join("Cargo.toml"))
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/minimal"),
        )
        .output()
        .expect("run cargo check on tests/minimal");
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stderr}");
    assert!(!out.status.success(), "the async body compiled");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains(": error")).collect();
    let at = format!("src/lib.rs:{}:{}: error: ", line + 1, column + 1);
    assert!(
        matches!(&errors[..], [one] if one.starts_with(&at)
            && one.contains("needs the `tokio` feature of netns-harness")),
        "expected one error at {at}naming the feature, got {errors:#?}"
    );
}
