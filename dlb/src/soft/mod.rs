//! The software backend: a lock-free emulation of a DLB scheduling domain.
//!
//! # Structure
//! - Each port has a CQ ([`Cq`], `cq_depth` slots, emptied only by the
//!   port's owner), a *directed waiting ring* for events that must go to that
//!   port but cannot enter its CQ yet (directed events, and atomic events of
//!   a flow pinned to the port), a packed `state` word, and a [`Notifier`]
//!   (its eventfd).
//! - Each load-balanced queue has eight waiting rings ([`Ring`]), one per
//!   event priority, the list of ports linked to it, and a flow table for
//!   atomic scheduling.
//! - A credit pool counts the events that may wait in rings.
//!
//! # The port state word
//! `state = PARKED | PULL | owed << 44 | cq << 32 | tail`:
//! - `tail` is the next CQ position to hand out; a reservation takes it;
//! - `cq` counts CQ slots filled or reserved by a producer about to fill
//!   them;
//! - `owed` counts events received and not yet released (as published by
//!   the owner; see *Releases* below).
//!
//! A port is *eligible* when `cq < cq_depth && owed <= cq_depth`; its load
//! is `cq + owed + hint`, where `hint` is what the owner published with
//! [`SoftPort::set_load_hint`] (work the queue cannot see: the owner's own
//! connections, its recent busy time). The hint ranks eligible ports; it
//! never makes one ineligible, so it cannot strand an event. Producers reserve slots with a CAS that checks
//! eligibility and takes positions from `tail`, so a CQ never overflows and
//! a producer never races another for a slot. The owner gives slots back
//! (decrements `cq`) only after reading them.
//!
//! # Delivery and waiting
//! A send first tries to place the event directly: if nothing of its queue is
//! waiting, it reserves the least loaded eligible port and writes into its
//! CQ. Otherwise it takes a credit, pushes into a waiting ring, bumps the
//! ring's `len`, and runs the dispatcher. `len` counts events fully pushed
//! and not yet claimed; a dispatcher claims one by CAS, pops it, and places
//! it; if no port can take it, it pushes it back and (see PULL) makes sure
//! the next port to become eligible will pull it.
//!
//! # Why nothing is stranded, and no sleeper is forgotten
//! Both protocols meet on one atomic word per port, so they rely only on the
//! modification order of that word and release/acquire, never on a store
//! and a load to different places being ordered (the store-buffer pattern,
//! which loom cannot check and weaker models break).
//! - **PULL**: a dispatcher that has published events and finds a linked port
//!   ineligible sets `PULL` on it with a CAS that re-checks eligibility.
//!   Every transition that can make a port eligible is an RMW by the owner
//!   (recv, release) that reads `PULL` and, if it was set, clears it and runs
//!   the port's dispatchers. Either the marking CAS sees the port eligible
//!   and places the event there, or the owner's RMW sees the mark, and
//!   synchronises with the publication before it.
//! - **PARKED**: the owner parks with a CAS that sets `PARKED` only if its
//!   CQ is empty. A producer's reserving CAS clears `PARKED` and, having
//!   seen it, writes the eventfd after publishing the event.
//!
//! # Releases
//! `release` is bookkeeping on the owner's side; the owner publishes the
//! lower `owed` with its next state RMW (the next `recv`, or before it
//! parks), like DPDK's implicit release on the next dequeue. When owing too
//! much has made the port ineligible, `release` publishes at once, so a
//! release still delivers waiting events immediately. Until then, the
//! arbiter sees the port as slightly more loaded than it is.
//!
//! # Credits
//! A credit is held exactly by each event sitting in (or moving between)
//! waiting rings: taken when an event starts to wait, returned when the
//! dispatcher has placed it in a CQ, after its pop completes, so that rings
//! sized to the credit pool are never logically full. Events placed directly
//! hold none, so `available + waiting == credits` at rest. A send finding
//! the pool empty stops there and returns a short count: the caller keeps
//! the rest.
//!
//! # Fault injection (feature `fault-injection`, tests only)
//! See the crate's `fault` module (present with the feature). A held-back
//! event takes a credit, is pushed into its waiting ring, and then the
//! *sender's own* port gets `PULL` (an RMW by the owner, after the push):
//! the one place where `PULL` may sit on an eligible port. That is safe because only the owner sets it there, while
//! it is not parked, and every owner transition that reads `PULL` pulls
//! (`recv` then RMWs even with an empty CQ when it sees `PULL`, and so does
//! dropping the port; `prepare_park` always did).

mod cq;
mod notify;
mod ring;

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::time::Duration;

use self::cq::{Cq, Popped};
use self::notify::Notifier;
use self::ring::Ring;
use crate::config::Config;
use crate::loom::{Arc, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, CachePadded};
use crate::stats::{PortCounters, PortStats};
use crate::{DlbError, Event, Sched, PRIORITY_LOWEST};

/// Flow-table slots per queue. Flows hash onto slots; two flows sharing a
/// slot are pinned together, which is stricter than needed but never wrong.
#[cfg(not(loom))]
const FLOW_SLOTS: usize = 1024;
#[cfg(loom)]
const FLOW_SLOTS: usize = 4;

/// Waiting events a dispatcher moves per claim.
const DISPATCH_BATCH: usize = 32;

/// Number of event priorities.
const PRIORITIES: usize = PRIORITY_LOWEST as usize + 1;

