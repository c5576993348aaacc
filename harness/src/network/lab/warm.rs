//! Network namespaces made ahead of the containers that take them.
//!
//! Making a network namespace and a veth pair is a large part of a
//! container's start (about 40 % measured here): the kernel sets up the
//! namespace, then registers both ends of the pair and attaches one to the
//! bridge. Once a lab has started a second container in this process, a
//! thread keeps some namespaces ready for it ([`DEPTH`] unless
//! [`LabBuilder::ahead`](crate::LabBuilder::ahead) says otherwise), each
//! fresh and empty but for `lo` and an `eth0` (both down, no address, a
//! random hardware address until a container gives it its own) whose peer
//! is already a port of the bridge. A container's start then joins one
//! ([`ChildPlan::join_netns`](crate::kernel::prexec::ChildPlan)) and
//! configures it as it would a namespace of its own making; only when none
//! is ready does it make its own.
//!
//! A namespace is never used twice: the container that takes it owns it,
//! and it goes with the container as any other. Ready ones are held only
//! by descriptors of this process (and, for a moment, by children it
//! clones meanwhile, until they execute their program or exit), so they
//! vanish with it, however it ends. They belong to the lab's state in this
//! process ([`LabInner`], shared by the clones of its [`Lab`](crate::Lab)
//! and by its containers), whose drop stops the thread and drops them; a
//! test body's handle on its runner's lab is another process's and keeps
//! its own. The thread and the children it clones run at a lower priority
//! (nice 10), on a spawner of their own
//! ([`Lane::Ahead`](crate::kernel::spawner::Lane)), and the thread is
//! woken only when a start is over: they use the time a test leaves
//! between its starts, sharing with a start under way only the kernel's
//! locks.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use super::LabInner;
use crate::common::error::{Error, Result};
use crate::kernel::rtnl::{Peer, Rtnl};
use crate::kernel::{netns, sys, userns};

/// How many namespaces a lab keeps ready in a process unless it says
/// otherwise ([`LabBuilder::ahead`](crate::LabBuilder::ahead)).
pub(crate) const DEPTH: u32 = 2;

/// A namespace made ahead, and the port its `eth0` is the peer of.
#[derive(Debug)]
pub(crate) struct Slot {
    /// The namespace: `lo` and `eth0`, both down.
    pub(crate) netns: OwnedFd,
    /// The name of `eth0`'s peer, a port of the bridge.
    pub(crate) port: String,
}

/// The ready namespaces of a lab in this process, and the thread that
/// makes them.
pub(crate) struct Warm {
    shared: Arc<Shared>,
    thread: Mutex<Thread>,
}

/// What the lab and its thread share.
struct Shared {
    /// How many to keep ready.
    depth: u32,
    state: Mutex<State>,
    /// Signalled when a start is over, and when the lab goes.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    ready: Vec<Slot>,
    /// The lab goes: the thread ends.
    closed: bool,
}

/// Where the thread is.
enum Thread {
    /// Not started; whether the lab was asked for a namespace before.
    Idle { asked: bool },
    /// Started; after a failure it ended (saying why in a `tracing`
    /// event), and the lab's containers make their own namespaces.
    Running(JoinHandle<()>),
    /// Off ([`LabBuilder::ahead`](crate::LabBuilder::ahead) of 0), or it
    /// could not start.
    Off,
}

/// What the thread needs of the lab to make a port: its namespace, its
/// bridge, and the names of this process's ports.
struct Maker {
    lab_ns: OwnedFd,
    bridge_index: u32,
    port_prefix: String,
    next_port: Arc<AtomicU32>,
}

impl Warm {
    /// Keeps `depth` ready once started.
    pub(crate) fn new(depth: u32) -> Self {
        let thread = match depth {
            0 => Thread::Off,
            _ => Thread::Idle { asked: false },
        };
        Warm {
            shared: Arc::new(Shared {
                depth,
                state: Mutex::default(),
                changed: Condvar::new(),
            }),
            thread: Mutex::new(thread),
        }
    }

    /// How many it keeps ready.
    pub(crate) fn depth(&self) -> u32 {
        self.shared.depth
    }
}

impl LabInner {
    /// A namespace made ahead for a container, if one is ready; the second
    /// time the lab is asked, starts the thread that makes them (a lab
    /// that starts a single container never makes one for nothing).
    pub(crate) fn take_ahead(&self) -> Option<Slot> {
        let mut thread = lock(&self.warm.thread);
        match &mut *thread {
            Thread::Running(_) => {}
            Thread::Off => return None,
            Thread::Idle { asked } if !*asked => {
                *asked = true;
                return None;
            }
            Thread::Idle { .. } => {
                *thread = self.start_warm().unwrap_or_else(|e| {
                    tracing::debug!(error = %e, "no namespaces made ahead: containers make their own");
                    Thread::Off
                });
                return None;
            }
        }
        drop(thread);
        lock(&self.warm.shared.state).ready.pop()
    }

    /// Has the thread make the namespaces taken again.
    pub(crate) fn refill_ahead(&self) {
        self.warm.shared.changed.notify_all();
    }

