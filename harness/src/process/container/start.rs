//! Starting a container: its plan, its clone, its veth on the bridge (or
//! the outside namespace), the go-aheads, and its `execve`.

use super::fs::{Root, open_program};
use super::*;
use crate::common::error::{Error, Result};
use crate::common::protocol::{FUNCTION_VAR, FunctionRef, Report};
use crate::kernel::packet::Recording;
use crate::kernel::prexec::{ChildPlan, IfConfig, V4Config, V6Config};
use crate::kernel::rtnl::Peer;
use crate::kernel::spawner::Reports;
use crate::kernel::sys;
use crate::network::hosts::Registration;
use crate::network::lab::warm::Slot;
use crate::network::lab::{LabInner, Lease};
use crate::network::link::{Direction, End, Link};
use crate::{common::names, kernel::spawner};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT_NAME: AtomicU32 = AtomicU32::new(0);

pub(crate) fn spawn(
    lab: &Arc<LabInner>,
    spec: &Spec,
    attach: Attach,
    mut extras: Extras,
) -> Result<Container> {
    // Whatever happens, the lab makes again what was taken ahead.
    let _refill = Refill(lab);
    let started = std::time::Instant::now();
    let name = match (&spec.name, &attach) {
        (Some(name), _) => name.clone(),
        (None, Attach::Bridge(_)) => format!("c{}", NEXT_NAME.fetch_add(1, Ordering::Relaxed)),
        (None, Attach::Outside) => "outside".to_owned(),
    };
    names::validate(&name)?;
    for alias in &spec.aliases {
        names::validate_host(alias)?;
    }
    // A process on the outside host is that host: its aliases name it,
    // its own name does not.
    let own_name = matches!(attach, Attach::Bridge(_)).then_some(name.as_str());
    // Before an address is taken (the registration checks again, with it).
    lab.hosts().check(own_name, &spec.aliases)?;
    let (mut plan, root) = exec_plan(spec, &name)?;
    let lease = match attach {
        Attach::Bridge(Some(lease)) => Some(lease),
        Attach::Bridge(None) => Some(lab.lease()?),
        Attach::Outside => None,
    };
    let addr = lease.as_ref().map_or(lab.uplink().outside, Lease::addr);
    let addrs = match lease {
        Some(_) => lab.addressing().addrs(addr),
        None => crate::network::lab::outside_addrs(lab.addressing(), lab.uplink()),
    };
    let (registration, hosts) = Registration::add(lab, own_name, &spec.aliases, addrs.clone())?;
    plan.fs = super::fs::plan(spec.fs, root.as_ref(), &name, &hosts)?;
    attach_plan(lab, &mut plan, lease.as_ref());
    // A bridged container joins a namespace made ahead when one is ready
    // (unless the test side named its port without taking one).
    let ahead = match (&plan.net, extras.ahead.take(), &extras.port) {
        (None, _, _) => None,
        (Some(_), Some(slot), _) => Some(slot),
        (Some(_), None, None) => lab.take_ahead(),
        (Some(_), None, Some(_)) => None,
    };
    if let (Some(slot), Some(net), Some(lease)) = (&ahead, &mut plan.net, &lease) {
        plan.join_netns = Some(slot.netns.as_raw_fd());
        // Its eth0 was made without one.
        net.mac = Some(crate::network::lab::mac_for(lease.addr()));
    }
    plan.keep.clone_from(&extras.inherit);
    plan.userns = crate::kernel::userns::lab_userns().map(|fd| fd.as_raw_fd());
    let (mut child, streams) = Child::clone(plan, spec, name)?;
    let prepared = connect(lab, &child.process, lease.as_ref(), &extras, ahead)
        .and_then(|attached| condition(attached, spec, &child.process.name))
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
            addr: addrs[0],
            pid: process.pid,
        });
    }
    let [stdin, stdout, stderr] = streams.map(|s| s.parent);
    tracing::debug!(container = process.name, addrs = ?addrs, pid = process.pid, elapsed = ?started.elapsed(), "container spawned");
    Ok(Container {
        process,
        netns,
        addrs,
        stdin,
        stdout,
        stderr,
        capture,
        _port: port,
        _names: registration,
        _lease: lease,
    })
}