const TAIL_MASK: u64 = 0xffff_ffff;
const CQ_SHIFT: u32 = 32;
const CQ_BITS: u64 = 0xfff;
const OWED_SHIFT: u32 = 44;
const OWED_BITS: u64 = 0x3_ffff;
/// Events wait that this port should pull when it becomes eligible.
const PULL: u64 = 1 << 62;
/// The owner sleeps (or is about to) and must be woken by a delivery.
const PARKED: u64 = 1 << 63;

// The fields must hold their largest values: `cq <= 1024`, and `owed` at
// most twice that (a full CQ received while owing `cq_depth`).
const _: () = assert!(CQ_BITS >= crate::MAX_CQ_DEPTH as u64);
const _: () = assert!(OWED_BITS >= 4 * crate::MAX_CQ_DEPTH as u64);
const _: () = assert!(OWED_SHIFT as u64 + 18 <= 62);

#[inline]
fn cq_of(state: u64) -> u64 {
    (state >> CQ_SHIFT) & CQ_BITS
}

#[inline]
fn owed_of(state: u64) -> u64 {
    (state >> OWED_SHIFT) & OWED_BITS
}

#[inline]
fn tail_of(state: u64) -> u32 {
    (state & TAIL_MASK) as u32
}

/// Events that wait for a port, in one ring per priority.
struct Waiting {
    /// Events fully pushed and not yet claimed by a dispatcher.
    len: CachePadded<AtomicU32>,
    rings: Box<[Ring]>,
}

impl Waiting {
    fn new(priorities: usize, capacity: usize) -> Self {
        Self {
            len: CachePadded(AtomicU32::new(0)),
            rings: (0..priorities).map(|_| Ring::new(capacity)).collect(),
        }
    }

    #[inline]
    fn is_empty(&self) -> bool {
        self.len.load(Acquire) == 0
    }

    /// Publishes an event that holds a credit. Each ring holds the whole
    /// credit pool, so it is never logically full.
    fn push(&self, event: Event) {
        let ring = usize::from(event.priority).min(self.rings.len() - 1);
        self.rings[ring].push_wait(event);
        self.len.fetch_add(1, AcqRel);
    }

    /// Publishes `events`, each holding a credit, with one claim per run
    /// of equal priority and one count update for all of them.
    fn push_n(&self, events: &[Event]) {
        let mut rest = events;
        while let Some(first) = rest.first() {
            let run = rest
                .iter()
                .take_while(|e| e.priority == first.priority)
                .count();
            let ring = &self.rings[usize::from(first.priority).min(self.rings.len() - 1)];
            let mut pushed = 0;
            let mut backoff = crate::loom::Backoff::new();
            while pushed < run {
                // Zero only while a consumer of the previous lap is between
                // its two stores (the ring is never logically full).
                match ring.push_n(&rest[pushed..run]) {
                    0 => backoff.snooze(),
                    n => pushed += n,
                }
            }
            rest = &rest[run..];
        }
        // After every push: a claim counted here finds its event published.
        self.len.fetch_add(events.len() as u32, AcqRel);
    }

    /// Claims up to `out.len()` published events with one update of the
    /// count, and pops them, highest priority first, into the front of
    /// `out`; returns how many.
    fn take_n(&self, out: &mut [Event]) -> usize {
        let mut len = self.len.load(Acquire);
        let want = loop {
            let want = len.min(out.len() as u32);
            if want == 0 {
                return 0;
            }
            match self
                .len
                .compare_exchange_weak(len, len - want, AcqRel, Acquire)
            {
                Ok(_) => break want as usize,
                Err(actual) => len = actual,
            }
        };
        // As in `take`: the claim guarantees `want` published events; the
        // loop only waits out producers between their two stores.
        let mut got = 0;
        let mut backoff = crate::loom::Backoff::new();
        while got < want {
            let before = got;
            for ring in self.rings.iter() {
                got += ring.pop_n(&mut out[got..want]);
                if got == want {
                    break;
                }
            }
            if got == before {
                backoff.snooze();
            }
        }
        want
    }

    /// Claims and pops the highest-priority published event, if any.
    fn take(&self) -> Option<Event> {
        let mut len = self.len.load(Acquire);
        loop {
            if len == 0 {
                return None;
            }
            match self
                .len
                .compare_exchange_weak(len, len - 1, AcqRel, Acquire)
            {
                Ok(_) => break,
                Err(actual) => len = actual,
            }
        }
        // The claim guarantees a published event; the loop only waits out a
        // producer that holds an earlier ring position and is between its two
        // stores.
        let mut backoff = crate::loom::Backoff::new();
        loop {
            for ring in self.rings.iter() {
                if let Some(event) = ring.pop() {
                    return Some(event);
                }
            }
            backoff.snooze();
        }
    }
}

struct PortShared {
    /// See the module docs. CAS'd by producers (reserve, mark), RMW'd by the
    /// owner (recv, release, park).
    state: CachePadded<AtomicU64>,
    /// The consumer queue.
    cq: Cq,
    /// Events bound for this port that could not enter its CQ yet.
    directed: Waiting,
    notifier: Notifier,
    /// `(queue, link priority)`, highest priority first.
    links: Box<[(u8, u8)]>,
    /// Whether a [`SoftPort`] currently owns this port.
    taken: AtomicBool,
    /// The owner's published load beyond its queue (see the module docs).
    /// Written by the owner, read by producers: relaxed (a stale value
    /// only perturbs a ranking).
    hint: AtomicU32,
    counters: PortCounters,
}

