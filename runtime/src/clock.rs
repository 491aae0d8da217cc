//! The scheduler's clock: nanoseconds since the first reading, cheap enough
//! to read once per task poll.
//!
//! On x86-64 with an invariant time-stamp counter (CPUID leaf 0x8000_0007,
//! EDX bit 8: constant rate, never stops) it reads the counter (`rdtsc`,
//! about 7 ns here, against 18 ns for `Instant::now` through the vDSO) and
//! scales it by a ratio calibrated against `Instant` once, over 500 µs, at
//! the first reading. Elsewhere it is `Instant` itself. Every interval the
//! scheduler takes is measured on one thread (a poll's start and end, a
//! worker's maintenance deadline), and differences saturate at zero, so a
//! thread moving between cores mid-interval costs at most a slightly wrong
//! figure, never a panic. The timer wheels keep using `Instant`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long the counter is calibrated against `Instant`.
const CALIBRATION: Duration = Duration::from_micros(500);

struct Clock {
    base: Instant,
    /// The counter at `base`, and nanoseconds per tick in 32.32 fixed point;
    /// `None`: read `Instant`.
    tsc: Option<(u64, u64)>,
}

static CLOCK: OnceLock<Clock> = OnceLock::new();

#[cfg(target_arch = "x86_64")]
fn invariant_tsc() -> bool {
    let max = core::arch::x86_64::__cpuid(0x8000_0000).eax;
    max >= 0x8000_0007 && core::arch::x86_64::__cpuid(0x8000_0007).edx & (1 << 8) != 0
}

#[cfg(target_arch = "x86_64")]
fn tsc() -> u64 {
    // SAFETY: `rdtsc` only reads the time-stamp counter; it exists on every
    // x86-64 processor and has no memory effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// An `Instant` and the counter read around it: the tightest of a few
/// tries, so that a preemption between the two reads cannot skew it.
#[cfg(target_arch = "x86_64")]
fn paired() -> (u64, Instant) {
    let mut best: Option<(u64, u64, Instant)> = None;
    for _ in 0..8 {
        let before = tsc();
        let t = Instant::now();
        let after = tsc();
        let width = after.saturating_sub(before);
        if best.map_or(true, |(w, _, _)| width < w) {
            best = Some((width, before + width / 2, t));
        }
    }
    let (_, c, t) = best.expect("eight tries");
    (c, t)
}

/// The counter's value at `base` and nanoseconds per tick in 32.32 fixed
/// point, measured over [`CALIBRATION`].
#[cfg(target_arch = "x86_64")]
fn calibrate(base: &mut Instant) -> Option<(u64, u64)> {
    if !invariant_tsc() {
        return None;
    }
    let (c0, t0) = paired();
    *base = t0;
    while t0.elapsed() < CALIBRATION {
        std::hint::spin_loop();
    }
    let (c1, t1) = paired();
    let ticks = c1.checked_sub(c0).filter(|&t| t > 0)?;
    let ns = t1.duration_since(t0).as_nanos();
    let mult = u64::try_from((ns << 32) / u128::from(ticks)).ok()?;
    Some((c0, mult))
}

#[cfg(not(target_arch = "x86_64"))]
fn calibrate(_base: &mut Instant) -> Option<(u64, u64)> {
    None
}

fn clock() -> &'static Clock {
    CLOCK.get_or_init(|| {
        let mut base = Instant::now();
        let tsc = calibrate(&mut base);
        Clock { base, tsc }
    })
}

/// Nanoseconds since the clock's first reading.
#[inline]
pub(crate) fn now_ns() -> u64 {
    let c = clock();
    match c.tsc {
        #[cfg(target_arch = "x86_64")]
        Some((c0, mult)) => {
            ((u128::from(tsc().saturating_sub(c0)) * u128::from(mult)) >> 32) as u64
        }
        _ => c.base.elapsed().as_nanos() as u64,
    }
}

/// A duration in the clock's unit (saturating).
#[inline]
pub(crate) fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_keeps_pace_with_instant() {
        let (a, t) = (now_ns(), Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        let (b, e) = (now_ns(), t.elapsed());
        let measured = Duration::from_nanos(b - a);
        let diff = measured.abs_diff(e);
        assert!(diff < e / 20, "clock {measured:?} against Instant {e:?}");
    }
}
