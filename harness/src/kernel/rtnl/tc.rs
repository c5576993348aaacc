//! Queueing disciplines over rtnetlink: a link's [`Conditions`] as a
//! `netem` qdisc at its root (delay, jitter, loss, reordering,
//! duplication, corruption, the seed) with a `tbf` child for the rate,
//! the equivalent of
//! `tc qdisc replace dev <link> root handle 1: netem … ; tc qdisc replace dev <link> parent 1:1 handle 2: tbf rate … burst … limit …`,
//! and what a dump of them says back.
//!
//! `netlink-packet-route` has no types for netem's and tbf's options (a C
//! struct followed by attributes): they are laid out here, from
//! `include/uapi/linux/pkt_sched.h`, and carried as a raw `TCA_OPTIONS`.

use std::time::Duration;

use netlink_packet_core::{
    DefaultNla, Emitable, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, Nla, NlasIterator,
};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcOption};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netns_harness_conditions::{Conditions, Distribution, Loss};

use super::Rtnl;
use crate::common::error::Result;
use crate::kernel::netlink::request;

/// `TCA_OPTIONS` of `enum tca_attrs`.
const TCA_OPTIONS: u16 = 2;
/// Attributes of `enum tca_netem_attrs` after `struct tc_netem_qopt`.
const TCA_NETEM_CORR: u16 = 1;
const TCA_NETEM_DELAY_DIST: u16 = 2;
const TCA_NETEM_REORDER: u16 = 3;
const TCA_NETEM_CORRUPT: u16 = 4;
const TCA_NETEM_LOSS: u16 = 5;
const TCA_NETEM_LATENCY64: u16 = 10;
const TCA_NETEM_JITTER64: u16 = 11;
const TCA_NETEM_PRNG_SEED: u16 = 14;
/// `NETEM_LOSS_GE` of `enum netem_loss_attrs`: `struct tc_netem_gemodel`.
const NETEM_LOSS_GE: u16 = 2;
/// `struct tc_netem_qopt`: latency, limit, loss, gap, duplicate, jitter.
const NETEM_QOPT_LEN: usize = 24;
/// `NETEM_DIST_SCALE`: a delay table's values are standard deviations
/// times this.
const NETEM_DIST_SCALE: f64 = 8192.0;
/// The entries of the normal delay table.
const DIST_ENTRIES: usize = 4096;
/// Packets netem holds while it delays them: enough for a gigabit link
/// delayed by 100 ms, so that the delay alone never drops a packet.
const NETEM_LIMIT: u32 = 10_000;

/// Attributes of `enum tca_tbf_attrs`.
const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
/// `TC_LINKLAYER_ETHERNET`: the kernel sizes packets itself, no rate table.
const TC_LINKLAYER_ETHERNET: u8 = 1;
/// `struct tc_tbf_qopt`: rate and peak rate (`struct tc_ratespec`, 12
/// bytes each), limit, buffer, mtu.
const TBF_QOPT_LEN: usize = 36;

/// The handles: netem at the root with tbf under it, or tbf alone at the
/// root (a handle of its own, so that replacing one root by the other
/// grafts a new qdisc instead of changing the kind of an existing one).
const NETEM: TcHandle = TcHandle { major: 1, minor: 0 };
const NETEM_CHILD: TcHandle = TcHandle { major: 1, minor: 1 };
const TBF: TcHandle = TcHandle { major: 2, minor: 0 };
const TBF_ALONE: TcHandle = TcHandle { major: 3, minor: 0 };

/// The kernel's extended ack when a qdisc kind is neither built in nor
/// loadable (a module cannot be loaded from a user namespace either).
const UNKNOWN_KIND: &str = "Specified qdisc kind is unknown";

/// Whether `c` needs netem: anything but a rate limit and an MTU.
pub(crate) fn needs_netem(c: &Conditions) -> bool {
    !c.latency.is_zero() || c.is_random()
}

/// `percent` % of the kernel's probability scale (`u32::MAX` is 100 %).
fn probability(percent: f64) -> u32 {
    (percent / 100.0 * f64::from(u32::MAX)).round() as u32
}

/// The percentage of a kernel probability, rounded to 0.001 %.
fn percent(probability: u32) -> f64 {
    (f64::from(probability) / f64::from(u32::MAX) * 100_000.0).round() / 1000.0
}

/// A time in psched ticks (64 ns) as the compatibility fields carry it.
fn ticks(time: Duration) -> u32 {
    u32::try_from(time.as_nanos() >> 6).unwrap_or(u32::MAX)
}

