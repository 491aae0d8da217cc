//! The cooperative budget: a task may complete at most [`BUDGET`] operations
//! on runtime resources (I/O readiness, timers) per poll, and, on a
//! runtime's worker, run for at most its time slice
//! (`Builder::poll_time_slice`) before its next resource operation. When
//! either is spent, the next resource poll returns `Pending` after waking
//! the task, so a task whose resources are always ready, or whose work per
//! operation is long (a CPU-heavy request handler), still lets the other
//! tasks on its worker run between its operations. Outside a task poll (for
//! example the `block_on` future on a multi-thread runtime) there is no
//! budget.

use std::cell::Cell;
use std::task::{Context, Poll};

/// Operations per task poll, as in tokio.
pub(crate) const BUDGET: u8 = 128;

/// A poll's budget: operations left, and the end of its time slice.
#[derive(Clone, Copy)]
struct Budget {
    remaining: u8,
    /// In `crate::clock` nanoseconds.
    deadline: Option<u64>,
}

thread_local! {
    static CURRENT: Cell<Option<Budget>> = const { Cell::new(None) };
}

/// Runs `f` (a task poll) with a fresh budget, whose time slice (if any)
/// ends at `deadline` (`crate::clock` nanoseconds).
pub(crate) fn budget<R>(deadline: Option<u64>, f: impl FnOnce() -> R) -> R {
    struct Reset(Option<Budget>);
    impl Drop for Reset {
        fn drop(&mut self) {
            CURRENT.with(|r| r.set(self.0));
        }
    }
    let fresh = Budget {
        remaining: BUDGET,
        deadline,
    };
    let _reset = Reset(CURRENT.with(|r| r.replace(Some(fresh))));
    f()
}

/// Called by a resource before it reports readiness: `Pending` (after
/// waking the task) if the budget is spent.
pub(crate) fn poll_proceed(cx: &mut Context<'_>) -> Poll<()> {
    let spent = CURRENT.with(|r| match r.get() {
        None => false,
        Some(b) if b.remaining == 0 => true,
        Some(Budget {
            deadline: Some(d), ..
        }) => crate::clock::now_ns() >= d,
        Some(_) => false,
    });
    if !spent {
        return Poll::Ready(());
    }
    // Deferred on a multi-thread worker, like `yield_now`.
    if !crate::scheduler::defer(cx.waker()) {
        cx.waker().wake_by_ref();
    }
    Poll::Pending
}

/// Called by a resource that made progress: spends one unit.
pub(crate) fn consume() {
    CURRENT.with(|r| {
        if let Some(mut b) = r.get() {
            b.remaining = b.remaining.saturating_sub(1);
            r.set(Some(b));
        }
    });
}
