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
//! # Assist
//! An idle worker may rescue a peer stuck in a long poll by waiting on the
//! peer's epoll fd itself ([`Reactor::assist`]); each ready event goes to
//! exactly one waiter, so every readiness edge is dispatched once. While any
//! helper is inside the peer's epoll instance (`assisting > 0`), the owner
//! keeps its pending releases for later.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering::{AcqRel, Acquire, SeqCst};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};

use mio::{Events, Interest, Registry, Token};

use super::{Ready, ScheduledIo};

/// Tokens below this are the runtime's own (DLB readiness fd, waker).
pub(crate) const FIRST_IO_TOKEN: usize = 16;

pub(crate) struct Reactor {
    registry: Registry,
    /// Registrations released since the owner last entered `epoll_wait`.
    pending_release: Mutex<Vec<Arc<ScheduledIo>>>,
    /// Live registrations (for metrics).
    resources: AtomicU64,
    /// The worker index, or `None` for a `block_on` thread.
    worker: Option<usize>,
    /// The epoll fd of the owner's `Poll` (for assists), if it may be
    /// assisted.
    epoll_fd: Option<RawFd>,
    /// Helpers currently waiting on or dispatching from this epoll fd.
    assisting: AtomicUsize,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Reactor>>> = const { RefCell::new(None) };
}

/// The reactor of this thread.
pub(crate) fn current() -> Option<Arc<Reactor>> {
    CURRENT.with(|c| c.borrow().clone())
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
            pending_release: Mutex::new(Vec::new()),
            resources: AtomicU64::new(0),
            worker,
            epoll_fd,
            assisting: AtomicUsize::new(0),
        }
    }

    pub(crate) fn worker(&self) -> Option<usize> {
        self.worker
    }

    pub(crate) fn resources(&self) -> u64 {
        self.resources.load(Acquire)
    }

    pub(crate) fn register(
        &self,
        source: &mut impl mio::event::Source,
        interest: Interest,
    ) -> io::Result<Arc<ScheduledIo>> {
        let io = Arc::new(ScheduledIo::new());
        let token = Token(Arc::as_ptr(&io) as usize);
        debug_assert!(token.0 >= FIRST_IO_TOKEN);
        self.registry.register(source, token, interest)?;
        self.resources.fetch_add(1, AcqRel);
        Ok(io)
    }

    pub(crate) fn deregister(
        &self,
        source: &mut impl mio::event::Source,
        io: &Arc<ScheduledIo>,
    ) -> io::Result<()> {
        let res = self.registry.deregister(source);
        self.forget(io);
        res
    }

    /// Keeps `io` alive until the owner's next `epoll_wait` (see the module
    /// docs).
    pub(crate) fn forget(&self, io: &Arc<ScheduledIo>) {
        self.resources.fetch_sub(1, AcqRel);
        self.pending_release
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(io.clone());
    }

    /// Called by the owning thread right before `epoll_wait`.
    pub(crate) fn release_pending(&self) {
        let mut pending = self
            .pending_release
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if pending.is_empty() || self.assisting.load(SeqCst) > 0 {
            // A helper may hold events naming these; keep them for now.
            return;
        }
        let released = std::mem::take(&mut *pending);
        drop(pending);
        drop(released);
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
        self.assisting.fetch_add(1, SeqCst);
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
                // The owner's DLB fd or waker: its edge is consumed now, so
                // the caller re-signals the owner.
                took_owner_event = true;
                continue;
            }
            // SAFETY: as in `dispatch`; `assisting > 0` keeps the owner from
            // releasing registrations until we are done.
            let io = unsafe { &*(token as *const ScheduledIo) };
            io.dispatch(Ready::from_epoll(ev.events));
            dispatched += 1;
        }
        self.assisting.fetch_sub(1, SeqCst);
        (dispatched, took_owner_event)
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
