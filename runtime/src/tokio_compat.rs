//! Feature `tokio-compat`: a tokio runtime beside Fulcrum's, for libraries
//! that call tokio's runtime themselves.
//!
//! reqwest, sqlx's `runtime-tokio` and redis's `tokio-comp` call
//! `tokio::spawn`, `tokio::time` and `tokio::net` directly, and those panic
//! ("there is no reactor running, must be called from the context of a
//! Tokio 1.x runtime") on any thread that has not entered a tokio runtime.
//! With this feature, every thread that runs Fulcrum tasks — the workers,
//! the blocking pool's threads, and the caller of `block_on` for as long
//! as it runs — has entered the handle of one small, process-wide tokio
//! runtime (one worker thread named `tokio-compat`, its I/O and time
//! drivers), built on first use. Those libraries' calls then work inside
//! Fulcrum tasks.
//!
//! What it costs: **their sockets and timers live on tokio's driver, not on
//! Fulcrum's per-worker reactors**, and the tasks they spawn run on
//! tokio's worker thread, not on the DLB workers. Their readiness wakes
//! cross to that thread and back; the DLB queue balances none of it. Code
//! written against Fulcrum's own APIs is unaffected.

use std::io;
use std::sync::OnceLock;

static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();

fn runtime() -> io::Result<&'static tokio::runtime::Runtime> {
    let built = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tokio-compat")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });
    built
        .as_ref()
        .map_err(|e| io::Error::other(format!("tokio-compat runtime: {e}")))
}

/// The handle of the tokio runtime that Fulcrum's threads enter, for
/// spawning on it explicitly (`handle()?.spawn(...)`).
///
/// # Errors
/// When the tokio runtime could not be built (its thread or driver).
pub fn handle() -> io::Result<tokio::runtime::Handle> {
    runtime().map(|rt| rt.handle().clone())
}

/// Entered for the life of a runtime thread (or of a `block_on` call).
pub(crate) type ThreadGuard = Option<tokio::runtime::EnterGuard<'static>>;

/// Enters the tokio runtime's context on this thread until the guard drops.
pub(crate) fn enter() -> ThreadGuard {
    match runtime() {
        Ok(rt) => Some(rt.enter()),
        Err(e) => {
            tracing::error!("{e}; tokio-based libraries will panic on this thread");
            None
        }
    }
}
