//! One runtime thread's reactor: the registry side of its mio `Poll`.
//!
//! # Tokens
//! A registration's mio token is the address of its `ScheduledIo`, so the
//! thread dispatching events finds it without a lookup or a lock. The
//! registration's `Arc` keeps it alive; when the registration goes away the
//! `Arc` is parked in `pending_release` until the owning thread next enters
//! `epoll_wait`. Events for a source cannot come from a wait that started
//! after `epoll_ctl(DEL)` returned, and a wait (and the processing of its
//! events) that was under way then is over by the time the owner releases
//! the list, so a token never points at freed memory.
//!
//! # Moving
//! A registration moves to the reactor of the thread that polls it
//! (`Registration`): it is added to the new owner's epoll set first, then
//! deleted from the old owner's, and its state is parked in the old
//! owner's `pending_release` as well, because the old owner may be
//! dispatching an event that names it. An `EPOLL_CTL_ADD` reports the
//! source's current readiness, so no edge is lost in the move.
//!
//! # Assist
//! An idle worker may rescue a peer stuck in a long poll by waiting on the
//! peer's epoll fd itself ([`Reactor::assist`]); each ready event goes to
//! exactly one waiter, so every readiness edge is dispatched once. While any
//! helper is inside the peer's epoll instance (`assisting > 0`), the owner
//! keeps its pending releases for later.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{AcqRel, Acquire};
use std::sync::Arc;

use mio::unix::SourceFd;
use mio::{Events, Registry, Token};

use super::release::ReleaseList;
use super::{Interest, Ready, ScheduledIo};

/// Tokens below this are the runtime's own (DLB readiness fd, waker).
pub(crate) const FIRST_IO_TOKEN: usize = 16;

pub(crate) struct Reactor {
    registry: Registry,
    /// Registrations removed since the owner last entered `epoll_wait`,
    /// and the helpers inside its epoll set (`release.rs`).
    released: ReleaseList<Arc<ScheduledIo>>,
    /// Live registrations (for metrics).
    resources: AtomicU64,
    /// The worker index, or `None` for a `block_on` thread.
    worker: Option<usize>,
    /// The epoll fd of the owner's `Poll` (for assists), if it may be
    /// assisted.
    epoll_fd: Option<RawFd>,
    /// Registrations that moved in from another reactor (for metrics).
    moved_in: AtomicU64,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Reactor>>> = const { RefCell::new(None) };
}

/// The reactor of this thread.
pub(crate) fn current() -> Option<Arc<Reactor>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// The address of this thread's reactor (0 if none), to compare with a
/// registration's owner without cloning the `Arc`.
pub(crate) fn current_addr() -> usize {
    CURRENT
        .try_with(|c| c.borrow().as_ref().map_or(0, |r| Arc::as_ptr(r) as usize))
        .unwrap_or(0)
}

/// Makes `reactor` this thread's reactor until the guard drops.
pub(crate) fn enter(reactor: Arc<Reactor>) -> ReactorGuard {
    let previous = CURRENT.with(|c| c.borrow_mut().replace(reactor));
    ReactorGuard { previous }
}

pub(crate) struct ReactorGuard {
    previous: Option<Arc<Reactor>>,
}

impl Drop for ReactorGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        let _ = CURRENT.try_with(|c| *c.borrow_mut() = previous);
    }
}

impl Reactor {
    pub(crate) fn new(registry: Registry, worker: Option<usize>, epoll_fd: Option<RawFd>) -> Self {
        Self {
            registry,
            released: ReleaseList::new(),
            resources: AtomicU64::new(0),
            worker,
            epoll_fd,
            moved_in: AtomicU64::new(0),
        }
    }

    pub(crate) fn worker(&self) -> Option<usize> {
        self.worker
    }

    pub(crate) fn resources(&self) -> u64 {
        self.resources.load(Acquire)
    }

    /// Registrations that moved into this reactor.
    pub(crate) fn moved_in(&self) -> u64 {
        self.moved_in.load(Acquire)
    }

    /// Registers `fd` with a new readiness state, whose address is the
    /// token.
    pub(crate) fn register(&self, fd: RawFd, interest: Interest) -> io::Result<Arc<ScheduledIo>> {
        let io = Arc::new(ScheduledIo::new());
        self.add(fd, &io, interest)?;
        Ok(io)
    }

    /// Adds `fd` with `io`'s token to this reactor's epoll set.
    fn add(&self, fd: RawFd, io: &Arc<ScheduledIo>, interest: Interest) -> io::Result<()> {
        let token = Token(Arc::as_ptr(io) as usize);
        debug_assert!(token.0 >= FIRST_IO_TOKEN);
        self.registry
            .register(&mut SourceFd(&fd), token, interest.to_mio())?;
        self.resources.fetch_add(1, AcqRel);
        Ok(())
    }

