//! Links of a lab and what they do to packets: [`Conditions`] per
//! direction (a `netem` and a `tbf` queueing discipline on the sending
//! end, over rtnetlink; where the kernel has no netem, a container's link
//! is emulated in userspace, see `emulator`), and a link taken down and
//! brought up again.
//!
//! A link is a veth pair: a container's `eth0` and its port on the bridge,
//! or the lab's uplink and the outside host's `eth0`. [`Direction::Out`]
//! is what the first end sends (the container, or the lab towards the
//! outside), [`Direction::In`] what it receives; each is shaped on the end
//! that sends it, as `tc qdisc … dev <that end>` would.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

pub use netns_harness_conditions::{Conditions, Distribution, Loss};

use crate::common::error::{Error, Result};
use crate::kernel::netns;
use crate::kernel::rtnl::{DEFAULT_MTU, Rtnl, Shaping, needs_netem};

mod emulator;
pub(crate) use emulator::{emulated, emulated_line, forget, release};

/// Which way across a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// What the container sends (for the uplink: what the lab sends to
    /// the outside).
    Out,
    /// What the container receives (for the uplink: what the outside sends
    /// to the lab).
    In,
}

impl Direction {
    /// Both directions, `Out` first.
    pub const BOTH: [Direction; 2] = [Direction::Out, Direction::In];

    fn index(self) -> usize {
        match self {
            Direction::Out => 0,
            Direction::In => 1,
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Out => "out",
            Direction::In => "in",
        })
    }
}

/// The seed of the `n`th random condition set by this process: SplitMix64
/// of the process's base seed plus `n`, so that a rerun with the same base
/// ([`SEED_VAR`](crate::common::settings::SEED_VAR)) gives every link the
/// seed it had, when the test sets them in the same order.
pub(crate) fn derive_seed(base: u64, n: u64) -> u64 {
    let mut z = base.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seed: [`SEED_VAR`](crate::common::settings::SEED_VAR) when it is
/// set, else a random one, small enough to be typed back.
pub(crate) fn choose_seed() -> u64 {
    crate::common::settings::get().seed.unwrap_or_else(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.finish() % 1_000_000_000
    })
}

/// The base seed of this process, chosen once (a test's container is
/// given its test's seed in [`SEED_VAR`](crate::common::settings::SEED_VAR)).
fn base_seed() -> u64 {
    static BASE: OnceLock<u64> = OnceLock::new();
    *BASE.get_or_init(choose_seed)
}

