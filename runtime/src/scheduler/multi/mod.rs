//! The multi-thread scheduler: workers that hand work to each other only as
//! DLB events carrying a task (the default, [`Scheduler::Dlb`]), and the
//! work-stealing comparison baseline ([`Scheduler::WorkStealing`]).
//!
//! Each worker is one OS thread with a local FIFO queue, one DLB port
//! (linked to the runtime's single load-balanced queue), its own reactor
//! (a mio `Poll`, in which it sleeps; the port's readiness fd and a mio
//! `Waker` are registered there) and its own timer wheel.
//!
//! # Vocabulary (one word per mechanism)
//! - **handoff**: a task sent through the DLB queue, as an *unordered*
//!   event (the arbiter picks the worker) or a *directed* one (to a named
//!   worker). Every way work crosses between workers is a handoff.
//! - **remote spawn**: a spawn or wake from a thread that is not a worker
//!   of this runtime; it is handed off through one of the runtime's *remote
//!   ports*, producer-only DLB ports behind mutexes (up to four; a thread
//!   takes the first free one, starting at its own).
//! - **overflow queue**: where a remote spawn goes when its handoff comes
//!   up short (no credits); every worker takes its share (`overflow.rs`).
//! - **shedding**: a backlogged worker hands part of its local queue off
//!   at a maintenance step (`handoff.rs`).
//! - **maintenance step**: every `event_interval` ticks, and at least every
//!   `io_poll_interval` of wall time, a busy worker polls its own reactor
//!   without blocking, fires its due timers, wakes the tasks that yielded,
//!   and may shed (`worker.rs`).
//! - **time slice**: a task poll that has run `poll_time_slice` gets
//!   `Pending` from its next resource operation (`crate::coop`), so that a
//!   CPU-heavy handler lets the tasks behind it run between its requests.
//! - **spin**: an idle worker polls its DLB port for a short time before it
//!   sleeps; **park**: it sleeps in its reactor (`idle.rs`).
//! - **rescue**: an idle worker that finds a peer inside one long task poll
//!   waits on the peer's epoll fd itself and runs the tasks that the ready
//!   I/O wakes (`rescue.rs`); it **watches** a peer while it waits for
//!   that.
//! - **stealing**: only in the comparison baseline (`stealing.rs`).
//!
//! # When a task is handed off (DLB mode)
//! - Remote spawns, always.
//! - Spawns on a worker while another worker is idle, decided when the
//!   spawning poll ends (`Worker::end_poll`): a task still alive after its
//!   poll (an accept loop) hands what it spawned to the arbiter, so
//!   connections and fan-outs spread; a task that spawned or woke exactly
//!   one task and completed keeps its successor (the chain case, as
//!   tokio's LIFO slot does for `chained_spawn` and `ping_pong`).
//! - Wakes on a worker stay on it: the woken task's sockets are
//!   registered in its reactor. The exception is the wakes of a
//!   maintenance step of a backlogged worker (the tasks ahead times its
//!   mean poll time reach `Builder::handoff_wait`): they go to a sleeping
//!   peer, directed.
//! - Shedding, at a maintenance step, while another worker is idle.
//! - The rescue: the tasks a rescuer wakes come to the rescuer as directed
//!   events. Not unordered ones: the arbiter cannot see a long poll (the
//!   busy worker's CQ has room), so it would put some rescued tasks right
//!   back behind the poll they were rescued from.
//!
//! A worker releases a received event after it has run the task, so that a
//! worker busy with a handed-off task looks loaded to the arbiter.
//!
//! # What if it is full?
//! A handoff that comes up short (no credits, full CQs) never drops the
//! task: on a worker it runs locally, from a remote thread it goes to the
//! overflow queue and a worker is woken. Both are counted in the metrics.
//! The local queues and the overflow queue are unbounded lists of tasks
//! that exist (each task is queued at most once), so they are bounded by
//! the number of live tasks.
//!
//! # Thresholds
//! Set with the `Builder` (`event_interval`, `io_poll_interval`,
//! `poll_time_slice`, `shed_threshold`, `spin_before_park`,
//! `rescue_interval`, `handoff_wait`); how the
//! defaults were chosen is in BENCHMARKS.md (the threshold sweep,
//! `scripts/sweep.sh`). The receive batch is the DLB queue's default CQ
//! depth, 8.
//!
//! [`Scheduler::Dlb`]: crate::Scheduler::Dlb
//! [`Scheduler::WorkStealing`]: crate::Scheduler::WorkStealing