    /// Takes over `fd` (registered with `io`'s token in another reactor):
    /// adds it here; the caller then removes it from the old owner with
    /// [`give_up`](Self::give_up).
    pub(crate) fn adopt(
        &self,
        fd: RawFd,
        io: &Arc<ScheduledIo>,
        interest: Interest,
    ) -> io::Result<()> {
        self.add(fd, io, interest)?;
        self.moved_in.fetch_add(1, AcqRel);
        Ok(())
    }

    /// Removes `fd` from this reactor after it moved elsewhere. Its state
    /// stays alive until this reactor's owner next enters `epoll_wait` (it
    /// may be dispatching an event naming it). If the removal fails, the fd
    /// may still be in this epoll set with `io`'s token, so the state is
    /// kept alive for good (a leak, never a dangling token).
    pub(crate) fn give_up(&self, fd: RawFd, io: &Arc<ScheduledIo>) {
        if let Err(e) = self.registry.deregister(&mut SourceFd(&fd)) {
            tracing::warn!(
                fd,
                "removing a moved fd from its old reactor: {e}; keeping its state"
            );
            std::mem::forget(io.clone());
        }
        self.forget(io);
    }

    /// Removes `fd` for good (its owner is about to close it). On failure
    /// the state is kept alive for good, as in [`give_up`](Self::give_up).
    pub(crate) fn deregister(&self, fd: RawFd, io: &Arc<ScheduledIo>) -> io::Result<()> {
        let res = self.registry.deregister(&mut SourceFd(&fd));
        if res.is_err() {
            std::mem::forget(io.clone());
        }
        self.forget(io);
        res
    }

    /// Keeps `io` alive until the owner's next `epoll_wait` (see the module
    /// docs).
    fn forget(&self, io: &Arc<ScheduledIo>) {
        self.resources.fetch_sub(1, AcqRel);
        self.released.defer(io.clone());
    }

    /// Called by the owning thread right before `epoll_wait`.
    pub(crate) fn release_pending(&self) {
        self.released.release();
    }

    /// Waits (without blocking) on the owner's epoll fd from another thread
    /// and dispatches the I/O events found, on behalf of an owner that is
    /// stuck in a long poll. Returns how many I/O events were dispatched.
    ///
    /// The caller must keep the owner's `Poll` alive meanwhile (the runtime
    /// drops worker pollers only after every worker stopped).
    ///
    /// Also returns whether it took one of the owner's own wake-up events
    /// (its DLB readiness fd or its waker): the caller must then wake the
    /// owner, in case it went to sleep meanwhile and that event was its
    /// wake-up.
    pub(crate) fn assist(&self) -> (usize, bool) {
        let Some(fd) = self.epoll_fd else {
            return (0, false);
        };
        self.released.assist(|| {
            // SAFETY: `epoll_event` is plain data; zeroed is a valid value.
            let mut events: [libc::epoll_event; 64] = unsafe { std::mem::zeroed() };
            // SAFETY: `fd` is a live epoll fd (see above) and `events` is a
            // writable array of 64 entries.
            let n = unsafe { libc::epoll_wait(fd, events.as_mut_ptr(), 64, 0) };
            let mut dispatched = 0;
            let mut took_owner_event = false;
            for ev in events.iter().take(usize::try_from(n).unwrap_or(0)) {
                let token = ev.u64 as usize;
                if token < FIRST_IO_TOKEN {
                    // The owner's DLB fd or waker: its edge is consumed now,
                    // so the caller re-signals the owner.
                    took_owner_event = true;
                    continue;
                }
                // SAFETY: as in `dispatch`; inside `assist`, the owner does
                // not drop deferred registrations until we are done.
                let io = unsafe { &*(token as *const ScheduledIo) };
                io.dispatch(Ready::from_epoll(ev.events));
                dispatched += 1;
            }
            (dispatched, took_owner_event)
        })
    }

    /// Dispatches the I/O events of one `epoll_wait`; returns how many.
    pub(crate) fn dispatch(&self, events: &Events) -> usize {
        let mut n = 0;
        for event in events.iter() {
            let token = event.token().0;
            if token < FIRST_IO_TOKEN {
                continue;
            }
            // SAFETY: tokens at or above FIRST_IO_TOKEN are `ScheduledIo`
            // addresses kept alive until this thread's next `epoll_wait`
            // (module docs); this wait's events are dispatched before then.
            let io = unsafe { &*(token as *const ScheduledIo) };
            io.dispatch(super::ready_from_event(event));
            n += 1;
        }
        n
    }
}
