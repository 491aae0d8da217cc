//! The reactors: how tasks wait for file descriptors.
//!
//! Each runtime thread (every worker, and a thread inside `block_on`) has
//! its own reactor, a mio `Poll`. An fd is registered with the reactor of
//! the thread that first waits on it, and moves to the reactor of any other
//! runtime thread that waits on it later (at most once a millisecond), so
//! that a socket's readiness is dispatched by the worker that runs its
//! task, including after the task was handed to another worker.
//!
//! The public interface is [`unix::AsyncFd`] (tokio's shape), which owns
//! its fd-backed object and removes the fd from its reactor before closing
//! it. Fulcrum's sockets (`fulcrum-net`) are built on it.
//!
//! # What if a reactor is full?
//! A registration takes no slot in a table of the runtime's: its token is
//! the address of its readiness state. The only limit is the kernel's: a
//! user may register at most `fs.epoll.max_user_watches` fds across all
//! epoll sets, past which registering fails with `ENOSPC`, returned by
//! [`AsyncFd::new`](unix::AsyncFd::new) (or, for an fd registered lazily,
//! by its first poll); moving a registration that the new reactor cannot
//! take leaves it where it was. A thread collects at most 64 readiness
//! events per `epoll_wait`; the others stay ready in the kernel and come
//! with its next wait, so none is lost.
//!
//! # Readiness
//! Each registration keeps a readiness word (`tick << 16 | bits`). The
//! reactor ORs new readiness in and bumps the tick, then wakes the waiting
//! reader and writer. A task that gets `WouldBlock` clears the readiness it
//! observed (a guard's `clear_ready`), which only clears it if no newer
//! event arrived since (same tick), so an edge is never lost.

mod async_fd;
mod interest;
pub(crate) mod reactor;
mod registration;
pub(crate) mod release;
mod scheduled;

pub use self::interest::Interest;
pub use self::scheduled::Ready;
pub(crate) use self::scheduled::ScheduledIo;

/// Unix-specific I/O: [`AsyncFd`](unix::AsyncFd), with tokio's paths
/// (`tokio::io::unix`).
pub mod unix {
    pub use super::async_fd::{AsyncFd, AsyncFdReadyGuard, AsyncFdReadyMutGuard, TryIoError};
}

/// Readiness of a mio event.
pub(crate) fn ready_from_event(e: &mio::event::Event) -> Ready {
    let mut r = 0;
    if e.is_readable() {
        r |= Ready::READABLE.0;
    }
    if e.is_writable() {
        r |= Ready::WRITABLE.0;
    }
    if e.is_read_closed() {
        r |= Ready::READ_CLOSED.0;
    }
    if e.is_write_closed() {
        r |= Ready::WRITE_CLOSED.0;
    }
    if e.is_error() {
        r |= Ready::ERROR.0;
    }
    Ready(r)
}
