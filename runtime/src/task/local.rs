//! [`LocalSet`] and [`spawn_local`]: tasks whose futures are not `Send`,
//! all run on the thread that drives their set, as tokio's.
//!
//! # Design
//! A local task is an ordinary task of the task system (its `JoinHandle`,
//! abort, panics and ids come unchanged) whose scheduler is the set's
//! shared state, `Arc<Shared>`: a queue under a mutex, the set's owned-task
//! list and the waker of whoever drives the set. A wake from any thread
//! pushes the task's run permission on the queue and wakes the driver;
//! only the thread that owns the `LocalSet` (it is neither `Send` nor
//! `Sync`) pops the queue and runs the tasks, which is what makes it sound
//! for their futures not to be `Send` (see `task::new_local_task`).
//!
//! The set is driven by [`LocalSet::run_until`] (or by awaiting the set
//! itself): each poll first polls the given future, then runs up to
//! [`TICK`] queued tasks, and asks to be polled again if more are queued.
//!
//! # What if it is full?
//! The queue is unbounded: it holds at most one entry per live task of the
//! set (a task is queued only when woken and not already queued), so it is
//! bounded by the tasks spawned on the set. Nothing is ever dropped from
//! it, except at the set's drop, when every task is cancelled.
//!
//! # Dropping the set
//! Drops, on the owning thread, every task that has not completed (their
//! futures are dropped there, with the set entered, so their destructors
//! may call `spawn_local`, whose tasks are cancelled at once). Tasks
//! spawned afterwards on a clone of the shared state are cancelled
//! immediately; wakes that arrive later are ignored.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::task::{Context, Poll, Waker};

use super::{new_local_task, JoinHandle, Notified, Schedule, Task};
use crate::loom::{lock, Arc, AtomicBool, Mutex};
use crate::scheduler::owned::OwnedTasks;

/// Tasks run per poll of the set before it yields to its driver (tokio's
/// scheduler tick).
const TICK: usize = 61;

/// What the tasks of a set share (their scheduler).
struct Shared {
    /// Run permissions of woken tasks; popped only on the owning thread.
    queue: Mutex<VecDeque<Notified<Arc<Shared>>>>,
    owned: OwnedTasks<Arc<Shared>>,
    /// Woken when a task is queued: the task that drives the set.
    waker: Mutex<Option<Waker>>,
    /// Set when the `LocalSet` is dropped.
    closed: AtomicBool,
}

impl Schedule for Arc<Shared> {
    fn schedule(&self, task: Notified<Self>) {
        if self.closed.load(Acquire) {
            // The set's drop cancels (or has cancelled) the task itself on
            // the owning thread; this permission is not needed, and the
            // owned list's reference keeps the future from being dropped
            // here.
            drop(task);
            return;
        }
        lock(&self.queue).push_back(task);
        let waker = lock(&self.waker).clone();
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn release(&self, task: &Task<Self>) -> Option<Task<Self>> {
        self.owned.remove(task)
    }
}

thread_local! {
    /// The set whose tasks this thread is running (or that was entered).
    static CURRENT: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
}

/// A set of tasks that run on the thread that drives it, so their futures
/// need not be `Send`; tokio's `task::LocalSet`.
///
/// Tasks are added with [`spawn_local`] (inside the set) or
/// [`LocalSet::spawn_local`], and run while the set is driven:
/// [`run_until`](Self::run_until) runs a future and the set's tasks until
/// that future completes; awaiting the set itself runs its tasks until all
/// have completed. A set can be driven inside `Runtime::block_on` (on any
/// runtime flavour), inside `Handle::block_on` (for example in a
/// `spawn_blocking` closure of a multi-thread runtime), or inside another
/// local task. It cannot be moved into a task spawned with
/// [`spawn`](crate::spawn), since it is not `Send` (as in tokio): to feed
/// `!Send` work from such tasks, run the set on a thread of its own and
/// send it work over a channel.
///
/// Local tasks may use everything a task can: timers and sockets (they
/// register on the driving thread), [`spawn`](crate::spawn) of `Send`
/// tasks onto the runtime's workers, task-locals, [`id`](super::id).
///
/// ```
/// use std::rc::Rc;
/// use fulcrum_runtime::task::{self, LocalSet};
///
/// let rt = fulcrum_runtime::Builder::new_current_thread().build()?;
/// let local = LocalSet::new();
/// let sum = local.block_on(&rt, async {
///     let shared = Rc::new(20); // not `Send`
///     let other = shared.clone();
///     let h = task::spawn_local(async move { *other + 1 });
///     *shared + h.await.expect("the task panicked")
/// });
/// assert_eq!(sum, 41);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct LocalSet {
    shared: Arc<Shared>,
    /// Neither `Send` nor `Sync`: its tasks run on the thread that owns it.
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for LocalSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalSet")
            .field("alive", &self.shared.owned.alive())
            .field("queued", &lock(&self.shared.queue).len())
            .finish()
    }
}

impl Default for LocalSet {
    fn default() -> Self {
        Self::new()
    }
}

/// Spawns a `!Send` future on the [`LocalSet`] being driven on this thread
/// (or entered with [`LocalSet::enter`]); tokio's `task::spawn_local`.
/// The set's queue is unbounded and holds each live task at most once, so
/// a spawn is never refused.
///
/// # Panics
/// Outside a `LocalSet`, as tokio's.
#[track_caller]
pub fn spawn_local<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let shared = CURRENT.with(|c| c.borrow().clone());
    match shared {
        Some(shared) => spawn_on(&shared, future),
        None => panic!(
            "`spawn_local` called from outside of a `task::LocalSet`: run the code inside \
             `LocalSet::run_until`, `LocalSet::block_on`, or after `LocalSet::enter`"
        ),
    }
}

