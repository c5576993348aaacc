//! Containers: processes cloned into new namespaces, attached to a lab.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::common::error::{Error, Result};
use crate::common::protocol::{FUNCTION_VAR, FunctionRef, Report};
use crate::kernel::netns::SETUP_TIMEOUT;
use crate::kernel::packet::Recording;
use crate::kernel::prexec::{ChildPlan, IfConfig};
use crate::kernel::rtnl::Peer;
use crate::kernel::spawner::Reports;
use crate::kernel::sys;
use crate::network::lab::{LabInner, Lease};
use crate::{common::names, kernel::spawner};

/// How much of each stream [`Container::output`] keeps: 4 MiB.
pub const OUTPUT_LIMIT: usize = 4 << 20;

/// What to connect a container's standard input, output or error to.
///
/// Named like [`std::process::Stdio`] because it plays the same part in a
/// [`Spec`] as that does in a [`std::process::Command`]; it is a plain
/// enum (cloneable, comparable) where std's is an opaque handle. Import one
/// of them under another name where both are needed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stdio {
    /// The test process's own (the default for output and error).
    #[default]
    Inherit,
    /// `/dev/null` (the default for input).
    Null,
    /// A pipe; take the test's end with [`Container::take_stdin`],
    /// [`Container::take_stdout`] or [`Container::take_stderr`].
    Piped,
}

#[derive(Clone, Debug)]
enum Program {
    Command(OsString),
    Function(fn()),
}

/// What a container runs, like [`std::process::Command`]: an external
/// program, or a function of the running executable (which is re-executed:
/// nothing of the test process's threads or locks is carried into the
/// container).
///
/// ```
/// use netns_harness::{Spec, Stdio};
/// let ping = Spec::command("ping").args(["-c", "1", "10.200.0.1"]).name("pinger");
/// fn serve() { /* runs in the container */ }
/// let server = Spec::function(serve).name("server").stdout(Stdio::Piped);
/// # let _ = (ping, server);
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Spec {
    program: Program,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    name: Option<String>,
    stdio: [Stdio; 3],
    stderr_to_stdout: bool,
}

impl Spec {
    fn new(program: Program) -> Self {
        Self {
            program,
            args: Vec::new(),
            env: Vec::new(),
            name: None,
            stdio: [Stdio::Null, Stdio::Inherit, Stdio::Inherit],
            stderr_to_stdout: false,
        }
    }

    /// Runs `program`, looked up in `PATH` unless it contains a `/`.
    pub fn command(program: impl AsRef<OsStr>) -> Self {
        Self::new(Program::Command(program.as_ref().to_owned()))
    }

    /// Runs `function` in a re-execution of the current executable. The
    /// container exits with 0 when it returns and 101 when it panics. Its
    /// arguments are in [`std::env::args`] after the first.
    pub fn function(function: fn()) -> Self {
        Self::new(Program::Function(function))
    }

    /// Appends an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable (the container inherits the rest of the
    /// test process's environment).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes an environment variable.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// The container's name and hostname: 1 to 15 ASCII letters, digits,
    /// `-` or `_`. Defaults to `c<N>`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Standard input (default [`Stdio::Null`]).
    pub fn stdin(mut self, stdio: Stdio) -> Self {
        self.stdio[0] = stdio;
        self
    }

    /// Standard output (default [`Stdio::Inherit`]).
    pub fn stdout(mut self, stdio: Stdio) -> Self {
        self.stdio[1] = stdio;
        self
    }

    /// Standard error (default [`Stdio::Inherit`]).
    pub fn stderr(mut self, stdio: Stdio) -> Self {
        self.stdio[2] = stdio;
        self
    }

    /// Sends standard error where standard output goes (`2>&1`), so that
    /// both arrive in one stream, in order.
    pub fn stderr_to_stdout(mut self) -> Self {
        self.stderr_to_stdout = true;
        self
    }

    fn environment(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
        for (key, value) in &self.env {
            env.retain(|(k, _)| k != key);
            if let Some(value) = value {
                env.push((key.clone(), value.clone()));
            }
        }
        env
    }
}

impl crate::Lab {
    /// Starts a container on the bridge: new network, mount, PID, UTS and
    /// IPC namespaces; `lo` up; `eth0` with the next free address of the
    /// subnet and a default route through the gateway. Returns once the
    /// network is ready and the program has been executed.
    pub fn spawn(&self, spec: &Spec) -> Result<Container> {
        spawn(&self.inner, spec, Attach::Bridge(None), &Extras::default())
    }

