//! The keeper's side ([`crate::network::keeper`] is the test processes'):
//! its launcher, its socket, and a thread per test process that hands out
//! views of the shared labs and takes back what the process leaves when it
//! goes.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use super::{Lab, LabInner, Lease};
use crate::common::protocol::{KeeperRole, Reply, Request};
use crate::common::subnet::Stack;
use crate::kernel::rtnl::Rtnl;
use crate::kernel::seqpacket::{Bound, Channel, Listener};
use crate::kernel::{rootless, sys, userns};
use crate::network::keeper::{BLOCK, command};
use netlink_packet_route::link::LinkAttribute;

/// Runs this process as `role` says, and exits: a launcher starts the
/// keeper; the keeper serves until the nextest run is gone. Called before
/// `main`.
pub(crate) fn run(role: KeeperRole) -> ! {
    let code = match role {
        KeeperRole::Launch { socket, watch_pid } => match launch(&socket, watch_pid) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("netns-harness: cannot start the keeper of the run's labs: {e}");
                1
            }
        },
        KeeperRole::Keep {
            listener_fd,
            watch_fd,
        } => {
            // SAFETY: the launcher left these two open for this process,
            // and nothing else in it owns them.
            let (listener, watch) =
                unsafe { (sys::adopt_fd(listener_fd), sys::adopt_fd(watch_fd)) };
            i32::from(keep(listener, &watch).is_err())
        }
    };
    std::process::exit(code)
}

/// Takes the name `socket` and listens on it, and starts the keeper with
/// it and a pidfd of `watch_pid`; nothing when another has the name.
fn launch(socket: &str, watch_pid: u32) -> crate::Result<()> {
    let os = |what: &'static str| move |e| crate::Error::os(what, e);
    let listener = match Bound::bind(socket) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Ok(()),
        bound => bound
            .and_then(Bound::listen)
            .map_err(os("listen on the keeper's socket"))?,
    };
    let watch = sys::pidfd_open(watch_pid).map_err(os("open a pidfd of the nextest run"))?;
    // Nothing else of the test process reaches the keeper.
    sys::cloexec_from(3).map_err(os("mark the launcher's descriptors close-on-exec"))?;
    for fd in [listener.as_fd(), watch.as_fd()] {
        sys::clear_cloexec(fd).map_err(os("pass descriptors to the keeper"))?;
    }
    let role = KeeperRole::Keep {
        listener_fd: listener.as_fd().as_raw_fd(),
        watch_fd: watch.as_raw_fd(),
    };
    command(&role, Stdio::null())?
        .spawn()
        .map_err(os("start the keeper"))?;
    Ok(())
}

/// The keeper's own user namespace, when it is rootless.
static OWN_USERNS: OnceLock<Option<OwnedFd>> = OnceLock::new();

