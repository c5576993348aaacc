//! What the harness's processes tell each other, each message a type with
//! exactly one encoding and one decoding:
//!
//! - [`Context`]: a runner to its test container, in an environment
//!   variable (hex of its bytes);
//! - [`Outcome`]: a test container to its runner, on the result pipe: how
//!   the body ended, and the peers it started;
//! - [`FunctionRef`]: which function of the executable a re-executed
//!   container runs, in an environment variable;
//! - [`Report`]: a cloned child (or the spawner) to the parent, on the
//!   report pipe: fixed-size messages that the child encodes without
//!   allocating, some naming a [`Stage`] of its setup.
//!
//! The byte encodings share one small codec ([`Writer`], [`Reader`]):
//! integers in little-endian order, strings and lists with a 32-bit length
//! in front, and nothing left over at the end.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

use crate::common::nat::Uplink;
use crate::common::subnet::Addressing;

mod codec;
use codec::*;
mod keeper;
pub(crate) use keeper::{KEEPER_ROLE_VAR, KeeperRole, Reply, Request};

macro_rules! stages {
    ($($(#[doc = $doc:literal])* $stage:ident => $describe:literal,)*) => {
        /// Where a container's setup stopped, when a step between `clone`
        /// and `execve` failed.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) enum Stage {
            $($(#[doc = $doc])* $stage,)*
        }

        impl Stage {
            /// Every stage, in declaration order (a stage's code is its index).
            const ALL: &[Stage] = &[$(Stage::$stage,)*];

            /// What the child was doing, for error messages.
            pub(crate) fn describe(self) -> &'static str {
                match self {
                    $(Stage::$stage => $describe,)*
                }
            }
        }
    };
}

stages! {
    /// Being cloned (reported by the spawner).
    Clone => "being cloned",
    /// Arming its parent-death signal.
    ParentDeath => "arming its parent-death signal",
    /// Waiting for the parent to say the network is ready.
    Sync => "waiting for its network",
    /// Joining the lab's user namespace.
    JoinUserns => "joining the lab's user namespace",
    /// Creating its namespaces inside the lab's user namespace.
    Unshare => "creating its namespaces",
    /// Joining an existing network namespace.
    JoinNetns => "joining the network namespace",
    /// Making mount propagation private.
    MountPrivate => "making mount propagation private",
    /// Mounting a fresh `/proc`.
    MountProc => "mounting /proc",
    /// Mounting a fresh `/sys`.
    MountSys => "mounting /sys",
    /// Taking the trees it keeps (`/proc`, `/sys`, `/dev`, the workspace)
    /// and putting them back below fresh mounts or in its new root.
    Carry => "carrying /proc, /sys, /dev and the workspace into its filesystem (open_tree needs Linux 5.2)",
    /// Building its new root.
    NewRoot => "building its root filesystem",
    /// Mounting an overlay of the host's filesystem or of its root.
    Overlay => "mounting an overlay (overlayfs)",
    /// Pivoting into its new root.
    PivotRoot => "pivoting into its root filesystem (pivot_root)",
    /// Mounting fresh `tmpfs` where tests write.
    MountTmpfs => "mounting a fresh tmpfs on /tmp, /run, /var/tmp, /dev or /dev/shm",
    /// Making the links of its minimal `/dev`.
    Dev => "making the links of its /dev (/dev/fd, /dev/stdin, …)",
    /// Giving the container its own `/etc` files.
    PrivateFiles => "giving the container its own /etc/hosts, /etc/resolv.conf and /etc/hostname",
    /// Setting the hostname.
    Hostname => "setting the hostname",
    /// Setting the NIS domain name.
    Domainname => "setting the NIS domain name",
    /// Bringing `lo` up.
    Loopback => "bringing lo up",
    /// Giving `eth0` its address.
    Address => "configuring eth0",
    /// Waiting for `eth0` to be operationally up.
    Carrier => "waiting for carrier on eth0 (30 s)",
    /// Adding the default route.
    Route => "adding the default route",
    /// Giving `eth0` its IPv6 address.
    Address6 => "giving eth0 its IPv6 address (is IPv6 disabled on this kernel?)",
    /// Adding the IPv6 default route.
    Route6 => "adding the IPv6 default route",
    /// Connecting standard input and output, and inherited descriptors.
    Stdio => "connecting standard streams and inherited descriptors",
    /// Closing every other descriptor on exec.
    CloseInherited => "marking inherited descriptors close-on-exec (close_range needs Linux 5.11)",
    /// Resetting signal handlers and the signal mask.
    Signals => "resetting signal handlers",
    /// Executing the program.
    Exec => "executing the program",
}

impl Stage {
    fn code(self) -> u16 {
        self as u16
    }

    fn from_code(code: u16) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }
}

/// One message on a container's report pipe, from the child (or, for
/// [`Report::Released`] and a failed clone, from the spawner thread).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Report {
    /// The child runs with its parent-death signal armed, and its parent
    /// was alive after that.
    Started,
    /// Its `eth0` is configured; it waits for the second "go".
    Configured,
    /// A step failed with this `errno`; the child exits.
    Failed {
        /// The step.
        stage: Stage,
        /// The kernel's error.
        errno: i32,
    },
    /// The child executed its program or exited: the spawner's
    /// `CLONE_VFORK` clone returned (with its pid).
    Released {
        /// The child's pid in the test process's PID namespace.
        pid: u32,
    },
}

