//! Thin, safe wrappers around Linux system calls for the test process's
//! side (the code a cloned container runs before `execve(2)` is in
//! [`crate::kernel::prexec`]).
//!
//! Every call goes through rustix (typed flags, `BorrowedFd`s, errors as
//! values) except where it has no public equivalent: `pthread_sigmask`
//! (rustix keeps its signal-mask calls private) and `clone(2)` with a stack
//! and a function (in the spawner); those use libc. Netlink sockets are
//! `netlink-sys`'s (see `netlink`).

use std::ffi::c_int;
use std::io;
use std::mem::zeroed;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, poll};
use rustix::io::{Errno, FdFlags};
use rustix::ioctl::{Ioctl, IoctlOutput, Opcode, ioctl};
use rustix::process::{PidfdFlags, Signal, WaitId, WaitIdOptions};
use rustix::thread::{LinkNameSpaceType, UnshareFlags};

/// Maps the C convention (negative: see errno) to a result.
pub(crate) fn check(ret: c_int) -> io::Result<c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Moves the calling thread into a new network namespace.
///
/// # References
/// `unshare(2)`
pub(crate) fn unshare_netns() -> io::Result<()> {
    // SAFETY: a new network namespace changes nothing this thread shares
    // with others (no CLONE_FILES, CLONE_FS or CLONE_SYSVSEM).
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }.map_err(Into::into)
}

/// Moves the calling thread into the network namespace `fd` refers to (a
/// namespace descriptor, or a pidfd: the process's).
///
/// # References
/// `setns(2)`
pub(crate) fn enter_netns(fd: BorrowedFd<'_>) -> io::Result<()> {
    rustix::thread::move_into_link_name_space(fd, Some(LinkNameSpaceType::Network))
        .map_err(Into::into)
}

/// Moves the process, which must have a single thread, into the user
/// namespace `fd` refers to.
///
/// # References
/// `setns(2)`, `user_namespaces(7)`
pub(crate) fn join_user_namespace(fd: BorrowedFd<'_>) -> io::Result<()> {
    rustix::thread::move_into_link_name_space(fd, Some(LinkNameSpaceType::User)).map_err(Into::into)
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
/// `netdevice(7)` (`SIOCGIFINDEX`)
pub(crate) fn if_index(name: &str) -> io::Result<u32> {
    let socket = rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    Ok(rustix::net::netdevice::name_to_index(&socket, name)?)
}

/// Sets the close-on-exec flag of `fd`.
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::io::fcntl_setfd(fd, FdFlags::CLOEXEC)?)
}

/// Whether `fd` is an open descriptor.
pub(crate) fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: the borrow only lives for the F_GETFD call, which only
    // inspects the descriptor table (EBADF if nothing is open there).
    rustix::io::fcntl_getfd(unsafe { BorrowedFd::borrow_raw(fd) }).is_ok()
}

/// A raw socket of `family` (IPv4 or IPv6) and `protocol` (an `IPPROTO_*` number) in the calling
/// thread's namespace, opened close-on-exec (so no container cloned by
/// another thread meanwhile inherits it). Reads of an IPv4 one return
/// whole datagrams, header included; of an IPv6 one, what follows the
/// header.
///
/// # References
/// `raw(7)`, `ipv6(7)`
pub(crate) fn raw_socket(family: rustix::net::AddressFamily, protocol: u8) -> io::Result<OwnedFd> {
    use rustix::net::{Protocol, SocketFlags, SocketType, socket_with};
    let protocol = std::num::NonZeroU32::new(u32::from(protocol)).map(Protocol::from_raw);
    Ok(socket_with(
        family,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        protocol,
    )?)
}

/// A pipe whose two ends are close-on-exec: `(read, write)`.
///
/// # References
/// `pipe2(2)`
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// The effective user id of the process.
pub(crate) fn geteuid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The real user and group ids of the process.
pub(crate) fn real_ids() -> (u32, u32) {
    (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    )
}

/// A pidfd of process `pid`.
///
/// # References
/// `pidfd_open(2)`
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid.cast_signed()).ok_or(Errno::SRCH)?;
    Ok(rustix::process::pidfd_open(pid, PidfdFlags::empty())?)
}

/// Lets `fd` be inherited across `execve(2)`.
pub(crate) fn clear_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::io::fcntl_setfd(fd, FdFlags::empty())?)
}

/// Marks every descriptor from `first` on close-on-exec.
///
/// # References
/// `close_range(2)` with `CLOSE_RANGE_CLOEXEC` (Linux 5.11)
pub(crate) fn cloexec_from(first: u32) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: with CLOSE_RANGE_CLOEXEC the call only sets a flag on the
    // process's descriptors; it closes none, so no owner loses its own.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A pidfd of the calling process.
///
/// # References
/// `pidfd_open(2)`
pub(crate) fn pidfd_self() -> io::Result<OwnedFd> {
    Ok(rustix::process::pidfd_open(
        rustix::process::getpid(),
        PidfdFlags::empty(),
    )?)
}

