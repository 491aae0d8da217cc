//! The task allocation and its type-erased operations.
//!
//! # Fields
//! A task is one heap allocation, a [`Cell`]: the [`Header`] (state word,
//! vtable, id) first, so that a `NonNull<Header>` is the task's address,
//! then the scheduler handle, the stage (the future, then its output) and the
//! join-waker slot.
//!
//! # Safety
//! - The stage is accessed only by the holder of `RUNNING` (poll, cancel,
//!   store the output), then, after `COMPLETE`, only by the one side the
//!   state machine designates: the `JoinHandle` if `JOIN_INTEREST` was set at
//!   completion, else the completing worker.
//! - The join-waker slot is accessed by the `JoinHandle` while `JOIN_WAKER`
//!   is clear, and read by the runtime side while it is set (see
//!   `state.rs`).
//! - The allocation lives while the reference count is non-zero; every
//!   handle (`Task`, `Notified`, `JoinHandle`, `AbortHandle`, `Waker`) holds
//!   one reference.
//! - The future need not be `Send` here: `new_task` requires it (any
//!   thread may then run or cancel the task), and `new_local_task` makes
//!   its caller promise that every run, cancellation and shutdown of the
//!   task happens on one thread (a `LocalSet`'s). Wakers, the `JoinHandle`
//!   and the state word never touch the future, so they may be used from
//!   any thread either way.

use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use super::state::{
    State, TransitionToIdle, TransitionToNotified, TransitionToRunning, COMPLETE, JOIN_INTEREST,
    JOIN_WAKER,
};
use super::{Id, JoinError, Notified, Ran, Schedule, Task};
use crate::loom::{AtomicU32, AtomicUsize, UnsafeCell};

/// The type-erased operations of a task.
pub(super) struct Vtable {
    /// Runs the task; consumes a `Notified` reference. The time is when
    /// the poll started, in `crate::clock` nanoseconds (for its cost).
    pub(super) run: unsafe fn(NonNull<Header>, u64) -> Ran,
    /// Hands a `Notified` reference to the scheduler.
    pub(super) schedule: unsafe fn(NonNull<Header>),
    /// Frees the allocation (refcount reached zero).
    pub(super) dealloc: unsafe fn(NonNull<Header>),
    /// `JoinHandle::poll`: writes `Poll<Result<T, JoinError>>` to `dst`
    /// when the output is ready, else registers the waker.
    pub(super) try_read_output: unsafe fn(NonNull<Header>, *mut (), &Waker),
    /// `JoinHandle::drop`; consumes the handle's reference.
    pub(super) drop_join_handle: unsafe fn(NonNull<Header>),
    /// Cancels the task at shutdown; consumes a reference.
    pub(super) shutdown: unsafe fn(NonNull<Header>),
}

/// The start of every task allocation.
pub(crate) struct Header {
    pub(super) state: State,
    pub(super) vtable: &'static Vtable,
    pub(super) id: Id,
    /// The task's slot in its owned-task list shard (`usize::MAX` when not
    /// in one). Written and read only under that shard's lock, so relaxed
    /// accesses suffice; atomic because the header is shared.
    pub(super) owned_slot: AtomicUsize,
    /// The task's recent poll cost, nanoseconds (an exponentially weighted
    /// mean, saturating at `u32::MAX`). Written only by the thread that
    /// holds `RUNNING`, read by anyone as a hint: relaxed.
    pub(super) poll_ns: AtomicU32,
}

/// See [`Header::record_poll`].
const SHORT_POLL_NS: u32 = 1 << 10;

impl Header {
    /// The task's recent poll cost.
    pub(super) fn poll_cost_ns(&self) -> u64 {
        u64::from(self.poll_ns.load(Relaxed))
    }
    /// Folds one poll's cost into the mean (weight 1/4; the first poll sets
    /// it). Only the holder of `RUNNING` calls this.
    fn record_poll(&self, cost_ns: u64) {
        let sample = u32::try_from(cost_ns).unwrap_or(u32::MAX);
        let old = self.poll_ns.load(Relaxed);
        // Polls under a microsecond, of a task whose mean is under one too,
        // change nothing the scheduler looks at: skip the store.
        if old != 0 && (old | sample) < SHORT_POLL_NS {
            return;
        }
        let new = if old == 0 {
            sample
        } else {
            let (old, sample) = (i64::from(old), i64::from(sample));
            (old + (sample - old) / 4).clamp(1, i64::from(u32::MAX)) as u32
        };
        self.poll_ns.store(new.max(1), Relaxed);
    }
}

