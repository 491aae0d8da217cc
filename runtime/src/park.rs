//! How a thread inside `block_on` sleeps: in its own mio `Poll` (so that
//! sockets registered there get their events and timers fire), woken by a
//! mio `Waker`. If the poller cannot be created (for example when the
//! process is out of file descriptors), it falls back to parking the thread:
//! timers and tasks still work, I/O registered on that thread does not.
//!
//! The timers of a `block_on` thread run on its runtime's clock. The thread
//! that drives a current-thread runtime also *auto-advances* a paused clock
//! (see [`crate::time`]): when it would sleep, it first dispatches the I/O
//! that is ready, and if there was none, moves the clock to the next
//! timer's deadline and fires it instead of sleeping.

use std::io;
use std::sync::Arc;
use std::thread::{self, Thread};
use std::time::Duration;

use futures_task::ArcWake;
use mio::{Events, Poll, Token};

use crate::io::reactor::{self, Reactor, ReactorGuard};
use crate::time::driver::{self, DriverGuard};
use crate::time::Clock;

const WAKER_TOKEN: Token = Token(1);

/// Wakes a parked `block_on` thread.
#[derive(Clone)]
pub(crate) enum Unparker {
    Mio(Arc<mio::Waker>),
    Thread(Thread),
}

impl Unparker {
    pub(crate) fn unpark(&self) {
        match self {
            Unparker::Mio(w) => {
                if let Err(e) = w.wake() {
                    tracing::warn!("waking a block_on thread: {e}");
                }
            }
            Unparker::Thread(t) => t.unpark(),
        }
    }
}

impl ArcWake for Unparker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.unpark();
    }
}

struct MioParker {
    poll: Poll,
    events: Events,
    reactor: Arc<Reactor>,
    _reactor: ReactorGuard,
}

/// The sleeping side of a `block_on` thread.
pub(crate) struct Parker {
    mio: Option<MioParker>,
    unparker: Unparker,
    /// The runtime's clock, which this thread's timers run on.
    clock: Arc<Clock>,
    /// Whether this thread drives its runtime (a current-thread runtime's
    /// `block_on`): only then does it auto-advance a paused clock.
    auto_advance: bool,
    _timers: DriverGuard,
}

impl Parker {
    /// A parker for the current thread; installs its reactor and its
    /// timers on `clock`. `auto_advance`: this thread drives a
    /// current-thread runtime, and auto-advances its clock when paused.
    pub(crate) fn new(clock: Arc<Clock>, auto_advance: bool) -> Self {
        let timers = driver::install_with_clock(clock.clone());
        let (mio, unparker) = match Self::mio() {
            Ok((mio, waker)) => (Some(mio), Unparker::Mio(waker)),
            Err(e) => {
                tracing::warn!("block_on: no poller ({e}); I/O on this thread is unavailable");
                (None, Unparker::Thread(thread::current()))
            }
        };
        Parker {
            mio,
            unparker,
            clock,
            auto_advance,
            _timers: timers,
        }
    }

    fn mio() -> io::Result<(MioParker, Arc<mio::Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER_TOKEN)?);
        let reactor = Arc::new(Reactor::new(poll.registry().try_clone()?, None, None));
        let guard = reactor::enter(reactor.clone());
        Ok((
            MioParker {
                poll,
                events: Events::with_capacity(64),
                reactor,
                _reactor: guard,
            },
            waker,
        ))
    }

    pub(crate) fn unparker(&self) -> Unparker {
        self.unparker.clone()
    }

    /// Fires due timers; returns whether any fired.
    pub(crate) fn fire_timers(&self) -> bool {
        driver::fire_due() > 0
    }

    /// Dispatches the I/O events that are ready now, without sleeping (the
    /// current-thread scheduler's maintenance between batches of tasks).
    /// Returns how many events it dispatched.
    pub(crate) fn poll_now(&mut self) -> usize {
        match &mut self.mio {
            Some(m) => {
                poll_dispatch_count(&mut m.poll, &mut m.events, &m.reactor, Some(Duration::ZERO))
            }
            None => 0,
        }
    }

    /// Sleeps until woken, an I/O event, or the next timer.
    pub(crate) fn park(&mut self) {
        if self.fire_timers() {
            return;
        }
        if self.auto_advance && self.clock.can_auto_advance() {
            // Idle on a paused clock: ready I/O first, then time jumps to
            // the next timer rather than waiting for it.
            if self.poll_now() > 0 {
                return;
            }
            if let Some(next) = driver::next_deadline() {
                self.clock.advance_to(next);
                self.fire_timers();
                return;
            }
            // No timer to jump to: wait for a wake-up or I/O.
        }
        let timeout = driver::next_timeout();
        match &mut self.mio {
            Some(m) => poll_and_dispatch(&mut m.poll, &mut m.events, &m.reactor, timeout),
            None => match timeout {
                Some(t) => thread::park_timeout(t),
                None => thread::park(),
            },
        }
        self.fire_timers();
    }
}

