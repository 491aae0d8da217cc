//! One worker: its state, the thread-local pointer to it, and its loop.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::task::Waker;
use std::time::Duration;

use crate::clock::{now_ns, ns};

use fulcrum_dlb::{Event, Port};
use mio::{Events, Poll};

use super::{Shared, TaskRef, WorkerExit};
use crate::io::reactor::Reactor;
use crate::loom::Arc;
use crate::metrics::WorkerCounters;
use crate::task::{Id, Notified};

/// Events received from the DLB port at once.
pub(super) const RECV_BATCH: usize = 8;
/// Ticks between checks of the timer wheel while the worker is busy (it
/// also checks before sleeping and after waking).
const TIMER_INTERVAL: u32 = 16;

/// What a worker is doing, which decides where the tasks it schedules go
/// (see `handoff.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Between task polls: picking work, maintenance bookkeeping, parking.
    Between,
    /// Polling the task with this id.
    Polling(Id),
    /// Dispatching its own I/O events (at a maintenance step, or after a
    /// sleep). `backlogged`: the tasks
    /// queued here would wait at least `Builder::handoff_wait`.
    Dispatching { backlogged: bool },
    /// Dispatching the ready I/O of busy peer `from`: the light tasks it
    /// wakes come to this worker (the rescue).
    Rescuing { from: usize },
    /// Inside `task::block_in_place` in the poll of task `.0`: everything
    /// scheduled here is handed off.
    Blocking(Id),
}

/// Why a task is scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Intent {
    /// A new task's first run.
    Spawn,
    /// A wake (a waker, a yield, a timer).
    Wake,
}

/// The worker-side state, reachable from the tasks it runs through a
/// thread-local pointer (see [`Worker::with_current`]).
pub(super) struct Worker {
    pub(super) shared: Arc<Shared>,
    pub(super) index: usize,
    /// Tasks spawned or woken on this worker.
    pub(super) queue: RefCell<VecDeque<TaskRef>>,
    /// Tasks received from the DLB queue and not yet run (each owes a
    /// release).
    pub(super) received: RefCell<VecDeque<TaskRef>>,
    pub(super) port: RefCell<Port>,
    pub(super) phase: Cell<Phase>,
    /// Sub-millisecond sleeps (the rescue interval); `None` when the rescue
    /// is off.
    pub(super) precise: Option<crate::park::PreciseTimer>,
    /// This worker's watch timer is armed (see `Shared::watch_timers`).
    pub(super) watch_armed: Cell<bool>,
    /// Work-stealing mode: the LIFO slot (not stealable) and how many
    /// tasks in a row came from it.
    pub(super) lifo: RefCell<Option<TaskRef>>,
    pub(super) lifo_polls: Cell<u32>,
    /// Work-stealing mode: this worker's deque (instead of `queue`).
    pub(super) deque: Option<crossbeam_deque::Worker<TaskRef>>,
    /// Time spent in task polls since the last maintenance step (or since
    /// this worker last woke up), and how many polls: their ratio is its
    /// recent mean poll time.
    busy_window: Cell<u64>,
    busy_polls: Cell<u32>,
    /// When this worker's next maintenance step is due by time (its last
    /// poll of its own reactor plus `io_poll_interval`).
    io_due: Cell<u64>,
    /// Whether the pre-park spin has been paying off (see `idle.rs`).
    pub(super) spin: super::idle::SpinPolicy,
    /// This worker's recent busy fraction, per mille (a weighted mean of
    /// the windows between publications), and when it last published its
    /// load (see [`publish_load`](Self::publish_load)).
    busy_permille: Cell<u32>,
    busy_since_publish: Cell<u64>,
    last_publish: Cell<u64>,
    /// Set while dispatching when a heavy task is queued here (ahead of
    /// what the dispatch wakes next).
    pub(super) heavy_queued: Cell<bool>,
    /// The load hint last published (see [`publish_load`](Self::publish_load)).
    hint: Cell<u32>,
    /// Round-robin cursor over the peers (`Worker::next_peer`).
    pub(super) peer_cursor: Cell<usize>,
    /// The mean poll time of the last maintenance window with polls, ns.
    last_mean: Cell<u64>,
    /// `io_poll_interval` and the poll time slice, in clock nanoseconds.
    io_interval_ns: u64,
    slice_ns: Option<u64>,
    /// Tasks spawned during the current poll, to hand off when it ends
    /// (see [`end_poll`](Self::end_poll)).
    pub(super) pending: RefCell<Vec<TaskRef>>,
    /// The events of a batch handoff (`Worker::hand_off_all`), kept for
    /// their allocation.
    pub(super) batch: Cell<Vec<Event>>,
    /// Wakers of tasks that yielded (`yield_now`, or a spent cooperative
    /// budget) during a poll here: woken once this worker has run out of
    /// other work or reaches its maintenance step, as tokio defers them, so
    /// that a yielding loop lets queued, injected and I/O-ready work go
    /// first instead of taking its place again at once.
    deferred: RefCell<Vec<Waker>>,
}

