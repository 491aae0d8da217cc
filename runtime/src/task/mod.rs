//! Tasks: the unit of work that workers run and hand to each other.
//!
//! A spawned future lives in one heap allocation (see `raw.rs`) shared by
//! several handles, each holding one reference:
//! - a `Notified`: permission to run the task once. At most one exists at a
//!   time (the `NOTIFIED` bit), so a task is never queued twice. This is
//!   what crosses between workers: `Notified::into_raw` turns it into the
//!   64-bit payload of a DLB event, and `Notified::from_raw` back.
//! - a `Task`: the runtime's owned-task list keeps one, so that shutdown
//!   can cancel every task that is still alive.
//! - the [`JoinHandle`], any [`AbortHandle`]s, and each clone of the task's
//!   `Waker`.
//!
//! # State
//! One atomic word holds the lifecycle flags and the reference count; see
//! `state.rs` for each bit and who may set it.
//!
//! # Safety
//! Who may touch the future, the output and the join waker, and when, is
//! documented in `raw.rs`; every unsafe block there argues from it.

mod error;
#[cfg(not(loom))]
mod join_set;
#[cfg(not(loom))]
mod local;
mod raw;
mod state;
#[cfg(not(loom))]
mod task_local;

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

pub use self::error::JoinError;
#[cfg(not(loom))]
pub use self::join_set::JoinSet;
#[cfg(not(loom))]
pub use self::local::{spawn_local, LocalEnterGuard, LocalSet};
#[cfg(not(loom))]
pub use self::task_local::{AccessError, LocalKey, TaskLocalFuture};

/// The futures of this module, at tokio's path.
#[cfg(not(loom))]
pub mod futures {
    pub use super::task_local::TaskLocalFuture;
}
use self::raw::Header;
use self::state::COMPLETE;
#[cfg(not(loom))]
pub use crate::blocking::spawn_blocking;

/// Runs `f`, which may block, on the current thread, as tokio's
/// `block_in_place`.
///
/// On a worker of a multi-thread runtime (DLB or work stealing), the
/// worker first hands the tasks queued on it to the other workers (through
/// the DLB queue; in work-stealing mode they are left to be stolen), tells
/// the DLB arbiter it is stuck so that new work goes elsewhere, and makes
/// sure an idle worker watches its sockets: their ready I/O is rescued,
/// and the tasks it wakes move away with their sockets and timers. Tasks
/// scheduled on the worker while `f` runs are handed off as well. The
/// calling task then continues on this worker when `f` returns. Tasks that
/// stay asleep on a timer of this worker's wheel fire when `f` returns.
///
/// Anywhere else (a `block_on` thread of a multi-thread runtime, the
/// blocking pool, a thread outside any runtime) `f` just runs.
///
/// # Panics
/// On a current-thread runtime (its only thread would block), with
/// tokio's message.
#[cfg(not(loom))]
#[track_caller]
pub fn block_in_place<F, R>(f: F) -> R
where
    F: FnOnce() -> R,
{
    if let Ok(h) = crate::Handle::try_current() {
        if h.is_current_thread() && crate::context::is_running() {
            panic!("can call blocking only when running on the multi-threaded runtime");
        }
    }
    match crate::scheduler::block_in_place(f) {
        Ok(r) => r,
        Err(f) => f(),
    }
}
use crate::loom::AtomicU64;

/// Where tasks go when they are woken.
pub(crate) trait Schedule: Send + Sync + Sized + 'static {
    /// Queues a task to run.
    fn schedule(&self, task: Notified<Self>);

    /// The task completed: removes it from the owned-task list and returns
    /// the list's reference, if it was there.
    fn release(&self, task: &Task<Self>) -> Option<Task<Self>>;
}

/// A task's id, unique within the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(u64);

impl Id {
    fn next() -> Self {
        #[cfg(not(loom))]
        static NEXT: AtomicU64 = AtomicU64::new(1);
        #[cfg(loom)]
        ::loom::lazy_static! {
            static ref NEXT: AtomicU64 = AtomicU64::new(1);
        }
        Id(NEXT.fetch_add(1, Relaxed))
    }

