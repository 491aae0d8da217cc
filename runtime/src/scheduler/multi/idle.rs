//! An idle worker: the short spin on its DLB port, then the park in its
//! reactor, with the no-lost-wake-up protocol of `crate::sleepers`.

use std::cell::Cell;
use std::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};

use mio::{Events, Poll};

use super::worker::{Phase, Worker};
use crate::io::reactor::Reactor;
use crate::metrics::WorkerCounters;

impl Worker {
    /// Sleeps until work arrives (or a timer is due, or a watch interval
    /// ends), then rescues busy peers if the watch says so.
    pub(super) fn park(&self, poll: &mut Poll, events: &mut Events, reactor: &Reactor) {
        let shared = &*self.shared;
        self.counters().local_queue_depth.store(0, Relaxed);
        if crate::time::driver::fire_due() > 0 {
            return;
        }
        // Counted idle from here, so that peers hand work over.
        shared.sleepers.announce_idle();
        let spin = self.spin();
        if spin == Spin::Found {
            shared.sleepers.cancel_idle();
            return;
        }
        {
            let mut port = self.port.borrow_mut();
            if !port.prepare_park() {
                port.finish_park();
                shared.sleepers.cancel_idle();
                return;
            }
        }
        let me = self.index;
        // Peers that are running and own sockets: while there are any, sleep
        // at most one rescue interval, then rescue those that stayed inside
        // one poll all along.
        let watch = shared.rescue_watch(me);
        shared.watching[me].store(watch.is_some(), SeqCst);
        // Parked, then a fence that pairs with the pushers' `notify_parked`
        // (push, fence, read who is parked): either they see this worker
        // parked and wake it, or it sees their work here (`crate::sleepers`).
        shared.sleepers.before_sleep(me);
        if shared.overflow.is_empty()
            && !shared.shutdown.load(SeqCst)
            && !shared.stealing_has_work()
        {
            // The timer wheel's deadlines are whole milliseconds, and
            // `epoll_wait` (rounding up) meets them to the millisecond: only
            // a watch, whose sleep ends at the sooner of its interval and
            // the next deadline, needs the precise timer. Arming it at every
            // park with a deadline cost a `timerfd_settime` each, several
            // µs on a virtual machine.
            let mut timeout = crate::time::driver::next_timeout();
            if let Some(w) = &watch {
                timeout = Some(timeout.map_or(w.interval, |t| t.min(w.interval)));
                if let Some(p) = &self.precise {
                    p.arm_for(timeout);
                }
            }
            self.heavy_queued.set(false);
            // Asleep: nobody need watch this worker any more.
            if self.watch_armed.replace(false) {
                if let Some(t) = shared.watch_timers.get(me) {
                    t.disarm();
                }
            }
            self.phase.set(Phase::Dispatching { backlogged: false });
            let parked_at = crate::clock::now_ns();
            crate::park::poll_and_dispatch(poll, events, reactor, timeout);
            if spin == Spin::Skipped {
                // What the skipped spin would have done: caught the work
                // if the sleep was shorter than the spin and what ended it
                // is what the spin watches (the DLB port, or a peer's wake
                // for the overflow queue), not a socket, which it does not.
                let slept = crate::clock::now_ns().saturating_sub(parked_at);
                let limit = crate::clock::ns(shared.threads.tuning.spin_before_park);
                let watched = events
                    .iter()
                    .any(|e| e.token() == super::DLB_TOKEN || e.token() == super::WAKER_TOKEN);
                self.spin.record(slept < limit && watched);
            }
            self.phase.set(Phase::Between);
            if let Some(p) = &self.precise {
                if events
                    .iter()
                    .any(|e| e.token() == crate::park::PRECISE_TIMER_TOKEN)
                {
                    p.clear();
                }
            }
        }
        shared.watching[me].store(false, SeqCst);
        shared.sleepers.after_sleep(me);
        self.port.borrow_mut().finish_park();
        WorkerCounters::add(&self.counters().parks, 1);
        crate::time::driver::fire_due();
        match watch {
            Some(w) if w.started.elapsed() >= w.interval => self.rescue(&w.peers),
            Some(_) => {}
            None if reactor.resources() > 0 => {
                // This worker goes back to work owning sockets: make sure an
                // idle peer watches it, in case a task here runs long.
                if let Some(interval) = shared.rescue_interval {
                    self.ask_for_watch(interval);
                }
            }
            None => {}
        }
    }

    /// Makes sure that an idle peer watches this worker if it is still
    /// awake one `interval` from now: arms its watch timer, whose expiry
    /// wakes the peers asleep in their `Poll` (a lightly loaded worker is
    /// back asleep well before, and disarms it then, so no peer wakes); with
    /// no watch timers, wakes a peer now.
    fn ask_for_watch(&self, interval: std::time::Duration) {
        let shared = &*self.shared;
        let Some(timer) = shared.watch_timers.get(self.index) else {
            shared.nudge_watcher(self.index);
            return;
        };
        if self.watch_armed.get() || shared.watched(self.index) {
            return;
        }
        timer.arm(interval);
        self.watch_armed.set(true);
    }