thread_local! {
    /// The worker running on this thread, while its loop runs.
    static CURRENT: Cell<*const Worker> = const { Cell::new(std::ptr::null()) };
}

/// Resets [`CURRENT`] when dropped, also on unwind, so that the pointer
/// never outlives its worker.
struct CurrentGuard(*const Worker);

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

impl Worker {
    /// Makes `self` this thread's worker until the guard drops. The guard
    /// must drop before `self` does (declare it after the worker).
    fn enter(&self) -> CurrentGuard {
        CurrentGuard(CURRENT.with(|c| c.replace(self)))
    }

    /// Runs `f` with the calling thread's worker if it is one of
    /// `shared`'s, else with `None`.
    pub(super) fn with_current<R>(shared: &Arc<Shared>, f: impl FnOnce(Option<&Worker>) -> R) -> R {
        let ptr = CURRENT.with(Cell::get);
        // SAFETY: `CURRENT` is non-null only while a `CurrentGuard` lives,
        // and the guard drops before the worker it points to (both on the
        // worker thread's stack, see `run`); the reference does not escape
        // `f`.
        let worker = unsafe { ptr.as_ref() }.filter(|w| Arc::ptr_eq(&w.shared, shared));
        f(worker)
    }

    pub(super) fn counters(&self) -> &WorkerCounters {
        &self.shared.counters[self.index]
    }

    /// The task being polled, if any.
    pub(super) fn running(&self) -> Option<Id> {
        match self.phase.get() {
            Phase::Polling(id) => Some(id),
            _ => None,
        }
    }

