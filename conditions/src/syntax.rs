//! The text of [`Conditions`]: `key=value` words separated by spaces.

use std::fmt;
use std::time::Duration;

use crate::{Conditions, Distribution, Invalid, Loss};

/// Every key, with the form of its value: what an error about an unknown
/// key lists.
pub const KEYS: &str = "latency=<time> jitter=<time> distribution=uniform|normal \
    loss=<percent> loss-correlation=<percent> gemodel=<p>/<r>[/<1-h>[/<1-k>]] \
    rate=<rate> queue=<size> reorder=<percent> duplicate=<percent> corrupt=<percent> \
    mtu=<bytes> seed=<integer>; a time is a number with ns, us, ms or s; a percent \
    ends with %; a rate is a number with bit, kbit, mbit or gbit (or bps, kbps, mbps, \
    gbps for bytes per second); a size is a number with b, kb or mb";

const TIME_UNITS: [(&str, f64); 4] = [("ns", 1e-9), ("us", 1e-6), ("ms", 1e-3), ("s", 1.0)];
const RATE_UNITS: [(&str, f64); 8] = [
    ("kbit", 1e3),
    ("mbit", 1e6),
    ("gbit", 1e9),
    ("bit", 1.0),
    ("kbps", 8e3),
    ("mbps", 8e6),
    ("gbps", 8e9),
    ("bps", 8.0),
];
const SIZE_UNITS: [(&str, f64); 3] = [("kb", 1024.0), ("mb", 1048576.0), ("b", 1.0)];

/// The error about `word`.
fn bad(word: &str, reason: impl Into<String>) -> Invalid {
    Invalid {
        word: Some(word.to_owned()),
        reason: reason.into(),
    }
}

/// A non-negative decimal number followed by one of `units` (their
/// factors to the base unit), in the base unit.
fn quantity(word: &str, value: &str, units: &[(&str, f64)], what: &str) -> Result<f64, Invalid> {
    let expected = || {
        let names: Vec<&str> = units.iter().map(|(u, _)| *u).collect();
        bad(
            word,
            format!(
                "{what} must be a number followed by one of {}",
                names.join(", ")
            ),
        )
    };
    let (number, factor) = units
        .iter()
        .find_map(|(unit, factor)| Some((value.strip_suffix(unit)?, *factor)))
        .ok_or_else(expected)?;
    let number: f64 = number.parse().map_err(|_| expected())?;
    if !number.is_finite() || number < 0.0 {
        return Err(bad(word, format!("{what} must not be negative")));
    }
    Ok(number * factor)
}

fn time(word: &str, value: &str) -> Result<Duration, Invalid> {
    let seconds = quantity(word, value, &TIME_UNITS, "a time")?;
    Duration::try_from_secs_f64(seconds).map_err(|_| bad(word, "a time this long is absurd"))
}

fn percent(word: &str, value: &str) -> Result<f64, Invalid> {
    quantity(word, value, &[("%", 1.0)], "a percentage")
}

fn whole<T: TryFrom<u64>>(word: &str, value: f64, what: &str) -> Result<T, Invalid> {
    if value.fract() != 0.0 {
        return Err(bad(word, format!("{what} must be a whole number")));
    }
    T::try_from(value as u64).map_err(|_| bad(word, format!("{what} is too large")))
}

