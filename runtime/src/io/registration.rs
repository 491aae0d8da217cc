//! [`Registration`]: an fd's place in a runtime thread's reactor, made on
//! first use and moved to whichever runtime thread polls it.
//!
//! Crate-private: users reach the reactor through [`AsyncFd`], which owns
//! the fd and deregisters it before closing it. That is what makes the raw
//! pointer tokens sound: an fd stays in an epoll set only while its
//! `ScheduledIo` is alive, because the fd is kept open until it has been
//! removed (`EPOLL_CTL_DEL`), and a removal that fails keeps the state alive
//! for good.
//!
//! # Moving with the task
//! A socket is registered with the reactor of the thread that first uses
//! it. When a task polls it from another runtime thread (the task was
//! handed off: a rescue, shedding, a spawn that crossed to another worker),
//! the registration moves to that thread's reactor, so that its readiness
//! is dispatched where the task now runs and the task stays moved: a light
//! connection rescued from a worker busy with a heavy one does not need a
//! rescue for each of its requests. A registration moves at most once per
//! [`MIN_STAY`], so that two tasks polling halves of one socket from two
//! workers cannot make it bounce on every poll.
//!
//! The move adds the fd to the new reactor first and then removes it from
//! the old one, so readiness that arrives meanwhile is reported by one or
//! both; `EPOLL_CTL_ADD` reports the fd's current state too. The move then
//! marks the registration ready (`ScheduledIo::assume_ready`) so that the
//! task tries its operation at once; a wrong guess costs one `WouldBlock`.
//! The loom model of `moves` in this module checks that no wake-up is lost.
//!
//! [`AsyncFd`]: super::AsyncFd

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering::Acquire, Ordering::Release};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::reactor::{self, Reactor};
use super::scheduled::{Direction, Ready, ReadyEvent, ScheduledIo};
use super::Interest;

/// A registration moves at most once per this interval.
pub(crate) const MIN_STAY: Duration = Duration::from_millis(1);

/// An fd's place in a reactor. The fd is not owned: [`AsyncFd`] owns it and
/// calls [`deregister`](Self::deregister) before closing it.
///
/// [`AsyncFd`]: super::AsyncFd
pub(crate) struct Registration {
    fd: RawFd,
    interest: Interest,
    state: OnceLock<Registered>,
    /// Serialises the first registration (two halves may race to it).
    init: Mutex<()>,
}

struct Registered {
    io: Arc<ScheduledIo>,
    owner: Mutex<Owner>,
    /// The owner reactor's address, for the lock-free check of
    /// [`Registration::follow`].
    owner_addr: AtomicUsize,
}

struct Owner {
    reactor: Arc<Reactor>,
    /// When the registration last moved (`None`: never).
    moved_at: Option<Instant>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("fd", &self.fd)
            .field("interest", &self.interest)
            .field("worker", &self.worker())
            .finish()
    }
}

fn outside_runtime() -> io::Error {
    io::Error::other(
        "I/O registration outside a Fulcrum runtime: create and poll sockets from a task, or \
         inside `Runtime::block_on`",
    )
}

impl Registration {
    /// A registration of `fd` made on first use, with the reactor of the
    /// thread that uses it.
    pub(crate) fn lazy(fd: RawFd, interest: Interest) -> Self {
        Self {
            fd,
            interest,
            state: OnceLock::new(),
            init: Mutex::new(()),
        }
    }

    /// Registers now, with the calling thread's reactor.
    ///
    /// # Errors
    /// `Other` outside a runtime thread; the OS error of `epoll_ctl`.
    pub(crate) fn register_now(&self) -> io::Result<()> {
        self.registered().map(|_| ())
    }

    fn registered(&self) -> io::Result<&Registered> {
        if let Some(r) = self.state.get() {
            self.follow(r);
            return Ok(r);
        }
        let _guard = self.init.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = self.state.get() {
            return Ok(r);
        }
        let reactor = reactor::current().ok_or_else(outside_runtime)?;
        let io = reactor.register(self.fd, self.interest)?;
        let r = Registered {
            io,
            owner_addr: AtomicUsize::new(Arc::as_ptr(&reactor) as usize),
            owner: Mutex::new(Owner {
                reactor,
                moved_at: None,
            }),
        };
        Ok(self.state.get_or_init(|| r))
    }

