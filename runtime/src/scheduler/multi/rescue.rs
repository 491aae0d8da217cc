//! The rescue of a busy worker's ready I/O: an idle worker that finds a
//! peer inside one task poll for a whole rescue interval waits on the
//! peer's epoll fd itself (`Reactor::assist`) and runs the tasks the ready
//! I/O wakes (they come to it as directed handoffs, see `handoff.rs`).
//!
//! A watching worker sleeps exactly one rescue interval thanks to a
//! timerfd (`epoll_wait` alone rounds 100 µs up to 1 ms).
//!
//! Who watches: a worker that parks while a peer is awake and owns
//! sockets. A worker that wakes to work, owning sockets, with no peer
//! watching, arms its *watch timer* (a timerfd registered in every peer's
//! `Poll`) for one interval and disarms it when it parks again: only a
//! worker still awake an interval later wakes its sleeping peers to watch
//! it. Waking a peer at once instead, as this did first (`nudge_watcher`,
//! still the fallback, and what `block_in_place` does), cost a lightly
//! loaded server two peer wake-ups per request (BENCHMARKS.md: the
//! gateway's open-loop CPU per request).
//!
//! The watch backs off: each run of [`MISSES_PER_STEP`] rescues of a peer
//! in a row that find no ready I/O doubles the interval at which that peer
//! is watched, up to [`MAX_BACKOFF`] times the rescue interval; a rescue
//! that finds some resets it. A worker busy with one heavy connection whose
//! light neighbours have moved away (so nothing waits behind its polls)
//! then costs its idle peers about 600 wake-ups a second instead of 10,000,
//! CPU that a saturated machine does not have.

use std::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};
use std::time::{Duration, Instant};

use super::worker::{Phase, Worker};
use super::Shared;
use crate::metrics::WorkerCounters;

/// Rescues in a row that find nothing before the watch over a peer backs
/// off one step.
const MISSES_PER_STEP: u32 = 8;
/// The longest watch interval, in rescue intervals (a power of two).
const MAX_BACKOFF: u32 = 16;

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
            // Stuck in one poll for the whole watch: until its next
            // publication, the arbiter passes it over.
            let conns = u32::try_from(shared.reactors[peer].resources()).unwrap_or(u32::MAX);
            shared
                .domain
                .set_load_hint(peer, conns.saturating_add(super::STUCK_HINT));
            self.phase.set(Phase::Rescuing { from: peer });
            let (n, took_owner_event) = shared.reactors[peer].assist();
            self.phase.set(Phase::Between);
            if took_owner_event {
                // The peer may have finished its poll and gone to sleep
                // since we looked: give it back the wake-up we consumed.
                if let Err(e) = shared.wakers[peer].wake() {
                    tracing::warn!("re-waking worker {peer}: {e}");
                }
            }
            let misses = &shared.rescue_misses[peer];
            if n == 0 {
                misses.fetch_add(1, Relaxed);
            } else {
                misses.store(0, Relaxed);
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
        let base = self.rescue_interval?;
        let mut interval = base * MAX_BACKOFF;
        let peers: Vec<(usize, u64)> = (0..self.polling.len())
            .filter(|&i| i != me && !self.sleepers.is_parked(i) && self.reactors[i].resources() > 0)
            .map(|i| {
                let steps = self.rescue_misses[i].load(Relaxed) / MISSES_PER_STEP;
                let backoff = 1u32 << steps.min(MAX_BACKOFF.trailing_zeros());
                interval = interval.min(base * backoff);
                (i, self.polling[i].load(Acquire))
            })
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

    /// A peer of `me` asleep in its `Poll` and not running heavy work (the
    /// least busy, round robin from `me` among equals), if any; with
    /// `empty`, only one whose reactor owns no registrations (it serves no
    /// connections that heavy work could stall).
    pub(super) fn calm_sleeping_peer(&self, me: usize, empty: bool) -> Option<usize> {
        let n = self.sleepers.len();
        (1..n)
            .map(|k| (me + k) % n)
            .filter(|&i| self.sleepers.is_parked(i))
            .filter(|&i| !empty || self.reactors[i].resources() == 0)
            .map(|i| (i, self.busy[i].load(Relaxed)))
            .filter(|&(_, busy)| busy < super::BUSY_PERMILLE)
            .min_by_key(|&(_, busy)| busy)
            .map(|(i, _)| i)
    }

    /// Whether a peer of `me` watches (it sleeps at most one rescue
    /// interval).
    pub(super) fn watched(&self, me: usize) -> bool {
        (0..self.polling.len()).any(|i| i != me && self.watching[i].load(SeqCst))
    }

    /// Wakes one idle peer that sleeps without watching, so that it starts
    /// watching (no-op if one already watches).
    pub(super) fn nudge_watcher(&self, me: usize) {
        let n = self.polling.len();
        if self.watched(me) {
            return;
        }
        if let Some(peer) = (0..n).find(|&i| i != me && self.sleepers.is_parked(i)) {
            if let Err(e) = self.wakers[peer].wake() {
                tracing::warn!("waking worker {peer} to watch: {e}");
            }
        }
    }
}
