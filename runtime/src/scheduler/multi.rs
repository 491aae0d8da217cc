//! The multi-thread scheduler in DLB mode: work crosses between workers only
//! as DLB events carrying a task, never by stealing.
//!
//! # Workers
//! Each worker is one OS thread with a local FIFO queue, one DLB port
//! (linked to the runtime's single load-balanced queue) and a mio `Poll` in
//! which it sleeps; the port's readiness fd and a mio `Waker` are registered
//! there.
//!
//! # When a task goes through the DLB queue
//! - **Remote spawns and wakes** (from threads that are not workers of this
//!   runtime) are sent through the runtime's injector port, a producer-only
//!   port behind a mutex (remote threads are not on the worker data path).
//! - **Spawns on a worker while another worker is idle** are sent through
//!   the worker's own port when the spawning poll ends; the arbiter picks
//!   the least loaded port. Exception, the chain case: a task that spawned
//!   exactly one task and completed hands its successor to itself (see
//!   `Local::end_poll`). **Wakes on a worker stay on it**: the woken task's
//!   sockets are registered in its reactor, and handing the wakes of a
//!   request/response exchange to an idle peer cost the gateway about 3
//!   DLB handoffs per proxied request. The exception is the wakes of the
//!   I/O poll a worker makes between tasks at a maintenance tick while it
//!   is backlogged (the tasks queued ahead times its mean poll time since
//!   the last tick reach `Builder::handoff_wait`, zero by default): those
//!   go to a sleeping peer, like the rescue's. The local queue and the
//!   DLB deliveries take turns, so neither starves the other.
//! - **Shedding**: every [`MAINTENANCE_INTERVAL`] ticks a worker whose local
//!   queue holds more than [`SHED_MIN`] tasks sends half of it (at most
//!   [`SHED_MAX`]) to the DLB queue if another worker is idle (and if the
//!   queue's tail would wait at least `Builder::handoff_wait` there).
//! - **Rescue of a busy worker's ready I/O**: an idle worker that finds a
//!   peer inside one task poll for a whole rescue interval polls that
//!   peer's epoll fd and sends the tasks it wakes to itself as *directed*
//!   DLB events. Not unordered ones: the arbiter cannot see a long poll (the
//!   busy worker's CQ has room), so round robin would put some of the
//!   rescued tasks right back behind the poll they were rescued from. With
//!   unordered sends, the skew test (`net/tests/skew.rs`: one of 4 workers
//!   in back-to-back 5 ms polls) measured a p50 of 2.9 ms for requests on
//!   the busy worker's connections; with directed sends, 45 µs (no rescue:
//!   307 ms). A watching worker sleeps exactly one rescue interval thanks
//!   to a timerfd (`epoll_wait` alone rounds 100 µs up to 1 ms): that took
//!   the p90 from 1.19 ms to 0.22 ms and the maximum from 2.4 to 0.4 ms.
//!
//! A worker releases a received event after it has run the task, so that a
//! worker busy with a handed-off task looks loaded to the arbiter.
//!
//! # What if it is full?
//! A DLB send that comes up short (no credits, full CQs) never drops the
//! task: on a worker it runs locally, from a remote thread it goes to the
//! overflow queue (a mutex-protected list that every worker checks), and a
//! worker is woken. Both cases are counted in the metrics.
//!
//! # Thresholds
//! Set with the `Builder` (`event_interval`, `shed_threshold`,
//! `spin_before_park`, `rescue_interval`, `handoff_wait`); the defaults
//! were checked with `scripts/sweep.sh` (one at a time around the default,
//! tokio's workloads and the skewed connection scenario; BENCHMARKS.md has
//! the table):
//! - event interval 61 (tokio's): 127 made `spawn_many_remote_busy1` 6×
//!   slower (111 ms against 18 ms: the overflow queue is drained at
//!   maintenance steps); 31 was within noise of 61 everywhere;
//! - shed threshold 4: 8 raised the skewed p99 by 18% and `yield_many` by
//!   21%; 2 was within noise;
//! - pre-sleep poll 20 µs: 0 made `spawn_many_local` 17% and `yield_many`
//!   36% slower; 50 µs was within noise at 2.5× the idle CPU;
//! - rescue interval 100 µs: the figure; the skew test measures it;
//! - handoff wait 0 (`Builder::handoff_wait`): 100 µs made `yield_many`
//!   30% slower; servers whose tasks their sockets wake should set 100 µs
//!   (see [`HANDOFF_WAIT`]).
//!
//! The receive batch is the DLB queue's default CQ depth, 8.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::task::Waker;
use std::thread;

use crossbeam_deque::{Injector, Steal, Stealer, Worker as Deque};
use fulcrum_dlb::{Domain, Event, Port};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::owned::OwnedTasks;
use crate::loom::{lock, Arc, AtomicBool, AtomicU64, AtomicUsize, Mutex};
use crate::metrics::{RuntimeMetrics, WorkerCounters};
use crate::task::{JoinHandle, Notified, Schedule, Task};

/// Default ticks between maintenance steps (polling the worker's own I/O,
/// shedding, checking the overflow queue first): tokio's `event_interval`.
pub(crate) const MAINTENANCE_INTERVAL: u32 = 61;
/// Default: a local queue longer than this may be shed to idle workers.
pub(crate) const SHED_MIN: usize = 4;
/// At most this many tasks are shed at once.
pub(crate) const SHED_MAX: usize = 32;

/// Work-stealing mode: most tasks run from the LIFO slot in a row (tokio's
/// value).
const MAX_LIFO_POLLS: u32 = 3;