mod handoff;
mod idle;
mod overflow;
mod rescue;
mod stealing;
mod worker;

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};
use std::thread;
use std::time::Duration;

use fulcrum_dlb::{Domain, Event, Port};
use mio::unix::SourceFd;
use mio::{Interest, Poll, Token};

use self::overflow::Overflow;
use self::stealing::Stealing;
use self::worker::Worker;
pub(crate) use self::worker::{block_in_place, defer};
use super::owned::OwnedTasks;
use crate::io::reactor::Reactor;
use crate::loom::{Arc, AtomicBool, AtomicU32, AtomicU64, Mutex};
use crate::metrics::{RuntimeMetrics, WorkerCounters};
use crate::task::{JoinHandle, Notified, Schedule, Task};

/// Default ticks between maintenance steps: tokio's `event_interval`.
pub(crate) const MAINTENANCE_INTERVAL: u32 = 61;
/// Default: a local queue longer than this may be shed to idle workers.
pub(crate) const SHED_MIN: usize = 4;
/// Default: the wait (queue length × mean poll time) below which a busy
/// worker keeps its tasks rather than handing them to an idle peer. Zero:
/// shed whenever the queue is long enough.
pub(crate) const HANDOFF_WAIT: Duration = Duration::ZERO;
/// Default time an idle worker polls its DLB port before it sleeps.
pub(crate) const SPIN_BEFORE_PARK: Duration = Duration::from_micros(20);
/// Default: a busy worker polls its own reactor at least this often.
pub(crate) const IO_POLL_INTERVAL: Duration = Duration::from_micros(100);
/// Default time slice of a task poll (see `crate::coop`).
pub(crate) const POLL_TIME_SLICE: Duration = Duration::from_millis(1);

/// The scheduler's thresholds (see the module docs and the `Builder`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tuning {
    /// Ticks between maintenance steps (at least 1).
    pub(crate) event_interval: u32,
    /// A local queue longer than this may be shed.
    pub(crate) shed_min: usize,
    /// The pre-sleep poll of the DLB port.
    pub(crate) spin_before_park: Duration,
    /// Shedding and the handoff of maintenance wakes happen only when the
    /// tasks concerned would otherwise wait at least this long here.
    pub(crate) handoff_wait: Duration,
    /// A busy worker's maintenance step comes at least this often, besides
    /// every `event_interval` ticks.
    pub(crate) io_poll_interval: Duration,
    /// A task poll that ran this long gets `Pending` from its next resource
    /// operation (`None`: no time slice).
    pub(crate) poll_time_slice: Option<Duration>,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            event_interval: MAINTENANCE_INTERVAL,
            shed_min: SHED_MIN,
            spin_before_park: SPIN_BEFORE_PARK,
            handoff_wait: HANDOFF_WAIT,
            io_poll_interval: IO_POLL_INTERVAL,
            poll_time_slice: Some(POLL_TIME_SLICE),
        }
    }
}

/// A worker whose recent busy fraction is at least this (per mille) runs
/// heavy work: light tasks leave it, and heavy tasks are not sent to it.
pub(crate) const BUSY_PERMILLE: u32 = 500;

/// The load hint of a worker inside a long task poll: as if it had this many
/// events waiting, so that the arbiter passes it over while any other port
/// is eligible (it stays eligible, so nothing is stranded). It must
/// outweigh any other worker's hint, which counts its registrations: with
/// 1,024, a worker stuck with 4,000 connections still ranked before an idle
/// one with 6,000, and a task spawned then waited behind the stuck poll.
pub(crate) const STUCK_HINT: u32 = 1 << 24;

/// The tokens of a worker's own sources in its `Poll`.
const DLB_TOKEN: Token = Token(0);
const WAKER_TOKEN: Token = Token(1);
/// The token of the peers' watch timers in a worker's `Poll` (see
/// `Shared::watch_timers`); token 2 is the worker's own `PreciseTimer`.
const WATCH_TOKEN: Token = Token(3);

type TaskRef = Notified<Arc<Shared>>;

