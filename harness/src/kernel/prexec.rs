//! The program a cloned container runs between `clone(2)` and `execve(2)`,
//! and the reports it sends its parent on the way.
//!
//! The child shares the test process's memory (`CLONE_VM`) and the spawner
//! thread's thread pointer until it executes its program, so it only makes
//! raw system calls through rustix's `linux_raw` backend (no `errno`, no
//! glibc state such as cancellation fields, no allocation, no lock), on
//! memory prepared before the clone: the [`ChildPlan`]. The calls rustix
//! does not offer publicly (`close_range`, `rt_sigaction`,
//! `rt_sigprocmask`, `execve` and `exit_group`) are issued with inline
//! assembly in [`raw`].
//!
//! Each step is a small function that returns the [`Stage`] it failed at;
//! [`child_main`] sends that to the parent as a [`Report`] and exits.

use std::convert::Infallible;
use std::ffi::{CString, c_char};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::io::{Errno, FdFlags};
use rustix::mount::{MountFlags, MountPropagationFlags};
use rustix::thread::{LinkNameSpaceType, UnshareFlags};
use rustix::time::Timespec;

use crate::common::protocol::{Report, Stage};

mod fs;
mod net;
mod raw;
pub(crate) use fs::{
    Carried, Fresh, FsPlan, MAX_CARRIED, MAX_PASSTHROUGH, NewRoot, OverlayTree, PrivateFile,
    Symlink, TreeDir,
};
use net::*;

/// The addresses a container's `eth0` gets, and its default routes: of
/// each family its lab carries.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IfConfig {
    pub v4: Option<V4Config>,
    pub v6: Option<V6Config>,
    /// A hardware address to give `eth0` before it comes up, when its
    /// veth was made without one.
    pub mac: Option<[u8; 6]>,
}

/// `eth0`'s IPv4 address and default route.
#[derive(Clone, Copy, Debug)]
pub(crate) struct V4Config {
    pub addr: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub broadcast: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

/// `eth0`'s IPv6 address and default route.
#[derive(Clone, Copy, Debug)]
pub(crate) struct V6Config {
    pub addr: Ipv6Addr,
    pub prefix: u8,
    pub gateway: Ipv6Addr,
}

/// Everything a cloned child needs, prepared before the clone so that the
/// child only reads memory and makes system calls.
pub(crate) struct ChildPlan {
    pub program: CString,
    /// The program, opened: executed through this descriptor
    /// (`execveat(2)`) instead of `program`'s path, which the container's
    /// new root may not have (the test binary, for a function).
    pub program_fd: Option<OwnedFd>,
    /// Owns the strings `argv_ptrs` points into.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    /// Owns the strings `envp_ptrs` points into.
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const c_char>,
    /// The hostname, also the NIS domain name.
    pub hostname: Vec<u8>,
    /// The filesystem to make; `None` shares the host's.
    pub fs: Option<FsPlan>,
    /// Descriptors to install as 0, 1 and 2; `None` keeps the parent's.
    pub stdio: [Option<RawFd>; 3],
    /// The read end of the pipe the parent writes "go" on.
    pub go_read: RawFd,
    /// The parent's end of that pipe, closed in the child at once.
    pub go_write: RawFd,
    /// Where the child sends its [`Report`]s; close-on-exec.
    pub report_write: RawFd,
    /// A pidfd of the test process, readable once it has exited.
    pub parent: RawFd,
    /// A network namespace to join instead of a new one.
    pub join_netns: Option<RawFd>,
    /// The network configuration of a new namespace's `eth0`.
    pub net: Option<IfConfig>,
    /// Descriptors the program inherits besides its standard streams; all
    /// others are closed at `execve`.
    pub keep: Vec<RawFd>,
    /// A user namespace to join once `/proc` is mounted; the child's other
    /// namespaces are then created in it, and so owned by it.
    pub userns: Option<RawFd>,
    /// What the child is for.
    pub role: Role,
}

/// What a cloned child is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// A container: its namespaces, mounts and network, then its program.
    Container,
    /// A process that holds a new namespace until its parent took it: a new
    /// user namespace (`new_user`), or else a network namespace made in
    /// the plan's user namespace.
    Holder {
        /// Whether it is cloned into a new user namespace.
        new_user: bool,
    },
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
            program_fd: None,
            argv_ptrs: ptrs(&argv),
            envp_ptrs: ptrs(&envp),
            _argv: argv,
            _envp: envp,
            hostname: Vec::new(),
            fs: None,
            stdio: [None; 3],
            go_read: -1,
            go_write: -1,
            report_write: -1,
            parent: -1,
            join_netns: None,
            net: None,
            keep: Vec::new(),
            userns: None,
            role: Role::Container,
        }
    }

    /// A plan for a [`Role::Holder`], which executes nothing.
    pub(crate) fn holder(new_user: bool) -> Self {
        Self {
            role: Role::Holder { new_user },
            ..Self::new(CString::default(), Vec::new(), Vec::new())
        }
    }

    /// The namespaces `clone(2)` creates for this child. A container that
    /// joins a user namespace gets only its PID and mount namespaces at
    /// the clone (so that it can mount `/proc` with the cloner's
    /// privileges), and creates the others once it joined.
    pub(crate) fn clone_namespaces(&self) -> libc::c_int {
        match (self.role, self.userns) {
            (Role::Holder { new_user: true }, _) => libc::CLONE_NEWUSER,
            (Role::Holder { new_user: false }, _) => 0,
            (Role::Container, Some(_)) => libc::CLONE_NEWPID | libc::CLONE_NEWNS,
            (Role::Container, None) => {
                let net = if self.join_netns.is_some() {
                    0
                } else {
                    libc::CLONE_NEWNET
                };
                libc::CLONE_NEWNS
                    | libc::CLONE_NEWPID
                    | libc::CLONE_NEWUTS
                    | libc::CLONE_NEWIPC
                    | net
            }
        }
    }
}

