//! Unit tests of `tc`: what is sent reads back as what was asked.

use super::*;

#[test]
fn netem_options_are_read_back_as_the_same_conditions() {
    let c: Conditions = "latency=50ms jitter=5ms loss=1.5% loss-correlation=25% \
                         reorder=10% duplicate=1% corrupt=0.1%"
        .parse()
        .unwrap();
    let mut back = Conditions::default();
    parse_netem(&netem_options(&c, 42), &mut back);
    assert_eq!(back, c.clone().seed(42));
    let ge: Conditions = "gemodel=1%/30%/90%/0.5%".parse().unwrap();
    let mut back = Conditions::default();
    parse_netem(&netem_options(&ge, 7), &mut back);
    assert_eq!(back.loss, ge.loss);
}

#[test]
fn tbf_options_are_read_back_as_the_same_rate_and_queue() {
    let mut back = Conditions::default();
    parse_tbf(&tbf_options(10_000_000, 65536), &mut back);
    assert_eq!((back.rate, back.queue), (Some(10_000_000), Some(65536)));
    let mut fast = Conditions::default();
    parse_tbf(&tbf_options(80_000_000_000, 65536), &mut fast);
    assert_eq!(fast.rate, Some(80_000_000_000));
}

#[test]
fn the_normal_table_is_symmetric_and_scaled() {
    let table: Vec<i16> = normal_table()
        .chunks(2)
        .map(|b| i16::from_ne_bytes([b[0], b[1]]))
        .collect();
    assert_eq!(table.len(), DIST_ENTRIES);
    assert!(table.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(table[0], -table[DIST_ENTRIES - 1]);
    // The 84th percentile is one standard deviation.
    let sigma = table[(DIST_ENTRIES as f64 * 0.8413) as usize];
    assert!(
        (f64::from(sigma) - NETEM_DIST_SCALE).abs() < 20.0,
        "{sigma}"
    );
}
