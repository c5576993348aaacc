//! What the test processes of a nextest run and the keeper of their
//! shared labs tell each other, on a connection each process opens before
//! `main` ([`Request`] one way, [`Reply`] the other, one message each),
//! and what the keeper is told when it is started ([`KeeperRole`]).

use std::net::Ipv4Addr;

use super::LabView;
use super::codec::{Reader, Writer, unhex};
use crate::common::subnet::Stack;

/// Set in the environment of a keeper being started ([`KeeperRole`]).
pub(crate) const KEEPER_ROLE_VAR: &str = "NETNS_HARNESS_KEEPER_ROLE";

/// What a keeper being started is to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeeperRole {
    /// The abstract name of its socket.
    pub socket: String,
    /// The pid of the nextest run (the test processes' parent): it exits
    /// when that process does.
    pub watch_pid: u32,
    /// `true` in the short-lived process that only starts the keeper
    /// (so that the keeper is no test process's child).
    pub launch: bool,
}

impl KeeperRole {
    /// As the text of an environment variable.
    pub(crate) fn encode(&self) -> String {
        Writer::default()
            .str(&self.socket)
            .u32(self.watch_pid)
            .u8(u8::from(self.launch))
            .finish_hex()
    }

    /// The role `text` encodes, if it encodes one.
    pub(crate) fn decode(text: &str) -> Option<Self> {
        let bytes = unhex(text)?;
        let mut r = Reader(&bytes);
        let (socket, watch_pid, launch) = (r.str()?, r.u32()?, r.u8()? != 0);
        r.end(KeeperRole {
            socket,
            watch_pid,
            launch,
        })
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