    fn recv_dlb(&self, buf: &mut [Event]) {
        let n = match self.port.borrow_mut().recv(buf) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(worker = self.index, "dlb recv: {e}");
                return;
            }
        };
        if n == 0 {
            return;
        }
        let mut received = self.received.borrow_mut();
        for ev in &buf[..n] {
            // SAFETY: every event on this domain carries a task permission
            // made by `into_raw`, received exactly once.
            let task = unsafe { Notified::<Arc<Shared>>::from_raw(ev.udata) };
            tracing::debug!(worker = self.index, task = %task.id(), "dlb recv task");
            received.push_back(task);
        }
        WorkerCounters::add(&self.counters().dlb_received, n as u64);
    }

    /// Receives from the DLB port into `received` (the spin's poll).
    pub(super) fn poll_port(&self) -> bool {
        let mut buf = [Event::default(); RECV_BATCH];
        self.recv_dlb(&mut buf);
        !self.received.borrow().is_empty()
    }

    /// The next task, and whether it came through the DLB queue (it then
    /// owes a release once run).
    fn next_task(&self, tick: u32) -> Option<(TaskRef, bool)> {
        let shared = &*self.shared;
        if let (Some(deque), Some(st)) = (&self.deque, &shared.stealing) {
            return self.next_stolen(deque, st, tick).map(|t| (t, false));
        }
        if tick % shared.threads.tuning.event_interval == 0 {
            if let Some(t) = self.take_overflow() {
                return Some((t, false));
            }
        }
        // DLB deliveries and the local queue take turns, so that neither a
        // steady stream of deliveries nor a long local queue starves the
        // other.
        if tick % 2 == 1 {
            if let Some(t) = self.queue.borrow_mut().pop_front() {
                return Some((t, false));
            }
        }
        if let Some(t) = self.received.borrow_mut().pop_front() {
            return Some((t, true));
        }
        if let Some(t) = self.queue.borrow_mut().pop_front() {
            return Some((t, false));
        }
        self.take_overflow().map(|t| (t, false))
    }

    /// Takes this worker's share of the overflow queue.
    fn take_overflow(&self) -> Option<TaskRef> {
        let shared = &*self.shared;
        shared
            .overflow
            .take_share(shared.num_workers(), &mut self.queue.borrow_mut())
    }

    /// Runs one task whose poll starts at `start` (the clock's last
    /// reading: the end of the previous poll, or a later reading); returns
    /// when the poll ended.
    fn run_task(&self, task: TaskRef, start: u64, seq: &mut u64) -> u64 {
        let shared = &*self.shared;
        WorkerCounters::add(&self.counters().tasks_polled, 1);
        shared.polling[self.index].store((*seq << 1) | 1, Release);
        self.phase.set(Phase::Polling(task.id()));
        let deadline = self.slice_ns.map(|slice| start.saturating_add(slice));
        // A heavy task's poll will be long: say so to the arbiter now.
        let heavy = self.is_heavy(&task);
        if heavy {
            let port = self.port.borrow();
            port.set_load_hint(self.hint.get().saturating_add(super::STUCK_HINT));
        }
        let ran = crate::coop::budget(deadline, || task.run(start));
        if heavy {
            self.port.borrow().set_load_hint(self.hint.get());
        }
        let busy = ran.cost;
        WorkerCounters::add(&self.counters().busy_ns, busy);
        self.busy_window.set(self.busy_window.get() + busy);
        self.busy_since_publish
            .set(self.busy_since_publish.get() + busy);
        self.busy_polls.set(self.busy_polls.get() + 1);
        self.phase.set(Phase::Between);
        self.end_poll(ran.completed);
        *seq += 1;
        shared.polling[self.index].store(*seq << 1, Release);
        ran.end
    }

    /// At a maintenance step: the mean poll time since the last one (or
    /// since this worker last woke up), and resets the measure.
    fn take_mean_poll(&self) -> Duration {
        let busy = self.busy_window.replace(0);
        let polls = self.busy_polls.replace(0);
        let mean = busy / u64::from(polls.max(1));
        if polls > 0 {
            self.last_mean.set(mean);
        }
        Duration::from_nanos(mean)
    }

    /// Whether this worker's recent busy fraction marks it as running heavy
    /// work (half its time or more in task polls).
    pub(super) fn is_busy(&self) -> bool {
        self.busy_permille.get() >= super::BUSY_PERMILLE
    }

    /// Whether this worker runs heavy work: busy half its time or more, in
    /// polls that take at least the I/O poll interval on average. Light
    /// tasks leave such a worker for a calm one.
    pub(super) fn runs_heavy(&self) -> bool {
        self.is_busy() && self.last_mean.get() >= self.io_interval_ns
    }

    /// Whether this worker may take a heavy task from a busy peer: it runs
    /// no heavy work and serves no connections.
    pub(super) fn can_take_heavy(&self) -> bool {
        !self.is_busy() && self.shared.reactors[self.index].resources() == 0
    }

    /// Whether `task` is heavy: its recent polls take at least the
    /// interval at which a busy worker looks at its I/O, so whatever waits
    /// behind it on a worker waits that long. Heavy tasks stay where they
    /// are; the light ones behind them move (`handoff.rs`).
    pub(super) fn is_heavy(&self, task: &TaskRef) -> bool {
        task.poll_cost_ns() >= self.io_interval_ns
    }

    /// Publishes this worker's load beyond what the DLB queue sees, for
    /// the software arbiter's placement of unordered handoffs
    /// (`Port::set_load_hint`): one per registration its reactor owns (a
    /// connection's work arrives here without going through the queue),
    /// plus up to 64 for its recent busy fraction, so that a worker busy
    /// with heavy requests is passed over for new connections. A worker
    /// about to sleep (`parking`) is idle now, whatever its history: its
    /// hint is its registrations alone. (A worker inside a heavy task's
    /// poll adds [`STUCK_HINT`](super::STUCK_HINT) for the poll's length.)
    fn publish_load(&self, reactor: &Reactor, now: u64, parking: bool) {
        let window = now.saturating_sub(self.last_publish.replace(now));
        let busy = self.busy_since_publish.replace(0);
        if let Some(sample) = (busy.min(window) * 1000).checked_div(window) {
            let sample = sample as u32;
            let old = self.busy_permille.get();
            self.busy_permille.set(old - old / 4 + sample / 4);
        }
        let busy = self.busy_permille.get();
        self.shared.busy[self.index].store(busy, Relaxed);
        let conns = u32::try_from(reactor.resources()).unwrap_or(u32::MAX);
        let hint = if parking {
            conns
        } else {
            conns.saturating_add(busy * 64 / 1000)
        };
        self.hint.set(hint);
        self.port.borrow().set_load_hint(hint);
    }

    /// Polls this worker's own reactor without blocking.
    fn poll_io_now(&self, poll: &mut Poll, events: &mut Events, reactor: &Reactor, now: u64) {
        self.io_due.set(now.saturating_add(self.io_interval_ns));
        crate::park::poll_and_dispatch(poll, events, reactor, Some(Duration::ZERO));
    }

    /// The maintenance step: due timers, this worker's I/O events without
    /// blocking (the tasks they wake go to a sleeping peer only if they
    /// would otherwise wait long here), the tasks that yielded, shedding.
    fn maintain(&self, poll: &mut Poll, events: &mut Events, reactor: &Reactor, now: u64) {
        crate::time::driver::fire_due();
        self.publish_load(reactor, now, false);
        let mean = self.take_mean_poll();
        let ahead = self.queue.borrow().len() + self.received.borrow().len();
        self.heavy_queued.set(
            self.queue
                .borrow()
                .iter()
                .take(16)
                .any(|t| self.is_heavy(t)),
        );
        // Moving a woken task (a DLB hop, and its socket with it) pays only
        // if it would wait here longer than a maintenance interval.
        let wait = mean.saturating_mul(u32::try_from(ahead).unwrap_or(u32::MAX));
        self.phase.set(Phase::Dispatching {
            backlogged: ahead > 0
                && self.waits_long(ahead, mean)
                && wait >= self.shared.threads.tuning.io_poll_interval,
        });
        self.poll_io_now(poll, events, reactor, now);
        self.phase.set(Phase::Between);
        // Yielded tasks queue here again (they chose to yield, not to
        // move).
        self.wake_deferred();
        self.shed(mean);
        let depth = self.queue.borrow().len() + self.received.borrow().len();
        self.counters()
            .local_queue_depth
            .store(depth as u64, Relaxed);
    }

    /// Wakes the tasks that yielded here (they queue on this worker).
    fn wake_deferred(&self) {
        if self.deferred.borrow().is_empty() {
            return;
        }
        let mut deferred = std::mem::take(&mut *self.deferred.borrow_mut());
        for waker in deferred.drain(..) {
            waker.wake();
        }
        // Keep the allocation, unless a wake deferred more meanwhile.
        let mut slot = self.deferred.borrow_mut();
        if slot.is_empty() {
            *slot = deferred;
        }
    }

    /// Drops every queued permission (the owned-task list cancels the
    /// tasks themselves) and releases what was received; returns the port.
    fn finish(self) -> Port {
        self.queue.borrow_mut().clear();
        self.pending.borrow_mut().clear();
        self.deferred.borrow_mut().clear();
        self.clear_stealing();
        let received = self.received.borrow_mut().drain(..).count();
        let mut port = self.port.into_inner();
        let _ = port.release(received);
        port
    }
}