struct QueueShared {
    /// Where the next tie-break starts among the linked ports: one cursor
    /// per queue, like the hardware arbiter's, so that round-robin among
    /// equally loaded ports holds across all producers (updated with a
    /// plain store: a race only perturbs the rotation).
    rr: CachePadded<AtomicUsize>,
    waiting: Waiting,
    /// The ports linked to this queue.
    consumers: Box<[usize]>,
    /// Per flow slot: `owner << 32 | count`, where `count` is the number of
    /// the slot's atomic events assigned to `owner` and not yet released.
    flows: Box<[AtomicU64]>,
}

/// State shared by all ports of a domain.
struct Shared {
    cfg: Config,
    cq_depth: u64,
    ports: Box<[PortShared]>,
    queues: Box<[QueueShared]>,
    /// Credits not held by waiting events.
    credits: CachePadded<AtomicU32>,
}

/// CQ slots reserved on a port; each must be written or skipped.
#[derive(Clone, Copy)]
struct Reservation {
    port: usize,
    /// First reserved position.
    pos: u32,
    /// The reservation cleared `PARKED`: whoever fills it wakes the owner.
    woke: bool,
}

/// Where an event went.
enum Placed {
    /// Into a CQ.
    Delivered,
    /// Into the directed ring of the owner of its atomic flow.
    Redirected,
}

impl Shared {
    #[inline]
    fn eligible(&self, state: u64) -> bool {
        cq_of(state) < self.cq_depth && owed_of(state) <= self.cq_depth
    }

    /// Reserves one CQ slot of `port` if it is eligible.
    #[inline]
    fn try_reserve(&self, port: usize) -> Option<Reservation> {
        self.try_reserve_n(port, 1).map(|(r, _)| r)
    }

    /// Reserves up to `want` consecutive CQ slots of `port` if it is
    /// eligible; returns the reservation and how many slots it covers.
    #[inline]
    fn try_reserve_n(&self, port: usize, want: u64) -> Option<(Reservation, u64)> {
        let state = &self.ports[port].state;
        let mut s = state.load(Acquire);
        loop {
            if !self.eligible(s) {
                return None;
            }
            let k = want.clamp(1, self.cq_depth - cq_of(s));
            let next = ((s + (k << CQ_SHIFT)) & !(TAIL_MASK | PARKED))
                | u64::from(tail_of(s).wrapping_add(k as u32));
            match state.compare_exchange_weak(s, next, AcqRel, Acquire) {
                Ok(_) => {
                    let r = Reservation {
                        port,
                        pos: tail_of(s),
                        woke: s & PARKED != 0,
                    };
                    return Some((r, k));
                }
                Err(actual) => s = actual,
            }
        }
    }

    /// Places a run of `run` unordered events of `queue` at once: reserves
    /// on the least loaded eligible port as many slots as water-filling the
    /// linked ports would give it (at least one), so that a batch ends up
    /// spread as per-event arbitration would spread it, with one CAS per
    /// port instead of one per event.
    #[inline]
    fn pick_reserve_run(&self, queue: usize, run: u64) -> Option<(Reservation, u64)> {
        let q = &self.queues[queue];
        let consumers = &q.consumers;
        let n = consumers.len();
        if n == 1 {
            return self.try_reserve_n(consumers[0], run);
        }
        loop {
            let start = q.rr.load(Relaxed);
            let mut at = if start < n { start } else { 0 };
            let mut best: Option<(usize, u64)> = None;
            let mut second = u64::MAX;
            let mut eligible = 0u64;
            for _ in 0..n {
                let s = self.ports[consumers[at]].state.load(Acquire);
                if self.eligible(s) {
                    eligible += 1;
                    let hint = self.ports[consumers[at]].hint.load(Relaxed);
                    let load = cq_of(s) + owed_of(s) + u64::from(hint);
                    match best {
                        Some((_, l)) if load >= l => second = second.min(load),
                        Some((_, l)) => {
                            second = l;
                            best = Some((at, load));
                        }
                        None => best = Some((at, load)),
                    }
                }
                at += 1;
                if at == n {
                    at = 0;
                }
            }
            let (at, load) = best?;
            let gap = second.saturating_sub(load);
            let want = if eligible <= 1 {
                run
            } else {
                let extra = run.saturating_sub(gap);
                gap.saturating_add(extra.div_ceil(eligible)).min(run)
            };
            if let Some(got) = self.try_reserve_n(consumers[at], want) {
                q.rr.store(at + 1, Relaxed);
                return Some(got);
            }
            // The chosen port changed under us; look again.
        }
    }

    /// Sets `PULL` on `port` unless it is eligible. Returns `true` if the
    /// port is eligible (and so was not marked).
    fn mark_pull(&self, port: usize) -> bool {
        let state = &self.ports[port].state;
        let mut s = state.load(Acquire);
        loop {
            if self.eligible(s) {
                return true;
            }
            // Always an RMW, even when `PULL` is already set: the owner's
            // clearing RMW must read from (or after) this write to
            // synchronise with the publication that preceded it. A plain
            // load here would be the store-buffer pattern again.
            match state.compare_exchange_weak(s, s | PULL, AcqRel, Acquire) {
                Ok(_) => return false,
                Err(actual) => s = actual,
            }
        }
    }

    /// After publishing waiting events of `queue`: returns `true` if a
    /// linked port is eligible, else leaves `PULL` on all of them.
    fn any_eligible_or_mark(&self, queue: usize) -> bool {
        self.queues[queue]
            .consumers
            .iter()
            .any(|&port| self.mark_pull(port))
    }

    /// Picks the least loaded eligible port linked to `queue`, round-robin
    /// among equals (one rotation per queue), and reserves a slot in its CQ.
    #[inline]
    fn pick_reserve(&self, queue: usize) -> Option<Reservation> {
        self.pick_reserve_run(queue, 1).map(|(r, _)| r)
    }

