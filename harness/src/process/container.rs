//! Containers: processes cloned into new namespaces, attached to a lab.

use std::fs::File;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::process::{ExitStatus, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::error::{Error, Result};
use crate::kernel::netns::SETUP_TIMEOUT;
use crate::kernel::packet::Recording;
use crate::kernel::sys;
use crate::network::lab::Lease;

mod freeze;
mod fs;
mod spec;
pub use freeze::Frozen;
mod start;
pub use fs::Fs;
pub use spec::*;
pub(crate) use start::*;

/// How much of each stream [`Container::output`] keeps: 4 MiB.
pub const OUTPUT_LIMIT: usize = 4 << 20;

impl crate::Lab {
    /// Starts a container on the bridge: new network, mount, PID, UTS and
    /// IPC namespaces (its network namespace possibly made ahead, see
    /// [`LabBuilder::ahead`](crate::LabBuilder::ahead), and used by no
    /// other); `lo` up; `eth0` with the next free address of the subnet
    /// and a default route through the gateway. Returns once the network
    /// is ready and the program has been executed.
    ///
    /// Its `/etc/hosts` (unless it has [`Fs::Host`]: then it reads the
    /// host's) is the host's (or its root's) followed by the lab's hosts
    /// as [`Lab::resolve`](crate::Lab::resolve) knows them at its start:
    /// [`GATEWAY_NAME`](crate::GATEWAY_NAME), [`OUTSIDE_NAME`](crate::OUTSIDE_NAME),
    /// the containers alive then and itself, each by name and aliases
    /// ([`Spec::alias`]). Containers started later are not added to it.
    pub fn spawn(&self, spec: &Spec) -> Result<Container> {
        spawn(&self.inner, spec, Attach::Bridge(None), Extras::default())
    }

    /// Starts a process on the outside host: in new mount, PID, UTS and IPC
    /// namespaces, but in the outside network namespace, where it can
    /// listen on [`Lab::outside_addr`](crate::Lab::outside_addr). It is
    /// the outside host ([`OUTSIDE_NAME`](crate::OUTSIDE_NAME)): its
    /// [`Spec::alias`]es name that address (a server's `example.com`),
    /// its [`Spec::name`] does not. Its `/etc/hosts` lists the lab's hosts
    /// as [`Lab::spawn`](crate::Lab::spawn)'s do (though it has no route
    /// to the containers' addresses).
    pub fn spawn_outside(&self, spec: &Spec) -> Result<Container> {
        spawn(&self.inner, spec, Attach::Outside, Extras::default())
    }
}

/// Where a container's network lives.
pub(crate) enum Attach {
    /// A new namespace with an `eth0` on the lab's bridge, with this address
    /// or the next free one.
    Bridge(Option<Lease>),
    /// The outside network's namespace.
    Outside,
}

/// What happened to a container of this process, for a watcher.
pub(crate) enum Event<'a> {
    /// It started.
    Started {
        /// Its name.
        name: &'a str,
        /// Its address.
        addr: IpAddr,
        /// Its pid.
        pid: u32,
    },
    /// It ended, or was killed as it was dropped.
    Ended {
        /// Its pid.
        pid: u32,
        /// How.
        how: String,
    },
}

