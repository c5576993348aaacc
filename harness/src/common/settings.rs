//! What a user sets in the environment, read once: every `NETNS_HARNESS_*`
//! variable the harness understands is here, with what it does.
//!
//! | variable | effect |
//! |---|---|
//! | [`ROOTLESS_VAR`] `=0` | a non-root process stays out of a user namespace (its labs then fail with the reason) |
//! | [`SKIP_VAR`] `=1` | a test that cannot run on this machine passes, printing one line saying why |
//! | [`KEEP_VAR`] `=1` | a failed test's network is kept, with the `nsenter` commands to enter it |
//! | [`KEEP_SECONDS_VAR`] `=N` | how long a kept network waits for Enter (600 s by default) |
//! | [`CAPTURE_VAR`] `=0` | no capture of tests' traffic (no pcap on failure) |
//! | [`SEED_VAR`] `=N` | the seed of the random choices of link conditions (a failure report prints it) |
//! | [`KEEPER_VAR`] `=0` | under nextest, each test process builds its own shared labs instead of using the run's keeper |
//!
//! The harness also passes variables of its own to the containers it
//! starts ([`crate::common::protocol`]); those are not settings.

use std::sync::OnceLock;
use std::time::Duration;

/// Set to `0` to keep a non-root process out of a user namespace (labs then
/// fail with [`Error::Unsupported`](crate::Error::Unsupported)).
pub const ROOTLESS_VAR: &str = "NETNS_HARNESS_ROOTLESS";
/// Set to `1` to turn "cannot create containers on this machine" into a
/// visible skip: the test passes and prints one line saying why.
pub const SKIP_VAR: &str = "NETNS_HARNESS_SKIP_UNSUPPORTED";
/// Set to `1` to keep a failed test's container and lab alive, and print
/// how to enter them, until Enter is pressed or [`KEEP_SECONDS_VAR`] pass.
pub const KEEP_VAR: &str = "NETNS_HARNESS_KEEP_ON_FAILURE";
/// How long a kept network waits for Enter, in seconds (default 600).
pub const KEEP_SECONDS_VAR: &str = "NETNS_HARNESS_KEEP_SECONDS";
/// Set to `0` to not capture tests' traffic (no pcap on failure).
pub const CAPTURE_VAR: &str = "NETNS_HARNESS_CAPTURE";

/// The seed from which the random choices of every link condition without
/// a seed of its own are derived (a failure report prints the one a test
/// used); random when unset.
pub const SEED_VAR: &str = "NETNS_HARNESS_SEED";

/// Set to `0` so that, under `cargo nextest run`, each test process builds
/// its own shared labs instead of asking the keeper of the run's labs
/// (see the crate's documentation, "nextest").
pub const KEEPER_VAR: &str = "NETNS_HARNESS_KEEPER";

/// The settings of this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    /// [`ROOTLESS_VAR`]`=0`.
    pub rootless_off: bool,
    /// [`SKIP_VAR`]`=1`.
    pub skip_unsupported: bool,
    /// [`KEEP_VAR`]`=1`.
    pub keep_on_failure: bool,
    /// [`KEEP_SECONDS_VAR`].
    pub keep_for: Duration,
    /// Not [`CAPTURE_VAR`]`=0`.
    pub capture: bool,
    /// [`SEED_VAR`], when it is a number.
    pub seed: Option<u64>,
    /// [`KEEPER_VAR`]`=0`.
    pub keeper_off: bool,
}

impl Settings {
    /// The settings `var` gives (a lookup in an environment).
    fn read(var: impl Fn(&str) -> Option<String>) -> Self {
        let is = |name: &str, value: &str| var(name).is_some_and(|v| v == value);
        Self {
            rootless_off: is(ROOTLESS_VAR, "0"),
            skip_unsupported: is(SKIP_VAR, "1"),
            keep_on_failure: is(KEEP_VAR, "1"),
            keep_for: Duration::from_secs(
                var(KEEP_SECONDS_VAR)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(600),
            ),
            capture: !is(CAPTURE_VAR, "0"),
            seed: var(SEED_VAR).and_then(|s| s.parse().ok()),
            keeper_off: is(KEEPER_VAR, "0"),
        }
    }
}

/// The process's settings, read from its environment the first time.
pub(crate) fn get() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| Settings::read(|name| std::env::var(name).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_come_from_their_variables_only() {
        let defaults = Settings::read(|_| None);
        assert_eq!(
            defaults,
            Settings {
                rootless_off: false,
                skip_unsupported: false,
                keep_on_failure: false,
                keep_for: Duration::from_secs(600),
                capture: true,
                seed: None,
                keeper_off: false,
            }
        );
        let all = Settings::read(|name| {
            let value = match name {
                ROOTLESS_VAR | CAPTURE_VAR | KEEPER_VAR => "0",
                KEEP_SECONDS_VAR => "5",
                _ => "1",
            };
            Some(value.to_owned())
        });
        assert_eq!(
            all,
            Settings {
                rootless_off: true,
                skip_unsupported: true,
                keep_on_failure: true,
                keep_for: Duration::from_secs(5),
                capture: false,
                seed: Some(1),
                keeper_off: true,
            }
        );
        // Other values mean the default.
        assert_eq!(
            Settings::read(|_| Some("yes".to_owned())),
            Settings {
                keep_for: Duration::from_secs(600),
                ..defaults
            }
        );
    }
}