/// One `epoll_wait` and the dispatch of its I/O events.
pub(crate) fn poll_and_dispatch(
    poll: &mut Poll,
    events: &mut Events,
    reactor: &Reactor,
    timeout: Option<Duration>,
) {
    poll_dispatch_count(poll, events, reactor, timeout);
}

/// [`poll_and_dispatch`], returning how many I/O events it dispatched.
fn poll_dispatch_count(
    poll: &mut Poll,
    events: &mut Events,
    reactor: &Reactor,
    timeout: Option<Duration>,
) -> usize {
    reactor.release_pending();
    if let Err(e) = poll.poll(events, timeout) {
        if e.kind() != io::ErrorKind::Interrupted {
            tracing::warn!("poll: {e}");
        }
        return 0;
    }
    reactor.dispatch(events)
}

/// A `timerfd` registered in a worker's `Poll`, for sleeps shorter than a
/// millisecond: `epoll_wait` takes its timeout in milliseconds, and mio
/// rounds a 100 µs timeout up to 1 ms, which would make the rescue of a
/// busy worker's I/O ten times slower than configured.
#[derive(Debug)]
pub(crate) struct PreciseTimer {
    fd: std::os::fd::OwnedFd,
}

/// The token of a worker's [`PreciseTimer`] (below the I/O tokens).
pub(crate) const PRECISE_TIMER_TOKEN: Token = Token(2);

impl PreciseTimer {
    /// A disarmed timer, registered in `poll`.
    pub(crate) fn new(poll: &Poll) -> io::Result<Self> {
        let timer = Self::unregistered()?;
        timer.register(poll, PRECISE_TIMER_TOKEN)?;
        Ok(timer)
    }

    /// A disarmed timer, not registered anywhere yet.
    pub(crate) fn unregistered() -> io::Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    /// Registers the timer in `poll` under `token` (one of the tokens below
    /// the I/O ones, which the reactor's dispatch passes over). A timer
    /// may be registered in several `Poll`s: its expiry wakes them all.
    pub(crate) fn register(&self, poll: &Poll, token: Token) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        poll.registry().register(
            &mut mio::unix::SourceFd(&self.fd.as_raw_fd()),
            token,
            mio::Interest::READABLE,
        )
    }

    /// Stops the timer (an expiry not yet due will not come).
    pub(crate) fn disarm(&self) {
        self.set(Duration::ZERO);
    }

    /// Makes the timer fire once, `after` from now (replacing any earlier
    /// arming). A zero duration is bumped to 1 ns (zero would disarm).
    pub(crate) fn arm(&self, after: Duration) {
        self.set(after.max(Duration::from_nanos(1)));
    }

    /// `timerfd_settime` with `value` (zero: disarmed), no interval.
    fn set(&self, value: Duration) {
        use std::os::fd::AsRawFd;
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: value.as_secs().try_into().unwrap_or(libc::time_t::MAX),
                tv_nsec: value.subsec_nanos().into(),
            },
        };
        // SAFETY: `fd` is our timerfd; `spec` is a valid itimerspec and the
        // old value is not wanted (null).
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc < 0 {
            tracing::warn!("timerfd_settime: {}", io::Error::last_os_error());
        }
    }

    /// Consumes an expiry (after its event), so that the next one is a new
    /// edge.
    pub(crate) fn clear(&self) {
        use std::os::fd::AsRawFd;
        let mut n = 0u64;
        // SAFETY: reads at most 8 bytes into `n`; EAGAIN (nothing to read)
        // is fine.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut n as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// Arms the timer if `timeout` is not a whole number of milliseconds
    /// (which `epoll_wait` honours by itself).
    pub(crate) fn arm_for(&self, timeout: Option<Duration>) {
        if let Some(t) = timeout {
            if t.subsec_nanos() % 1_000_000 != 0 {
                self.arm(t);
            }
        }
    }
}
