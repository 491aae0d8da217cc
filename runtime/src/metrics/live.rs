//! The public [`RuntimeMetrics`]: a snapshot of the counters, plus tokio's
//! methods, which read them live.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::{SchedulerReport, WorkerCounters, WorkerMetrics};
use crate::Handle;

/// A runtime's metrics, from [`Handle::metrics`].
///
/// Two views of the same counters:
/// - **tokio's methods** ([`num_workers`](Self::num_workers),
///   [`num_alive_tasks`](Self::num_alive_tasks),
///   [`global_queue_depth`](Self::global_queue_depth),
///   [`worker_poll_count`](Self::worker_poll_count), ...) read the live
///   counters each time they are called, as tokio's do, so a
///   `RuntimeMetrics` kept by a monitoring loop stays current;
/// - **the public fields** ([`workers`](Self::workers), ...) are a snapshot
///   taken by [`Handle::metrics`], with Fulcrum's own counters (DLB
///   handoffs, fallbacks, rescued I/O, connections) besides.
///
/// The `worker_*` methods panic if `worker >= num_workers()`, as tokio's.
#[derive(Clone)]
#[non_exhaustive]
pub struct RuntimeMetrics {
    /// One entry per worker thread (one for the current-thread scheduler),
    /// as of [`Handle::metrics`].
    pub workers: Vec<WorkerMetrics>,
    /// Remote spawns and wakes (from threads that are not workers) that
    /// fell back to the shared overflow queue because a DLB send came up
    /// short, as of [`Handle::metrics`].
    pub remote_fallbacks: u64,
    /// Tasks alive (spawned and not yet completed), as of
    /// [`Handle::metrics`].
    pub alive_tasks: u64,
    handle: Handle,
}

impl fmt::Debug for RuntimeMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeMetrics")
            .field("workers", &self.workers)
            .field("remote_fallbacks", &self.remote_fallbacks)
            .field("alive_tasks", &self.alive_tasks)
            .finish_non_exhaustive()
    }
}

impl RuntimeMetrics {
    pub(crate) fn new(report: SchedulerReport, handle: Handle) -> Self {
        Self {
            workers: report.workers,
            remote_fallbacks: report.remote_fallbacks,
            alive_tasks: report.alive_tasks,
            handle,
        }
    }

    #[track_caller]
    fn counters(&self, worker: usize) -> &WorkerCounters {
        match self.handle.worker_counters(worker) {
            Some(c) => c,
            None => panic!(
                "worker {worker} does not exist: the runtime has {} workers",
                self.num_workers()
            ),
        }
    }

    /// Number of worker threads (1 for the current-thread runtime).
    pub fn num_workers(&self) -> usize {
        self.handle.num_workers()
    }

    /// Tasks alive now: spawned and not yet completed (blocking-pool calls
    /// are not counted, as in tokio).
    pub fn num_alive_tasks(&self) -> usize {
        usize::try_from(self.handle.alive_tasks()).unwrap_or(usize::MAX)
    }

    /// Tasks spawned on the runtime so far (blocking-pool calls not
    /// counted).
    pub fn spawned_tasks_count(&self) -> u64 {
        self.handle.spawned_tasks()
    }

    /// Tasks waiting now in the queue the workers share, not yet given to
    /// any worker: tokio's injection queue is Fulcrum's DLB queue, and this
    /// counts the tasks sent to it and not yet scheduled to a worker's
    /// consumer queue (reported by the software backend; the hardware
    /// backend cannot tell, and reads 0). The current-thread runtime has
    /// one queue, reported as worker 0's
    /// [local queue](Self::worker_local_queue_depth), and reads 0 here.
    pub fn global_queue_depth(&self) -> usize {
        usize::try_from(self.handle.dlb_queue_depth()).unwrap_or(usize::MAX)
    }

    /// Tasks queued on worker `worker` (including those the DLB queue has
    /// delivered to it and it has not run yet). A multi-thread worker
    /// publishes its depth at each maintenance tick and when it goes idle.
    ///
    /// # Panics
    /// If `worker >= num_workers()`.
    #[track_caller]
    pub fn worker_local_queue_depth(&self, worker: usize) -> usize {
        let _ = self.counters(worker);
        let depth = self.handle.local_queue_depth(worker).unwrap_or(0);
        usize::try_from(depth).unwrap_or(usize::MAX)
    }

    /// Times worker `worker` went to sleep for want of work.
    ///
    /// # Panics
    /// If `worker >= num_workers()`.
    #[track_caller]
    pub fn worker_park_count(&self, worker: usize) -> u64 {
        self.counters(worker).parks.load(Relaxed)
    }

    /// Times worker `worker` went to sleep plus times it woke up. A park
    /// is counted when the worker wakes from it, so this is always even:
    /// twice [`worker_park_count`](Self::worker_park_count).
    ///
    /// # Panics
    /// If `worker >= num_workers()`.
    #[track_caller]
    pub fn worker_park_unpark_count(&self, worker: usize) -> u64 {
        self.worker_park_count(worker).saturating_mul(2)
    }

    /// Task polls run by worker `worker`.
    ///
    /// # Panics
    /// If `worker >= num_workers()`.
    #[track_caller]
    pub fn worker_poll_count(&self, worker: usize) -> u64 {
        self.counters(worker).tasks_polled.load(Relaxed)
    }

    /// Tasks worker `worker` stole from its peers (work-stealing scheduler;
    /// always 0 with the DLB scheduler, where nothing is stolen).
    ///
    /// # Panics
    /// If `worker >= num_workers()`.
    #[track_caller]
    pub fn worker_steal_count(&self, worker: usize) -> u64 {
        self.counters(worker).steals.load(Relaxed)
    }

    /// Time worker `worker` has spent busy: on a multi-thread runtime, in
    /// task polls (from the start of each to its return); on the
    /// current-thread runtime, out of its sleeps, up to its last sleep.
    ///
    /// # Panics
    /// If `worker >= num_workers()`.
    #[track_caller]
    pub fn worker_total_busy_duration(&self, worker: usize) -> Duration {
        Duration::from_nanos(self.counters(worker).busy_ns.load(Relaxed))
    }

    /// Task polls summed over the workers, as of [`Handle::metrics`].
    pub fn total_tasks_polled(&self) -> u64 {
        self.workers.iter().map(|w| w.tasks_polled).sum()
    }
}