    fn start_warm(&self) -> Result<Thread> {
        let maker = Maker {
            lab_ns: self
                .lab_ns
                .try_clone()
                .map_err(|e| Error::os("duplicate the lab namespace's descriptor", e))?,
            bridge_index: self.bridge_index,
            port_prefix: self.port_prefix.clone(),
            next_port: Arc::clone(&self.next_port),
        };
        let shared = Arc::clone(&self.warm.shared);
        let thread = std::thread::Builder::new()
            .name("netns-harness-warm".into())
            .spawn(move || {
                if let Err(e) = fill(&shared, &maker) {
                    tracing::debug!(error = %e, "no more namespaces made ahead: containers make their own");
                }
            })
            .map_err(|e| Error::os("start the thread that makes namespaces ahead", e))?;
        Ok(Thread::Running(thread))
    }
}

impl Drop for Warm {
    fn drop(&mut self) {
        let ready = {
            let mut state = lock(&self.shared.state);
            state.closed = true;
            std::mem::take(&mut state.ready)
        };
        drop(ready);
        self.shared.changed.notify_all();
        let thread = self
            .thread
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Thread::Running(thread) = std::mem::replace(thread, Thread::Off) {
            // A namespace it is making goes as it ends.
            let _ = thread.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The thread: keeps the depth's namespaces ready until the lab goes.
fn fill(shared: &Shared, maker: &Maker) -> Result<()> {
    sys::lower_priority();
    let mut rtnl = netns::run_in(maker.lab_ns.as_fd(), || Rtnl::open("lab"))?;
    loop {
        {
            let mut state = lock(&shared.state);
            while !state.closed && state.ready.len() >= shared.depth as usize {
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.closed {
                return Ok(());
            }
        }
        let slot = make(&mut rtnl, maker)?;
        let mut state = lock(&shared.state);
        if state.closed {
            return Ok(());
        }
        state.ready.push(slot);
    }
}

/// One namespace (in the lab user namespace), whose `eth0` is the peer of
/// a new port on the bridge.
fn make(rtnl: &mut Rtnl, maker: &Maker) -> Result<Slot> {
    let netns = userns::create_netns_ahead()?;
    let n = maker.next_port.fetch_add(1, Ordering::Relaxed);
    let port = format!("{}{n:x}", maker.port_prefix);
    rtnl.add_veth(
        &port,
        Some(maker.bridge_index),
        &Peer {
            name: "eth0",
            netns: netns.as_fd(),
            mac: None,
        },
    )?;
    Ok(Slot { netns, port })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Lab, Spec, Stdio};
    use std::os::fd::BorrowedFd;
    use std::time::{Duration, Instant};

    /// The inode of a namespace.
    fn inode(netns: BorrowedFd<'_>) -> u64 {
        rustix::fs::fstat(netns).unwrap().st_ino
    }

    /// Waits (bounded) until `lab` has [`DEPTH`] namespaces ready; their
    /// ports and inodes.
    fn ready(lab: &LabInner) -> Vec<(String, u64)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let state = lock(&lab.warm.shared.state);
            if state.ready.len() == DEPTH as usize {
                return state
                    .ready
                    .iter()
                    .map(|slot| (slot.port.clone(), inode(slot.netns.as_fd())))
                    .collect();
            }
            drop(state);
            assert!(
                Instant::now() < deadline,
                "no namespaces made ahead in 30 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts the thread: a lab makes namespaces ahead from its second
    /// container on.
    fn warmed(subnet: &str) -> Lab {
        let lab = Lab::builder().subnet(subnet).build().unwrap();
        for _ in 0..2 {
            assert!(
                lab.spawn(&Spec::command("true"))
                    .unwrap()
                    .wait()
                    .unwrap()
                    .success()
            );
        }
        lab
    }

    #[test]
    fn a_container_joins_a_namespace_made_ahead_which_no_other_gets() {
        let lab = warmed("10.245.9.0/24");
        let made = ready(&lab.inner);
        let gateway = lab.gateway().to_string();
        let mut pinging = lab
            .spawn(
                &Spec::command("sh")
                    .args([
                        "-c",
                        "cat /sys/class/net/eth0/address && ping -c1 -W5 \"$0\"",
                    ])
                    .arg(&gateway)
                    .stdout(Stdio::Piped),
            )
            .unwrap();
        // It took one: its port and its namespace are those made ahead.
        let taken = (
            pinging.port_name().unwrap().to_owned(),
            inode(pinging.netns()),
        );
        assert!(made.contains(&taken), "{taken:?} not in {made:?}");
        // Its eth0 has the hardware address of its own address, as a
        // container that made its namespace has, and its port forwards.
        let out = pinging.output(Duration::from_secs(10)).unwrap();
        assert!(out.status.success(), "{out:?}");
        let mac =
            crate::network::lab::mac_for(pinging.addr4().unwrap()).map(|x| format!("{x:02x}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.lines().next(), Some(mac.join(":").as_str()));
        // Never again: the next containers get other namespaces (compared
        // while it holds its own: a freed inode number is given again).
        for _ in 0..2 * DEPTH {
            let next = lab.spawn(&Spec::command("sleep").arg("60")).unwrap();
            assert_ne!(inode(next.netns()), taken.1);
            assert_ne!(next.port_name(), Some(taken.0.as_str()));
        }
        drop(pinging);
    }

    #[test]
    fn a_lab_that_goes_holds_no_namespace_made_ahead_and_no_thread() {
        let lab = warmed("10.245.10.0/24");
        ready(&lab.inner);
        let shared = Arc::clone(&lab.inner.warm.shared);
        drop(lab);
        // The thread ended (it held the other reference), and the ready
        // namespaces' descriptors are closed.
        assert_eq!(Arc::strong_count(&shared), 1);
        let state = lock(&shared.state);
        assert!(state.closed && state.ready.is_empty());
    }
}