enum Stage<F: Future> {
    Running(F),
    Finished(Result<F::Output, JoinError>),
    Consumed,
}

#[repr(C)]
struct Cell<F: Future, S> {
    header: Header,
    scheduler: S,
    stage: UnsafeCell<Stage<F>>,
    join_waker: UnsafeCell<Option<Waker>>,
}

/// Allocates a task; returns its header. The state holds one reference for
/// the first `Notified`, one for the `JoinHandle` and `extra` more.
pub(super) fn allocate<F, S>(future: F, scheduler: S, id: Id, extra: usize) -> NonNull<Header>
where
    F: Future + 'static,
    F::Output: 'static,
    S: Schedule,
{
    let cell = Box::new(Cell {
        header: Header {
            state: State::new(extra),
            vtable: vtable::<F, S>(),
            id,
            owned_slot: AtomicUsize::new(usize::MAX),
            poll_ns: AtomicU32::new(0),
        },
        scheduler,
        stage: UnsafeCell::new(Stage::Running(future)),
        join_waker: UnsafeCell::new(None),
    });
    // `Cell` is `repr(C)` with the header first, so the cell's address is
    // the header's.
    NonNull::from(Box::leak(cell)).cast()
}

fn vtable<F, S>() -> &'static Vtable
where
    F: Future + 'static,
    F::Output: 'static,
    S: Schedule,
{
    &Vtable {
        run: run::<F, S>,
        schedule: schedule::<F, S>,
        dealloc: dealloc::<F, S>,
        try_read_output: try_read_output::<F, S>,
        drop_join_handle: drop_join_handle::<F, S>,
        shutdown: shutdown::<F, S>,
    }
}

/// # Safety
/// `ptr` is the header of a live `Cell<F, S>`.
unsafe fn cell<'a, F: Future, S>(ptr: NonNull<Header>) -> &'a Cell<F, S> {
    // SAFETY: the caller guarantees the type and liveness; the header is the
    // first field of the `repr(C)` cell.
    unsafe { ptr.cast::<Cell<F, S>>().as_ref() }
}

/// Drops one reference, freeing the task if it was the last.
///
/// # Safety
/// `ptr` is a live task header and the caller owns one reference.
pub(super) unsafe fn drop_ref(ptr: NonNull<Header>) {
    // SAFETY: the caller owns a reference, so the header is live.
    let header = unsafe { ptr.as_ref() };
    if header.state.ref_dec() {
        // SAFETY: that was the last reference.
        unsafe { (header.vtable.dealloc)(ptr) };
    }
}

unsafe fn dealloc<F: Future, S>(ptr: NonNull<Header>) {
    // SAFETY: called once, when the last reference is gone; the allocation
    // came from `Box<Cell<F, S>>` in `allocate`.
    drop(unsafe { Box::from_raw(ptr.cast::<Cell<F, S>>().as_ptr()) });
}

unsafe fn schedule<F, S>(ptr: NonNull<Header>)
where
    F: Future + 'static,
    F::Output: 'static,
    S: Schedule,
{
    // SAFETY: the caller hands over a `Notified` reference to a live task.
    let cell = unsafe { cell::<F, S>(ptr) };
    // SAFETY: as above; the reference moves into the `Notified`.
    cell.scheduler
        .schedule(unsafe { Notified::from_header(ptr) });
}

