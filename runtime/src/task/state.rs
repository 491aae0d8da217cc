//! The task state word: lifecycle flags and the reference count, in one
//! `AtomicUsize`, so that every transition is a single CAS.
//!
//! # Bits
//! - `RUNNING`: a worker is polling (or cancelling) the task and owns its
//!   future. Set only by the holder of a `Notified` (or by shutdown on an
//!   idle task); cleared when the poll ends.
//! - `COMPLETE`: the future is gone; the stage holds the output (or it was
//!   dropped). Never cleared.
//! - `NOTIFIED`: a `Notified` reference to the task exists, or will be
//!   created by the worker that is running it. At most one at a time, so a
//!   task is queued at most once.
//! - `CANCELLED`: abort or shutdown was requested; the next holder of
//!   `RUNNING` drops the future instead of polling it.
//! - `JOIN_INTEREST`: a `JoinHandle` exists. The side that sees it cleared
//!   with `COMPLETE` set drops the output.
//! - `JOIN_WAKER`: set, the join-waker slot belongs to the runtime side (it
//!   may read it to wake the joiner); clear, it belongs to the `JoinHandle`.
//! - the rest (`>> REF_SHIFT`): the reference count. The task is freed when
//!   it reaches zero.

use std::fmt;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};

use crate::loom::AtomicUsize;

pub(super) const RUNNING: usize = 1 << 0;
pub(super) const COMPLETE: usize = 1 << 1;
pub(super) const NOTIFIED: usize = 1 << 2;
pub(super) const CANCELLED: usize = 1 << 3;
pub(super) const JOIN_INTEREST: usize = 1 << 4;
pub(super) const JOIN_WAKER: usize = 1 << 5;
const REF_SHIFT: u32 = 6;
pub(super) const REF_ONE: usize = 1 << REF_SHIFT;

/// A loaded value of the state word.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Snapshot(pub(super) usize);

impl Snapshot {
    pub(super) fn has(self, bit: usize) -> bool {
        self.0 & bit != 0
    }

    pub(super) fn refs(self) -> usize {
        self.0 >> REF_SHIFT
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (RUNNING, "RUNNING"),
            (COMPLETE, "COMPLETE"),
            (NOTIFIED, "NOTIFIED"),
            (CANCELLED, "CANCELLED"),
            (JOIN_INTEREST, "JOIN_INTEREST"),
            (JOIN_WAKER, "JOIN_WAKER"),
        ];
        let mut list = f.debug_list();
        for (bit, name) in names {
            if self.has(bit) {
                list.entry(&name);
            }
        }
        list.entry(&format_args!("refs={}", self.refs()));
        list.finish()
    }
}

/// What a worker holding a `Notified` should do.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TransitionToRunning {
    /// Poll the future.
    Poll,
    /// Drop the future: the task was cancelled.
    Cancel,
    /// Someone else runs or finished it; just drop the reference.
    Skip,
}

/// What a worker should do after a poll returned `Pending`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TransitionToIdle {
    /// Nothing: the task waits for a wake-up.
    Idle,
    /// It was woken during the poll: schedule it again (a reference was
    /// added for the new `Notified`).
    Reschedule,
    /// It was cancelled during the poll: drop the future now.
    Cancel,
}

/// What a wake should do.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TransitionToNotified {
    /// Already queued, running (it will be re-queued) or complete.
    Nothing,
    /// Schedule a new `Notified` (a reference was added for it when waking
    /// by reference).
    Submit,
}

pub(super) struct State(AtomicUsize);

impl State {
    /// A new task: one `Notified` (for the first schedule), one `JoinHandle`,
    /// and `extra` more references (the runtime's owned-task list).
    pub(super) fn new(extra: usize) -> Self {
        State(AtomicUsize::new(
            NOTIFIED | JOIN_INTEREST | ((2 + extra) * REF_ONE),
        ))
    }

    pub(super) fn load(&self) -> Snapshot {
        Snapshot(self.0.load(Acquire))
    }