/// Most tasks a worker takes from the overflow queue at once.
pub(crate) const OVERFLOW_BATCH: usize = 32;
/// Events received from the DLB port at once.
const RECV_BATCH: usize = 8;
/// Default: the wait (queue length × mean poll time) below which a busy
/// worker keeps its tasks rather than handing them to an idle peer. Zero:
/// shed whenever the queue is long enough. 100 µs made `yield_many` 30%
/// slower (its 200 tiny tasks stayed unevenly spread: nothing moves them
/// afterwards). For the gateway, whose tasks are woken by their owner's
/// reactor and so come back after every handoff, 100 µs gave 0.44–0.58
/// handoffs per request (0.53–0.68 with zero) and 0.70–0.76× nginx's
/// requests/s (0.63–0.65×), two `benches/gateway.sh` runs each: the
/// gateway sets 100 µs itself.
pub(crate) const HANDOFF_WAIT: std::time::Duration = std::time::Duration::ZERO;
/// Default time an idle worker polls its DLB port before it sleeps.
pub(crate) const SPIN_BEFORE_PARK: std::time::Duration = std::time::Duration::from_micros(20);

/// The scheduler's thresholds (see the module docs and the `Builder`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tuning {
    /// Ticks between maintenance steps (at least 1).
    pub(crate) event_interval: u32,
    /// A local queue longer than this may be shed.
    pub(crate) shed_min: usize,
    /// The pre-sleep poll of the DLB port.
    pub(crate) spin_before_park: std::time::Duration,
    /// Shedding and the handoff of maintenance wakes happen only when the
    /// tasks concerned would otherwise wait at least this long here.
    pub(crate) handoff_wait: std::time::Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            event_interval: MAINTENANCE_INTERVAL,
            shed_min: SHED_MIN,
            spin_before_park: SPIN_BEFORE_PARK,
            handoff_wait: HANDOFF_WAIT,
        }
    }
}
/// Ticks between checks of the timer wheel while the worker is busy (it also
/// checks before sleeping and after waking).
const TIMER_INTERVAL: u32 = 16;

const DLB_TOKEN: Token = Token(0);
const WAKER_TOKEN: Token = Token(1);

type TaskRef = Notified<Arc<Shared>>;

/// The work-stealing comparison mode's shared queues (crossbeam-deque, as
/// a competent tokio-like baseline): a global injector, one stealer per
/// worker, and a count of workers searching (at most half search at once).
pub(crate) struct Stealing {
    injector: Injector<TaskRef>,
    stealers: Box<[Stealer<TaskRef>]>,
    searching: AtomicUsize,
}

/// Where [`Shared::spawn_routed`] sends a task.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Route {
    /// An unordered DLB event: the arbiter picks the worker.
    Balanced,
    /// A directed DLB event to this worker.
    Worker(usize),
}

/// Per-thread hooks and names, shared by the workers.
pub(crate) struct ThreadConfig {
    /// `Some` for the work-stealing comparison mode.
    pub(crate) stealing: bool,
    pub(crate) rescue_interval: Option<std::time::Duration>,
    pub(crate) tuning: Tuning,
    /// Work-stealing mode: whether a task spawned or woken by a running
    /// task goes to the worker's LIFO slot (tokio's default).
    pub(crate) lifo_slot: bool,
    pub(crate) name: Box<dyn Fn() -> String + Send + Sync>,
    pub(crate) on_start: Option<Box<dyn Fn() + Send + Sync>>,
    pub(crate) on_stop: Option<Box<dyn Fn() + Send + Sync>>,
}

/// State shared by the workers of one runtime.
pub(crate) struct Shared {
    domain: Domain,
    /// Producer-only port for threads that are not workers.
    injector: Mutex<Port>,
    /// Tasks whose remote DLB send came up short.
    overflow: Mutex<VecDeque<TaskRef>>,
    overflow_len: AtomicUsize,
    remote_fallbacks: AtomicU64,
    next_wake: AtomicUsize,
    wakers: Box<[mio::Waker]>,
    reactors: Box<[Arc<Reactor>]>,
    pub(crate) counters: Box<[WorkerCounters]>,
    /// Idle and sleeping workers, and the no-lost-wake-up protocol
    /// (model-checked in `crate::sleepers`).
    sleepers: crate::sleepers::Sleepers,
    /// Per worker: `seq << 1 | in_poll`, bumped around every task poll, so
    /// that idle workers can tell a peer stuck in one long poll.
    polling: Box<[CachePadded<AtomicU64>]>,
    /// Per worker: whether it watches busy peers while asleep (it then
    /// wakes every rescue interval).
    watching: Box<[AtomicBool]>,
    /// How long a peer may sit in one poll before idle workers rescue its
    /// ready I/O; `None` disables the rescue.
    rescue_interval: Option<std::time::Duration>,
    shutdown: AtomicBool,
    pub(crate) owned: OwnedTasks<Arc<Shared>>,
    /// `Some` in work-stealing mode: no DLB handoff then.
    stealing: Option<Stealing>,
    threads: ThreadConfig,
}

/// What a worker thread hands back when it stops: its port (drained at
/// shutdown) and its `Poll`, kept open until every worker has stopped
/// because idle peers may be assisting on its epoll fd.
pub(crate) type WorkerExit = (Port, Poll);