/// Who is told of every container's start and end: the test side, in a
/// test container, records its body's peers for the failure report.
static WATCHER: OnceLock<fn(&Event<'_>)> = OnceLock::new();

/// Tells `watcher` of every container this process starts from now on,
/// and of its end; the first watcher stays.
pub(crate) fn watch(watcher: fn(&Event<'_>)) {
    let _ = WATCHER.set(watcher);
}

/// Starts a container of `lab` running `spec`; see [`crate::Lab::spawn`].
/// What the harness adds to a [`Spec`] for a container of its own (a test
/// body): none of it is the user's to set.
#[derive(Debug, Default)]
pub(crate) struct Extras {
    /// Descriptors the program inherits besides its standard streams.
    pub inherit: Vec<RawFd>,
    /// Whether to capture the container's bridge port from its start.
    pub capture: bool,
    /// The name of its bridge port, when the test side chose it.
    pub port: Option<String>,
    /// A namespace made ahead that the test side took for it (whose port
    /// it named).
    pub ahead: Option<crate::network::lab::warm::Slot>,
}

/// A cloned process, killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
struct Process {
    name: String,
    pid: u32,
    pidfd: OwnedFd,
    status: Option<ExitStatus>,
}

impl Process {
    fn error(&self, what: &str) -> impl FnOnce(io::Error) -> Error {
        let what = format!("{what} container {:?}", self.name);
        move |e| Error::os(what, e)
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status =
                sys::waitid_pidfd(self.pidfd.as_fd(), false).map_err(self.error("wait for"))?;
        }
        Ok(self.status)
    }

    fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            sys::poll_readable(self.pidfd.as_fd(), Some(left)).map_err(self.error("wait for"))?;
        }
    }

    fn wait(&mut self) -> Result<ExitStatus> {
        loop {
            if let Some(status) = self.wait_timeout(SETUP_TIMEOUT)? {
                return Ok(status);
            }
        }
    }

    fn kill(&mut self) -> Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        sys::pidfd_kill(self.pidfd.as_fd()).map_err(self.error("kill"))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(watcher) = WATCHER.get() {
            let how = match self.try_wait() {
                Ok(Some(status)) => format!("ended with {status}"),
                _ => "killed when the test dropped it".to_owned(),
            };
            watcher(&Event::Ended { pid: self.pid, how });
        }
        if self.status.is_none() {
            if let Err(e) = self.kill() {
                eprintln!("netns-harness: {e}");
            }
            if let Err(e) = sys::waitid_pidfd(self.pidfd.as_fd(), true) {
                eprintln!(
                    "netns-harness: failed to reap container {:?}: {e}",
                    self.name
                );
            }
        }
    }
}

/// A running container. Dropping it kills its processes (SIGKILL), reaps
/// it, and takes its port off the bridge and its address back.
#[derive(Debug)]
pub struct Container {
    // Fields drop in this order, after `Drop::drop` killed the process and
    // took the port off the bridge: the process is reaped, then the address
    // returned.
    process: Process,
    netns: OwnedFd,
    /// Its addresses, of the families its lab carries, IPv4 first.
    addrs: Vec<IpAddr>,
    stdin: Option<File>,
    stdout: Option<File>,
    stderr: Option<File>,
    /// The capture of its port, when its extras asked for one.
    capture: Option<Recording>,
    /// Held for its `Drop`: takes the port off the bridge.
    _port: Option<Port>,
    /// Held for its `Drop`: takes its names out of the lab's table.
    _names: crate::network::hosts::Registration,
    /// Held for its `Drop`: returns the address.
    _lease: Option<Lease>,
}

impl Container {
    /// The container's name, also its hostname.
    pub fn name(&self) -> &str {
        &self.process.name
    }

    /// The address of its `eth0`: its IPv4 address, or in an IPv6-only
    /// lab its IPv6 address (see [`LabBuilder::stack`](crate::LabBuilder::stack)).
    /// For a process on the outside host, the outside host's address of
    /// that family.
    pub fn addr(&self) -> IpAddr {
        self.addrs[0]
    }

    /// Its IPv4 address, when its lab carries IPv4.
    pub fn addr4(&self) -> Option<Ipv4Addr> {
        self.addrs.iter().find_map(|addr| match addr {
            IpAddr::V4(addr) => Some(*addr),
            IpAddr::V6(_) => None,
        })
    }

    /// Its IPv6 address, when its lab carries IPv6.
    pub fn addr6(&self) -> Option<Ipv6Addr> {
        self.addrs.iter().find_map(|addr| match addr {
            IpAddr::V6(addr) => Some(*addr),
            IpAddr::V4(_) => None,
        })
    }

    /// Its addresses: of each family its lab carries, IPv4 first.
    pub fn addrs(&self) -> &[IpAddr] {
        &self.addrs
    }

