//! What an emulated link does to each frame, as netem does it: loss
//! (random, correlated, Gilbert-Elliott), duplication, corruption, delay
//! with jitter, reordering and a rate limit with its queue, from a seeded
//! generator.

use std::time::{Duration, Instant};

use super::super::derive_seed;
use crate::kernel::frames::{VNET_HDR_LEN, VNET_NEEDS_CSUM};
use crate::network::link::{Conditions, Distribution, Loss};

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
pub(super) struct Params {
    pub(super) conditions: Conditions,
    pub(super) seed: u64,
    rng: Rng,
    /// The last draw of correlated random loss.
    last: f64,
    /// Gilbert-Elliott: in the bad state.
    bad: bool,
    /// When the rate limit is free to send the next frame.
    rate_free: Instant,
}

impl Params {
    pub(super) fn new(conditions: Conditions, seed: u64) -> Self {
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
    pub(super) fn schedule(
        &mut self,
        frame: &[u8],
        now: Instant,
        backlog: usize,
    ) -> Vec<(Instant, Vec<u8>)> {
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
