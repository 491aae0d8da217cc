//! [`Runtime`]: the worker threads and everything they run, and its
//! shutdown.

use std::fmt;
use std::future::Future;
use std::io;
use std::thread;
use std::time::{Duration, Instant};

use crate::handle::{block_on_here, Handle, Inner};
use crate::scheduler::multi;
use crate::task::JoinHandle;
use crate::Builder;

/// The runtime: its worker threads and everything they run.
///
/// Dropping it shuts it down: workers stop after their current poll, are
/// joined, and every task still alive is cancelled (its future dropped on
/// the dropping thread). Then blocking calls that have not started are
/// cancelled and those running are waited for, as in tokio;
/// [`shutdown_timeout`](Self::shutdown_timeout) bounds that wait.
pub struct Runtime {
    handle: Handle,
    workers: Vec<Option<thread::JoinHandle<multi::WorkerExit>>>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("handle", &self.handle)
            .finish()
    }
}

impl Runtime {
    /// A runtime of `handle`, whose worker threads are `workers` (none for
    /// the current-thread runtime); built by [`Builder::build`].
    pub(crate) fn from_parts(
        handle: Handle,
        workers: Vec<thread::JoinHandle<multi::WorkerExit>>,
    ) -> Runtime {
        Runtime {
            handle,
            workers: workers.into_iter().map(Some).collect(),
        }
    }

    /// A multi-thread runtime with default settings.
    ///
    /// # Errors
    /// As [`Builder::build`].
    pub fn new() -> io::Result<Runtime> {
        Builder::new_multi_thread().build()
    }

    /// The runtime's handle.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Spawns a task on the runtime, as [`Handle::spawn`] (whose docs say
    /// where it goes and what happens when a queue is full).
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }

    /// Runs `f` on the runtime's blocking pool; see
    /// [`spawn_blocking`](crate::spawn_blocking).
    pub fn spawn_blocking<F, R>(&self, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.handle.spawn_blocking(f)
    }

    /// Runs `future` on the current thread until it completes. The future
    /// need not be `Send`. On a current-thread runtime this thread also runs
    /// the spawned tasks.
    ///
    /// # Panics
    /// When called from a thread that already runs a runtime (a worker, or
    /// inside another `block_on`).
    #[track_caller]
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let _tokio: crate::tokio_compat::ThreadGuard = crate::tokio_compat::enter();
        let _context = crate::context::enter_running(self.handle.clone());
        match &self.handle.inner {
            Inner::Current(shared) => shared.block_on(self.handle.clock.clone(), future),
            Inner::Multi(_) => block_on_here(self.handle.clock.clone(), future),
        }
    }

    /// Shuts down, waiting at most `timeout` for the workers to finish the
    /// polls they are in and for the blocking pool's running closures.
    /// Workers and blocking threads still busy after that are left to finish
    /// on their own (detached). Blocking tasks that have not started are
    /// cancelled.
    pub fn shutdown_timeout(mut self, timeout: Duration) {
        self.shutdown(Some(timeout));
    }

    fn shutdown(&mut self, timeout: Option<Duration>) {
        let deadline = timeout.map(|t| Instant::now() + t);
        match &self.handle.inner {
            Inner::Current(shared) => shared.shutdown(),
            Inner::Multi(shared) => {
                shared.begin_shutdown();
                let mut ports = Vec::new();
                // Dropped only after every worker stopped: idle workers may
                // be assisting on a peer's epoll fd until then.
                let mut pollers = Vec::new();
                for slot in self.workers.iter_mut() {
                    let Some(worker) = slot.take() else { continue };
                    if let Some(deadline) = deadline {
                        while !worker.is_finished() && Instant::now() < deadline {
                            thread::sleep(Duration::from_millis(1));
                        }
                        if !worker.is_finished() {
                            tracing::warn!(
                                "shutdown_timeout: a worker is still busy; detaching it"
                            );
                            continue;
                        }
                    }
                    match worker.join() {
                        Ok((port, poll)) => {
                            ports.push(port);
                            pollers.push(poll);
                        }
                        Err(_) => tracing::error!("a worker thread panicked outside a task"),
                    }
                }
                shared.finish_shutdown(ports);
                drop(pollers);
            }
        }
        // After the tasks were cancelled, so that a closure waiting on a task
        // (through a channel, say) is released rather than waited for.
        self.handle.blocking.shutdown(deadline);
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shutdown(None);
    }
}