fn u32s(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

/// Appends attribute `kind` with `value`, padded to 4 bytes.
fn push_attribute(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let nla = DefaultNla::new(kind, value.to_vec());
    let start = out.len();
    out.resize(start + nla.buffer_len(), 0);
    nla.emit(&mut out[start..]);
}

/// The standard normal distribution function, by Abramowitz and Stegun
/// 7.1.26 (error below 1.5e-7).
fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    0.5 * (1.0 + if x < 0.0 { -erf } else { erf })
}

/// netem's table for normally distributed delays: the quantiles of the
/// standard normal distribution at `(i + ½) / 4096`, scaled by
/// `NETEM_DIST_SCALE` (what iproute2's `normal.dist` holds, computed).
fn normal_table() -> Vec<u8> {
    (0..DIST_ENTRIES)
        .flat_map(|i| {
            let target = (i as f64 + 0.5) / DIST_ENTRIES as f64;
            let (mut low, mut high) = (-8.0, 8.0);
            for _ in 0..60 {
                let mid = (low + high) / 2.0;
                if normal_cdf(mid) < target {
                    low = mid;
                } else {
                    high = mid;
                }
            }
            let value = (low * NETEM_DIST_SCALE).round();
            (value.clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16).to_ne_bytes()
        })
        .collect()
}

/// netem's `TCA_OPTIONS`: `struct tc_netem_qopt`, then its attributes.
pub(super) fn netem_options(c: &Conditions, seed: u64) -> Vec<u8> {
    let random_loss = match c.loss {
        Loss::Random { percent, .. } => probability(percent),
        _ => 0,
    };
    // A gap of 1 lets `reorder` pick the packets sent at once (iproute2
    // does the same).
    let gap = u32::from(c.reorder > 0.0);
    let mut out = u32s(&[
        ticks(c.latency),
        NETEM_LIMIT,
        random_loss,
        gap,
        probability(c.duplicate),
        ticks(c.jitter),
    ]);
    let loss_correlation = match c.loss {
        Loss::Random { correlation, .. } => probability(correlation),
        _ => 0,
    };
    push_attribute(&mut out, TCA_NETEM_CORR, &u32s(&[0, loss_correlation, 0]));
    if c.reorder > 0.0 {
        push_attribute(
            &mut out,
            TCA_NETEM_REORDER,
            &u32s(&[probability(c.reorder), 0]),
        );
    }
    if c.corrupt > 0.0 {
        push_attribute(
            &mut out,
            TCA_NETEM_CORRUPT,
            &u32s(&[probability(c.corrupt), 0]),
        );
    }
    if let Loss::GilbertElliott {
        p,
        r,
        one_minus_h,
        one_minus_k,
    } = c.loss
    {
        // The kernel keeps h itself: a packet in the bad state is lost
        // when a random draw exceeds it.
        let model = u32s(&[
            probability(p),
            probability(r),
            u32::MAX - probability(one_minus_h),
            probability(one_minus_k),
        ]);
        let mut nested = Vec::new();
        push_attribute(&mut nested, NETEM_LOSS_GE, &model);
        push_attribute(&mut out, TCA_NETEM_LOSS, &nested);
    }
    if c.distribution == Distribution::Normal {
        push_attribute(&mut out, TCA_NETEM_DELAY_DIST, &normal_table());
    }
    let nanos = |d: Duration| {
        i64::try_from(d.as_nanos())
            .unwrap_or(i64::MAX)
            .to_ne_bytes()
    };
    push_attribute(&mut out, TCA_NETEM_LATENCY64, &nanos(c.latency));
    push_attribute(&mut out, TCA_NETEM_JITTER64, &nanos(c.jitter));
    if c.is_random() {
        push_attribute(&mut out, TCA_NETEM_PRNG_SEED, &seed.to_ne_bytes());
    }
    out
}

/// The token bucket's size: 5 ms at the rate, at least 16 KiB (more than a
/// full-sized frame, so that a packet always fits).
fn burst(rate: u64) -> u32 {
    u32::try_from(rate / 8 / 200)
        .unwrap_or(u32::MAX)
        .max(16 << 10)
}

/// The default queue: 100 ms at the rate, at least 64 KiB.
fn default_queue(rate: u64) -> u32 {
    u32::try_from(rate / 8 / 10)
        .unwrap_or(u32::MAX)
        .max(64 << 10)
}

/// tbf's `TCA_OPTIONS`: `TCA_TBF_PARMS` (`struct tc_tbf_qopt`), the
/// 64-bit rate and the burst, in bytes.
pub(super) fn tbf_options(rate: u64, queue: u32) -> Vec<u8> {
    let bytes_per_second = rate / 8;
    let mut qopt = vec![0u8; TBF_QOPT_LEN];
    // struct tc_ratespec: cell_log, linklayer, overhead, cell_align, mpu, rate.
    qopt[1] = TC_LINKLAYER_ETHERNET;
    qopt[8..12].copy_from_slice(
        &u32::try_from(bytes_per_second)
            .unwrap_or(u32::MAX)
            .to_ne_bytes(),
    );
    qopt[24..28].copy_from_slice(&queue.to_ne_bytes());
    let mut out = Vec::new();
    push_attribute(&mut out, TCA_TBF_PARMS, &qopt);
    push_attribute(&mut out, TCA_TBF_RATE64, &bytes_per_second.to_ne_bytes());
    push_attribute(&mut out, TCA_TBF_BURST, &burst(rate).to_ne_bytes());
    out
}