    /// Moves the registration to the calling thread's reactor if another
    /// owns it (see the module docs).
    fn follow(&self, r: &Registered) {
        let here = reactor::current_addr();
        if here == 0 || here == r.owner_addr.load(Acquire) {
            return;
        }
        let Some(new) = reactor::current() else {
            return;
        };
        let mut owner = r.owner.lock().unwrap_or_else(|e| e.into_inner());
        if Arc::ptr_eq(&owner.reactor, &new)
            || owner.moved_at.is_some_and(|t| t.elapsed() < MIN_STAY)
        {
            return;
        }
        if let Err(e) = new.adopt(self.fd, &r.io, self.interest) {
            tracing::debug!(fd = self.fd, "moving a registration: {e}; it stays");
            return;
        }
        let old = std::mem::replace(&mut owner.reactor, new);
        old.give_up(self.fd, &r.io);
        owner.moved_at = Some(Instant::now());
        r.owner_addr
            .store(Arc::as_ptr(&owner.reactor) as usize, Release);
        drop(owner);
        let mut assume = Ready::EMPTY;
        if self.interest.is_readable() {
            assume = assume | Ready::READABLE;
        }
        if self.interest.is_writable() {
            assume = assume | Ready::WRITABLE;
        }
        r.io.assume_ready(assume);
        tracing::debug!(
            fd = self.fd,
            from = ?old.worker(),
            to = ?reactor::current().and_then(|r| r.worker()),
            "registration moved with its task"
        );
    }

    /// The worker whose reactor owns the registration (`None`: a `block_on`
    /// thread, or not registered yet).
    pub(crate) fn worker(&self) -> Option<usize> {
        let r = self.state.get()?;
        let owner = r.owner.lock().unwrap_or_else(|e| e.into_inner());
        owner.reactor.worker()
    }

    /// Polls for readiness in `direction`; registers the task's waker when
    /// not ready.
    pub(crate) fn poll_ready(
        &self,
        cx: &mut Context<'_>,
        direction: Direction,
    ) -> Poll<io::Result<ReadyEvent>> {
        let r = match self.registered() {
            Ok(r) => r,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if crate::coop::poll_proceed(cx).is_pending() {
            return Poll::Pending;
        }
        let ready = r.io.poll_ready(cx, direction);
        if ready.is_ready() {
            crate::coop::consume();
        }
        ready.map(Ok)
    }

    /// Clears the readiness observed in `event`, unless newer readiness has
    /// arrived since.
    pub(crate) fn clear_readiness(&self, event: ReadyEvent) {
        if let Some(r) = self.state.get() {
            r.io.clear_readiness(event);
        }
    }

    /// Runs `f` when ready in `direction`, clearing the readiness and waiting
    /// again when `f` returns `WouldBlock`.
    pub(crate) fn poll_io<R>(
        &self,
        cx: &mut Context<'_>,
        direction: Direction,
        mut f: impl FnMut() -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            let ev = match self.poll_ready(cx, direction) {
                Poll::Ready(Ok(ev)) => ev,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            match f() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.clear_readiness(ev),
                res => return Poll::Ready(res),
            }
        }
    }

    /// Runs `f` once if the source looks ready in `direction`; `WouldBlock`
    /// clears the readiness.
    pub(crate) fn try_io<R>(
        &self,
        direction: Direction,
        f: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        let r = self.registered()?;
        let Some(ev) = r.io.ready_now(Ready::for_interest(direction)) else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        match f() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                r.io.clear_readiness(ev);
                Err(e)
            }
            res => res,
        }
    }

    /// Removes the fd from its reactor, if it was registered. The caller
    /// closes the fd only after this.
    pub(crate) fn deregister(&mut self) {
        let Some(r) = self.state.take() else {
            return;
        };
        let owner = r.owner.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = owner.reactor.deregister(self.fd, &r.io) {
            tracing::debug!(fd = self.fd, "deregistering: {e}");
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // `AsyncFd` deregisters before closing its fd; this covers the
        // paths (an unwind) that skip it, while the fd is still open.
        self.deregister();
    }
}
