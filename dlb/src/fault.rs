//! Fault injection in the software backend, **for tests only** (cargo
//! feature `fault-injection`, off by default; never enable it in a
//! production build).
//!
//! Compiled in, it does nothing until switched on, either with [`set`] or
//! with the environment variable [`FAULTS_ENV`] (`FULCRUM_DLB_FAULTS`), read
//! once, when the first software domain is built (or at the first [`set`] or
//! [`clear`], which then win). The switch is process-wide: every software
//! domain and port of the process is affected.
//!
//! # The faults
//! Each is drawn independently, per mille, from a per-thread `fastrand`
//! generator seeded from [`FaultConfig::seed`] and the order in which
//! threads first draw (so a run is reproducible per thread only as far as
//! the threads' work is).
//! - **Short sends** ([`FaultConfig::short_send_per_mille`]): before a
//!   (run of) event(s), [`Port::send`](crate::Port::send) stops and returns
//!   the count sent so far, as when the credit pool is empty. Nothing is
//!   lost: by the API contract the caller keeps the rest.
//! - **Delays** ([`FaultConfig::delay_per_mille`]): the event is *held
//!   back*: it takes a credit and waits in its waiting ring (the queue's, or
//!   the sender's directed ring for an event directed at the sender), and
//!   the sender's own port is marked `PULL`. It is delivered by the next
//!   dispatch of its queue: any send that finds the queue waiting, or the
//!   sender's next `recv`, `release`, park or drop, each of which runs the
//!   dispatchers of a port marked `PULL` (the same path that moves events
//!   waiting for a full CQ). Only the sender's own port is marked, and only
//!   by its owner (never parked while it sends), so the no-lost-wake-up
//!   protocol is unchanged: a port never sleeps with `PULL` set by a hold,
//!   because `prepare_park` pulls first. When the event cannot be held (the
//!   sender is not linked to its queue, as the runtime's injector port; a
//!   directed event for another port; no credit left), the send spins for
//!   [`FaultConfig::delay_us`] instead, then proceeds.
//! - **Refused ports** ([`FaultConfig::refuse_port_per_mille`]):
//!   [`Domain::port`](crate::Domain::port) fails with
//!   [`DlbError::PortRefused`](crate::DlbError::PortRefused), for which
//!   [`DlbError::is_transient`](crate::DlbError::is_transient) is `true`:
//!   the port is not taken, and the same call may succeed when retried.
//!
//! [`stats`] counts what was injected, so that a test can check that its
//! faults happened.
//!
//! ```
//! use fulcrum_dlb::fault::{self, FaultConfig};
//! fault::set(FaultConfig { short_send_per_mille: 1000, ..FaultConfig::default() });
//! # let domain = fulcrum_dlb::Domain::builder()
//! #     .backend(fulcrum_dlb::Backend::Software).ports(2).build()?;
//! # let mut port = domain.port(0)?;
//! assert_eq!(port.send(&[fulcrum_dlb::Event::unordered(0, 1)])?, 0);
//! fault::clear();
//! assert_eq!(port.send(&[fulcrum_dlb::Event::unordered(0, 1)])?, 1);
//! # Ok::<(), fulcrum_dlb::DlbError>(())
//! ```

use std::cell::RefCell;
use std::str::FromStr;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::Once;
use std::time::{Duration, Instant};

/// Name of the environment variable that switches faults on, for example
/// `FULCRUM_DLB_FAULTS=short=50,delay=20,delay_us=10,refuse=100,seed=7`
/// (see [`FaultConfig`]'s `FromStr`).
pub const FAULTS_ENV: &str = "FULCRUM_DLB_FAULTS";

/// Which faults to inject, and how often (each per mille, 0 to 1000).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultConfig {
    /// Chance that a send stops before a (run of) event(s) and returns
    /// short.
    pub short_send_per_mille: u16,
    /// Chance that an event is held back (or the send spins
    /// [`delay_us`](Self::delay_us)).
    pub delay_per_mille: u16,
    /// How long a send spins when a delayed event cannot be held back.
    pub delay_us: u32,
    /// Chance that [`Domain::port`](crate::Domain::port) is refused.
    pub refuse_port_per_mille: u16,
    /// Seed of the per-thread generators.
    pub seed: u64,
}