impl Report {
    /// The size of every encoded report (below `PIPE_BUF`: written at once).
    pub(crate) const LEN: usize = 8;

    const STARTED: u16 = 1;
    const CONFIGURED: u16 = 2;
    const FAILED: u16 = 3;
    const RELEASED: u16 = 4;

    /// The report's bytes: a tag, a stage code and a 32-bit value.
    pub(crate) fn encode(self) -> [u8; Self::LEN] {
        let (tag, stage, value) = match self {
            Report::Started => (Self::STARTED, 0, 0),
            Report::Configured => (Self::CONFIGURED, 0, 0),
            Report::Failed { stage, errno } => (Self::FAILED, stage.code(), errno.cast_unsigned()),
            Report::Released { pid } => (Self::RELEASED, 0, pid),
        };
        let mut out = [0; Self::LEN];
        out[..2].copy_from_slice(&tag.to_ne_bytes());
        out[2..4].copy_from_slice(&stage.to_ne_bytes());
        out[4..].copy_from_slice(&value.to_ne_bytes());
        out
    }

    /// The report `bytes` encode, if they encode one.
    pub(crate) fn decode(bytes: [u8; Self::LEN]) -> Option<Self> {
        let tag = u16::from_ne_bytes([bytes[0], bytes[1]]);
        let stage = u16::from_ne_bytes([bytes[2], bytes[3]]);
        let value = u32::from_ne_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        Some(match tag {
            Self::STARTED => Report::Started,
            Self::CONFIGURED => Report::Configured,
            Self::FAILED => Report::Failed {
                stage: Stage::from_code(stage)?,
                errno: value.cast_signed(),
            },
            Self::RELEASED => Report::Released { pid: value },
            _ => return None,
        })
    }
}

/// What a lab handle in a test container may do: the lab's settings, the
/// addresses reserved for its peers and the prefix of its port names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LabView {
    pub addressing: Addressing,
    pub uplink: Uplink,
    pub bridge: String,
    pub bridge_index: u32,
    pub port_prefix: String,
    /// How many namespaces a handle keeps ready (see [`LabBuilder::ahead`](crate::LabBuilder::ahead)).
    pub ahead: u32,
    pub addrs: Vec<Ipv4Addr>,
    /// The containers of the lab when the test started (the test's own
    /// among them), by name.
    pub hosts: Vec<HostEntry>,
}

/// A host of the lab by its names, as a line of a hosts file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HostEntry {
    /// Its addresses.
    pub addrs: Vec<IpAddr>,
    /// Its own name: a container's, the gateway's or the outside host's;
    /// none for the aliases of a process on the outside host.
    pub name: Option<String>,
    /// Its other names.
    pub aliases: Vec<String>,
}

impl HostEntry {
    /// Its name, then its aliases.
    pub(crate) fn names(&self) -> impl Iterator<Item = &String> {
        self.name.iter().chain(&self.aliases)
    }
}

/// What a test container learns from its runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Context {
    /// Its descriptor of the lab's network namespace.
    pub lab_fd: RawFd,
    /// Its descriptor of the outside's network namespace.
    pub outside_fd: RawFd,
    /// The write end of the pipe its [`Outcome`] goes to.
    pub result_fd: RawFd,
    /// Its own address.
    pub addr: Ipv4Addr,
    /// The name of its port on the bridge (the lab's end of its `eth0`).
    pub port: String,
    /// What its lab handle may do.
    pub view: LabView,
}

