//! The one place that holds the crate's `unsafe` code: thin, safe wrappers
//! around Linux system calls, and the code a cloned container runs between
//! `clone(2)` and `execve(2)`.
//!
//! Each wrapper takes `BorrowedFd`s rather than raw integers and maps the C
//! error convention to [`std::io::Result`].

use std::ffi::{CString, c_char, c_int, c_void};
use std::io;
use std::mem::{size_of, zeroed};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

fn check(ret: c_int) -> io::Result<c_int> {
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

/// Opens a netlink socket of `protocol` in the calling thread's network
/// namespace.
///
/// # References
/// `netlink(7)`
pub(crate) fn netlink_socket(protocol: c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket takes no pointers.
    let fd = check(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        )
    })?;
    // SAFETY: socket succeeded, so `fd` is open and ours alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // Ask the kernel for extended acks so errors carry its message, and for
    // acks that do not echo the whole request back.
    for opt in [libc::NETLINK_EXT_ACK, libc::NETLINK_CAP_ACK] {
        let one: c_int = 1;
        // SAFETY: the option value is a valid c_int of the given size.
        let _ = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_NETLINK,
                opt,
                (&raw const one).cast(),
                size_of::<c_int>() as libc::socklen_t,
            )
        };
    }
    Ok(fd)
}

/// Where a container's setup stopped, reported to the parent over a pipe
/// when a step between `clone` and `execve` fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Stage {
    /// Waiting for the parent to say the network is ready.
    Sync = 1,
    /// Joining an existing network namespace.
    JoinNetns,
    /// Making mount propagation private.
    MountPrivate,
    /// Mounting a fresh `/proc`.
    MountProc,
    /// Mounting a fresh `/sys`.
    MountSys,
    /// Setting the hostname.
    Hostname,
    /// Bringing `lo` up.
    Loopback,
    /// Giving `eth0` its address.
    Address,
    /// Adding the default route.
    Route,
    /// Connecting standard input and output, and inherited descriptors.
    Stdio,
    /// Waiting for `eth0` to be operationally up.
    Carrier,
    /// Executing the program.
    Exec,
}

impl Stage {
    /// Decodes a stage number written by a child.
    pub(crate) fn from_u32(n: u32) -> Option<Self> {
        const ALL: [Stage; 12] = [
            Stage::Sync,
            Stage::JoinNetns,
            Stage::MountPrivate,
            Stage::MountProc,
            Stage::MountSys,
            Stage::Hostname,
            Stage::Loopback,
            Stage::Address,
            Stage::Route,
            Stage::Stdio,
            Stage::Exec,
            Stage::Carrier,
        ];
        ALL.into_iter().find(|s| *s as u32 == n)
    }

    /// What the child was doing, for error messages.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Stage::Sync => "waiting for its network",
            Stage::JoinNetns => "joining the network namespace",
            Stage::MountPrivate => "making mount propagation private",
            Stage::MountProc => "mounting /proc",
            Stage::MountSys => "mounting /sys",
            Stage::Hostname => "setting the hostname",
            Stage::Loopback => "bringing lo up",
            Stage::Address => "configuring eth0",
            Stage::Route => "adding the default route",
            Stage::Stdio => "connecting standard streams and inherited descriptors",
            Stage::Exec => "executing the program",
            Stage::Carrier => "waiting for carrier on eth0 (30 s)",
        }
    }
}

/// The address a container's `eth0` gets, and its default route.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IfConfig {
    pub addr: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub broadcast: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

/// Everything a cloned child needs, prepared before the clone so that the
/// child only reads memory and makes system calls.
pub(crate) struct ChildPlan {
    pub program: CString,
    /// Owns the strings `argv_ptrs` points into.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    /// Owns the strings `envp_ptrs` points into.
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const c_char>,
    pub hostname: Vec<u8>,
    /// Descriptors to install as 0, 1 and 2; `None` keeps the parent's.
    pub stdio: [Option<RawFd>; 3],
    /// The read end of the pipe the parent writes "go" on.
    pub go_read: RawFd,
    /// The parent's end of that pipe, closed in the child at once.
    pub go_write: RawFd,
    /// Where the child reports a failed stage; close-on-exec.
    pub report_write: RawFd,
    /// A pidfd of the test process, readable once it has exited.
    pub parent: RawFd,
    /// A network namespace to join instead of a new one.
    pub join_netns: Option<RawFd>,
    /// The network configuration of a new namespace's `eth0`.
    pub net: Option<IfConfig>,
    /// Descriptors the program inherits (their close-on-exec flag is
    /// cleared in the child).
    pub keep: Vec<RawFd>,
}

