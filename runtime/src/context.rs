//! The thread-local runtime context: which runtime (if any) the current
//! thread belongs to, so that `spawn`, `Handle::current` and the timers find
//! it.

use std::cell::{Cell, RefCell};

use crate::Handle;

thread_local! {
    static CURRENT: RefCell<Option<Handle>> = const { RefCell::new(None) };
    /// Set while the thread runs a runtime (a worker, or inside `block_on`),
    /// to refuse a nested `block_on`.
    static RUNNING: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread runs a runtime (a worker, or inside `block_on`).
pub(crate) fn is_running() -> bool {
    RUNNING.with(Cell::get)
}

/// The handle of the runtime this thread is in, if any.
pub(crate) fn current() -> Option<Handle> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Runs `f` with the handle of the runtime this thread is in, borrowed
/// (no clone); `None` outside a runtime, or while the thread's locals are
/// torn down.
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&Handle>) -> R) -> R {
    let mut f = Some(f);
    let mut out = None;
    let _ = CURRENT.try_with(|c| {
        if let Ok(handle) = c.try_borrow() {
            if let Some(f) = f.take() {
                out = Some(f(handle.as_ref()));
            }
        }
    });
    match (out, f) {
        (Some(r), _) => r,
        (None, Some(f)) => f(None),
        (None, None) => unreachable!("with_current: `f` is taken only to produce `out`"),
    }
}

/// Restores the previous context when dropped.
pub(crate) struct EnterGuard {
    previous: Option<Handle>,
    was_running: Option<bool>,
}

/// Makes `handle` the current runtime of this thread.
pub(crate) fn enter(handle: Handle) -> EnterGuard {
    let previous = CURRENT.with(|c| c.borrow_mut().replace(handle));
    EnterGuard {
        previous,
        was_running: None,
    }
}

/// Makes `handle` current and marks the thread as running a runtime.
///
/// # Panics
/// If the thread already runs a runtime (a worker, or `block_on`): blocking
/// it would stall every task queued on it.
#[track_caller]
pub(crate) fn enter_running(handle: Handle) -> EnterGuard {
    if RUNNING.with(Cell::get) {
        panic!(
            "Cannot start a runtime from within a runtime. This happens because a function \
             (like `block_on`) attempted to block the current thread while the thread is being \
             used to drive asynchronous tasks."
        );
    }
    RUNNING.with(|r| r.set(true));
    let mut guard = enter(handle);
    guard.was_running = Some(false);
    guard
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
        if let Some(was) = self.was_running {
            RUNNING.with(|r| r.set(was));
        }
    }
}