impl FromStr for FaultConfig {
    type Err = String;

    /// Parses comma-separated `key=value` pairs: `short`, `delay`,
    /// `delay_us`, `refuse`, `seed` (the long field names are accepted
    /// too); absent keys are 0, rates are clamped to 1000.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut cfg = FaultConfig::default();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("{FAULTS_ENV}: {pair:?} is not key=value"))?;
            let num = |v: &str| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("{FAULTS_ENV}: {key}={v:?} is not a number"))
            };
            let rate = |v: &str| num(v).map(|n| n.min(1000) as u16);
            match key.trim() {
                "short" | "short_send_per_mille" => cfg.short_send_per_mille = rate(value)?,
                "delay" | "delay_per_mille" => cfg.delay_per_mille = rate(value)?,
                "delay_us" => cfg.delay_us = num(value)?.min(u64::from(u32::MAX)) as u32,
                "refuse" | "refuse_port_per_mille" => cfg.refuse_port_per_mille = rate(value)?,
                "seed" => cfg.seed = num(value)?,
                other => {
                    return Err(format!(
                        "{FAULTS_ENV}: unknown key {other:?}; expected short, delay, delay_us, refuse, seed"
                    ))
                }
            }
        }
        Ok(cfg)
    }
}

/// What has been injected since the process started (or since
/// [`reset_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultStats {
    /// Sends cut short.
    pub short_sends: u64,
    /// Events held back in a waiting ring.
    pub held: u64,
    /// Sends that spun instead of holding an event back.
    pub spun: u64,
    /// Port requests refused.
    pub refused_ports: u64,
}

static ACTIVE: AtomicBool = AtomicBool::new(false);
static GENERATION: AtomicU64 = AtomicU64::new(0);
static SHORT: AtomicU32 = AtomicU32::new(0);
static DELAY: AtomicU32 = AtomicU32::new(0);
static DELAY_US: AtomicU32 = AtomicU32::new(0);
static REFUSE: AtomicU32 = AtomicU32::new(0);
static SEED: AtomicU64 = AtomicU64::new(0);
static THREADS: AtomicU64 = AtomicU64::new(0);

static SHORT_SENDS: AtomicU64 = AtomicU64::new(0);
static HELD: AtomicU64 = AtomicU64::new(0);
static SPUN: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);

static ENV_ONCE: Once = Once::new();

/// Applies [`FAULTS_ENV`] once.
///
/// # Panics
/// If the variable is set to something unparsable: a test that asked for
/// faults must not silently run without them.
pub(crate) fn init_from_env() {
    ENV_ONCE.call_once(|| match std::env::var(FAULTS_ENV) {
        Ok(v) if !v.trim().is_empty() => match v.parse::<FaultConfig>() {
            Ok(cfg) => {
                tracing::warn!(?cfg, "dlb: fault injection switched on by {FAULTS_ENV}");
                store(cfg);
            }
            Err(e) => panic!("{e}"),
        },
        _ => {}
    });
}

fn store(cfg: FaultConfig) {
    SHORT.store(u32::from(cfg.short_send_per_mille.min(1000)), Relaxed);
    DELAY.store(u32::from(cfg.delay_per_mille.min(1000)), Relaxed);
    DELAY_US.store(cfg.delay_us, Relaxed);
    REFUSE.store(u32::from(cfg.refuse_port_per_mille.min(1000)), Relaxed);
    SEED.store(cfg.seed, Relaxed);
    GENERATION.fetch_add(1, AcqRel);
    let any =
        cfg.short_send_per_mille > 0 || cfg.delay_per_mille > 0 || cfg.refuse_port_per_mille > 0;
    ACTIVE.store(any, Release);
}

/// Switches faults on (process-wide) with `cfg`, replacing any earlier
/// configuration; an all-zero configuration switches them off.
pub fn set(cfg: FaultConfig) {
    init_from_env();
    store(cfg);
}

/// Switches faults off.
pub fn clear() {
    init_from_env();
    store(FaultConfig::default());
}

