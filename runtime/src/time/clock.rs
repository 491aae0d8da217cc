//! The runtime's clock: real time, or a paused clock that only moves when
//! told to ([`pause`](super::pause), [`advance`](super::advance)) or when
//! the runtime is idle (auto-advance), as tokio's `test-util` clock.
//!
//! # State
//! - `base` and `unfrozen`: the clock reads `base + unfrozen.elapsed()`
//!   while running and `base` while paused (`unfrozen == None`). A clock
//!   that was never paused reads the system's monotonic clock.
//! - `inhibit`: how many blocking-pool calls of this runtime are in flight.
//!   Auto-advance waits for them: a paused test that reads a file must not
//!   see its timeouts fire while the read runs.
//!
//! Only the current-thread runtime's clock can be paused (as in tokio):
//! its one thread runs every task and every timer, so "the runtime is idle"
//! is a fact that thread knows. A multi-thread runtime's timers live on
//! each worker, and no worker can tell that all are idle without a
//! protocol with the scheduler; pausing it is refused with a message.
//!
//! # Cost
//! Reading a clock that was never paused is one relaxed-then-acquire load
//! and `std::time::Instant::now()`; [`crate::time::Instant::now`] also
//! checks one process-wide flag first, so programs that never pause time
//! never look the runtime up to read it.

use std::sync::atomic::Ordering::{Acquire, Release};
use std::time::Duration;

use crate::loom::{lock, AtomicBool, Mutex};

/// Set once any clock in the process has been paused: from then on
/// [`crate::time::Instant::now`] asks the current runtime's clock.
static DID_PAUSE: AtomicBool = AtomicBool::new(false);

/// Whether any clock has ever been paused in this process.
pub(crate) fn did_pause() -> bool {
    DID_PAUSE.load(Acquire)
}

/// One runtime's clock.
#[derive(Debug)]
pub(crate) struct Clock {
    /// Only the current-thread runtime's clock may be paused.
    pausable: bool,
    /// Set at the first pause; until then `now` is the system clock.
    ever_paused: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The clock's reading when it was last paused or resumed.
    base: std::time::Instant,
    /// When the clock was last resumed (`None`: paused).
    unfrozen: Option<std::time::Instant>,
    /// Blocking calls in flight; auto-advance waits while non-zero.
    inhibit: usize,
}

/// Why a clock operation was refused (the panic messages of
/// `pause`/`resume`/`advance`).
pub(crate) const NOT_PAUSABLE: &str =
    "`time::pause()` requires the current-thread Fulcrum runtime \
    (`Builder::new_current_thread()`, or `#[fulcrum::test(flavor = \"current_thread\")]`): the \
    timers of a multi-thread runtime live on each worker, which cannot tell that all of them are \
    idle";
pub(crate) const ALREADY_FROZEN: &str = "time is already frozen";
pub(crate) const NOT_FROZEN: &str = "time is not frozen";

impl Clock {
    /// A running clock; `pausable` for the current-thread runtime.
    pub(crate) fn new(pausable: bool) -> Self {
        let now = std::time::Instant::now();
        Self {
            pausable,
            ever_paused: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                base: now,
                unfrozen: Some(now),
                inhibit: 0,
            }),
        }
    }

    /// Whether this clock may be paused (current-thread runtime).
    pub(crate) fn is_pausable(&self) -> bool {
        self.pausable
    }

    /// The clock's reading.
    pub(crate) fn now(&self) -> std::time::Instant {
        if !self.ever_paused.load(Acquire) {
            return std::time::Instant::now();
        }
        let inner = lock(&self.inner);
        match inner.unfrozen {
            Some(since) => inner.base + since.elapsed(),
            None => inner.base,
        }
    }

    /// Freezes the clock.
    pub(crate) fn pause(&self) -> Result<(), &'static str> {
        if !self.pausable {
            return Err(NOT_PAUSABLE);
        }
        let mut inner = lock(&self.inner);
        let Some(since) = inner.unfrozen else {
            return Err(ALREADY_FROZEN);
        };
        inner.base += since.elapsed();
        inner.unfrozen = None;
        // Both before the lock is released: a reader that sees the flag
        // takes the lock, and then sees the frozen state.
        self.ever_paused.store(true, Release);
        DID_PAUSE.store(true, Release);
        Ok(())
    }

    /// Lets the clock run again, from its frozen reading.
    pub(crate) fn resume(&self) -> Result<(), &'static str> {
        let mut inner = lock(&self.inner);
        if inner.unfrozen.is_some() {
            return Err(NOT_FROZEN);
        }
        inner.unfrozen = Some(std::time::Instant::now());
        Ok(())
    }

    /// Moves a frozen clock forward by `by`.
    pub(crate) fn advance(&self, by: Duration) -> Result<(), &'static str> {
        let mut inner = lock(&self.inner);
        if inner.unfrozen.is_some() {
            return Err(NOT_FROZEN);
        }
        inner.base = inner
            .base
            .checked_add(by)
            .ok_or("time::advance: the duration overflows the clock")?;
        Ok(())
    }

    /// Moves a frozen clock forward to `to`, if it is later (auto-advance).
    pub(crate) fn advance_to(&self, to: std::time::Instant) {
        let mut inner = lock(&self.inner);
        if inner.unfrozen.is_none() && to > inner.base {
            inner.base = to;
        }
    }

    /// Whether the clock is frozen and no blocking call holds auto-advance
    /// back.
    pub(crate) fn can_auto_advance(&self) -> bool {
        if !self.ever_paused.load(Acquire) {
            return false;
        }
        let inner = lock(&self.inner);
        inner.unfrozen.is_none() && inner.inhibit == 0
    }

    /// Holds auto-advance back until the guard is dropped.
    pub(crate) fn inhibit_auto_advance(self: &std::sync::Arc<Self>) -> InhibitGuard {
        lock(&self.inner).inhibit += 1;
        InhibitGuard(self.clone())
    }
}

/// Returned by [`Clock::inhibit_auto_advance`].
#[derive(Debug)]
pub(crate) struct InhibitGuard(std::sync::Arc<Clock>);

impl Drop for InhibitGuard {
    fn drop(&mut self) {
        let mut inner = lock(&self.0.inner);
        inner.inhibit = inner.inhibit.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paused_clock_moves_only_when_advanced() {
        let clock = Clock::new(true);
        clock.pause().unwrap();
        let t0 = clock.now();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(clock.now(), t0);
        clock.advance(Duration::from_secs(3600)).unwrap();
        assert_eq!(clock.now(), t0 + Duration::from_secs(3600));
        clock.advance_to(t0);
        assert_eq!(clock.now(), t0 + Duration::from_secs(3600), "never back");
        assert_eq!(clock.pause(), Err(ALREADY_FROZEN));
        clock.resume().unwrap();
        assert!(clock.now() >= t0 + Duration::from_secs(3600));
        assert_eq!(clock.resume(), Err(NOT_FROZEN));
        assert_eq!(clock.advance(Duration::from_secs(1)), Err(NOT_FROZEN));
    }

    #[test]
    fn only_pausable_clocks_pause() {
        assert_eq!(Clock::new(false).pause(), Err(NOT_PAUSABLE));
    }

    #[test]
    fn blocking_calls_hold_auto_advance_back() {
        let clock = std::sync::Arc::new(Clock::new(true));
        assert!(!clock.can_auto_advance(), "running");
        clock.pause().unwrap();
        assert!(clock.can_auto_advance());
        let guard = clock.inhibit_auto_advance();
        assert!(!clock.can_auto_advance());
        drop(guard);
        assert!(clock.can_auto_advance());
    }
}
