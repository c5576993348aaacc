//! The crate's one error type.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while building a lab or running a container.
///
/// Messages are lowercase and read after "failed to …" where they describe an
/// operation; each names what was wrong and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A container, bridge or interface name is not usable.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it and what is allowed.
        reason: String,
    },

    /// A container's name or alias is already a name of another host of
    /// the lab (see [`Spec::alias`](crate::Spec::alias)).
    #[error(
        "name {name:?} is already {holder} in this lab; choose another name or alias, \
         or drop the container that holds it first"
    )]
    DuplicateName {
        /// The name as given.
        name: String,
        /// Who has it, e.g. "an alias of container \"web\"".
        holder: String,
    },

    /// No host of the lab has this name (see [`Lab::resolve`](crate::Lab::resolve)).
    #[error("no host of the lab is named {name:?}; the lab's names are: {}", known.join(", "))]
    UnknownName {
        /// The name as given.
        name: String,
        /// The names the lab has, in the order its hosts came.
        known: Vec<String>,
    },

    /// A lab subnet is malformed, too small or collides with a reserved range.
    #[error("invalid subnet {subnet:?}: {reason}")]
    InvalidSubnet {
        /// The subnet as given.
        subnet: String,
        /// What is wrong with it and what is allowed.
        reason: String,
    },

    /// A NAT behaviour or preset that does not exist or does not fit
    /// (see [`Preset`](crate::Preset)).
    #[error("invalid NAT {nat:?}: {reason}")]
    InvalidNat {
        /// The NAT as given.
        nat: String,
        /// What is wrong with it and what is allowed.
        reason: String,
    },

    /// A topology whose networks cannot be built as described: an unknown
    /// or repeated network, a network attached to itself or in a cycle,
    /// overlapping subnets (see [`Topology`](crate::Topology)).
    #[error("invalid topology: network {network:?} {reason}")]
    InvalidTopology {
        /// The network the problem was found at.
        network: String,
        /// What is wrong and what to change.
        reason: String,
    },

    /// A router's public port already forwards elsewhere (see
    /// [`Lab::forward`](crate::Lab::forward)).
    #[error(
        "{protocol} port {port} of the router is already forwarded to {to}; \
         choose another public port, or drop the forward that holds it first"
    )]
    PortForwarded {
        /// `"tcp"` or `"udp"`.
        protocol: &'static str,
        /// The public port.
        port: u16,
        /// Where it already goes.
        to: std::net::SocketAddr,
    },

    /// Link conditions that are out of range, do not make sense together,
    /// or do not fit the link they are set on.
    #[error("invalid link conditions \"{conditions}\": {reason}")]
    InvalidConditions {
        /// The conditions, as text.
        conditions: String,
        /// What is wrong with them and what is allowed.
        reason: String,
    },

    /// The kernel lacks a feature something asked for needs.
    #[error("this kernel has no {feature}, which {needed_for} need; fix: {fix}")]
    MissingKernelFeature {
        /// What is missing, with its configuration option.
        feature: &'static str,
        /// What needed it.
        needed_for: String,
        /// How to get it.
        fix: &'static str,
    },

    /// A fault that cannot be made as asked.
    #[error("invalid fault: {reason}")]
    InvalidFault {
        /// What is wrong and what is allowed.
        reason: String,
    },

    /// Every address of the lab subnet is taken by a live container.
    #[error(
        "no free address left in lab subnet {subnet} ({capacity} container addresses, all in use): \
         drop containers you no longer need or build the lab with a larger subnet"
    )]
    AddressesExhausted {
        /// The lab subnet.
        subnet: String,
        /// How many container addresses it has.
        capacity: u32,
    },

    /// The program a container should run cannot be found or executed.
    #[error("command {program:?} not found: {reason}")]
    CommandNotFound {
        /// The program as given.
        program: String,
        /// Where it was looked for.
        reason: String,
    },

    /// Neither root nor an unprivileged user namespace is available, so no
    /// namespace can be created.
    #[error("cannot create network namespaces: {reason}; fix: {fix}")]
    Unsupported {
        /// What is missing.
        reason: String,
        /// How to make it work.
        fix: String,
    },

    /// A system call of the harness failed.
    #[error("failed to {operation}: {source}")]
    Os {
        /// What the harness was doing, e.g. "clone container \"web\"".
        operation: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },

    /// A netlink request was refused by the kernel.
    #[error("failed to {operation} in {namespace} namespace: {source}{}", kernel_message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Netlink {
        /// What was asked, in `ip`/`nft` terms, e.g. "add veth vc3 to br0".
        operation: String,
        /// Which namespace of the lab it was sent to ("lab", "outside").
        namespace: &'static str,
        /// The kernel's error.
        #[source]
        source: io::Error,
        /// The kernel's extended-ack message, when it sent one.
        kernel_message: Option<String>,
    },

    /// A container's process exited or failed before it was ready.
    #[error("container {name:?} failed while {stage}: {source}")]
    ContainerSetup {
        /// The container's name.
        name: String,
        /// What it was doing.
        stage: &'static str,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },

    /// Waiting for a container took longer than allowed.
    #[error("container {name:?} did not {what} within {timeout:?}")]
    Timeout {
        /// The container's name.
        name: String,
        /// What it did not do in time, e.g. "exit".
        what: &'static str,
        /// How long was waited.
        timeout: Duration,
    },

    /// A probe was asked for something that cannot be probed.
    #[error("invalid probe: {reason}")]
    InvalidProbe {
        /// What is wrong and what is allowed.
        reason: String,
    },

    /// A directory given to [`Spec::root`](crate::Spec::root) cannot be a
    /// container's root filesystem: it does not exist, or lacks what the
    /// container needs. Found when the container is spawned, before
    /// anything is created.
    #[error("cannot use {root:?} as a container's root filesystem: {reason}; fix: {fix}")]
    InvalidRoot {
        /// The directory as given.
        root: PathBuf,
        /// What is missing, by its path inside the root.
        reason: String,
        /// How to make it work.
        fix: String,
    },

    /// The kernel refused the overlay of [`Fs::Overlay`](crate::Fs::Overlay).
    #[error(
        "container {name:?} cannot have a copy-on-write view of the filesystem: {reason}; fix: {fix}"
    )]
    OverlayUnavailable {
        /// The container's name.
        name: String,
        /// What the kernel said, and what it means.
        reason: String,
        /// How to make it work.
        fix: String,
    },

    /// The test executable cannot be found to re-execute it for a function.
    #[error("cannot re-execute the test binary {path:?} to run a function: {source}")]
    CurrentExe {
        /// The path that was tried.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// An [`Error::Os`] for `operation`.
    pub(crate) fn os(operation: impl Into<String>, source: io::Error) -> Self {
        Self::Os {
            operation: operation.into(),
            source,
        }
    }

    /// An [`Error::OverlayUnavailable`] for container `name`, whose
    /// overlay mount failed with `errno`.
    pub(crate) fn overlay_unavailable(name: &str, errno: i32) -> Self {
        let error = io::Error::from_raw_os_error(errno);
        let (reason, fix) = match errno {
            libc::ENODEV => (
                format!("this kernel has no overlay filesystem ({error})"),
                "load it (`modprobe overlay`) or use a kernel built with CONFIG_OVERLAY_FS; \
                 or use Fs::Private",
            ),
            libc::EPERM | libc::EINVAL => (
                format!(
                    "the kernel refused to mount an overlay in the container's user namespace \
                     ({error}): that needs Linux 5.11 or later, and overlays nest at most two \
                     deep (the host's or the spawning container's / may be one already)"
                ),
                "use Fs::Private, or Linux 5.11 or later",
            ),
            _ => (
                format!("mounting the overlay failed ({error})"),
                "use Fs::Private",
            ),
        };
        Self::OverlayUnavailable {
            name: name.to_owned(),
            reason,
            fix: fix.to_owned(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unavailable_overlay_says_why_and_what_to_do() {
        let message = |errno| Error::overlay_unavailable("box", errno).to_string();
        assert!(
            message(libc::ENODEV).ends_with(
                "this kernel has no overlay filesystem (No such device (os error 19)); fix: \
                 load it (`modprobe overlay`) or use a kernel built with CONFIG_OVERLAY_FS; \
                 or use Fs::Private"
            ),
            "{}",
            message(libc::ENODEV)
        );
        assert!(message(libc::EPERM).contains("needs Linux 5.11 or later"));
        assert!(message(libc::EINVAL).contains("nest at most two deep"));
        assert!(message(libc::ENOSPC).contains("mounting the overlay failed"));
        assert!(message(libc::ENOSPC).starts_with("container \"box\" cannot have"));
    }
}
