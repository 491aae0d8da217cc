//! The blocking pool: [`spawn_blocking`] runs a closure on a thread where it
//! may block, and returns a [`JoinHandle`] for its result.
//!
//! # Design
//! A blocking call is an ordinary task of the task system (see
//! [`crate::task`]): its future, [`BlockingTask`], runs the closure on its
//! first poll and is never pending. Its scheduler is the pool itself
//! (`Arc<BlockingPool>`), so the `JoinHandle`, `abort`, `is_finished` and
//! the panic-to-[`JoinError`](crate::JoinError) conversion all come from the
//! task system unchanged.
//!
//! The pool is one queue (`Mutex<VecDeque>` plus a `Condvar`) served by up
//! to `max_blocking_threads` OS threads, started on demand, as in tokio:
//! - a spawn queues the task and wakes an idle thread if there is one, else
//!   starts a new thread while under the cap; past the cap the task waits in
//!   the queue for a thread to finish its current closure;
//! - a thread runs queued tasks until the queue is empty, then waits for
//!   work for at most `thread_keep_alive` and exits when that expires;
//! - if the OS refuses a new thread, the task stays queued (a thread of the
//!   pool runs it later), a warning is logged, and the next spawn tries to
//!   start a thread again. Nothing panics in the caller.
//!
//! Each queued entry carries the task's owned reference ([`Task`]) next to
//! its run permission, so that shutdown can cancel tasks that never
//! started: their closures are dropped without running and their handles
//! report a cancelled [`JoinError`](crate::JoinError).
//!
//! Aborting a blocking task that has not started cancels it (the closure is
//! dropped unrun); aborting one that is running has no effect on the closure
//! (a thread cannot be interrupted), and its handle then reports the
//! closure's result, as in tokio.
//!
//! # Context
//! Pool threads enter the runtime's context, so [`Handle::current`],
//! [`spawn`](crate::spawn) and [`spawn_blocking`] work inside the closure.
//! They have no timer driver: a Fulcrum timer (`sleep`, `timeout`, ...)
//! polled directly on a pool thread panics, as on any thread that does not
//! run the runtime. Spawn a task for that instead.
//!
//! # Shutdown
//! [`BlockingPool::shutdown`] (called by `Runtime`'s shutdown after the
//! workers have stopped and the tasks were cancelled) stops accepting work
//! (later spawns are cancelled at once), cancels every queued task, wakes
//! the idle threads so they exit, and joins the threads still running a
//! closure — until the shutdown deadline if there is one, after which they
//! are detached and finish on their own.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use crate::loom::Arc;
use crate::task::{self, JoinHandle, Notified, Schedule, Task};
use crate::Handle;

/// Default cap on the number of blocking threads (tokio's).
pub(crate) const DEFAULT_MAX_THREADS: usize = 512;
/// Default time an idle blocking thread waits for work before it exits
/// (tokio's).
pub(crate) const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Runs `f` on a thread of the current runtime's blocking pool, where it may
/// block (on file I/O, a lock, a long computation) without stalling the
/// workers.
///
/// Awaiting the returned handle gives `f`'s result, or a
/// [`JoinError`](crate::JoinError) that [`is_panic`](crate::JoinError::is_panic)
/// if `f` panicked, or [`is_cancelled`](crate::JoinError::is_cancelled) if
/// the runtime shut down (or the handle was aborted) before `f` started.
/// Aborting once `f` runs has no effect on it.
///
/// The pool grows on demand up to
/// [`Builder::max_blocking_threads`](crate::Builder::max_blocking_threads)
/// threads (512 by default). Idle threads exit after
/// [`Builder::thread_keep_alive`](crate::Builder::thread_keep_alive)
/// (10 s by default).
///
/// # What if every thread is busy?
/// The call is queued, never refused: the pool's queue is unbounded, and
/// its calls run in order as threads finish their closures. Below the cap
/// a call that finds no idle thread starts a new one; if the OS refuses
/// the thread, the call stays queued for a running thread (or for the next
/// call, which tries to start one again) and a warning is logged. After
/// the runtime shut down, the call is cancelled at once, unrun.
///
/// Inside `f`, [`Handle::current`] and [`spawn`](crate::spawn) work; Fulcrum
/// timers cannot be polled there.
///
/// ```
/// let rt = fulcrum_runtime::Runtime::new()?;
/// let n = rt.block_on(async {
///     fulcrum_runtime::spawn_blocking(|| {
///         std::thread::sleep(std::time::Duration::from_millis(5));
///         6 * 7
///     })
///     .await
///     .expect("the closure panicked")
/// });
/// assert_eq!(n, 42);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Panics
/// Outside a runtime.
#[track_caller]
pub fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    match Handle::try_current() {
        Ok(handle) => handle.spawn_blocking(f),
        Err(_) => panic!(
            "`spawn_blocking` called outside a Fulcrum runtime: call it from a task, inside \
             `Runtime::block_on`, or after `Handle::enter`"
        ),
    }
}