/// Has the lab make the namespaces taken ahead again once a start is over
/// (whether it succeeded or not): while the test uses the container, not
/// while the container waits for the kernel.
struct Refill<'a>(&'a LabInner);

impl Drop for Refill<'_> {
    fn drop(&mut self) {
        self.0.refill_ahead();
    }
}

/// A plan to execute `spec`'s program (a command, or the test binary for a
/// function) with its arguments and environment, as container `name`,
/// and the root it runs in if `spec` gives one; its filesystem is
/// planned once its address (and so its `/etc/hosts`) is known.
pub(super) fn exec_plan(spec: &Spec, name: &str) -> Result<(ChildPlan, Option<Root>)> {
    let mut env = spec.environment();
    let root = spec.root.as_deref().map(Root::open).transpose()?;
    let program = match (&spec.program, &root) {
        (Program::Command(program), None) => resolve(program, &env)?,
        (Program::Command(program), Some(root)) => root.program(program, &env)?,
        (Program::Function(function), _) => {
            env.push((
                FUNCTION_VAR.into(),
                FunctionRef(sys::fn_offset(*function)).encode().into(),
            ));
            current_exe()?
        }
    };
    // A function in a root runs the test binary through a descriptor: the
    // root needs its loader, not the binary.
    let program_fd = match (&spec.program, &root) {
        (Program::Function(_), Some(root)) => {
            root.check_runs(&program, &format!("the test binary {}", program.display()))?;
            let fd = open_program(&program).map_err(|source| Error::CurrentExe {
                path: program.clone(),
                source,
            })?;
            Some(fd)
        }
        _ => None,
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
    plan.program_fd = program_fd;
    Ok((plan, root))
}

/// Puts where the container's network lives into `plan`: its `eth0`'s
/// address and route (from its lease), or without one the outside
/// namespace to join.
pub(super) fn attach_plan(lab: &LabInner, plan: &mut ChildPlan, lease: Option<&Lease>) {
    match lease {
        Some(lease) => {
            let lab = lab.addressing();
            let subnet = lab.subnet;
            let v4 = lab.stack.has_v4().then(|| V4Config {
                addr: lease.addr(),
                netmask: subnet.netmask(),
                broadcast: subnet.broadcast(),
                gateway: lab.gateway(),
            });
            let v6 = lab.addr6(lease.addr()).zip(lab.addr6(lab.gateway()));
            plan.net = Some(IfConfig {
                mac: None,
                v4,
                v6: v6.map(|(addr, gateway)| V6Config {
                    addr,
                    prefix: lab.subnet6.prefix(),
                    gateway,
                }),
            });
        }
        None => plan.join_netns = Some(lab.outside_ns().as_raw_fd()),
    }
}

/// A cloned child on its way to its program: its process, its reports and
/// the pipe that tells it to go on.
pub(super) struct Child {
    pub(super) process: Process,
    pub(super) reports: Reports,
    pub(super) go: File,
}

impl Child {
    /// Clones the child of `plan` with `spec`'s streams, and waits until it
    /// reported that it started.
    pub(super) fn clone(
        mut plan: ChildPlan,
        spec: &Spec,
        name: String,
    ) -> Result<(Child, [StreamEnds; 3])> {
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
        let cloning =
            spawner::clone(spawner::Lane::Now, plan, report_write).map_err(os("clone"))?;
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
    pub(super) fn configure<T>(
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

    pub(super) fn go(&mut self) -> Result<()> {
        self.go
            .write_all(&[1])
            .map_err(|e| Error::os(format!("start container {:?}", self.process.name), e))
    }

    /// Waits until the child executed its program; its process, with its pid.
    pub(super) fn await_exec(mut self) -> Result<Process> {
        self.process.pid = match self.reports.next("execute its program")? {
            Report::Released { pid } => pid,
            other => return Err(self.reports.unexpected(other, "execute its program")),
        };
        Ok(self.process)
    }
}

/// The parent's part of a start: the child's network namespace, and for a
/// bridged container its veth, created with one end on the bridge and
/// `eth0` inside the child (or both made `ahead`), and when asked a
/// capture of that port.
pub(super) fn connect(
    lab: &Arc<LabInner>,
    process: &Process,
    lease: Option<&Lease>,
    extras: &Extras,
    ahead: Option<Slot>,
) -> Result<(OwnedFd, Option<Port>, Option<Recording>)> {
    let Some(lease) = lease else {
        // The child has not joined the outside namespace yet: take it from the lab.
        let netns = lab
            .outside_ns()
            .try_clone()
            .map_err(|e| Error::os("duplicate the outside namespace's descriptor", e))?;
        return Ok((netns, None, None));
    };
    let (netns, name) = match ahead {
        Some(slot) => (slot.netns, slot.port),
        None => {
            let netns = crate::kernel::netns::of_process(
                process.pidfd.as_fd(),
                &format!("container {:?}", process.name),
            )?;
            let name = extras.port.clone().unwrap_or_else(|| lab.port_name());
            lab.rtnl().add_veth(
                &name,
                Some(lab.bridge_index()),
                &Peer {
                    name: "eth0",
                    netns: netns.as_fd(),
                    mac: Some(crate::network::lab::mac_for(lease.addr())),
                },
            )?;
            (netns, name)
        }
    };
    let port = Port {
        lab: Arc::clone(lab),
        name,
    };
    let capture = if extras.capture {
        Some(Recording::start(lab.lab_ns().as_fd(), &port.name)?)
    } else {
        None
    };
    Ok((netns, Some(port), capture))
}

/// Sets `spec`'s link conditions on a container's link, before the child
/// brings it up.
fn condition(
    attached: (OwnedFd, Option<Port>, Option<Recording>),
    spec: &Spec,
    name: &str,
) -> Result<(OwnedFd, Option<Port>, Option<Recording>)> {
    if spec.conditions.iter().all(Option::is_none) {
        return Ok(attached);
    }
    let link = link_of(attached.0.as_fd(), attached.1.as_ref(), name)?;
    for (direction, conditions) in Direction::BOTH.iter().zip(&spec.conditions) {
        if let Some(conditions) = conditions {
            link.set(*direction, conditions)?;
        }
    }
    Ok(attached)
}

/// A container's link: its `eth0` in `netns`, and its `port`.
pub(super) fn link_of(netns: BorrowedFd<'_>, port: Option<&Port>, name: &str) -> Result<Link> {
    let port = port.ok_or_else(|| Error::InvalidConditions {
        conditions: String::new(),
        reason: format!(
            "container {name:?} runs on the outside host, which has no link of its own; \
             use Lab::uplink for the link between the lab and the outside"
        ),
    })?;
    let dup = |fd: BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .map_err(|e| Error::os("duplicate a network namespace's descriptor", e))
    };
    Ok(Link::new(
        End::new(dup(netns)?, "eth0", "container", false),
        End::new(dup(port.lab.lab_ns().as_fd())?, &port.name, "lab", true),
        format!("eth0 of container {name:?}"),
    ))
}

/// A container's port on the bridge (the lab's end of its veth), taken off
/// the bridge when dropped.
pub(super) struct Port {
    pub(super) lab: Arc<LabInner>,
    pub(super) name: String,
}

impl Port {
    /// Waits until the bridge forwards on the port, and the bridge itself
    /// is up (it has carrier once a port forwards): only then is the
    /// container reachable (a frame sent earlier is dropped, and ARP
    /// retries only after a second).
    pub(super) fn await_forwarding(&self) -> Result<()> {
        crate::network::lab::wait_for(
            &self.name,
            "forward on the bridge (no carrier, or the bridge's port state machine is stuck)",
            || {
                let mut rtnl = self.lab.rtnl();
                let port = rtnl.link_state(&self.name)?;
                // A port whose conditions are emulated is off the bridge,
                // which its emulator's veth pair is on.
                let carried = port.forwarding || (port.up && rtnl.master(&self.name)?.is_none());
                Ok(carried && rtnl.link_state(self.lab.bridge())?.up)
            },
        )
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        let mut rtnl = self.lab.rtnl();
        if let Err(e) =
            crate::network::link::release(&mut rtnl, self.lab.lab_ns().as_fd(), &self.name)
        {
            eprintln!("netns-harness: {e}");
        }
        drop(rtnl);
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

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}
