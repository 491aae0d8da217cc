//! The schedulers behind a [`Handle`](crate::Handle): the multi-thread
//! runtime's two ([`Scheduler::Dlb`](crate::Scheduler::Dlb), the default,
//! and the [`Scheduler::WorkStealing`](crate::Scheduler::WorkStealing)
//! comparison baseline, both in `multi`) and the current-thread scheduler
//! (`current`).

pub(crate) mod current;
pub(crate) mod multi;
pub(crate) mod owned;

use std::future::Future;

use crate::task::{self, JoinHandle, Schedule};
pub(crate) use multi::{block_in_place, defer};
use owned::OwnedTasks;

/// Spawns `future` as a task of `scheduler`: binds it to the owned-task
/// list (which cancels it at once after shutdown) and schedules its first
/// run.
pub(crate) fn spawn_task<F, S>(
    owned: &OwnedTasks<S>,
    scheduler: &S,
    future: F,
) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
    S: Schedule + Clone,
{
    let (task, notified, join) = task::new_task(future, scheduler.clone());
    if owned.bind(task) {
        scheduler.schedule(notified);
    }
    join
}
