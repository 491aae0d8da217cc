//! [`JoinSet`]: a collection of spawned tasks, awaited in the order they
//! complete.
//!
//! # How `join_next` finds the finished task
//! Polling every handle on every wake-up would make draining a set of `n`
//! tasks cost O(n²) handle polls. Instead each member is polled only when
//! it may have finished:
//! - the members live in a [`Slab`], keyed by index;
//! - each member has its own waker, an [`EntryWaker`] that knows the
//!   member's slab index. That waker, not the caller's, is the one
//!   registered in the member's `JoinHandle`, so a task's completion wakes
//!   exactly its own entry;
//! - waking an entry pushes its index onto the set's *ready list* (a
//!   `Mutex<VecDeque>` shared by the entry wakers) and wakes the task that
//!   awaits `join_next`, whose waker the ready list keeps;
//! - `join_next` pops indices from the ready list and polls only those
//!   handles. A new member starts on the ready list (it was never polled, so
//!   no waker of ours is registered yet).
//!
//! So draining `n` tasks takes about `2n` handle polls (one to register the
//! waker, one to take the output), whatever the completion order.
//!
//! A `queued` flag per entry keeps an entry on the ready list at most once.
//! Each entry also carries a serial number, checked when its index is
//! popped: a wake from a removed member whose slab slot has been reused
//! costs one extra poll at most, never a wrong result.

use std::collections::VecDeque;
use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::AcqRel;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures_task::ArcWake;
use slab::Slab;

use super::{AbortHandle, Id, JoinError, JoinHandle};
use crate::loom::lock;
use crate::Handle;

/// A set of tasks spawned on a runtime, awaited in the order they complete.
///
/// With tokio's API and semantics: [`spawn`](Self::spawn) adds a task,
/// [`join_next`](Self::join_next) waits for whichever task finishes first
/// and returns its output (or the [`JoinError`] if it panicked or was
/// aborted), and `None` once the set is empty. Dropping the set aborts every
/// task still in it.
///
/// Waiting costs O(1) per completed task: each member wakes only its own
/// entry (see the module source for the design).
///
/// ```
/// use std::time::Duration;
/// use fulcrum_runtime::{time::sleep, JoinSet};
///
/// let rt = fulcrum_runtime::Runtime::new()?;
/// let order = rt.block_on(async {
///     let mut set = JoinSet::new();
///     for ms in [30u64, 10, 20] {
///         set.spawn(async move {
///             sleep(Duration::from_millis(ms)).await;
///             ms
///         });
///     }
///     let mut order = Vec::new();
///     while let Some(res) = set.join_next().await {
///         order.push(res.expect("the task panicked"));
///     }
///     order
/// });
/// assert_eq!(order, [10, 20, 30]);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct JoinSet<T> {
    entries: Slab<Entry<T>>,
    ready: Arc<ReadyList>,
    /// Serial number of the next entry.
    next_serial: u64,
    /// Handle polls made by `join_next` and friends (for the tests that
    /// check it stays O(1) per task).
    handle_polls: u64,
}

struct Entry<T> {
    handle: JoinHandle<T>,
    /// This entry's waker (an `EntryWaker`); always the same `Waker`, so the
    /// `JoinHandle` keeps its registration between polls.
    waker: Waker,
    /// The same `EntryWaker`, to clear its `queued` flag.
    state: Arc<EntryWaker>,
}

/// The indices of entries that may be ready, and the waker of the task
/// awaiting `join_next`.
#[derive(Default)]
struct ReadyList {
    inner: Mutex<ReadyInner>,
}

#[derive(Default)]
struct ReadyInner {
    /// `(slab index, serial)` of entries to poll.
    queue: VecDeque<(usize, u64)>,
    /// The task awaiting `join_next`, woken (and forgotten) on the first
    /// push after it registered.
    waiter: Option<Waker>,
}

/// One entry's waker: puts the entry on the ready list.
struct EntryWaker {
    ready: Arc<ReadyList>,
    index: usize,
    serial: u64,
    /// On the ready list (or about to be polled from it).
    queued: AtomicBool,
}

impl ArcWake for EntryWaker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        // AcqRel: pairs with the swap in `poll_entries`, so that the poll
        // that follows a lost race sees what happened before this wake.
        if arc_self.queued.swap(true, AcqRel) {
            return;
        }
        let waiter = {
            let mut inner = lock(&arc_self.ready.inner);
            inner.queue.push_back((arc_self.index, arc_self.serial));
            inner.waiter.take()
        };
        if let Some(w) = waiter {
            w.wake();
        }
    }
}

impl<T> JoinSet<T> {
    /// An empty set.
    pub fn new() -> Self {
        JoinSet {
            entries: Slab::new(),
            ready: Arc::new(ReadyList::default()),
            next_serial: 0,
            handle_polls: 0,
        }
    }