/// The future of a blocking task: runs the closure on its first poll.
struct BlockingTask<F> {
    func: Option<F>,
}

// The closure is never pinned: it is moved out before it runs.
impl<F> Unpin for BlockingTask<F> {}

impl<F, R> Future for BlockingTask<F>
where
    F: FnOnce() -> R,
{
    type Output = R;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<R> {
        // The task system polls a task again only if it returned `Pending`,
        // which this future never does.
        let func = self
            .func
            .take()
            .expect("a blocking task is polled once: it is never pending");
        Poll::Ready(func())
    }
}

/// A task waiting in the pool's queue.
struct Queued {
    /// Permission to run it.
    notified: Notified<Arc<BlockingPool>>,
    /// The owned reference, to cancel it at shutdown if it never ran. `None`
    /// only for tasks that come back through [`Schedule::schedule`], which
    /// blocking tasks never do (see there).
    owner: Option<Task<Arc<BlockingPool>>>,
}

struct State {
    queue: VecDeque<Queued>,
    /// Threads alive (running a closure, or idle).
    num_threads: usize,
    /// Threads waiting for work and not yet claimed by a spawn.
    num_idle: usize,
    /// Wake-ups sent to idle threads and not yet taken.
    num_notify: usize,
    shutdown: bool,
    /// Join handles of the live threads, by thread number. A thread that
    /// exits on its idle timeout removes (detaches) its own.
    threads: HashMap<usize, thread::JoinHandle<()>>,
    next_thread: usize,
    /// A thread spawn failed and has not succeeded since (to log the
    /// recovery once).
    spawn_failing: bool,
}

/// The pool of threads behind [`spawn_blocking`], one per runtime, shared by
/// every [`Handle`] of it.
pub(crate) struct BlockingPool {
    state: Mutex<State>,
    /// Signals queued work (and shutdown) to idle threads.
    condvar: Condvar,
    max_threads: usize,
    keep_alive: Duration,
}

impl fmt::Debug for BlockingPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("BlockingPool")
            .field("threads", &state.num_threads)
            .field("idle", &state.num_idle)
            .field("queued", &state.queue.len())
            .field("max_threads", &self.max_threads)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

impl Schedule for Arc<BlockingPool> {
    /// Queues a task. Blocking tasks reach the queue through
    /// [`BlockingPool::spawn`] only: their future is never pending, and an
    /// abort finds them queued (`NOTIFIED`), running or complete, so the task
    /// system never schedules them again. This is kept correct anyway: the
    /// task is queued for a live thread.
    fn schedule(&self, task: Notified<Self>) {
        let mut state = self.lock();
        if state.shutdown {
            return;
        }
        state.queue.push_back(Queued {
            notified: task,
            owner: None,
        });
        self.notify_idle(&mut state);
    }

    fn release(&self, _task: &Task<Self>) -> Option<Task<Self>> {
        // The owned reference left with the queue entry when the task
        // started; the pool keeps no list of running tasks.
        None
    }
}