/// A seed for conditions that need one and have none.
fn next_seed() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    derive_seed(base_seed(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// One end of a link: an interface in a namespace, with a netlink socket
/// there once one was needed.
pub(crate) struct End {
    netns: OwnedFd,
    name: String,
    /// The namespace, in errors.
    label: &'static str,
    /// A bridge port, whose MTU the bridge would take for all its ports.
    bridge_port: bool,
    rtnl: OnceLock<Mutex<Rtnl>>,
}

impl End {
    pub(crate) fn new(netns: OwnedFd, name: &str, label: &'static str, bridge_port: bool) -> Self {
        Self {
            netns,
            name: name.to_owned(),
            label,
            bridge_port,
            rtnl: OnceLock::new(),
        }
    }

    /// Runs `f` with a netlink socket in the end's namespace and the
    /// index of its interface.
    fn with<T>(&self, f: impl FnOnce(&mut Rtnl, u32) -> Result<T>) -> Result<T> {
        let rtnl = match self.rtnl.get() {
            Some(rtnl) => rtnl,
            None => {
                let opened = netns::run_in(self.netns.as_fd(), || Rtnl::open(self.label))?;
                self.rtnl.get_or_init(|| Mutex::new(opened))
            }
        };
        let mut rtnl = rtnl.lock().unwrap_or_else(PoisonError::into_inner);
        let index = rtnl.link_index(&self.name)?;
        f(&mut rtnl, index)
    }
}

/// A link of a lab, from one end's point of view: set its
/// [`Conditions`] in each [`Direction`], read them back from the kernel,
/// take it down. Get one from [`Container::link`](crate::Container::link),
/// [`Net::link`](crate::Net::link) or [`Lab::uplink`](crate::Lab::uplink).
///
/// ```no_run
/// use netns_harness::{Conditions, Direction, Lab, Spec};
/// let lab = Lab::shared()?;
/// let peer = lab.spawn(&Spec::command("sleep").arg("60"))?;
/// let link = peer.link()?;
/// link.set(Direction::Out, &"latency=50ms loss=1%".parse().unwrap())?;
/// assert_eq!(link.conditions(Direction::Out)?.latency.as_millis(), 50);
/// link.clear()?;
/// # Ok::<(), netns_harness::Error>(())
/// ```
pub struct Link {
    /// The first end (the container's, or the lab's uplink), then the far one.
    ends: [End; 2],
    description: String,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl Link {
    pub(crate) fn new(near: End, far: End, description: String) -> Self {
        Self {
            ends: [near, far],
            description,
        }
    }

    /// What it is, e.g. `eth0 of container "c3"`.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The first end's namespace, interface name and label.
    pub(crate) fn first_end(&self) -> (BorrowedFd<'_>, &str, &'static str) {
        let end = &self.ends[0];
        (end.netns.as_fd(), &end.name, end.label)
    }

    fn sender(&self, direction: Direction) -> &End {
        &self.ends[direction.index()]
    }

    /// Gives `direction` the `conditions`, replacing what it had (the
    /// packets queued for a latency stay queued). Random choices use the
    /// conditions' seed, or one derived from the process's (see
    /// [`SEED_VAR`](crate::common::settings::SEED_VAR)). Nothing is changed
    /// when the conditions are invalid.
    pub fn set(&self, direction: Direction, conditions: &Conditions) -> Result<()> {
        let invalid = |reason: String| Error::InvalidConditions {
            conditions: conditions.to_string(),
            reason,
        };
        conditions.validate().map_err(|e| invalid(e.to_string()))?;
        let end = self.sender(direction);
        if end.bridge_port && conditions.mtu.is_some() {
            return Err(invalid(format!(
                "the {direction} direction of {} is sent by a bridge port, and a bridge takes \
                 the smallest MTU of its ports for all of them; set the MTU on the other \
                 direction (the container's own eth0)",
                self.description
            )));
        }
        let seed = conditions.seed.unwrap_or_else(|| {
            if conditions.is_random() {
                next_seed()
            } else {
                0
            }
        });
        let shaped = end.with(|rtnl, index| {
            let mtu = conditions.mtu.unwrap_or(DEFAULT_MTU);
            if rtnl.mtu(&end.name)? != mtu {
                rtnl.set_mtu(index, mtu)?;
            }
            rtnl.shape(index, conditions, seed)
        });
        let emulated = match shaped {
            // What the kernel cannot do, the emulator does.
            Err(Error::MissingKernelFeature { .. }) if needs_netem(conditions) => {
                end.with(|rtnl, index| rtnl.unshape(index))?;
                Some((conditions, seed))
            }
            Err(e) => return Err(e),
            Ok(()) => None,
        };
        let (carrier, slot) = self.emulated_at(direction);
        carrier.with(|rtnl, index| emulator::set(carrier, rtnl, index, slot, emulated))
    }

    /// Where `direction`'s conditions are emulated, and in which slot: a
    /// container's port carries both ways; another link's ends, each what
    /// it sends.
    fn emulated_at(&self, direction: Direction) -> (&End, Direction) {
        match self.ends[1].bridge_port {
            true => (&self.ends[1], direction),
            false => (self.sender(direction), Direction::Out),
        }
    }

    /// Gives both directions the `conditions` (see [`Link::set`]).
    pub fn set_both(&self, conditions: &Conditions) -> Result<()> {
        Direction::BOTH
            .iter()
            .try_for_each(|&direction| self.set(direction, conditions))
    }

    /// Takes every condition off both directions.
    pub fn clear(&self) -> Result<()> {
        self.set_both(&Conditions::default())
    }

    /// The conditions in force in `direction`, as the kernel reports them
    /// (with the seed in use). The kernel does not report a delay
    /// distribution's table: a normal distribution reads back as uniform.
    pub fn conditions(&self, direction: Direction) -> Result<Conditions> {
        Ok(self.shaping(direction)?.conditions)
    }

    /// The conditions of `direction` and the packets they dropped.
    pub(crate) fn shaping(&self, direction: Direction) -> Result<Shaping> {
        let end = self.sender(direction);
        let (carrier, slot) = self.emulated_at(direction);
        let emulated = carrier
            .with(|rtnl, _| rtnl.alias(&emulator::alias_link(&carrier.name)))?
            .and_then(|alias| emulator::from_alias(&alias, slot));
        end.with(|rtnl, index| {
            let mut shaping = match emulated {
                Some(conditions) => Shaping {
                    conditions,
                    dropped: None,
                },
                None => rtnl.shaping(index)?,
            };
            // The kernel picks a seed of its own when given none.
            if !shaping.conditions.is_random() {
                shaping.conditions.seed = None;
            }
            let mtu = rtnl.mtu(&end.name)?;
            if mtu != DEFAULT_MTU {
                shaping.conditions.mtu = Some(mtu);
            }
            Ok(shaping)
        })
    }

    /// Takes the link down until the returned guard is dropped: nothing
    /// crosses it either way. The far end is set down, so that the
    /// container (or the lab) keeps its addresses and routes and sees its
    /// `eth0` lose its carrier, as when a cable is pulled.
    pub fn down(&self) -> Result<LinkDown<'_>> {
        let far = &self.ends[1];
        far.with(|rtnl, index| rtnl.set_down(index))?;
        Ok(LinkDown { link: self })
    }
}

/// A link taken down by [`Link::down`]; dropping it brings the link up
/// again (and for a container's link, waits until the bridge forwards on
/// it again).
#[must_use = "the link comes back up when this is dropped"]
pub struct LinkDown<'a> {
    link: &'a Link,
}

impl LinkDown<'_> {
    /// Brings the link up again now, saying whether that worked.
    pub fn up(self) -> Result<()> {
        let result = self.bring_up();
        std::mem::forget(self);
        result
    }

    fn bring_up(&self) -> Result<()> {
        let far = &self.link.ends[1];
        far.with(|rtnl, index| {
            rtnl.set_up(index)?;
            crate::network::lab::wait_for(&far.name, "come back up", || {
                let state = rtnl.link_state(&far.name)?;
                // An emulated port is off its bridge: up is enough.
                Ok(state.up && (state.forwarding || rtnl.master(&far.name)?.is_none()))
            })
        })?;
        let near = &self.link.ends[0];
        near.with(|rtnl, _| {
            crate::network::lab::wait_for(&near.name, "regain its carrier", || {
                Ok(rtnl.link_state(&near.name)?.up)
            })
        })
    }
}

impl Drop for LinkDown<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.bring_up() {
            eprintln!(
                "netns-harness: bringing {} back up: {e}",
                self.link.description
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_derived_alike_from_the_same_base_and_apart_from_others() {
        assert_eq!(derive_seed(42, 0), derive_seed(42, 0));
        assert_ne!(derive_seed(42, 0), derive_seed(42, 1));
        assert_ne!(derive_seed(42, 0), derive_seed(43, 0));
    }
}