/// Spawns `future` on the set; called on the owning thread only (through
/// `&LocalSet`, which cannot leave it, or through `CURRENT`, which is set
/// only there).
fn spawn_on<F>(shared: &Arc<Shared>, future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    // SAFETY: the task's permissions are popped from the queue and run
    // only by the thread that owns the `LocalSet` (`tick`, reachable only
    // through the `!Send`, `!Sync` set), and the set's drop shuts down
    // every task still alive on that thread before anything else can drop
    // a future: the owned list holds a reference to each live task until
    // then. A task bound after the drop is shut down by `bind` here, on
    // this thread, which is the owner's.
    let (task, notified, join) = unsafe { new_local_task(future, shared.clone()) };
    if shared.owned.bind(task) {
        shared.schedule(notified);
    }
    join
}

/// Makes a set current on this thread until dropped; returned by
/// [`LocalSet::enter`].
pub struct LocalEnterGuard {
    previous: Option<Arc<Shared>>,
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for LocalEnterGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LocalEnterGuard")
    }
}

impl Drop for LocalEnterGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        let _ = CURRENT.try_with(|c| *c.borrow_mut() = previous);
    }
}

impl LocalSet {
    /// An empty set.
    pub fn new() -> LocalSet {
        LocalSet {
            shared: Arc::new(Shared {
                queue: Mutex::new(VecDeque::new()),
                owned: OwnedTasks::new(),
                waker: Mutex::new(None),
                closed: AtomicBool::new(false),
            }),
            _not_send: PhantomData,
        }
    }

    /// Makes this set the one [`spawn_local`] spawns on, on this thread,
    /// until the guard is dropped. The tasks run only while the set is
    /// driven.
    pub fn enter(&self) -> LocalEnterGuard {
        let previous = CURRENT.with(|c| c.borrow_mut().replace(self.shared.clone()));
        LocalEnterGuard {
            previous,
            _not_send: PhantomData,
        }
    }

    /// Spawns a `!Send` future on this set. It runs once the set is driven
    /// ([`run_until`](Self::run_until), [`block_on`](Self::block_on), or
    /// awaiting the set).
    pub fn spawn_local<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        spawn_on(&self.shared, future)
    }

    /// Runs `future` on `rt`'s `block_on`, driving this set meanwhile:
    /// `rt.block_on(self.run_until(future))`.
    ///
    /// # Panics
    /// As [`Runtime::block_on`](crate::Runtime::block_on): on a thread that
    /// already runs a runtime.
    #[track_caller]
    pub fn block_on<F: Future>(&self, rt: &crate::Runtime, future: F) -> F::Output {
        rt.block_on(self.run_until(future))
    }

    /// Runs `future` to completion, and the set's tasks while it waits.
    /// When it completes, tasks that have not are kept (they run the next
    /// time the set is driven, or are dropped with the set).
    pub async fn run_until<F: Future>(&self, future: F) -> F::Output {
        RunUntil { set: self, future }.await
    }

    /// Runs `f` with this set current on this thread.
    fn with<R>(&self, f: impl FnOnce() -> R) -> R {
        let _guard = self.enter();
        f()
    }

    /// Runs up to [`TICK`] queued tasks; returns whether more are queued.
    fn tick(&self, cx: &mut Context<'_>) -> bool {
        {
            let mut slot = lock(&self.shared.waker);
            if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *slot = Some(cx.waker().clone());
            }
        }
        for _ in 0..TICK {
            let next = lock(&self.shared.queue).pop_front();
            let Some(task) = next else { return false };
            crate::coop::budget(None, || task.run(crate::clock::now_ns()));
        }
        !lock(&self.shared.queue).is_empty()
    }
}

/// The future of [`LocalSet::run_until`].
struct RunUntil<'a, F> {
    set: &'a LocalSet,
    future: F,
}

impl<F: Future> Future for RunUntil<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is structurally pinned: it is never moved out of
        // the pinned `RunUntil` (no method takes it, and `RunUntil` has no
        // `Drop`); `set` is a shared reference.
        let this = unsafe { self.get_unchecked_mut() };
        let set = this.set;
        // SAFETY: see above.
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        set.with(|| {
            if let Poll::Ready(out) = future.poll(cx) {
                return Poll::Ready(out);
            }
            if set.tick(cx) {
                // More queued than one tick runs: let the driver's other
                // work go first, then come back.
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        })
    }
}

/// Awaiting a set runs its tasks until every one of them has completed.
impl Future for LocalSet {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let set = self.get_mut();
        set.with(|| {
            if set.tick(cx) {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else if set.shared.owned.alive() == 0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

impl Drop for LocalSet {
    fn drop(&mut self) {
        self.shared.closed.store(true, Release);
        // Entered, so that the destructors of the tasks' futures can call
        // `spawn_local` (those tasks are cancelled at once: the list is
        // closed).
        let shared = self.shared.clone();
        self.with(|| {
            shared.owned.close_and_shutdown();
            let queued: Vec<_> = lock(&shared.queue).drain(..).collect();
            drop(queued);
        });
        *lock(&shared.waker) = None;
    }
}
