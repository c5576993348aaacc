//! Unit tests of `runner`.

use super::*;

#[test]
fn hostnames_come_from_the_function_name() {
    let test = |name| Test {
        name,
        timeout: Duration::from_secs(1),
        network: Network::Shared,
        fs: Fs::Private,
        link: "",
        stack: Stack::V4,
        nat: None,
        entry: || {},
    };
    assert_eq!(
        test("suite::a_rather_long_test_name").hostname(),
        "a_rather_long_t"
    );
    assert_eq!(test("suite::cases::case_1").hostname(), "case_1");
    assert_eq!(test("suite::cases::case_1").display_name(), "cases::case_1");
}
