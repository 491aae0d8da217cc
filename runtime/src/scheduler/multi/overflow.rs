//! The overflow queue: remote spawns whose handoff came up short (the DLB
//! credit pool was empty).
//!
//! # What if it is full?
//! It is an unbounded list, but of tasks that exist: each task is queued at
//! most once (its `NOTIFIED` bit), so its length is bounded by the number
//! of live tasks. Nothing is ever dropped from it except at shutdown, when
//! the tasks themselves are cancelled.
//!
//! Pushers wake a worker unconditionally (round robin, through its mio
//! `Waker`, an eventfd that stays readable until the worker reads it), and
//! every worker looks at the queue at its maintenance steps, when it runs
//! out of local work and before it sleeps (`SeqCst` length check after its
//! parked flag, see `crate::sleepers`), so a pushed task is never slept
//! through.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};

use super::TaskRef;
use crate::loom::{lock, AtomicUsize, Mutex};

/// Most tasks a worker takes from the overflow queue at once.
pub(crate) const BATCH: usize = 32;

pub(crate) struct Overflow {
    queue: Mutex<VecDeque<TaskRef>>,
    /// The queue's length, readable without the lock.
    len: AtomicUsize,
    /// Round-robin cursor of the workers to wake.
    next_wake: AtomicUsize,
}

impl Overflow {
    pub(crate) fn new() -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
            next_wake: AtomicUsize::new(0),
        }
    }

    pub(crate) fn push(&self, task: TaskRef) {
        lock(&self.queue).push_back(task);
        self.len.fetch_add(1, Release);
    }

    /// Wakes one worker (round robin) to take what was pushed.
    pub(crate) fn wake_one(&self, wakers: &[mio::Waker]) {
        let target = self.next_wake.fetch_add(1, Relaxed) % wakers.len();
        if let Err(e) = wakers[target].wake() {
            tracing::warn!("waking worker {target}: {e}");
        }
    }

    /// Whether anything waits (the sleeper's last check uses `SeqCst`).
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(SeqCst) == 0
    }

    /// A worker's share of the queue: up to [`BATCH`] tasks (the length
    /// divided by the workers, at least one), the first returned to run now
    /// and the rest pushed to `local`. One at a time, a burst of remote
    /// spawns past the credit pool drained at one task per maintenance
    /// interval per busy worker (tokio's `spawn_many_remote_busy1` took
    /// 6.6 s instead of 16 ms).
    pub(crate) fn take_share(
        &self,
        workers: usize,
        local: &mut VecDeque<TaskRef>,
    ) -> Option<TaskRef> {
        let len = self.len.load(Acquire);
        if len == 0 {
            return None;
        }
        let want = (len / workers.max(1)).clamp(1, BATCH);
        let mut queue = lock(&self.queue);
        let first = queue.pop_front()?;
        let mut taken = 1;
        while taken < want {
            let Some(t) = queue.pop_front() else { break };
            local.push_back(t);
            taken += 1;
        }
        self.len.fetch_sub(taken, AcqRel);
        Some(first)
    }

    /// Drops every queued permission (shutdown: the owned-task list cancels
    /// the tasks).
    pub(crate) fn clear(&self) {
        lock(&self.queue).clear();
        self.len.store(0, Release);
    }
}
