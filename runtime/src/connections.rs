//! Per-worker counts of open connections, shown in
//! [`WorkerMetrics::open_connections`](crate::WorkerMetrics::open_connections).
//!
//! The runtime serves no connections: it knows nothing about sockets beyond
//! its reactors' fd registrations. The code that accepts and serves them
//! (`fulcrum-net`'s `Server` and `fulcrum::http::serve`) counts each
//! connection on the worker its task starts on, through
//! [`Handle::track_connection`](crate::Handle::track_connection), for as
//! long as it is open. The runtime only stores the counters, one per worker
//! (one for the current-thread runtime), so that
//! [`Handle::metrics`](crate::Handle::metrics) can report them next to the
//! scheduler's own.
//!
//! Nothing is queued here: tracking a connection adds one to a counter and
//! dropping its [`ConnectionGuard`] takes it off again; it never waits and
//! is never refused.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::WorkerMetrics;

/// Open connections per worker, kept by whoever serves connections.
#[derive(Debug)]
pub(crate) struct ConnectionCounts(Box<[AtomicU64]>);

impl ConnectionCounts {
    /// Counters for `workers` workers (at least one).
    pub(crate) fn new(workers: usize) -> Arc<Self> {
        Arc::new(Self(
            (0..workers.max(1)).map(|_| AtomicU64::new(0)).collect(),
        ))
    }

    /// Counts a connection as open on `worker` (modulo the worker count)
    /// until the guard is dropped.
    pub(crate) fn track(self: &Arc<Self>, worker: usize) -> ConnectionGuard {
        let worker = worker % self.0.len();
        self.0[worker].fetch_add(1, Relaxed);
        ConnectionGuard {
            counts: self.clone(),
            worker,
        }
    }

    /// Writes each worker's count into its metrics.
    pub(crate) fn report(&self, workers: &mut [WorkerMetrics]) {
        for (w, c) in workers.iter_mut().zip(self.0.iter()) {
            w.open_connections = c.load(Relaxed);
        }
    }
}

/// Counts a connection as open on one worker until dropped; returned by
/// [`Handle::track_connection`](crate::Handle::track_connection).
#[derive(Debug)]
#[must_use = "the connection counts as open only while the guard lives"]
pub struct ConnectionGuard {
    counts: Arc<ConnectionCounts>,
    worker: usize,
}

impl ConnectionGuard {
    /// The worker the connection is counted on.
    pub fn worker(&self) -> usize {
        self.worker
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.counts.0[self.worker].fetch_sub(1, Relaxed);
    }
}
