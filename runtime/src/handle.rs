//! [`Handle`]: a cheap, cloneable reference to a runtime, for spawning from
//! anywhere, and entering its context ([`EnterGuard`]).

use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use crate::blocking::BlockingPool;
use crate::connections::{ConnectionCounts, ConnectionGuard};
use crate::loom::Arc;
use crate::metrics::WorkerCounters;
use crate::scheduler::{current, multi};
use crate::task::JoinHandle;
use crate::time::Clock;

/// The scheduler behind a [`Handle`].
#[derive(Clone)]
pub(crate) enum Inner {
    Multi(Arc<multi::Shared>),
    Current(Arc<current::Shared>),
}

/// A cheap, cloneable reference to a runtime, for spawning from anywhere.
#[derive(Clone)]
pub struct Handle {
    pub(crate) inner: Inner,
    /// The runtime's blocking pool, shared by both flavours.
    pub(crate) blocking: Arc<BlockingPool>,
    /// Open connections per worker (see [`Handle::track_connection`]).
    pub(crate) connections: std::sync::Arc<ConnectionCounts>,
    /// The runtime's clock (pausable on the current-thread runtime).
    pub(crate) clock: std::sync::Arc<Clock>,
    /// The multi-thread runtime's DLB domain, read by the metrics.
    pub(crate) domain: Option<fulcrum_dlb::Domain>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Multi(s) => f
                .debug_struct("Handle")
                .field("flavor", &"multi_thread")
                .field("workers", &s.num_workers())
                .finish(),
            Inner::Current(_) => f
                .debug_struct("Handle")
                .field("flavor", &"current_thread")
                .finish(),
        }
    }
}

/// Returned by [`Handle::try_current`] outside a runtime.
#[derive(Debug)]
pub struct TryCurrentError(());

impl fmt::Display for TryCurrentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "there is no reactor running, must be called from the context of a Fulcrum runtime",
        )
    }
}

impl std::error::Error for TryCurrentError {}

impl Handle {
    /// The handle of the runtime the current thread runs in.
    ///
    /// # Panics
    /// Outside a runtime, with a message saying so.
    #[track_caller]
    pub fn current() -> Handle {
        match Self::try_current() {
            Ok(h) => h,
            Err(e) => panic!("{e}"),
        }
    }

    /// The handle of the runtime the current thread runs in, if any.
    pub fn try_current() -> Result<Handle, TryCurrentError> {
        crate::context::current().ok_or(TryCurrentError(()))
    }

