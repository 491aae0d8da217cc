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

use std::fmt;
use std::io;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Acquire};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

pub use mio::Interest;

use self::reactor::Reactor;

/// Readiness bits of an I/O source.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Ready(usize);

impl Ready {
    /// No readiness.
    pub const EMPTY: Ready = Ready(0);
    /// Readable.
    pub const READABLE: Ready = Ready(1);
    /// Writable.
    pub const WRITABLE: Ready = Ready(1 << 1);
    /// The read half is closed (EOF or peer shutdown).
    pub const READ_CLOSED: Ready = Ready(1 << 2);
    /// The write half is closed.
    pub const WRITE_CLOSED: Ready = Ready(1 << 3);
    /// An error is pending on the source.
    pub const ERROR: Ready = Ready(1 << 4);

    fn from_event(e: &mio::event::Event) -> Ready {
        let mut r = 0;
        if e.is_readable() {
            r |= Self::READABLE.0;
        }
        if e.is_writable() {
            r |= Self::WRITABLE.0;
        }
        if e.is_read_closed() {
            r |= Self::READ_CLOSED.0;
        }
        if e.is_write_closed() {
            r |= Self::WRITE_CLOSED.0;
        }
        if e.is_error() {
            r |= Self::ERROR.0;
        }
        Ready(r)
    }

    /// Readiness from raw `epoll_event.events` bits (assisted polls).
    fn from_epoll(bits: u32) -> Ready {
        let has = |flag: libc::c_int| bits & (flag as u32) != 0;
        let mut r = 0;
        if has(libc::EPOLLIN) || has(libc::EPOLLPRI) {
            r |= Self::READABLE.0;
        }
        if has(libc::EPOLLOUT) {
            r |= Self::WRITABLE.0;
        }
        if has(libc::EPOLLRDHUP) || has(libc::EPOLLHUP) {
            r |= Self::READ_CLOSED.0;
        }
        if has(libc::EPOLLHUP) {
            r |= Self::WRITE_CLOSED.0;
        }
        if has(libc::EPOLLERR) {
            r |= Self::ERROR.0;
        }
        Ready(r)
    }

    /// The readiness that satisfies a wait for `interest`.
    fn for_interest(interest: Direction) -> Ready {
        match interest {
            Direction::Read => Ready(Self::READABLE.0 | Self::READ_CLOSED.0 | Self::ERROR.0),
            Direction::Write => Ready(Self::WRITABLE.0 | Self::WRITE_CLOSED.0 | Self::ERROR.0),
        }
    }

    /// Whether no bit is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether readable.
    pub fn is_readable(self) -> bool {
        self.0 & (Self::READABLE.0 | Self::READ_CLOSED.0) != 0
    }

    /// Whether writable.
    pub fn is_writable(self) -> bool {
        self.0 & (Self::WRITABLE.0 | Self::WRITE_CLOSED.0) != 0
    }

    /// Whether the read half is closed.
    pub fn is_read_closed(self) -> bool {
        self.0 & Self::READ_CLOSED.0 != 0
    }

    /// Whether the write half is closed.
    pub fn is_write_closed(self) -> bool {
        self.0 & Self::WRITE_CLOSED.0 != 0
    }

    /// Whether an error is pending.
    pub fn is_error(self) -> bool {
        self.0 & Self::ERROR.0 != 0
    }
}

impl std::ops::BitOr for Ready {
    type Output = Ready;
    fn bitor(self, rhs: Ready) -> Ready {
        Ready(self.0 | rhs.0)
    }
}

impl std::ops::BitAnd for Ready {
    type Output = Ready;
    fn bitand(self, rhs: Ready) -> Ready {
        Ready(self.0 & rhs.0)
    }
}

impl fmt::Debug for Ready {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_set();
        for (bit, name) in [
            (Self::READABLE, "READABLE"),
            (Self::WRITABLE, "WRITABLE"),
            (Self::READ_CLOSED, "READ_CLOSED"),
            (Self::WRITE_CLOSED, "WRITE_CLOSED"),
            (Self::ERROR, "ERROR"),
        ] {
            if self.0 & bit.0 != 0 {
                list.entry(&name);
            }
        }
        list.finish()
    }
}

/// Readiness observed by a poll, to be cleared with
/// [`Registration::clear_readiness`] when an operation gets `WouldBlock`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadyEvent {
    tick: usize,
    /// The readiness seen.
    pub ready: Ready,
}

/// Which side of a source a task waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Waiting to read.
    Read,
    /// Waiting to write.
    Write,
}

const TICK_SHIFT: u32 = 16;
const READY_MASK: usize = (1 << TICK_SHIFT) - 1;

/// The state a reactor shares with one registered source.
pub(crate) struct ScheduledIo {
    /// `tick << 16 | ready bits`.
    readiness: AtomicUsize,
    reader: Mutex<Option<Waker>>,
    writer: Mutex<Option<Waker>>,
}

impl ScheduledIo {
    fn new() -> Self {
        Self {
            readiness: AtomicUsize::new(0),
            reader: Mutex::new(None),
            writer: Mutex::new(None),
        }
    }

    fn slot(&self, dir: Direction) -> &Mutex<Option<Waker>> {
        match dir {
            Direction::Read => &self.reader,
            Direction::Write => &self.writer,
        }
    }

    /// Called by the reactor for an event: adds readiness, wakes waiters.
    pub(crate) fn dispatch(&self, ready: Ready) {
        let _ = self.readiness.fetch_update(AcqRel, Acquire, |cur| {
            let tick = (cur >> TICK_SHIFT).wrapping_add(1);
            Some((tick << TICK_SHIFT) | (cur & READY_MASK) | ready.0)
        });
        if !(ready & Ready::for_interest(Direction::Read)).is_empty() {
            wake(&self.reader);
        }
        if !(ready & Ready::for_interest(Direction::Write)).is_empty() {
            wake(&self.writer);
        }
    }
}

fn wake(slot: &Mutex<Option<Waker>>) {
    let waker = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(w) = waker {
        w.wake();
    }
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
        let want = Ready::for_interest(direction);
        if let Some(ev) = self.ready_now(want) {
            crate::coop::consume();
            return Poll::Ready(ev);
        }
        {
            let mut slot = self
                .io
                .slot(direction)
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match slot.as_ref() {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        }
        // Re-check after publishing the waker: an event dispatched before we
        // stored it set the readiness first (the slot mutex orders the two).
        match self.ready_now(want) {
            Some(ev) => {
                crate::coop::consume();
                Poll::Ready(ev)
            }
            None => Poll::Pending,
        }
    }

    fn ready_now(&self, want: Ready) -> Option<ReadyEvent> {
        let cur = self.io.readiness.load(Acquire);
        let ready = Ready(cur & READY_MASK) & want;
        (!ready.is_empty()).then_some(ReadyEvent {
            tick: cur >> TICK_SHIFT,
            ready,
        })
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
        let clear = event.ready & (Ready::READABLE | Ready::WRITABLE);
        let _ = self.io.readiness.fetch_update(AcqRel, Acquire, |cur| {
            ((cur >> TICK_SHIFT) == event.tick).then_some(cur & !clear.0)
        });
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
