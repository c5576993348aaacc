//! Rootless mode: a process that is not root enters a user namespace of its
//! own before `main`, in which it is root and may create and administer
//! network namespaces. When that is impossible, the reason is kept so that
//! creating a lab can say exactly what is missing and how to fix it.

use std::io;
use std::sync::OnceLock;

use crate::common::error::Error;
use crate::common::settings::ROOTLESS_VAR;
use crate::kernel::sys;

/// How the process came to have (or not have) the privileges labs need.
#[derive(Debug)]
pub(crate) enum Privilege {
    /// Started as root (or inside a user namespace it is root of).
    Root,
    /// Entered a user namespace of its own before `main`.
    Rootless,
    /// Not root, and rootless mode is switched off by [`ROOTLESS_VAR`].
    Disabled,
    /// Not root, and entering a user namespace failed with this errno.
    Failed(i32),
}

static PRIVILEGE: OnceLock<Privilege> = OnceLock::new();

/// Decides and records the process's [`Privilege`]; called before `main`.
pub(crate) fn init() {
    PRIVILEGE.get_or_init(|| {
        if sys::geteuid() == 0 {
            Privilege::Root
        } else if crate::common::settings::get().rootless_off {
            Privilege::Disabled
        } else {
            match sys::enter_user_namespace() {
                Ok(()) => Privilege::Rootless,
                Err(e) => Privilege::Failed(e.raw_os_error().unwrap_or(0)),
            }
        }
    });
}

/// Records that the process, not root, joined the user namespace of the
/// keeper of its run's labs before `main` instead of making its own;
/// called before `main`, before [`init`].
pub(crate) fn joined() {
    let _ = PRIVILEGE.set(Privilege::Rootless);
}

/// Whether the process runs in a user namespace of its own (or of its
/// run's keeper).
pub fn is_rootless() -> bool {
    matches!(privilege(), Privilege::Rootless)
}

pub(crate) fn privilege() -> &'static Privilege {
    init();
    PRIVILEGE.get_or_init(|| Privilege::Root)
}

/// The kernel settings that decide whether unprivileged user namespaces
/// are allowed, as read from `/proc/sys`.
#[derive(Debug, Default)]
pub(crate) struct Settings {
    /// `kernel.unprivileged_userns_clone` (Debian kernels).
    pub unprivileged_userns_clone: Option<String>,
    /// `user.max_user_namespaces`.
    pub max_user_namespaces: Option<String>,
    /// `kernel.apparmor_restrict_unprivileged_userns` (Ubuntu).
    pub apparmor_restrict: Option<String>,
}

impl Settings {
    pub(crate) fn read() -> Self {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .ok()
                .map(|s| s.trim().to_owned())
        };
        Self {
            unprivileged_userns_clone: read("/proc/sys/kernel/unprivileged_userns_clone"),
            max_user_namespaces: read("/proc/sys/user/max_user_namespaces"),
            apparmor_restrict: read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
        }
    }
}

/// The error for a failed attempt to create a namespace (`err`), explained
/// by how the process got its privileges.
pub(crate) fn unsupported(err: &io::Error) -> Error {
    diagnose(privilege(), err, &Settings::read())
}

