//! The per-thread timer driver: a [`Wheel`] of timer entries on each runtime
//! thread (every worker, and a thread inside `block_on`).
//!
//! A [`Sleep`](super::Sleep) registers in the wheel of the thread that first
//! polls it. The entry is shared (`Arc<Entry>`), so a task that moves to
//! another worker keeps its timer: the owning thread fires it and wakes the
//! task wherever it is. Dropping a sleep on its owning thread removes it from
//! the wheel; dropped elsewhere, it is marked cancelled and its entry leaves
//! the wheel when its deadline comes.
//!
//! # Clock
//! A driver reads the time from its runtime's [`Clock`] when it has one
//! (the `block_on` threads), so that a paused clock (current-thread
//! runtime, `time::pause`) drives its timers; a worker's driver reads the
//! system clock (a multi-thread runtime's clock cannot be paused).

use std::cell::RefCell;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use super::clock::Clock;
use super::wheel::{TimerKey, Wheel};

/// What a sleep and the wheel share.
#[derive(Debug, Default)]
pub(crate) struct Entry {
    /// Set when the wheel fires the entry.
    pub(crate) fired: AtomicBool,
    /// Woken when the entry fires.
    pub(crate) waker: Mutex<Option<Waker>>,
}

impl Entry {
    pub(crate) fn set_waker(&self, waker: &Waker) {
        let mut slot = self.waker.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_ref() {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    fn fire(&self) {
        self.fired.store(true, std::sync::atomic::Ordering::Release);
        let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

struct Driver {
    wheel: Wheel<Arc<Entry>>,
    start: Instant,
    /// `None`: the system clock.
    clock: Option<Arc<Clock>>,
}

impl Driver {
    fn now(&self) -> Instant {
        match &self.clock {
            Some(c) => c.now(),
            None => Instant::now(),
        }
    }
}

thread_local! {
    static DRIVER: RefCell<Option<Driver>> = const { RefCell::new(None) };
}

/// Removes this thread's driver when dropped (if it installed it).
pub(crate) struct DriverGuard {
    installed: bool,
}

/// Gives this thread a timer driver on the system clock, unless it has
/// one (a worker's).
pub(crate) fn install() -> DriverGuard {
    install_with(None)
}

/// Gives this thread a timer driver on `clock`, unless it has one (a
/// `block_on` thread's).
pub(crate) fn install_with_clock(clock: Arc<Clock>) -> DriverGuard {
    install_with(Some(clock))
}

fn install_with(clock: Option<Arc<Clock>>) -> DriverGuard {
    DRIVER.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_some() {
            return DriverGuard { installed: false };
        }
        let start = clock.as_ref().map_or_else(Instant::now, |c| c.now());
        *d = Some(Driver {
            wheel: Wheel::new(),
            start,
            clock,
        });
        DriverGuard { installed: true }
    })
}

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if self.installed {
            // Take it out first: dropping entries may run waker code.
            let driver = DRIVER.with(|d| d.borrow_mut().take());
            drop(driver);
        }
    }
}

/// Milliseconds since `start`, rounded up, so that a timer never fires
/// before its deadline.
fn ms_ceil(start: Instant, at: Instant) -> u64 {
    let nanos = at.saturating_duration_since(start).as_nanos();
    u64::try_from(nanos.div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// Milliseconds since `start`, rounded down (the current tick).
fn ms_floor(start: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(start).as_millis()).unwrap_or(u64::MAX)
}

/// Where a registered entry lives.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Registration {
    key: TimerKey,
    thread: ThreadId,
}

/// Registers `entry` to fire at `deadline` in this thread's wheel. `None`
/// if this thread has no driver.
pub(crate) fn register(deadline: Instant, entry: &Arc<Entry>) -> Option<Registration> {
    DRIVER.with(|d| {
        let mut d = d.borrow_mut();
        let driver = d.as_mut()?;
        let key = driver
            .wheel
            .insert(ms_ceil(driver.start, deadline), entry.clone());
        Some(Registration {
            key,
            thread: thread::current().id(),
        })
    })
}

impl Registration {
    /// Whether it is in the calling thread's wheel.
    pub(crate) fn is_here(&self) -> bool {
        self.thread == thread::current().id()
    }
}

/// Whether this thread has a timer driver (it is a runtime thread).
pub(crate) fn installed() -> bool {
    DRIVER.try_with(|d| d.borrow().is_some()).unwrap_or(false)
}

/// Removes a registration, if it belongs to this thread's wheel (otherwise
/// the entry stays until its deadline and fires into nothing).
pub(crate) fn deregister(reg: Registration) {
    if reg.thread != thread::current().id() {
        return;
    }
    // `try_with`: a sleep dropped while the thread-locals are torn down.
    let removed = DRIVER
        .try_with(|d| {
            d.try_borrow_mut()
                .ok()
                .and_then(|mut d| d.as_mut().and_then(|dr| dr.wheel.remove(reg.key)))
        })
        .ok()
        .flatten();
    drop(removed);
}

/// How long this thread may sleep before its next timer, if it has any.
pub(crate) fn next_timeout() -> Option<Duration> {
    DRIVER.with(|d| {
        let d = d.borrow();
        let driver = d.as_ref()?;
        let next = driver.wheel.next_deadline()?;
        let at = driver.start + Duration::from_millis(next);
        Some(at.saturating_duration_since(driver.now()))
    })
}

/// When this thread's next timer is due, on its clock (for auto-advance).
pub(crate) fn next_deadline() -> Option<Instant> {
    DRIVER.with(|d| {
        let d = d.borrow();
        let driver = d.as_ref()?;
        let next = driver.wheel.next_deadline()?;
        driver.start.checked_add(Duration::from_millis(next))
    })
}

/// Fires every timer of this thread that is due; returns how many fired.
pub(crate) fn fire_due() -> usize {
    let fired = DRIVER.with(|d| {
        let mut d = d.borrow_mut();
        let Some(driver) = d.as_mut() else {
            return Vec::new();
        };
        let now = ms_floor(driver.start, driver.now());
        match driver.wheel.next_deadline() {
            Some(next) if next <= now => {}
            _ => return Vec::new(),
        }
        let mut fired = Vec::new();
        driver.wheel.advance(now, |_, entry| fired.push(entry));
        fired
    });
    // Wake outside the borrow: waking schedules tasks, which never touches
    // the wheel, but a waker is arbitrary code.
    let n = fired.len();
    for entry in fired {
        entry.fire();
    }
    n
}

/// Whether `entry` fired already (for `Sleep::poll`).
pub(crate) fn has_fired(entry: &Entry) -> bool {
    entry.fired.load(std::sync::atomic::Ordering::Acquire)
}