/// Defers the wake-up of a task yielding on a worker of a multi-thread
/// runtime (see `Worker::deferred`). Returns `false`, and does nothing,
/// anywhere else: the caller then wakes the task at once.
pub(crate) fn defer(waker: &Waker) -> bool {
    let ptr = CURRENT.with(Cell::get);
    // SAFETY: as in `Worker::with_current`: non-null only while the worker
    // it points to runs its loop on this thread; not kept past this call.
    let Some(worker) = (unsafe { ptr.as_ref() }) else {
        return false;
    };
    if worker.running().is_none() {
        return false;
    }
    let mut deferred = worker.deferred.borrow_mut();
    if !deferred.last().is_some_and(|w| w.will_wake(waker)) {
        deferred.push(waker.clone());
    }
    true
}

/// `task::block_in_place` on a worker of a multi-thread runtime, inside a
/// task poll: hands this worker's queued tasks to the other workers, tells
/// the arbiter it is stuck, makes sure an idle peer watches its I/O (the
/// rescue moves its sockets' tasks away, and they take their sockets and
/// timers along), then runs `f`. Anything scheduled here meanwhile is
/// handed off too. Gives `f` back on any other thread.
pub(crate) fn block_in_place<F: FnOnce() -> R, R>(f: F) -> Result<R, F> {
    let ptr = CURRENT.with(Cell::get);
    // SAFETY: as in `Worker::with_current`: non-null only while the worker
    // it points to runs its loop on this thread; not kept past this call.
    let Some(worker) = (unsafe { ptr.as_ref() }) else {
        return Err(f);
    };
    let Some(task) = worker.running() else {
        return Err(f);
    };
    struct Restore<'a>(&'a Worker, Id);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            self.0.phase.set(Phase::Polling(self.1));
            self.0.port.borrow().set_load_hint(self.0.hint.get());
        }
    }
    worker.phase.set(Phase::Blocking(task));
    let _restore = Restore(worker, task);
    worker
        .port
        .borrow()
        .set_load_hint(worker.hint.get().saturating_add(super::STUCK_HINT));
    worker.hand_off_queued();
    worker.shared.nudge_watcher(worker.index);
    Ok(f())
}