/// Where [`Shared::spawn_routed`] sends a task.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Route {
    /// An unordered DLB event: the arbiter picks the worker.
    Balanced,
    /// A directed DLB event to this worker.
    Worker(usize),
}

/// How the runtime's workers run, and their per-thread hooks.
pub(crate) struct ThreadConfig {
    /// `true`: the workers run the work-stealing comparison baseline
    /// ([`Scheduler::WorkStealing`]: crossbeam deques, a LIFO slot, an
    /// injector for remote spawns; no DLB handoff, no rescue). `false`: the
    /// DLB scheduler.
    pub(crate) stealing: bool,
    pub(crate) rescue_interval: Option<Duration>,
    pub(crate) tuning: Tuning,
    /// Work-stealing mode: whether a task spawned or woken by a running
    /// task goes to the worker's LIFO slot (tokio's default).
    pub(crate) lifo_slot: bool,
    pub(crate) name: Box<dyn Fn() -> String + Send + Sync>,
    pub(crate) on_start: Option<Box<dyn Fn() + Send + Sync>>,
    pub(crate) on_stop: Option<Box<dyn Fn() + Send + Sync>>,
}

/// Aligns a per-worker word to its own cache lines.
#[repr(align(128))]
struct CachePadded<T>(T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// State shared by the workers of one runtime.
pub(crate) struct Shared {
    domain: Domain,
    /// The producer-only ports of threads that are not workers (see
    /// [`remote_ports`]): each thread starts at its own one and takes the
    /// first that is free, so that remote spawners seldom wait on a lock.
    remote: Box<[Mutex<Port>]>,
    overflow: Overflow,
    /// Remote spawns that went to the overflow queue.
    remote_fallbacks: AtomicU64,
    wakers: Box<[mio::Waker]>,
    reactors: Box<[Arc<Reactor>]>,
    pub(crate) counters: Box<[WorkerCounters]>,
    /// Idle and sleeping workers, and the no-lost-wake-up protocol
    /// (model-checked in `crate::sleepers`).
    sleepers: crate::sleepers::Sleepers,
    /// Per worker: `seq << 1 | in_poll`, bumped around every task poll, so
    /// that idle workers can tell a peer stuck in one long poll.
    polling: Box<[CachePadded<AtomicU64>]>,
    /// Per worker: its recent busy fraction, per mille, as it last
    /// published it (`Worker::publish_load`).
    busy: Box<[AtomicU32]>,
    /// Per worker: how many rescues of it in a row found no ready I/O (the
    /// watch over it backs off, see `rescue.rs`).
    rescue_misses: Box<[AtomicU32]>,
    /// Per worker: whether it watches busy peers while asleep (it then
    /// wakes every rescue interval).
    watching: Box<[AtomicBool]>,
    /// Per worker: a one-shot timer registered in every peer's `Poll`. A
    /// worker that goes back to work owning sockets, with no peer watching,
    /// arms its own for one rescue interval and disarms it when it sleeps
    /// again; only if it is still awake when the timer fires are the
    /// sleeping peers woken, to watch it. Waking a peer at once instead
    /// (`nudge_watcher`, the fallback when there are no timers) cost a
    /// lightly loaded server two peer wake-ups per request. Empty when the
    /// rescue is off or a timer could not be made.
    watch_timers: Box<[crate::park::PreciseTimer]>,
    /// How long a peer may sit in one poll before idle workers rescue its
    /// ready I/O; `None` disables the rescue.
    rescue_interval: Option<Duration>,
    shutdown: AtomicBool,
    pub(crate) owned: OwnedTasks<Arc<Shared>>,
    /// `Some` in work-stealing mode: no DLB handoff then.
    stealing: Option<Stealing>,
    threads: ThreadConfig,
}

/// What a worker thread hands back when it stops: its port (drained at
/// shutdown) and its `Poll`, kept open until every worker has stopped
/// because idle peers may be rescuing on its epoll fd.
pub(crate) type WorkerExit = (Port, Poll);

/// What each worker thread starts with: its DLB port, its `Poll` and, in
/// work-stealing mode, its deque.
pub(crate) type WorkerParts = (Port, Poll, Option<crossbeam_deque::Worker<TaskRef>>);

/// Producer-only ports for threads that are not workers, at most.
const REMOTE_PORTS: usize = 4;

/// How many of the domain's ports a runtime with `workers` workers gives to
/// remote threads: up to [`REMOTE_PORTS`], within the domain's port limit,
/// at least one.
pub(crate) fn remote_ports(workers: usize) -> usize {
    REMOTE_PORTS
        .min(fulcrum_dlb::MAX_PORTS.saturating_sub(workers))
        .max(1)
}

thread_local! {
    /// The remote port a thread tries first (assigned round-robin on its
    /// first remote send).
    static REMOTE_START: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

/// Hands out remote start ports round-robin.
static NEXT_REMOTE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

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
    remote: usize,
    threads: ThreadConfig,
) -> io::Result<(Arc<Shared>, Vec<WorkerParts>)> {
    let mut parts = Vec::with_capacity(workers);
    let mut wakers = Vec::with_capacity(workers);
    let mut reactors = Vec::with_capacity(workers);
    let mut deques = Vec::with_capacity(workers);
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
        let deque = threads.stealing.then(crossbeam_deque::Worker::new_fifo);
        if let Some(d) = &deque {
            deques.push(d.stealer());
        }
        parts.push((port, poll, deque));
    }
    // The comparison mode gets no rescue: it balances by stealing only.
    let rescue_interval = threads.rescue_interval.filter(|_| !threads.stealing);
    let watch_timers = if rescue_interval.is_some() {
        watch_timers(&parts).unwrap_or_else(|e| {
            tracing::warn!("watch timers: {e}; idle workers are woken to watch instead");
            Box::default()
        })
    } else {
        Box::default()
    };
    let stealing = threads.stealing.then(|| Stealing::new(deques));
    let remote = (workers..workers + remote)
        .map(|id| take_port(&domain, id).map(Mutex::new))
        .collect::<io::Result<Box<[_]>>>()?;
    let shared = Arc::new(Shared {
        domain,
        remote,
        overflow: Overflow::new(),
        remote_fallbacks: AtomicU64::new(0),
        wakers: wakers.into_boxed_slice(),
        reactors: reactors.into_boxed_slice(),
        counters: (0..workers).map(|_| WorkerCounters::default()).collect(),
        sleepers: crate::sleepers::Sleepers::new(workers),
        polling: (0..workers)
            .map(|_| CachePadded(AtomicU64::new(0)))
            .collect(),
        busy: (0..workers).map(|_| AtomicU32::new(0)).collect(),
        rescue_misses: (0..workers).map(|_| AtomicU32::new(0)).collect(),
        watching: (0..workers).map(|_| AtomicBool::new(false)).collect(),
        watch_timers,
        rescue_interval,
        shutdown: AtomicBool::new(false),
        owned: OwnedTasks::new(),
        stealing,
        threads,
    });
    Ok((shared, parts))
}

