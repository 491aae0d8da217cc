//! Per-worker counters, exposed by [`Handle::metrics`](crate::Handle::metrics).
//!
//! Two types: the schedulers build a [`SchedulerReport`] (under the name
//! `RuntimeMetrics` inside the crate), and [`Handle::metrics`] wraps it in
//! the public [`live::RuntimeMetrics`], which adds tokio's methods over the
//! live counters.
//!
//! [`Handle::metrics`]: crate::Handle::metrics

pub(crate) mod live;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::loom::AtomicU64;

/// A snapshot of one worker's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerMetrics {
    /// Task polls run by this worker.
    pub tasks_polled: u64,
    /// Tasks waiting in this worker's local queue (including tasks received
    /// from the DLB queue and not yet run).
    pub local_queue_depth: u64,
    /// Tasks this worker handed to the DLB queue.
    pub dlb_sent: u64,
    /// Tasks this worker received from the DLB queue.
    pub dlb_received: u64,
    /// Handoffs that fell back to running locally because a DLB send came up
    /// short (no credits or full CQs).
    pub fallbacks: u64,
    /// Times this worker went to sleep.
    pub parks: u64,
    /// Tasks this worker stole (work-stealing mode only; always 0 in DLB
    /// mode, where nothing is stolen).
    pub steals: u64,
    /// I/O resources registered with this worker's reactor.
    pub io_resources: u64,
    /// Ready I/O events this worker dispatched for a peer stuck in a long
    /// poll (the rescue of a busy worker's ready I/O).
    pub io_rescued: u64,
    /// I/O registrations that moved into this worker's reactor from
    /// another runtime thread's, because the task using them now runs here
    /// (see [`io`](crate::io)).
    pub io_moved_in: u64,
    /// Events scheduled to this worker's DLB port and not yet released (in
    /// its CQ, or received and not yet run), as the port last published.
    pub dlb_in_flight: u64,
    /// Connections open on this worker, as counted by the code serving
    /// them through [`Handle::track_connection`](crate::Handle::track_connection)
    /// (`fulcrum-net`'s `Server` does).
    pub open_connections: u64,
    /// Time this worker spent polling tasks (from the start of each poll
    /// to its return), since it started.
    pub busy_duration: Duration,
}

/// What a scheduler reports to [`Handle::metrics`](crate::Handle::metrics);
/// the schedulers build it as `RuntimeMetrics`.
#[derive(Clone, Debug, Default)]
pub(crate) struct SchedulerReport {
    /// One entry per worker thread (one for the current-thread scheduler).
    pub(crate) workers: Vec<WorkerMetrics>,
    /// See [`live::RuntimeMetrics::remote_fallbacks`].
    pub(crate) remote_fallbacks: u64,
    /// Tasks alive (spawned and not yet completed).
    pub(crate) alive_tasks: u64,
}

/// The name the schedulers build their report under.
pub(crate) type RuntimeMetrics = SchedulerReport;

/// The live counters of one worker. Written by that worker only (plain
/// load + store), read by anyone. Aligned to its own cache lines (128
/// bytes: a pair, for the adjacent-line prefetcher), so that workers
/// counting their polls do not invalidate each other's lines: unaligned,
/// two workers' counters shared a line, and that store was a quarter of a
/// yield-loop worker's samples.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct WorkerCounters {
    pub(crate) tasks_polled: AtomicU64,
    pub(crate) local_queue_depth: AtomicU64,
    pub(crate) dlb_sent: AtomicU64,
    pub(crate) dlb_received: AtomicU64,
    pub(crate) fallbacks: AtomicU64,
    pub(crate) parks: AtomicU64,
    pub(crate) steals: AtomicU64,
    pub(crate) io_resources: AtomicU64,
    pub(crate) io_rescued: AtomicU64,
    /// Nanoseconds this worker spent polling tasks.
    pub(crate) busy_ns: AtomicU64,
}

impl WorkerCounters {
    /// Adds `n`; only the owning worker calls this.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Adds `busy` to the busy time; only the owning worker calls this.
    pub(crate) fn add_busy(&self, busy: Duration) {
        Self::add(
            &self.busy_ns,
            u64::try_from(busy.as_nanos()).unwrap_or(u64::MAX),
        );
    }

    pub(crate) fn snapshot(&self) -> WorkerMetrics {
        WorkerMetrics {
            tasks_polled: self.tasks_polled.load(Relaxed),
            local_queue_depth: self.local_queue_depth.load(Relaxed),
            dlb_sent: self.dlb_sent.load(Relaxed),
            dlb_received: self.dlb_received.load(Relaxed),
            fallbacks: self.fallbacks.load(Relaxed),
            parks: self.parks.load(Relaxed),
            steals: self.steals.load(Relaxed),
            io_resources: self.io_resources.load(Relaxed),
            io_rescued: self.io_rescued.load(Relaxed),
            io_moved_in: 0,
            dlb_in_flight: 0,
            open_connections: 0,
            busy_duration: Duration::from_nanos(self.busy_ns.load(Relaxed)),
        }
    }
}