    /// Polls the DLB port for a short, bounded time before sleeping, if
    /// spinning has been paying off (see [`SpinPolicy`]): a handoff often
    /// follows within microseconds (a task spawning its successor on a
    /// peer), and catching it here saves a sleep and a wake-up (an eventfd
    /// write and an `epoll_wait` return, tens of microseconds). Returns
    /// `true` if work arrived.
    ///
    /// The spin never yields its core (`sched_yield`): on a machine whose
    /// cores are all busy, a worker that yields hands its core to a
    /// CPU-bound peer for a whole time slice (and, under EEVDF, pushes its
    /// own deadline back), and is then not running when its own work
    /// arrives.
    fn spin(&self) -> Spin {
        let shared = &*self.shared;
        let limit = shared.threads.tuning.spin_before_park;
        if limit.is_zero() {
            return Spin::Off;
        }
        if !self.spin.should_spin() {
            return Spin::Skipped;
        }
        // The scheduler's clock (the TSC where it is usable), not
        // `Instant`: a vDSO `clock_gettime` per turn was 2% of ping_pong.
        let deadline = crate::clock::now_ns().saturating_add(crate::clock::ns(limit));
        while crate::clock::now_ns() < deadline {
            if self.poll_port()
                || !shared.overflow.is_empty()
                || shared.stealing_has_work()
                || shared.shutdown.load(Acquire)
            {
                self.spin.record(true);
                return Spin::Found;
            }
            std::hint::spin_loop();
        }
        self.spin.record(false);
        Spin::Failed
    }
}

/// What an idle worker's pre-park spin did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spin {
    /// Work arrived while it spun.
    Found,
    /// It spun for the whole limit and found nothing.
    Failed,
    /// [`SpinPolicy`] said not to spin this time.
    Skipped,
    /// Spinning is configured off.
    Off,
}

/// Whether an idle worker's pre-park spin pays off: a running mean of how
/// often a spin found work (fixed point, 0 to [`SpinPolicy::ONE`]). Below
/// one in eight the worker stops spinning, except for one probe every
/// [`SpinPolicy::PROBE_EVERY`] parks. A park whose spin was skipped also
/// counts, as what the spin would have done: found work if the sleep was
/// shorter than the spin limit and ended by what the spin watches (the DLB
/// port or a peer's wake; a socket's readiness ends a sleep, but a spin
/// would not have seen it). So the mean recovers as soon as work comes
/// back at short intervals, rather than only by probes. Without that, a
/// burst of work that starts while spinning is off (say, a thread outside
/// the runtime spawning thousands of tasks, whose first spins failed
/// because that thread had no core) was served park by park, each task
/// waiting for a wake-up (`FULCRUM_BENCH_METRICS=1` in `benches/sched.rs`
/// showed such runs with hundreds of parks taking twice as long). Workloads that hand work from core to core (spawn
/// chains, yield loops) keep spinning; a server whose idle workers wait
/// for requests stops, and spends no CPU that busy peers could use.
pub(super) struct SpinPolicy {
    rate: Cell<u32>,
    skipped: Cell<u32>,
}

impl SpinPolicy {
    const ONE: u32 = 1 << 10;
    const MIN_RATE: u32 = Self::ONE / 8;
    const PROBE_EVERY: u32 = 16;

    pub(super) fn new() -> Self {
        Self {
            rate: Cell::new(Self::ONE),
            skipped: Cell::new(0),
        }
    }

    /// Whether to spin before this park.
    fn should_spin(&self) -> bool {
        if self.rate.get() >= Self::MIN_RATE {
            return true;
        }
        let skipped = self.skipped.get() + 1;
        if skipped >= Self::PROBE_EVERY {
            self.skipped.set(0);
            return true;
        }
        self.skipped.set(skipped);
        false
    }

    /// Folds a spin's outcome into the mean (weight 1/8).
    fn record(&self, found_work: bool) {
        let rate = self.rate.get();
        let sample = if found_work { Self::ONE } else { 0 };
        self.rate.set(rate - rate / 8 + sample / 8);
    }
}

#[cfg(test)]
mod tests {
    use super::SpinPolicy;

    #[test]
    fn spinning_stops_when_it_fails_and_one_short_sleep_brings_it_back() {
        let p = SpinPolicy::new();
        assert!(p.should_spin(), "spins at start");
        for _ in 0..20 {
            p.record(false);
        }
        // Off now, but for one probe every PROBE_EVERY parks.
        let spun = (0..SpinPolicy::PROBE_EVERY)
            .filter(|_| p.should_spin())
            .count();
        assert_eq!(spun, 1, "one probe per {} parks", SpinPolicy::PROBE_EVERY);
        // A skipped spin's park that slept less than the spin limit counts
        // as a spin that would have found work: spinning resumes.
        p.record(true);
        assert!(p.should_spin());
        assert!(p.should_spin(), "and stays on");
    }
}