/// A failed step: where, and the kernel's error.
struct Failure(Stage, Errno);

trait At<T> {
    /// Names the stage of an error.
    fn at(self, stage: Stage) -> Result<T, Failure>;
}

impl<T> At<T> for rustix::io::Result<T> {
    fn at(self, stage: Stage) -> Result<T, Failure> {
        self.map_err(|e| Failure(stage, e))
    }
}

/// A descriptor of the plan, valid in the child until it executes.
fn fd(raw: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the plan's descriptors were open at the clone, and the child
    // closes none of them before `execve` (it closes `go_write`, which it
    // never uses afterwards).
    unsafe { BorrowedFd::borrow_raw(raw) }
}

/// Sends `report` to the parent (best effort: a parent that stopped
/// listening learns the rest from the pidfd).
fn send(plan: &ChildPlan, report: Report) {
    let _ = rustix::io::write(fd(plan.report_write), &report.encode());
}

/// The body of a cloned child: runs the plan's steps, then executes its
/// program; on a failed step, reports it and exits with 127.
///
/// # Safety
/// Runs in a `CLONE_VM` child of a multithreaded process, on the stack the
/// spawner made for it: `plan` must stay alive and unchanged until the
/// child executes its program or exits.
pub(crate) unsafe fn child_main(plan: &ChildPlan) -> ! {
    let Err(Failure(stage, errno)) = run(plan);
    send(
        plan,
        Report::Failed {
            stage,
            errno: errno.raw_os_error(),
        },
    );
    raw::exit_group(127)
}

