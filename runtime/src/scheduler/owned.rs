//! The list of a runtime's live tasks, so that shutdown can cancel every
//! task that is still alive (including tasks that wait for a wake-up and sit
//! in no queue).
//!
//! Sharded by task id; a spawn and a completion each take one shard lock,
//! never on the DLB handoff path.

use std::collections::HashMap;
use std::sync::atomic::Ordering::{AcqRel, Acquire};

use crate::loom::{lock, AtomicBool, AtomicU64, Mutex};
use crate::task::{Id, Schedule, Task};

const SHARDS: usize = 16;

type Shard<S> = Mutex<HashMap<Id, Task<S>>>;

pub(crate) struct OwnedTasks<S: 'static> {
    shards: Box<[Shard<S>]>,
    closed: AtomicBool,
    alive: AtomicU64,
}

impl<S: Schedule> OwnedTasks<S> {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            closed: AtomicBool::new(false),
            alive: AtomicU64::new(0),
        }
    }

    fn shard(&self, id: Id) -> &Shard<S> {
        &self.shards[(id.as_u64() as usize) % SHARDS]
    }

    /// Adds a new task. If the list is closed (shutdown), the task is
    /// cancelled at once instead, and `false` is returned: the caller must
    /// not schedule it.
    pub(crate) fn bind(&self, task: Task<S>) -> bool {
        let mut shard = lock(self.shard(task.id()));
        // Checked under the shard lock, which `close_and_shutdown` takes
        // after setting `closed`: no task slips past it.
        if self.closed.load(Acquire) {
            drop(shard);
            task.shutdown();
            return false;
        }
        self.alive.fetch_add(1, AcqRel);
        shard.insert(task.id(), task);
        true
    }

    /// Removes a completed task; returns the list's reference.
    pub(crate) fn remove(&self, task: &Task<S>) -> Option<Task<S>> {
        let removed = lock(self.shard(task.id())).remove(&task.id());
        if removed.is_some() {
            self.alive.fetch_sub(1, AcqRel);
        }
        removed
    }

    /// Tasks spawned and not completed.
    pub(crate) fn alive(&self) -> u64 {
        self.alive.load(Acquire)
    }

    /// Closes the list and cancels every task in it (dropping the futures of
    /// tasks that no worker is running, on this thread).
    pub(crate) fn close_and_shutdown(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        for shard in self.shards.iter() {
            loop {
                // Take a batch out of the lock: cancelling runs user drop
                // code, which may spawn (and so lock a shard).
                let batch: Vec<Task<S>> = {
                    let mut guard = lock(shard);
                    let ids: Vec<Id> = guard.keys().take(64).copied().collect();
                    ids.iter().filter_map(|id| guard.remove(id)).collect()
                };
                if batch.is_empty() {
                    break;
                }
                self.alive.fetch_sub(batch.len() as u64, AcqRel);
                for task in batch {
                    task.shutdown();
                }
            }
        }
    }
}