/// One watch timer per worker, each registered in every other worker's
/// `Poll` (see `Shared::watch_timers`).
fn watch_timers(parts: &[WorkerParts]) -> io::Result<Box<[crate::park::PreciseTimer]>> {
    let timers = (0..parts.len())
        .map(|_| crate::park::PreciseTimer::unregistered())
        .collect::<io::Result<Box<[_]>>>()?;
    for (i, timer) in timers.iter().enumerate() {
        for (j, (_, poll, _)) in parts.iter().enumerate() {
            if i != j {
                timer.register(poll, WATCH_TOKEN)?;
            }
        }
    }
    Ok(timers)
}

/// Spawns the worker threads.
pub(crate) fn start(
    shared: &Arc<Shared>,
    handle: &crate::Handle,
    parts: Vec<WorkerParts>,
) -> io::Result<Vec<thread::JoinHandle<WorkerExit>>> {
    let mut threads = Vec::with_capacity(parts.len());
    for (index, (port, poll, deque)) in parts.into_iter().enumerate() {
        let shared = shared.clone();
        let handle = handle.clone();
        let name = (shared.threads.name)();
        let t = thread::Builder::new()
            .name(name)
            .spawn(move || worker::run(shared, handle, index, port, poll, deque))?;
        threads.push(t);
    }
    Ok(threads)
}