    /// Writes `event` into the reserved CQ slot and wakes the owner if the
    /// reservation found it parked.
    #[inline]
    fn deliver(&self, r: Reservation, event: Event) {
        let p = &self.ports[r.port];
        // SAFETY: `r` is a reservation of `r.pos` from `try_reserve`, used
        // once (it is consumed here).
        unsafe { p.cq.write(r.pos, event) };
        if r.woke {
            p.notifier.notify();
        }
    }

    /// Writes `events` into consecutive reserved slots starting at `r.pos`.
    #[inline]
    fn deliver_run(&self, r: Reservation, events: &[Event]) {
        let p = &self.ports[r.port];
        for (i, event) in events.iter().enumerate() {
            // SAFETY: the reservation covers `events.len()` positions from
            // `r.pos`, each used once here.
            unsafe { p.cq.write(r.pos.wrapping_add(i as u32), *event) };
        }
        if r.woke {
            p.notifier.notify();
        }
    }

    /// Gives a reservation up; the owner skips the slot (and is woken if
    /// the reservation cleared its `PARKED`, so it does not sleep through
    /// later deliveries).
    fn skip(&self, r: Reservation) {
        let p = &self.ports[r.port];
        // SAFETY: as in `deliver`.
        unsafe { p.cq.skip(r.pos) };
        if r.woke {
            p.notifier.notify();
        }
    }

    #[inline]
    fn take_credit(&self) -> bool {
        let mut c = self.credits.load(Acquire);
        while c > 0 {
            match self
                .credits
                .compare_exchange_weak(c, c - 1, AcqRel, Acquire)
            {
                Ok(_) => return true,
                Err(actual) => c = actual,
            }
        }
        false
    }

    /// Takes up to `want` credits at once; returns how many.
    #[inline]
    fn take_credits(&self, want: u32) -> u32 {
        let mut c = self.credits.load(Acquire);
        loop {
            let take = c.min(want);
            if take == 0 {
                return 0;
            }
            match self
                .credits
                .compare_exchange_weak(c, c - take, AcqRel, Acquire)
            {
                Ok(_) => return take,
                Err(actual) => c = actual,
            }
        }
    }

    #[inline]
    fn return_credit(&self) {
        self.credits.fetch_add(1, AcqRel);
    }

    #[inline]
    fn return_credits(&self, n: u32) {
        if n > 0 {
            self.credits.fetch_add(n, AcqRel);
        }
    }

    /// Runs every dispatcher that can deliver to `port`.
    fn pull_for(&self, port: usize) {
        self.dispatch_directed(port);
        for &(queue, _) in self.ports[port].links.iter() {
            self.dispatch_queue(usize::from(queue));
        }
    }

    /// Moves waiting directed events of `port` into its CQ while it is
    /// eligible.
    fn dispatch_directed(&self, port: usize) {
        let waiting = &self.ports[port].directed;
        // Check eligibility before taking, so that events keep their order
        // while the port is full; `mark_pull` leaves `PULL` when it is not.
        while !waiting.is_empty() && self.mark_pull(port) {
            let Some(event) = waiting.take() else { break };
            match self.try_reserve(port) {
                Some(r) => {
                    self.return_credit();
                    self.deliver(r, event);
                }
                // Lost a race for the last slot: publish it again and
                // re-check.
                None => waiting.push(event),
            }
        }
    }

    /// Moves waiting events of `queue` to eligible ports, in batches: one
    /// claim of the waiting count, one reservation per port for a run of
    /// unordered events, and one credit return per batch.
    fn dispatch_queue(&self, queue: usize) {
        let q = &self.queues[queue];
        while !q.waiting.is_empty() && self.any_eligible_or_mark(queue) {
            // Here, not above the loop: a dispatch that finds every port
            // full (the common case while events wait) fills no buffer.
            let mut buf = [Event::default(); DISPATCH_BATCH];
            // Take no more than the eligible ports have room for now, so
            // that little is pushed back.
            let room = self.room(queue).clamp(1, DISPATCH_BATCH as u64) as usize;
            let n = q.waiting.take_n(&mut buf[..room]);
            if n == 0 {
                break;
            }
            let mut delivered = 0u32;
            let mut i = 0;
            while i < n {
                let event = buf[i];
                if event.sched != Sched::Atomic {
                    let run = buf[i..n]
                        .iter()
                        .take_while(|e| e.sched != Sched::Atomic)
                        .count();
                    match self.pick_reserve_run(queue, run as u64) {
                        Some((r, k)) => {
                            let k = k as usize;
                            self.deliver_run(r, &buf[i..i + k]);
                            delivered += k as u32;
                            i += k;
                        }
                        None => {
                            // Lost a race for the last slots: publish the
                            // rest again and re-check.
                            q.waiting.push_n(&buf[i..n]);
                            i = n;
                        }
                    }
                    continue;
                }
                match self.place(queue, event, true) {
                    Ok(Placed::Delivered) => delivered += 1,
                    Ok(Placed::Redirected) => {}
                    Err(event) => q.waiting.push(event),
                }
                i += 1;
            }
            self.return_credits(delivered);
        }
    }

    /// Free CQ slots over the eligible ports linked to `queue` (a snapshot,
    /// to size a dispatch batch).
    fn room(&self, queue: usize) -> u64 {
        self.queues[queue]
            .consumers
            .iter()
            .map(|&port| self.ports[port].state.load(Acquire))
            .filter(|&s| self.eligible(s))
            .map(|s| self.cq_depth - cq_of(s))
            .sum()
    }

