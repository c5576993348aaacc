//! The user namespace every container of a root test process runs in.
//!
//! Run as real root, a container's body would hold every capability over
//! the host: it could unmount its `/proc` and see the host's processes,
//! and through their `/proc/<pid>/ns/*` enter the host's namespaces (a
//! rootless body could at least unmount its `/proc`). So a test process
//! makes, once, a user namespace that maps every id it has to itself
//! (files keep their owners and permissions work as before), and makes its
//! labs' network namespaces and its containers' namespaces inside it,
//! owned by it. A container's body is root there: it
//! administers its own namespaces, its lab and its peers', and holds no
//! capability over the host's; the mounts it inherits, its `/proc`
//! included, are locked.
//!
//! Only a single-threaded process may join a user namespace, so the
//! namespaces owned by it are made by short-lived holder processes that
//! the spawner clones ([`crate::kernel::prexec::Role::Holder`]).
//!
//! A process the harness started in a container is in its test's lab user
//! namespace already, and makes no other.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::common::error::{Error, Result};
use crate::common::protocol::Report;
use crate::kernel::prexec::ChildPlan;
use crate::kernel::rootless::{self, Privilege};
use crate::kernel::spawner::{self, Lane, Reports};
use crate::{kernel::netns, kernel::sys};

/// Set before `main` in processes the harness started in a container.
static CONTAINED: AtomicBool = AtomicBool::new(false);

/// Records that this process runs in a container of the harness (it is in
/// its test's user namespace already); called before `main`.
pub(crate) fn mark_contained() {
    CONTAINED.store(true, Ordering::SeqCst);
}

/// The process's lab user namespace, once decided.
static USERNS: OnceLock<Option<OwnedFd>> = OnceLock::new();

/// Makes `userns` the process's lab user namespace (the keeper's of its
/// run, whose labs it uses); called before `main`.
pub(crate) fn adopt(userns: OwnedFd) {
    let _ = USERNS.set(Some(userns));
}

/// The process's lab user namespace: `None` in a container of the harness,
/// without the privileges to make labs, or when the kernel refused to make
/// one (a warning says so once).
pub(crate) fn lab_userns() -> Option<BorrowedFd<'static>> {
    USERNS
        .get_or_init(|| {
            let privileged = matches!(rootless::privilege(), Privilege::Root | Privilege::Rootless);
            if !privileged || CONTAINED.load(Ordering::SeqCst) {
                return None;
            }
            create()
                .inspect_err(|e| {
                    eprintln!(
                        "netns-harness: containers run without a user namespace of their own, \
                         with the test process's privileges over the host: {e}"
                    );
                })
                .ok()
        })
        .as_ref()
        .map(AsFd::as_fd)
}

/// Maps every id of `own` (the process's `uid_map` or `gid_map`) to itself.
fn identity(own: &str) -> String {
    own.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (inside, _, count) = (fields.next()?, fields.next()?, fields.next()?);
            Some(format!("{inside} {inside} {count}\n"))
        })
        .collect()
}

fn create() -> Result<OwnedFd> {
    hold(true, None, Lane::Now, |pidfd| {
        let pid = sys::pidfd_pid(pidfd)
            .map_err(|e| Error::os("find the pid of the user namespace's holder", e))?;
        for map in ["uid_map", "gid_map"] {
            let failed = |e| Error::os(format!("write the lab user namespace's {map}"), e);
            let own = std::fs::read_to_string(format!("/proc/self/{map}")).map_err(failed)?;
            std::fs::write(format!("/proc/{pid}/{map}"), identity(&own)).map_err(failed)?;
        }
        sys::pidfd_userns(pidfd, pid).map_err(|e| Error::os("open the lab user namespace", e))
    })
}

/// Creates a network namespace and runs `setup` inside it, on a thread of
/// its own (see [`netns::create`]): in the lab user namespace when the
/// process has one.
pub(crate) fn create_netns<T: Send>(
    setup: impl FnOnce() -> Result<T> + Send,
) -> Result<(OwnedFd, T)> {
    let Some(userns) = lab_userns() else {
        return netns::create(setup);
    };
    let netns = hold(false, Some(userns), Lane::Now, |pidfd| {
        netns::of_process(pidfd, "a namespace holder")
    })?;
    let value = netns::run_in(netns.as_fd(), setup)?;
    Ok((netns, value))
}

/// Creates an empty network namespace: in the lab user namespace, through
/// a holder cloned on the spawner that works ahead ([`Lane::Ahead`]), when
/// the process has one; else on a thread of its own ([`netns::create`]).
pub(crate) fn create_netns_ahead() -> Result<OwnedFd> {
    let Some(userns) = lab_userns() else {
        return netns::create(|| Ok(())).map(|(netns, ())| netns);
    };
    hold(false, Some(userns), Lane::Ahead, |pidfd| {
        netns::of_process(pidfd, "a namespace holder")
    })
}

/// Clones a holder, in a new user namespace (`new_user`) or making a
/// network namespace in `userns`,, lets `take` take what it
/// holds through its pidfd, then lets it exit and reaps it.
fn hold<T>(
    new_user: bool,
    userns: Option<BorrowedFd<'_>>,
    lane: Lane,
    take: impl FnOnce(BorrowedFd<'_>) -> Result<T>,
) -> Result<T> {
    let os = |what: &'static str| move |e| Error::os(what, e);
    let (go_read, go_write) = sys::pipe().map_err(os("create a pipe for a namespace holder"))?;
    let (report_read, report_write) =
        sys::pipe().map_err(os("create a pipe for a namespace holder"))?;
    let mut plan = ChildPlan::holder(new_user);
    plan.userns = userns.map(|fd| fd.as_raw_fd());
    plan.go_read = go_read.as_raw_fd();
    plan.go_write = go_write.as_raw_fd();
    let cloning =
        spawner::clone(lane, plan, report_write).map_err(os("clone a namespace holder"))?;
    let mut reports = Reports::new(report_read, "namespace holder");
    match reports.next("start")? {
        Report::Started => {}
        other => return Err(reports.unexpected(other, "start")),
    }
    drop(go_read);
    let pidfd = cloning.take_pidfd().ok_or_else(|| {
        Error::os(
            "take the pidfd of a namespace holder",
            std::io::ErrorKind::NotFound.into(),
        )
    })?;
    let taken = take(pidfd.as_fd());
    // A byte on its "go" pipe: the holder exits. (Not the pipe's end of
    // file: another holder cloned meanwhile, on the other spawner, holds a
    // copy of its write end until it exits, and this one of the other's.)
    let _ = rustix::io::write(&go_write, &[1]);
    drop(go_write);
    let released = reports.next("exit");
    let _ = sys::waitid_pidfd(pidfd.as_fd(), true);
    match released? {
        Report::Released { .. } => taken,
        other => Err(reports.unexpected(other, "exit")),
    }
}

#[cfg(test)]
mod tests {
    use super::identity;

    #[test]
    fn the_lab_maps_every_id_the_process_has_to_itself() {
        assert_eq!(
            identity("         0          0 4294967295\n"),
            "0 0 4294967295\n"
        );
        assert_eq!(identity("         0       1000          1\n"), "0 0 1\n");
        assert_eq!(identity("0 100 5\n10 200 1\n"), "0 0 5\n10 10 1\n");
    }
}
