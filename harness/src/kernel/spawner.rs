//! The one thread that clones containers.
//!
//! A container is killed when the thread that cloned it exits
//! (`PR_SET_PDEATHSIG` follows threads, not processes). libtest runs each
//! test on a thread of its own that ends with the test, so containers are
//! cloned by a thread that lives as long as the process: they die exactly
//! when the process does, SIGKILL included. That thread blocks every
//! signal, so none is ever handled on the child's borrowed memory between
//! its clone and its `execve`.
//!
//! Each clone is a `CLONE_VFORK`: the spawner thread is suspended until the
//! child executed its program or exited, and then reports
//! [`Report::Released`] on the container's report pipe. No step depends on
//! a pipe's end being closed, so another thread that forks while a
//! container starts (and so holds copies of its pipes) stalls nothing.

use std::ffi::{c_int, c_void};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::common::error::{Error, Result};
use crate::common::protocol::{Report, Stage};
use crate::kernel::netns::SETUP_TIMEOUT;
use crate::kernel::prexec::{ChildPlan, child_main};
use crate::kernel::sys::{self, check};

type Job = Box<dyn FnOnce() + Send>;

/// Which spawner thread clones a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    /// The one that starts containers and what they wait for.
    Now,
    /// The one that makes namespaces ahead of the containers that will
    /// take them, so that it never delays a container's clone.
    Ahead,
}

fn jobs(lane: Lane) -> io::Result<&'static Sender<Job>> {
    static NOW: OnceLock<Sender<Job>> = OnceLock::new();
    static AHEAD: OnceLock<Sender<Job>> = OnceLock::new();
    let (jobs, name) = match lane {
        Lane::Now => (&NOW, "netns-harness-spawner"),
        Lane::Ahead => (&AHEAD, "netns-harness-ahead"),
    };
    if let Some(jobs) = jobs.get() {
        return Ok(jobs);
    }
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Err(e) = sys::block_signals() {
                eprintln!("netns-harness: cannot block signals on the spawner thread: {e}");
                return;
            }
            if lane == Lane::Ahead {
                sys::lower_priority();
            }
            for job in rx {
                job();
            }
        })?;
    // If another thread won the race, its spawner serves us and ours exits
    // when `tx` is dropped here.
    Ok(jobs.get_or_init(|| tx))
}

/// Memory for a cloned child's stack, unmapped when dropped.
struct Stack {
    base: *mut c_void,
    len: usize,
}

impl Stack {
    /// Maps `len` bytes, the lowest page a guard.
    fn new(len: usize) -> io::Result<Stack> {
        use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};
        // SAFETY: an anonymous private mapping at an address of the
        // kernel's choosing; nothing of ours is overwritten.
        let base = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::STACK,
            )
        }?;
        let stack = Stack { base, len };
        // SAFETY: the first page lies in the mapping just made.
        unsafe { rustix::mm::mprotect(base, 4096, MprotectFlags::empty()) }?;
        Ok(stack)
    }

    fn top(&self) -> *mut c_void {
        // Stacks grow down; 16-byte aligned as the mapping is page-aligned.
        self.base.wrapping_byte_add(self.len)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made, which nothing
        // uses any more (the vfork returned).
        let _ = unsafe { rustix::mm::munmap(self.base, self.len) };
    }
}

/// Clones a child into the namespaces its plan asks for
/// ([`ChildPlan::clone_namespaces`]), which runs [`child_main`] on
/// `stack`. With `CLONE_VFORK`, this returns (the child's
/// pid) only once the child executed its program or exited; the kernel
/// stores the child's pidfd in `pidfd` before the child first runs, so
/// another thread may take it as soon as the child reports that it started.
///
/// The child shares the caller's memory (`CLONE_VM`, as `posix_spawn`
/// does): nothing is copied, and its `execve` has nothing to tear down.
/// The calling thread becomes the child's parent: the child is killed when
/// that thread exits (`PR_SET_PDEATHSIG`). It should block every signal
/// (the child inherits the mask, and resets handlers before unblocking).
///
/// # Safety
/// `plan` and `stack` must stay alive until this returns.
///
/// # References
/// `clone(2)`, `namespaces(7)`
unsafe fn clone_container(plan: &ChildPlan, stack: &Stack, pidfd: &AtomicI32) -> io::Result<u32> {
    let flags = libc::CLONE_VM
        | libc::CLONE_VFORK
        | libc::CLONE_PIDFD
        | libc::SIGCHLD
        | plan.clone_namespaces();
    extern "C" fn entry(plan: *mut c_void) -> c_int {
        // SAFETY: `plan` is the plan `clone_container` was given, alive until
        // the child executes its program or exits (the vfork returns).
        unsafe { child_main(&*plan.cast::<ChildPlan>()) }
    }
    // SAFETY: `stack` is a live mapping for the child's stack and `plan`
    // outlives the child's use of it (the caller's contract). The child only
    // reads the plan and makes raw system calls until execve or exit, so it
    // touches no lock, no errno and no other state of this thread; this
    // thread is suspended meanwhile.
    let pid = unsafe {
        libc::clone(
            entry,
            stack.top(),
            flags,
            std::ptr::from_ref(plan).cast_mut().cast(),
            pidfd.as_ptr(),
        )
    };
    check(pid).map(|pid| pid as u32)
}