/// A qdisc message for link `index`.
fn qdisc(index: u32, handle: TcHandle, parent: TcHandle) -> TcMessage {
    let mut message = TcMessage::default();
    message.header.family = AddressFamily::Unspec;
    message.header.index = index as i32;
    message.header.handle = handle;
    message.header.parent = parent;
    message
}

/// `tc qdisc replace dev <index> <parent> handle <handle> <kind> <options>`
fn replace(
    index: u32,
    handle: TcHandle,
    parent: TcHandle,
    kind: &str,
    options: Vec<u8>,
) -> TcMessage {
    let mut message = qdisc(index, handle, parent);
    message.attributes = vec![
        TcAttribute::Kind(kind.to_owned()),
        TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, options)),
    ];
    message
}

/// Reads netem's options back into conditions, with its seed.
fn parse_netem(raw: &[u8], c: &mut Conditions) {
    let field = |i: usize| {
        raw.get(i * 4..i * 4 + 4)
            .map_or(0, |b| u32::from_ne_bytes(b.try_into().unwrap_or_default()))
    };
    if field(2) > 0 {
        c.loss = Loss::random(percent(field(2)));
    }
    c.duplicate = percent(field(4));
    for nla in NlasIterator::new(raw.get(NETEM_QOPT_LEN..).unwrap_or_default()).flatten() {
        let (kind, value) = (nla.kind(), nla.value());
        let word = |i: usize| {
            value
                .get(i * 4..i * 4 + 4)
                .map_or(0, |b| u32::from_ne_bytes(b.try_into().unwrap_or_default()))
        };
        let long = || {
            value
                .get(..8)
                .map(|b| u64::from_ne_bytes(b.try_into().unwrap_or_default()))
        };
        let nanos = || Duration::from_nanos(long().unwrap_or(0));
        match kind {
            TCA_NETEM_LATENCY64 => c.latency = nanos(),
            TCA_NETEM_JITTER64 => c.jitter = nanos(),
            TCA_NETEM_PRNG_SEED => c.seed = long(),
            TCA_NETEM_REORDER => c.reorder = percent(word(0)),
            TCA_NETEM_CORRUPT => c.corrupt = percent(word(0)),
            TCA_NETEM_CORR => {
                if let Loss::Random { correlation, .. } = &mut c.loss {
                    *correlation = percent(word(1));
                }
            }
            TCA_NETEM_LOSS if value.len() >= 20 => {
                let model = &value[4..];
                let at = |i: usize| {
                    u32::from_ne_bytes(model[i * 4..i * 4 + 4].try_into().unwrap_or_default())
                };
                c.loss = Loss::GilbertElliott {
                    p: percent(at(0)),
                    r: percent(at(1)),
                    one_minus_h: percent(u32::MAX - at(2)),
                    one_minus_k: percent(at(3)),
                };
            }
            _ => {}
        }
    }
}

/// Reads tbf's rate and queue back into conditions.
fn parse_tbf(raw: &[u8], c: &mut Conditions) {
    // TCA_TBF_PARMS comes first in a dump; the 64-bit rate only when the
    // rate does not fit 32 bits.
    for nla in NlasIterator::new(raw).flatten() {
        let value = nla.value();
        match nla.kind() {
            TCA_TBF_PARMS if value.len() >= TBF_QOPT_LEN => {
                let at =
                    |i: usize| u32::from_ne_bytes(value[i..i + 4].try_into().unwrap_or_default());
                c.rate.get_or_insert(u64::from(at(8)) * 8);
                c.queue = Some(at(24));
            }
            TCA_TBF_RATE64 if value.len() >= 8 => {
                c.rate = Some(u64::from_ne_bytes(value[..8].try_into().unwrap_or_default()) * 8);
            }
            _ => {}
        }
    }
}

/// What the qdiscs of one link say: its conditions (the MTU aside), and
/// how many packets they dropped.
#[derive(Debug, Default)]
pub(crate) struct Shaping {
    pub conditions: Conditions,
    /// `None` where the conditions are emulated in userspace, which keeps
    /// no count the kernel can report.
    pub dropped: Option<u64>,
}

