//! Time: [`sleep`], [`sleep_until`], [`timeout`], [`timeout_at`],
//! [`interval`], [`interval_at`] and the runtime's clock ([`Instant`],
//! [`pause`], [`resume`], [`advance`]), with tokio's names and behaviour.
//!
//! Each runtime thread (every worker, and a thread inside `block_on`) owns
//! a hierarchical timing wheel with 1 ms resolution. A timer lives on the
//! thread that first polls it and drives that thread's sleep: a worker waits
//! in its `Poll` no longer than until its next deadline. Timers never fire
//! early: deadlines are rounded up to the next millisecond, and a sleep
//! completes only once [`Instant::now`] has reached its deadline.
//!
//! Polling a timer on a thread that does not run a Fulcrum runtime panics.
//!
//! # What if there are many timers?
//! Nothing is refused or dropped: a wheel keeps its timers in a slab that
//! grows with them, so it holds as many as are alive, and every deadline
//! has an exact place (no clamping, no overflow list). A deadline too far
//! to represent (`sleep(Duration::MAX)`) becomes one about 30 years away.
//! A timer that fires wakes its task as any wake does.
//!
//! # Paused time
//! As tokio's `test-util` clock, on the current-thread runtime: after
//! [`pause`] (or with `Builder::start_paused(true)`, or
//! `#[fulcrum::test(start_paused = true)]`), [`Instant::now`] stands still
//! and moves only by [`advance`] or by *auto-advance*: when the runtime has
//! nothing to run (no task is ready and no I/O event is pending), its
//! clock jumps to the next timer's deadline and fires it, so
//! `sleep(Duration::from_secs(3600))` completes at once and timeouts fire
//! in virtual time. Auto-advance waits while a blocking-pool call of the
//! runtime is in flight ([`spawn_blocking`](crate::spawn_blocking), and so
//! `fs`, host-name resolution, stdio), as tokio's does.
//!
//! Pausing a multi-thread runtime's clock panics, as in tokio (its timers
//! live on each worker; none can tell that the whole runtime is idle). A
//! thread inside `Handle::block_on` of a paused current-thread runtime sees
//! the paused clock, but only the thread inside `Runtime::block_on`
//! auto-advances it.

mod clock;
pub(crate) mod driver;
mod instant;
pub(crate) mod wheel;

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

pub(crate) use self::clock::Clock;
use self::driver::{Entry, Registration};
pub use self::instant::Instant;

/// Errors of this module's futures, at tokio's path.
pub mod error {
    pub use super::Elapsed;
}

/// The current runtime's clock reading, as a std instant (see
/// [`Instant::now`]).
pub(crate) fn now_std() -> std::time::Instant {
    if !clock::did_pause() {
        return std::time::Instant::now();
    }
    crate::context::with_current(|handle| match handle {
        Some(h) => h.clock().now(),
        None => std::time::Instant::now(),
    })
}

/// Runs `f` on the current runtime's clock; panics with its error, or
/// outside a runtime.
#[track_caller]
fn on_clock(f: impl FnOnce(&Clock) -> Result<(), &'static str>) {
    let result = crate::context::with_current(|handle| match handle {
        Some(h) => f(h.clock()),
        None => Err("time cannot be frozen from outside the Fulcrum runtime"),
    });
    if let Err(msg) = result {
        panic!("{msg}");
    }
}

/// Pauses the current runtime's clock: from now on [`Instant::now`] stands
/// still, and moves only with [`advance`] or, when the runtime has nothing
/// else to do, by jumping to the next timer (auto-advance; see the [module
/// docs](self#paused-time)).
///
/// # Panics
/// Outside a runtime, on a multi-thread runtime (as tokio: pausing needs
/// the current-thread runtime), or if time is already paused.
#[track_caller]
pub fn pause() {
    on_clock(Clock::pause);
}

/// Lets the paused clock run again, from the time it shows.
///
/// # Panics
/// Outside a runtime, or if time is not paused.
#[track_caller]
pub fn resume() {
    on_clock(Clock::resume);
}

/// Moves the paused clock forward by `duration` in one jump, fires the
/// timers that are due by then (their tasks run in any order), and yields
/// once so that they can run.
///
/// # Panics
/// Outside a runtime, if time is not paused, or if `duration` overflows the
/// clock.
pub async fn advance(duration: Duration) {
    on_clock(|clock| clock.advance(duration));
    // Timers registered on this thread fire now; the tasks they wake are
    // queued behind this one.
    driver::fire_due();
    crate::yield_now().await;
}