    /// The id as a number.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

#[cfg(not(loom))]
std::thread_local! {
    /// The id of the task being polled (or dropped) on this thread.
    static CURRENT_ID: std::cell::Cell<Option<Id>> = const { std::cell::Cell::new(None) };
}

/// Restores the previous current task id when dropped.
pub(crate) struct IdGuard {
    #[cfg(not(loom))]
    previous: Option<Id>,
}

/// Makes `id` the current task's id until the guard drops (a poll, or the
/// drop of a task's future).
#[cfg_attr(loom, allow(unused_variables))]
pub(crate) fn enter_id(id: Id) -> IdGuard {
    IdGuard {
        #[cfg(not(loom))]
        previous: CURRENT_ID.try_with(|c| c.replace(Some(id))).ok().flatten(),
    }
}

impl Drop for IdGuard {
    fn drop(&mut self) {
        #[cfg(not(loom))]
        let _ = CURRENT_ID.try_with(|c| c.set(self.previous));
    }
}

/// The id of the task being run, tokio's `task::id`: available in the
/// task's future while it is polled, and in its destructor.
///
/// # Panics
/// Outside a task (for example in the future given to `block_on`, or in a
/// [`spawn_blocking`] closure), as tokio's. See [`try_id`].
#[cfg(not(loom))]
#[track_caller]
pub fn id() -> Id {
    match try_id() {
        Some(id) => id,
        None => panic!("can't get a task id when not inside a task"),
    }
}

/// The id of the task being run, or `None` outside a task; tokio's
/// `task::try_id`.
#[cfg(not(loom))]
pub fn try_id() -> Option<Id> {
    CURRENT_ID.try_with(std::cell::Cell::get).ok().flatten()
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An owned reference to a task.
pub(crate) struct Task<S: 'static> {
    ptr: NonNull<Header>,
    _scheduler: PhantomData<S>,
}

// SAFETY: a task may be woken and its references dropped from any thread:
// that touches only the atomic state and the `Send + Sync` scheduler. It is
// run and shut down from any thread only if its future and output are
// `Send` (required by `new_task`); a `new_local_task` caller keeps those on
// one thread (see there).
unsafe impl<S> Send for Task<S> {}
// SAFETY: as above; `&Task` only exposes the id and atomic state.
unsafe impl<S> Sync for Task<S> {}

impl<S: 'static> Task<S> {
    /// # Safety
    /// The caller transfers one reference to a live task scheduled by `S`.
    pub(super) unsafe fn from_header(ptr: NonNull<Header>) -> Self {
        Task {
            ptr,
            _scheduler: PhantomData,
        }
    }

    fn header(&self) -> &Header {
        // SAFETY: we hold a reference, so the task is live.
        unsafe { self.ptr.as_ref() }
    }

    /// The task's id.
    pub(crate) fn id(&self) -> Id {
        self.header().id
    }

    /// The task's slot in the owned-task list (`usize::MAX`: none). Only
    /// the list reads and writes it, under its shard lock.
    pub(crate) fn owned_slot(&self) -> usize {
        self.header().owned_slot.load(Relaxed)
    }

    /// Records the task's slot in the owned-task list (see `owned_slot`).
    pub(crate) fn set_owned_slot(&self, slot: usize) {
        self.header().owned_slot.store(slot, Relaxed);
    }

    /// Whether both handles refer to the same task.
    pub(crate) fn ptr_eq(&self, other: &Task<S>) -> bool {
        self.ptr == other.ptr
    }

    /// Cancels the task at shutdown: if no worker is running it, drops its
    /// future here. Consumes this reference.
    pub(crate) fn shutdown(self) {
        let ptr = self.ptr;
        std::mem::forget(self);
        // SAFETY: we hand over our reference to a live task.
        unsafe { (ptr.as_ref().vtable.shutdown)(ptr) };
    }
}

impl<S: 'static> Drop for Task<S> {
    fn drop(&mut self) {
        // SAFETY: we own one reference.
        unsafe { raw::drop_ref(self.ptr) };
    }
}

impl<S: 'static> fmt::Debug for Task<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.id())
            .field("state", &self.header().state.load())
            .finish()
    }
}

/// What [`Notified::run`] did.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ran {
    /// The task completed (output, panic or cancellation): it will not run
    /// again.
    pub(crate) completed: bool,
    /// When the poll returned, in `crate::clock` nanoseconds (the start if
    /// nothing was polled).
    pub(crate) end: u64,
    /// How long the poll took, nanoseconds (zero if nothing was polled).
    pub(crate) cost: u64,
}

