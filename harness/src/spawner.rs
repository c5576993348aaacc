//! The one thread that clones containers.
//!
//! A container is killed when the thread that cloned it exits
//! (`PR_SET_PDEATHSIG` follows threads, not processes). libtest runs each
//! test on a thread of its own that ends with the test, so containers are
//! cloned by a thread that lives as long as the process: they die exactly
//! when the process does, SIGKILL included.

use std::io;
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

/// Clones a container from `plan` on the spawner thread. The plan's
/// descriptors must stay open until this returns; its memory may be freed
/// afterwards (the child has its own copy).
pub(crate) fn clone(plan: ChildPlan) -> io::Result<Cloned> {
    let (tx, rx) = mpsc::sync_channel(1);
    jobs()?
        .send(Box::new(move || {
            let _ = tx.send(sys::clone_container(&plan));
        }))
        .map_err(|_| io::Error::other("the spawner thread has stopped"))?;
    rx.recv()
        .map_err(|_| io::Error::other("the spawner thread has stopped"))?
}
