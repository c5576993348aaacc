//! What the test processes of a nextest run and the keeper of their
//! shared labs tell each other, on a connection each process opens before
//! `main` ([`Request`] one way, [`Reply`] the other, one message each),
//! and what the keeper is told when it is started ([`KeeperRole`]).

use std::net::Ipv4Addr;
use std::os::fd::RawFd;

use super::LabView;
use super::codec::{Reader, Writer, unhex};
use crate::common::subnet::Stack;

/// Set in the environment of a keeper being started ([`KeeperRole`]).
pub(crate) const KEEPER_ROLE_VAR: &str = "NETNS_HARNESS_KEEPER_ROLE";

/// What a keeper being started is to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeeperRole {
    /// The launcher, which a test process starts and waits for: it takes
    /// the socket name `socket` and listens on it, opens a pidfd of the
    /// nextest run `watch_pid`, starts the keeper with both and exits (at
    /// once, when another keeper has the name).
    Launch {
        /// The abstract name of the keeper's socket.
        socket: String,
        /// The pid of the nextest run (the test processes' parent).
        watch_pid: u32,
    },
    /// The keeper, serving on its inherited listening socket until the
    /// process its inherited pidfd refers to exits.
    Keep {
        /// The listening socket.
        listener_fd: RawFd,
        /// The pidfd of the nextest run.
        watch_fd: RawFd,
    },
}

impl KeeperRole {
    /// As the text of an environment variable.
    pub(crate) fn encode(&self) -> String {
        let mut w = Writer::default();
        match self {
            KeeperRole::Launch { socket, watch_pid } => w.u8(0).str(socket).u32(*watch_pid),
            KeeperRole::Keep {
                listener_fd,
                watch_fd,
            } => w.u8(1).fd(*listener_fd).fd(*watch_fd),
        };
        w.finish_hex()
    }

    /// The role `text` encodes, if it encodes one.
    pub(crate) fn decode(text: &str) -> Option<Self> {
        let bytes = unhex(text)?;
        let mut r = Reader(&bytes);
        let role = match r.u8()? {
            0 => KeeperRole::Launch {
                socket: r.str()?,
                watch_pid: r.u32()?,
            },
            1 => KeeperRole::Keep {
                listener_fd: r.fd()?,
                watch_fd: r.fd()?,
            },
            _ => return None,
        };
        r.end(role)
    }
}

/// What a test process asks its keeper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// The user namespaces to join ([`Reply::Welcome`]).
    Hello,
    /// A handle on the shared lab of this stack ([`Reply::Lab`]).
    Lab(Stack),
    /// More addresses on the shared lab of this stack ([`Reply::Addresses`]).
    Addresses(Stack, u32),
}

impl Request {
    /// The request's bytes.
    pub(crate) fn encode(self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            Request::Hello => w.u8(0),
            Request::Lab(stack) => w.u8(1).stack(stack),
            Request::Addresses(stack, count) => w.u8(2).stack(stack).u32(count),
        };
        w.finish()
    }

    /// The request `bytes` encode, if they encode one.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        let request = match r.u8()? {
            0 => Request::Hello,
            1 => Request::Lab(r.stack()?),
            2 => Request::Addresses(r.stack()?, r.u32()?),
            _ => return None,
        };
        r.end(request)
    }
}

/// What a keeper answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Comes with the descriptor of the keeper's lab user namespace and,
    /// when `rootless`, of the user namespace the keeper entered before
    /// `main` (which a rootless test process joins instead of making its
    /// own).
    Welcome {
        /// Whether the keeper runs in a user namespace of its own.
        rootless: bool,
    },
    /// Comes with the descriptors of the lab's namespace and of its
    /// outside's: what the process's handle may do there.
    Lab(LabView),
    /// Addresses reserved for the process.
    Addresses(Vec<Ipv4Addr>),
    /// The keeper could not do it, and says why.
    Refused(String),
}

impl Reply {
    /// The reply's bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            Reply::Welcome { rootless } => w.u8(0).u8(u8::from(*rootless)),
            Reply::Lab(view) => w.u8(1).view(view),
            Reply::Addresses(addrs) => w.u8(2).addrs(addrs),
            Reply::Refused(reason) => w.u8(3).str(reason),
        };
        w.finish()
    }

    /// The reply `bytes` encode, if they encode one.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        let reply = match r.u8()? {
            0 => Reply::Welcome {
                rootless: r.u8()? != 0,
            },
            1 => Reply::Lab(r.view()?),
            2 => Reply::Addresses(r.addrs()?),
            3 => Reply::Refused(r.str()?),
            _ => return None,
        };
        r.end(reply)
    }
}