fn run(plan: &ChildPlan) -> Result<Infallible, Failure> {
    arm_parent_death(plan)?;
    if let Role::Holder { new_user } = plan.role {
        return hold(plan, new_user);
    }
    if let Some(userns) = plan.userns {
        // /proc first, with the cloner's privileges over the new PID
        // namespace; the mount namespace made after joining copies it
        // locked to the host's /proc below it, so it cannot be unmounted.
        mount_private()?;
        mount_proc()?;
        join_user_namespace(userns)?;
        let net = if plan.join_netns.is_some() {
            UnshareFlags::empty()
        } else {
            UnshareFlags::NEWNET
        };
        unshare(UnshareFlags::NEWNS | UnshareFlags::NEWUTS | UnshareFlags::NEWIPC | net)?;
    }
    send(plan, Report::Started);
    // SAFETY: the parent's copy of the "go" pipe's write end; the child
    // never uses it, and nothing else of the child owns it.
    unsafe { rustix::io::close(plan.go_write) };
    // Everything that does not need eth0 happens while the parent creates it.
    if let Some(netns) = plan.join_netns {
        rustix::thread::move_into_link_name_space(fd(netns), Some(LinkNameSpaceType::Network))
            .at(Stage::JoinNetns)?;
    }
    if plan.userns.is_none() {
        mount_private()?;
        mount_proc()?;
    }
    mount_sys()?;
    if let Some(fs) = &plan.fs {
        fs::make(fs)?;
    }
    rustix::system::sethostname(&plan.hostname).at(Stage::Hostname)?;
    rustix::system::setdomainname(&plan.hostname).at(Stage::Domainname)?;
    await_go(plan)?;
    if let Some(net) = &plan.net {
        configure_network(net)?;
        // The parent waits for the bridge port to forward, then says go.
        send(plan, Report::Configured);
        await_go(plan)?;
    }
    connect_stdio(plan)?;
    close_inherited(plan)?;
    reset_signals()?;
    Err(exec(plan))
}

/// A holder's life: make its network namespace in the plan's user
/// namespace (unless it was cloned into a new user namespace), say so, and
/// exit once the parent took what it needed.
fn hold(plan: &ChildPlan, new_user: bool) -> Result<Infallible, Failure> {
    if !new_user && let Some(userns) = plan.userns {
        join_user_namespace(userns)?;
        unshare(UnshareFlags::NEWNET)?;
    }
    send(plan, Report::Started);
    // SAFETY: as in `run`.
    unsafe { rustix::io::close(plan.go_write) };
    await_go(plan)?;
    raw::exit_group(0)
}

/// Moves the child into new namespaces.
fn unshare(flags: UnshareFlags) -> Result<(), Failure> {
    // SAFETY: only namespace flags: the child shares no file table or
    // filesystem information with anyone (no CLONE_FILES, no CLONE_FS).
    unsafe { rustix::thread::unshare_unsafe(flags) }.at(Stage::Unshare)
}

fn join_user_namespace(userns: RawFd) -> Result<(), Failure> {
    rustix::thread::move_into_link_name_space(fd(userns), Some(LinkNameSpaceType::User))
        .at(Stage::JoinUserns)
}

/// Dies with the spawner thread (`PR_SET_PDEATHSIG`), and exits at once if
/// the whole test process already died before that took effect (the child
/// may first run after its parent was killed).
fn arm_parent_death(plan: &ChildPlan) -> Result<(), Failure> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .at(Stage::ParentDeath)?;
    let mut parent = [PollFd::from_borrowed_fd(fd(plan.parent), PollFlags::IN)];
    if poll(&mut parent, Some(&Timespec::default())).at(Stage::ParentDeath)? != 0 {
        raw::exit_group(1);
    }
    Ok(())
}

/// Waits for a "go" byte from the parent; exits if the parent gave up.
fn await_go(plan: &ChildPlan) -> Result<(), Failure> {
    let mut go = [0u8; 1];
    loop {
        match rustix::io::read(fd(plan.go_read), &mut go) {
            Ok(1) => return Ok(()),
            Ok(_) => raw::exit_group(1),
            Err(Errno::INTR) => {}
            Err(e) => return Err(Failure(Stage::Sync, e)),
        }
    }
}