/// Permission to run a task once (see the module docs).
pub(crate) struct Notified<S: 'static>(Task<S>);

impl<S: 'static> Notified<S> {
    /// # Safety
    /// The caller transfers a `Notified` reference to a live task of `S`.
    pub(super) unsafe fn from_header(ptr: NonNull<Header>) -> Self {
        // SAFETY: forwarded from the caller.
        Notified(unsafe { Task::from_header(ptr) })
    }

    /// Runs the task (polls it once, or cancels it), the poll starting at
    /// `start` (`crate::clock` nanoseconds; for its cost, see
    /// [`poll_cost_ns`](Self::poll_cost_ns)). Consumes the permission.
    pub(crate) fn run(self, start: u64) -> Ran {
        let ptr = self.0.ptr;
        std::mem::forget(self);
        // SAFETY: we hand over the `Notified` reference to a live task.
        unsafe { (ptr.as_ref().vtable.run)(ptr, start) }
    }

    /// The task's recent poll cost: a weighted mean of its last polls, from
    /// when the scheduler started each one to when it returned (zero before
    /// its first poll).
    pub(crate) fn poll_cost_ns(&self) -> u64 {
        self.0.header().poll_cost_ns()
    }

    /// The task's id.
    pub(crate) fn id(&self) -> Id {
        self.0.id()
    }

    /// Turns the permission into a 64-bit payload (for a DLB event). The
    /// reference travels with it: exactly one [`from_raw`](Self::from_raw)
    /// must follow, or the task leaks.
    pub(crate) fn into_raw(self) -> u64 {
        let ptr = self.0.ptr;
        std::mem::forget(self);
        ptr.as_ptr() as usize as u64
    }

    /// Takes back a permission made by [`into_raw`](Self::into_raw).
    ///
    /// # Safety
    /// `raw` came from `into_raw` on a `Notified<S>` with the same `S`, and
    /// is used once.
    pub(crate) unsafe fn from_raw(raw: u64) -> Self {
        // SAFETY: `into_raw` made `raw` from a non-null header pointer.
        let ptr = unsafe { NonNull::new_unchecked(raw as usize as *mut Header) };
        // SAFETY: forwarded from the caller.
        unsafe { Self::from_header(ptr) }
    }
}

impl<S: 'static> fmt::Debug for Notified<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Notified").field(&self.0).finish()
    }
}

/// Allocates a task for a `!Send` future (a `LocalSet`'s), as
/// [`new_task`].
///
/// # Safety
/// The caller ensures that the task is run (`Notified::run`), and shut
/// down (`Task::shutdown`), only on the thread that called this, and that
/// every task still alive is shut down on that thread before the thread's
/// scheduler goes away: then its future, and the output if `F::Output` is
/// not `Send`, are only ever touched and dropped there. Wakes, aborts and
/// the join handle may come from any thread: they touch only the state
/// word and the scheduler (which is `Send + Sync`).
pub(crate) unsafe fn new_local_task<F, S>(
    future: F,
    scheduler: S,
) -> (Task<S>, Notified<S>, JoinHandle<F::Output>)
where
    F: Future + 'static,
    F::Output: 'static,
    S: Schedule,
{
    let ptr = raw::allocate(future, scheduler, Id::next(), 1);
    // SAFETY: `allocate` created three references: list, `Notified`, handle.
    unsafe {
        (
            Task::from_header(ptr),
            Notified::from_header(ptr),
            JoinHandle::from_header(ptr),
        )
    }
}

/// Allocates a task for `future`, scheduled by `scheduler`. Returns the
/// owned reference (for the owned-task list), the first `Notified`, and the
/// `JoinHandle`.
pub(crate) fn new_task<F, S>(
    future: F,
    scheduler: S,
) -> (Task<S>, Notified<S>, JoinHandle<F::Output>)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
    S: Schedule,
{
    let ptr = raw::allocate(future, scheduler, Id::next(), 1);
    // SAFETY: `allocate` created three references: list, `Notified`, handle.
    unsafe {
        (
            Task::from_header(ptr),
            Notified::from_header(ptr),
            JoinHandle::from_header(ptr),
        )
    }
}