unsafe fn run<F, S>(ptr: NonNull<Header>, start: u64) -> Ran
where
    F: Future + 'static,
    F::Output: 'static,
    S: Schedule,
{
    // SAFETY: the caller owns a `Notified` reference to a live `Cell<F, S>`.
    let cell = unsafe { cell::<F, S>(ptr) };
    match cell.header.state.transition_to_running() {
        TransitionToRunning::Skip => {
            // SAFETY: we own the `Notified` reference.
            unsafe { drop_ref(ptr) };
            Ran {
                completed: false,
                end: start,
                cost: 0,
            }
        }
        TransitionToRunning::Cancel => {
            cancel(cell);
            // SAFETY: we hold RUNNING and the `Notified` reference.
            unsafe { complete(ptr, cell) };
            Ran {
                completed: true,
                end: start,
                cost: 0,
            }
        }
        TransitionToRunning::Poll => {
            // A waker that borrows the `Notified` reference: cloning it adds
            // a reference, dropping this one does not remove any.
            // SAFETY: the raw waker points at a live task, with our vtable.
            let waker = ManuallyDrop::new(unsafe { Waker::from_raw(raw_waker::<F, S>(ptr)) });
            let mut cx = Context::from_waker(&waker);
            let _id = super::enter_id(cell.header.id);
            let polled = catch_unwind(AssertUnwindSafe(|| {
                cell.stage.with_mut(|stage| {
                    // SAFETY: we hold RUNNING, so the stage is ours; the
                    // future is never moved out of its allocation (pinned).
                    let stage = unsafe { &mut *stage };
                    match stage {
                        Stage::Running(fut) => {
                            // SAFETY: see above.
                            unsafe { std::pin::Pin::new_unchecked(fut) }.poll(&mut cx)
                        }
                        _ => unreachable!("a running task always has its future"),
                    }
                })
            }));
            let end = crate::clock::now_ns();
            let cost = end.saturating_sub(start);
            cell.header.record_poll(cost);
            let completed = match polled {
                Ok(Poll::Ready(output)) => {
                    store(cell, Stage::Finished(Ok(output)));
                    // SAFETY: we hold RUNNING and the `Notified` reference.
                    unsafe { complete(ptr, cell) };
                    true
                }
                Err(payload) => {
                    // The future panicked: drop it (a panic there too is
                    // swallowed) and report the first panic.
                    let _ = catch_unwind(AssertUnwindSafe(|| store(cell, Stage::Consumed)));
                    store(
                        cell,
                        Stage::Finished(Err(JoinError::panic(cell.header.id, payload))),
                    );
                    // SAFETY: as above.
                    unsafe { complete(ptr, cell) };
                    true
                }
                Ok(Poll::Pending) => match cell.header.state.transition_to_idle() {
                    TransitionToIdle::Idle => {
                        // SAFETY: we own the `Notified` reference.
                        unsafe { drop_ref(ptr) };
                        false
                    }
                    TransitionToIdle::Reschedule => {
                        // A reference was added for the new `Notified`.
                        // SAFETY: see `schedule`.
                        unsafe { schedule::<F, S>(ptr) };
                        // SAFETY: we own the old `Notified` reference.
                        unsafe { drop_ref(ptr) };
                        false
                    }
                    TransitionToIdle::Cancel => {
                        cancel(cell);
                        // SAFETY: we still hold RUNNING and the reference.
                        unsafe { complete(ptr, cell) };
                        true
                    }
                },
            };
            Ran {
                completed,
                end,
                cost,
            }
        }
    }
}

/// Replaces the stage. Only the holder of `RUNNING` (or the side that owns
/// the output after completion) calls this.
fn store<F: Future, S>(cell: &Cell<F, S>, stage: Stage<F>) {
    // SAFETY: the caller has exclusive access to the stage (module docs).
    cell.stage.with_mut(|p| unsafe { *p = stage });
}

/// Drops the future and stores the cancellation (or the panic from
/// dropping it) as the output.
fn cancel<F: Future, S>(cell: &Cell<F, S>) {
    let id = cell.header.id;
    // The future's destructor sees its task's id, as in tokio.
    let _id = super::enter_id(id);
    let output = match catch_unwind(AssertUnwindSafe(|| store(cell, Stage::Consumed))) {
        Ok(()) => JoinError::cancelled(id),
        Err(payload) => JoinError::panic(id, payload),
    };
    store(cell, Stage::Finished(Err(output)));
}