    /// Runs `f` in a CAS loop; `f` returns the new value (or `None` to stop)
    /// and a result.
    fn update<R>(&self, mut f: impl FnMut(Snapshot) -> (Option<usize>, R)) -> (Snapshot, R) {
        let mut cur = self.0.load(Acquire);
        loop {
            let (next, r) = f(Snapshot(cur));
            let Some(next) = next else {
                return (Snapshot(cur), r);
            };
            match self.0.compare_exchange_weak(cur, next, AcqRel, Acquire) {
                Ok(_) => return (Snapshot(cur), r),
                Err(actual) => cur = actual,
            }
        }
    }

    pub(super) fn ref_inc(&self) {
        let prev = self.0.fetch_add(REF_ONE, Release);
        // The count cannot realistically overflow; abort rather than go
        // unsound if it does (as `Arc` does).
        if prev > usize::MAX / 2 {
            std::process::abort();
        }
    }

    /// Drops one reference; returns `true` if it was the last.
    pub(super) fn ref_dec(&self) -> bool {
        let prev = Snapshot(self.0.fetch_sub(REF_ONE, AcqRel));
        debug_assert!(prev.refs() >= 1, "task refcount underflow {prev:?}");
        prev.refs() == 1
    }

    /// Drops two references; returns `true` if they were the last.
    pub(super) fn ref_dec_twice(&self) -> bool {
        let prev = Snapshot(self.0.fetch_sub(2 * REF_ONE, AcqRel));
        debug_assert!(prev.refs() >= 2, "task refcount underflow {prev:?}");
        prev.refs() == 2
    }

    /// The holder of a `Notified` takes the task to run it.
    pub(super) fn transition_to_running(&self) -> TransitionToRunning {
        self.update(|s| {
            debug_assert!(
                s.has(NOTIFIED),
                "running a task that is not notified: {s:?}"
            );
            if s.has(RUNNING) || s.has(COMPLETE) {
                // Shutdown cancelled it under us; nothing to run.
                return (Some(s.0 & !NOTIFIED), TransitionToRunning::Skip);
            }
            let next = (s.0 & !NOTIFIED) | RUNNING;
            if s.has(CANCELLED) {
                (Some(next), TransitionToRunning::Cancel)
            } else {
                (Some(next), TransitionToRunning::Poll)
            }
        })
        .1
    }

    /// After a `Pending` poll.
    pub(super) fn transition_to_idle(&self) -> TransitionToIdle {
        self.update(|s| {
            debug_assert!(s.has(RUNNING));
            if s.has(CANCELLED) {
                return (None, TransitionToIdle::Cancel);
            }
            let next = s.0 & !RUNNING;
            if s.has(NOTIFIED) {
                (Some(next + REF_ONE), TransitionToIdle::Reschedule)
            } else {
                (Some(next), TransitionToIdle::Idle)
            }
        })
        .1
    }

    /// The future finished (or was dropped): `RUNNING` → `COMPLETE`.
    pub(super) fn transition_to_complete(&self) -> Snapshot {
        let prev = Snapshot(self.0.fetch_xor(RUNNING | COMPLETE, AcqRel));
        debug_assert!(prev.has(RUNNING) && !prev.has(COMPLETE), "{prev:?}");
        prev
    }

    /// A wake that keeps the waker's reference.
    pub(super) fn transition_to_notified_by_ref(&self) -> TransitionToNotified {
        self.update(|s| {
            if s.has(COMPLETE) || s.has(NOTIFIED) {
                (None, TransitionToNotified::Nothing)
            } else if s.has(RUNNING) {
                // The runner re-queues it when the poll ends.
                (Some(s.0 | NOTIFIED), TransitionToNotified::Nothing)
            } else {
                (
                    Some((s.0 | NOTIFIED) + REF_ONE),
                    TransitionToNotified::Submit,
                )
            }
        })
        .1
    }