/// An owned permission to await a spawned task's output.
///
/// Awaiting it gives the task's output, or a [`JoinError`] if the task
/// panicked or was cancelled. Dropping it detaches the task: it keeps
/// running, and its output is dropped when it completes.
pub struct JoinHandle<T> {
    ptr: NonNull<Header>,
    _output: PhantomData<T>,
}

// SAFETY: the handle only moves the output `T` to the awaiting thread.
unsafe impl<T: Send> Send for JoinHandle<T> {}
// SAFETY: `&JoinHandle` exposes only atomic state (abort, is_finished, id).
unsafe impl<T: Send> Sync for JoinHandle<T> {}

impl<T> Unpin for JoinHandle<T> {}

impl<T> JoinHandle<T> {
    /// # Safety
    /// The caller transfers the join reference of a live task whose output
    /// is `T`.
    unsafe fn from_header(ptr: NonNull<Header>) -> Self {
        JoinHandle {
            ptr,
            _output: PhantomData,
        }
    }

    fn header(&self) -> &Header {
        // SAFETY: the handle holds a reference.
        unsafe { self.ptr.as_ref() }
    }

    /// Cancels the task. If it has not completed, its future is dropped at
    /// its next scheduling point and awaiting the handle gives a cancelled
    /// [`JoinError`]. A task that already completed keeps its output.
    pub fn abort(&self) {
        abort(self.ptr);
    }

    /// Whether the task has completed (with output, panic or cancellation).
    pub fn is_finished(&self) -> bool {
        self.header().state.load().has(COMPLETE)
    }

    /// A handle that can abort the task without owning its output.
    pub fn abort_handle(&self) -> AbortHandle {
        self.header().state.ref_inc();
        AbortHandle { ptr: self.ptr }
    }

    /// The task's id.
    pub fn id(&self) -> Id {
        self.header().id
    }
}

fn abort(ptr: NonNull<Header>) {
    // SAFETY: callers hold a reference, so the task is live.
    let header = unsafe { ptr.as_ref() };
    if header.state.transition_to_cancelled() == state::TransitionToNotified::Submit {
        // SAFETY: a reference was added for the `Notified`.
        unsafe { (header.vtable.schedule)(ptr) };
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut out: Poll<Result<T, JoinError>> = Poll::Pending;
        // SAFETY: the handle holds a reference; `out` has the type the task's
        // vtable writes for output `T`.
        unsafe {
            (self.header().vtable.try_read_output)(
                self.ptr,
                (&mut out as *mut Poll<Result<T, JoinError>>).cast(),
                cx.waker(),
            )
        };
        out
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        // SAFETY: we hand over the handle's reference.
        unsafe { (self.header().vtable.drop_join_handle)(self.ptr) };
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("id", &self.id())
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// A handle that can abort a task (see [`JoinHandle::abort`]).
pub struct AbortHandle {
    ptr: NonNull<Header>,
}

// SAFETY: only atomic state is touched through the handle.
unsafe impl Send for AbortHandle {}
// SAFETY: as above.
unsafe impl Sync for AbortHandle {}

impl AbortHandle {
    /// Cancels the task; see [`JoinHandle::abort`].
    pub fn abort(&self) {
        abort(self.ptr);
    }

    /// Whether the task has completed.
    pub fn is_finished(&self) -> bool {
        // SAFETY: the handle holds a reference.
        unsafe { self.ptr.as_ref() }.state.load().has(COMPLETE)
    }

    /// The task's id.
    pub fn id(&self) -> Id {
        // SAFETY: the handle holds a reference.
        unsafe { self.ptr.as_ref() }.id
    }
}

impl Clone for AbortHandle {
    fn clone(&self) -> Self {
        // SAFETY: the handle holds a reference.
        unsafe { self.ptr.as_ref() }.state.ref_inc();
        AbortHandle { ptr: self.ptr }
    }
}

impl Drop for AbortHandle {
    fn drop(&mut self) {
        // SAFETY: we own one reference.
        unsafe { raw::drop_ref(self.ptr) };
    }
}

impl fmt::Debug for AbortHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbortHandle")
            .field("id", &self.id())
            .finish()
    }
}
#[cfg(all(test, loom))]
mod loom_tests;