/// Waits until `duration` has elapsed.
///
/// ```
/// use std::time::Duration;
/// use fulcrum_runtime::time::{sleep, Instant};
///
/// let rt = fulcrum_runtime::Builder::new_current_thread().build()?;
/// rt.block_on(async {
///     let start = Instant::now();
///     sleep(Duration::from_millis(10)).await;
///     assert!(start.elapsed() >= Duration::from_millis(10));
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(
        Instant::now()
            .checked_add(duration)
            .unwrap_or_else(far_future),
    )
}

/// Waits until `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        entry: None,
        registration: None,
    }
}

/// About 30 years from now: stands in for a deadline that overflows.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

/// The future returned by [`sleep`] and [`sleep_until`].
#[must_use = "futures do nothing unless polled"]
pub struct Sleep {
    deadline: Instant,
    entry: Option<Arc<Entry>>,
    registration: Option<Registration>,
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .field("registered", &self.registration.is_some())
            .finish()
    }
}

impl Sleep {
    /// The instant this sleep completes at.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the deadline has passed.
    pub fn is_elapsed(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Moves the deadline (re-arming a completed sleep).
    pub fn reset(self: Pin<&mut Self>, deadline: Instant) {
        let this = self.get_mut();
        this.unregister();
        this.deadline = deadline;
    }

    fn unregister(&mut self) {
        if let Some(reg) = self.registration.take() {
            if !reg.is_here() {
                // Dropped away from the thread whose wheel holds the entry
                // (the task was handed off): the entry stays there until its
                // deadline. Its waker goes now, or it would keep the task's
                // allocation (the whole future's storage) alive until then:
                // a server whose connections have a 15 s request timeout and
                // move between workers held thousands of finished tasks.
                if let Some(e) = &self.entry {
                    e.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
                }
            }
            driver::deregister(reg);
        }
        self.entry = None;
    }
}

impl Future for Sleep {
    type Output = ();

    #[track_caller]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if crate::coop::poll_proceed(cx).is_pending() {
            return Poll::Pending;
        }
        let this = self.get_mut();
        if Instant::now() >= this.deadline {
            this.unregister();
            crate::coop::consume();
            return Poll::Ready(());
        }
        if let (Some(entry), Some(reg)) = (&this.entry, &this.registration) {
            if !reg.is_here() && driver::installed() {
                // The task now runs on another runtime thread (it was
                // handed off): its timer moves along, so that a thread busy
                // in a long poll does not hold it back. The old wheel's
                // entry is disarmed and leaves at its deadline.
                entry.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
                this.entry = None;
                this.registration = None;
            }
        }
        if let Some(entry) = &this.entry {
            if !driver::has_fired(entry) {
                entry.set_waker(cx.waker());
                return Poll::Pending;
            }
            // Fired, yet the clock says not yet (rounding can only make it
            // later, so this cannot happen unless the clock misbehaves):
            // register again.
            this.unregister();
        }
        let entry = Arc::new(Entry::default());
        entry.set_waker(cx.waker());
        let Some(reg) = driver::register(this.deadline.into_std(), &entry) else {
            panic!(
                "a Fulcrum timer was polled outside a Fulcrum runtime: poll it from a task, or \
                 inside `Runtime::block_on`"
            );
        };
        this.entry = Some(entry);
        this.registration = Some(reg);
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// Returned by [`timeout`] when the deadline passes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed(());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for io::Error {
    fn from(e: Elapsed) -> Self {
        io::Error::new(io::ErrorKind::TimedOut, e)
    }
}

/// Runs `future` for at most `duration`: `Err(Elapsed)` if it has not
/// completed by then (the future is dropped with the `Timeout`).
///
/// ```
/// use std::time::Duration;
/// use fulcrum_runtime::time::{sleep, timeout};
///
/// let rt = fulcrum_runtime::Builder::new_current_thread().build()?;
/// rt.block_on(async {
///     assert_eq!(timeout(Duration::from_secs(1), async { 7 }).await, Ok(7));
///
///     let too_slow = sleep(Duration::from_secs(60));
///     assert!(timeout(Duration::from_millis(10), too_slow).await.is_err());
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    Timeout {
        future,
        sleep: sleep(duration),
    }
}

/// Like [`timeout`], with a deadline.
pub fn timeout_at<F: Future>(deadline: Instant, future: F) -> Timeout<F> {
    Timeout {
        future,
        sleep: sleep_until(deadline),
    }
}