    /// Places a load-balanced `event` on a port linked to `queue`: the owner
    /// of its atomic flow, or the least loaded eligible port. Gives the event
    /// back if no port can take it now. `holds_credit` says whether the event
    /// holds a credit (it then moves to a directed ring with it, if needed).
    #[inline]
    fn place(&self, queue: usize, event: Event, holds_credit: bool) -> Result<Placed, Event> {
        if event.sched != Sched::Atomic {
            let r = self.pick_reserve(queue).ok_or(event)?;
            self.deliver(r, event);
            return Ok(Placed::Delivered);
        }
        let owner = match self.join_pinned_flow(queue, event.flow) {
            Some(owner) => owner,
            None => {
                let r = self.pick_reserve(queue).ok_or(event)?;
                match self.claim_flow(queue, event.flow, r.port) {
                    Ok(()) => {
                        self.deliver(r, event);
                        return Ok(Placed::Delivered);
                    }
                    Err(owner) => {
                        // Pinned elsewhere since we looked.
                        self.skip(r);
                        owner
                    }
                }
            }
        };
        if holds_credit {
            self.wait_directed(owner, event);
            return Ok(Placed::Redirected);
        }
        if self.send_to_port(owner, event) {
            return Ok(Placed::Delivered);
        }
        // No credit to wait with: undo the flow count and let the caller
        // keep the event.
        self.unpin_flow(queue, event.flow);
        Err(event)
    }

    /// Publishes `event`, which holds a credit, in the directed ring of
    /// `port` and dispatches it.
    fn wait_directed(&self, port: usize, event: Event) {
        self.ports[port].directed.push(event);
        self.dispatch_directed(port);
    }

    fn flow_slot(&self, queue: usize, flow: u16) -> &AtomicU64 {
        let h = (u32::from(flow).wrapping_mul(0x9E37_79B1) >> 16) as usize;
        &self.queues[queue].flows[h % FLOW_SLOTS]
    }

    /// Pins `flow` to `port` if none of its events is outstanding, or counts
    /// one more event for its owner. Returns the owner if it is not `port`.
    fn claim_flow(&self, queue: usize, flow: u16, port: usize) -> Result<(), usize> {
        let slot = self.flow_slot(queue, flow);
        let mut s = slot.load(Acquire);
        loop {
            let (owner, count) = ((s >> 32) as usize, s & TAIL_MASK);
            let next = if count == 0 {
                ((port as u64) << 32) | 1
            } else {
                s + 1
            };
            match slot.compare_exchange_weak(s, next, AcqRel, Acquire) {
                Ok(_) if count == 0 || owner == port => return Ok(()),
                Ok(_) => return Err(owner),
                Err(actual) => s = actual,
            }
        }
    }

    /// The owner of `flow` if any of its events is outstanding, counting one
    /// more event for it.
    fn join_pinned_flow(&self, queue: usize, flow: u16) -> Option<usize> {
        let slot = self.flow_slot(queue, flow);
        let mut s = slot.load(Acquire);
        loop {
            if s & TAIL_MASK == 0 {
                return None;
            }
            match slot.compare_exchange_weak(s, s + 1, AcqRel, Acquire) {
                Ok(_) => return Some((s >> 32) as usize),
                Err(actual) => s = actual,
            }
        }
    }

    fn unpin_flow(&self, queue: usize, flow: u16) {
        self.flow_slot(queue, flow).fetch_sub(1, AcqRel);
    }

    /// Sends one event to `port` (directed, or atomic to a pinned owner).
    /// Returns `false` if it had to wait and no credit was left.
    #[inline]
    fn send_to_port(&self, port: usize, event: Event) -> bool {
        if self.ports[port].directed.is_empty() {
            if let Some(r) = self.try_reserve(port) {
                self.deliver(r, event);
                return true;
            }
        }
        if !self.take_credit() {
            return false;
        }
        self.wait_directed(port, event);
        true
    }

    /// Sends one event to load-balanced `queue`. Returns `false` if it had to
    /// wait and no credit was left.
    #[inline]
    fn send_to_queue(&self, queue: usize, event: Event) -> bool {
        let q = &self.queues[queue];
        let event = if q.waiting.is_empty() {
            match self.place(queue, event, false) {
                Ok(_) => return true,
                Err(event) => event,
            }
        } else {
            event
        };
        if !self.take_credit() {
            return false;
        }
        q.waiting.push(event);
        self.dispatch_queue(queue);
        true
    }

    fn validate(&self, event: &Event) -> Result<(), &'static str> {
        if event.priority > PRIORITY_LOWEST {
            return Err("priority must be 0 (highest) to 7 (lowest)");
        }
        match event.sched {
            Sched::Directed if usize::from(event.queue) >= self.ports.len() => {
                Err("directed event names a port that does not exist")
            }
            Sched::Unordered | Sched::Atomic if usize::from(event.queue) >= self.queues.len() => {
                Err("event names a load-balanced queue that does not exist")
            }
            _ => Ok(()),
        }
    }

    /// The owner's state change: adds `delta` (wrapping, field-wise exact
    /// because no field underflows). If `PULL` was set, clears it and runs
    /// the port's dispatchers. Returns whether it pulled.
    #[inline]
    fn owner_update(&self, port: usize, delta: u64) -> bool {
        let state = &self.ports[port].state;
        let old = state.fetch_add(delta, AcqRel);
        if old & PULL == 0 {
            return false;
        }
        state.fetch_and(!PULL, AcqRel);
        self.pull_for(port);
        true
    }
}

