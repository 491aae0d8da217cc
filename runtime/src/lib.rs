//! Fulcrum's runtime: worker threads that hand tasks to each other only
//! through a DLB load-balancing queue, never by stealing.
//!
//! What is here: [`Builder`] and [`Runtime`] with three schedulers
//! ([`Scheduler::Dlb`], the default; [`Scheduler::WorkStealing`], the
//! comparison baseline; and the current-thread runtime), [`spawn`],
//! [`JoinHandle`] (await, abort, `is_finished`), [`JoinError`], [`JoinSet`],
//! [`spawn_blocking`] (the blocking pool), [`task::block_in_place`],
//! [`yield_now`], [`time`] (`sleep`, `timeout`, `interval`, the runtime's
//! clock: [`time::Instant`], [`time::pause`], [`time::advance`],
//! auto-advance, [`Builder::start_paused`]), [`task_local!`],
//! [`task::LocalSet`] and [`task::spawn_local`], [`task::id`],
//! [`Handle::block_on`], [`Handle::metrics`] (tokio's `RuntimeMetrics`
//! methods), per-worker reactors and [`io::unix::AsyncFd`], and shutdown
//! that cancels every live task.
//!
//! # Level 2: work that waits moves
//! (The whole design is in the repository's `docs/DESIGN.md`.) A busy
//! worker polls its own I/O at least every [`Builder::io_poll_interval`];
//! the light tasks it wakes behind heavy work go to a calm sleeping peer,
//! directed. An idle worker that finds a peer stuck inside one task poll
//! for a [`Builder::rescue_interval`] dispatches the peer's ready I/O and
//! runs the light tasks it wakes: they are sent to it as directed DLB
//! events, not through the arbiter, which cannot see a long poll and would
//! put some of them back behind it. A task that runs on another worker takes
//! its sockets and timers along, so it stays moved. Heavy tasks (whose
//! polls take at least the I/O poll interval) stay put. A task poll that
//! has run [`Builder::poll_time_slice`] gets `Pending` from its next
//! resource operation; 128 operations per poll is the other half of the
//! cooperative budget.
//!
//! ```
//! let rt = fulcrum_runtime::Runtime::new()?;
//! let sum = rt.block_on(async {
//!     let handles: Vec<_> = (0..10u64).map(|i| fulcrum_runtime::spawn(async move { i * i })).collect();
//!     let mut sum = 0;
//!     for h in handles {
//!         sum += h.await.expect("task panicked");
//!     }
//!     sum
//! });
//! assert_eq!(sum, 285);
//! # Ok::<(), std::io::Error>(())
//! ```

// Under loom only the task machinery is built, for its models; outside
// the model tests nothing uses it there.
#![cfg_attr(loom, allow(dead_code))]

// The scheduler, the runtime and the thread context run real threads, mio
// and eventfds, so they are not built under loom; the loom build checks the
// task state machine (`task::loom_tests`).
#[cfg(not(loom))]
mod blocking;
#[cfg(not(loom))]
mod builder;
mod clock;
#[cfg(not(loom))]
mod connections;
#[cfg(not(loom))]
mod context;
#[cfg(not(loom))]
mod coop;
#[cfg(not(loom))]
mod handle;
#[cfg(not(loom))]
pub mod io;
/// Under loom, only the reactor's readiness state and its release list
/// (their models).
#[cfg(loom)]
mod io {
    pub(crate) mod release;
    pub(crate) mod scheduled;
}
mod loom;
#[cfg(not(loom))]
mod metrics;
#[cfg(not(loom))]
mod park;
#[cfg(not(loom))]
mod runtime;
#[cfg(not(loom))]
mod scheduler;
/// Under loom, only the owned-task list of the schedulers (its model).
#[cfg(loom)]
mod scheduler {
    pub(crate) mod owned;
}
mod sleepers;
#[cfg(feature = "tokio-compat")]
pub mod tokio_compat;
#[cfg(not(feature = "tokio-compat"))]
mod tokio_compat {
    //! Without the feature: nothing to enter.
    pub(crate) struct ThreadGuard;
    pub(crate) fn enter() -> ThreadGuard {
        ThreadGuard
    }
}
pub mod task;
#[cfg(not(loom))]
pub mod time;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