impl Rtnl {
    /// Gives link `index` the shaping of `c` (everything but the MTU),
    /// with `seed` for its random choices, replacing what it had: netem at
    /// the root, changed in place when it is there already (packets it
    /// holds stay queued), tbf under it for a rate.
    ///
    /// Conditions that need netem fail with
    /// [`Error::MissingKernelFeature`](crate::Error::MissingKernelFeature)
    /// on a kernel without it, before anything is changed.
    pub(crate) fn shape(&mut self, index: u32, c: &Conditions, seed: u64) -> Result<()> {
        let tbf = |handle, parent, rate| {
            let queue = c.queue.unwrap_or_else(|| default_queue(rate));
            replace(index, handle, parent, "tbf", tbf_options(rate, queue))
        };
        if !needs_netem(c) {
            return match c.rate {
                Some(rate) => {
                    self.add_qdisc(c, tbf(TBF_ALONE, TcHandle::ROOT, rate), "the rate limit")
                }
                None => self.unshape(index),
            };
        }
        let netem = replace(
            index,
            NETEM,
            TcHandle::ROOT,
            "netem",
            netem_options(c, seed),
        );
        self.add_qdisc(c, netem, "netem").map_err(|e| match e {
            crate::Error::Netlink {
                kernel_message: Some(m),
                ..
            } if m.contains(UNKNOWN_KIND) => crate::Error::MissingKernelFeature {
                feature: "the netem queueing discipline (CONFIG_NET_SCH_NETEM, module sch_netem)",
                needed_for: format!("the link conditions \"{c}\""),
                fix: "load it on the host with `modprobe sch_netem`, or use a kernel built with \
                          it; a rate limit and an MTU alone work without it",
            },
            e => e,
        })?;
        match c.rate {
            Some(rate) => self.add_qdisc(c, tbf(TBF, NETEM_CHILD, rate), "the rate limit"),
            None => self.delete_qdisc(index, NETEM_CHILD, "the rate limit"),
        }
    }

    /// `tc qdisc replace` of `qdisc`, part `what` of the conditions `c`.
    fn add_qdisc(&mut self, c: &Conditions, qdisc: TcMessage, what: &str) -> Result<()> {
        let index = qdisc.header.index;
        self.request(
            || format!("set {what} of \"{c}\" on link {index}"),
            request(
                RouteNetlinkMessage::NewQueueDiscipline(qdisc),
                NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            ),
        )
        .map(drop)
    }

    /// Takes every qdisc off link `index` (back to the kernel's default).
    pub(crate) fn unshape(&mut self, index: u32) -> Result<()> {
        self.delete_qdisc(index, TcHandle::ROOT, "the conditions")
    }

    /// Deletes the qdisc at `parent` of link `index`, if there is one.
    fn delete_qdisc(&mut self, index: u32, parent: TcHandle, what: &str) -> Result<()> {
        let message = qdisc(index, TcHandle::UNSPEC, parent);
        match self.request(
            || format!("delete {what} of link {index}"),
            request(RouteNetlinkMessage::DelQueueDiscipline(message), NLM_F_ACK),
        ) {
            // Nothing there (ENOENT), or only the default (EINVAL).
            Err(crate::Error::Netlink { source, .. })
                if matches!(source.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)) =>
            {
                Ok(())
            }
            other => other.map(drop),
        }
    }

    /// What the qdiscs of link `index` do (`tc -s qdisc show dev <index>`).
    pub(crate) fn shaping(&mut self, index: u32) -> Result<Shaping> {
        let replies = self.dump(
            "list queueing disciplines",
            RouteNetlinkMessage::GetQueueDiscipline(qdisc(0, TcHandle::UNSPEC, TcHandle::UNSPEC)),
        )?;
        let mut shaping = Shaping::default();
        let qdiscs = replies.into_iter().filter_map(|reply| match reply {
            RouteNetlinkMessage::NewQueueDiscipline(q) if q.header.index == index as i32 => Some(q),
            _ => None,
        });
        for q in qdiscs {
            let kind = q.attributes.iter().find_map(|a| match a {
                TcAttribute::Kind(kind) => Some(kind.clone()),
                _ => None,
            });
            for attribute in &q.attributes {
                match attribute {
                    TcAttribute::Options(options) => {
                        let Some(TcOption::Other(raw)) = options.first() else {
                            continue;
                        };
                        let mut value = vec![0; raw.value_len()];
                        raw.emit_value(&mut value);
                        match kind.as_deref() {
                            Some("netem") => parse_netem(&value, &mut shaping.conditions),
                            Some("tbf") => parse_tbf(&value, &mut shaping.conditions),
                            _ => {}
                        }
                    }
                    TcAttribute::Stats(stats) => {
                        *shaping.dropped.get_or_insert(0) += u64::from(stats.drops);
                    }
                    _ => {}
                }
            }
        }
        Ok(shaping)
    }
}

#[cfg(test)]
mod tests;
