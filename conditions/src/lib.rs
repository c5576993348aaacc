//! The conditions of one direction of a link in
//! [netns-harness](https://docs.rs/netns-harness): latency, jitter, loss,
//! a rate limit with its queue, reordering, duplication, corruption, MTU
//! and the seed of the kernel's random choices; and their text syntax,
//! `"latency=50ms jitter=5ms loss=1% rate=10mbit"`, which
//! `#[netns_test(link = "...")]` checks at compile time with this same
//! parser.
//!
//! ```
//! use netns_harness_conditions::{Conditions, Loss};
//! use std::time::Duration;
//!
//! let parsed: Conditions = "latency=50ms loss=1% rate=10mbit".parse().unwrap();
//! let built = Conditions::default()
//!     .latency(Duration::from_millis(50))
//!     .loss(Loss::random(1.0))
//!     .rate(10_000_000);
//! assert_eq!(parsed, built);
//! assert_eq!(built.to_string(), "latency=50ms loss=1% rate=10mbit");
//! assert!("latency=50ms loss=120%".parse::<Conditions>().is_err());
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

mod syntax;
pub use syntax::KEYS;

/// The longest latency or jitter accepted: longer would outlast any test.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// The smallest MTU accepted: IPv4's minimum (RFC 791). Below 1280 the
/// kernel turns IPv6 off on the link (RFC 8200's minimum).
pub const MIN_MTU: u32 = 68;
/// The largest MTU accepted: an IP packet's largest size.
pub const MAX_MTU: u32 = 65535;

/// How the delay of each packet varies around the latency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Distribution {
    /// Uniformly within latency ± jitter (the kernel's default).
    #[default]
    Uniform,
    /// Normally, with the jitter as standard deviation (clipped at ±4σ).
    Normal,
}

/// Which packets are lost.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Loss {
    /// None.
    #[default]
    None,
    /// Each packet with probability `percent`; `correlation` (in %) ties
    /// each choice to the previous one, making losses come in runs.
    Random {
        /// The probability of losing a packet, in %.
        percent: f64,
        /// How much each choice depends on the previous one, in %.
        correlation: f64,
    },
    /// Bursts, by the Gilbert-Elliott model: a good and a bad state, with
    /// the probabilities (in %) of going from good to bad (`p`) and back
    /// (`r`), and of losing a packet in the bad (`one_minus_h`) and in the
    /// good state (`one_minus_k`). The mean loss is
    /// `p / (p + r) · (1 − h) + r / (p + r) · (1 − k)`.
    GilbertElliott {
        /// Good to bad, in %.
        p: f64,
        /// Bad to good, in %.
        r: f64,
        /// Loss in the bad state, in % (100 by default).
        one_minus_h: f64,
        /// Loss in the good state, in % (0 by default).
        one_minus_k: f64,
    },
}

impl Loss {
    /// Each packet lost with probability `percent` %, independently.
    pub fn random(percent: f64) -> Self {
        Self::Random {
            percent,
            correlation: 0.0,
        }
    }

    /// Bursts of loss by the simple Gilbert model: into a bad state with
    /// probability `p` % per packet, out of it with `r` %; every packet in
    /// the bad state is lost, none in the good one.
    pub fn bursts(p: f64, r: f64) -> Self {
        Self::GilbertElliott {
            p,
            r,
            one_minus_h: 100.0,
            one_minus_k: 0.0,
        }
    }

    /// The fraction of packets lost in the long run, from 0 to 1.
    pub fn mean(&self) -> f64 {
        match *self {
            Self::None => 0.0,
            Self::Random { percent, .. } => percent / 100.0,
            Self::GilbertElliott {
                p,
                r,
                one_minus_h,
                one_minus_k,
            } => {
                if p + r == 0.0 {
                    return one_minus_k / 100.0;
                }
                (p * one_minus_h + r * one_minus_k) / (p + r) / 100.0
            }
        }
    }
}

/// What one direction of a link does to the packets it carries. The
/// default changes nothing. Build it with its methods or parse its text
/// (see [`KEYS`]); [`Conditions::validate`] says what is wrong with it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Conditions {
    /// Added to every packet's delay.
    pub latency: Duration,
    /// How much the delay varies around the latency.
    pub jitter: Duration,
    /// How the delay varies.
    pub distribution: Distribution,
    /// Which packets are lost.
    pub loss: Loss,
    /// A rate limit, in bits per second.
    pub rate: Option<u64>,
    /// The rate limit's queue, in bytes: what waits beyond it is dropped.
    pub queue: Option<u32>,
    /// The share of packets (in %) sent at once, ahead of the delayed
    /// ones: they overtake those sent before them.
    pub reorder: f64,
    /// The share of packets (in %) sent twice.
    pub duplicate: f64,
    /// The share of packets (in %) with one bit flipped.
    pub corrupt: f64,
    /// The link's MTU (both ends).
    pub mtu: Option<u32>,
    /// The seed of the kernel's random choices (loss, jitter,
    /// duplication, reordering, corruption); chosen by the harness when
    /// `None`.
    pub seed: Option<u64>,
}

/// What is wrong with a [`Conditions`] or its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// The word of the text the error is about, when it is about one.
    pub word: Option<String>,
    /// What is wrong and what is allowed.
    pub reason: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.word {
            Some(word) => write!(f, "`{word}`: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for Invalid {}

impl Invalid {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            word: None,
            reason: reason.into(),
        }
    }
}