    /// A wake that consumes the waker's reference: on `Submit` that reference
    /// becomes the `Notified`'s; otherwise the caller must drop it.
    pub(super) fn transition_to_notified_by_val(&self) -> TransitionToNotified {
        self.update(|s| {
            if s.has(COMPLETE) || s.has(NOTIFIED) {
                (None, TransitionToNotified::Nothing)
            } else if s.has(RUNNING) {
                (Some(s.0 | NOTIFIED), TransitionToNotified::Nothing)
            } else {
                (Some(s.0 | NOTIFIED), TransitionToNotified::Submit)
            }
        })
        .1
    }

    /// Abort: marks the task cancelled. Returns `Submit` if the task was idle
    /// and must be scheduled so that a worker drops its future (a reference
    /// was added for the `Notified`).
    pub(super) fn transition_to_cancelled(&self) -> TransitionToNotified {
        self.update(|s| {
            if s.has(COMPLETE) || s.has(CANCELLED) {
                (None, TransitionToNotified::Nothing)
            } else if s.has(RUNNING) || s.has(NOTIFIED) {
                // The runner, or the queued run, will see it.
                (Some(s.0 | CANCELLED), TransitionToNotified::Nothing)
            } else {
                (
                    Some((s.0 | CANCELLED | NOTIFIED) + REF_ONE),
                    TransitionToNotified::Submit,
                )
            }
        })
        .1
    }

    /// Shutdown: marks the task cancelled and, if nobody is running it,
    /// takes `RUNNING` so the caller can drop the future itself. Returns
    /// whether the caller now holds `RUNNING`.
    pub(super) fn transition_to_shutdown(&self) -> bool {
        self.update(|s| {
            if s.has(COMPLETE) || s.has(RUNNING) {
                (Some(s.0 | CANCELLED), false)
            } else {
                (Some(s.0 | CANCELLED | RUNNING), true)
            }
        })
        .1
    }

    /// The `JoinHandle` installs its waker: sets `JOIN_WAKER` unless the task
    /// completed. `Err` carries the snapshot showing completion.
    pub(super) fn set_join_waker(&self) -> Result<(), Snapshot> {
        let (prev, ok) = self.update(|s| {
            if s.has(COMPLETE) {
                return (None, false);
            }
            debug_assert!(s.has(JOIN_INTEREST) && !s.has(JOIN_WAKER), "{s:?}");
            {
                (Some(s.0 | JOIN_WAKER), true)
            }
        });
        if ok {
            Ok(())
        } else {
            Err(prev)
        }
    }

    /// The `JoinHandle` takes the waker slot back to replace the waker:
    /// clears `JOIN_WAKER` unless the task completed.
    pub(super) fn unset_join_waker(&self) -> Result<(), Snapshot> {
        let (prev, ok) = self.update(|s| {
            if s.has(COMPLETE) {
                return (None, false);
            }
            debug_assert!(s.has(JOIN_INTEREST) && s.has(JOIN_WAKER), "{s:?}");
            {
                (Some(s.0 & !JOIN_WAKER), true)
            }
        });
        if ok {
            Ok(())
        } else {
            Err(prev)
        }
    }

    /// After completion, the runtime side gives the waker slot back. Returns
    /// the previous snapshot: without `JOIN_INTEREST`, the handle is gone and
    /// the runtime side must drop the waker itself.
    pub(super) fn unset_join_waker_after_complete(&self) -> Snapshot {
        Snapshot(self.0.fetch_and(!JOIN_WAKER, AcqRel))
    }

    /// The `JoinHandle` is dropped. Returns the previous snapshot. If the
    /// task is not complete, `JOIN_WAKER` is cleared too, so the handle owns
    /// the waker slot afterwards.
    pub(super) fn drop_join_interest(&self) -> Snapshot {
        self.update(|s| {
            debug_assert!(s.has(JOIN_INTEREST));
            let mut next = s.0 & !JOIN_INTEREST;
            if !s.has(COMPLETE) {
                next &= !JOIN_WAKER;
            }
            (Some(next), ())
        })
        .0
    }
}
