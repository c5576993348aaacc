//! Anonymous network namespaces, held only by file descriptors of this
//! process, so that they vanish with it whatever way it ends.

use std::fs::File;
use std::os::fd::{BorrowedFd, OwnedFd};

use crate::kernel::sys;

/// How long a lab's or a container's setup may take.
pub(crate) const SETUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Creates a network namespace and runs `setup` inside it, on a thread of its
/// own that ends right after: no thread of the process is ever left in the
/// wrong namespace, even if `setup` panics. Sockets opened by `setup` stay in
/// the new namespace whichever thread uses them later.
///
/// Returns a descriptor of the namespace (it lives as long as the descriptor
/// or a process inside it) and what `setup` returned.
pub(crate) fn create<T: Send>(
    setup: impl FnOnce() -> crate::Result<T> + Send,
) -> crate::Result<(OwnedFd, T)> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("netns-harness-netns".into())
            .spawn_scoped(scope, || {
                sys::unshare_netns().map_err(|e| match e.raw_os_error() {
                    Some(libc::EPERM) => crate::kernel::rootless::unsupported(&e),
                    _ => crate::Error::os("create a network namespace", e),
                })?;
                let fd = File::open("/proc/thread-self/ns/net")
                    .map_err(|e| crate::Error::os("open the new network namespace", e))?;
                Ok((OwnedFd::from(fd), setup()?))
            })
            .map_err(|e| crate::Error::os("start a thread to create a network namespace", e))?;
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs `f` inside the existing network namespace `netns`, on a thread of
/// its own that ends right after (see [`create`]).
pub(crate) fn run_in<T: Send>(
    netns: BorrowedFd<'_>,
    f: impl FnOnce() -> crate::Result<T> + Send,
) -> crate::Result<T> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("netns-harness-netns".into())
            .spawn_scoped(scope, || {
                sys::enter_netns(netns)
                    .map_err(|e| crate::Error::os("enter the lab's network namespace", e))?;
                f()
            })
            .map_err(|e| crate::Error::os("start a thread to enter a network namespace", e))?
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The network namespace of the process `pidfd` refers to: from the pidfd
/// itself (Linux 6.11), or else by entering it through the pidfd on a
/// thread of its own; never through the process's pid.
pub(crate) fn of_process(pidfd: BorrowedFd<'_>, name: &str) -> crate::Result<OwnedFd> {
    let failed = |e| crate::Error::os(format!("open the network namespace of {name}"), e);
    match sys::pidfd_netns(pidfd) {
        Ok(netns) => Ok(netns),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)) => {
            run_in(pidfd, || {
                File::open("/proc/thread-self/ns/net")
                    .map(OwnedFd::from)
                    .map_err(failed)
            })
        }
        Err(e) => Err(failed(e)),
    }
}