impl Conditions {
    /// Sets the latency.
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Sets the jitter (at most the latency).
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets how the delay varies.
    pub fn distribution(mut self, distribution: Distribution) -> Self {
        self.distribution = distribution;
        self
    }

    /// Sets the loss.
    pub fn loss(mut self, loss: Loss) -> Self {
        self.loss = loss;
        self
    }

    /// Limits the rate to `bits_per_second`.
    pub fn rate(mut self, bits_per_second: u64) -> Self {
        self.rate = Some(bits_per_second);
        self
    }

    /// Sets the rate limit's queue, in bytes.
    pub fn queue(mut self, bytes: u32) -> Self {
        self.queue = Some(bytes);
        self
    }

    /// Sends `percent` % of packets ahead of the delayed ones.
    pub fn reorder(mut self, percent: f64) -> Self {
        self.reorder = percent;
        self
    }

    /// Sends `percent` % of packets twice.
    pub fn duplicate(mut self, percent: f64) -> Self {
        self.duplicate = percent;
        self
    }

    /// Flips a bit in `percent` % of packets.
    pub fn corrupt(mut self, percent: f64) -> Self {
        self.corrupt = percent;
        self
    }

    /// Sets the link's MTU.
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }

    /// Sets the seed of the kernel's random choices.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Whether anything of it needs the kernel's random choices, and so a
    /// seed to be reproducible.
    pub fn is_random(&self) -> bool {
        self.loss != Loss::None
            || !self.jitter.is_zero()
            || self.reorder > 0.0
            || self.duplicate > 0.0
            || self.corrupt > 0.0
    }

    /// Whether it needs a queueing discipline (anything but the MTU).
    pub fn shapes(&self) -> bool {
        !self.latency.is_zero() || self.is_random() || self.rate.is_some()
    }

    /// Checks that every value is allowed, and that they make sense
    /// together: what is wrong, and what is allowed, if not.
    pub fn validate(&self) -> Result<(), Invalid> {
        let percent = |name: &str, value: f64| {
            if (0.0..=100.0).contains(&value) {
                Ok(())
            } else {
                Err(Invalid::new(format!(
                    "{name} is {value}%; it is a percentage from 0% to 100%"
                )))
            }
        };
        for (name, delay) in [("latency", self.latency), ("jitter", self.jitter)] {
            if delay > MAX_DELAY {
                return Err(Invalid::new(format!(
                    "{name} is {delay:?}; at most {MAX_DELAY:?} is allowed"
                )));
            }
        }
        if self.jitter > self.latency {
            return Err(Invalid::new(format!(
                "jitter ({:?}) is larger than latency ({:?}): the kernel would clip the \
                 delays below zero and reorder packets unexpectedly; keep jitter at most latency",
                self.jitter, self.latency
            )));
        }
        if self.distribution != Distribution::Uniform && self.jitter.is_zero() {
            return Err(Invalid::new(
                "a distribution shapes the jitter; set jitter too",
            ));
        }
        match self.loss {
            Loss::None => {}
            Loss::Random {
                percent: p,
                correlation,
            } => {
                percent("loss", p)?;
                percent("loss correlation", correlation)?;
            }
            Loss::GilbertElliott {
                p,
                r,
                one_minus_h,
                one_minus_k,
            } => {
                percent("gemodel's p", p)?;
                percent("gemodel's r", r)?;
                percent("gemodel's 1-h", one_minus_h)?;
                percent("gemodel's 1-k", one_minus_k)?;
            }
        }
        percent("reorder", self.reorder)?;
        percent("duplicate", self.duplicate)?;
        percent("corrupt", self.corrupt)?;
        if self.reorder > 0.0 && self.latency.is_zero() {
            return Err(Invalid::new(
                "reorder sends some packets ahead of delayed ones; set latency too",
            ));
        }
        match (self.rate, self.queue) {
            (Some(0), _) => {
                return Err(Invalid::new(
                    "a rate of 0 passes nothing; use a fault (a link down, a partition) for that, \
                     or a rate from 1bit",
                ));
            }
            (None, Some(_)) => {
                return Err(Invalid::new(
                    "queue is the rate limit's queue; set rate too",
                ));
            }
            (_, Some(0)) => {
                return Err(Invalid::new(
                    "a queue of 0 bytes holds no packet; leave it out for the default",
                ));
            }
            _ => {}
        }
        if let Some(mtu) = self.mtu
            && !(MIN_MTU..=MAX_MTU).contains(&mtu)
        {
            return Err(Invalid::new(format!(
                "an MTU of {mtu} is outside {MIN_MTU}..={MAX_MTU} (IPv4 needs at least 68 \
                 bytes; IPv6 stops on a link under 1280)"
            )));
        }
        Ok(())
    }
}

impl FromStr for Conditions {
    type Err = Invalid;

    /// Parses `key=value` words separated by spaces (see [`KEYS`]), then
    /// [validates](Conditions::validate) the result.
    fn from_str(text: &str) -> Result<Self, Invalid> {
        let conditions = syntax::parse(text)?;
        conditions.validate()?;
        Ok(conditions)
    }
}

impl fmt::Display for Conditions {
    /// The text [`FromStr`] parses back into the same conditions (only
    /// what differs from the default).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        syntax::write(self, f)
    }
}
