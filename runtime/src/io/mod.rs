//! The reactor interface that `fulcrum-net` builds its sockets on.
//!
//! Each runtime thread (every worker, and a thread inside `block_on`) has
//! its own mio `Poll`: its reactor. [`Registration::new`] registers an I/O
//! source with the reactor of the thread that calls it, so a socket belongs
//! to the worker that first polls it; the readiness events of that socket
//! are dispatched by that worker, which wakes the waiting task wherever the
//! task runs.
//!
//! To run a connection on the worker the DLB arbiter picks, spawn a task
//! that owns the not-yet-registered socket: in DLB mode the spawn goes
//! through the DLB queue whenever another worker is idle, and the socket
//! registers where the task is first polled.
//!
//! # Readiness
//! Each registration keeps a readiness word (`tick << 16 | bits`). The
//! reactor ORs new readiness in and bumps the tick, then wakes the waiting
//! reader and writer. A task that gets `WouldBlock` clears the readiness it
//! observed with [`Registration::clear_readiness`], which only clears it if
//! no newer event arrived since (same tick), so an edge is never lost.

pub(crate) mod reactor;
mod scheduled;

use std::fmt;
use std::io;
use std::sync::atomic::Ordering::Acquire;
use std::sync::Arc;
use std::task::{Context, Poll};

pub use mio::Interest;

use self::reactor::Reactor;
pub(crate) use self::scheduled::ScheduledIo;
use self::scheduled::READY_MASK;
pub use self::scheduled::{Direction, Ready, ReadyEvent};

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

/// An I/O source registered with a runtime thread's reactor.
///
/// Dropping it deregisters nothing by itself: call
/// [`deregister`](Self::deregister) with the source first (the socket types
/// of `fulcrum-net` do this in their `Drop`), or close the fd, which removes
/// it from epoll.
pub struct Registration {
    io: Arc<ScheduledIo>,
    reactor: Arc<Reactor>,
    deregistered: bool,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("worker", &self.reactor.worker())
            .field(
                "ready",
                &Ready(self.io.readiness.load(Acquire) & READY_MASK),
            )
            .finish()
    }
}

impl Registration {
    /// Registers `source` for `interest` with the reactor of the current
    /// thread (the worker running the calling task, or the `block_on`
    /// thread).
    ///
    /// # Errors
    /// `Other` outside a Fulcrum runtime thread; the OS error of
    /// `epoll_ctl` otherwise.
    pub fn new(source: &mut impl mio::event::Source, interest: Interest) -> io::Result<Self> {
        let reactor = reactor::current().ok_or_else(|| {
            io::Error::other(
                "I/O registration outside a Fulcrum runtime: create and poll sockets from a \
                 task, or inside `Runtime::block_on`",
            )
        })?;
        let io = reactor.register(source, interest)?;
        Ok(Self {
            io,
            reactor,
            deregistered: false,
        })
    }

    /// The worker that owns this registration (`None` for a `block_on`
    /// thread).
    pub fn worker(&self) -> Option<usize> {
        self.reactor.worker()
    }

    /// Polls for readiness in `direction`; registers the task's waker when
    /// not ready.
    pub fn poll_ready(&self, cx: &mut Context<'_>, direction: Direction) -> Poll<ReadyEvent> {
        if crate::coop::poll_proceed(cx).is_pending() {
            return Poll::Pending;
        }
        let ready = self.io.poll_ready(cx, direction);
        if ready.is_ready() {
            crate::coop::consume();
        }
        ready
    }

    fn ready_now(&self, want: Ready) -> Option<ReadyEvent> {
        self.io.ready_now(want)
    }

    /// Polls for read readiness.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<ReadyEvent> {
        self.poll_ready(cx, Direction::Read)
    }

    /// Polls for write readiness.
    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<ReadyEvent> {
        self.poll_ready(cx, Direction::Write)
    }

    /// Waits for readiness in `direction`.
    pub async fn ready(&self, direction: Direction) -> ReadyEvent {
        std::future::poll_fn(|cx| self.poll_ready(cx, direction)).await
    }

    /// Clears the readiness observed in `event`, unless newer readiness has
    /// arrived since. Closed and error bits stay set: they are final.
    pub fn clear_readiness(&self, event: ReadyEvent) {
        self.io.clear_readiness(event);
    }

    /// Runs `f` when ready in `direction`, clearing the readiness and waiting
    /// again when `f` returns `WouldBlock`.
    pub fn poll_io<R>(
        &self,
        cx: &mut Context<'_>,
        direction: Direction,
        mut f: impl FnMut() -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            let ev = match self.poll_ready(cx, direction) {
                Poll::Ready(ev) => ev,
                Poll::Pending => return Poll::Pending,
            };
            match f() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.clear_readiness(ev),
                res => return Poll::Ready(res),
            }
        }
    }

    /// Runs `f` once if the source looks ready in `direction`; `WouldBlock`
    /// clears the readiness. For `try_read`/`try_write`.
    pub fn try_io<R>(
        &self,
        direction: Direction,
        f: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        let Some(ev) = self.ready_now(Ready::for_interest(direction)) else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        match f() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.clear_readiness(ev);
                Err(e)
            }
            res => res,
        }
    }

    /// Removes `source` from the reactor. Call it before closing the source.
    ///
    /// # Errors
    /// The OS error of `epoll_ctl`.
    pub fn deregister(&mut self, source: &mut impl mio::event::Source) -> io::Result<()> {
        if self.deregistered {
            return Ok(());
        }
        self.deregistered = true;
        self.reactor.deregister(source, &self.io)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if !self.deregistered {
            // The fd is being closed by its owner, which removes it from
            // epoll; release the shared state safely all the same.
            self.reactor.forget(&self.io);
        }
    }
}
