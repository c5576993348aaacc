//! Conditions emulated in userspace, for kernels without netem: the
//! container's port is taken off the bridge and a veth pair put there
//! instead (`em-<port>` on the bridge, `ew-<port>` its other end); a thread
//! of the process that set the conditions carries every frame between the
//! port and `ew-<port>` through packet sockets, losing, duplicating,
//! corrupting, delaying, reordering and rate-limiting them as netem would,
//! from a seeded generator: frames from the container with the
//! [`Direction::Out`] conditions, frames to it with the [`Direction::In`]
//! ones. No TUN device is needed, so it works rootless. The conditions
//! are kept, as text, in `em-<port>`'s alias, where anyone reads them back
//! from the kernel.
//!
//! Another link (the uplink) is emulated on the end that sends, one
//! direction per wire: an nf_tables rule owned by the wire (`meta mark !=
//! EMULATED_MARK fwd to "ew-<end>"` at the end's egress) hands what it
//! sends to `ew-<end>`; the thread reads it from `em-<end>` and sends it on
//! the end again, marked.
//!
//! The emulation lives as long as the process that set it (and the
//! container): when that process ends, nothing carries the container's
//! frames any more, until the lab is gone.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Conditions, Direction, End};
use crate::common::error::{Error, Result};
use crate::kernel::frames::{EMULATED_MARK, PortSocket, VNET_HDR_LEN};
use crate::kernel::netlink::Socket;
use crate::kernel::nftables::{self, FaultHook, FaultTable};
use crate::kernel::rtnl::Peer;
use crate::kernel::rtnl::Rtnl;
use crate::kernel::{netns, sys};

mod model;
use model::Params;

/// The largest frame read: an unsegmented (GSO) one of 64 KiB, its
/// Ethernet and virtio headers.
const FRAME_MAX: usize = VNET_HDR_LEN + 14 + 65_536;

/// The name of the bridge's end of the veth pair that stands in for port
/// `port` (`prefix` `em`), or of its emulator's end (`ew`).
fn pair_name(prefix: &str, port: &str) -> String {
    let mut name = format!("{prefix}-{port}");
    name.truncate(15);
    name
}

/// The name of the link whose alias holds port `port`'s emulated
/// conditions.
pub(crate) fn alias_link(port: &str) -> String {
    pair_name("em", port)
}

/// The alias of a wire's bridge end: the conditions of both directions.
fn alias(params: &[Params; 2]) -> String {
    let text = |p: &Params| match p.conditions.is_random() {
        true => p.conditions.clone().seed(p.seed).to_string(),
        false => p.conditions.to_string(),
    };
    format!("out: {}; in: {}", text(&params[0]), text(&params[1]))
}

/// The conditions of `direction` in a wire's alias, if it has any there.
pub(crate) fn from_alias(alias: &str, direction: Direction) -> Option<Conditions> {
    let (out, into) = alias.strip_prefix("out: ")?.split_once("; in: ")?;
    let text = match direction {
        Direction::Out => out,
        Direction::In => into,
    };
    let mut conditions: Conditions = text.parse().ok()?;
    if !conditions.shapes() {
        return None;
    }
    if !conditions.is_random() {
        conditions.seed = None;
    }
    Some(conditions)
}

