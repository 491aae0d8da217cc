//! The current-thread scheduler: one queue, driven by `block_on` on the
//! calling thread.
//!
//! Tasks spawned from other threads (or while no `block_on` runs) wait in
//! the queue until a `block_on` drives it, as with tokio's current-thread
//! runtime.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::AtomicBool as StdAtomicBool;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};
use std::task::{Context, Poll};

use futures_task::ArcWake;

use crate::park::{Parker, Unparker};
use crate::time::Clock;

use super::owned::OwnedTasks;
use crate::loom::{lock, Arc, AtomicBool, Mutex};
use crate::metrics::{RuntimeMetrics, WorkerCounters};
use crate::task::{JoinHandle, Notified, Schedule, Task};

/// Tasks run between two polls of the `block_on` future.
const BATCH: usize = 61;

pub(crate) struct Shared {
    queue: Mutex<VecDeque<Notified<Arc<Shared>>>>,
    /// Wakes the thread inside `block_on` on a schedule.
    driver: Mutex<Option<Unparker>>,
    pub(crate) counters: WorkerCounters,
    pub(crate) owned: OwnedTasks<Arc<Shared>>,
    shutdown: AtomicBool,
}

impl Schedule for Arc<Shared> {
    fn schedule(&self, task: Notified<Self>) {
        if self.shutdown.load(Acquire) {
            drop(task);
            return;
        }
        lock(&self.queue).push_back(task);
        if let Some(u) = lock(&self.driver).as_ref() {
            u.unpark();
        }
    }

    fn release(&self, task: &Task<Self>) -> Option<Task<Self>> {
        self.owned.remove(task)
    }
}

/// Wakes the `block_on` future: sets a flag and unparks the driver.
struct MainWaker {
    woken: StdAtomicBool,
    unparker: Unparker,
}

impl ArcWake for MainWaker {
    fn wake_by_ref(arc_self: &std::sync::Arc<Self>) {
        arc_self.woken.store(true, Release);
        arc_self.unparker.unpark();
    }
}

impl Shared {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            driver: Mutex::new(None),
            counters: WorkerCounters::default(),
            owned: OwnedTasks::new(),
            shutdown: AtomicBool::new(false),
        })
    }

    pub(crate) fn spawn<F>(self: &Arc<Self>, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        super::spawn_task(&self.owned, self, future)
    }

    /// Runs `future` to completion on this thread, running spawned tasks
    /// while it waits; this thread's timers run on `clock`, which it
    /// auto-advances when paused.
    pub(crate) fn block_on<F: Future>(
        self: &Arc<Self>,
        clock: std::sync::Arc<Clock>,
        future: F,
    ) -> F::Output {
        let mut parker = Parker::new(clock, true);
        let waker = std::sync::Arc::new(MainWaker {
            woken: StdAtomicBool::new(true),
            unparker: parker.unparker(),
        });
        let main_waker = futures_task::waker(waker.clone());
        let mut cx = Context::from_waker(&main_waker);
        let mut future = pin!(future);
        *lock(&self.driver) = Some(parker.unparker());
        let _clear = ClearDriver(self);
        let mut busy = BusyTime::new(&self.counters);
        loop {
            parker.fire_timers();
            if waker.woken.swap(false, AcqRel) {
                if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                    return out;
                }
            }
            let mut ran = 0;
            while ran < BATCH {
                let next = lock(&self.queue).pop_front();
                let Some(task) = next else { break };
                WorkerCounters::add(&self.counters.tasks_polled, 1);
                crate::coop::budget(None, || task.run(crate::clock::now_ns()));
                ran += 1;
            }
            if ran == BATCH {
                // Still busy: look at the sockets between batches, as
                // tokio's maintenance tick does, or tasks that keep the
                // queue full (a yield loop) would starve the ones waiting
                // for I/O.
                parker.poll_now();
            } else if ran == 0 && !waker.woken.load(Acquire) && lock(&self.queue).is_empty() {
                busy.stop();
                parker.park();
                WorkerCounters::add(&self.counters.parks, 1);
                busy.start();
            }
        }
    }

    /// Tasks waiting in the queue.
    pub(crate) fn queue_len(&self) -> usize {
        lock(&self.queue).len()
    }

    pub(crate) fn metrics(&self) -> RuntimeMetrics {
        let mut worker = self.counters.snapshot();
        worker.local_queue_depth = lock(&self.queue).len() as u64;
        RuntimeMetrics {
            workers: vec![worker],
            remote_fallbacks: 0,
            alive_tasks: self.owned.alive(),
        }
    }

    /// Cancels every live task and drops queued permissions.
    pub(crate) fn shutdown(&self) {
        self.shutdown.store(true, Release);
        self.owned.close_and_shutdown();
        let queued: Vec<_> = lock(&self.queue).drain(..).collect();
        drop(queued);
    }
}

/// Adds the time the driver thread spends out of `park` to its busy time.
struct BusyTime<'a> {
    counters: &'a WorkerCounters,
    since: Option<std::time::Instant>,
}

impl<'a> BusyTime<'a> {
    fn new(counters: &'a WorkerCounters) -> Self {
        Self {
            counters,
            since: Some(std::time::Instant::now()),
        }
    }

    fn start(&mut self) {
        self.since = Some(std::time::Instant::now());
    }

    fn stop(&mut self) {
        if let Some(since) = self.since.take() {
            self.counters.add_busy(since.elapsed());
        }
    }
}

impl Drop for BusyTime<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

struct ClearDriver<'a>(&'a Shared);

impl Drop for ClearDriver<'_> {
    fn drop(&mut self) {
        *lock(&self.0.driver) = None;
    }
}
