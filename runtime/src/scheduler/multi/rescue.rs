//! The rescue of a busy worker's ready I/O: an idle worker that finds a
//! peer inside one task poll for a whole rescue interval waits on the
//! peer's epoll fd itself (`Reactor::assist`) and runs the tasks the ready
//! I/O wakes (they come to it as directed handoffs, see `handoff.rs`).
//!
//! A watching worker sleeps exactly one rescue interval thanks to a
//! timerfd (`epoll_wait` alone rounds 100 µs up to 1 ms).

use std::sync::atomic::Ordering::{Acquire, SeqCst};
use std::time::{Duration, Instant};

use super::worker::{Phase, Worker};
use super::Shared;
use crate::metrics::WorkerCounters;

/// A watch over busy peers.
pub(super) struct Watch {
    pub(super) interval: Duration,
    pub(super) started: Instant,
    /// Each watched peer and its poll word when the watch started.
    pub(super) peers: Vec<(usize, u64)>,
}

impl Worker {
    /// Rescues the ready I/O of the peers that stayed in one poll for the
    /// whole watch.
    pub(super) fn rescue(&self, peers: &[(usize, u64)]) {
        let shared = &*self.shared;
        for &(peer, word) in peers {
            // Only a peer that was inside a task poll at the start of the
            // watch and still is (same odd word): one that sleeps in its
            // own `epoll_wait` handles its events itself.
            if word & 1 == 0 || shared.polling[peer].load(Acquire) != word {
                continue;
            }
            self.phase.set(Phase::Rescuing);
            let (n, took_owner_event) = shared.reactors[peer].assist();
            self.phase.set(Phase::Between);
            if took_owner_event {
                // The peer may have finished its poll and gone to sleep
                // since we looked: give it back the wake-up we consumed.
                if let Err(e) = shared.wakers[peer].wake() {
                    tracing::warn!("re-waking worker {peer}: {e}");
                }
            }
            if n > 0 {
                WorkerCounters::add(&self.counters().io_rescued, n as u64);
                tracing::debug!(
                    worker = self.index,
                    peer,
                    events = n,
                    "rescued busy worker's ready I/O"
                );
            }
        }
    }
}

impl Shared {
    /// The peers of `me` that are awake and own sockets, with their poll
    /// words; `None` if there are none or the rescue is disabled.
    pub(super) fn rescue_watch(&self, me: usize) -> Option<Watch> {
        let interval = self.rescue_interval?;
        let peers: Vec<(usize, u64)> = (0..self.polling.len())
            .filter(|&i| i != me && !self.sleepers.is_parked(i) && self.reactors[i].resources() > 0)
            .map(|i| (i, self.polling[i].load(Acquire)))
            .collect();
        if peers.is_empty() {
            return None;
        }
        Some(Watch {
            interval,
            started: Instant::now(),
            peers,
        })
    }

    /// A peer of `me` asleep in its `Poll` (round robin from `me`), if any.
    pub(super) fn sleeping_peer(&self, me: usize) -> Option<usize> {
        let n = self.sleepers.len();
        (1..n)
            .map(|k| (me + k) % n)
            .find(|&i| self.sleepers.is_parked(i))
    }

    /// Wakes one idle peer that sleeps without watching, so that it starts
    /// watching (no-op if one already watches).
    pub(super) fn nudge_watcher(&self, me: usize) {
        let n = self.polling.len();
        if (0..n).any(|i| i != me && self.watching[i].load(SeqCst)) {
            return;
        }
        if let Some(peer) = (0..n).find(|&i| i != me && self.sleepers.is_parked(i)) {
            if let Err(e) = self.wakers[peer].wake() {
                tracing::warn!("waking worker {peer} to watch: {e}");
            }
        }
    }
}