/// The configuration in force, if faults are on.
pub fn current() -> Option<FaultConfig> {
    if !ACTIVE.load(Acquire) {
        return None;
    }
    Some(FaultConfig {
        short_send_per_mille: SHORT.load(Relaxed) as u16,
        delay_per_mille: DELAY.load(Relaxed) as u16,
        delay_us: DELAY_US.load(Relaxed),
        refuse_port_per_mille: REFUSE.load(Relaxed) as u16,
        seed: SEED.load(Relaxed),
    })
}

/// Counts of the faults injected so far.
pub fn stats() -> FaultStats {
    FaultStats {
        short_sends: SHORT_SENDS.load(Relaxed),
        held: HELD.load(Relaxed),
        spun: SPUN.load(Relaxed),
        refused_ports: REFUSED.load(Relaxed),
    }
}

/// Sets the counts of [`stats`] back to 0.
pub fn reset_stats() {
    for c in [&SHORT_SENDS, &HELD, &SPUN, &REFUSED] {
        c.store(0, Relaxed);
    }
}

thread_local! {
    /// This thread's generator and the configuration generation it was
    /// seeded for.
    static RNG: RefCell<(u64, fastrand::Rng)> =
        const { RefCell::new((u64::MAX, fastrand::Rng::with_seed(0))) };
}

/// Draws with a chance of `per_mille` / 1000.
fn roll(per_mille: u32) -> bool {
    if per_mille == 0 {
        return false;
    }
    let generation = GENERATION.load(Acquire);
    RNG.with(|cell| {
        let mut state = cell.borrow_mut();
        let (seeded_for, rng) = &mut *state;
        if *seeded_for != generation {
            // The n-th thread to draw since the configuration changed gets
            // the seed with n spread over its bits by the golden-ratio
            // multiplier, so that threads do not share a stream.
            let thread = THREADS.fetch_add(1, Relaxed);
            *rng = fastrand::Rng::with_seed(
                SEED.load(Relaxed) ^ thread.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            );
            *seeded_for = generation;
        }
        rng.u32(..1000) < per_mille
    })
}

/// What a send should do before its next (run of) event(s).
pub(crate) enum SendFault {
    /// Stop here and return short.
    Short,
    /// Hold the event back if possible, else spin this long.
    Delay(Duration),
}

/// Draws the faults of one step of a send; `None` (the common case, and
/// always when faults are off) means no fault.
#[inline]
pub(crate) fn on_send() -> Option<SendFault> {
    if !ACTIVE.load(Relaxed) {
        return None;
    }
    if roll(SHORT.load(Relaxed)) {
        SHORT_SENDS.fetch_add(1, Relaxed);
        return Some(SendFault::Short);
    }
    if roll(DELAY.load(Relaxed)) {
        return Some(SendFault::Delay(Duration::from_micros(u64::from(
            DELAY_US.load(Relaxed),
        ))));
    }
    None
}

/// Counts an event held back.
pub(crate) fn count_held() {
    HELD.fetch_add(1, Relaxed);
}

/// Spins for `d` (counted), yielding now and then so that a peer on the
/// same core can run.
pub(crate) fn spin(d: Duration) {
    SPUN.fetch_add(1, Relaxed);
    let start = Instant::now();
    let mut round = 0u32;
    while start.elapsed() < d {
        round = round.wrapping_add(1);
        if round % 64 == 0 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Whether to refuse this port request (counted).
pub(crate) fn refuse_port() -> bool {
    if !ACTIVE.load(Relaxed) || !roll(REFUSE.load(Relaxed)) {
        return false;
    }
    REFUSED.fetch_add(1, Relaxed);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_env_syntax() {
        let cfg: FaultConfig = "short=50, delay=20,delay_us=10,refuse=2000,seed=7"
            .parse()
            .unwrap();
        assert_eq!(
            cfg,
            FaultConfig {
                short_send_per_mille: 50,
                delay_per_mille: 20,
                delay_us: 10,
                refuse_port_per_mille: 1000,
                seed: 7,
            }
        );
        assert_eq!("".parse::<FaultConfig>().unwrap(), FaultConfig::default());
        assert!("short".parse::<FaultConfig>().is_err());
        assert!("short=x".parse::<FaultConfig>().is_err());
        assert!("shrt=1".parse::<FaultConfig>().is_err());
    }
}