/// A cloned child's stack: its setup needs a few KiB.
const STACK_BYTES: usize = 256 * 1024;

/// Where the kernel stores a child's pidfd, until someone takes it.
struct PidfdSlot(AtomicI32);

impl Drop for PidfdSlot {
    fn drop(&mut self) {
        let fd = self.0.load(Ordering::SeqCst);
        if fd >= 0 {
            // SAFETY: nobody took the pidfd the kernel stored here.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
}

/// A container being cloned.
pub(crate) struct Cloning {
    pidfd: Arc<PidfdSlot>,
}

impl Cloning {
    /// Takes the child's pidfd: there once the child reported
    /// [`Report::Started`].
    pub(crate) fn take_pidfd(&self) -> Option<OwnedFd> {
        let fd = self.pidfd.0.swap(-1, Ordering::SeqCst);
        // SAFETY: the kernel stored a pidfd of ours here, and the swap made
        // this the only taker.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Clones a container from `plan` on the spawner thread. The child reports
/// its progress on `report` (whose raw descriptor the plan holds), and the
/// spawner adds [`Report::Released`] once the child executed its program or
/// exited, or [`Report::Failed`] at [`Stage::Clone`] when it could not be
/// cloned. The plan's other descriptors must stay open until the child
/// reported [`Report::Started`].
pub(crate) fn clone(lane: Lane, mut plan: ChildPlan, report: OwnedFd) -> io::Result<Cloning> {
    static PARENT: OnceLock<OwnedFd> = OnceLock::new();
    let parent = match PARENT.get() {
        Some(fd) => fd,
        None => {
            let fd = sys::pidfd_self()?;
            PARENT.get_or_init(|| fd)
        }
    };
    plan.parent = parent.as_raw_fd();
    plan.report_write = report.as_raw_fd();
    let slot = Arc::new(PidfdSlot(AtomicI32::new(-1)));
    let pidfd = Arc::clone(&slot);
    jobs(lane)?
        .send(Box::new(move || {
            let failed = |e: io::Error| Report::Failed {
                stage: Stage::Clone,
                errno: e.raw_os_error().unwrap_or(libc::EIO),
            };
            let outcome = match Stack::new(STACK_BYTES) {
                // SAFETY: `plan` and `stack` live until the vfork returns.
                Ok(stack) => match unsafe { clone_container(&plan, &stack, &pidfd.0) } {
                    Ok(pid) => Report::Released { pid },
                    Err(e) => failed(e),
                },
                Err(e) => failed(e),
            };
            // A caller that gave up has closed its end: nothing to tell.
            let _ = File::from(report).write_all(&outcome.encode());
        }))
        .map_err(|_| io::Error::other("the spawner thread has stopped"))?;
    Ok(Cloning { pidfd: slot })
}

/// The parent's end of a container's report pipe.
pub(crate) struct Reports {
    pipe: File,
    name: String,
}

impl Reports {
    /// Reads the reports of container (or holder) `name` from `pipe`.
    pub(crate) fn new(pipe: OwnedFd, name: impl Into<String>) -> Self {
        Self {
            pipe: File::from(pipe),
            name: name.into(),
        }
    }

    /// The next report, waiting at most [`SETUP_TIMEOUT`] for the child
    /// to `what`.
    pub(crate) fn next(&mut self, what: &'static str) -> Result<Report> {
        let ready = sys::poll_readable(self.pipe.as_fd(), Some(SETUP_TIMEOUT))
            .map_err(|e| Error::os(format!("wait for container {:?} to {what}", self.name), e))?;
        if !ready {
            return Err(Error::Timeout {
                name: self.name.clone(),
                what,
                timeout: SETUP_TIMEOUT,
            });
        }
        self.read()
    }

    fn read(&mut self) -> Result<Report> {
        let mut bytes = [0u8; Report::LEN];
        let garbled = |source: io::Error| Error::ContainerSetup {
            name: self.name.clone(),
            stage: "reporting its setup",
            source,
        };
        self.pipe.read_exact(&mut bytes).map_err(garbled)?;
        Report::decode(bytes).ok_or_else(|| garbled(io::Error::other("an unknown report")))
    }

    /// The failure the child reported, if a report is waiting already.
    pub(crate) fn failure_now(&mut self) -> Option<Error> {
        if !sys::poll_readable(self.pipe.as_fd(), Some(Duration::ZERO)).unwrap_or(false) {
            return None;
        }
        match self.read() {
            Ok(Report::Failed { stage, errno }) => Some(self.setup_error(stage, errno)),
            _ => None,
        }
    }

    fn setup_error(&self, stage: Stage, errno: i32) -> Error {
        if stage == Stage::Overlay {
            return Error::overlay_unavailable(&self.name, errno);
        }
        Error::ContainerSetup {
            name: self.name.clone(),
            stage: stage.describe(),
            source: io::Error::from_raw_os_error(errno),
        }
    }

    /// The error for `report` where the child should have come to `what`.
    pub(crate) fn unexpected(&self, report: Report, what: &'static str) -> Error {
        match report {
            Report::Failed { stage, errno } => self.setup_error(stage, errno),
            _ => Error::ContainerSetup {
                name: self.name.clone(),
                stage: what,
                source: io::Error::other("it exited without a report"),
            },
        }
    }
}
