//! Which workers are idle or asleep, and the protocol that keeps a worker
//! from sleeping through work published for it.
//!
//! A worker going to sleep: [`announce_idle`](Sleepers::announce_idle)
//! (peers start handing work over), then [`before_sleep`](Sleepers::before_sleep)
//! (marks it parked, then a `SeqCst` fence), then checks the queues it does
//! not get wake-ups for (the work-stealing deques and injector, the
//! overflow queue), and sleeps only if they are empty.
//!
//! A thread publishing such work: pushes it, then calls
//! [`to_wake`](Sleepers::to_wake) (a `SeqCst` fence, then reads who is
//! parked, claiming the first such worker so that the next publisher picks
//! another) and wakes that worker.
//!
//! The two fences are ordered one way or the other. If the sleeper's comes
//! first, the publisher's read after its own fence sees the sleeper parked
//! and wakes it. If the publisher's comes first, the sleeper's check after
//! its fence sees the work. Either way the work is not slept through. The
//! loom model below checks this with relaxed stores and loads of the work
//! itself, so that only the fences can carry it.
//!
//! (Work that arrives through the DLB queue wakes its port's owner through
//! the queue's own protocol, model-checked in `fulcrum-dlb`; the overflow
//! queue's pushers wake a worker unconditionally, through an eventfd that
//! stays readable until the worker reads it.)

use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use crate::loom::{fence, AtomicBool, AtomicUsize};

/// The idle count and the parked flags of a runtime's workers.
#[derive(Debug)]
pub(crate) struct Sleepers {
    /// Workers between `announce_idle` and `after_sleep` (or `cancel_idle`).
    idle: AtomicUsize,
    /// Per worker: asleep, or about to sleep, in its `Poll`.
    parked: Box<[AtomicBool]>,
}

impl Sleepers {
    pub(crate) fn new(workers: usize) -> Self {
        Self {
            idle: AtomicUsize::new(0),
            parked: (0..workers).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// The calling worker is out of work: peers may hand work over.
    pub(crate) fn announce_idle(&self) {
        self.idle.fetch_add(1, SeqCst);
    }

    /// The calling worker found work after all, without sleeping.
    pub(crate) fn cancel_idle(&self) {
        self.idle.fetch_sub(1, SeqCst);
    }

    /// Whether any worker is idle (a hint for handing work over).
    pub(crate) fn any_idle(&self) -> bool {
        self.idle.load(Relaxed) > 0
    }

    /// Worker `me` is about to check its queues one last time and sleep.
    pub(crate) fn before_sleep(&self, me: usize) {
        self.parked[me].store(true, SeqCst);
        fence(SeqCst);
    }

    /// Worker `me` woke up.
    pub(crate) fn after_sleep(&self, me: usize) {
        self.parked[me].store(false, SeqCst);
        self.idle.fetch_sub(1, SeqCst);
    }

    /// Whether worker `i` is asleep (or about to sleep).
    pub(crate) fn is_parked(&self, i: usize) -> bool {
        self.parked[i].load(SeqCst)
    }

    /// Number of workers.
    pub(crate) fn len(&self) -> usize {
        self.parked.len()
    }

    /// After publishing work: the worker to wake, if one sleeps. The
    /// caller must wake it. Claims it (clears its parked flag), so that the
    /// next publisher wakes a different sleeper rather than the same one
    /// again before it is up: two pushes in a row then wake two workers,
    /// and a worker that takes both cannot leave its sleeping peer
    /// unaware that a second task is there to steal.
    pub(crate) fn to_wake(&self) -> Option<usize> {
        fence(SeqCst);
        if self.idle.load(SeqCst) == 0 {
            return None;
        }
        (0..self.parked.len()).find(|&i| {
            self.parked[i].load(SeqCst)
                && self.parked[i]
                    .compare_exchange(true, false, SeqCst, SeqCst)
                    .is_ok()
        })
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// One worker going to sleep, one thread publishing work: if the worker
    /// decides to sleep (it saw no work), the publisher wakes it.
    #[test]
    fn the_sleeper_or_the_publisher_sees_the_other() {
        loom::model(|| {
            let sleepers = Arc::new(Sleepers::new(1));
            let work = Arc::new(AtomicBool::new(false));
            let publisher = {
                let (sleepers, work) = (sleepers.clone(), work.clone());
                thread::spawn(move || {
                    work.store(true, Relaxed);
                    sleepers.to_wake()
                })
            };
            sleepers.announce_idle();
            sleepers.before_sleep(0);
            let sleeps = !work.load(Relaxed);
            let woken = publisher.join().unwrap();
            assert!(!sleeps || woken == Some(0), "work slept through");
            sleepers.after_sleep(0);
        });
    }

    /// Two workers going to sleep and two publishers: every publisher that
    /// finds nobody to wake left its work where a sleeper's last check saw
    /// it.
    #[test]
    fn two_sleepers_two_publishers() {
        loom::model(|| {
            let sleepers = Arc::new(Sleepers::new(2));
            let work = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
            let publishers: Vec<_> = (0..2)
                .map(|k| {
                    let (sleepers, work) = (sleepers.clone(), work.clone());
                    thread::spawn(move || {
                        work[k].store(true, Relaxed);
                        sleepers.to_wake()
                    })
                })
                .collect();
            let sleeper = {
                let (sleepers, work) = (sleepers.clone(), work.clone());
                thread::spawn(move || {
                    sleepers.announce_idle();
                    sleepers.before_sleep(1);
                    // Sleeps if it sees no work at all.
                    !(work[0].load(Relaxed) || work[1].load(Relaxed))
                })
            };
            sleepers.announce_idle();
            sleepers.before_sleep(0);
            let sleeps0 = !(work[0].load(Relaxed) || work[1].load(Relaxed));
            let sleeps1 = sleeper.join().unwrap();
            let woken: Vec<Option<usize>> =
                publishers.into_iter().map(|p| p.join().unwrap()).collect();
            // If both slept, at least one wake went to a sleeper (the wake
            // is an eventfd write: the woken worker then sees all work).
            if sleeps0 && sleeps1 {
                assert!(woken.iter().any(Option::is_some), "both slept through");
            }
            if sleeps0 || sleeps1 {
                assert!(woken.iter().any(Option::is_some), "work slept through");
            }
            // Two wakes never go to the same worker: the second publisher
            // wakes the other sleeper (or nobody), not the one already
            // woken and not yet up.
            if let [Some(a), Some(b)] = woken[..] {
                assert_ne!(a, b, "the same sleeper woken twice");
            }
        });
    }
}
