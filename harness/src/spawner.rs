//! The one thread that clones containers.
//!
//! A container is killed when the thread that cloned it exits
//! (`PR_SET_PDEATHSIG` follows threads, not processes). libtest runs each
//! test on a thread of its own that ends with the test, so containers are
//! cloned by a thread that lives as long as the process: they die exactly
//! when the process does, SIGKILL included.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Sender};

use crate::sys::{self, ChildPlan, Cloned};

type Job = Box<dyn FnOnce() + Send>;

fn jobs() -> io::Result<&'static Sender<Job>> {
    static JOBS: OnceLock<Sender<Job>> = OnceLock::new();
    if let Some(jobs) = JOBS.get() {
        return Ok(jobs);
    }
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("netns-harness-spawner".into())
        .spawn(move || {
            for job in rx {
                job();
            }
        })?;
    // If another thread won the race, its spawner serves us and ours exits
    // when `tx` is dropped here.
    Ok(JOBS.get_or_init(|| tx))
}

/// A cloned child's stack: its setup needs a few KiB.
const STACK_BYTES: usize = 256 * 1024;

/// Clones a container from `plan` on the spawner thread, and returns as
/// soon as the child runs. The plan's descriptors must stay open until this
/// returns (the child gets copies at the clone).
///
/// The child shares the spawner's memory until it executes its program, so
/// the spawner keeps the plan and the child's stack, and makes no other
/// system call, until then: containers are cloned one at a time, each
/// until its `execve` (or exit).
pub(crate) fn clone(mut plan: ChildPlan) -> io::Result<Cloned> {
    static PARENT: OnceLock<OwnedFd> = OnceLock::new();
    let parent = match PARENT.get() {
        Some(fd) => fd,
        None => {
            let fd = sys::pidfd_self()?;
            PARENT.get_or_init(|| fd)
        }
    };
    plan.parent = parent.as_raw_fd();
    let (tx, rx) = mpsc::sync_channel(1);
    jobs()?
        .send(Box::new(move || {
            let parts = sys::Stack::new(STACK_BYTES).and_then(|stack| Ok((stack, sys::pipe()?)));
            let (stack, (exec_read, exec_write)) = match parts {
                Ok(parts) => parts,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            // SAFETY: `plan` and `stack` live until the child closed its copy
            // of `exec_write` (close-on-exec: at its execve or exit), and
            // until then this thread only hands the result over (no errno
            // read) and waits for that.
            let cloned = unsafe { sys::clone_container(&plan, &stack) };
            drop(exec_write);
            let started = cloned.is_ok();
            let _ = tx.send(cloned);
            if started {
                sys::await_close(exec_read.as_fd());
            }
            drop((stack, plan));
        }))
        .map_err(|_| io::Error::other("the spawner thread has stopped"))?;
    rx.recv()
        .map_err(|_| io::Error::other("the spawner thread has stopped"))?
}