/// A software domain: the shared state behind its ports.
#[derive(Clone)]
pub struct SoftDomain {
    shared: Arc<Shared>,
}

impl fmt::Debug for SoftDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftDomain")
            .field("ports", &self.shared.ports.len())
            .field("queues", &self.shared.queues.len())
            .field("cq_depth", &self.shared.cq_depth)
            .field("credits_available", &self.credits_available())
            .finish()
    }
}

impl SoftDomain {
    pub(crate) fn new(cfg: &Config) -> Result<Self, DlbError> {
        #[cfg(feature = "fault-injection")]
        crate::fault::init_from_env();
        let wait_capacity = cfg.credits as usize;
        let ports = (0..cfg.ports)
            .map(|id| {
                Ok(PortShared {
                    state: CachePadded(AtomicU64::new(0)),
                    cq: Cq::new(cfg.cq_depth),
                    directed: Waiting::new(1, wait_capacity),
                    notifier: Notifier::new()?,
                    links: cfg.links[id].clone().into_boxed_slice(),
                    taken: AtomicBool::new(false),
                    hint: AtomicU32::new(0),
                    counters: PortCounters::default(),
                })
            })
            .collect::<Result<Box<[_]>, DlbError>>()?;
        let queues = (0..cfg.queues)
            .map(|q| QueueShared {
                rr: CachePadded(AtomicUsize::new(0)),
                waiting: Waiting::new(PRIORITIES, wait_capacity),
                consumers: (0..cfg.ports)
                    .filter(|&p| cfg.links[p].iter().any(|&(lq, _)| usize::from(lq) == q))
                    .collect(),
                flows: (0..FLOW_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            })
            .collect();
        Ok(Self {
            shared: Arc::new(Shared {
                cfg: cfg.clone(),
                cq_depth: u64::from(cfg.cq_depth),
                ports,
                queues,
                credits: CachePadded(AtomicU32::new(cfg.credits)),
            }),
        })
    }

    pub(crate) fn config(&self) -> &Config {
        &self.shared.cfg
    }

    pub(crate) fn credits_available(&self) -> u32 {
        self.shared.credits.load(Acquire)
    }

    pub(crate) fn take_port(&self, id: usize) -> Result<SoftPort, DlbError> {
        let port = self.shared.ports.get(id).ok_or(DlbError::NoSuchPort {
            port: id,
            ports: self.shared.ports.len(),
        })?;
        #[cfg(feature = "fault-injection")]
        if crate::fault::refuse_port() {
            return Err(DlbError::PortRefused { port: id });
        }
        if port.taken.swap(true, AcqRel) {
            return Err(DlbError::PortTaken { port: id });
        }
        Ok(SoftPort {
            shared: Arc::clone(&self.shared),
            id,
            history: VecDeque::with_capacity(4),
            owed: 0,
            unpublished_releases: 0,
        })
    }

    pub(crate) fn set_load_hint(&self, id: usize, hint: u32) {
        if let Some(p) = self.shared.ports.get(id) {
            p.hint.store(hint, Relaxed);
        }
    }

    pub(crate) fn port_stats(&self, id: usize) -> Option<PortStats> {
        let p = self.shared.ports.get(id)?;
        let s = p.state.load(Relaxed);
        Some(p.counters.snapshot(cq_of(s) + owed_of(s)))
    }
}

/// History entry for non-atomic events.
const NOT_ATOMIC: u32 = u32::MAX;

/// Books a received event in a port's `history`, which is kept only while an
/// atomic event is owed. `owed` counts the events received before this one.
fn record(history: &mut VecDeque<(u32, u32)>, owed: u64, event: &Event) {
    let code = if event.sched == Sched::Atomic {
        (u32::from(event.queue) << 16) | u32::from(event.flow)
    } else {
        NOT_ATOMIC
    };
    if history.is_empty() && owed > 0 {
        // Start the history with the plain events owed so far.
        history.push_back((NOT_ATOMIC, owed as u32));
    }
    match history.back_mut() {
        Some((c, count)) if *c == code && code == NOT_ATOMIC => *count += 1,
        _ => history.push_back((code, 1)),
    }
}

/// The owner's handle on a software port.
///
/// Dropping it releases every owed event and gives the port back to the
/// domain; events still in its CQ stay there for the next owner of the port
/// (see [`Domain::port`](crate::Domain::port)). A port without an owner
/// stays linked and eligible, as a hardware port does until it is disabled:
/// drop ports only to hand them to a new owner, or with the domain.
pub struct SoftPort {
    shared: Arc<Shared>,
    id: usize,
    /// Received, unreleased events, oldest first, run-length encoded:
    /// `(queue << 16 | flow, count)` for atomic events, `(NOT_ATOMIC, count)`
    /// for the others. Kept only while an atomic event is owed; empty means
    /// every owed event is plain.
    history: VecDeque<(u32, u32)>,
    /// Events received and not released (the total count in `history`).
    owed: u64,
    /// Releases not yet subtracted from the published `owed`.
    unpublished_releases: u64,
}

impl fmt::Debug for SoftPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftPort")
            .field("id", &self.id)
            .field("owed", &self.owed)
            .finish()
    }
}

impl SoftPort {
    #[inline]
    fn me(&self) -> &PortShared {
        &self.shared.ports[self.id]
    }

    pub(crate) fn id(&self) -> usize {
        self.id
    }

    #[inline]
    pub(crate) fn send(&mut self, events: &[Event]) -> Result<usize, DlbError> {
        #[cfg(not(feature = "fault-injection"))]
        if let [event] = events {
            if self.send_one_direct(event) {
                return Ok(1);
            }
        }
        self.send_slow(events)
    }