    /// Number of tasks in the set (including finished tasks whose output has
    /// not been taken).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set holds no task.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds a spawned task; returns an [`AbortHandle`] for it.
    fn insert(&mut self, handle: JoinHandle<T>) -> AbortHandle {
        let abort = handle.abort_handle();
        let slot = self.entries.vacant_entry();
        let serial = self.next_serial;
        self.next_serial += 1;
        let state = Arc::new(EntryWaker {
            ready: self.ready.clone(),
            index: slot.key(),
            serial,
            // Queued below: it has never been polled.
            queued: AtomicBool::new(true),
        });
        lock(&self.ready.inner)
            .queue
            .push_back((slot.key(), serial));
        slot.insert(Entry {
            handle,
            waker: futures_task::waker(state.clone()),
            state,
        });
        abort
    }

    /// Spawns `task` on the current runtime and adds it to the set. Where
    /// the task goes, and what happens when a queue is full, is as for
    /// [`spawn`](crate::spawn).
    ///
    /// # Panics
    /// Outside a runtime.
    #[track_caller]
    pub fn spawn<F>(&mut self, task: F) -> AbortHandle
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.insert(crate::spawn(task))
    }

    /// Spawns `task` on the runtime of `handle` and adds it to the set.
    pub fn spawn_on<F>(&mut self, task: F, handle: &Handle) -> AbortHandle
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.insert(handle.spawn(task))
    }

    /// Runs `f` on the current runtime's blocking pool (see
    /// [`spawn_blocking`](crate::spawn_blocking)) and adds it to the set.
    ///
    /// # Panics
    /// Outside a runtime.
    #[track_caller]
    pub fn spawn_blocking<F>(&mut self, f: F) -> AbortHandle
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.insert(crate::spawn_blocking(f))
    }

    /// Runs `f` on the blocking pool of `handle`'s runtime and adds it to
    /// the set.
    pub fn spawn_blocking_on<F>(&mut self, f: F, handle: &Handle) -> AbortHandle
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.insert(handle.spawn_blocking(f))
    }

    /// Waits for any task of the set to complete and returns its output, or
    /// `None` if the set is empty.
    ///
    /// Cancel safe: if the future is dropped before it completes, no output
    /// is lost; the task stays in the set.
    pub async fn join_next(&mut self) -> Option<Result<T, JoinError>> {
        poll_fn(|cx| self.poll_join_next(cx)).await
    }

    /// As [`join_next`](Self::join_next), with the id of the task that
    /// completed.
    pub async fn join_next_with_id(&mut self) -> Option<Result<(Id, T), JoinError>> {
        poll_fn(|cx| self.poll_join_next_with_id(cx)).await
    }

    /// Takes the output of a task that has completed, without waiting:
    /// `None` if no task has completed (or the set is empty).
    pub fn try_join_next(&mut self) -> Option<Result<T, JoinError>> {
        self.try_join_next_with_id().map(|r| r.map(|(_, t)| t))
    }

    /// As [`try_join_next`](Self::try_join_next), with the id of the task.
    pub fn try_join_next_with_id(&mut self) -> Option<Result<(Id, T), JoinError>> {
        match self.poll_entries(None) {
            Poll::Ready(out) => out,
            Poll::Pending => None,
        }
    }

    /// Polls for the next task to complete: `Ready(Some(output))`,
    /// `Ready(None)` if the set is empty, or `Pending` (and `cx` is woken
    /// when a task completes).
    ///
    /// Only the tasks that completed since the last call are polled, not the
    /// whole set.
    pub fn poll_join_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, JoinError>>> {
        self.poll_join_next_with_id(cx)
            .map(|out| out.map(|r| r.map(|(_, t)| t)))
    }

    /// As [`poll_join_next`](Self::poll_join_next), with the id of the task.
    pub fn poll_join_next_with_id(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<(Id, T), JoinError>>> {
        self.poll_entries(Some(cx.waker()))
    }

    /// Polls the entries on the ready list until one has completed. With a
    /// `waiter`, registers it first, so that any entry queued after this
    /// call wakes it.
    fn poll_entries(&mut self, waiter: Option<&Waker>) -> Poll<Option<Result<(Id, T), JoinError>>> {
        if self.entries.is_empty() {
            return Poll::Ready(None);
        }
        let mut budget = {
            let mut inner = lock(&self.ready.inner);
            if let Some(w) = waiter {
                match &inner.waiter {
                    Some(old) if old.will_wake(w) => {}
                    _ => inner.waiter = Some(w.clone()),
                }
            }
            // Entries queued from now on wake the waiter; these are ours to
            // poll. Bounding the loop by them keeps one call short even if
            // entries keep being woken.
            inner.queue.len()
        };
        while budget > 0 {
            budget -= 1;
            let Some((index, serial)) = lock(&self.ready.inner).queue.pop_front() else {
                break;
            };
            let Some(entry) = self.entries.get_mut(index) else {
                continue; // a wake from a removed entry
            };
            if entry.state.serial != serial {
                continue; // the slot was reused
            }
            // Clear the flag before polling: a completion from now on
            // queues the entry again.
            entry.state.queued.swap(false, AcqRel);
            let mut ecx = Context::from_waker(&entry.waker);
            self.handle_polls += 1;
            if let Poll::Ready(out) = Pin::new(&mut entry.handle).poll(&mut ecx) {
                let id = entry.handle.id();
                drop(self.entries.remove(index));
                if self.entries.is_empty() {
                    // Nothing left to wait for; stale indices are harmless
                    // but pointless.
                    lock(&self.ready.inner).queue.clear();
                }
                return Poll::Ready(Some(out.map(|t| (id, t))));
            }
        }
        Poll::Pending
    }

    /// Waits for every task and returns their outputs, in the order they
    /// completed.
    ///
    /// # Panics
    /// If a task panicked, this panics with the same payload
    /// ([`resume_unwind`](std::panic::resume_unwind)); if a task was
    /// aborted, it panics with the [`JoinError`]. Either way the remaining
    /// tasks are aborted (the set is dropped). Use
    /// [`join_next`](Self::join_next) in a loop to handle errors otherwise.
    pub async fn join_all(mut self) -> Vec<T> {
        let mut output = Vec::with_capacity(self.len());
        while let Some(res) = self.join_next().await {
            match res {
                Ok(t) => output.push(t),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("{e}"),
            }
        }
        output
    }

    /// Aborts every task in the set. They stay in it: `join_next` then
    /// returns each one's cancellation (or its output, for tasks that had
    /// already completed).
    pub fn abort_all(&mut self) {
        for (_, entry) in self.entries.iter() {
            entry.handle.abort();
        }
    }

    /// Removes every task from the set without aborting it: the tasks keep
    /// running, detached.
    pub fn detach_all(&mut self) {
        self.entries.clear();
        lock(&self.ready.inner).queue.clear();
    }

    /// Aborts every task and waits for all of them to finish, discarding
    /// their outputs. The set is empty afterwards.
    pub async fn shutdown(&mut self) {
        self.abort_all();
        while self.join_next().await.is_some() {}
    }
}