/// Runs worker `index` until shutdown.
pub(super) fn run(
    shared: Arc<Shared>,
    handle: crate::Handle,
    index: usize,
    port: Port,
    mut poll: Poll,
    deque: Option<crossbeam_deque::Worker<TaskRef>>,
) -> WorkerExit {
    let _tokio: crate::tokio_compat::ThreadGuard = crate::tokio_compat::enter();
    let _context = crate::context::enter_running(handle);
    let _timers = crate::time::driver::install();
    let reactor = shared.reactors[index].clone();
    let _reactor = crate::io::reactor::enter(reactor.clone());
    if let Some(f) = &shared.threads.on_start {
        f();
    }
    let precise = shared.rescue_interval.and_then(|_| {
        crate::park::PreciseTimer::new(&poll)
            .map_err(|e| tracing::warn!("timerfd: {e}; rescue sleeps round up to 1 ms"))
            .ok()
    });
    let worker = Worker {
        shared: shared.clone(),
        index,
        queue: RefCell::new(VecDeque::with_capacity(256)),
        received: RefCell::new(VecDeque::with_capacity(RECV_BATCH)),
        port: RefCell::new(port),
        phase: Cell::new(Phase::Between),
        precise,
        watch_armed: Cell::new(false),
        lifo: RefCell::new(None),
        lifo_polls: Cell::new(0),
        deque,
        busy_window: Cell::new(0),
        busy_polls: Cell::new(0),
        io_due: Cell::new(now_ns().saturating_add(ns(shared.threads.tuning.io_poll_interval))),
        spin: super::idle::SpinPolicy::new(),
        busy_permille: Cell::new(0),
        busy_since_publish: Cell::new(0),
        last_publish: Cell::new(now_ns()),
        heavy_queued: Cell::new(false),
        hint: Cell::new(0),
        peer_cursor: Cell::new(0),
        last_mean: Cell::new(0),
        io_interval_ns: ns(shared.threads.tuning.io_poll_interval),
        slice_ns: shared.threads.tuning.poll_time_slice.map(ns),
        pending: RefCell::new(Vec::with_capacity(16)),
        batch: Cell::new(Vec::new()),
        deferred: RefCell::new(Vec::new()),
    };
    {
        let _current = worker.enter();
        worker.run_loop(&mut poll, &reactor);
    }
    let port = worker.finish();
    if let Some(f) = &shared.threads.on_stop {
        f();
    }
    (port, poll)
}

impl Worker {
    fn run_loop(&self, poll: &mut Poll, reactor: &Reactor) {
        let shared = &*self.shared;
        let tuning = shared.threads.tuning;
        let mut seq: u64 = 0;
        let mut events = Events::with_capacity(64);
        let mut buf = [Event::default(); RECV_BATCH];
        let mut tick: u32 = 0;
        // The clock's last reading: one per task poll (its end), plus one
        // after each maintenance step and each sleep.
        let mut now = now_ns();
        while !shared.shutdown.load(Acquire) {
            tick = tick.wrapping_add(1);
            if tick % TIMER_INTERVAL == 0 {
                crate::time::driver::fire_due();
            }
            if self.received.borrow().is_empty() {
                self.recv_dlb(&mut buf);
            }
            if let Some((task, from_dlb)) = self.next_task(tick) {
                now = self.run_task(task, now, &mut seq);
                if from_dlb {
                    // Released after running: a worker busy with a
                    // handed-off task looks loaded to the arbiter meanwhile.
                    let _ = self.port.borrow_mut().release(1);
                }
                if tick % tuning.event_interval == 0 || now >= self.io_due.get() {
                    self.maintain(poll, &mut events, reactor, now);
                    now = now_ns();
                }
                continue;
            }
            if !self.deferred.borrow().is_empty() {
                // Only yielded tasks are left: look at this worker's I/O (as
                // the maintenance step does), then run them again.
                self.publish_load(reactor, now, false);
                self.heavy_queued.set(false);
                self.phase.set(Phase::Dispatching { backlogged: false });
                self.poll_io_now(poll, &mut events, reactor, now);
                self.phase.set(Phase::Between);
                self.wake_deferred();
                now = now_ns();
                continue;
            }
            self.publish_load(reactor, now, true);
            self.park(poll, &mut events, reactor);
            now = now_ns();
            self.io_due.set(now.saturating_add(self.io_interval_ns));
            self.busy_window.set(0);
            self.busy_polls.set(0);
        }
    }
}