    /// Starts a process on the outside host: in new mount, PID, UTS and IPC
    /// namespaces, but in the outside network namespace, where it can
    /// listen on [`Lab::outside_addr`](crate::Lab::outside_addr).
    pub fn spawn_outside(&self, spec: &Spec) -> Result<Container> {
        spawn(&self.inner, spec, Attach::Outside, &Extras::default())
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

fn cstring(bytes: Vec<u8>, what: &str) -> Result<CString> {
    CString::new(bytes).map_err(|_| Error::InvalidName {
        name: what.to_owned(),
        reason: "it contains a NUL byte".into(),
    })
}

/// Finds `program` as `execvp` would, with the container's `PATH`.
fn resolve(program: &OsStr, env: &[(OsString, OsString)]) -> Result<PathBuf> {
    let not_found = |reason: String| Error::CommandNotFound {
        program: program.to_string_lossy().into_owned(),
        reason,
    };
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.as_bytes().contains(&b'/') {
        let path = PathBuf::from(program);
        return if executable(&path) {
            Ok(path)
        } else {
            Err(not_found("no executable file at that path".into()))
        };
    }
    let path = env.iter().find(|(k, _)| k == "PATH").map_or_else(
        || OsString::from("/usr/local/bin:/usr/bin:/bin"),
        |(_, v)| v.clone(),
    );
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
        .ok_or_else(|| {
            not_found(format!(
                "no executable of that name in PATH ({}); install it or give its full path",
                path.to_string_lossy()
            ))
        })
}

fn current_exe() -> Result<PathBuf> {
    std::env::current_exe().map_err(|source| Error::CurrentExe {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })
}

/// The descriptors of one standard stream: the child's end and ours.
struct StreamEnds {
    child: Option<OwnedFd>,
    parent: Option<File>,
}

fn stream(stdio: Stdio, input: bool) -> io::Result<StreamEnds> {
    Ok(match stdio {
        Stdio::Inherit => StreamEnds {
            child: None,
            parent: None,
        },
        Stdio::Null => StreamEnds {
            child: Some(
                std::fs::OpenOptions::new()
                    .read(input)
                    .write(!input)
                    .open("/dev/null")?
                    .into(),
            ),
            parent: None,
        },
        Stdio::Piped => {
            let (read, write) = sys::pipe()?;
            let (child, parent) = if input { (read, write) } else { (write, read) };
            StreamEnds {
                child: Some(child),
                parent: Some(File::from(parent)),
            }
        }
    })
}

static NEXT_NAME: AtomicU32 = AtomicU32::new(0);

/// What happened to a container of this process, for a watcher.
pub(crate) enum Event<'a> {
    /// It started.
    Started {
        /// Its name.
        name: &'a str,
        /// Its address.
        addr: Ipv4Addr,
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
}

pub(crate) fn spawn(
    lab: &Arc<LabInner>,
    spec: &Spec,
    attach: Attach,
    extras: &Extras,
) -> Result<Container> {
    let name = match (&spec.name, &attach) {
        (Some(name), _) => name.clone(),
        (None, Attach::Bridge(_)) => format!("c{}", NEXT_NAME.fetch_add(1, Ordering::Relaxed)),
        (None, Attach::Outside) => "outside".to_owned(),
    };
    names::validate(&name)?;
    let mut plan = exec_plan(spec, &name)?;
    let lease = attach_plan(lab, &mut plan, attach)?;
    let addr = lease
        .as_ref()
        .map_or(crate::network::lab::OUTSIDE_ADDR, Lease::addr);
    plan.keep.clone_from(&extras.inherit);
    plan.userns = crate::kernel::userns::lab_userns().map(|fd| fd.as_raw_fd());
    let (mut child, streams) = Child::clone(plan, spec, name)?;
    let prepared = connect(lab, &child.process, lease.as_ref(), extras.capture)
        .and_then(|attached| child.configure(attached));
    let (netns, port, capture) = match prepared {
        Ok(attached) => attached,
        // If the child failed first, its own report says more.
        Err(e) => return Err(child.reports.failure_now().unwrap_or(e)),
    };
    let process = child.await_exec()?;
    if let Some(watcher) = WATCHER.get() {
        watcher(&Event::Started {
            name: &process.name,
            addr,
            pid: process.pid,
        });
    }
    let [stdin, stdout, stderr] = streams.map(|s| s.parent);
    Ok(Container {
        process,
        netns,
        addr,
        stdin,
        stdout,
        stderr,
        capture,
        _port: port,
        _lease: lease,
    })
}

/// A plan to execute `spec`'s program (a command, or the test binary for a
/// function) with its arguments and environment, as container `name`.
fn exec_plan(spec: &Spec, name: &str) -> Result<ChildPlan> {
    let mut env = spec.environment();
    let program = match &spec.program {
        Program::Command(program) => resolve(program, &env)?,
        Program::Function(function) => {
            env.push((
                FUNCTION_VAR.into(),
                FunctionRef(sys::fn_offset(*function)).encode().into(),
            ));
            current_exe()?
        }
    };
    let argv0 = match &spec.program {
        Program::Command(program) => program.clone(),
        Program::Function(_) => program.clone().into_os_string(),
    };
    let mut plan = ChildPlan::new(
        cstring(program.into_os_string().into_vec(), "program")?,
        std::iter::once(&argv0)
            .chain(&spec.args)
            .map(|a| cstring(a.as_bytes().to_vec(), "argument"))
            .collect::<Result<_>>()?,
        env.into_iter()
            .map(|(k, v)| {
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend(v.into_vec());
                cstring(kv, "environment variable")
            })
            .collect::<Result<_>>()?,
    );
    plan.hostname = name.as_bytes().to_vec();
    Ok(plan)
}

/// Puts where the container's network lives into `plan`: its `eth0`'s
/// address and route (from `attach`'s lease, or the next free address), or
/// the outside namespace to join. Returns the lease.
fn attach_plan(lab: &Arc<LabInner>, plan: &mut ChildPlan, attach: Attach) -> Result<Option<Lease>> {
    match attach {
        Attach::Bridge(lease) => {
            let lease = match lease {
                Some(lease) => lease,
                None => lab.lease()?,
            };
            let subnet = lab.subnet();
            plan.net = Some(IfConfig {
                addr: lease.addr(),
                netmask: subnet.netmask(),
                broadcast: subnet.broadcast(),
                gateway: subnet.nth(1),
            });
            Ok(Some(lease))
        }
        Attach::Outside => {
            plan.join_netns = Some(lab.outside_ns().as_raw_fd());
            Ok(None)
        }
    }
}

/// A cloned child on its way to its program: its process, its reports and
/// the pipe that tells it to go on.
struct Child {
    process: Process,
    reports: Reports,
    go: File,
}

impl Child {
    /// Clones the child of `plan` with `spec`'s streams, and waits until it
    /// reported that it started.
    fn clone(mut plan: ChildPlan, spec: &Spec, name: String) -> Result<(Child, [StreamEnds; 3])> {
        let os = |what: &str| {
            let what = format!("{what} for container {name:?}");
            move |e| Error::os(what, e)
        };
        let (go_read, go_write) = sys::pipe().map_err(os("create a pipe"))?;
        let (report_read, report_write) = sys::pipe().map_err(os("create a pipe"))?;
        let streams = [
            stream(spec.stdio[0], true).map_err(os("set up standard input"))?,
            stream(spec.stdio[1], false).map_err(os("set up standard output"))?,
            stream(spec.stdio[2], false).map_err(os("set up standard error"))?,
        ];
        for (slot, ends) in plan.stdio.iter_mut().zip(&streams) {
            *slot = ends.child.as_ref().map(AsRawFd::as_raw_fd);
        }
        if spec.stderr_to_stdout {
            plan.stdio[2] = Some(plan.stdio[1].unwrap_or(libc::STDOUT_FILENO));
        }
        plan.go_read = go_read.as_raw_fd();
        plan.go_write = go_write.as_raw_fd();
        let cloning = spawner::clone(plan, report_write).map_err(os("clone"))?;
        let mut reports = Reports::new(report_read, name.as_str());
        match reports.next("start")? {
            Report::Started => {}
            other => return Err(reports.unexpected(other, "start")),
        }
        let pidfd = cloning
            .take_pidfd()
            .ok_or_else(|| os("take the pidfd")(io::Error::from(io::ErrorKind::NotFound)))?;
        // The child has its copies (and closed its copy of the write end).
        drop(go_read);
        let process = Process {
            name,
            pid: 0,
            pidfd,
            status: None,
        };
        let go = File::from(go_write);
        Ok((
            Child {
                process,
                reports,
                go,
            },
            streams,
        ))
    }

    /// Lets the child configure its network once the parent attached it,
    /// and, for a bridged container, waits until its port forwards.
    fn configure<T>(
        &mut self,
        attached: (T, Option<Port>, Option<Recording>),
    ) -> Result<(T, Option<Port>, Option<Recording>)> {
        self.go()?;
        if let (_, Some(port), _) = &attached {
            match self.reports.next("configure its network")? {
                Report::Configured => {}
                other => return Err(self.reports.unexpected(other, "configure its network")),
            }
            port.await_forwarding()?;
            self.go()?;
        }
        Ok(attached)
    }

    fn go(&mut self) -> Result<()> {
        self.go
            .write_all(&[1])
            .map_err(|e| Error::os(format!("start container {:?}", self.process.name), e))
    }

    /// Waits until the child executed its program; its process, with its pid.
    fn await_exec(mut self) -> Result<Process> {
        self.process.pid = match self.reports.next("execute its program")? {
            Report::Released { pid } => pid,
            other => return Err(self.reports.unexpected(other, "execute its program")),
        };
        Ok(self.process)
    }
}

/// The parent's part of a start: the child's network namespace, and for a
/// bridged container its veth, created with one end on the bridge and
/// `eth0` inside the child, and when asked a capture of that port.
fn connect(
    lab: &Arc<LabInner>,
    process: &Process,
    lease: Option<&Lease>,
    capture: bool,
) -> Result<(OwnedFd, Option<Port>, Option<Recording>)> {
    let Some(lease) = lease else {
        // The child has not joined the outside namespace yet: take it from the lab.
        let netns = lab
            .outside_ns()
            .try_clone()
            .map_err(|e| Error::os("duplicate the outside namespace's descriptor", e))?;
        return Ok((netns, None, None));
    };
    let netns = crate::kernel::netns::of_process(
        process.pidfd.as_fd(),
        &format!("container {:?}", process.name),
    )?;
    let name = lab.port_name();
    lab.rtnl().add_veth(
        &name,
        Some(lab.bridge_index()),
        &Peer {
            name: "eth0",
            netns: netns.as_fd(),
            mac: Some(crate::network::lab::mac_for(lease.addr())),
        },
    )?;
    let port = Port {
        lab: Arc::clone(lab),
        name,
    };
    let capture = if capture {
        Some(Recording::start(lab.lab_ns().as_fd(), &port.name)?)
    } else {
        None
    };
    Ok((netns, Some(port), capture))
}

/// A container's port on the bridge (the lab's end of its veth), taken off
/// the bridge when dropped.
struct Port {
    lab: Arc<LabInner>,
    name: String,
}

impl Port {
    /// Waits until the bridge forwards on the port, and the bridge itself
    /// is up (it has carrier once a port forwards): only then is the
    /// container reachable (a frame sent earlier is dropped, and ARP
    /// retries only after a second).
    fn await_forwarding(&self) -> Result<()> {
        crate::network::lab::wait_for(
            &self.name,
            "forward on the bridge (no carrier, or the bridge's port state machine is stuck)",
            || {
                let mut rtnl = self.lab.rtnl();
                Ok(rtnl.link_state(&self.name)?.forwarding
                    && rtnl.link_state(self.lab.bridge())?.up)
            },
        )
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        // Detaching is synchronous and cheap. The device itself goes with
        // the container's network namespace, which the kernel destroys (in
        // batches) once the container is reaped; deleting it here would wait
        // for an RCU barrier each time.
        match self.lab.rtnl().detach(&self.name) {
            Err(Error::Netlink { source, .. }) if source.raw_os_error() == Some(libc::ENODEV) => {}
            Err(e) => eprintln!("netns-harness: {e}"),
            Ok(()) => {}
        }
    }
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
    addr: Ipv4Addr,
    stdin: Option<File>,
    stdout: Option<File>,
    stderr: Option<File>,
    /// The capture of its port, when its extras asked for one.
    capture: Option<Recording>,
    /// Held for its `Drop`: takes the port off the bridge.
    _port: Option<Port>,
    /// Held for its `Drop`: returns the address.
    _lease: Option<Lease>,
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Container {
    /// The container's name, also its hostname.
    pub fn name(&self) -> &str {
        &self.process.name
    }

    /// The address of its `eth0` (for a process on the outside host, the
    /// outside address).
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// Its network namespace, e.g. for [`Prober::in_netns`](crate::probe::Prober::in_netns).
    pub fn netns(&self) -> std::os::fd::BorrowedFd<'_> {
        self.netns.as_fd()
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
    }
}