impl<T> Drop for JoinSet<T> {
    fn drop(&mut self) {
        self.abort_all();
    }
}

impl<T> Default for JoinSet<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for JoinSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinSet").field("len", &self.len()).finish()
    }
}

/// Spawns each future on the current runtime.
///
/// # Panics
/// Outside a runtime.
impl<T, F> FromIterator<F> for JoinSet<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    fn from_iter<I: IntoIterator<Item = F>>(iter: I) -> Self {
        let mut set = JoinSet::new();
        set.extend(iter);
        set
    }
}

/// Spawns each future on the current runtime.
///
/// # Panics
/// Outside a runtime.
impl<T, F> Extend<F> for JoinSet<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    fn extend<I: IntoIterator<Item = F>>(&mut self, iter: I) {
        for task in iter {
            self.spawn(task);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::JoinSet;
    use crate::Builder;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn send_and_sync_like_tokio() {
        assert_send_sync::<JoinSet<u32>>();
        assert_send_sync::<JoinSet<Vec<String>>>();
    }

    /// Draining the set polls each handle about twice, not the whole set on
    /// every completion.
    #[test]
    fn join_next_polls_only_ready_entries() {
        const N: u64 = 1_000;
        let rt = Builder::new_multi_thread()
            .worker_threads(2)
            .dlb_backend(fulcrum_dlb::Backend::Software)
            .build()
            .expect("runtime");
        let polls = rt.block_on(async {
            let mut set = JoinSet::new();
            for i in 0..N {
                set.spawn(async move {
                    // Completions spread over ~20 ms, in an order unrelated
                    // to the spawn order.
                    crate::time::sleep(Duration::from_millis((i * 7) % 20)).await;
                    i
                });
            }
            let mut seen = vec![false; N as usize];
            while let Some(r) = set.join_next().await {
                let i = r.expect("task failed") as usize;
                assert!(!seen[i], "task {i} returned twice");
                seen[i] = true;
            }
            assert!(seen.iter().all(|s| *s));
            set.handle_polls
        });
        eprintln!("JoinSet: {polls} handle polls to drain {N} tasks");
        // One poll to register the entry's waker, one to take the output;
        // an entry that finished before its first poll needs just one.
        assert!(polls <= 2 * N, "{polls} handle polls for {N} tasks");
        assert!(polls >= N, "{polls}");
    }
}