    /// The common case of one valid unordered event while nothing of its
    /// queue waits: reserve a slot on the least loaded eligible port and
    /// write it there. Returns `false`, having done nothing, if the event
    /// needs the general path.
    #[cfg(not(feature = "fault-injection"))]
    #[inline]
    fn send_one_direct(&self, event: &Event) -> bool {
        let shared = &*self.shared;
        if event.sched != Sched::Unordered || event.priority > PRIORITY_LOWEST {
            return false;
        }
        let Some(q) = shared.queues.get(usize::from(event.queue)) else {
            return false;
        };
        if !q.waiting.is_empty() {
            return false;
        }
        let Some(r) = shared.pick_reserve(usize::from(event.queue)) else {
            return false;
        };
        shared.deliver(r, *event);
        PortCounters::bump(&shared.ports[self.id].counters.sent, 1);
        true
    }

    fn send_slow(&mut self, events: &[Event]) -> Result<usize, DlbError> {
        let shared = &*self.shared;
        let mut sent = 0;
        while sent < events.len() {
            let event = &events[sent];
            if let Err(reason) = shared.validate(event) {
                if sent == 0 {
                    return Err(DlbError::InvalidEvent { index: 0, reason });
                }
                break;
            }
            #[cfg(feature = "fault-injection")]
            match crate::fault::on_send() {
                None => {}
                Some(crate::fault::SendFault::Short) => break,
                Some(crate::fault::SendFault::Delay(spin)) => {
                    if self.hold(event) {
                        sent += 1;
                        continue;
                    }
                    crate::fault::spin(spin);
                }
            }
            let queue = usize::from(event.queue);
            if event.sched == Sched::Unordered {
                // The run of valid unordered events for this queue: placed
                // directly, a port's share at a time, while nothing of the
                // queue waits; else it waits, as far as credits go, with one
                // credit claim and one publication for the whole run.
                let run = events[sent..]
                    .iter()
                    .take_while(|e| {
                        e.sched == Sched::Unordered
                            && e.queue == event.queue
                            && e.priority <= PRIORITY_LOWEST
                    })
                    .count();
                let q = &shared.queues[queue];
                if q.waiting.is_empty() {
                    if let Some((r, k)) = shared.pick_reserve_run(queue, run as u64) {
                        shared.deliver_run(r, &events[sent..sent + k as usize]);
                        sent += k as usize;
                        continue;
                    }
                }
                let got = shared.take_credits(u32::try_from(run).unwrap_or(u32::MAX)) as usize;
                if got > 0 {
                    q.waiting.push_n(&events[sent..sent + got]);
                    shared.dispatch_queue(queue);
                    sent += got;
                }
                if got < run {
                    PortCounters::bump(
                        &shared.ports[self.id].counters.credit_waits,
                        (events.len() - sent) as u64,
                    );
                    break;
                }
                continue;
            }
            let ok = match event.sched {
                Sched::Directed => shared.send_to_port(queue, *event),
                Sched::Unordered | Sched::Atomic => shared.send_to_queue(queue, *event),
            };
            if !ok {
                PortCounters::bump(
                    &shared.ports[self.id].counters.credit_waits,
                    (events.len() - sent) as u64,
                );
                break;
            }
            sent += 1;
        }
        PortCounters::bump(&shared.ports[self.id].counters.sent, sent as u64);
        Ok(sent)
    }

    /// Fault injection: holds `event` back in its waiting ring (see the
    /// module docs), if this port can be the one to pull it and a credit is
    /// left. Returns whether it did.
    #[cfg(feature = "fault-injection")]
    fn hold(&self, event: &Event) -> bool {
        let shared = &*self.shared;
        let queue = usize::from(event.queue);
        let waiting = match event.sched {
            Sched::Directed if queue == self.id => &shared.ports[self.id].directed,
            Sched::Unordered | Sched::Atomic
                if self.me().links.iter().any(|&(q, _)| q == event.queue) =>
            {
                &shared.queues[queue].waiting
            }
            _ => return false,
        };
        if !shared.take_credit() {
            return false;
        }
        waiting.push(*event);
        // After the push, so that the owner RMW that clears the mark
        // synchronises with it. This thread owns the port and is not parked,
        // so the mark is read by its next `recv`, `release` publication,
        // `prepare_park` or drop, which all pull.
        shared.ports[self.id].state.fetch_or(PULL, AcqRel);
        crate::fault::count_held();
        true
    }

    #[inline]
    pub(crate) fn recv(&mut self, out: &mut [Event]) -> Result<usize, DlbError> {
        let (mut n, pulled) = self.pop_cq(out);
        if pulled && n < out.len() {
            // Publishing made the port eligible and pulled waiting events in.
            n += self.pop_cq(&mut out[n..]).0;
        }
        Ok(n)
    }