/// The reason and fix for `err` given `privilege` and the kernel `settings`.
pub(crate) fn diagnose(privilege: &Privilege, err: &io::Error, settings: &Settings) -> Error {
    let run_as_root = "run the tests as root (e.g. `sudo -E cargo test`)";
    let (reason, fix) = match privilege {
        Privilege::Root | Privilege::Rootless => (
            format!("the kernel refused to create a network namespace ({err}) although the process is root in its user namespace"),
            "check that the kernel has CONFIG_NET_NS and that no seccomp filter or security module blocks unshare(CLONE_NEWNET)".to_owned(),
        ),
        Privilege::Disabled => (
            format!("the process is not root and rootless mode is switched off by {ROOTLESS_VAR}=0"),
            format!("unset {ROOTLESS_VAR}, or {run_as_root}"),
        ),
        Privilege::Failed(errno) => {
            let cause = io::Error::from_raw_os_error(*errno);
            let (why, fix) = if settings.unprivileged_userns_clone.as_deref() == Some("0") {
                (
                    "kernel.unprivileged_userns_clone is 0".to_owned(),
                    format!("`sysctl -w kernel.unprivileged_userns_clone=1`, or {run_as_root}"),
                )
            } else if settings.max_user_namespaces.as_deref() == Some("0") || *errno == libc::ENOSPC {
                (
                    "user.max_user_namespaces is exhausted or 0".to_owned(),
                    format!("`sysctl -w user.max_user_namespaces=15000`, or {run_as_root}"),
                )
            } else if settings.apparmor_restrict.as_deref() == Some("1") {
                (
                    "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1)".to_owned(),
                    format!(
                        "`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`, or an AppArmor profile with `userns,` for the test binary, or {run_as_root}"
                    ),
                )
            } else if *errno == libc::EINVAL {
                (
                    "the process already had several threads before main, so it could not enter a user namespace".to_owned(),
                    format!("do not start threads in constructors that run before netns-harness's, or {run_as_root}"),
                )
            } else {
                (
                    "a seccomp filter or security module of the environment (e.g. a container runtime) forbids it".to_owned(),
                    format!("allow unshare(CLONE_NEWUSER) in the environment, or {run_as_root}"),
                )
            };
            (
                format!("the process is not root and could not enter an unprivileged user namespace ({cause}): {why}"),
                fix,
            )
        }
    };
    Error::Unsupported { reason, fix }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn settings(clone: Option<&str>, max: Option<&str>, apparmor: Option<&str>) -> Settings {
        Settings {
            unprivileged_userns_clone: clone.map(str::to_owned),
            max_user_namespaces: max.map(str::to_owned),
            apparmor_restrict: apparmor.map(str::to_owned),
        }
    }

    #[rstest]
    #[case(
        Privilege::Failed(libc::EPERM),
        settings(Some("0"), Some("100"), None),
        "kernel.unprivileged_userns_clone is 0",
        "sysctl -w kernel.unprivileged_userns_clone=1"
    )]
    #[case(
        Privilege::Failed(libc::ENOSPC),
        settings(None, Some("0"), None),
        "user.max_user_namespaces",
        "sysctl -w user.max_user_namespaces=15000"
    )]
    #[case(
        Privilege::Failed(libc::EPERM),
        settings(None, Some("100"), Some("1")),
        "AppArmor",
        "kernel.apparmor_restrict_unprivileged_userns=0"
    )]
    #[case(
        Privilege::Failed(libc::EINVAL),
        settings(None, Some("100"), None),
        "several threads",
        "constructors"
    )]
    #[case(
        Privilege::Failed(libc::EPERM),
        settings(Some("1"), Some("100"), Some("0")),
        "seccomp",
        "allow unshare"
    )]
    #[case(
        Privilege::Disabled,
        settings(None, None, None),
        "NETNS_HARNESS_ROOTLESS=0",
        "unset NETNS_HARNESS_ROOTLESS"
    )]
    #[case(
        Privilege::Root,
        settings(None, None, None),
        "refused to create a network namespace",
        "CONFIG_NET_NS"
    )]
    fn names_the_cause_and_the_fix(
        #[case] privilege: Privilege,
        #[case] settings: Settings,
        #[case] reason: &str,
        #[case] fix: &str,
    ) {
        let err = io::Error::from_raw_os_error(libc::EPERM);
        let Error::Unsupported { reason: r, fix: f } = diagnose(&privilege, &err, &settings) else {
            panic!("not an Unsupported error");
        };
        assert!(r.contains(reason), "reason {r:?} lacks {reason:?}");
        assert!(f.contains(fix), "fix {f:?} lacks {fix:?}");
    }
}