/// Parses `text` without validating the values together.
pub(crate) fn parse(text: &str) -> Result<Conditions, Invalid> {
    let mut c = Conditions::default();
    let mut seen: Vec<&str> = Vec::new();
    let mut loss_correlation = None;
    for word in text.split_whitespace() {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| bad(word, format!("expected key=value; the keys are {KEYS}")))?;
        if seen.contains(&key) {
            return Err(bad(word, format!("{key} is given twice")));
        }
        seen.push(key);
        match key {
            "latency" => c.latency = time(word, value)?,
            "jitter" => c.jitter = time(word, value)?,
            "distribution" => {
                c.distribution = match value {
                    "uniform" => Distribution::Uniform,
                    "normal" => Distribution::Normal,
                    _ => return Err(bad(word, "the distributions are uniform and normal")),
                }
            }
            "loss" | "gemodel" if c.loss != Loss::None => {
                return Err(bad(word, "give loss or gemodel, not both"));
            }
            "loss" => c.loss = Loss::random(percent(word, value)?),
            "loss-correlation" => loss_correlation = Some(percent(word, value)?),
            "gemodel" => {
                let parts: Vec<f64> = value
                    .split('/')
                    .map(|p| percent(word, p))
                    .collect::<Result<_, _>>()?;
                let [p, r, ref rest @ ..] = parts[..] else {
                    return Err(bad(word, "gemodel is <p>/<r>[/<1-h>[/<1-k>]], in %"));
                };
                if rest.len() > 2 {
                    return Err(bad(word, "gemodel has at most four parts"));
                }
                c.loss = Loss::GilbertElliott {
                    p,
                    r,
                    one_minus_h: rest.first().copied().unwrap_or(100.0),
                    one_minus_k: rest.get(1).copied().unwrap_or(0.0),
                };
            }
            "rate" => {
                let rate = quantity(word, value, &RATE_UNITS, "a rate")?;
                c.rate = Some(whole(word, rate.round(), "a rate")?);
            }
            "queue" => {
                let size = quantity(word, value, &SIZE_UNITS, "a size")?;
                c.queue = Some(whole(word, size.round(), "a size")?);
            }
            "reorder" => c.reorder = percent(word, value)?,
            "duplicate" => c.duplicate = percent(word, value)?,
            "corrupt" => c.corrupt = percent(word, value)?,
            "mtu" => {
                let mtu: f64 = value
                    .parse()
                    .map_err(|_| bad(word, "an MTU is a number of bytes"))?;
                c.mtu = Some(whole(word, mtu, "an MTU")?);
            }
            "seed" => {
                c.seed = Some(
                    value
                        .parse()
                        .map_err(|_| bad(word, "a seed is an integer from 0 to 2^64-1"))?,
                )
            }
            _ => {
                return Err(bad(
                    word,
                    format!("unknown key `{key}`; the keys are {KEYS}"),
                ));
            }
        }
    }
    if let Some(correlation) = loss_correlation {
        match &mut c.loss {
            Loss::Random {
                correlation: slot, ..
            } => *slot = correlation,
            _ => {
                return Err(Invalid::new(
                    "loss-correlation is the correlation of random loss; set loss too",
                ));
            }
        }
    }
    Ok(c)
}