/// Serves on `listener` until the process `watch` refers to exits.
fn keep(listener: OwnedFd, watch: &OwnedFd) -> std::io::Result<()> {
    for fd in [listener.as_fd(), watch.as_fd()] {
        sys::set_cloexec(fd)?;
    }
    let listener = Listener::from(listener);
    rootless::init();
    // Before the first process is served.
    let own = rootless::is_rootless()
        .then(|| std::fs::File::open("/proc/self/ns/user").map(OwnedFd::from))
        .transpose()?;
    OWN_USERNS.get_or_init(|| own);
    userns::lab_userns();
    let fds = [listener.as_fd().as_raw_fd(), watch.as_raw_fd()];
    loop {
        match sys::poll_any(&fds, Duration::from_secs(3600))? {
            // A failed accept (the process gave up, or descriptors ran out
            // for a moment) loses that process only; so does a thread that
            // cannot start.
            Some(0) => match listener.accept() {
                Ok(channel) => {
                    let serving = std::thread::Builder::new()
                        .name("keeper".to_owned())
                        .spawn(move || serve_one(&channel, &Lab::shared_with));
                    if serving.is_err() {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            },
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
        self.lab.inner.detach_ports(&self.prefix);
    }
}

impl LabInner {
    /// Takes the ports named `prefix…` that are still on the bridge off it:
    /// those a process that is gone left (a test process of a keeper's
    /// run, a test's body killed with its peers), before their addresses
    /// go to others.
    pub(crate) fn detach_ports(&self, prefix: &str) {
        let mut rtnl = self.rtnl();
        let ports = ports(&mut rtnl, self.bridge_index()).unwrap_or_default();
        for port in ports.iter().filter(|p| p.starts_with(prefix)) {
            if let Err(e) = rtnl.detach(port) {
                tracing::warn!(port, error = %e, "a port left on the bridge stays");
            }
        }
    }
}

/// The names of the ports of bridge `master` (`ip link show master <master>`).
fn ports(rtnl: &mut Rtnl, master: u32) -> crate::Result<Vec<String>> {
    Ok(rtnl
        .links()?
        .into_iter()
        .filter(|link| link.attributes.contains(&LinkAttribute::Controller(master)))
        .filter_map(|link| {
            link.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::IfName(name) => Some(name),
                _ => None,
            })
        })
        .collect())
}

/// Serves one test process until it closes its connection, with the labs
/// `lab_of` each stack; only a process of the keeper's own user.
fn serve_one(channel: &Channel, lab_of: &dyn Fn(Stack) -> crate::Result<Lab>) {
    if channel.peer_uid().ok() != Some(sys::geteuid()) {
        return;
    }
    let mut held: Vec<Held> = Vec::new();
    while let Ok((bytes, _)) = channel.recv(None) {
        let sent = match Request::decode(&bytes) {
            None => break,
            Some(Request::Hello) => hello(channel),
            Some(Request::Lab(stack)) => match lab_of(stack) {
                Ok(lab) => {
                    let prefix = lab.inner.view_prefix();
                    let mut lab = Held {
                        lab,
                        prefix,
                        leases: Vec::new(),
                    };
                    let addrs = lab.lease(BLOCK);
                    let inner = &lab.lab.inner;
                    let view = inner.view(lab.prefix.clone(), addrs, Vec::new());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Spec;
    use crate::kernel::rtnl::Peer;

    fn ask(process: &Channel, request: Request) -> (Reply, Vec<OwnedFd>) {
        process.send(&request.encode(), &[]).unwrap();
        let (bytes, fds) = process.recv(Some(Duration::from_secs(30))).unwrap();
        (Reply::decode(&bytes).unwrap(), fds)
    }

    #[test]
    fn a_process_that_goes_leaves_no_port_on_the_bridge_and_gives_its_addresses_back() {
        // 61 container addresses: one block takes them all.
        let lab = Lab::builder().subnet("10.245.7.0/26").build().unwrap();
        let keeper_lab = lab.clone();
        let (keeper, process) = Channel::pair().unwrap();
        let server = std::thread::spawn(move || serve_one(&keeper, &|_| Ok(keeper_lab.clone())));

        let (reply, fds) = ask(&process, Request::Lab(Stack::V4));
        let Reply::Lab(view) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(view.addrs.len(), 61);
        assert!(view.port_prefix.starts_with("vt"), "{}", view.port_prefix);
        let [lab_ns, outside_ns]: [OwnedFd; 2] = fds.try_into().unwrap();
        // The keeper's own handle has nothing left; more is none.
        let exhausted = lab.spawn(&Spec::command("true")).unwrap_err();
        assert!(
            matches!(exhausted, crate::Error::AddressesExhausted { .. }),
            "{exhausted}"
        );
        assert_eq!(
            ask(&process, Request::Addresses(Stack::V4, 8)).0,
            Reply::Addresses(Vec::new())
        );
        assert!(matches!(
            ask(&process, Request::Addresses(Stack::V6, 8)).0,
            Reply::Refused(_)
        ));

        // The process's handle works on the keeper's bridge: a container of
        // it reaches the keeper's gateway.
        let prefix = view.port_prefix.clone();
        let adopted = Lab::from_inner(LabInner::adopt(view, lab_ns, outside_ns, None).unwrap());
        let gateway = lab.gateway().to_string();
        let ping = adopted
            .spawn(&Spec::command("ping").args(["-c1", "-W5", &gateway]))
            .unwrap()
            .output(Duration::from_secs(10))
            .unwrap();
        assert!(ping.status.success(), "{ping:?}");
        // It dies with a port still on the bridge.
        let inner = &lab.inner;
        let left = format!("{prefix}ff");
        let lab_ns = inner.lab_ns().as_fd();
        let peer = Peer {
            name: &format!("{prefix}fe"),
            netns: lab_ns,
            mac: None,
        };
        inner
            .rtnl()
            .add_veth(&left, Some(inner.bridge_index()), &peer)
            .unwrap();
        let ports_now = ports(&mut inner.rtnl(), inner.bridge_index()).unwrap();
        assert!(ports_now.contains(&left), "{ports_now:?}");
        drop(adopted);
        drop(process);
        server.join().unwrap();

        // Its port is off the bridge, its addresses are the lab's again.
        let ports = ports(&mut inner.rtnl(), inner.bridge_index()).unwrap();
        assert!(!ports.iter().any(|p| p.starts_with(&prefix)), "{ports:?}");
        let status = lab.spawn(&Spec::command("true")).unwrap().wait().unwrap();
        assert!(status.success());
        inner.rtnl().delete(&left).unwrap();
    }
}