impl Context {
    /// The context as the text of an environment variable.
    pub(crate) fn encode(&self) -> String {
        let mut w = Writer::default();
        w.fd(self.lab_fd)
            .fd(self.outside_fd)
            .fd(self.result_fd)
            .addr(self.addr)
            .str(&self.port)
            .view(&self.view);
        w.finish_hex()
    }

    /// The context `text` encodes, if it encodes one.
    pub(crate) fn decode(text: &str) -> Option<Self> {
        let bytes = unhex(text)?;
        let mut r = Reader(&bytes);
        let (lab_fd, outside_fd, result_fd, addr) = (r.fd()?, r.fd()?, r.fd()?, r.addr()?);
        let port = r.str()?;
        let view = r.view()?;
        r.end(Context {
            lab_fd,
            outside_fd,
            result_fd,
            addr,
            port,
            view,
        })
    }
}

/// How a test body ended, as its container tells the runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BodyEnd {
    /// It returned `()` or `Ok`.
    Passed,
    /// It returned `Err`, with the error's `Debug` text.
    Returned(String),
    /// It panicked, with the panic's message.
    Panicked(String),
}

/// A peer a test body started, for the failure report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Peer {
    /// Its pid, as the body sees it.
    pub pid: u32,
    /// Its name.
    pub name: String,
    /// Its address.
    pub addr: IpAddr,
    /// How it ended; `None` while it runs.
    pub ended: Option<String>,
}

/// What a test container tells its runner once, at the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// How the body ended.
    pub end: BodyEnd,
    /// The peers it started, in order.
    pub peers: Vec<Peer>,
    /// The faults and emulated link conditions its process had in force
    /// when it panicked, or the emulated links it still had when it ended
    /// (they go with the process), one line each.
    pub in_force: Vec<String>,
}

impl Outcome {
    const PASSED: u8 = 0;
    const RETURNED: u8 = 1;
    const PANICKED: u8 = 2;

    /// The outcome's bytes, for the result pipe.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match &self.end {
            BodyEnd::Passed => w.u8(Self::PASSED),
            BodyEnd::Returned(error) => w.u8(Self::RETURNED).str(error),
            BodyEnd::Panicked(message) => w.u8(Self::PANICKED).str(message),
        };
        w.len(self.peers.len());
        for peer in &self.peers {
            w.u32(peer.pid).str(&peer.name).ip(peer.addr);
            match &peer.ended {
                None => w.u8(0),
                Some(how) => w.u8(1).str(how),
            };
        }
        w.len(self.in_force.len());
        for line in &self.in_force {
            w.str(line);
        }
        w.finish()
    }

    /// The outcome `bytes` encode, if they encode one.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        let end = match r.u8()? {
            Self::PASSED => BodyEnd::Passed,
            Self::RETURNED => BodyEnd::Returned(r.str()?),
            Self::PANICKED => BodyEnd::Panicked(r.str()?),
            _ => return None,
        };
        let count = r.len()?;
        let peers = (0..count)
            .map(|_| {
                let (pid, name, addr) = (r.u32()?, r.str()?, r.ip()?);
                let ended = match r.u8()? {
                    0 => None,
                    1 => Some(r.str()?),
                    _ => return None,
                };
                Some(Peer {
                    pid,
                    name,
                    addr,
                    ended,
                })
            })
            .collect::<Option<_>>()?;
        let count = r.len()?;
        let in_force = (0..count).map(|_| r.str()).collect::<Option<_>>()?;
        r.end(Outcome {
            end,
            peers,
            in_force,
        })
    }
}

/// Names the function a re-executed container runs ([`FunctionRef`]).
pub(crate) const FUNCTION_VAR: &str = "NETNS_HARNESS_FUNCTION";

/// A function of the running executable, as a distance from a fixed point
/// of it: the same in every process that runs the executable, wherever it
/// is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FunctionRef(pub u64);

impl FunctionRef {
    /// As the text of an environment variable.
    pub(crate) fn encode(self) -> String {
        Writer::default().u64(self.0).finish_hex()
    }

    /// The reference `text` encodes, if it encodes one.
    pub(crate) fn decode(text: &str) -> Option<Self> {
        let bytes = unhex(text)?;
        let mut r = Reader(&bytes);
        let offset = r.u64()?;
        r.end(FunctionRef(offset))
    }
}

#[cfg(test)]
mod tests;
