//! The cooperative budget: a task may complete at most [`BUDGET`] operations
//! on runtime resources (I/O readiness, timers) per poll. When the budget is
//! spent, the next resource poll returns `Pending` after waking the task, so
//! a task whose resources are always ready still yields to the others on
//! its worker. Outside a task poll (for example the `block_on` future on a
//! multi-thread runtime) there is no budget.

use std::cell::Cell;
use std::task::{Context, Poll};

/// Operations per task poll, as in tokio.
pub(crate) const BUDGET: u8 = 128;

thread_local! {
    static REMAINING: Cell<Option<u8>> = const { Cell::new(None) };
}

/// Runs `f` (a task poll) with a fresh budget.
pub(crate) fn budget<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(Option<u8>);
    impl Drop for Reset {
        fn drop(&mut self) {
            REMAINING.with(|r| r.set(self.0));
        }
    }
    let _reset = Reset(REMAINING.with(|r| r.replace(Some(BUDGET))));
    f()
}

/// Called by a resource before it reports readiness: `Pending` (after
/// waking the task) if the budget is spent.
pub(crate) fn poll_proceed(cx: &mut Context<'_>) -> Poll<()> {
    REMAINING.with(|r| match r.get() {
        Some(0) => {
            // Deferred on a multi-thread worker, like `yield_now`.
            if !crate::scheduler::defer(cx.waker()) {
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        }
        _ => Poll::Ready(()),
    })
}

/// Called by a resource that made progress: spends one unit.
pub(crate) fn consume() {
    REMAINING.with(|r| {
        if let Some(n) = r.get() {
            r.set(Some(n.saturating_sub(1)));
        }
    });
}
