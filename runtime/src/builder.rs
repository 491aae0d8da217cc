//! [`Builder`]: configures and builds a [`Runtime`], and the [`Scheduler`]
//! choice of a multi-thread runtime.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::thread;
use std::time::Duration;

use fulcrum_dlb::{Backend, Domain};

use crate::blocking::{self, BlockingPool};
use crate::connections::ConnectionCounts;
use crate::handle::{Handle, Inner};
use crate::loom::Arc;
use crate::scheduler::{current, multi};
use crate::time::Clock;
use crate::Runtime;

/// How a multi-thread runtime moves work between its workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scheduler {
    /// Work crosses between workers only through the DLB queue; nothing is
    /// stolen. The default.
    #[default]
    Dlb,
    /// The comparison baseline: crossbeam-deque work stealing, roughly what
    /// tokio does (idle workers steal half a victim's queue; at most half
    /// the workers search at once), with the same per-worker reactors and
    /// no DLB handoffs and no I/O rescue, so that benchmarks isolate the
    /// scheduling policy.
    WorkStealing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    MultiThread,
    CurrentThread,
}

type Hook = Box<dyn Fn() + Send + Sync>;

/// Default for [`Builder::rescue_interval`].
pub const DEFAULT_RESCUE_INTERVAL: Duration = Duration::from_micros(100);

/// Configures and builds a [`Runtime`], with tokio's method names.
///
/// ```
/// let rt = fulcrum_runtime::Builder::new_multi_thread()
///     .worker_threads(2)
///     .thread_name("app-worker")
///     .build()?;
/// assert_eq!(rt.block_on(async { 6 * 7 }), 42);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Tuning the scheduler
/// The DLB scheduler's thresholds, each explained at its method; the
/// defaults suit most programs, and BENCHMARKS.md has the sweep that chose
/// them. A server whose tasks are woken by their sockets might run with:
///
/// ```
/// use std::time::Duration;
/// use fulcrum_runtime::{Builder, Scheduler};
///
/// let rt = Builder::new_multi_thread()
///     .worker_threads(2)
///     .scheduler(Scheduler::Dlb)
///     .event_interval(31)
///     .io_poll_interval(Duration::from_micros(50))
///     .shed_threshold(8)
///     .handoff_wait(Duration::from_micros(100))
///     .spin_before_park(Duration::from_micros(10))
///     .rescue_interval(Some(Duration::from_micros(200)))
///     .poll_time_slice(Some(Duration::from_millis(2)))
///     .build()?;
/// let pong = rt.block_on(async { fulcrum_runtime::spawn(async { "pong" }).await });
/// assert_eq!(pong.ok(), Some("pong"));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Builder {
    flavor: Flavor,
    workers: Option<usize>,
    scheduler: Scheduler,
    backend: Backend,
    thread_name: Box<dyn Fn() -> String + Send + Sync>,
    on_start: Option<Hook>,
    on_stop: Option<Hook>,
    max_blocking_threads: usize,
    keep_alive: Duration,
    rescue_interval: Option<Duration>,
    tuning: multi::Tuning,
    lifo_slot: bool,
    dlb_credits: Option<u32>,
    dlb_cq_depth: Option<u32>,
    start_paused: bool,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("flavor", &self.flavor)
            .field("workers", &self.workers)
            .field("scheduler", &self.scheduler)
            .field("backend", &self.backend)
            .field("max_blocking_threads", &self.max_blocking_threads)
            .field("thread_keep_alive", &self.keep_alive)
            .field("dlb_credits", &self.dlb_credits)
            .field("dlb_cq_depth", &self.dlb_cq_depth)
            .field("tuning", &self.tuning)
            .field("start_paused", &self.start_paused)
            .finish_non_exhaustive()
    }
}

impl Builder {
    fn new(flavor: Flavor) -> Self {
        Builder {
            flavor,
            workers: None,
            scheduler: Scheduler::Dlb,
            backend: Backend::Auto,
            thread_name: Box::new(|| {
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                format!("fulcrum-worker-{}", NEXT.fetch_add(1, Relaxed))
            }),
            on_start: None,
            on_stop: None,
            max_blocking_threads: blocking::DEFAULT_MAX_THREADS,
            keep_alive: blocking::DEFAULT_KEEP_ALIVE,
            rescue_interval: Some(DEFAULT_RESCUE_INTERVAL),
            tuning: multi::Tuning::default(),
            lifo_slot: true,
            dlb_credits: None,
            dlb_cq_depth: None,
            start_paused: false,
        }
    }

