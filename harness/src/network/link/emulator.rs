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
//! The emulation lives as long as the process that set it (and the
//! container): when that process ends, nothing carries the container's
//! frames any more, until the lab is gone.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Conditions, Direction, Distribution, End, Loss, derive_seed};
use crate::common::error::{Error, Result};
use crate::kernel::frames::{PortSocket, VNET_HDR_LEN, VNET_NEEDS_CSUM};
use crate::kernel::rtnl::Peer;
use crate::kernel::rtnl::Rtnl;
use crate::kernel::{netns, sys};

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

/// A pseudo-random generator: SplitMix64 over a counter from the seed.
struct Rng {
    seed: u64,
    n: u64,
}

impl Rng {
    fn new(seed: u64) -> Self {
        Self { seed, n: 0 }
    }

    /// Uniform in [0, 1).
    fn next(&mut self) -> f64 {
        self.n += 1;
        (derive_seed(self.seed, self.n) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether an event of probability `percent` % happens.
    fn hit(&mut self, percent: f64) -> bool {
        percent > 0.0 && self.next() * 100.0 < percent
    }

    /// A standard normal deviate (Box-Muller), clipped at ±4.
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next().max(f64::MIN_POSITIVE), self.next());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()).clamp(-4.0, 4.0)
    }
}

/// Flips one bit of `frame` (a virtio header, then the frame), after
/// finishing its checksum if that was left to do, so that the flip shows
/// as a wrong checksum, as on a wire. An unsegmented (GSO) frame is left
/// alone.
fn corrupt(frame: &mut [u8], rng: &mut Rng) {
    let field = |at: usize| usize::from(u16::from_le_bytes([frame[at], frame[at + 1]]));
    if frame.len() <= VNET_HDR_LEN || frame[1] != 0 {
        return;
    }
    if frame[0] & VNET_NEEDS_CSUM != 0 {
        let start = VNET_HDR_LEN + field(6);
        let at = start + field(8);
        if at + 2 > frame.len() {
            return;
        }
        // RFC 1071 over the rest, whose checksum field holds the pseudo
        // header's sum.
        let mut sum: u32 = frame[start..]
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        frame[at..at + 2].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        frame[0] &= !VNET_NEEDS_CSUM;
    }
    let len = frame.len() - VNET_HDR_LEN;
    let at = VNET_HDR_LEN + ((rng.next() * len as f64) as usize).min(len - 1);
    frame[at] ^= 1 << ((rng.next() * 8.0) as u32).min(7);
}

/// What the emulator does to the next frame, and the state it keeps.
struct Params {
    conditions: Conditions,
    seed: u64,
    rng: Rng,
    /// The last draw of correlated random loss.
    last: f64,
    /// Gilbert-Elliott: in the bad state.
    bad: bool,
    /// When the rate limit is free to send the next frame.
    rate_free: Instant,
}

impl Params {
    fn new(conditions: Conditions, seed: u64) -> Self {
        Self {
            conditions,
            seed,
            rng: Rng::new(seed),
            last: 0.0,
            bad: false,
            rate_free: Instant::now(),
        }
    }

    /// Whether the next frame is lost, as netem decides it.
    fn lost(&mut self) -> bool {
        match self.conditions.loss {
            Loss::None => false,
            Loss::Random {
                percent,
                correlation,
            } => {
                let mut u = self.rng.next();
                if correlation > 0.0 {
                    let rho = correlation / 100.0;
                    u = u * (1.0 - rho) + self.last * rho;
                    self.last = u;
                }
                u * 100.0 < percent
            }
            Loss::GilbertElliott {
                p,
                r,
                one_minus_h,
                one_minus_k,
            } => {
                if self.bad {
                    if self.rng.hit(r) {
                        self.bad = false;
                    }
                    self.rng.hit(one_minus_h)
                } else {
                    if self.rng.hit(p) {
                        self.bad = true;
                    }
                    self.rng.hit(one_minus_k)
                }
            }
        }
    }

    /// The delay of the next frame: latency and jitter, or none for a
    /// frame picked to be reordered (sent ahead of the delayed ones).
    fn delay(&mut self) -> Duration {
        let c = &self.conditions;
        if c.reorder > 0.0 && self.rng.hit(c.reorder) {
            return Duration::ZERO;
        }
        let jitter = c.jitter.as_secs_f64();
        let offset = match c.distribution {
            Distribution::Uniform => (self.rng.next() * 2.0 - 1.0) * jitter,
            Distribution::Normal => self.rng.normal() * jitter,
        };
        Duration::from_secs_f64((c.latency.as_secs_f64() + offset).max(0.0))
    }