// SAFETY: the raw pointers point into the heap buffers of the `CString`s the
// plan owns, which do not move when the plan does.
unsafe impl Send for ChildPlan {}

impl ChildPlan {
    /// A plan to execute `program` with `argv` and `envp`; descriptors and
    /// network are filled in by the caller.
    pub(crate) fn new(program: CString, argv: Vec<CString>, envp: Vec<CString>) -> Self {
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        Self {
            program,
            argv_ptrs: ptrs(&argv),
            envp_ptrs: ptrs(&envp),
            _argv: argv,
            _envp: envp,
            hostname: Vec::new(),
            stdio: [None; 3],
            go_read: -1,
            go_write: -1,
            report_write: -1,
            parent: -1,
            join_netns: None,
            net: None,
            keep: Vec::new(),
        }
    }
}

/// A process cloned into new namespaces: its pid and a pidfd for it.
pub(crate) struct Cloned {
    pub pid: u32,
    pub pidfd: OwnedFd,
}

/// Memory for a cloned child's stack, unmapped when dropped.
pub(crate) struct Stack {
    base: *mut c_void,
    len: usize,
}

impl Stack {
    /// Maps `len` bytes, the lowest page a guard.
    pub(crate) fn new(len: usize) -> io::Result<Stack> {
        // SAFETY: an anonymous private mapping; no pointer is passed in.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Stack { base, len };
        // SAFETY: the first page lies in the mapping just made.
        check(unsafe { libc::mprotect(base, 4096, libc::PROT_NONE) })?;
        Ok(stack)
    }