    /// Pops up to `out.len()` events from the CQ, books them as owed, and
    /// publishes the change together with pending releases. Returns the
    /// count and whether the update pulled waiting events.
    #[inline]
    fn pop_cq(&mut self, out: &mut [Event]) -> (usize, bool) {
        let shared = &*self.shared;
        let me = &shared.ports[self.id];
        let mut n = 0;
        let mut freed = 0u64;
        while n < out.len() {
            // SAFETY: `SoftPort` is the port's unique owner (`taken`), used
            // through `&mut self`.
            match unsafe { me.cq.pop_into(&mut out[n]) } {
                Popped::Empty => break,
                Popped::Skip => {
                    freed += 1;
                    continue;
                }
                Popped::Event => {}
            }
            freed += 1;
            if out[n].sched == Sched::Atomic || !self.history.is_empty() {
                record(&mut self.history, self.owed + n as u64, &out[n]);
            }
            n += 1;
        }
        if freed == 0 && self.unpublished_releases == 0 {
            // A hold (fault injection) may have left `PULL` on this eligible
            // port: pull now, as a publishing RMW would.
            #[cfg(feature = "fault-injection")]
            if me.state.load(Acquire) & PULL != 0 {
                return (0, shared.owner_update(self.id, 0));
            }
            return (0, false);
        }
        let k = n as u64;
        self.owed += k;
        PortCounters::bump(&me.counters.received, k);
        // cq -= freed; owed += k - unpublished releases.
        let delta = (k << OWED_SHIFT)
            .wrapping_sub(self.unpublished_releases << OWED_SHIFT)
            .wrapping_sub(freed << CQ_SHIFT);
        self.unpublished_releases = 0;
        let pulled = shared.owner_update(self.id, delta);
        (n, pulled)
    }

    #[inline]
    pub(crate) fn release(&mut self, n: usize) -> Result<usize, DlbError> {
        let n = (n as u64).min(self.owed);
        if n == 0 {
            return Ok(0);
        }
        if !self.history.is_empty() {
            self.release_history(n as u32);
        }
        let published_owed = self.owed + self.unpublished_releases;
        self.owed -= n;
        self.unpublished_releases += n;
        PortCounters::bump(&self.me().counters.released, n);
        if published_owed > self.shared.cq_depth {
            // Owing too much made the port ineligible: publish now so that
            // waiting events come in without waiting for the next recv.
            self.publish_releases();
        }
        Ok(n as usize)
    }

    /// Releases the `n` oldest entries of `history`, unpinning atomic flows.
    fn release_history(&mut self, n: u32) {
        let mut left = n;
        while left > 0 {
            let Some((code, count)) = self.history.front_mut() else {
                break;
            };
            let take = left.min(*count);
            if *code != NOT_ATOMIC {
                let (queue, flow) = ((*code >> 16) as usize, *code as u16);
                for _ in 0..take {
                    self.shared.unpin_flow(queue, flow);
                }
            }
            *count -= take;
            left -= take;
            if *count == 0 {
                self.history.pop_front();
            }
        }
        if self.history.iter().all(|&(code, _)| code == NOT_ATOMIC) {
            // No atomic event is owed any more: plain counting suffices.
            self.history.clear();
        }
    }

    /// Subtracts pending releases from the published `owed`.
    fn publish_releases(&mut self) {
        if self.unpublished_releases > 0 {
            let delta = (self.unpublished_releases << OWED_SHIFT).wrapping_neg();
            self.unpublished_releases = 0;
            self.shared.owner_update(self.id, delta);
        }
    }

    pub(crate) fn prepare_park(&mut self) -> bool {
        self.publish_releases();
        let shared = &*self.shared;
        let state = &shared.ports[self.id].state;
        let mut pulled = false;
        let mut s = state.load(Acquire);
        loop {
            if cq_of(s) > 0 {
                return false;
            }
            if s & PULL != 0 && !pulled {
                // Events wait for this port: dispatch them before sleeping.
                pulled = true;
                shared.owner_update(self.id, 0);
                s = state.load(Acquire);
                continue;
            }
            match state.compare_exchange_weak(s, s | PARKED, AcqRel, Acquire) {
                Ok(_) => return true,
                Err(actual) => s = actual,
            }
        }
    }

    pub(crate) fn finish_park(&mut self) {
        let me = self.me();
        me.state.fetch_and(!PARKED, AcqRel);
        // Drain whether or not a producer cleared the flag: a producer that
        // cleared it for an earlier park may have written the eventfd after
        // that park ended, and a count left behind would make every later
        // park return at once. A write still in flight now only causes one
        // spurious wake-up, drained by the next park.
        me.notifier.drain();
    }

    pub(crate) fn wait(&mut self, timeout: Option<Duration>) -> Result<bool, DlbError> {
        if self.prepare_park() {
            let woke = self.me().notifier.wait(timeout);
            self.finish_park();
            woke?;
        } else {
            self.finish_park();
            if !self.me().cq.head_ready() {
                // A producer has reserved a slot and is about to fill it.
                crate::loom::spin_hint();
            }
        }
        Ok(cq_of(self.me().state.load(Acquire)) > 0)
    }

    #[cfg(not(loom))]
    pub(crate) fn readiness_fd(&self) -> std::os::fd::RawFd {
        self.me().notifier.fd()
    }

    /// Publishes the owner's load beyond its queue (see the module docs).
    pub(crate) fn set_load_hint(&self, hint: u32) {
        let h = &self.me().hint;
        if h.load(Relaxed) != hint {
            h.store(hint, Relaxed);
        }
    }

    pub(crate) fn stats(&self) -> PortStats {
        let me = self.me();
        let s = me.state.load(Relaxed);
        me.counters.snapshot(cq_of(s) + self.owed)
    }
}

impl Drop for SoftPort {
    fn drop(&mut self) {
        let _ = self.release(self.owed as usize);
        self.publish_releases();
        // Pull what a hold (fault injection) left for this port.
        #[cfg(feature = "fault-injection")]
        self.shared.owner_update(self.id, 0);
        self.me().state.fetch_and(!PARKED, AcqRel);
        self.me().notifier.drain();
        self.me().taken.store(false, Release);
    }
}