    /// The copies of `frame` to send and when: none when it is lost, two
    /// when it is duplicated, corrupted, delayed and rate-limited;
    /// `backlog` is the bytes waiting for the rate limit.
    fn schedule(&mut self, frame: &[u8], now: Instant, backlog: usize) -> Vec<(Instant, Vec<u8>)> {
        if self.lost() {
            return Vec::new();
        }
        let copies = 1 + usize::from(self.rng.hit(self.conditions.duplicate));
        let mut out = Vec::with_capacity(copies);
        for _ in 0..copies {
            let mut copy = frame.to_vec();
            if self.rng.hit(self.conditions.corrupt) {
                corrupt(&mut copy, &mut self.rng);
            }
            let mut due = now + self.delay();
            if let Some(rate) = self.conditions.rate {
                let queue = self.conditions.queue.map_or(usize::MAX, |q| q as usize);
                if backlog + copy.len() > queue {
                    continue;
                }
                let start = due.max(self.rate_free);
                due = start + Duration::from_secs_f64(copy.len() as f64 * 8.0 / rate as f64);
                self.rate_free = due;
            }
            out.push((due, copy));
        }
        out
    }
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
    /// The bridge the port goes back to.
    bridge: u32,
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

/// Emulates `conditions` (with their seed) in `direction` on the port
/// `index` of `port` (its lab end), or stops emulating that direction
/// (`None`); the wire starts with the first direction and stops, the port
/// back on its bridge, when neither has conditions left.
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
                let wire = start(port, rtnl, index, &name, both)?;
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
            rtnl.set_master(index, wire.bridge)?;
            drop(wire);
            rtnl.delete(&name)?;
            crate::network::lab::wait_for(&port.name, "forward on the bridge again", || {
                Ok(rtnl.link_state(&port.name)?.forwarding)
            })
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
    let params = Arc::new(Mutex::new(params));
    let (stop_read, stop_write) =
        sys::pipe().map_err(|e| Error::os("create a pipe for a link emulator", e))?;
    let shared = Arc::clone(&params);
    let thread = std::thread::Builder::new()
        .name(format!("netns-harness-{name}"))
        .spawn(move || carry(&socket, &bridge_side, &stop_read, &shared))
        .map_err(|e| Error::os("start a link emulator thread", e))?;
    Ok(Wire {
        params,
        bridge,
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

/// The wire's loop: frames from the port go to the bridge with the `Out`
/// conditions, frames from the bridge go to the port with the `In` ones,
/// until `stop` is closed or a side fails.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, seed: u64, frames: usize) -> Vec<usize> {
        let mut params = Params::new(text.parse().unwrap(), seed);
        let now = Instant::now();
        (0..frames)
            .filter(|_| !params.schedule(&[0; 100], now, 0).is_empty())
            .collect()
    }

    #[test]
    fn the_same_seed_loses_the_same_frames_and_another_seed_others() {
        let a = run("loss=30%", 7, 2000);
        assert_eq!(a, run("loss=30%", 7, 2000));
        assert_ne!(a, run("loss=30%", 8, 2000));
        let lost = 2000 - a.len();
        assert!((500..700).contains(&lost), "{lost}");
    }

    #[test]
    fn bursts_lose_their_mean() {
        let kept = run("gemodel=2%/20%", 1, 20_000).len();
        let lost = 1.0 - kept as f64 / 20_000.0;
        // p / (p + r) = 0.0909.
        assert!((0.07..0.11).contains(&lost), "{lost}");
    }

    #[test]
    fn delays_stay_within_latency_and_jitter_and_the_rate_spaces_frames() {
        let mut params = Params::new("latency=50ms jitter=10ms".parse().unwrap(), 3);
        let now = Instant::now();
        for _ in 0..1000 {
            let (due, _) = params.schedule(&[0; 10], now, 0).remove(0);
            let delay = due - now;
            assert!(delay >= Duration::from_millis(40) && delay <= Duration::from_millis(60));
        }
        let mut params = Params::new("rate=8mbit".parse().unwrap(), 3);
        let first = params.schedule(&[0; 1000], now, 0).remove(0).0;
        let second = params.schedule(&[0; 1000], now, 0).remove(0).0;
        // 1000 bytes at 1 MB/s: 1 ms each.
        assert_eq!(second - first, Duration::from_millis(1));
    }
}