    /// A multi-thread runtime: one worker thread per core by default, DLB
    /// scheduling.
    pub fn new_multi_thread() -> Self {
        Self::new(Flavor::MultiThread)
    }

    /// A single-threaded runtime driven by [`Runtime::block_on`].
    pub fn new_current_thread() -> Self {
        Self::new(Flavor::CurrentThread)
    }

    /// Number of worker threads (default: the available parallelism).
    /// Ignored by the current-thread runtime.
    ///
    /// ```
    /// let rt = fulcrum_runtime::Builder::new_multi_thread()
    ///     .worker_threads(3)
    ///     .build()?;
    /// assert_eq!(rt.handle().num_workers(), 3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn worker_threads(&mut self, n: usize) -> &mut Self {
        self.workers = Some(n);
        self
    }

    /// How work moves between workers (default [`Scheduler::Dlb`]).
    ///
    /// ```
    /// use fulcrum_runtime::{Builder, Scheduler};
    ///
    /// // The work-stealing baseline, to compare a workload against DLB.
    /// let rt = Builder::new_multi_thread()
    ///     .worker_threads(2)
    ///     .scheduler(Scheduler::WorkStealing)
    ///     .build()?;
    /// let n = rt.block_on(async { fulcrum_runtime::spawn(async { 6 * 7 }).await });
    /// assert_eq!(n.ok(), Some(42));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn scheduler(&mut self, scheduler: Scheduler) -> &mut Self {
        self.scheduler = scheduler;
        self
    }

    /// Which DLB backend carries the handoffs (default [`Backend::Auto`];
    /// `FULCRUM_DLB` overrides it).
    ///
    /// ```
    /// use fulcrum_dlb::{Backend, BackendKind};
    ///
    /// let rt = fulcrum_runtime::Builder::new_multi_thread()
    ///     .worker_threads(2)
    ///     .dlb_backend(Backend::Software)
    ///     .build()?;
    /// if std::env::var_os("FULCRUM_DLB").is_none() {
    ///     assert_eq!(rt.handle().dlb_backend(), Some(BackendKind::Software));
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn dlb_backend(&mut self, backend: Backend) -> &mut Self {
        self.backend = backend;
        self
    }

    /// Size of the DLB queue's credit pool: how many handoffs may wait in
    /// the queue (for a worker whose CQ has room) at once. Default
    /// `max(1024, 64 × workers)`.
    ///
    /// # What if the pool is empty?
    /// A handoff that finds the pool empty is not lost: the send comes up
    /// short and the sender keeps the task. A worker puts it on its own
    /// local queue and runs it itself (counted in
    /// [`WorkerMetrics::fallbacks`](crate::WorkerMetrics::fallbacks)); a
    /// thread that is not a worker puts it on the overflow queue and wakes
    /// a worker (counted in
    /// [`RuntimeMetrics::remote_fallbacks`](crate::RuntimeMetrics::remote_fallbacks)).
    /// A smaller pool makes that happen sooner: work stays where it was
    /// spawned or woken instead of being balanced.
    ///
    /// [`build`](Self::build) refuses fewer credits than the worker count
    /// plus one (a port per worker and at least one remote port for the
    /// other threads; more remote ports, up to four, only where the credits
    /// cover one each), so that every port can have an event waiting, and
    /// more than
    /// [`fulcrum_dlb::MAX_CREDITS`]; it checks this on every multi-thread
    /// builder. The work-stealing and current-thread schedulers send no
    /// handoffs, so they do not use the pool.
    ///
    /// ```
    /// use fulcrum_runtime::Builder;
    ///
    /// // Room for 4096 waiting handoffs, and 32 deliveries per worker.
    /// let rt = Builder::new_multi_thread()
    ///     .worker_threads(2)
    ///     .dlb_credits(4096)
    ///     .dlb_cq_depth(32)
    ///     .build()?;
    /// drop(rt);
    ///
    /// // Two workers and the remote port need at least 3 credits.
    /// let err = Builder::new_multi_thread()
    ///     .worker_threads(2)
    ///     .dlb_credits(2)
    ///     .build()
    ///     .expect_err("too few credits");
    /// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn dlb_credits(&mut self, n: u32) -> &mut Self {
        self.dlb_credits = Some(n);
        self
    }

    /// Depth of each worker's DLB consumer queue (CQ): how many handoffs a
    /// worker can have delivered and not yet taken. A power of two from
    /// [`fulcrum_dlb::MIN_CQ_DEPTH`] (8) to [`fulcrum_dlb::MAX_CQ_DEPTH`]
    /// (1024), else [`build`](Self::build) fails (on every multi-thread
    /// builder); default [`fulcrum_dlb::DEFAULT_CQ_DEPTH`] (8). Unused by
    /// the work-stealing and current-thread schedulers.
    ///
    /// # What if a CQ is full?
    /// The worker stops being eligible: the arbiter gives unordered
    /// handoffs to the other workers, and while every CQ is full they wait
    /// in the DLB queue, each holding a credit (see
    /// [`dlb_credits`](Self::dlb_credits)), until a worker takes its
    /// deliveries. A directed handoff to that worker (the rescue,
    /// [`Handle::spawn_on_worker`](crate::Handle::spawn_on_worker)) waits
    /// for it the same way. The depth also bounds how many handoffs can
    /// wait behind a worker stuck in a long task poll: once delivered to
    /// its CQ, an event stays there until that worker takes it (DLB
    /// semantics: a port's CQ is its own).
    ///
    /// ```
    /// let err = fulcrum_runtime::Builder::new_multi_thread()
    ///     .worker_threads(2)
    ///     .dlb_cq_depth(12)
    ///     .build()
    ///     .expect_err("not a power of two");
    /// assert!(err.to_string().starts_with("dlb_cq_depth(12)"));
    /// ```
    pub fn dlb_cq_depth(&mut self, n: u32) -> &mut Self {
        self.dlb_cq_depth = Some(n);
        self
    }

    /// Accepted so that tokio code ports unchanged: I/O and timers are
    /// always enabled on a Fulcrum runtime.
    pub fn enable_all(&mut self) -> &mut Self {
        self
    }

    /// Accepted for tokio compatibility; I/O is always enabled.
    pub fn enable_io(&mut self) -> &mut Self {
        self
    }

    /// Accepted for tokio compatibility; timers are always enabled.
    pub fn enable_time(&mut self) -> &mut Self {
        self
    }

    /// Whether the runtime's clock starts paused (default `false`), as
    /// tokio's `test-util` option: [`Instant::now`](crate::time::Instant::now)
    /// stands still, moves with [`time::advance`](crate::time::advance),
    /// and jumps to the next timer whenever the runtime is idle (see
    /// [`crate::time`]).
    ///
    /// Only the current-thread runtime's clock can be paused, as in tokio:
    /// [`build`](Self::build) refuses `start_paused(true)` on a
    /// multi-thread builder (an `InvalidInput` error where tokio panics).
    pub fn start_paused(&mut self, start_paused: bool) -> &mut Self {
        self.start_paused = start_paused;
        self
    }

    /// Name of the worker threads.
    pub fn thread_name(&mut self, name: impl Into<String>) -> &mut Self {
        let name = name.into();
        self.thread_name = Box::new(move || name.clone());
        self
    }

    /// Computes the name of each worker thread.
    pub fn thread_name_fn(&mut self, f: impl Fn() -> String + Send + Sync + 'static) -> &mut Self {
        self.thread_name = Box::new(f);
        self
    }

    /// How long a worker may stay in one task poll before idle workers
    /// dispatch the ready I/O of its sockets for it (default 100 µs; `None`
    /// turns the rescue off). The light tasks that I/O wakes are sent to
    /// the rescuing worker as directed DLB events, not through the arbiter.
    ///
    /// The cost: while any worker is inside a task poll and owns sockets,
    /// idle workers wake up once per interval to check on it. A worker
    /// that goes back to work arms a timer for one interval (two
    /// `timerfd_settime` calls per busy period) rather than waking a peer:
    /// at low load it is asleep again before the timer fires.
    ///
    /// An example: [Tuning the scheduler](Builder#tuning-the-scheduler).
    pub fn rescue_interval(&mut self, interval: Option<Duration>) -> &mut Self {
        self.rescue_interval = interval;
        self
    }

    /// Scheduler ticks (task polls) between a busy worker's maintenance
    /// steps: polling its own I/O, offering part of its queue to idle
    /// workers, taking its share of the overflow queue (default 61, as
    /// tokio's `event_interval`). At least 1. Smaller: fairer to I/O and
    /// quicker to shed, more overhead per task.
    ///
    /// An example: [Tuning the scheduler](Builder#tuning-the-scheduler).
    pub fn event_interval(&mut self, ticks: u32) -> &mut Self {
        self.tuning.event_interval = ticks;
        self
    }

    /// A busy worker's maintenance step (polling its own I/O, firing its
    /// due timers, waking the tasks that yielded, shedding) also comes at
    /// least this often in wall time, not only every
    /// [`event_interval`](Self::event_interval) ticks (default 100 µs), so
    /// that a worker running long task polls still notices its sockets'
    /// readiness and its timers after each of them. Multi-thread runtimes
    /// only.
    ///
    /// An example: [Tuning the scheduler](Builder#tuning-the-scheduler).
    pub fn io_poll_interval(&mut self, interval: Duration) -> &mut Self {
        self.tuning.io_poll_interval = interval;
        self
    }

    /// The time slice of a task poll (default 1 ms; `None`: none). A task
    /// that has been running for this long in one poll gets `Pending` (and
    /// is woken again, after the tasks queued behind it) from its next
    /// operation on a runtime resource: a socket, a timer. tokio's budget
    /// counts operations only (128 per poll, as here too), so a handler
    /// that spends milliseconds of CPU per request and always finds its
    /// next request ready can keep its worker for 128 requests; with the
    /// time slice it yields after each. Multi-thread runtimes only.
    ///
    /// An example: [Tuning the scheduler](Builder#tuning-the-scheduler).
    pub fn poll_time_slice(&mut self, slice: Option<Duration>) -> &mut Self {
        self.tuning.poll_time_slice = slice;
        self
    }

    /// A worker sheds half its local queue (at most 32 tasks, light ones
    /// only) to the DLB queue at a maintenance step when the queue is
    /// longer than this, another worker is idle, and the tasks would
    /// otherwise wait at least [`handoff_wait`](Self::handoff_wait)
    /// (default 4). Tasks the DLB queue has no credits for stay in the
    /// local queue.
    ///
    /// An example: [Tuning the scheduler](Builder#tuning-the-scheduler).
    pub fn shed_threshold(&mut self, tasks: usize) -> &mut Self {
        self.tuning.shed_min = tasks;
        self
    }

    /// The least wait worth a handoff (DLB scheduler; default zero: any). At a
    /// maintenance step a busy worker sheds part of its queue, and hands
    /// the tasks its I/O poll wakes to a sleeping peer, only if they would
    /// otherwise wait at least this long behind its queue (queue length ×
    /// its mean poll time since the last step). Below it, a handoff (an
    /// idle peer's wake-up, the task's cache lines, and the task's sockets
    /// still served by this worker's reactor) costs more than it saves.
    /// With zero a busy worker hands off whenever its queue is longer than
    /// the shed threshold, which suits tasks that wake themselves (spawned
    /// fan-outs, yield loops: once moved, they stay moved). Servers whose
    /// tasks are woken by their sockets should set about 100 µs: a task
    /// handed off comes back with its next readiness event, so every
    /// handoff is paid again (the gateway example does, and BENCHMARKS.md
    /// has its figures).
    ///
    /// An example: [Tuning the scheduler](Builder#tuning-the-scheduler).
    pub fn handoff_wait(&mut self, wait: Duration) -> &mut Self {
        self.tuning.handoff_wait = wait;
        self
    }

    /// How long an idle worker polls its DLB port before it sleeps in its
    /// `Poll` (default 20 µs): a handoff arriving meanwhile saves a sleep
    /// and an eventfd wake-up; the cost is that much CPU per idle period.
    ///
    /// An example: [Tuning the scheduler](Builder#tuning-the-scheduler).
    pub fn spin_before_park(&mut self, spin: Duration) -> &mut Self {
        self.tuning.spin_before_park = spin;
        self
    }

    /// Work-stealing scheduler only: turns off the LIFO slot. With it (the
    /// default, as in tokio), a task spawned or woken by a running task
    /// runs next on the same worker (at most 3 in a row), which suits
    /// request/response pairs; without it, such tasks go to the back of the
    /// worker's deque. The DLB scheduler has no LIFO slot: it keeps a
    /// spawned successor local only when its spawner completes (see the
    /// scheduler docs).
    pub fn disable_lifo_slot(&mut self) -> &mut Self {
        self.lifo_slot = false;
        self
    }

    /// Runs `f` on each worker thread when it starts.
    pub fn on_thread_start(&mut self, f: impl Fn() + Send + Sync + 'static) -> &mut Self {
        self.on_start = Some(Box::new(f));
        self
    }

    /// Runs `f` on each worker thread before it exits.
    pub fn on_thread_stop(&mut self, f: impl Fn() + Send + Sync + 'static) -> &mut Self {
        self.on_stop = Some(Box::new(f));
        self
    }

    /// Most threads the blocking pool of
    /// [`spawn_blocking`](crate::spawn_blocking) runs at once (default 512,
    /// as tokio). Threads start on demand; past the cap, blocking calls wait
    /// in the pool's queue, which is unbounded (nothing is refused), until
    /// a thread finishes its closure. The worker threads do not count. 0 is
    /// refused by [`build`](Self::build).
    pub fn max_blocking_threads(&mut self, n: usize) -> &mut Self {
        self.max_blocking_threads = n;
        self
    }

    /// How long an idle blocking-pool thread waits for work before it exits
    /// (default 10 s, as tokio).
    pub fn thread_keep_alive(&mut self, duration: Duration) -> &mut Self {
        self.keep_alive = duration;
        self
    }

    /// Builds the runtime and starts its workers.
    ///
    /// # Errors
    /// `InvalidInput`, with a message naming the setting, for:
    /// - [`max_blocking_threads(0)`](Self::max_blocking_threads);
    /// - [`event_interval(0)`](Self::event_interval);
    /// - [`start_paused(true)`](Self::start_paused) on a multi-thread
    ///   builder;
    /// - on a multi-thread builder, whatever its [`Scheduler`]: a worker
    ///   count of 0 or above 63 (the DLB domain's 64 ports less one for
    ///   remote threads; the default count, the available parallelism, is
    ///   capped at 63);
    ///   [`dlb_credits`](Self::dlb_credits) below the worker count plus one
    ///   or above [`fulcrum_dlb::MAX_CREDITS`]; a
    ///   [`dlb_cq_depth`](Self::dlb_cq_depth) that is not a power of two
    ///   from [`fulcrum_dlb::MIN_CQ_DEPTH`] to [`fulcrum_dlb::MAX_CQ_DEPTH`].
    ///
    /// Otherwise, the error of a DLB domain that cannot be built (for
    /// example `FULCRUM_DLB=hw` on a machine without a device), or an OS
    /// error creating threads, pollers or eventfds.
    pub fn build(&mut self) -> io::Result<Runtime> {
        if self.max_blocking_threads == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "max_blocking_threads(0): the blocking pool needs at least 1 thread",
            ));
        }
        if self.tuning.event_interval == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "event_interval(0): a worker needs at least 1 tick between maintenance steps",
            ));
        }
        if self.start_paused && self.flavor == Flavor::MultiThread {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "start_paused(true) needs the current-thread runtime \
                 (`Builder::new_current_thread()`): only its clock can be paused",
            ));
        }
        let blocking = BlockingPool::new(self.max_blocking_threads, self.keep_alive);
        match self.flavor {
            Flavor::CurrentThread => {
                let shared = current::Shared::new();
                let clock = std::sync::Arc::new(Clock::new(true));
                if self.start_paused {
                    clock.pause().map_err(io::Error::other)?;
                }
                let handle = Handle {
                    inner: Inner::Current(shared),
                    blocking,
                    connections: ConnectionCounts::new(1),
                    clock,
                    domain: None,
                };
                Ok(Runtime::from_parts(handle, Vec::new()))
            }
            Flavor::MultiThread => self.build_multi(blocking),
        }
    }

    fn build_multi(&mut self, blocking: Arc<BlockingPool>) -> io::Result<Runtime> {
        // Calibrate the scheduler's clock here, once per process, rather
        // than on a worker's first poll.
        let _ = crate::clock::now_ns();
        let max_workers = fulcrum_dlb::MAX_PORTS - 1;
        let workers = match self.workers {
            Some(n) => n,
            // As tokio: one worker per CPU, here within the DLB domain's
            // port limit (a machine with more CPUs gets the maximum).
            None => {
                let cpus = thread::available_parallelism().map_or(1, |n| n.get());
                if cpus > max_workers {
                    tracing::info!(
                        cpus,
                        workers = max_workers,
                        "more CPUs than a DLB domain has worker ports; using the maximum"
                    );
                }
                cpus.min(max_workers)
            }
        };
        if workers == 0 || workers > max_workers {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("worker_threads({workers}): a runtime needs 1 to {max_workers} workers"),
            ));
        }
        let min_credits = workers + 1;
        let credits = match self.dlb_credits {
            Some(n) if (n as usize) < min_credits || n > fulcrum_dlb::MAX_CREDITS => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "dlb_credits({n}): a runtime with {workers} workers needs {min_credits} \
                         to {} credits (at least one per DLB port: the workers' and the injector's)",
                        fulcrum_dlb::MAX_CREDITS
                    ),
                ));
            }
            Some(n) => n,
            None => 1024.max(workers as u32 * 64),
        };
        let cq_depth = match self.dlb_cq_depth {
            Some(n)
                if !n.is_power_of_two()
                    || !(fulcrum_dlb::MIN_CQ_DEPTH..=fulcrum_dlb::MAX_CQ_DEPTH).contains(&n) =>
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "dlb_cq_depth({n}): the CQ depth must be a power of two from {} to {}",
                        fulcrum_dlb::MIN_CQ_DEPTH,
                        fulcrum_dlb::MAX_CQ_DEPTH
                    ),
                ));
            }
            Some(n) => n,
            None => fulcrum_dlb::DEFAULT_CQ_DEPTH,
        };
        // One port per worker, linked to queue 0, plus the injector ports
        // for remote threads (linked to nothing): as many as the limits on
        // ports and credits (one per port) allow, at least one.
        let remote = multi::remote_ports(workers).min(credits as usize - workers);
        let ports = workers + remote;
        let mut builder = Domain::builder()
            .backend(self.backend)
            .ports(ports)
            .cq_depth(cq_depth)
            .credits(credits);
        for w in 0..workers {
            builder = builder.link(w, 0, 0);
        }
        let domain = builder.build()?;
        let backend = domain.backend();
        let metrics_domain = domain.clone();
        let threads = multi::ThreadConfig {
            stealing: self.scheduler == Scheduler::WorkStealing,
            rescue_interval: self.rescue_interval,
            tuning: self.tuning,
            lifo_slot: self.lifo_slot,
            name: std::mem::replace(&mut self.thread_name, Box::new(String::new)),
            on_start: self.on_start.take(),
            on_stop: self.on_stop.take(),
        };
        let (shared, parts) = multi::build(domain, workers, remote, threads)?;
        let handle = Handle {
            inner: Inner::Multi(shared.clone()),
            blocking,
            connections: ConnectionCounts::new(workers),
            clock: std::sync::Arc::new(Clock::new(false)),
            domain: Some(metrics_domain),
        };
        let workers = match multi::start(&shared, &handle, parts) {
            Ok(w) => w,
            Err(e) => {
                shared.begin_shutdown();
                return Err(e);
            }
        };
        tracing::debug!(workers = workers.len(), %backend, "runtime started");
        Ok(Runtime::from_parts(handle, workers))
    }
}
