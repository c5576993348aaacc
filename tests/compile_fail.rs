//! Misuses of `#[netns_test]` are compile errors on the offending token that
//! say what is allowed, and the function is still emitted (each case uses
//! it, so a missing function would show up as another error).
//! Regenerate the expected output with
//! `TRYBUILD=overwrite cargo test --test compile_fail -- --include-ignored`.

use netns_harness_suite::{needs, tree_dies_with_test};

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