impl BlockingPool {
    pub(crate) fn new(max_threads: usize, keep_alive: Duration) -> Arc<Self> {
        Arc::new(BlockingPool {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                num_threads: 0,
                num_idle: 0,
                num_notify: 0,
                shutdown: false,
                threads: HashMap::new(),
                next_thread: 0,
                spawn_failing: false,
            }),
            condvar: Condvar::new(),
            max_threads,
            keep_alive,
        })
    }

    /// Locks the state, ignoring poisoning: user code never runs under the
    /// lock, and every update is one step.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes one idle thread, if any; returns whether there was one.
    fn notify_idle(&self, state: &mut State) -> bool {
        if state.num_idle == 0 {
            return false;
        }
        state.num_idle -= 1;
        state.num_notify += 1;
        self.condvar.notify_one();
        true
    }

    /// Runs `f` on a pool thread; `handle` is the runtime the threads enter.
    pub(crate) fn spawn<F, R>(self: &Arc<Self>, handle: &Handle, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let future = BlockingTask { func: Some(f) };
        let (owner, notified, join) = task::new_task(future, self.clone());
        let mut state = self.lock();
        if state.shutdown {
            drop(state);
            // Never runs: the closure is dropped here and the handle reports
            // a cancellation.
            drop(notified);
            owner.shutdown();
            return join;
        }
        let id = notified.id();
        state.queue.push_back(Queued {
            notified,
            owner: Some(owner),
        });
        if !self.notify_idle(&mut state) && state.num_threads < self.max_threads {
            self.start_thread(&mut state, handle);
        }
        tracing::debug!(task = %id, threads = state.num_threads, "spawn_blocking");
        join
    }

    /// Starts a pool thread. Called with the state locked, so the new thread
    /// finds its join handle in place when it first takes the lock. On
    /// failure the queued work waits for a live thread, or for the next
    /// spawn to try again.
    fn start_thread(self: &Arc<Self>, state: &mut State, handle: &Handle) {
        let index = state.next_thread;
        let pool = self.clone();
        let handle = handle.clone();
        let spawned = thread::Builder::new()
            .name(format!("fulcrum-blocking-{index}"))
            .spawn(move || pool.run_thread(handle, index));
        match spawned {
            Ok(join) => {
                state.next_thread += 1;
                state.num_threads += 1;
                state.threads.insert(index, join);
                if state.spawn_failing {
                    state.spawn_failing = false;
                    tracing::info!(
                        threads = state.num_threads,
                        "blocking pool: starting threads works again"
                    );
                }
            }
            Err(e) => {
                state.spawn_failing = true;
                if state.num_threads == 0 {
                    tracing::warn!(
                        queued = state.queue.len(),
                        "blocking pool: cannot start a thread ({e}) and none is running; the \
                         queued blocking tasks wait until a later spawn_blocking starts one"
                    );
                } else {
                    tracing::warn!(
                        threads = state.num_threads,
                        queued = state.queue.len(),
                        "blocking pool: cannot start another thread ({e}); the task waits for \
                         a running one"
                    );
                }
            }
        }
    }

    /// A pool thread: runs queued tasks, waits for more for at most the
    /// keep-alive, and exits when that expires or at shutdown.
    fn run_thread(self: Arc<Self>, handle: Handle, index: usize) {
        let _tokio: crate::tokio_compat::ThreadGuard = crate::tokio_compat::enter();
        let _context = crate::context::enter(handle);
        let mut state = self.lock();
        'work: loop {
            while let Some(Queued { notified, owner }) = state.queue.pop_front() {
                drop(state);
                drop(owner);
                notified.run(crate::clock::now_ns());
                state = self.lock();
            }
            if state.shutdown {
                break 'work;
            }
            // Idle: wait for a spawn to claim this thread.
            state.num_idle += 1;
            let deadline = Instant::now() + self.keep_alive;
            loop {
                let timeout = deadline.saturating_duration_since(Instant::now());
                state = match self.condvar.wait_timeout(state, timeout) {
                    Ok((guard, _)) => guard,
                    Err(poisoned) => poisoned.into_inner().0,
                };
                if state.num_notify > 0 {
                    // Claimed by a spawn (which took us off `num_idle`).
                    state.num_notify -= 1;
                    continue 'work;
                }
                if state.shutdown {
                    state.num_idle -= 1;
                    break 'work;
                }
                if Instant::now() >= deadline {
                    state.num_idle -= 1;
                    // Nobody will join this thread: detach it.
                    drop(state.threads.remove(&index));
                    tracing::debug!(
                        thread = index,
                        threads = state.num_threads - 1,
                        "blocking thread idle for {:?}; exiting",
                        self.keep_alive
                    );
                    break 'work;
                }
                // A spurious wake-up: wait again until the deadline.
            }
        }
        state.num_threads -= 1;
    }

    /// Shuts the pool down: stops accepting work, cancels the queued tasks,
    /// wakes the idle threads and joins the threads, waiting for the
    /// closures they run until `deadline` if there is one (then detaching
    /// the rest). Calling it again is harmless.
    pub(crate) fn shutdown(&self, deadline: Option<Instant>) {
        let (queued, threads) = {
            let mut state = self.lock();
            state.shutdown = true;
            self.condvar.notify_all();
            let queued: Vec<Queued> = state.queue.drain(..).collect();
            let threads: Vec<_> = state.threads.drain().map(|(_, t)| t).collect();
            (queued, threads)
        };
        if !queued.is_empty() {
            tracing::debug!(
                tasks = queued.len(),
                "blocking pool shutdown: cancelling queued tasks"
            );
        }
        // Outside the lock: dropping a closure runs user code.
        for Queued { notified, owner } in queued {
            drop(notified);
            match owner {
                Some(task) => task.shutdown(),
                None => tracing::warn!("blocking pool shutdown: a queued task has no owner"),
            }
        }
        let me = thread::current().id();
        let mut detached = 0;
        for t in threads {
            if t.thread().id() == me {
                // Shut down from inside one of our own closures: this thread
                // exits when the closure returns.
                continue;
            }
            if let Some(deadline) = deadline {
                while !t.is_finished() && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(1));
                }
                if !t.is_finished() {
                    detached += 1;
                    continue;
                }
            }
            if t.join().is_err() {
                tracing::error!("a blocking pool thread panicked outside a task");
            }
        }
        if detached > 0 {
            tracing::warn!(
                threads = detached,
                "shutdown_timeout: blocking closures still running; detaching their threads"
            );
        }
    }
}