    fn top(&self) -> *mut c_void {
        // Stacks grow down; 16-byte aligned as the mapping is page-aligned.
        self.base.wrapping_byte_add(self.len)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Clones a child into new mount, PID, UTS and IPC namespaces (and a new
/// network namespace unless the plan joins one). The child runs
/// [`child_main`] on `stack`, which waits for the parent's "go" on
/// `plan.go_read`.
///
/// The child shares the caller's memory (`CLONE_VM`, as `posix_spawn`
/// does): nothing is copied, and its `execve` has nothing to tear down. So
/// the caller's thread must keep `plan` and `stack` alive, and make no
/// system call whose `errno` it reads (the child shares that thread's
/// thread-local block), until the child has executed its program or exited.
/// The caller's thread also becomes the child's parent: the child is killed
/// when that thread exits (`PR_SET_PDEATHSIG`).
///
/// # Safety
/// The caller must honour the above.
///
/// # References
/// `clone(2)`, `namespaces(7)`
pub(crate) unsafe fn clone_container(plan: &ChildPlan, stack: &Stack) -> io::Result<Cloned> {
    let mut flags = libc::CLONE_VM
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_PIDFD
        | libc::SIGCHLD;
    if plan.join_netns.is_none() {
        flags |= libc::CLONE_NEWNET;
    }
    extern "C" fn entry(plan: *mut c_void) -> c_int {
        // SAFETY: `plan` is the plan `clone_container` was given, which the
        // caller keeps alive until the child executes its program.
        unsafe { child_main(&*plan.cast::<ChildPlan>()) }
    }
    let mut pidfd: c_int = -1;
    // SAFETY: `stack` is a live mapping for the child's stack and `plan`
    // outlives the child's use of it (the caller's contract). The child only
    // reads the plan and makes system calls until execve or _exit, so no
    // lock held by another thread is ever touched, and it writes nothing of
    // ours but errno.
    let pid = unsafe {
        libc::clone(
            entry,
            stack.top(),
            flags,
            std::ptr::from_ref(plan).cast_mut().cast(),
            &raw mut pidfd,
        )
    };
    let pid = check(pid)?;
    Ok(Cloned {
        pid: pid as u32,
        // SAFETY: clone succeeded with CLONE_PIDFD, so `pidfd` is open and
        // ours alone.
        pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
    })
}

/// Blocks until the write ends of the pipe `fd` reads from are all closed
/// (the child executed its program or exited), retrying whatever happens:
/// no `errno` is read while a `CLONE_VM` child may write it.
pub(crate) fn await_close(fd: BorrowedFd<'_>) {
    let mut byte = 0u8;
    // SAFETY: reads into a local byte from a valid descriptor.
    while unsafe { libc::read(fd.as_raw_fd(), (&raw mut byte).cast(), 1) } != 0 {}
}

/// Reports `stage` and the current `errno` to the parent and exits.
///
/// # Safety
/// Async-signal-safe; for use in a cloned child only.
unsafe fn fail(plan: &ChildPlan, stage: Stage) -> ! {
    // SAFETY: errno location is thread-local and valid.
    let errno = unsafe { *libc::__errno_location() };
    let mut report = [0u8; 8];
    report[..4].copy_from_slice(&(stage as u32).to_ne_bytes());
    report[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: write and _exit are async-signal-safe; `report` is valid.
    unsafe {
        libc::write(plan.report_write, report.as_ptr().cast(), report.len());
        libc::_exit(127)
    }
}

/// What a bridged child reports, in place of a stage, once its network is
/// configured; it then waits for a second "go".
pub(crate) const CONFIGURED: u32 = 0;

/// Waits for a "go" byte from the parent; exits if the parent is gone.
///
/// # Safety
/// Async-signal-safe; for use in a cloned child only.
unsafe fn await_go(plan: &ChildPlan) {
    let mut go = 0u8;
    // SAFETY: read, _exit and errno on a descriptor and a local.
    unsafe {
        loop {
            match libc::read(plan.go_read, (&raw mut go).cast(), 1) {
                1 => return,
                0 => libc::_exit(1),
                _ if *libc::__errno_location() == libc::EINTR => continue,
                _ => fail(plan, Stage::Sync),
            }
        }
    }
}

/// The body of a cloned child.
///
/// # Safety
/// Runs in the child of a `clone` of a multithreaded process: it may only
/// make async-signal-safe calls on memory prepared before the clone (the
/// plan). It never returns.
unsafe fn child_main(plan: &ChildPlan) -> ! {
    // SAFETY: every call below is a plain system call on descriptors and
    // buffers the plan owns or on locals; none allocates or locks.
    unsafe {
        // Die with the thread that cloned us. If the whole test process
        // died before this took effect (the child may first run after the
        // parent wrote "go" and was killed), its pidfd says so.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        let mut parent = libc::pollfd {
            fd: plan.parent,
            events: libc::POLLIN,
            revents: 0,
        };
        if libc::poll(&mut parent, 1, 0) != 0 {
            libc::_exit(1);
        }
        libc::close(plan.go_write);
        // Everything that does not need eth0 happens while the parent
        // creates it.
        if let Some(fd) = plan.join_netns
            && libc::setns(fd, libc::CLONE_NEWNET) < 0
        {
            fail(plan, Stage::JoinNetns);
        }
        let none = std::ptr::null::<c_char>();
        if libc::mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) < 0
        {
            fail(plan, Stage::MountPrivate);
        }
        let fresh = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        if libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            fresh,
            std::ptr::null(),
        ) < 0
        {
            fail(plan, Stage::MountProc);
        }
        if libc::mount(
            c"sysfs".as_ptr(),
            c"/sys".as_ptr(),
            c"sysfs".as_ptr(),
            fresh | libc::MS_RDONLY,
            std::ptr::null(),
        ) < 0
        {
            fail(plan, Stage::MountSys);
        }
        if libc::sethostname(plan.hostname.as_ptr().cast(), plan.hostname.len()) < 0 {
            fail(plan, Stage::Hostname);
        }
        await_go(plan);
        if let Some(net) = &plan.net {
            configure_network(plan, net);
            // Tell the parent, which waits for the bridge port to forward,
            // and wait for it.
            let mut configured = [0u8; 8];
            configured[..4].copy_from_slice(&CONFIGURED.to_ne_bytes());
            libc::write(
                plan.report_write,
                configured.as_ptr().cast(),
                configured.len(),
            );
            await_go(plan);
        }
        for (target, fd) in plan.stdio.iter().enumerate() {
            let Some(fd) = *fd else { continue };
            let target = target as c_int;
            let ok = if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0) >= 0
            } else {
                libc::dup2(fd, target) >= 0
            };
            if !ok {
                fail(plan, Stage::Stdio);
            }
        }
        for &fd in &plan.keep {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                fail(plan, Stage::Stdio);
            }
        }
        // Undo what the test process set up for itself: blocked signals and
        // the ignored SIGPIPE that Rust programs start with.
        let mut set: libc::sigset_t = zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::execve(
            plan.program.as_ptr(),
            plan.argv_ptrs.as_ptr(),
            plan.envp_ptrs.as_ptr(),
        );
        fail(plan, Stage::Exec)
    }
}

