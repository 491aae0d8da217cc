//! What the benchmark programs share: their environment knobs.

use std::time::Duration;

/// Threshold overrides for a sweep (`FULCRUM_BENCH_EVENT_INTERVAL`,
/// `FULCRUM_BENCH_SHED`, `FULCRUM_BENCH_SPIN_US`,
/// `FULCRUM_BENCH_HANDOFF_US`, `FULCRUM_BENCH_IO_US`,
/// `FULCRUM_BENCH_SLICE_US` (0: no time slice), `FULCRUM_BENCH_RESCUE_US`
/// (0: no rescue)); unset: the defaults.
pub fn tune(b: &mut fulcrum::runtime::Builder) -> &mut fulcrum::runtime::Builder {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = var("FULCRUM_BENCH_EVENT_INTERVAL") {
        b.event_interval(n as u32);
    }
    if let Some(n) = var("FULCRUM_BENCH_SHED") {
        b.shed_threshold(n as usize);
    }
    if let Some(us) = var("FULCRUM_BENCH_SPIN_US") {
        b.spin_before_park(Duration::from_micros(us));
    }
    if let Some(us) = var("FULCRUM_BENCH_HANDOFF_US") {
        b.handoff_wait(Duration::from_micros(us));
    }
    if let Some(us) = var("FULCRUM_BENCH_IO_US") {
        b.io_poll_interval(Duration::from_micros(us));
    }
    if let Some(us) = var("FULCRUM_BENCH_SLICE_US") {
        b.poll_time_slice((us > 0).then(|| Duration::from_micros(us)));
    }
    if let Some(us) = var("FULCRUM_BENCH_RESCUE_US") {
        b.rescue_interval((us > 0).then(|| Duration::from_micros(us)));
    }
    b
}

/// A numeric environment variable, or `default` if unset or not a number.
pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The systems that `args` name, in `all`'s order; all of them when no
/// argument names one.
pub fn named_systems<S: AsRef<str>>(args: &[S], all: &[&'static str]) -> Vec<&'static str> {
    let named = |s: &&'static str| args.iter().any(|a| a.as_ref() == *s);
    if all.iter().any(named) {
        all.iter().filter(|s| named(s)).copied().collect()
    } else {
        all.to_vec()
    }
}