/// A running wire: its thread, and what it does each way.
struct Wire {
    params: Arc<Mutex<[Params; 2]>>,
    /// The bridge the port goes back to, for a container's port.
    bridge: Option<u32>,
    /// For another link, the redirect of its frames to the emulator: an
    /// nf_tables rule owned by this socket.
    _redirect: Option<FaultTable>,
    /// Closing it stops the thread.
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The wires this process runs, by the lab namespace (device and inode of
/// its descriptor) and the name of the port.
type Key = (u64, u64, String);
static WIRES: Mutex<Vec<(Key, Wire)>> = Mutex::new(Vec::new());

fn key(netns: BorrowedFd<'_>, port: &str) -> Result<Key> {
    let stat =
        rustix::fs::fstat(netns).map_err(|e| Error::os("inspect a network namespace", e.into()))?;
    Ok((stat.st_dev, stat.st_ino, port.to_owned()))
}

fn wires() -> std::sync::MutexGuard<'static, Vec<(Key, Wire)>> {
    WIRES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Emulates `conditions` (with their seed) on interface `index` of
/// `port`, or stops (`None`): for a container's port (its lab end), in
/// `direction`, both ways in one wire that stops, the port back on its
/// bridge, when neither has conditions left; for another link's end,
/// what it sends (`direction` is [`Direction::Out`]).
pub(crate) fn set(
    port: &End,
    rtnl: &mut Rtnl,
    index: u32,
    direction: Direction,
    conditions: Option<(&Conditions, u64)>,
) -> Result<()> {
    let key = key(port.netns.as_fd(), &port.name)?;
    let name = alias_link(&port.name);
    let mut wires = wires();
    let at = wires.iter().position(|(k, _)| *k == key);
    let params = match conditions {
        Some((c, seed)) => Params::new(c.clone(), seed),
        None => Params::new(Conditions::default(), 0),
    };
    let Some(at) = at else {
        return match conditions {
            Some(_) => {
                let mut both = [
                    Params::new(Conditions::default(), 0),
                    Params::new(Conditions::default(), 0),
                ];
                both[direction.index()] = params;
                let wire = match port.bridge_port {
                    true => start(port, rtnl, index, &name, both)?,
                    false => start_plain(port, rtnl, index, &name, both)?,
                };
                wires.push((key, wire));
                Ok(())
            }
            None => Ok(()),
        };
    };
    let text = {
        let mut both = wires[at]
            .1
            .params
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        both[direction.index()] = params;
        if both.iter().all(|p| !p.conditions.shapes()) {
            None
        } else {
            Some(alias(&both))
        }
    };
    match text {
        Some(text) => {
            let bridge_end = rtnl.link_index(&name)?;
            rtnl.set_alias(bridge_end, &text)
        }
        None => {
            let (_, wire) = wires.remove(at);
            let bridge = wire.bridge;
            if let Some(bridge) = bridge {
                netns::run_in(port.netns.as_fd(), || arp_ignore(&port.name, false))?;
                rtnl.set_master(index, bridge)?;
            }
            drop(wire);
            rtnl.delete(&name)?;
            match bridge {
                Some(_) => {
                    crate::network::lab::wait_for(&port.name, "forward on the bridge again", || {
                        Ok(rtnl.link_state(&port.name)?.forwarding)
                    })
                }
                None => Ok(()),
            }
        }
    }
}

/// How [`emulated`] starts the line of port `port`.
pub(crate) fn emulated_line(port: &str) -> String {
    format!("link of {port} emulated: ")
}

/// The wires this process runs, one line each: the port and its
/// conditions both ways.
pub(crate) fn emulated() -> Vec<String> {
    wires()
        .iter()
        .map(|((_, _, port), wire)| {
            let both = wire.params.lock().unwrap_or_else(PoisonError::into_inner);
            format!("{}{}", emulated_line(port), alias(&both))
        })
        .collect()
}

/// Deletes the veth pair that stood in for `port`, whose emulator went
/// with another process (a test's body, which emulated its own link).
pub(crate) fn forget(rtnl: &mut Rtnl, port: &str) -> Result<()> {
    rtnl.delete(&alias_link(port))
}

/// Stops the wire of `port` of the lab `netns` without putting the port
/// back (it is going away), if this process runs one, and deletes its
/// veth pair.
pub(crate) fn release(rtnl: &mut Rtnl, netns: BorrowedFd<'_>, port: &str) -> Result<()> {
    let mut wires = wires();
    if wires.is_empty() {
        return Ok(());
    }
    let key = key(netns, port)?;
    if let Some(at) = wires.iter().position(|(k, _)| *k == key) {
        drop(wires.remove(at));
        rtnl.delete(&alias_link(port))?;
    }
    Ok(())
}

/// Puts a veth pair on the port's bridge in its place, and starts the
/// thread between them.
fn start(port: &End, rtnl: &mut Rtnl, index: u32, name: &str, params: [Params; 2]) -> Result<Wire> {
    let bridge = rtnl
        .master(&port.name)?
        .ok_or_else(|| Error::InvalidConditions {
            conditions: params
                .iter()
                .map(|p| p.conditions.to_string())
                .collect::<Vec<_>>()
                .join(" / "),
            reason: format!(
                "{} is on no bridge, so its conditions cannot be emulated",
                port.name
            ),
        })?;
    let far = pair_name("ew", &port.name);
    rtnl.add_veth(
        name,
        Some(bridge),
        &Peer {
            name: &far,
            netns: port.netns.as_fd(),
            mac: None,
        },
    )?;
    let started = (|| {
        // Like every link made in the lab's namespace, the pair has no
        // IPv6: its own stack sends nothing onto the bridge.
        let far_index = rtnl.link_index(&far)?;
        rtnl.set_up(far_index)?;
        let bridge_end = rtnl.link_index(name)?;
        rtnl.set_alias(bridge_end, &alias(&params))?;
        let open = |index, what: &str| {
            PortSocket::open(index)
                .map_err(|e| Error::os(format!("open a packet socket on {what}"), e))
        };
        let sockets = netns::run_in(port.netns.as_fd(), || {
            // Off the bridge, the port is an interface of the lab's own
            // stack, which would answer the container's ARP requests for
            // the gateway with the port's address (weak host model): the
            // container would then reach the gateway past the emulator.
            arp_ignore(&port.name, true)?;
            Ok((open(index, &port.name)?, open(far_index, &far)?))
        })?;
        crate::network::lab::wait_for(name, "forward on the bridge", || {
            Ok(rtnl.link_state(name)?.forwarding)
        })?;
        rtnl.set_master(index, 0)?;
        rtnl.set_up(index)?;
        Ok(sockets)
    })();
    let (socket, bridge_side) = match started {
        Ok(sockets) => sockets,
        Err(e) => {
            let _ = rtnl.delete(name);
            return Err(e);
        }
    };
    spawn(name, socket, bridge_side, params, Some(bridge), None)
}

/// Makes the calling thread's namespace ignore (`ignore`) or answer the
/// ARP requests that arrive on `link` (`net.ipv4.conf.<link>.arp_ignore`:
/// 8, or the default 0).
fn arp_ignore(link: &str, ignore: bool) -> Result<()> {
    std::fs::write(
        format!("/proc/sys/net/ipv4/conf/{link}/arp_ignore"),
        if ignore { "8" } else { "0" },
    )
    .map_err(|e| Error::os(format!("set arp_ignore on {link}"), e))
}

/// Hands what interface `index` of `end` sends to a veth pair of its own
/// (`em-<end>`, `ew-<end>`: `fwd` from its egress to `ew-`, for all but the
/// emulator's marked frames), and starts the thread that sends them on
/// the interface again, marked.
fn start_plain(
    end: &End,
    rtnl: &mut Rtnl,
    index: u32,
    name: &str,
    params: [Params; 2],
) -> Result<Wire> {
    let far = pair_name("ew", &end.name);
    rtnl.add_veth(
        name,
        None,
        &Peer {
            name: &far,
            netns: end.netns.as_fd(),
            mac: None,
        },
    )?;
    let started = (|| {
        let (reader, sender, nft) = netns::run_in(end.netns.as_fd(), || {
            // The pair's own stack must send nothing the emulator would
            // take for the link's.
            for link in [name, far.as_str()] {
                let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{link}/disable_ipv6"), "1");
            }
            let reader_index = crate::kernel::sys::if_index(name)
                .map_err(|e| Error::os(format!("look up {name}"), e))?;
            let os = |what: String| move |e| Error::os(what, e);
            Ok((
                PortSocket::open(reader_index)
                    .map_err(os(format!("open a packet socket on {name}")))?,
                PortSocket::marked(index)
                    .map_err(os(format!("open a packet socket on {}", end.name)))?,
                Socket::open(libc::NETLINK_NETFILTER).map_err(os(format!(
                    "open an nf_tables socket in the {} namespace",
                    end.label
                )))?,
            ))
        })?;
        for link in [name, far.as_str()] {
            let link = rtnl.link_index(link)?;
            rtnl.set_up(link)?;
        }
        let alias_index = rtnl.link_index(name)?;
        rtnl.set_alias(alias_index, &alias(&params))?;
        let mut rule: Vec<nftables::Expression> = nftables::mark_is_not(EMULATED_MARK).into();
        rule.extend(nftables::forward_to(rtnl.link_index(&far)?));
        let redirect = FaultTable::install(
            nft,
            end.label,
            &FaultHook::Device {
                name: end.name.clone(),
                egress: true,
            },
            &format!("emulate what {} sends", end.name),
            vec![rule],
        )?;
        Ok((reader, sender, redirect))
    })();
    let (reader, sender, redirect) = match started {
        Ok(started) => started,
        Err(e) => {
            let _ = rtnl.delete(name);
            return Err(e);
        }
    };
    spawn(name, reader, sender, params, None, Some(redirect))
}

/// Starts the thread of a wire between `a` and `b` (see [`carry`]).
fn spawn(
    name: &str,
    a: PortSocket,
    b: PortSocket,
    params: [Params; 2],
    bridge: Option<u32>,
    redirect: Option<FaultTable>,
) -> Result<Wire> {
    let params = Arc::new(Mutex::new(params));
    let (stop_read, stop_write) =
        sys::pipe().map_err(|e| Error::os("create a pipe for a link emulator", e))?;
    let shared = Arc::clone(&params);
    let thread = std::thread::Builder::new()
        .name(format!("netns-harness-{name}"))
        .spawn(move || carry(&a, &b, &stop_read, &shared))
        .map_err(|e| Error::os("start a link emulator thread", e))?;
    Ok(Wire {
        params,
        bridge,
        _redirect: redirect,
        stop: Some(stop_write),
        thread: Some(thread),
    })
}

/// A frame waiting for its time, in the order it is due, then arrived,
/// and the direction it goes.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    due: Instant,
    n: u64,
    direction: usize,
    frame: Vec<u8>,
}

/// The wire's loop: frames read from `port` are sent on `bridge` with the
/// `Out` conditions, frames read from `bridge` are sent on `port` with the
/// `In` ones (for another link than a container's, `port` is the pair's
/// end that gets the link's frames and `bridge` the link itself, which is
/// never read), until `stop` is closed or a side fails.
fn carry(port: &PortSocket, bridge: &PortSocket, stop: &OwnedFd, params: &Mutex<[Params; 2]>) {
    let mut queue: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    let mut backlog = [0usize; 2];
    let mut n = 0u64;
    let mut buf = vec![0u8; FRAME_MAX];
    loop {
        let now = Instant::now();
        while queue.peek().is_some_and(|Reverse(p)| p.due <= now) {
            let Some(Reverse(pending)) = queue.pop() else {
                break;
            };
            backlog[pending.direction] -= pending.frame.len();
            // A frame a side refuses (it is down) is lost, as on a wire.
            let _ = match pending.direction {
                0 => bridge.send(&pending.frame),
                _ => port.send(&pending.frame),
            };
        }
        let wait = queue.peek().map_or(Duration::from_secs(1), |Reverse(p)| {
            p.due.saturating_duration_since(now)
        });
        let fds = [
            port.as_fd().as_raw_fd(),
            bridge.as_fd().as_raw_fd(),
            stop.as_raw_fd(),
        ];
        match sys::poll_any(&fds, wait) {
            Ok(Some(2)) | Err(_) => return,
            Ok(_) => {}
        }
        for direction in 0..2 {
            loop {
                let read = match direction {
                    0 => port.read(&mut buf),
                    _ => bridge.read(&mut buf),
                };
                let len = match read {
                    Ok(Some(len)) => len,
                    Ok(None) => break,
                    Err(_) => return,
                };
                let now = Instant::now();
                let mut both = params.lock().unwrap_or_else(PoisonError::into_inner);
                for (due, frame) in both[direction].schedule(&buf[..len], now, backlog[direction]) {
                    backlog[direction] += frame.len();
                    n += 1;
                    queue.push(Reverse(Pending {
                        due,
                        n,
                        direction,
                        frame,
                    }));
                }
            }
        }
    }
}