    /// Spawns a task on this runtime; [`spawn`](crate::spawn) does the same
    /// on the current one, and its docs say where the task goes and what
    /// happens when a queue is full.
    ///
    /// Called from a thread that is not one of this runtime's workers, the
    /// task is handed off through the runtime's remote port (DLB scheduler),
    /// or pushed to the injector ([`Scheduler::WorkStealing`]). A remote
    /// handoff that finds the DLB credit pool empty puts the task on the
    /// overflow queue instead and wakes a worker to take it
    /// ([`RuntimeMetrics::remote_fallbacks`]); the overflow queue and the
    /// injector are unbounded, and hold only tasks that exist, each at most
    /// once.
    ///
    /// [`Scheduler::WorkStealing`]: crate::Scheduler::WorkStealing
    /// [`RuntimeMetrics::remote_fallbacks`]: crate::RuntimeMetrics::remote_fallbacks
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.inner {
            Inner::Multi(s) => s.spawn(future),
            Inner::Current(s) => s.spawn(future),
        }
    }

    /// Spawns a task through the DLB queue whatever the load, so that the
    /// arbiter picks its worker (connection handoff: `Balance::Dlb`). On the
    /// work-stealing and current-thread schedulers, a plain spawn.
    ///
    /// The task is sent as an unordered event: the arbiter gives it to the
    /// eligible worker with the least load; while every worker's consumer
    /// queue is full ([`Builder::dlb_cq_depth`]) it waits in the DLB queue,
    /// holding a credit, until one drains.
    ///
    /// # What if the queue is full?
    /// When the credit pool ([`Builder::dlb_credits`]) is empty the send
    /// comes up short and the task is kept, not dropped: spawned on a
    /// worker, it goes to the back of that worker's local queue and runs
    /// there ([`WorkerMetrics::fallbacks`]); spawned from another thread,
    /// it goes to the overflow queue, which every worker takes its share
    /// of, and a worker is woken
    /// ([`RuntimeMetrics::remote_fallbacks`]).
    ///
    /// [`Builder::dlb_cq_depth`]: crate::Builder::dlb_cq_depth
    /// [`Builder::dlb_credits`]: crate::Builder::dlb_credits
    /// [`WorkerMetrics::fallbacks`]: crate::WorkerMetrics::fallbacks
    /// [`RuntimeMetrics::remote_fallbacks`]: crate::RuntimeMetrics::remote_fallbacks
    ///
    /// ```
    /// use fulcrum_runtime::{Builder, Handle};
    ///
    /// let rt = Builder::new_multi_thread().worker_threads(2).build()?;
    /// let handle = rt.handle().clone();
    /// let worker = rt.block_on(async move {
    ///     // The arbiter places it on the least loaded worker.
    ///     handle
    ///         .spawn_balanced(async { Handle::current().current_worker() })
    ///         .await
    ///         .expect("the task panicked")
    /// });
    /// assert!(worker.is_some_and(|w| w < 2));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn_balanced<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.inner {
            Inner::Multi(s) => s.spawn_routed(future, multi::Route::Balanced),
            Inner::Current(s) => s.spawn(future),
        }
    }

    /// Spawns a task on worker `worker` (modulo the worker count) with a
    /// directed DLB event: its first poll runs there, so sockets it creates
    /// register there. On the work-stealing and current-thread schedulers,
    /// a plain spawn.
    ///
    /// If that worker's consumer queue is full ([`Builder::dlb_cq_depth`]),
    /// the event waits for it in the DLB queue, holding a credit: the task
    /// starts once that worker has taken the events ahead of it, however
    /// busy the other workers are.
    ///
    /// # What if the queue is full?
    /// When the credit pool ([`Builder::dlb_credits`]) is empty the send
    /// comes up short, and the task is not dropped but does not reach
    /// `worker` either: spawned on a worker, it goes to the back of the
    /// *calling* worker's local queue ([`WorkerMetrics::fallbacks`]);
    /// spawned from another thread, it goes to the overflow queue, where
    /// whichever worker takes it runs it
    /// ([`RuntimeMetrics::remote_fallbacks`]).
    ///
    /// [`Builder::dlb_cq_depth`]: crate::Builder::dlb_cq_depth
    /// [`Builder::dlb_credits`]: crate::Builder::dlb_credits
    /// [`WorkerMetrics::fallbacks`]: crate::WorkerMetrics::fallbacks
    /// [`RuntimeMetrics::remote_fallbacks`]: crate::RuntimeMetrics::remote_fallbacks
    ///
    /// ```
    /// use fulcrum_runtime::{Builder, Handle};
    ///
    /// let rt = Builder::new_multi_thread().worker_threads(2).build()?;
    /// let handle = rt.handle().clone();
    /// let ran_on = rt.block_on(async move {
    ///     // One task per worker, each started on its own (a per-worker
    ///     // listener, say).
    ///     let tasks: Vec<_> = (0..handle.num_workers())
    ///         .map(|w| handle.spawn_on_worker(w, async { Handle::current().current_worker() }))
    ///         .collect();
    ///     let mut ran_on = Vec::new();
    ///     for task in tasks {
    ///         ran_on.push(task.await.expect("the task panicked"));
    ///     }
    ///     ran_on
    /// });
    /// assert_eq!(ran_on, [Some(0), Some(1)]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn_on_worker<F>(&self, worker: usize, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.inner {
            Inner::Multi(s) => s.spawn_routed(future, multi::Route::Worker(worker)),
            Inner::Current(s) => s.spawn(future),
        }
    }

    /// The index of the worker running the calling code, if it is a worker
    /// of this runtime (`Some(0)` on a current-thread runtime's thread
    /// inside `block_on`).
    pub fn current_worker(&self) -> Option<usize> {
        match &self.inner {
            Inner::Multi(s) => s.current_worker(),
            Inner::Current(_) => Some(0),
        }
    }

    /// The DLB backend that carries work between the workers: the software
    /// queue or a hardware device. `None` on a current-thread runtime,
    /// which has no queue.
    pub fn dlb_backend(&self) -> Option<fulcrum_dlb::BackendKind> {
        match &self.inner {
            Inner::Multi(s) => Some(s.dlb_backend()),
            Inner::Current(_) => None,
        }
    }

    /// Number of worker threads (1 for the current-thread runtime).
    pub fn num_workers(&self) -> usize {
        match &self.inner {
            Inner::Multi(s) => s.num_workers(),
            Inner::Current(_) => 1,
        }
    }

    /// Runs `f` on this runtime's blocking pool; see
    /// [`spawn_blocking`](crate::spawn_blocking), whose docs also say what
    /// happens when every pool thread is busy.
    pub fn spawn_blocking<F, R>(&self, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        if !self.clock.is_pausable() {
            return self.blocking.spawn(self, f);
        }
        // A paused clock does not auto-advance while the call is in
        // flight (it may be the I/O the runtime is waiting for); the guard
        // goes with the closure, so it is released when the closure has run
        // or is dropped unrun.
        let guard = self.clock.inhibit_auto_advance();
        self.blocking.spawn(self, move || {
            let _guard = guard;
            f()
        })
    }

    /// The runtime's metrics: a snapshot of every worker's counters in the
    /// public fields, and tokio's methods (`num_workers`,
    /// `num_alive_tasks`, `worker_poll_count`, ...), which read the live
    /// counters.
    pub fn metrics(&self) -> crate::RuntimeMetrics {
        let mut m = match &self.inner {
            Inner::Multi(s) => s.metrics(),
            Inner::Current(s) => s.metrics(),
        };
        self.connections.report(&mut m.workers);
        crate::RuntimeMetrics::new(m, self.clone())
    }

    /// Worker `worker`'s live counters, if there is such a worker.
    pub(crate) fn worker_counters(&self, worker: usize) -> Option<&WorkerCounters> {
        match &self.inner {
            Inner::Multi(s) => s.counters.get(worker),
            Inner::Current(s) => (worker == 0).then_some(&s.counters),
        }
    }

    /// Tasks spawned and not completed, now.
    pub(crate) fn alive_tasks(&self) -> u64 {
        match &self.inner {
            Inner::Multi(s) => s.owned.alive(),
            Inner::Current(s) => s.owned.alive(),
        }
    }

    /// Tasks spawned so far.
    pub(crate) fn spawned_tasks(&self) -> u64 {
        match &self.inner {
            Inner::Multi(s) => s.owned.spawned(),
            Inner::Current(s) => s.owned.spawned(),
        }
    }

    /// Tasks waiting in the DLB queue for a worker: sent and not yet
    /// scheduled to any worker's CQ (each holds one credit of the pool).
    /// The software backend reports it; the hardware one cannot, and the
    /// current-thread runtime has no DLB queue: 0 there.
    pub(crate) fn dlb_queue_depth(&self) -> u64 {
        self.domain
            .as_ref()
            .and_then(|d| Some(d.credits().saturating_sub(d.credits_available()?)))
            .map_or(0, u64::from)
    }

    /// Worker `worker`'s local queue, now (the current-thread runtime's
    /// one queue for worker 0).
    pub(crate) fn local_queue_depth(&self, worker: usize) -> Option<u64> {
        match &self.inner {
            Inner::Multi(s) => s
                .counters
                .get(worker)
                .map(|c| c.local_queue_depth.load(Relaxed)),
            Inner::Current(s) => (worker == 0).then(|| s.queue_len() as u64),
        }
    }

    /// The runtime's clock.
    pub(crate) fn clock(&self) -> &std::sync::Arc<Clock> {
        &self.clock
    }

    /// Runs `future` to completion on the calling thread, which must not be
    /// a runtime thread, and returns its output; tokio's
    /// `Handle::block_on`. The future need not be `Send`.
    ///
    /// The future is polled on this thread, inside this runtime's context
    /// (so [`spawn`](crate::spawn), timers and sockets work in it: the
    /// thread gets a reactor and timers of its own while it waits, as in
    /// [`Runtime::block_on`](crate::Runtime::block_on) on a multi-thread
    /// runtime). The tasks it spawns run on the runtime's workers. On a
    /// current-thread runtime they run only while some thread is inside
    /// [`Runtime::block_on`](crate::Runtime::block_on), as in tokio; and a
    /// paused clock is auto-advanced only by that thread.
    ///
    /// A common use: a [`spawn_blocking`](crate::spawn_blocking) closure
    /// that needs to wait for async code.
    ///
    /// # Panics
    /// On a thread that already runs a runtime (a worker, or inside
    /// `block_on`), as tokio: blocking it would stall every task queued on
    /// it.
    #[track_caller]
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let _tokio: crate::tokio_compat::ThreadGuard = crate::tokio_compat::enter();
        let _context = crate::context::enter_running(self.clone());
        block_on_here(self.clock.clone(), future)
    }

    /// Counts a connection as open on the calling worker (worker 0 off the
    /// workers) until the guard is dropped; the count shows in
    /// [`WorkerMetrics::open_connections`](crate::WorkerMetrics). The
    /// runtime knows nothing about sockets: the code that serves
    /// connections (`fulcrum-net`'s `Server`, `fulcrum::http::serve`) keeps
    /// this count, and the runtime only stores it (see
    /// [`ConnectionGuard`]). It is a counter, not a queue: it never waits
    /// and never refuses a connection.
    pub fn track_connection(&self) -> ConnectionGuard {
        self.connections.track(self.current_worker().unwrap_or(0))
    }

    /// Whether this is a current-thread runtime.
    pub fn is_current_thread(&self) -> bool {
        matches!(self.inner, Inner::Current(_))
    }

    /// Makes this runtime current on this thread until the guard is dropped,
    /// so that [`spawn`](crate::spawn) works outside its workers.
    pub fn enter(&self) -> EnterGuard {
        EnterGuard {
            _guard: crate::context::enter(self.clone()),
        }
    }
}

/// Polls `future` on this thread until it completes, sleeping in a parker
/// of this thread's own between polls: timers and sockets polled by the
/// future live on this thread, served while it waits.
pub(crate) fn block_on_here<F: Future>(clock: std::sync::Arc<Clock>, future: F) -> F::Output {
    let mut parker = crate::park::Parker::new(clock, false);
    let waker = futures_task::waker(std::sync::Arc::new(parker.unparker()));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        parker.park();
    }
}

/// Returned by [`Handle::enter`].
pub struct EnterGuard {
    _guard: crate::context::EnterGuard,
}

impl fmt::Debug for EnterGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnterGuard")
    }
}
