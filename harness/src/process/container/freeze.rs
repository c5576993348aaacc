//! A container frozen and thawed: every process of its PID namespace
//! stopped (SIGSTOP) and resumed (SIGCONT).

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::process::{Pid, Signal};

use super::Container;

/// The PID namespace of process `pid`, as `/proc` names it.
fn pid_namespace(pid: u32) -> io::Result<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid"))
}

/// Sends `signal` to the container's PID 1 (through its pidfd) and to
/// every other process of its PID namespace, until no process of it was
/// left out (one may fork while this runs).
pub(super) fn signal_all(pidfd: BorrowedFd<'_>, pid: u32, signal: Signal) -> io::Result<()> {
    rustix::process::pidfd_send_signal(pidfd, signal)?;
    let namespace = pid_namespace(pid)?;
    let mut done = vec![pid];
    loop {
        let found: Vec<u32> = std::fs::read_dir("/proc")?
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
            .filter(|n| !done.contains(n))
            .filter(|&n| pid_namespace(n).is_ok_and(|ns| ns == namespace))
            .collect();
        if found.is_empty() {
            return Ok(());
        }
        for n in found {
            if let Some(target) = Pid::from_raw(n as i32) {
                // Gone since: nothing to stop.
                let _ = rustix::process::kill_process(target, signal);
            }
            done.push(n);
        }
    }
}

/// A container frozen by [`Container::freeze`]; dropping it thaws it.
#[must_use = "the container thaws when this is dropped"]
pub struct Frozen<'a> {
    pub(super) container: &'a Container,
}

impl std::fmt::Debug for Frozen<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "container {:?}, frozen", self.container.name())
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        let process = &self.container.process;
        if let Err(e) = signal_all(process.pidfd.as_fd(), process.pid, Signal::CONT) {
            eprintln!("netns-harness: thaw container {:?}: {e}", process.name);
        }
    }
}