    /// Its network namespace, e.g. for [`Prober::in_netns`](crate::probe::Prober::in_netns).
    pub fn netns(&self) -> std::os::fd::BorrowedFd<'_> {
        self.netns.as_fd()
    }

    /// Its link to the bridge: its `eth0` and its port, to set conditions
    /// on and to take down (see [`Link`](crate::Link)). A process on the
    /// outside host has none: [`Error::InvalidConditions`] says to use
    /// [`Lab::uplink`](crate::Lab::uplink).
    pub fn link(&self) -> Result<crate::Link> {
        link_of(self.netns.as_fd(), self._port.as_ref(), self.name())
    }

    /// Blackholes `addr` for this container until the guard is dropped
    /// (see [`Net::blackhole`](crate::Net::blackhole)).
    pub fn blackhole(&self, addr: impl Into<IpAddr>) -> Result<crate::Blackhole> {
        crate::network::fault::Blackhole::add(self.netns.as_fd(), addr.into())
    }

    /// Stops every process of the container (SIGSTOP) until the guard is
    /// dropped, which resumes them (SIGCONT): a machine that hangs. The
    /// kernel still answers for it (ARP, ICMP echo), as for a frozen host.
    pub fn freeze(&self) -> Result<Frozen<'_>> {
        freeze::signal_all(
            self.process.pidfd.as_fd(),
            self.process.pid,
            rustix::process::Signal::STOP,
        )
        .map_err(self.process.error("freeze"))?;
        Ok(Frozen { container: self })
    }

    /// Its process id, as the test process sees it (inside, it is 1).
    pub fn pid(&self) -> u32 {
        self.process.pid
    }

    /// Its standard input, when it was [`Stdio::Piped`]; once.
    pub fn take_stdin(&mut self) -> Option<File> {
        self.stdin.take()
    }

    /// Its standard output, when it was [`Stdio::Piped`]; once.
    pub fn take_stdout(&mut self) -> Option<File> {
        self.stdout.take()
    }

    /// Its standard error, when it was [`Stdio::Piped`]; once.
    pub fn take_stderr(&mut self) -> Option<File> {
        self.stderr.take()
    }

    /// The capture of its bridge port, when its extras asked for one; once.
    pub(crate) fn take_capture(&mut self) -> Option<Recording> {
        self.capture.take()
    }

    /// The name of its port on the bridge (the lab's end of its veth).
    pub(crate) fn port_name(&self) -> Option<&str> {
        self._port.as_ref().map(|p| p.name.as_str())
    }

    /// Its exit status if it has exited, without waiting.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.process.try_wait()
    }

    /// Waits for it to exit, for at most `timeout`; `None` if it is still
    /// running then.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        self.process.wait_timeout(timeout)
    }

    /// Waits for it to exit.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        self.process.wait()
    }

    /// Kills every process of the container (SIGKILL to its PID 1, which
    /// takes its PID namespace down with it). Killing an exited container
    /// does nothing.
    pub fn kill(&mut self) -> Result<()> {
        self.process.kill()
    }

    /// Collects its piped output and error until it exits, for at most
    /// `timeout`; on expiry it is killed and [`Error::Timeout`] returned.
    /// Streams that were not piped come back empty. Of each stream, the
    /// first [`OUTPUT_LIMIT`] bytes are kept and the rest is read and
    /// discarded, so a container that writes without end costs the test
    /// process bounded memory; read [`Container::take_stdout`] yourself to
    /// see everything.
    pub fn output(&mut self, timeout: Duration) -> Result<Output> {
        let readers = [self.stdout.take(), self.stderr.take()].map(|stream| {
            stream.map(|file| {
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut file = file;
                    let limit = OUTPUT_LIMIT as u64;
                    let _ = (&mut file).take(limit).read_to_end(&mut buf);
                    let _ = io::copy(&mut file, &mut io::sink());
                    buf
                })
            })
        });
        let status = self.wait_timeout(timeout)?;
        if status.is_none() {
            self.kill()?;
            self.wait()?;
        }
        let [stdout, stderr] =
            readers.map(|r| r.map(|t| t.join().unwrap_or_default()).unwrap_or_default());
        match status {
            Some(status) => Ok(Output {
                status,
                stdout,
                stderr,
            }),
            None => Err(Error::Timeout {
                name: self.process.name.clone(),
                what: "exit",
                timeout,
            }),
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // Kill first and take the port off the bridge while the kernel tears
        // the processes down; the fields then reap the process and return
        // the address.
        if let Err(e) = self.process.kill() {
            eprintln!("netns-harness: {e}");
        }
        self._port.take();
        tracing::debug!(
            container = self.process.name,
            "container killed and off the bridge; reaped next"
        );
    }
}