/// Aligns a per-worker word to its own cache lines.
#[repr(align(128))]
struct CachePadded<T>(T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// What each worker thread starts with: its DLB port, its `Poll` and, in
/// work-stealing mode, its deque.
pub(crate) type WorkerParts = (Port, Poll, Option<Deque<TaskRef>>);

use crate::io::reactor::Reactor;

/// Attempts at taking a port that is refused with a transient error.
const PORT_ATTEMPTS: usize = 16;

/// Takes port `id`, retrying a few times on a transient refusal (today only
/// the DLB crate's test-only fault injection produces one), so that a
/// runtime builds under injected port refusals.
fn take_port(domain: &Domain, id: usize) -> io::Result<Port> {
    let mut attempt = 1;
    loop {
        match domain.port(id) {
            Ok(port) => return Ok(port),
            Err(e) if e.is_transient() && attempt < PORT_ATTEMPTS => {
                tracing::warn!(port = id, attempt, "dlb port refused ({e}); retrying");
                attempt += 1;
                thread::yield_now();
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Builds the shared state and the per-worker parts (port and `Poll`).
pub(crate) fn build(
    domain: Domain,
    workers: usize,
    threads: ThreadConfig,
) -> io::Result<(Arc<Shared>, Vec<WorkerParts>)> {
    let mut parts = Vec::with_capacity(workers);
    let mut wakers = Vec::with_capacity(workers);
    let mut reactors = Vec::with_capacity(workers);
    let mut stealers = Vec::with_capacity(workers);
    for index in 0..workers {
        let port = take_port(&domain, index)?;
        let poll = Poll::new()?;
        let fd: RawFd = port.readiness_fd();
        poll.registry()
            .register(&mut SourceFd(&fd), DLB_TOKEN, Interest::READABLE)?;
        wakers.push(mio::Waker::new(poll.registry(), WAKER_TOKEN)?);
        reactors.push(Arc::new(Reactor::new(
            poll.registry().try_clone()?,
            Some(index),
            Some(poll.as_raw_fd()),
        )));
        let deque = threads.stealing.then(Deque::new_fifo);
        if let Some(d) = &deque {
            stealers.push(d.stealer());
        }
        parts.push((port, poll, deque));
    }
    let stealing = threads.stealing.then(|| Stealing {
        injector: Injector::new(),
        stealers: stealers.into_boxed_slice(),
        searching: AtomicUsize::new(0),
    });
    let injector = take_port(&domain, workers)?;
    let shared = Arc::new(Shared {
        domain,
        injector: Mutex::new(injector),
        overflow: Mutex::new(VecDeque::new()),
        overflow_len: AtomicUsize::new(0),
        remote_fallbacks: AtomicU64::new(0),
        next_wake: AtomicUsize::new(0),
        wakers: wakers.into_boxed_slice(),
        reactors: reactors.into_boxed_slice(),
        counters: (0..workers).map(|_| WorkerCounters::default()).collect(),
        sleepers: crate::sleepers::Sleepers::new(workers),
        polling: (0..workers)
            .map(|_| CachePadded(AtomicU64::new(0)))
            .collect(),
        watching: (0..workers).map(|_| AtomicBool::new(false)).collect(),
        // The comparison mode gets no rescue: it balances by stealing only.
        rescue_interval: threads.rescue_interval.filter(|_| !threads.stealing),
        shutdown: AtomicBool::new(false),
        owned: OwnedTasks::new(),
        stealing,
        threads,
    });
    Ok((shared, parts))
}

/// The worker-side state, reachable from tasks running on the worker through
/// a thread-local pointer.
struct Local {
    shared: *const Shared,
    index: usize,
    /// Tasks spawned or woken on this worker.
    queue: RefCell<VecDeque<TaskRef>>,
    /// Tasks received from the DLB queue and not yet run (each owes a
    /// release).
    received: RefCell<VecDeque<TaskRef>>,
    port: RefCell<Port>,
    /// Set while this worker dispatches a busy peer's I/O: the tasks it
    /// wakes go through the DLB queue.
    rescuing: Cell<bool>,
    /// Sub-millisecond sleeps (the rescue interval); `None` when the rescue
    /// is off.
    precise: Option<crate::park::PreciseTimer>,
    /// Set while a task poll runs on this worker.
    in_poll: Cell<bool>,
    /// The task being polled (to tell a task waking itself, a yield).
    running: Cell<Option<crate::task::Id>>,
    /// Work-stealing mode: the LIFO slot (not stealable) and how many
    /// tasks in a row came from it.
    lifo: RefCell<Option<TaskRef>>,
    lifo_polls: Cell<u32>,
    /// Set while `spawn` schedules a new task (as opposed to a wake).
    spawning: Cell<bool>,
    /// Set while this worker dispatches its own I/O events between tasks.
    dispatching: Cell<bool>,
    /// Set when the task being polled completed.
    completed: Cell<bool>,
    /// Since when this worker has been running tasks without sleeping
    /// (reset at each maintenance tick), and how many polls it ran since:
    /// their ratio is its recent mean poll time.
    busy_since: Cell<std::time::Instant>,
    busy_polls: Cell<u32>,
    /// Tasks spawned or woken during the current poll, to hand off when it
    /// ends (see `end_poll`).
    pending: RefCell<Vec<TaskRef>>,
    /// Work-stealing mode: this worker's deque (instead of `queue`).
    deque: Option<Deque<TaskRef>>,
    /// Wakers of tasks that yielded (`yield_now`, or a spent cooperative
    /// budget) during a poll here: woken once this worker has run out of
    /// other work or reaches its maintenance tick, as tokio defers them, so
    /// that a yielding loop lets queued, injected and I/O-ready work go
    /// first instead of taking its place again at once.
    deferred: RefCell<Vec<Waker>>,
}

/// Defers the wake-up of a task yielding on a worker of a multi-thread
/// runtime (see `Local::deferred`). Returns `false`, and does nothing,
/// anywhere else: the caller then wakes the task at once.
pub(crate) fn defer(waker: &Waker) -> bool {
    let local = LOCAL.with(Cell::get);
    // SAFETY: `LOCAL` is non-null only while the worker that owns the
    // `Local` (on its stack) runs its loop on this thread.
    let Some(local) = (unsafe { local.as_ref() }) else {
        return false;
    };
    if !local.in_poll.get() {
        return false;
    }
    let mut deferred = local.deferred.borrow_mut();
    if !deferred.last().is_some_and(|w| w.will_wake(waker)) {
        deferred.push(waker.clone());
    }
    true
}

thread_local! {
    static LOCAL: Cell<*const Local> = const { Cell::new(std::ptr::null()) };
}

impl Schedule for Arc<Shared> {
    fn schedule(&self, task: Notified<Self>) {
        let local = LOCAL.with(Cell::get);
        // SAFETY: `LOCAL` is non-null only while the worker that owns the
        // `Local` (on its stack) runs its loop on this thread.
        match unsafe { local.as_ref() } {
            Some(local) if std::ptr::eq(local.shared, Arc::as_ptr(self)) => {
                local.schedule(self, task)
            }
            _ => self.schedule_remote(task),
        }
    }

    fn release(&self, task: &Task<Self>) -> Option<Task<Self>> {
        let local = LOCAL.with(Cell::get);
        // SAFETY: as in `schedule`: non-null only while its worker runs.
        if let Some(local) = unsafe { local.as_ref() } {
            if std::ptr::eq(local.shared, Arc::as_ptr(self)) {
                local.completed.set(true);
            }
        }
        self.owned.remove(task)
    }
}

impl Shared {
    /// Spawns a future on this runtime.
    pub(crate) fn spawn<F>(self: &Arc<Self>, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let local = LOCAL.with(Cell::get);
        // SAFETY: as in `schedule`: non-null only on this runtime's worker
        // thread, while its loop runs.
        let local = unsafe { local.as_ref() }.filter(|l| std::ptr::eq(l.shared, Arc::as_ptr(self)));
        if let Some(l) = local {
            // Marks the `schedule` below as a spawn (a candidate for the
            // DLB queue), not a wake.
            l.spawning.set(true);
        }
        let join = super::spawn_task(&self.owned, self, future);
        if let Some(l) = local {
            l.spawning.set(false);
        }
        join
    }

    /// Spawns through the DLB queue whatever the load: unordered (the
    /// arbiter picks the worker) or directed at one worker. In stealing mode
    /// there is no DLB queue: a plain spawn.
    pub(crate) fn spawn_routed<F>(
        self: &Arc<Self>,
        future: F,
        route: Route,
    ) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if self.stealing.is_some() {
            return self.spawn(future);
        }
        let (task, notified, join) = crate::task::new_task(future, self.clone());
        if !self.owned.bind(task) {
            return join;
        }
        let id = notified.id();
        let event = match route {
            Route::Balanced => Event::unordered(0, notified.into_raw()),
            Route::Worker(w) => {
                Event::directed((w % self.num_workers()) as u8, notified.into_raw())
            }
        };
        let local = LOCAL.with(Cell::get);
        // SAFETY: as in `schedule`: non-null only on this runtime's worker
        // thread, while its loop runs.
        let local = unsafe { local.as_ref() }.filter(|l| std::ptr::eq(l.shared, Arc::as_ptr(self)));
        let sent = match local {
            Some(l) => match l.port.try_borrow_mut() {
                Ok(mut port) => port.send(&[event]).unwrap_or(0),
                Err(_) => 0,
            },
            None => lock(&self.injector).send(&[event]).unwrap_or(0),
        };
        if sent == 1 {
            if let Some(l) = local {
                WorkerCounters::add(&l.counters().dlb_sent, 1);
            }
            tracing::debug!(task = %id, ?route, "dlb send task");
            return join;
        }
        // SAFETY: not sent: the payload is still ours.
        let task = unsafe { Notified::from_raw(event.udata) };
        match local {
            Some(l) => {
                WorkerCounters::add(&l.counters().fallbacks, 1);
                l.queue.borrow_mut().push_back(task);
            }
            None => {
                self.remote_fallbacks.fetch_add(1, Relaxed);
                lock(&self.overflow).push_back(task);
                self.overflow_len.fetch_add(1, Release);
                self.notify_any();
            }
        }
        tracing::debug!(task = %id, ?route, "dlb send short; task kept");
        join
    }

    /// The index of the calling thread if it is a worker of this runtime.
    pub(crate) fn current_worker(self: &Arc<Self>) -> Option<usize> {
        let local = LOCAL.with(Cell::get);
        // SAFETY: as in `schedule`.
        unsafe { local.as_ref() }
            .filter(|l| std::ptr::eq(l.shared, Arc::as_ptr(self)))
            .map(|l| l.index)
    }

    fn notify_any(&self) {
        let n = self.wakers.len();
        let target = self.next_wake.fetch_add(1, Relaxed) % n;
        if let Err(e) = self.wakers[target].wake() {
            tracing::warn!("waking worker {target}: {e}");
        }
    }

    fn schedule_remote(&self, task: TaskRef) {
        if self.shutdown.load(Acquire) {
            // The owned-task list cancels it; this permission is not needed.
            drop(task);
            return;
        }
        if let Some(st) = &self.stealing {
            st.injector.push(task);
            self.notify_parked();
            return;
        }
        let id = task.id();
        let event = Event::unordered(0, task.into_raw());
        let sent = lock(&self.injector).send(&[event]).unwrap_or(0);
        if sent == 1 {
            tracing::debug!(task = %id, "remote dlb send task");
            return;
        }
        // SAFETY: the event was not sent, so its payload is still ours.
        let task = unsafe { Notified::from_raw(event.udata) };
        lock(&self.overflow).push_back(task);
        self.overflow_len.fetch_add(1, Release);
        self.remote_fallbacks.fetch_add(1, Relaxed);
        tracing::debug!(task = %id, "remote dlb send short; task to the overflow queue");
        let n = self.wakers.len();
        let target = self.next_wake.fetch_add(1, Relaxed) % n;
        if let Err(e) = self.wakers[target].wake() {
            tracing::warn!("waking worker {target}: {e}");
        }
    }

    pub(crate) fn metrics(&self) -> RuntimeMetrics {
        RuntimeMetrics {
            workers: self
                .counters
                .iter()
                .zip(self.reactors.iter())
                .enumerate()
                .map(|(i, (c, r))| {
                    let mut m = c.snapshot();
                    m.io_resources = r.resources();
                    m.dlb_in_flight = self.domain.port_stats(i).map_or(0, |p| p.in_flight);
                    m
                })
                .collect(),
            remote_fallbacks: self.remote_fallbacks.load(Relaxed),
            alive_tasks: self.owned.alive(),
        }
    }

    pub(crate) fn num_workers(&self) -> usize {
        self.wakers.len()
    }

    /// The DLB backend the workers' queue runs on.
    pub(crate) fn dlb_backend(&self) -> fulcrum_dlb::BackendKind {
        self.domain.backend()
    }

    /// Asks every worker to stop.
    pub(crate) fn begin_shutdown(&self) {
        self.shutdown.store(true, SeqCst);
        for (i, w) in self.wakers.iter().enumerate() {
            if let Err(e) = w.wake() {
                tracing::warn!("waking worker {i} for shutdown: {e}");
            }
        }
    }

    /// After the workers stopped: cancels every live task and drops every
    /// queued permission, including those still in DLB queues.
    pub(crate) fn finish_shutdown(&self, mut ports: Vec<Port>) {
        self.owned.close_and_shutdown();
        lock(&self.overflow).clear();
        self.overflow_len.store(0, Release);
        // Registrations released after the workers' last `epoll_wait` still
        // hold their tasks' wakers (and so this `Shared`): no worker will
        // poll again, so let them go now.
        for r in self.reactors.iter() {
            r.release_pending();
        }
        if let Some(st) = &self.stealing {
            // Permissions pushed while the workers stopped: each holds the
            // task, which holds this `Shared` (a cycle if left here).
            while let Some(task) = steal_until_done(|| st.injector.steal()) {
                drop(task);
            }
        }
        let mut buf = [Event::default(); 32];
        // Releasing lets waiting events into the CQs; repeat until a whole
        // pass finds nothing.
        loop {
            let mut found = 0;
            for port in ports.iter_mut() {
                loop {
                    let n = port.recv(&mut buf).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    for ev in &buf[..n] {
                        // SAFETY: every event on this domain carries a task
                        // permission made by `into_raw`.
                        drop(unsafe { Notified::<Arc<Shared>>::from_raw(ev.udata) });
                    }
                    let _ = port.release(n);
                    found += n;
                }
            }
            if found == 0 {
                break;
            }
        }
    }
}

impl Local {
    fn shared(&self) -> &Shared {
        // SAFETY: the worker holds an `Arc<Shared>` for as long as `Local`
        // exists.
        unsafe { &*self.shared }
    }

    fn counters(&self) -> &WorkerCounters {
        &self.shared().counters[self.index]
    }

    /// Schedules a task spawned or woken on this worker.
    fn schedule(&self, shared: &Arc<Shared>, task: TaskRef) {
        if let Some(deque) = &self.deque {
            // A task spawned or woken by the running task (not the running
            // task itself: a yield) takes the LIFO slot and runs next, as in
            // tokio; the slot's previous task goes to the deque.
            let task = if shared.threads.lifo_slot
                && self.in_poll.get()
                && self.running.get() != Some(task.id())
            {
                match self.lifo.borrow_mut().replace(task) {
                    Some(prev) => prev,
                    None => return,
                }
            } else {
                task
            };
            deque.push(task);
            // Wake a sleeper to steal it, unless someone already searches.
            if let Some(st) = &shared.stealing {
                if st.searching.load(SeqCst) == 0 {
                    shared.notify_parked();
                }
            }
            return;
        }
        let rescuing = self.rescuing.get();
        // Spawns go to the DLB queue while another worker is idle. Wakes
        // stay here, where the woken task's sockets are registered, except
        // the wakes of the I/O poll this worker makes between tasks when it
        // has run a whole maintenance interval without going idle: it is
        // busy, and those tasks would wait behind its work while a peer
        // idles (the owner's side of the rescue of a busy worker's I/O).
        let handoff = rescuing
            || ((self.spawning.get() || self.dispatching.get()) && shared.sleepers.any_idle());
        if handoff && !rescuing && self.in_poll.get() {
            // Decided when the poll ends (see `end_poll`).
            self.pending.borrow_mut().push(task);
            return;
        }
        self.send_or_queue(shared, task, handoff, rescuing);
    }

    /// Sends `task` through the DLB queue if `handoff` (directed to this
    /// worker if `rescuing`), else, or if the send comes up short, queues it
    /// here.
    fn send_or_queue(&self, shared: &Arc<Shared>, task: TaskRef, handoff: bool, rescuing: bool) {
        if handoff && !shared.shutdown.load(Relaxed) {
            if let Ok(mut port) = self.port.try_borrow_mut() {
                let id = task.id();
                // A task woken by the rescue of a busy peer's I/O goes to
                // this (idle) worker as a directed event. An unordered one
                // would let the arbiter pick the busy peer: its CQ has room
                // (the arbiter cannot see a long poll), and the task would
                // wait behind the very poll it was rescued from.
                //
                // Likewise the wakes of a busy worker's own I/O poll go to a
                // sleeping peer, directed: unordered, the arbiter could hand
                // them straight back to this busy worker.
                let target = if rescuing {
                    Some(self.index)
                } else if self.dispatching.get() {
                    shared.sleeping_peer(self.index)
                } else {
                    None
                };
                let event = match target {
                    Some(w) => Event::directed(w as u8, task.into_raw()),
                    None => Event::unordered(0, task.into_raw()),
                };
                if port.send(&[event]).unwrap_or(0) == 1 {
                    WorkerCounters::add(&self.counters().dlb_sent, 1);
                    tracing::debug!(worker = self.index, task = %id, "dlb send task");
                    return;
                }
                // SAFETY: not sent: the payload is still ours.
                let task = unsafe { Notified::from_raw(event.udata) };
                WorkerCounters::add(&self.counters().fallbacks, 1);
                tracing::debug!(worker = self.index, task = %id, "dlb send short; running locally");
                self.queue.borrow_mut().push_back(task);
                return;
            }
        }
        self.queue.borrow_mut().push_back(task);
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

    /// Sends part of a long local queue to idle workers, if its tail would
    /// wait long here (`mean`: the recent mean poll time).
    fn shed(&self, mean: std::time::Duration) {
        let shared = self.shared();
        let len = self.queue.borrow().len();
        if len <= shared.threads.tuning.shed_min
            || !self.waits_long(len, mean)
            || !shared.sleepers.any_idle()
        {
            return;
        }
        let take = (len / 2).min(SHED_MAX);
        let events: Vec<Event> = {
            let mut queue = self.queue.borrow_mut();
            let start = queue.len() - take;
            queue
                .drain(start..)
                .map(|t| Event::unordered(0, t.into_raw()))
                .collect()
        };
        let sent = self.port.borrow_mut().send(&events).unwrap_or(0);
        if sent > 0 {
            WorkerCounters::add(&self.counters().dlb_sent, sent as u64);
            tracing::debug!(worker = self.index, tasks = sent, "dlb send shed tasks");
        }
        if sent < events.len() {
            WorkerCounters::add(&self.counters().fallbacks, (events.len() - sent) as u64);
            let mut queue = self.queue.borrow_mut();
            for ev in &events[sent..] {
                // SAFETY: not sent: the payloads are still ours.
                queue.push_back(unsafe { Notified::from_raw(ev.udata) });
            }
        }
    }

    fn next_task(&self, tick: u32) -> Option<(TaskRef, bool)> {
        let shared = self.shared();
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

    /// After a task poll: hands off the tasks it spawned or woke (while
    /// another worker was idle), except in the chain case. A task that
    /// spawned or woke exactly one task and then completed leaves nothing
    /// else to do here, so its successor runs next on this worker instead
    /// of crossing to another core: what tokio's LIFO slot gives
    /// `chained_spawn` and `ping_pong`. A task still alive after its poll
    /// (an accept loop, say) hands everything it spawned to the DLB queue,
    /// so connections and fan-outs stay balanced. The cost: a successor
    /// waits for the rest of its spawner's poll, not only until the
    /// spawn.
    fn end_poll(&self, shared: &Arc<Shared>) {
        self.in_poll.set(false);
        if self.pending.borrow().is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut *self.pending.borrow_mut());
        if pending.len() == 1 && self.completed.get() {
            if let Some(t) = pending.pop() {
                self.queue.borrow_mut().push_front(t);
            }
        } else {
            let handoff = shared.sleepers.any_idle();
            for t in pending.drain(..) {
                self.send_or_queue(shared, t, handoff, false);
            }
        }
        // Keep the allocation.
        *self.pending.borrow_mut() = pending;
    }

    /// At a maintenance tick: the mean poll time since the last tick (or
    /// since this worker last woke up), and resets the measure.
    fn take_mean_poll(&self) -> std::time::Duration {
        let now = std::time::Instant::now();
        let busy = now.saturating_duration_since(self.busy_since.replace(now));
        busy / self.busy_polls.replace(0).max(1)
    }

    /// Whether a task behind `tasks` others here would wait at least the
    /// handoff threshold (`Builder::handoff_wait`), at `mean` per poll.
    fn waits_long(&self, tasks: usize, mean: std::time::Duration) -> bool {
        let tasks = u32::try_from(tasks).unwrap_or(u32::MAX);
        let limit = self.shared().threads.tuning.handoff_wait;
        mean.checked_mul(tasks).map_or(true, |wait| wait >= limit)
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

    /// Takes this worker's share of the overflow queue (remote spawns whose
    /// DLB send came up short): up to [`OVERFLOW_BATCH`] tasks, one to run
    /// now and the rest at the back of the local queue (from where shedding
    /// passes them on if others are idle). One at a time, a burst of remote
    /// spawns past the credit pool drained at one task per maintenance
    /// interval per busy worker: 6.6 s for tokio's `spawn_many_remote_busy1`
    /// (10,000 spawns), against 16 ms for tokio.
    fn take_overflow(&self) -> Option<TaskRef> {
        let shared = self.shared();
        let len = shared.overflow_len.load(Acquire);
        if len == 0 {
            return None;
        }
        let want = (len / shared.num_workers()).clamp(1, OVERFLOW_BATCH);
        let mut overflow = lock(&shared.overflow);
        let first = overflow.pop_front()?;
        let mut taken = 1;
        let mut queue = self.queue.borrow_mut();
        while taken < want {
            let Some(t) = overflow.pop_front() else { break };
            queue.push_back(t);
            taken += 1;
        }
        shared.overflow_len.fetch_sub(taken, AcqRel);
        Some(first)
    }
}

impl Local {
    /// Work-stealing mode: own deque, then the injector, then half of a
    /// peer's deque (at most half the workers search at once).
    fn next_stolen(&self, deque: &Deque<TaskRef>, st: &Stealing, tick: u32) -> Option<TaskRef> {
        // The LIFO slot first, at most `MAX_LIFO_POLLS` times in a row (then
        // its task goes to the deque, so that a ping-pong pair cannot starve
        // the rest).
        if let Some(t) = self.lifo.borrow_mut().take() {
            if self.lifo_polls.get() < MAX_LIFO_POLLS {
                self.lifo_polls.set(self.lifo_polls.get() + 1);
                return Some(t);
            }
            deque.push(t);
        }
        self.lifo_polls.set(0);
        if tick % self.shared().threads.tuning.event_interval == 0 {
            if let Some(t) = steal_until_done(|| st.injector.steal_batch_and_pop(deque)) {
                return Some(t);
            }
        }
        if let Some(t) = deque.pop() {
            return Some(t);
        }
        if let Some(t) = steal_until_done(|| st.injector.steal_batch_and_pop(deque)) {
            return Some(t);
        }
        let n = st.stealers.len();
        if st.searching.load(SeqCst) * 2 >= n {
            return None;
        }
        st.searching.fetch_add(1, SeqCst);
        let mut found = None;
        for k in 1..n {
            let victim = (self.index + k) % n;
            if let Some(t) = steal_until_done(|| st.stealers[victim].steal_batch_and_pop(deque)) {
                WorkerCounters::add(&self.counters().steals, 1 + deque.len() as u64);
                tracing::debug!(worker = self.index, victim, "stole tasks");
                found = Some(t);
                break;
            }
        }
        st.searching.fetch_sub(1, SeqCst);
        if found.is_some() && !deque.is_empty() {
            // More stolen than needed: let another sleeper help.
            self.shared().notify_parked();
        }
        found
    }
}

fn steal_until_done<T>(mut f: impl FnMut() -> Steal<T>) -> Option<T> {
    loop {
        match f() {
            Steal::Success(t) => return Some(t),
            Steal::Empty => return None,
            Steal::Retry => std::hint::spin_loop(),
        }
    }
}

impl Shared {
    /// Wakes one worker asleep in its `Poll`, if any.
    fn notify_parked(&self) {
        if let Some(peer) = self.sleepers.to_wake() {
            if let Err(e) = self.wakers[peer].wake() {
                tracing::warn!("waking worker {peer}: {e}");
            }
        }
    }

    /// Work-stealing mode: whether any queue has work (checked after
    /// announcing idleness, so that a push that missed the announcement is
    /// seen here).
    fn stealing_has_work(&self) -> bool {
        self.stealing
            .as_ref()
            .is_some_and(|st| !st.injector.is_empty() || st.stealers.iter().any(|s| !s.is_empty()))
    }
}

/// Runs worker `index` until shutdown; returns its port.
pub(crate) fn run_worker(
    shared: Arc<Shared>,
    handle: crate::Handle,
    index: usize,
    port: Port,
    mut poll: Poll,
    deque: Option<Deque<TaskRef>>,
) -> WorkerExit {
    let _context = crate::context::enter_running(handle);
    let _timers = crate::time::driver::install();
    let reactor = shared.reactors[index].clone();
    let _reactor = crate::io::reactor::enter(reactor.clone());
    if let Some(f) = &shared.threads.on_start {
        f();
    }
    let local = Local {
        shared: Arc::as_ptr(&shared),
        index,
        queue: RefCell::new(VecDeque::with_capacity(256)),
        received: RefCell::new(VecDeque::with_capacity(RECV_BATCH)),
        port: RefCell::new(port),
        rescuing: Cell::new(false),
        precise: shared.rescue_interval.and_then(|_| {
            crate::park::PreciseTimer::new(&poll)
                .map_err(|e| tracing::warn!("timerfd: {e}; rescue sleeps round up to 1 ms"))
                .ok()
        }),
        in_poll: Cell::new(false),
        running: Cell::new(None),
        lifo: RefCell::new(None),
        lifo_polls: Cell::new(0),
        spawning: Cell::new(false),
        dispatching: Cell::new(false),
        completed: Cell::new(false),
        busy_since: Cell::new(std::time::Instant::now()),
        busy_polls: Cell::new(0),
        pending: RefCell::new(Vec::with_capacity(16)),
        deque,
        deferred: RefCell::new(Vec::new()),
    };
    LOCAL.with(|l| l.set(&local));
    let mut seq: u64 = 0;
    let mut events = Events::with_capacity(64);
    let mut buf = [Event::default(); RECV_BATCH];
    let mut tick: u32 = 0;
    let event_interval = shared.threads.tuning.event_interval;
    while !shared.shutdown.load(Acquire) {
        tick = tick.wrapping_add(1);
        if tick % TIMER_INTERVAL == 0 {
            crate::time::driver::fire_due();
        }
        if local.received.borrow().is_empty() {
            local.recv_dlb(&mut buf);
        }
        if let Some((task, from_dlb)) = local.next_task(tick) {
            WorkerCounters::add(&local.counters().tasks_polled, 1);
            shared.polling[index].store((seq << 1) | 1, Release);
            local.in_poll.set(true);
            local.running.set(Some(task.id()));
            local.completed.set(false);
            crate::coop::budget(|| task.run());
            local.busy_polls.set(local.busy_polls.get() + 1);
            local.end_poll(&shared);
            seq += 1;
            shared.polling[index].store(seq << 1, Release);
            if from_dlb {
                // Released after running: a worker busy with a handed-off
                // task looks loaded to the arbiter meanwhile.
                let _ = local.port.borrow_mut().release(1);
            }
            if tick % event_interval == 0 {
                // I/O events of this worker's sockets, without blocking.
                // The tasks they wake go to a sleeping peer only if they
                // would otherwise wait long here.
                let mean = local.take_mean_poll();
                let ahead = local.queue.borrow().len() + local.received.borrow().len();
                local.dispatching.set(local.waits_long(ahead, mean));
                crate::park::poll_and_dispatch(
                    &mut poll,
                    &mut events,
                    &reactor,
                    Some(std::time::Duration::ZERO),
                );
                local.dispatching.set(false);
                local.wake_deferred();
                local.shed(mean);
                let depth = local.queue.borrow().len() + local.received.borrow().len();
                local
                    .counters()
                    .local_queue_depth
                    .store(depth as u64, Relaxed);
            }
            continue;
        }
        if !local.deferred.borrow().is_empty() {
            // Only yielded tasks are left: look at this worker's I/O (as
            // the maintenance tick does), then run them again.
            crate::park::poll_and_dispatch(
                &mut poll,
                &mut events,
                &reactor,
                Some(std::time::Duration::ZERO),
            );
            local.wake_deferred();
            continue;
        }
        park(&shared, &local, &reactor, &mut poll, &mut events);
        local.busy_since.set(std::time::Instant::now());
        local.busy_polls.set(0);
    }
    LOCAL.with(|l| l.set(std::ptr::null()));
    // Queued permissions are dropped here; the owned-task list cancels the
    // tasks themselves.
    local.queue.borrow_mut().clear();
    local.pending.borrow_mut().clear();
    local.deferred.borrow_mut().clear();
    local.lifo.borrow_mut().take();
    if let Some(deque) = &local.deque {
        while deque.pop().is_some() {}
    }
    let received = local.received.borrow_mut().drain(..).count();
    let mut port = local.port.into_inner();
    let _ = port.release(received);
    if let Some(f) = &shared.threads.on_stop {
        f();
    }
    (port, poll)
}

fn park(shared: &Shared, local: &Local, reactor: &Reactor, poll: &mut Poll, events: &mut Events) {
    local.counters().local_queue_depth.store(0, Relaxed);
    if crate::time::driver::fire_due() > 0 {
        return;
    }
    // Counted idle from here, so that peers hand work over.
    shared.sleepers.announce_idle();
    if spin(shared, local) {
        shared.sleepers.cancel_idle();
        return;
    }
    {
        let mut port = local.port.borrow_mut();
        if !port.prepare_park() {
            port.finish_park();
            shared.sleepers.cancel_idle();
            return;
        }
    }
    let me = local.index;
    // Peers that are running and own sockets: while there are any, sleep at
    // most one rescue interval, then dispatch the ready I/O of those that
    // stayed inside one poll all along.
    let watch = shared.rescue_watch(me);
    shared.watching[me].store(watch.is_some(), SeqCst);
    // Parked, then a fence that pairs with the pushers' `notify_parked`
    // (push, fence, read who is parked): either they see this worker parked
    // and wake it, or it sees their work here (`crate::sleepers`).
    shared.sleepers.before_sleep(me);
    if shared.overflow_len.load(SeqCst) == 0
        && !shared.shutdown.load(SeqCst)
        && !shared.stealing_has_work()
    {
        let mut timeout = crate::time::driver::next_timeout();
        if let Some((interval, _, _)) = &watch {
            timeout = Some(timeout.map_or(*interval, |t| t.min(*interval)));
        }
        if let Some(p) = &local.precise {
            p.arm_for(timeout);
        }
        crate::park::poll_and_dispatch(poll, events, reactor, timeout);
        if let Some(p) = &local.precise {
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
    local.port.borrow_mut().finish_park();
    WorkerCounters::add(&local.counters().parks, 1);
    crate::time::driver::fire_due();
    if let Some((interval, since, peers)) = watch {
        if since.elapsed() >= interval {
            rescue(shared, local, &peers);
        }
    } else if shared.rescue_interval.is_some() && reactor.resources() > 0 {
        // This worker goes back to work owning sockets: make sure an idle
        // peer watches it, in case a task here runs long.
        shared.nudge_watcher(me);
    }
}

/// Polls the DLB port for a short, bounded time before sleeping: a handoff
/// often follows within microseconds (a task spawning its successor on a
/// peer), and catching it here saves a sleep and a wake-up (an eventfd write
/// and an `epoll_wait` return, tens of microseconds). Returns `true` if work
/// arrived.
fn spin(shared: &Shared, local: &Local) -> bool {
    let mut buf = [Event::default(); RECV_BATCH];
    let start = std::time::Instant::now();
    let mut round = 0u32;
    while start.elapsed() < shared.threads.tuning.spin_before_park {
        local.recv_dlb(&mut buf);
        if !local.received.borrow().is_empty()
            || shared.overflow_len.load(Acquire) > 0
            || shared.stealing_has_work()
            || shared.shutdown.load(Acquire)
        {
            return true;
        }
        round += 1;
        if round % 8 == 0 {
            // On a machine with fewer cores than threads, let the peer that
            // is about to hand over run.
            thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    false
}

/// A watch over busy peers: the interval, when it started, and each peer's
/// poll word then.
type Watch = (std::time::Duration, std::time::Instant, Vec<(usize, u64)>);

/// Dispatches, through the DLB queue, the ready I/O of peers that stayed in
/// one poll for the whole watch.
fn rescue(shared: &Shared, local: &Local, peers: &[(usize, u64)]) {
    for &(peer, word) in peers {
        // Only a peer that was inside a task poll at the start of the watch
        // and still is (same odd word): one that sleeps in its own
        // `epoll_wait` handles its events itself.
        if word & 1 == 0 || shared.polling[peer].load(Acquire) != word {
            continue;
        }
        local.rescuing.set(true);
        let (n, took_owner_event) = shared.reactors[peer].assist();
        local.rescuing.set(false);
        if took_owner_event {
            // The peer may have finished its poll and gone to sleep since
            // we looked: give it back the wake-up we consumed.
            if let Err(e) = shared.wakers[peer].wake() {
                tracing::warn!("re-waking worker {peer}: {e}");
            }
        }
        if n > 0 {
            WorkerCounters::add(&local.counters().io_rescued, n as u64);
            tracing::debug!(
                worker = local.index,
                peer,
                events = n,
                "rescued busy worker's ready I/O"
            );
        }
    }
}

impl Shared {
    /// The peers of `me` that are awake and own sockets, with their poll
    /// words, and when the watch started; `None` if there are none or the
    /// rescue is disabled.
    fn rescue_watch(&self, me: usize) -> Option<Watch> {
        let interval = self.rescue_interval?;
        let peers: Vec<(usize, u64)> = (0..self.polling.len())
            .filter(|&i| i != me && !self.sleepers.is_parked(i) && self.reactors[i].resources() > 0)
            .map(|i| (i, self.polling[i].load(Acquire)))
            .collect();
        if peers.is_empty() {
            return None;
        }
        Some((interval, std::time::Instant::now(), peers))
    }

    /// A peer of `me` asleep in its `Poll` (round robin from `me`), if any.
    fn sleeping_peer(&self, me: usize) -> Option<usize> {
        let n = self.sleepers.len();
        (1..n)
            .map(|k| (me + k) % n)
            .find(|&i| self.sleepers.is_parked(i))
    }

    /// Wakes one idle peer that sleeps without watching, so that it starts
    /// watching (no-op if one already watches).
    fn nudge_watcher(&self, me: usize) {
        let n = self.polling.len();
        if (0..n).any(|i| i != me && self.watching[i].load(SeqCst)) {
            return;
        }
        if let Some(peer) = (0..n).find(|&i| i != me && self.sleepers.is_parked(i)) {
            if let Err(e) = self.wakers[peer].wake() {
                tracing::warn!("waking worker {peer} to watch: {e}");
            }
        }
    }
}

/// Spawns the worker threads.
pub(crate) fn start(
    shared: &Arc<Shared>,
    handle: &crate::Handle,
    parts: Vec<WorkerParts>,
) -> io::Result<Vec<thread::JoinHandle<WorkerExit>>> {
    let mut threads = Vec::with_capacity(parts.len());
    for (index, (port, poll, deque)) in parts.into_iter().enumerate() {
        let shared2 = shared.clone();
        let handle = handle.clone();
        let name = (shared.threads.name)();
        let t = thread::Builder::new()
            .name(name)
            .spawn(move || run_worker(shared2, handle, index, port, poll, deque))?;
        threads.push(t);
    }
    Ok(threads)
}
