//! The readiness state a reactor shares with one registered source
//! ([`ScheduledIo`]), and its vocabulary ([`Ready`], [`ReadyEvent`],
//! [`Direction`]). It is built under loom too, where its models check that
//! dispatching readiness (by the owner or by a rescuing peer) racing a task
//! that polls and clears it never loses a wake-up.

use std::fmt;
use std::sync::atomic::Ordering::{AcqRel, Acquire};
use std::task::{Context, Poll, Waker};

use crate::loom::{lock, AtomicUsize, Mutex};

/// Readiness bits of an I/O source.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Ready(pub(crate) usize);

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

    /// Readiness from raw `epoll_event.events` bits (assisted polls).
    pub(crate) fn from_epoll(bits: u32) -> Ready {
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
    pub(crate) fn for_interest(interest: Direction) -> Ready {
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
/// [`ScheduledIo::clear_readiness`] when an operation gets `WouldBlock`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReadyEvent {
    pub(crate) tick: usize,
    /// The readiness seen.
    pub(crate) ready: Ready,
}

/// Which side of a source a task waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Waiting to read.
    Read,
    /// Waiting to write.
    Write,
}

pub(crate) const TICK_SHIFT: u32 = 16;
pub(crate) const READY_MASK: usize = (1 << TICK_SHIFT) - 1;

/// The state a reactor shares with one registered source.
pub(crate) struct ScheduledIo {
    /// `tick << 16 | ready bits`.
    pub(crate) readiness: AtomicUsize,
    reader: Mutex<Option<Waker>>,
    writer: Mutex<Option<Waker>>,
}

