//! The keeper of a nextest run's shared labs.
//!
//! `cargo nextest run` starts a process per test. Were each to build its
//! own shared lab, every test would pay for two namespaces, a bridge, an
//! uplink and a NAT, and for their teardown, which the kernel does in the
//! background while holding the locks the next process's setup needs.
//! Instead, the first test process of a run starts a *keeper*: a copy of
//! the test executable that builds the shared labs on demand and keeps them
//! until nextest exits. Every test process of the run connects to it
//! before `main` (a Unix socket with an abstract name made of the harness's
//! version, the user, nextest's run id and nextest's pid), joins its user
//! namespaces and adopts its labs as a test container adopts its runner's:
//! descriptors of the lab's namespaces, a prefix for its port names and a
//! block of addresses ([`Request`], [`Reply`]). When a process goes,
//! however it goes, the keeper takes its remaining ports off the bridge and
//! its addresses back.
//!
//! The keeper is nobody's child: a launcher the test process waits for
//! takes the socket's name, listens, starts the keeper with the listening
//! socket and exits. The keeper has no standard streams, inherits no other
//! descriptor of the test process, has a process group of its own, and
//! exits when nextest does; its labs, held by nothing else, go with it. A
//! test process connects only to a keeper of its own user. A process that
//! cannot reach a keeper builds its own labs, and says why.
//!
//! This is the test processes' side; the keeper's is `lab::keeping`.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::common::error::{Error, Result};
use crate::common::protocol::{KEEPER_ROLE_VAR, KeeperRole, LabView, Reply, Request};
use crate::common::subnet::Stack;
use crate::kernel::netns::SETUP_TIMEOUT;
use crate::kernel::seqpacket::Channel;
use crate::kernel::{rootless, sys, userns};

/// How many addresses a process gets at a time.
pub(crate) const BLOCK: u32 = 64;

/// How long a test process waits for its keeper to listen, and for room
/// in its socket's queue.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many keepers a test process starts at most (another keeper that
/// took the name may have died since).
const LAUNCHES: u32 = 3;

/// This process's connection to its run's keeper; `None` once broken (a
/// reply may be late: no later one would answer its own request).
pub(crate) struct Client {
    channel: Mutex<Option<Channel>>,
}

static CLIENT: OnceLock<Client> = OnceLock::new();
/// Why this process, a test process of a nextest run, has no keeper.
static MISSED: OnceLock<String> = OnceLock::new();

/// The name of the keeper's socket, when this process is a test process
/// that nextest started (one test, `--exact`, one process per test, the
/// parent `cargo-nextest`; a process a test started inherits the first
/// three, not the last). Every test executable of the run shares the
/// keeper of its harness's version.
fn socket_name() -> Option<String> {
    let run = std::env::var("NEXTEST_RUN_ID").ok()?;
    let mode = std::env::var("NEXTEST_EXECUTION_MODE").ok()?;
    let exact = std::env::args_os().any(|arg| arg == "--exact");
    let parent = std::os::unix::process::parent_id();
    let comm = std::fs::read_to_string(format!("/proc/{parent}/comm")).ok()?;
    (mode == "process-per-test" && exact && comm.trim_end() == "cargo-nextest").then(|| {
        format!(
            "netns-harness/{}/{}/{run}/{parent}",
            env!("CARGO_PKG_VERSION"),
            sys::geteuid(),
        )
    })
}

/// Connects a test process of a nextest run to the run's keeper, starting
/// it if need be, and joins its user namespaces; called before `main`,
/// before the process decides how it is privileged. Anything else does
/// nothing.
pub(crate) fn join() {
    let settings = crate::common::settings::get();
    if settings.keeper_off || (sys::geteuid() != 0 && settings.rootless_off) {
        return;
    }
    let Some(name) = socket_name() else {
        return;
    };
    match connect(&name).and_then(welcome) {
        Ok(client) => {
            let _ = CLIENT.set(client);
        }
        Err(e) => {
            let _ = MISSED.set(format!("{e}"));
        }
    }
}

fn failed(what: impl std::fmt::Display) -> Error {
    Error::os(
        format!("use the keeper of the run's labs: {what}"),
        io::ErrorKind::Other.into(),
    )
}

/// Connects to the keeper at `name`, starting one if there is none, and
/// checks that it runs as this process's user.
fn connect(name: &str) -> Result<Channel> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let mut launches = 0;
    let mut pause = Duration::from_micros(50);
    let channel = loop {
        match Channel::connect(name, CONNECT_TIMEOUT) {
            Ok(channel) => break channel,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(Error::os("connect to the keeper of the run's labs", e)),
        }
        if launches < LAUNCHES {
            launch(name)?;
            launches += 1;
        } else if Instant::now() >= deadline {
            return Err(failed(format!(
                "nothing listens on its socket {name:?} after {CONNECT_TIMEOUT:?}"
            )));
        } else {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    };
    let owner = channel
        .peer_uid()
        .map_err(|e| Error::os("find who runs the keeper of the run's labs", e))?;
    if owner != sys::geteuid() {
        return Err(failed(format!(
            "its socket {name:?} belongs to uid {owner}, not to this process's user"
        )));
    }
    Ok(channel)
}

