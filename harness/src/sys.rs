//! Thin, safe wrappers around Linux system calls for the test process's
//! side (the code a cloned container runs before `execve(2)` is in
//! [`crate::prexec`]).
//!
//! Each wrapper takes `BorrowedFd`s rather than raw integers and maps the C
//! error convention to [`std::io::Result`].

use std::ffi::{CString, c_int, c_void};
use std::io;
use std::mem::zeroed;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

/// Maps the C convention (negative: see errno) to a result.
pub(crate) fn check(ret: c_int) -> io::Result<c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Moves the calling thread into new namespaces.
///
/// # References
/// `unshare(2)`
pub(crate) fn unshare(flags: c_int) -> io::Result<()> {
    // SAFETY: unshare takes no pointers.
    check(unsafe { libc::unshare(flags) }).map(drop)
}

/// Moves the calling thread into the namespace `fd` refers to.
///
/// # References
/// `setns(2)`
pub(crate) fn setns(fd: BorrowedFd<'_>, nstype: c_int) -> io::Result<()> {
    // SAFETY: the descriptor is valid for the duration of the borrow.
    check(unsafe { libc::setns(fd.as_raw_fd(), nstype) }).map(drop)
}

/// Takes ownership of a descriptor this process inherited.
///
/// # Safety
/// `fd` must be open and owned by nothing else in the process.
pub(crate) unsafe fn adopt_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: forwarded to the caller.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The index of interface `name` in the calling thread's network namespace.
///
/// # References
/// `if_nametoindex(3)`
pub(crate) fn if_index(name: &str) -> io::Result<u32> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `name` is a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        index => Ok(index),
    }
}

/// Sets the close-on-exec flag of `fd`.
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_SETFD only changes the descriptor's flags.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) }).map(drop)
}

/// Whether `fd` is an open descriptor.
pub(crate) fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only inspects the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// A pipe whose two ends are close-on-exec: `(read, write)`.
///
/// # References
/// `pipe2(2)`
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both descriptors are open and ours alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The effective user id of the process.
pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail and takes no arguments.
    unsafe { libc::geteuid() }
}

/// The real user and group ids of the process.
pub(crate) fn real_ids() -> (u32, u32) {
    // SAFETY: getuid and getgid cannot fail and take no arguments.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// A pidfd of the calling process.
///
/// # References
/// `pidfd_open(2)`
pub(crate) fn pidfd_self() -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes no pointers.
    let fd = check_long(unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) })?;
    // SAFETY: pidfd_open succeeded, so `fd` is open and ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `signal` to the process `pidfd` refers to.
///
/// # References
/// `pidfd_send_signal(2)`
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: c_int) -> io::Result<()> {
    // SAFETY: a null siginfo is allowed and the descriptor is valid.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<c_void>(),
            0,
        )
    };
    check_long(ret).map(drop)
}

/// Reaps the child `pidfd` refers to. Returns `None` when `block` is false
/// and the child is still running.
///
/// # References
/// `waitid(2)` with `P_PIDFD`
pub(crate) fn waitid_pidfd(pidfd: BorrowedFd<'_>, block: bool) -> io::Result<Option<ExitStatus>> {
    let flags = libc::WEXITED | if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value.
        let mut info: libc::siginfo_t = unsafe { zeroed() };
        // SAFETY: `info` is a valid siginfo_t for waitid to fill.
        let ret = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                flags,
            )
        };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        // SAFETY: waitid filled `info`; si_pid is 0 only with WNOHANG and no
        // state change, and si_status is valid for CLD_* codes.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        let raw = match info.si_code {
            libc::CLD_EXITED => (status & 0xff) << 8,
            libc::CLD_DUMPED => status | 0x80,
            _ => status,
        };
        return Ok(Some(ExitStatus::from_raw(raw)));
    }
}

