//! Misuses of `#[netns_test]` are compile errors on the offending token that
//! say what is allowed, and the function is still emitted (each case uses
//! it, so a missing function would show up as another error).
//! Regenerate the expected output with `TRYBUILD=overwrite cargo test --test compile_fail`.

#[test]
fn misuses_of_netns_test_are_compile_errors() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