/// Runs a launcher for a keeper at `name`, for the run of this process's
/// parent: it returns once the keeper listens, or another has the name.
fn launch(name: &str) -> Result<()> {
    let role = KeeperRole::Launch {
        socket: name.to_owned(),
        watch_pid: std::os::unix::process::parent_id(),
    };
    let mut launcher = command(&role, Stdio::inherit())?
        .spawn()
        .map_err(|e| Error::os("start the keeper of the run's labs", e))?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let status = loop {
        let waited = launcher
            .try_wait()
            .map_err(|e| Error::os("wait for the launcher of the run's keeper", e))?;
        if let Some(status) = waited {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = launcher.kill();
            let _ = launcher.wait();
            return Err(failed(format!(
                "its launcher did not finish within {CONNECT_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    if status.success() {
        Ok(())
    } else {
        Err(failed(format!(
            "its launcher failed ({status}), saying why on standard error"
        )))
    }
}

/// This executable in `role`: no standard input or output, `stderr`, no
/// working directory to hold, a process group of its own (so that
/// nextest's signals to a test's group miss it).
pub(crate) fn command(role: &KeeperRole, stderr: Stdio) -> Result<Command> {
    use std::os::unix::process::CommandExt;
    let exe =
        std::env::current_exe().map_err(|e| Error::os("find the test executable's path", e))?;
    let mut command = Command::new(exe);
    command
        .env(KEEPER_ROLE_VAR, role.encode())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .current_dir("/")
        .process_group(0);
    Ok(command)
}

/// Asks the keeper for its user namespaces and joins them: the lab user
/// namespace becomes this process's, and a rootless keeper's own user
/// namespace replaces the one this process would have entered.
fn welcome(channel: Channel) -> Result<Client> {
    let (reply, mut fds) = ask(&channel, Request::Hello)?;
    let Reply::Welcome { rootless } = reply else {
        return Err(unexpected(reply));
    };
    if fds.len() != 1 + usize::from(rootless) || rootless == (sys::geteuid() == 0) {
        return Err(failed("it sent the wrong user namespaces"));
    }
    let lab = fds.remove(0);
    if let Some(own) = fds.pop() {
        sys::join_user_namespace(own.as_fd())
            .map_err(|e| Error::os("join the keeper's user namespace", e))?;
        rootless::joined();
    }
    userns::adopt(lab);
    Ok(Client {
        channel: Mutex::new(Some(channel)),
    })
}

fn unexpected(reply: Reply) -> Error {
    match reply {
        Reply::Refused(reason) => failed(format!("it refused: {reason}")),
        other => failed(format!("an unexpected reply {other:?}")),
    }
}

/// Sends `request` and waits, at most [`SETUP_TIMEOUT`], for the reply.
fn ask(channel: &Channel, request: Request) -> Result<(Reply, Vec<OwnedFd>)> {
    let talk = |e| Error::os("talk to the keeper of the run's labs", e);
    channel.send(&request.encode(), &[]).map_err(talk)?;
    let (bytes, fds) = channel.recv(Some(SETUP_TIMEOUT)).map_err(talk)?;
    let reply = Reply::decode(&bytes).ok_or_else(|| failed("a reply that does not decode"))?;
    Ok((reply, fds))
}

/// The connection to the run's keeper, when this process has one (when it
/// should and has none, says why once, on standard error and as a
/// warning).
pub(crate) fn client() -> Option<&'static Client> {
    static SAID: std::sync::Once = std::sync::Once::new();
    if let Some(missed) = MISSED.get() {
        SAID.call_once(|| {
            tracing::warn!(
                reason = missed,
                "no keeper: this process builds its own labs"
            );
            eprintln!(
                "netns-harness: no keeper of the run's labs ({missed}); this process builds its own"
            );
        });
    }
    CLIENT.get()
}

impl Client {
    /// Asks the keeper; after a failure the connection is given up (a late
    /// reply would answer the next request).
    fn ask(&self, request: Request) -> Result<(Reply, Vec<OwnedFd>)> {
        let mut channel = self.channel.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(open) = channel.as_ref() else {
            return Err(failed("the connection broke earlier"));
        };
        let asked = ask(open, request);
        if asked.is_err() {
            *channel = None;
        }
        asked
    }

    /// A view of the keeper's shared lab of `stack`, with descriptors of
    /// its namespace and its outside's.
    pub(crate) fn lab(&self, stack: Stack) -> Result<(LabView, OwnedFd, OwnedFd)> {
        let (reply, fds) = self.ask(Request::Lab(stack))?;
        let Reply::Lab(view) = reply else {
            return Err(unexpected(reply));
        };
        let [lab_ns, outside_ns]: [OwnedFd; 2] = fds
            .try_into()
            .map_err(|_| failed("a lab came without its two namespaces"))?;
        Ok((view, lab_ns, outside_ns))
    }

    /// [`BLOCK`] more addresses on the keeper's shared lab of `stack`
    /// (fewer when it has fewer free).
    pub(crate) fn addresses(&self, stack: Stack) -> Result<Vec<Ipv4Addr>> {
        match self.ask(Request::Addresses(stack, BLOCK))? {
            (Reply::Addresses(addrs), _) => Ok(addrs),
            (reply, _) => Err(unexpected(reply)),
        }
    }
}
