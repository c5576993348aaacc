//! The keeper's side: its launcher, its socket, and a thread per test
//! process that hands out views of the shared labs and takes back what the
//! process leaves when it goes.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;
use std::time::Duration;

use super::command;
use crate::common::protocol::{KeeperRole, LabView, Reply, Request};
use crate::kernel::seqpacket::{Bound, Channel};
use crate::kernel::{rootless, sys, userns};
use crate::network::lab::{Lab, Lease};

/// Runs this process as `role` says, and exits: a launcher starts the
/// keeper; the keeper serves until the nextest run is gone (or returns at
/// once when another keeper has the socket). Called before `main`.
pub(crate) fn run(role: KeeperRole) -> ! {
    let code = if role.launch {
        let keeper = KeeperRole {
            launch: false,
            ..role
        };
        let started = command(&keeper).and_then(|mut c| {
            c.spawn()
                .map_err(|e| crate::Error::os("start the keeper", e))
        });
        i32::from(started.is_err())
    } else {
        i32::from(serve(&role).is_err())
    };
    std::process::exit(code)
}

/// The keeper's own user namespace, when it is rootless.
static OWN_USERNS: OnceLock<Option<OwnedFd>> = OnceLock::new();

fn serve(role: &KeeperRole) -> std::io::Result<()> {
    let nextest = sys::pidfd_open(role.watch_pid)?;
    rootless::init();
    let bound = match Bound::bind(&role.socket) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Ok(()),
        bound => bound?,
    };
    // Before the first process asks for them.
    let own = rootless::is_rootless()
        .then(|| std::fs::File::open("/proc/self/ns/user").map(OwnedFd::from))
        .transpose()?;
    OWN_USERNS.get_or_init(|| own);
    userns::lab_userns();
    let listener = bound.listen()?;
    let fds = [listener.as_fd().as_raw_fd(), nextest.as_raw_fd()];
    loop {
        match sys::poll_any(&fds, Duration::from_secs(3600))? {
            Some(0) => {
                let channel = listener.accept()?;
                std::thread::spawn(move || serve_one(&channel));
            }
            // nextest is gone: so are the labs, with this process.
            Some(_) => return Ok(()),
            None => {}
        }
    }
}

/// What a test process holds of one lab.
struct Held {
    lab: Lab,
    /// The prefix of its port names.
    prefix: String,
    leases: Vec<Lease>,
}

impl Held {
    /// Up to `count` more addresses for the process.
    fn lease(&mut self, count: u32) -> Vec<Ipv4Addr> {
        let fresh: Vec<Lease> = std::iter::from_fn(|| self.lab.inner.lease().ok())
            .take(count as usize)
            .collect();
        let addrs = fresh.iter().map(Lease::addr).collect();
        self.leases.extend(fresh);
        addrs
    }

    /// Takes the process's ports that are still on the bridge (it was
    /// killed, or its containers' namespaces are still being dismantled)
    /// off it; its addresses then go back.
    fn release(self) {
        let inner = &self.lab.inner;
        let mut rtnl = inner.rtnl();
        let ports = rtnl.ports(inner.bridge_index()).unwrap_or_default();
        for port in ports.iter().filter(|p| p.starts_with(&self.prefix)) {
            let _ = rtnl.detach(port);
        }
    }
}

/// Serves one test process until it closes its connection; only a
/// process of the keeper's own user.
fn serve_one(channel: &Channel) {
    if channel.peer_uid().ok() != Some(sys::geteuid()) {
        return;
    }
    let mut held: Vec<Held> = Vec::new();
    while let Ok((bytes, _)) = channel.recv(None) {
        let sent = match Request::decode(&bytes) {
            None => break,
            Some(Request::Hello) => hello(channel),
            Some(Request::Lab(stack)) => match Lab::shared_with(stack) {
                Ok(lab) => {
                    let prefix = lab.inner.view_prefix();
                    let mut lab = Held {
                        lab,
                        prefix,
                        leases: Vec::new(),
                    };
                    let addrs = lab.lease(super::BLOCK);
                    let inner = &lab.lab.inner;
                    let view = LabView {
                        addressing: *inner.addressing(),
                        uplink: *inner.uplink(),
                        bridge: inner.bridge().to_owned(),
                        bridge_index: inner.bridge_index(),
                        port_prefix: lab.prefix.clone(),
                        addrs,
                        hosts: Vec::new(),
                    };
                    let fds = [inner.lab_ns().as_fd(), inner.outside_ns().as_fd()];
                    let sent = channel.send(&Reply::Lab(view).encode(), &fds);
                    held.push(lab);
                    sent
                }
                Err(e) => channel.send(&Reply::Refused(e.to_string()).encode(), &[]),
            },
            Some(Request::Addresses(stack, count)) => {
                let reply = match held.iter_mut().rev().find(|h| h.lab.stack() == stack) {
                    Some(lab) => Reply::Addresses(lab.lease(count)),
                    None => Reply::Refused(format!("no {stack:?} lab was asked for")),
                };
                channel.send(&reply.encode(), &[])
            }
        };
        if sent.is_err() {
            break;
        }
    }
    // The process is gone.
    for lab in held {
        lab.release();
    }
}

/// The keeper's user namespaces, to the process that asks.
fn hello(channel: &Channel) -> std::io::Result<()> {
    let own = OWN_USERNS.get().and_then(Option::as_ref).map(AsFd::as_fd);
    let reply = match userns::lab_userns() {
        Some(lab) => {
            let fds: Vec<BorrowedFd<'_>> = [Some(lab), own].into_iter().flatten().collect();
            return channel.send(
                &Reply::Welcome {
                    rootless: own.is_some(),
                }
                .encode(),
                &fds,
            );
        }
        None => Reply::Refused("the keeper has no lab user namespace".to_owned()),
    };
    channel.send(&reply.encode(), &[])
}