/// `RUNNING` → `COMPLETE`: hands the output to the joiner (or drops it),
/// removes the task from its owner's list, and drops the caller's reference.
///
/// # Safety
/// The caller holds `RUNNING` and one reference, which this consumes.
unsafe fn complete<F, S>(ptr: NonNull<Header>, cell: &Cell<F, S>)
where
    F: Future + 'static,
    F::Output: 'static,
    S: Schedule,
{
    let prev = cell.header.state.transition_to_complete();
    if !prev.has(JOIN_INTEREST) {
        // Nobody will read the output; drop it here (its drop may panic).
        let _ = catch_unwind(AssertUnwindSafe(|| store(cell, Stage::Consumed)));
    } else if prev.has(JOIN_WAKER) {
        cell.join_waker.with(|w| {
            // SAFETY: JOIN_WAKER is set, so the runtime side may read the
            // slot; the handle does not write it until we clear the bit.
            if let Some(w) = unsafe { &*w } {
                w.wake_by_ref();
            }
        });
        let after = cell.header.state.unset_join_waker_after_complete();
        if !after.has(JOIN_INTEREST) {
            // The handle went away meanwhile and left the waker to us.
            // SAFETY: the handle no longer exists and JOIN_WAKER was ours.
            cell.join_waker.with_mut(|w| unsafe { *w = None });
        }
    }
    // SAFETY: the task is live (we hold a reference).
    let me = ManuallyDrop::new(unsafe { Task::<S>::from_header(ptr) });
    let released = cell.scheduler.release(&me);
    let last = match released {
        Some(task) => {
            std::mem::forget(task);
            cell.header.state.ref_dec_twice()
        }
        None => cell.header.state.ref_dec(),
    };
    if last {
        // SAFETY: that was the last reference.
        unsafe { dealloc::<F, S>(ptr) };
    }
}

unsafe fn shutdown<F, S>(ptr: NonNull<Header>)
where
    F: Future + 'static,
    F::Output: 'static,
    S: Schedule,
{
    // SAFETY: the caller owns a reference to a live `Cell<F, S>`.
    let cell = unsafe { cell::<F, S>(ptr) };
    if cell.header.state.transition_to_shutdown() {
        cancel(cell);
        // SAFETY: we now hold RUNNING, and the caller's reference.
        unsafe { complete(ptr, cell) };
    } else {
        // SAFETY: we own the reference.
        unsafe { drop_ref(ptr) };
    }
}

unsafe fn try_read_output<F, S>(ptr: NonNull<Header>, dst: *mut (), waker: &Waker)
where
    F: Future + 'static,
    F::Output: 'static,
    S: Schedule,
{
    // SAFETY: the `JoinHandle` holds a reference to a live `Cell<F, S>`.
    let cell = unsafe { cell::<F, S>(ptr) };
    if !can_read_output(&cell.header, &cell.join_waker, waker) {
        return;
    }
    // SAFETY: COMPLETE with JOIN_INTEREST (ours): the output is ours.
    let stage = cell
        .stage
        .with_mut(|p| unsafe { std::mem::replace(&mut *p, Stage::Consumed) });
    let output = match stage {
        Stage::Finished(output) => output,
        _ => panic!("`JoinHandle` polled after it returned its output"),
    };
    // SAFETY: `JoinHandle<T>` passes a `*mut Poll<Result<T, JoinError>>`
    // where `T == F::Output`.
    unsafe { *dst.cast::<Poll<Result<F::Output, JoinError>>>() = Poll::Ready(output) };
}

