//! The list of a runtime's live tasks, so that shutdown can cancel every
//! task that is still alive (including tasks that wait for a wake-up and sit
//! in no queue).
//!
//! Sharded by task id. Each shard is a slab: a vector of slots and a stack
//! of free slots, and each task records its slot in its header, so a spawn
//! and a completion each take one uncontended shard lock and touch one
//! slot: no hashing, and no reallocation once the slab has grown to the
//! shard's peak. Never on the DLB handoff path.

use std::sync::atomic::Ordering::{Acquire, Release};

use crate::loom::{lock, AtomicBool, Mutex};
use crate::task::{Schedule, Task};

const SHARDS: usize = 16;

/// Tasks cancelled per lock acquisition at shutdown.
const SHUTDOWN_BATCH: usize = 64;

/// One shard's tasks: `slots[i]` is `None` exactly when `i` is in `free`.
struct Slab<S: 'static> {
    slots: Vec<Option<Task<S>>>,
    free: Vec<usize>,
    /// Tasks ever inserted in this shard (under its lock, so no atomic on
    /// the spawn path; summed by [`OwnedTasks::spawned`]).
    inserted: u64,
}

impl<S: 'static> Slab<S> {
    const fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            inserted: 0,
        }
    }

    fn insert(&mut self, task: Task<S>) {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        task.set_owned_slot(slot);
        self.slots[slot] = Some(task);
        self.inserted += 1;
    }

    /// Tasks in this shard.
    fn live(&self) -> u64 {
        (self.slots.len() - self.free.len()) as u64
    }

    /// Takes `task`'s entry out, if this shard holds it (a task removed
    /// twice, or never inserted, is not confused with the slot's next
    /// tenant).
    fn remove(&mut self, task: &Task<S>) -> Option<Task<S>> {
        let slot = task.owned_slot();
        let entry = self.slots.get_mut(slot)?;
        if !entry.as_ref().is_some_and(|t| t.ptr_eq(task)) {
            return None;
        }
        let removed = entry.take()?;
        removed.set_owned_slot(usize::MAX);
        self.free.push(slot);
        Some(removed)
    }

    /// Takes up to `n` tasks out.
    fn drain(&mut self, n: usize) -> Vec<Task<S>> {
        let mut out = Vec::new();
        for (slot, entry) in self.slots.iter_mut().enumerate() {
            if out.len() == n {
                break;
            }
            if let Some(task) = entry.take() {
                task.set_owned_slot(usize::MAX);
                self.free.push(slot);
                out.push(task);
            }
        }
        out
    }
}

/// A shard on cache lines of its own: workers that lock neighbouring
/// shards (consecutive task ids) do not contend for one line.
#[repr(align(128))]
struct Shard<S: 'static>(Mutex<Slab<S>>);

pub(crate) struct OwnedTasks<S: 'static> {
    shards: Box<[Shard<S>]>,
    closed: AtomicBool,
}

impl<S: Schedule> OwnedTasks<S> {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Shard(Mutex::new(Slab::new())))
                .collect(),
            closed: AtomicBool::new(false),
        }
    }

    fn shard(&self, task: &Task<S>) -> &Mutex<Slab<S>> {
        &self.shards[(task.id().as_u64() as usize) % SHARDS].0
    }

    /// Adds a new task. If the list is closed (shutdown), the task is
    /// cancelled at once instead, and `false` is returned: the caller must
    /// not schedule it.
    pub(crate) fn bind(&self, task: Task<S>) -> bool {
        let mut shard = lock(self.shard(&task));
        // Checked under the shard lock, which `close_and_shutdown` takes
        // after setting `closed`: no task slips past it.
        if self.closed.load(Acquire) {
            drop(shard);
            task.shutdown();
            return false;
        }
        shard.insert(task);
        true
    }

    /// Removes a completed task; returns the list's reference.
    pub(crate) fn remove(&self, task: &Task<S>) -> Option<Task<S>> {
        lock(self.shard(task)).remove(task)
    }

    /// Tasks ever added (takes every shard's lock in turn: for metrics).
    pub(crate) fn spawned(&self) -> u64 {
        self.shards.iter().map(|s| lock(&s.0).inserted).sum()
    }

    /// Tasks spawned and not completed (takes every shard's lock in turn,
    /// so that spawns and completions update no counter shared by all
    /// workers).
    pub(crate) fn alive(&self) -> u64 {
        self.shards.iter().map(|s| lock(&s.0).live()).sum()
    }

    /// Closes the list and cancels every task in it (dropping the futures of
    /// tasks that no worker is running, on this thread).
    pub(crate) fn close_and_shutdown(&self) {
        self.closed.store(true, Release);
        for shard in self.shards.iter() {
            loop {
                // Take a batch out of the lock: cancelling runs user drop
                // code, which may spawn (and so lock a shard).
                let batch = lock(&shard.0).drain(SHUTDOWN_BATCH);
                if batch.is_empty() {
                    break;
                }
                for task in batch {
                    task.shutdown();
                }
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! A spawn binding its task racing shutdown closing the list: the task
    //! is cancelled exactly once either way (by `bind`, which finds the list
    //! closed, or by `close_and_shutdown`), and nothing stays alive.

    use std::sync::atomic::Ordering::SeqCst;

    use ::loom::sync::atomic::AtomicUsize;
    use ::loom::sync::Arc;
    use ::loom::thread;

    use super::OwnedTasks;
    use crate::task::{new_task, Notified, Schedule, Task};

    #[derive(Clone)]
    struct ListSched(Arc<OwnedTasks<ListSched>>);

    impl Schedule for ListSched {
        fn schedule(&self, task: Notified<Self>) {
            // A wake-up after shutdown: the list cancels the task.
            drop(task);
        }

        fn release(&self, task: &Task<Self>) -> Option<Task<Self>> {
            self.0.remove(task)
        }
    }

    /// Counts drops of the future it is part of.
    struct Dropped(Arc<AtomicUsize>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn bind_racing_close_cancels_the_task_once() {
        ::loom::model(|| {
            let owned = Arc::new(OwnedTasks::new());
            let drops = Arc::new(AtomicUsize::new(0));
            let guard = Dropped(drops.clone());
            let spawner = {
                let owned = owned.clone();
                thread::spawn(move || {
                    let fut = async move {
                        let _guard = guard;
                        std::future::pending::<()>().await;
                    };
                    let (task, notified, join) = new_task(fut, ListSched(owned.clone()));
                    // A spawn: bind, then (if bound) the first permission
                    // would be queued; here it is dropped, as if the task
                    // waited for a wake-up that never comes.
                    owned.bind(task);
                    drop(notified);
                    drop(join);
                })
            };
            owned.close_and_shutdown();
            spawner.join().unwrap();
            assert_eq!(
                drops.load(SeqCst),
                1,
                "the future was dropped {} times",
                drops.load(SeqCst)
            );
            assert_eq!(owned.alive(), 0);
        });
    }
}