/// The `struct rtentry` of `SIOCADDRT` (x86_64 and other LP64 layouts).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size and sockaddr has no
    // invalid bit patterns.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ifreq(name: &[u8]) -> libc::ifreq {
    // SAFETY: an all-zero ifreq is valid.
    let mut req: libc::ifreq = unsafe { zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name) {
        *dst = *src as c_char;
    }
    req
}

/// Brings `lo` and `eth0` up (without IPv6 duplicate address detection)
/// and gives `eth0` its address and default route, with the
/// classic interface ioctls (no parsing, no allocation).
///
/// # Safety
/// Async-signal-safe; for use in a cloned child only.
unsafe fn configure_network(plan: &ChildPlan, net: &IfConfig) {
    // SAFETY: plain system calls on locals.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            fail(plan, Stage::Loopback);
        }
        // IPv6 link-local addresses usable at once, without duplicate
        // address detection (best effort: IPv6 may be off).
        let dad = libc::open(
            c"/proc/sys/net/ipv6/conf/eth0/accept_dad".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if dad >= 0 {
            libc::write(dad, b"0".as_ptr().cast(), 1);
            libc::close(dad);
        }
        for (name, stage) in [(&b"lo"[..], Stage::Loopback), (b"eth0", Stage::Address)] {
            let mut link = ifreq(name);
            if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut link) < 0 {
                fail(plan, stage);
            }
            link.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(sock, libc::SIOCSIFFLAGS, &link) < 0 {
                fail(plan, stage);
            }
        }
        for (request, addr) in [
            (libc::SIOCSIFADDR, net.addr),
            (libc::SIOCSIFNETMASK, net.netmask),
            (libc::SIOCSIFBRDADDR, net.broadcast),
        ] {
            let mut eth = ifreq(b"eth0");
            eth.ifr_ifru.ifru_addr = sockaddr(addr);
            if libc::ioctl(sock, request, &eth) < 0 {
                fail(plan, Stage::Address);
            }
        }
        await_running(plan, sock);
        let mut route: RtEntry = zeroed();
        route.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
        route.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
        route.rt_gateway = sockaddr(net.gateway);
        route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        if libc::ioctl(sock, libc::SIOCADDRT, &route) < 0 {
            fail(plan, Stage::Route);
        }
        libc::close(sock);
    }
}

/// Waits until `eth0` is operationally up (`IFF_RUNNING`): the kernel
/// processes carrier changes asynchronously, and until then drops what the
/// link sends. Polls with growing pauses for at most 30 s.
///
/// # Safety
/// Async-signal-safe; for use in a cloned child only.
unsafe fn await_running(plan: &ChildPlan, sock: c_int) {
    // SAFETY: ioctl, clock_gettime and nanosleep on locals.
    unsafe {
        let mut start: libc::timespec = zeroed();
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut start);
        let mut pause_ns: libc::c_long = 20_000;
        loop {
            let mut eth = ifreq(b"eth0");
            if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut eth) < 0 {
                fail(plan, Stage::Carrier);
            }
            if eth.ifr_ifru.ifru_flags & libc::IFF_RUNNING as libc::c_short != 0 {
                return;
            }
            let mut now: libc::timespec = zeroed();
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now);
            if now.tv_sec - start.tv_sec > 30 {
                *libc::__errno_location() = libc::ETIMEDOUT;
                fail(plan, Stage::Carrier);
            }
            let pause = libc::timespec {
                tv_sec: 0,
                tv_nsec: pause_ns,
            };
            libc::nanosleep(&pause, std::ptr::null_mut());
            pause_ns = (pause_ns * 2).min(5_000_000);
        }
    }
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
pub(crate) unsafe fn fn_from_offset(offset: usize) -> fn() {
    let addr = (fn_anchor as *const () as usize).wrapping_add(offset);
    // SAFETY: per the contract, `addr` is the address of a `fn()` of this
    // executable, loaded at a different base.
    unsafe { std::mem::transmute::<usize, fn()>(addr) }
}

/// The distance of `f` from [`fn_anchor`], the same in every process that
/// runs this executable whatever address it is loaded at.
pub(crate) fn fn_offset(f: fn()) -> usize {
    (f as *const () as usize).wrapping_sub(fn_anchor as *const () as usize)
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