/// Makes mount propagation private: nothing the child mounts reaches the
/// host.
fn mount_private() -> Result<(), Failure> {
    rustix::mount::mount_change(
        c"/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .at(Stage::MountPrivate)
}

const FRESH: MountFlags = MountFlags::NOSUID
    .union(MountFlags::NODEV)
    .union(MountFlags::NOEXEC);

/// Mounts a `/proc` of the child's PID namespace.
fn mount_proc() -> Result<(), Failure> {
    rustix::mount::mount(c"proc", c"/proc", c"proc", FRESH, None).at(Stage::MountProc)
}

/// Mounts a read-only `/sys` of the child's network namespace.
fn mount_sys() -> Result<(), Failure> {
    rustix::mount::mount(
        c"sysfs",
        c"/sys",
        c"sysfs",
        FRESH | MountFlags::RDONLY,
        None,
    )
    .at(Stage::MountSys)
}

/// Installs the plan's standard streams (without close-on-exec).
fn connect_stdio(plan: &ChildPlan) -> Result<(), Failure> {
    let dups = [
        rustix::stdio::dup2_stdin::<BorrowedFd<'_>>,
        rustix::stdio::dup2_stdout,
        rustix::stdio::dup2_stderr,
    ];
    for (target, (source, dup)) in plan.stdio.iter().zip(dups).enumerate() {
        match *source {
            None => {}
            Some(raw) if raw as usize == target => {
                rustix::io::fcntl_setfd(fd(raw), FdFlags::empty()).at(Stage::Stdio)?;
            }
            Some(raw) => dup(fd(raw)).at(Stage::Stdio)?,
        }
    }
    Ok(())
}

/// Marks every descriptor above the standard streams close-on-exec, then
/// clears the flag on those the plan keeps: the program inherits nothing
/// else of the test process (packet sockets, pipes, namespaces of other
/// tests), whoever opened it and however.
fn close_inherited(plan: &ChildPlan) -> Result<(), Failure> {
    const CLOSE_RANGE_CLOEXEC: usize = 1 << 2;
    // SAFETY: close_range only changes descriptor flags of the child's own
    // descriptor table (the child was cloned without CLONE_FILES).
    let ret = unsafe {
        raw::syscall4(
            libc::SYS_close_range,
            [3, u32::MAX as usize, CLOSE_RANGE_CLOEXEC, 0],
        )
    };
    raw::check(ret).at(Stage::CloseInherited)?;
    for &raw in &plan.keep {
        rustix::io::fcntl_setfd(fd(raw), FdFlags::empty()).at(Stage::Stdio)?;
    }
    Ok(())
}

/// Resets every signal's disposition to the default and unblocks them all:
/// the program starts as a fresh process would, whatever handlers the test
/// process installed (they must never run in a child) and whatever it
/// blocked (the spawner blocks all signals around the clone).
fn reset_signals() -> Result<(), Failure> {
    /// The kernel's `struct sigaction` (x86_64 and aarch64): all zero is
    /// `SIG_DFL` with no flags and an empty mask.
    const DEFAULT: [usize; 4] = [0; 4];
    const SIGSET_BYTES: usize = 8;
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads a valid kernel sigaction from DEFAULT;
        // the default disposition runs no code of ours.
        let ret = unsafe {
            raw::syscall4(
                libc::SYS_rt_sigaction,
                [signal as usize, DEFAULT.as_ptr() as usize, 0, SIGSET_BYTES],
            )
        };
        raw::check(ret).at(Stage::Signals)?;
    }
    let empty: u64 = 0;
    // SAFETY: rt_sigprocmask reads an empty signal set; with default
    // handlers nothing of ours runs when a signal arrives.
    let ret = unsafe {
        raw::syscall4(
            libc::SYS_rt_sigprocmask,
            [
                libc::SIG_SETMASK as usize,
                (&raw const empty) as usize,
                0,
                SIGSET_BYTES,
            ],
        )
    };
    raw::check(ret).at(Stage::Signals)
}

fn exec(plan: &ChildPlan) -> Failure {
    let (argv, envp) = (
        plan.argv_ptrs.as_ptr() as usize,
        plan.envp_ptrs.as_ptr() as usize,
    );
    let ret = match &plan.program_fd {
        // SAFETY: the program is a NUL-terminated string and the argument
        // and environment arrays are NULL-terminated arrays of pointers
        // into strings the plan owns.
        None => unsafe {
            raw::syscall4(
                libc::SYS_execve,
                [plan.program.as_ptr() as usize, argv, envp, 0],
            )
        },
        // SAFETY: as above, with an open descriptor of the program and an
        // empty path.
        Some(fd) => unsafe {
            raw::syscall5(
                libc::SYS_execveat,
                [
                    fd.as_raw_fd() as usize,
                    c"".as_ptr() as usize,
                    argv,
                    envp,
                    libc::AT_EMPTY_PATH as usize,
                ],
            )
        },
    };
    match raw::check(ret) {
        Err(errno) => Failure(Stage::Exec, errno),
        Ok(()) => Failure(Stage::Exec, Errno::NOEXEC),
    }
}