/// The future returned by [`timeout`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct Timeout<F> {
    future: F,
    sleep: Sleep,
}

impl<F> Timeout<F> {
    /// The wrapped future.
    pub fn get_ref(&self) -> &F {
        &self.future
    }

    /// Gives back the wrapped future.
    pub fn into_inner(self) -> F {
        self.future
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `future` is structurally pinned: it is never moved out of a
        // pinned `Timeout` (`into_inner` takes `self` by value, which needs
        // `Unpin` or an unpinned value), and `Timeout` has no `Drop` that
        // moves it. `sleep` is `Unpin` and not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above.
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        if let Poll::Ready(out) = future.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        match Pin::new(&mut this.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed(()))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// What an [`Interval`] does when ticks were missed (the task was late).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissedTickBehavior {
    /// Fire the missed ticks back to back, then keep the original schedule.
    #[default]
    Burst,
    /// Restart the schedule from now: the next tick is one period later.
    Delay,
    /// Skip the missed ticks and keep the original phase.
    Skip,
}

/// Ticks every `period`, the first tick at once.
///
/// ```
/// use std::time::Duration;
/// use fulcrum_runtime::time::interval;
///
/// let rt = fulcrum_runtime::Builder::new_current_thread().build()?;
/// rt.block_on(async {
///     let mut every_5ms = interval(Duration::from_millis(5));
///     let first = every_5ms.tick().await; // at once
///     every_5ms.tick().await;
///     let third = every_5ms.tick().await;
///     // A tick returns the instant it was scheduled for.
///     assert_eq!(third - first, Duration::from_millis(10));
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Panics
/// If `period` is zero.
#[track_caller]
pub fn interval(period: Duration) -> Interval {
    interval_at(Instant::now(), period)
}

/// Ticks every `period`, the first tick at `start`.
///
/// # Panics
/// If `period` is zero.
#[track_caller]
pub fn interval_at(start: Instant, period: Duration) -> Interval {
    assert!(period > Duration::ZERO, "`period` must be non-zero.");
    Interval {
        sleep: sleep_until(start),
        period,
        missed: MissedTickBehavior::Burst,
    }
}

/// A stream of ticks; see [`interval`].
#[derive(Debug)]
pub struct Interval {
    sleep: Sleep,
    period: Duration,
    missed: MissedTickBehavior,
}

impl Interval {
    /// Waits for the next tick; returns its scheduled instant.
    pub async fn tick(&mut self) -> Instant {
        std::future::poll_fn(|cx| self.poll_tick(cx)).await
    }

    /// Polls for the next tick.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        if Pin::new(&mut self.sleep).poll(cx).is_pending() {
            return Poll::Pending;
        }
        let tick = self.sleep.deadline();
        let now = Instant::now();
        let next = match self.missed {
            MissedTickBehavior::Burst => tick + self.period,
            MissedTickBehavior::Delay => now + self.period,
            MissedTickBehavior::Skip => {
                let mut next = tick + self.period;
                if next <= now {
                    let behind = now.duration_since(tick).as_nanos();
                    let periods = behind / self.period.as_nanos() + 1;
                    let periods = u32::try_from(periods).unwrap_or(u32::MAX);
                    next = tick + self.period.saturating_mul(periods);
                }
                next
            }
        };
        Pin::new(&mut self.sleep).reset(next);
        Poll::Ready(tick)
    }

    /// Restarts the schedule: the next tick is one period from now.
    pub fn reset(&mut self) {
        Pin::new(&mut self.sleep).reset(Instant::now() + self.period);
    }

    /// Restarts the schedule: the next tick is now.
    pub fn reset_immediately(&mut self) {
        Pin::new(&mut self.sleep).reset(Instant::now());
    }

    /// Restarts the schedule: the next tick is `after` from now.
    pub fn reset_after(&mut self, after: Duration) {
        Pin::new(&mut self.sleep).reset(Instant::now() + after);
    }

    /// Restarts the schedule: the next tick is at `deadline`.
    pub fn reset_at(&mut self, deadline: Instant) {
        Pin::new(&mut self.sleep).reset(deadline);
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// What happens to missed ticks.
    pub fn missed_tick_behavior(&self) -> MissedTickBehavior {
        self.missed
    }

    /// Sets what happens to missed ticks.
    pub fn set_missed_tick_behavior(&mut self, behavior: MissedTickBehavior) {
        self.missed = behavior;
    }
}