impl Schedule for Arc<Shared> {
    fn schedule(&self, task: Notified<Self>) {
        Worker::with_current(self, |worker| match worker {
            Some(worker) => worker.schedule(task, worker::Intent::Wake),
            None => self.schedule_remote(task),
        });
    }

    fn release(&self, task: &Task<Self>) -> Option<Task<Self>> {
        self.owned.remove(task)
    }
}

impl Shared {
    /// Spawns a future on this runtime: from a worker, scheduled there as a
    /// spawn (a candidate for a handoff when the poll ends); from anywhere
    /// else, a remote spawn.
    pub(crate) fn spawn<F>(self: &Arc<Self>, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (task, notified, join) = crate::task::new_task(future, self.clone());
        if self.owned.bind(task) {
            Worker::with_current(self, |worker| match worker {
                Some(worker) => worker.schedule(notified, worker::Intent::Spawn),
                None => self.schedule_remote(notified),
            });
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
        let target = match route {
            Route::Balanced => None,
            Route::Worker(w) => Some(w % self.num_workers()),
        };
        Worker::with_current(self, |worker| match worker {
            Some(worker) => worker.hand_off_or_keep(notified, target),
            None => self.send_remote(notified, target),
        });
        join
    }

    /// The index of the calling thread if it is a worker of this runtime.
    pub(crate) fn current_worker(self: &Arc<Self>) -> Option<usize> {
        Worker::with_current(self, |w| w.map(|w| w.index))
    }

    /// A spawn or wake from a thread that is not one of this runtime's
    /// workers: an unordered handoff through the remote port (in stealing
    /// mode, the injector).
    fn schedule_remote(&self, task: TaskRef) {
        if self.shutdown.load(Acquire) {
            // The owned-task list cancels it; this permission is not needed.
            drop(task);
            return;
        }
        if let Some(st) = &self.stealing {
            st.push_remote(task);
            self.notify_parked();
            return;
        }
        self.send_remote(task, None);
    }

    /// Sends `task` through the remote port (unordered, or directed to
    /// `target`); if the send comes up short, to the overflow queue, and
    /// wakes a worker to take it.
    fn send_remote(&self, task: TaskRef, target: Option<usize>) {
        let id = task.id();
        let event = match target {
            Some(w) => Event::directed(w as u8, task.into_raw()),
            None => Event::unordered(0, task.into_raw()),
        };
        if self.remote_port().send(&[event]).unwrap_or(0) == 1 {
            tracing::debug!(task = %id, ?target, "remote dlb send task");
            return;
        }
        // SAFETY: the event was not sent, so its payload is still ours.
        let task = unsafe { Notified::from_raw(event.udata) };
        self.overflow.push(task);
        self.remote_fallbacks.fetch_add(1, Relaxed);
        tracing::debug!(task = %id, "remote dlb send short; task to the overflow queue");
        self.overflow.wake_one(&self.wakers);
    }

    /// A remote port for this thread: its own start port if free, else the
    /// next free one, else it waits for its own.
    fn remote_port(&self) -> impl std::ops::DerefMut<Target = Port> + '_ {
        let n = self.remote.len();
        let start = REMOTE_START.with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT_REMOTE.fetch_add(1, Relaxed));
            }
            s.get()
        }) % n;
        for i in 0..n {
            match self.remote[(start + i) % n].try_lock() {
                Ok(port) => return port,
                // A holder panicked: the port is still consistent (one
                // send is one step), as `lock` assumes.
                Err(std::sync::TryLockError::Poisoned(e)) => return e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        self.remote[start]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
                    m.io_moved_in = r.moved_in();
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

    /// Wakes one worker asleep in its `Poll`, if any.
    fn notify_parked(&self) {
        if let Some(peer) = self.sleepers.to_wake() {
            if let Err(e) = self.wakers[peer].wake() {
                tracing::warn!("waking worker {peer}: {e}");
            }
        }
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
        self.overflow.clear();
        // Registrations released after the workers' last `epoll_wait` still
        // hold their tasks' wakers (and so this `Shared`): no worker will
        // poll again, so let them go now.
        for r in self.reactors.iter() {
            r.release_pending();
        }
        if let Some(st) = &self.stealing {
            // Permissions pushed while the workers stopped: each holds the
            // task, which holds this `Shared` (a cycle if left here).
            st.clear();
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