impl ScheduledIo {
    pub(crate) fn new() -> Self {
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

    /// The readiness in `want` if any is set now.
    pub(crate) fn ready_now(&self, want: Ready) -> Option<ReadyEvent> {
        let cur = self.readiness.load(Acquire);
        let ready = Ready(cur & READY_MASK) & want;
        (!ready.is_empty()).then_some(ReadyEvent {
            tick: cur >> TICK_SHIFT,
            ready,
        })
    }

    /// Returns the readiness for `direction`, or stores the task's waker and
    /// returns `Pending`.
    pub(crate) fn poll_ready(
        &self,
        cx: &mut Context<'_>,
        direction: Direction,
    ) -> Poll<ReadyEvent> {
        let want = Ready::for_interest(direction);
        if let Some(ev) = self.ready_now(want) {
            return Poll::Ready(ev);
        }
        {
            let mut slot = lock(self.slot(direction));
            match slot.as_ref() {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        }
        // Re-check after publishing the waker: an event dispatched before we
        // stored it set the readiness first (the slot mutex orders the two).
        match self.ready_now(want) {
            Some(ev) => Poll::Ready(ev),
            None => Poll::Pending,
        }
    }

    /// Clears the readiness observed in `event`, unless newer readiness has
    /// arrived since. Closed and error bits stay set: they are final.
    pub(crate) fn clear_readiness(&self, event: ReadyEvent) {
        let clear = event.ready & (Ready::READABLE | Ready::WRITABLE);
        let _ = self.readiness.fetch_update(AcqRel, Acquire, |cur| {
            ((cur >> TICK_SHIFT) == event.tick).then_some(cur & !clear.0)
        });
    }

    /// Adds `ready` as if an event had reported it, without waking anyone:
    /// after the source moved to another reactor (`Registration`), so that
    /// the task tries its operation at once instead of waiting for the new
    /// reactor's first event. A wrong guess costs one `WouldBlock`, which
    /// clears it.
    pub(crate) fn assume_ready(&self, ready: Ready) {
        let _ = self.readiness.fetch_update(AcqRel, Acquire, |cur| {
            let tick = (cur >> TICK_SHIFT).wrapping_add(1);
            Some((tick << TICK_SHIFT) | (cur & READY_MASK) | ready.0)
        });
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
    let waker = lock(slot).take();
    if let Some(w) = waker {
        w.wake();
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! Readiness dispatched by the owner or by a rescuing peer, racing a
    //! task that polls it and clears it after `WouldBlock`: the task must
    //! always end up seeing the data (a lost wake-up is a loom deadlock).

    use std::sync::atomic::Ordering::SeqCst;
    use std::task::{Context, Poll};

    use ::loom::sync::atomic::AtomicBool;
    use ::loom::sync::{Arc, Notify};
    use ::loom::thread;

    use super::{Direction, Ready, ScheduledIo};

    struct NotifyWaker(Notify);

    impl futures_task::ArcWake for NotifyWaker {
        fn wake_by_ref(arc_self: &std::sync::Arc<Self>) {
            arc_self.0.notify();
        }
    }

    /// The task: poll for read readiness, "read" (succeeds once `data` is
    /// set), clear the readiness on `WouldBlock`, sleep until woken.
    fn read_until_data(io: &ScheduledIo, data: &AtomicBool) {
        let waker = std::sync::Arc::new(NotifyWaker(Notify::new()));
        let task_waker = futures_task::waker(waker.clone());
        let mut cx = Context::from_waker(&task_waker);
        loop {
            match io.poll_ready(&mut cx, Direction::Read) {
                Poll::Ready(ev) => {
                    if data.load(SeqCst) {
                        return;
                    }
                    io.clear_readiness(ev);
                }
                Poll::Pending => waker.0.wait(),
            }
        }
    }

    #[test]
    fn dispatch_racing_poll_and_clear_is_never_lost() {
        ::loom::model(|| {
            let io = Arc::new(ScheduledIo::new());
            // The registration's initial edge: readable with nothing to read.
            io.dispatch(Ready::READABLE);
            let data = Arc::new(AtomicBool::new(false));
            let (io2, data2) = (io.clone(), data.clone());
            let reactor = thread::spawn(move || {
                data2.store(true, SeqCst);
                io2.dispatch(Ready::READABLE);
            });
            read_until_data(&io, &data);
            reactor.join().unwrap();
        });
    }

    /// A registration moving from one reactor's epoll set to another's
    /// while data arrives (`Registration::follow`): the kernel reports the
    /// edge to every set holding the fd at that moment; the mover adds the
    /// fd to the new set (which reports the current state), removes it from
    /// the old one, assumes readiness, and then the task reads. Whatever
    /// the interleaving, the task sees the data.
    #[test]
    fn a_move_between_reactors_loses_no_wake_up() {
        ::loom::model(|| {
            let io = Arc::new(ScheduledIo::new());
            let data = Arc::new(AtomicBool::new(false));
            let in_old = Arc::new(AtomicBool::new(true));
            let in_new = Arc::new(AtomicBool::new(false));
            let kernel = {
                let (io, data) = (io.clone(), data.clone());
                let (in_old, in_new) = (in_old.clone(), in_new.clone());
                thread::spawn(move || {
                    data.store(true, SeqCst);
                    if in_old.load(SeqCst) {
                        io.dispatch(Ready::READABLE);
                    }
                    if in_new.load(SeqCst) {
                        io.dispatch(Ready::READABLE);
                    }
                })
            };
            // EPOLL_CTL_ADD to the new set reports the current state.
            in_new.store(true, SeqCst);
            if data.load(SeqCst) {
                io.dispatch(Ready::READABLE);
            }
            // EPOLL_CTL_DEL from the old set.
            in_old.store(false, SeqCst);
            io.assume_ready(Ready::READABLE);
            read_until_data(&io, &data);
            kernel.join().unwrap();
        });
    }

    #[test]
    fn owner_and_rescuer_dispatching_at_once_wake_the_task() {
        ::loom::model(|| {
            let io = Arc::new(ScheduledIo::new());
            let data = Arc::new(AtomicBool::new(false));
            let threads: Vec<_> = [true, false]
                .into_iter()
                .map(|sets_data| {
                    let (io, data) = (io.clone(), data.clone());
                    thread::spawn(move || {
                        if sets_data {
                            data.store(true, SeqCst);
                        }
                        io.dispatch(Ready::READABLE);
                    })
                })
                .collect();
            read_until_data(&io, &data);
            for t in threads {
                t.join().unwrap();
            }
        });
    }
}
