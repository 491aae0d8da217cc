//! Asynchronous signal handling: [`ctrl_c`] and [`unix::signal`], with
//! tokio's names.
//!
//! ```no_run
//! use fulcrum_net::signal::unix::{signal, SignalKind};
//! # async fn run() -> std::io::Result<()> {
//! let mut hangups = signal(SignalKind::hangup())?;
//! while hangups.recv().await.is_some() {
//!     println!("reloading the configuration");
//! }
//! # Ok(()) }
//! ```
//!
//! # Handlers stay installed
//! The first listener for a signal installs Fulcrum's handler for it (with
//! `sigaction`, `SA_RESTART`), and the handler stays installed for the rest
//! of the process, as in tokio: once a program has listened for `SIGINT`
//! or `SIGTERM`, those signals no longer terminate it, even after every
//! listener is gone (deliveries nobody listens for are just counted). Any
//! handler installed before is replaced, not chained.
//!
//! # Design
//! A signal handler may only do async-signal-safe work: no locks, no
//! allocation, no wakers. Fulcrum's handler does two things:
//!
//! 1. it bumps a process-wide delivery counter for the signal (an atomic);
//! 2. it writes 1 to the eventfd of **every listener** of that signal.
//!
//! Each [`Signal`](unix::Signal) owns its own non-blocking eventfd, which
//! registers (like a socket) with the reactor of the worker that first
//! polls the listener. One eventfd per listener, rather than one shared
//! pipe, is what makes several listeners of one signal each wake: with a
//! shared fd, the first listener to drain it would hide the edge-triggered
//! readiness from the others. A listener remembers the counter value it has
//! reported; [`recv`](unix::Signal::recv) returns as soon as the counter
//! moved, and otherwise drains its eventfd and checks again before
//! sleeping, so a delivery racing the drain is never lost (the handler
//! bumps the counter *before* writing, so a write the drain missed is a new
//! readiness edge). Deliveries between two `recv`s coalesce into one, as
//! with tokio; deliveries before the listener was created are not reported.
//!
//! The handler finds the listeners' eventfds in a lock-free, append-only
//! list of slots (`signal number, fd` pairs, both atomics). Slots are
//! allocated outside the handler, never freed, and reused by later
//! listeners, so the handler only ever follows valid pointers. A listener
//! being dropped empties its slot, then waits until no handler is running
//! (a process-wide count of running handlers) before closing its eventfd,
//! so a handler never writes to a closed (or reused) descriptor. A handler
//! that read a slot just as it was handed to another listener may write to
//! that listener's eventfd: a spurious wake-up, which the counter check
//! absorbs.
//!
//! `SIGILL`, `SIGFPE`, `SIGKILL`, `SIGSEGV` and `SIGSTOP` cannot be
//! listened for.

mod registry;
pub mod unix;

use std::io;

/// Completes on the next `SIGINT` (Ctrl-C) delivered after the future is
/// first polled.
///
/// Installs the `SIGINT` handler for good (see the [module
/// docs](self#handlers-stay-installed)): after the first call, Ctrl-C no
/// longer stops the process by itself.
///
/// # Errors
/// If the handler cannot be installed, the eventfd cannot be created, or
/// the listener cannot register with the reactor (outside a runtime).
pub async fn ctrl_c() -> io::Result<()> {
    let mut listener = unix::signal(unix::SignalKind::interrupt())?;
    std::future::poll_fn(|cx| listener.poll_recv_io(cx)).await
}