/// Returns `true` when the task is complete; else leaves `waker` in the slot
/// to be woken on completion.
fn can_read_output(header: &Header, slot: &UnsafeCell<Option<Waker>>, waker: &Waker) -> bool {
    let snapshot = header.state.load();
    if snapshot.has(COMPLETE) {
        return true;
    }
    if snapshot.has(JOIN_WAKER) {
        // SAFETY: while JOIN_WAKER is set both sides only read the slot.
        let same = slot.with(|w| unsafe { &*w }.as_ref().is_some_and(|w| w.will_wake(waker)));
        if same {
            return false;
        }
        if header.state.unset_join_waker().is_err() {
            return true;
        }
    }
    // JOIN_WAKER is clear: the slot is ours.
    // SAFETY: see above.
    slot.with_mut(|w| unsafe { *w = Some(waker.clone()) });
    if header.state.set_join_waker().is_err() {
        // Completed meanwhile; the slot is still ours.
        // SAFETY: see above.
        slot.with_mut(|w| unsafe { *w = None });
        return true;
    }
    false
}

unsafe fn drop_join_handle<F, S>(ptr: NonNull<Header>)
where
    F: Future + 'static,
    F::Output: 'static,
    S: Schedule,
{
    // SAFETY: the `JoinHandle` owns a reference to a live `Cell<F, S>`.
    let cell = unsafe { cell::<F, S>(ptr) };
    let prev = cell.header.state.drop_join_interest();
    if prev.has(COMPLETE) {
        // The completing side left the output for us.
        let _ = catch_unwind(AssertUnwindSafe(|| store(cell, Stage::Consumed)));
    }
    if !prev.has(COMPLETE) || !prev.has(JOIN_WAKER) {
        // The waker slot is ours (see `drop_join_interest`).
        // SAFETY: exclusive access to the slot, as just argued.
        cell.join_waker.with_mut(|w| unsafe { *w = None });
    }
    // SAFETY: we own the handle's reference.
    unsafe { drop_ref(ptr) };
}

fn raw_waker<F, S>(ptr: NonNull<Header>) -> RawWaker
where
    F: Future + 'static,
    F::Output: 'static,
    S: Schedule,
{
    RawWaker::new(ptr.as_ptr() as *const (), waker_vtable::<F, S>())
}

fn waker_vtable<F, S>() -> &'static RawWakerVTable
where
    F: Future + 'static,
    F::Output: 'static,
    S: Schedule,
{
    &RawWakerVTable::new(
        clone_waker::<F, S>,
        wake_by_val::<F, S>,
        wake_by_ref::<F, S>,
        drop_waker,
    )
}

fn header_of(data: *const ()) -> NonNull<Header> {
    // SAFETY: task wakers are built from non-null task headers only.
    unsafe { NonNull::new_unchecked(data as *mut Header) }
}

unsafe fn clone_waker<F, S>(data: *const ()) -> RawWaker
where
    F: Future + 'static,
    F::Output: 'static,
    S: Schedule,
{
    let ptr = header_of(data);
    // SAFETY: the waker being cloned holds a reference, so the task is live.
    unsafe { ptr.as_ref() }.state.ref_inc();
    raw_waker::<F, S>(ptr)
}

unsafe fn wake_by_val<F, S>(data: *const ())
where
    F: Future + 'static,
    F::Output: 'static,
    S: Schedule,
{
    let ptr = header_of(data);
    // SAFETY: the waker owns a reference, so the task is live.
    match unsafe { ptr.as_ref() }
        .state
        .transition_to_notified_by_val()
    {
        // SAFETY: the waker's reference becomes the `Notified`'s.
        TransitionToNotified::Submit => unsafe { schedule::<F, S>(ptr) },
        // SAFETY: the waker's reference is ours to drop.
        TransitionToNotified::Nothing => unsafe { drop_ref(ptr) },
    }
}

unsafe fn wake_by_ref<F, S>(data: *const ())
where
    F: Future + 'static,
    F::Output: 'static,
    S: Schedule,
{
    let ptr = header_of(data);
    // SAFETY: the waker holds a reference, so the task is live.
    if unsafe { ptr.as_ref() }
        .state
        .transition_to_notified_by_ref()
        == TransitionToNotified::Submit
    {
        // SAFETY: a reference was added for the `Notified`.
        unsafe { schedule::<F, S>(ptr) };
    }
}

unsafe fn drop_waker(data: *const ()) {
    // SAFETY: the waker owns a reference.
    unsafe { drop_ref(header_of(data)) };
}