/// Waits until `fd` is readable (or its peer closed), for at most `timeout`
/// (forever with `None`). Returns whether it became readable.
///
/// # References
/// `poll(2)`
pub(crate) fn poll_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    let ms = timeout.map_or(-1, |t| {
        c_int::try_from(t.as_millis().max(u128::from(!t.is_zero()))).unwrap_or(c_int::MAX)
    });
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is one valid pollfd.
        let ret = unsafe { libc::poll(&mut pfd, 1, ms) };
        match check(ret) {
            Ok(n) => return Ok(n > 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Waits until one of `fds` is readable, for at most `timeout`. Returns
/// the index of the first readable one, or `None` on timeout. (A closed
/// descriptor is reported as ready, and its read then fails.)
///
/// # References
/// `poll(2)`
pub(crate) fn poll_any(fds: &[RawFd], timeout: Duration) -> io::Result<Option<usize>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = c_int::try_from(timeout.as_millis().max(1)).unwrap_or(c_int::MAX);
    loop {
        // SAFETY: `pfds` is a valid array of pollfd of the given length.
        let ret = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        match check(ret) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(pfds.iter().position(|p| p.revents != 0)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Blocks every signal the C library lets a thread block, for the calling
/// thread.
///
/// # References
/// `pthread_sigmask(3)`
pub(crate) fn block_signals() -> io::Result<()> {
    // SAFETY: sigfillset initializes the set; pthread_sigmask reads it.
    let ret = unsafe {
        let mut all: libc::sigset_t = zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut())
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(ret))
    }
}

/// The network namespace of the process `pidfd` refers to, from its pidfd
/// (`PIDFD_GET_NET_NAMESPACE`, Linux 6.11), never through its pid.
///
/// # References
/// `pidfd_open(2)`, `PIDFD_GET_NET_NAMESPACE` in `linux/pidfd.h`
pub(crate) fn pidfd_netns(pidfd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: the ioctl takes no argument and returns a new descriptor.
    let fd = check(unsafe { libc::ioctl(pidfd.as_raw_fd(), libc::PIDFD_GET_NET_NAMESPACE, 0) })?;
    // SAFETY: the ioctl succeeded, so `fd` is open and ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The pid (in this process's PID namespace) of the process `pidfd`
/// refers to, from `/proc/self/fdinfo`.
///
/// # References
/// `pidfd_open(2)`, `proc_pid_fdinfo(5)`
pub(crate) fn pidfd_pid(pidfd: BorrowedFd<'_>) -> io::Result<u32> {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))?
        .lines()
        .find_map(|line| line.strip_prefix("Pid:"))
        .and_then(|pid| pid.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no pid in the pidfd's fdinfo"))
}

/// The user namespace of the process `pidfd` refers to (whose pid is
/// `pid`): from the pidfd (`PIDFD_GET_USER_NAMESPACE`, Linux 6.11), else
/// from `/proc/<pid>/ns/user` (the caller must hold the process unreaped,
/// so that the pid names it).
///
/// # References
/// `PIDFD_GET_USER_NAMESPACE` in `linux/pidfd.h`
pub(crate) fn pidfd_userns(pidfd: BorrowedFd<'_>, pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: the ioctl takes no argument and returns a new descriptor.
    match check(unsafe { libc::ioctl(pidfd.as_raw_fd(), libc::PIDFD_GET_USER_NAMESPACE, 0) }) {
        // SAFETY: the ioctl succeeded, so `fd` is open and ours alone.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)) => {
            std::fs::File::open(format!("/proc/{pid}/ns/user")).map(OwnedFd::from)
        }
        Err(e) => Err(e),
    }
}

/// Creates (or truncates) `path` for writing, close-on-exec and without
/// following a symbolic link there (`O_NOFOLLOW`).
///
/// # References
/// `open(2)`
pub(crate) fn create_file(path: &std::path::Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o644)
        .open(path)
}

/// Enters a new user namespace in which the caller's user and group are
/// root. Only works while the process has a single thread.
///
/// # References
/// `user_namespaces(7)`
pub(crate) fn enter_user_namespace() -> io::Result<()> {
    let (uid, gid) = real_ids();
    unshare(libc::CLONE_NEWUSER)?;
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    std::fs::write("/proc/self/gid_map", format!("0 {gid} 1"))?;
    Ok(())
}

/// Registers `f` to run before `main`, as the dynamic loader runs every
/// `.init_array` entry of the executable.
macro_rules! before_main {
    ($f:path) => {
        #[used]
        #[unsafe(link_section = ".init_array")]
        static BEFORE_MAIN: extern "C" fn() = {
            extern "C" fn call() {
                $f()
            }
            call
        };
    };
}
pub(crate) use before_main;

/// Turns an offset from [`fn_anchor`] back into the function it was taken
/// from.
///
/// # Safety
/// `offset` must come from [`fn_offset`] in a process running the same
/// executable file.
pub(crate) unsafe fn fn_from_offset(offset: u64) -> fn() {
    let addr = (fn_anchor as *const () as usize).wrapping_add(offset as usize);
    // SAFETY: per the contract, `addr` is the address of a `fn()` of this
    // executable, loaded at a different base.
    unsafe { std::mem::transmute::<usize, fn()>(addr) }
}

/// The distance of `f` from [`fn_anchor`], the same in every process that
/// runs this executable whatever address it is loaded at.
pub(crate) fn fn_offset(f: fn()) -> u64 {
    (f as *const () as usize).wrapping_sub(fn_anchor as *const () as usize) as u64
}

/// A fixed point of the executable that function offsets are measured from.
#[inline(never)]
fn fn_anchor() {}

/// Removes a variable from the environment.
///
/// # Safety
/// No other thread may read or write the environment at the same time.
pub(crate) unsafe fn remove_env(key: &str) {
    // SAFETY: forwarded to the caller.
    unsafe { std::env::remove_var(key) }
}