#[cfg(not(loom))]
pub use blocking::spawn_blocking;
#[cfg(not(loom))]
pub use builder::{Builder, Scheduler};
#[cfg(not(loom))]
pub use connections::ConnectionGuard;
#[cfg(not(loom))]
pub use handle::{EnterGuard, Handle, TryCurrentError};
#[cfg(not(loom))]
pub use metrics::live::RuntimeMetrics;
#[cfg(not(loom))]
pub use metrics::WorkerMetrics;
#[cfg(not(loom))]
pub use runtime::Runtime;
#[cfg(not(loom))]
pub use task::JoinSet;
pub use task::{AbortHandle, Id, JoinError, JoinHandle};

/// Spawns a task on the current runtime and returns its [`JoinHandle`].
///
/// # Where the task runs
/// With the DLB scheduler (the default):
/// - Spawned during a task's poll on a worker while another worker is
///   idle, its place is decided when the spawner's poll ends. If the
///   spawner completed and spawned only this one task (the chain case: a
///   request handed to its successor), the successor keeps the worker and
///   runs next, as tokio's LIFO slot would run it. Otherwise (a spawner
///   still alive, such as an accept loop, or a fan-out of several tasks)
///   each task spawned is handed off through the DLB queue, where the
///   arbiter picks its worker, if another worker is still idle then; if
///   none is, they go to the back of the local queue.
/// - Spawned on a worker while no other worker is idle: the back of that
///   worker's local queue.
/// - Spawned from a thread that is not one of the runtime's workers (a
///   `block_on` caller, a blocking-pool thread, after [`Handle::enter`]):
///   handed off through the runtime's remote port; the arbiter picks the
///   worker.
///
/// With [`Scheduler::WorkStealing`], a task spawned during a poll goes to
/// the worker's LIFO slot (unless [`Builder::disable_lifo_slot`]; the
/// slot's previous task moves to the worker's deque, which idle workers
/// steal from), and one spawned from another thread to the shared
/// injector. On a current-thread runtime it goes to the back of the
/// runtime's one queue.
///
/// # What if a queue is full?
/// Nothing is refused and nothing is dropped. The local queues, the
/// overflow queue, the injector and the current-thread queue are unbounded
/// lists of tasks that exist (a task is queued at most once), so their
/// length is bounded by the live tasks; a worker whose local queue grows
/// past [`Builder::shed_threshold`] sheds part of it to idle workers at
/// its maintenance steps (DLB scheduler). A
/// handoff whose DLB send comes up short (the credit pool of
/// [`Builder::dlb_credits`] is empty) keeps its task: on a worker the task
/// goes to that worker's local queue (counted in
/// [`WorkerMetrics::fallbacks`]); from another thread it goes to the
/// overflow queue, which every worker takes its share of, and a worker is
/// woken (counted in [`RuntimeMetrics::remote_fallbacks`]). Once the
/// runtime has shut down, a spawned task is cancelled at once: its handle
/// gives a cancelled [`JoinError`].
///
/// # Panics
/// Outside a runtime.
#[cfg(not(loom))]
#[track_caller]
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    // The handle is borrowed from the thread's context, not cloned: a clone
    // and its drop per spawn are five reference-count RMWs, one of them on
    // the count every worker shares (7% of `ping_pong`'s samples).
    context::with_current(|handle| match handle {
        Some(handle) => handle.spawn(future),
        None => panic!(
            "`spawn` called outside a Fulcrum runtime: call it from a task, inside \
             `Runtime::block_on`, or after `Handle::enter`"
        ),
    })
}

/// Yields to the scheduler once. As in tokio, on a worker of a
/// multi-thread runtime the task runs again only once the worker has run
/// the other tasks it has queued and looked for new work (DLB deliveries,
/// remote spawns, I/O events), or at its next maintenance tick at the
/// latest; elsewhere it is queued again behind the tasks already waiting.
pub async fn yield_now() {
    struct YieldNow(bool);

    impl Future for YieldNow {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                return Poll::Ready(());
            }
            self.0 = true;
            #[cfg(not(loom))]
            let deferred = crate::scheduler::defer(cx.waker());
            #[cfg(loom)]
            let deferred = false;
            if !deferred {
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        }
    }

    YieldNow(false).await
}