/// A time in the largest unit that shows it whole.
fn time_text(time: Duration) -> String {
    let ns = time.as_nanos();
    let (value, unit) = [(1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us")]
        .into_iter()
        .find(|(factor, _)| ns.is_multiple_of(*factor))
        .map_or((ns, "ns"), |(factor, unit)| (ns / factor, unit));
    format!("{value}{unit}")
}

/// A rate in the largest bit unit that shows it whole.
fn rate_text(rate: u64) -> String {
    let (value, unit) = [
        (1_000_000_000, "gbit"),
        (1_000_000, "mbit"),
        (1_000, "kbit"),
    ]
    .into_iter()
    .find(|(factor, _)| rate.is_multiple_of(*factor))
    .map_or((rate, "bit"), |(factor, unit)| (rate / factor, unit));
    format!("{value}{unit}")
}

/// The words of what differs from the default, separated by spaces.
pub(crate) fn write(c: &Conditions, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let mut words = Vec::new();
    if !c.latency.is_zero() {
        words.push(format!("latency={}", time_text(c.latency)));
    }
    if !c.jitter.is_zero() {
        words.push(format!("jitter={}", time_text(c.jitter)));
    }
    if c.distribution == Distribution::Normal {
        words.push("distribution=normal".to_owned());
    }
    match c.loss {
        Loss::None => {}
        Loss::Random {
            percent,
            correlation,
        } => {
            words.push(format!("loss={percent}%"));
            if correlation > 0.0 {
                words.push(format!("loss-correlation={correlation}%"));
            }
        }
        Loss::GilbertElliott {
            p,
            r,
            one_minus_h,
            one_minus_k,
        } => words.push(format!("gemodel={p}%/{r}%/{one_minus_h}%/{one_minus_k}%")),
    }
    if let Some(rate) = c.rate {
        words.push(format!("rate={}", rate_text(rate)));
    }
    if let Some(queue) = c.queue {
        words.push(format!("queue={queue}b"));
    }
    for (key, value) in [
        ("reorder", c.reorder),
        ("duplicate", c.duplicate),
        ("corrupt", c.corrupt),
    ] {
        if value > 0.0 {
            words.push(format!("{key}={value}%"));
        }
    }
    if let Some(mtu) = c.mtu {
        words.push(format!("mtu={mtu}"));
    }
    if let Some(seed) = c.seed {
        words.push(format!("seed={seed}"));
    }
    f.write_str(&words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> String {
        text.parse::<Conditions>().unwrap_err().to_string()
    }

    #[test]
    fn every_key_is_parsed_and_written_back() {
        let text = "latency=50ms jitter=5ms distribution=normal loss=1.5% \
                    loss-correlation=25% rate=10mbit queue=64kb reorder=10% duplicate=1% \
                    corrupt=0.1% mtu=1400 seed=42";
        let c: Conditions = text.parse().unwrap();
        assert_eq!(c.latency, Duration::from_millis(50));
        assert_eq!(c.jitter, Duration::from_millis(5));
        assert_eq!(c.distribution, Distribution::Normal);
        assert_eq!(
            c.loss,
            Loss::Random {
                percent: 1.5,
                correlation: 25.0
            }
        );
        assert_eq!(c.rate, Some(10_000_000));
        assert_eq!(c.queue, Some(65536));
        assert_eq!((c.reorder, c.duplicate, c.corrupt), (10.0, 1.0, 0.1));
        assert_eq!((c.mtu, c.seed), (Some(1400), Some(42)));
        assert_eq!(c.to_string().parse::<Conditions>().unwrap(), c);
    }

    #[test]
    fn units_convert() {
        let c: Conditions = "latency=1500us rate=2kbps".parse().unwrap();
        assert_eq!(c.latency, Duration::from_micros(1500));
        assert_eq!(c.rate, Some(16_000));
        assert_eq!(c.to_string(), "latency=1500us rate=16kbit");
        let c: Conditions = "gemodel=1%/30%".parse().unwrap();
        assert_eq!(c.loss, Loss::bursts(1.0, 30.0));
        assert!((c.loss.mean() - 1.0 / 31.0).abs() < 1e-9);
        assert_eq!(Conditions::default().to_string(), "");
        assert_eq!("".parse::<Conditions>().unwrap(), Conditions::default());
    }

    #[test]
    fn mistakes_name_the_word_and_what_is_allowed() {
        let e = parse_err("latncy=5ms");
        assert!(e.starts_with("`latncy=5ms`: unknown key `latncy`"), "{e}");
        assert!(e.contains("latency=<time>"), "{e}");
        assert!(parse_err("latency=5").contains("ns, us, ms, s"));
        assert!(parse_err("latency=-5ms").contains("negative"));
        assert!(parse_err("loss=120%").contains("from 0% to 100%"));
        assert!(parse_err("loss=1").contains("followed by one of %"));
        assert!(parse_err("rate=0mbit").contains("rate of 0"));
        assert!(parse_err("rate=10mb").contains("kbit, mbit, gbit, bit"));
        assert!(parse_err("mtu=60").contains("68"));
        assert!(parse_err("latency=5ms jitter=10ms").contains("larger than latency"));
        assert!(parse_err("latency=1h").contains("ns, us, ms, s"));
        assert!(parse_err("latency=61s").contains("at most 60s"));
        assert!(parse_err("reorder=5%").contains("set latency too"));
        assert!(parse_err("queue=10kb").contains("set rate too"));
        assert!(parse_err("loss=1% gemodel=1%/2%").contains("not both"));
        assert!(parse_err("loss-correlation=5%").contains("set loss too"));
        assert!(parse_err("latency=5ms latency=6ms").contains("twice"));
        assert!(parse_err("distribution=normal").contains("set jitter too"));
        assert!(parse_err("seed=x").contains("integer"));
        assert!(parse_err("latency").contains("key=value"));
    }
}