/// Kills (SIGKILL) the process `pidfd` refers to; a process that already
/// exited is no error.
///
/// # References
/// `pidfd_send_signal(2)`
pub(crate) fn pidfd_kill(pidfd: BorrowedFd<'_>) -> io::Result<()> {
    match rustix::process::pidfd_send_signal(pidfd, Signal::KILL) {
        Ok(()) | Err(Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Reaps the child `pidfd` refers to. Returns `None` when `block` is false
/// and the child is still running.
///
/// # References
/// `waitid(2)` with `P_PIDFD`
pub(crate) fn waitid_pidfd(pidfd: BorrowedFd<'_>, block: bool) -> io::Result<Option<ExitStatus>> {
    let options = if block {
        WaitIdOptions::EXITED
    } else {
        WaitIdOptions::EXITED | WaitIdOptions::NOHANG
    };
    loop {
        match rustix::process::waitid(WaitId::PidFd(pidfd), options) {
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
            Ok(None) => return Ok(None),
            Ok(Some(status)) => {
                let raw = if let Some(code) = status.exit_status() {
                    (code & 0xff) << 8
                } else if let Some(signal) = status.terminating_signal() {
                    signal | if status.dumped() { 0x80 } else { 0 }
                } else {
                    // A stop or a continuation, which WEXITED does not report.
                    continue;
                };
                return Ok(Some(ExitStatus::from_raw(raw)));
            }
        }
    }
}

/// Waits until `fd` is readable (or its peer closed), for at most `timeout`
/// (forever with `None`). Returns whether it became readable.
///
/// # References
/// `poll(2)`
pub(crate) fn poll_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    Ok(poll_fds(&[fd], timeout)?.is_some())
}

/// Waits until one of `fds` is readable, for at most `timeout`. Returns
/// the index of the first readable one, or `None` on timeout. (A closed
/// descriptor is reported as ready, and its read then fails.)
///
/// # References
/// `poll(2)`
pub(crate) fn poll_any(fds: &[RawFd], timeout: Duration) -> io::Result<Option<usize>> {
    // SAFETY: the caller's descriptors are open for the duration of the call.
    let fds: Vec<BorrowedFd<'_>> = fds
        .iter()
        .map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) })
        .collect();
    poll_fds(&fds, Some(timeout))
}

fn poll_fds(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<Option<usize>> {
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let mut pfds: Vec<PollFd<'_>> = fds
            .iter()
            .map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::IN))
            .collect();
        let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
        let timespec = left.map(|left| rustix::time::Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        });
        match poll(&mut pfds, timespec.as_ref()) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(pfds.iter().position(|p| !p.revents().is_empty())),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
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

const PIDFD_GET_NET_NAMESPACE: Opcode = libc::PIDFD_GET_NET_NAMESPACE as Opcode;
const PIDFD_GET_USER_NAMESPACE: Opcode = libc::PIDFD_GET_USER_NAMESPACE as Opcode;

/// A `PIDFD_GET_*_NAMESPACE` request: no argument, a new descriptor back.
struct GetNamespace<const OP: Opcode>;

// SAFETY: the request reads and writes no memory of ours (its argument is
// null), and its result, on success, is a descriptor it just opened.
unsafe impl<const OP: Opcode> Ioctl for GetNamespace<OP> {
    type Output = OwnedFd;
    const IS_MUTATING: bool = false;

    fn opcode(&self) -> Opcode {
        OP
    }

    fn as_ptr(&mut self) -> *mut std::ffi::c_void {
        std::ptr::null_mut()
    }

    unsafe fn output_from_ptr(
        out: IoctlOutput,
        _: *mut std::ffi::c_void,
    ) -> rustix::io::Result<OwnedFd> {
        // SAFETY: the ioctl succeeded, so `out` is a descriptor it opened
        // for us alone.
        Ok(unsafe { OwnedFd::from_raw_fd(out) })
    }
}

/// A namespace of the process `pidfd` refers to, by the pidfd ioctl `OP`.
fn pidfd_namespace<const OP: Opcode>(pidfd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: `OP` is one of the PIDFD_GET_*_NAMESPACE requests (see
    // `GetNamespace`).
    Ok(unsafe { ioctl(pidfd, GetNamespace::<OP>) }?)
}

/// The network namespace of the process `pidfd` refers to, from its pidfd
/// (`PIDFD_GET_NET_NAMESPACE`, Linux 6.11), never through its pid.
///
/// # References
/// `pidfd_open(2)`, `PIDFD_GET_NET_NAMESPACE` in `linux/pidfd.h`
pub(crate) fn pidfd_netns(pidfd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    pidfd_namespace::<PIDFD_GET_NET_NAMESPACE>(pidfd)
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
    match pidfd_namespace::<PIDFD_GET_USER_NAMESPACE>(pidfd) {
        Ok(fd) => Ok(fd),
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
    // SAFETY: called while the process has one thread, before main: nothing
    // shares this thread's files or filesystem information.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER) }?;
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

/// Lowers the calling thread's scheduling priority (and that of what it
/// clones) to nice 10 unless it is lower already, best effort: on a busy
/// CPU it works mostly where others leave room, yet fast enough that a
/// kernel lock it holds is not held for long.
pub(crate) fn lower_priority() {
    // On Linux the nice value is a thread's: `None` is the calling thread.
    if let Ok(nice) = rustix::process::getpriority_process(None)
        && nice < 10
    {
        let _ = rustix::process::setpriority_process(None, 10);
    }
}
