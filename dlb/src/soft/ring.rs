//! A bounded lock-free ring of [`Event`]s (Dmitry Vyukov's MPMC array queue).
//!
//! Each slot carries a sequence number that tells producers and consumers
//! whose turn it is:
//! - `seq == pos`: the slot is free for the producer that claims position
//!   `pos`;
//! - `seq == pos + 1`: the slot holds the event written at `pos`, ready for
//!   the consumer that claims `pos`;
//! - after the consumer reads it, it sets `seq = pos + capacity`, freeing the
//!   slot for the producer of the next lap.
//!
//! Producers claim positions by CAS on `tail`, consumers by CAS on `head`. The event is published by
//! the Release store of `seq` and acquired by the Acquire load that sees it.
//!
//! What if it is full? [`Ring::push`] returns the event to the caller. The
//! DLB code sizes every waiting ring to hold the whole credit pool, so that
//! it is never logically full.
//! A push can still find its slot busy while a consumer that claimed the
//! previous lap's event is between its two stores, even though other slots
//! are free; [`Ring::push_wait`] waits that out.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::event::Event;
use crate::loom::{AtomicUsize, CachePadded, UnsafeCell};

/// What [`Ring::run_from`] found.
enum Run {
    /// This many consecutive slots are ready.
    Slots(usize),
    /// The first slot is not ready.
    Empty,
    /// The first slot was claimed by another thread: reload the position.
    Stale,
}

struct Slot {
    /// Whose turn it is; see the module docs.
    seq: AtomicUsize,
    /// The event; written only by the producer that owns `seq == pos`, read
    /// only by the consumer that owns `seq == pos + 1`.
    event: UnsafeCell<Event>,
}

/// A bounded multi-producer ring of events.
pub(crate) struct Ring {
    /// Next position to pop. Written by consumers.
    head: CachePadded<AtomicUsize>,
    /// Next position to push. Written by producers.
    tail: CachePadded<AtomicUsize>,
    slots: Box<[Slot]>,
    mask: usize,
}

// SAFETY: the ring hands each event from exactly one producer to exactly one
// consumer; the slot sequence numbers (Acquire/Release) make every access to
// a slot's cell exclusive, as the module docs explain. `Event` is `Copy`
// plain data, so moving it between threads is sound.
unsafe impl Sync for Ring {}
// SAFETY: as above; nothing in the ring is tied to a thread.
unsafe impl Send for Ring {}

impl Ring {
    /// A ring holding `capacity` events, rounded up to a power of two.
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(2).next_power_of_two();
        let slots = (0..capacity)
            .map(|i| Slot {
                seq: AtomicUsize::new(i),
                event: UnsafeCell::new(Event::default()),
            })
            .collect();
        Self {
            head: CachePadded(AtomicUsize::new(0)),
            tail: CachePadded(AtomicUsize::new(0)),
            slots,
            mask: capacity - 1,
        }
    }

    #[inline]
    fn slot(&self, pos: usize) -> &Slot {
        &self.slots[pos & self.mask]
    }

    /// Appends `event`, or gives it back if the ring is full.
    #[inline]
    pub(crate) fn push(&self, event: Event) -> Result<(), Event> {
        let mut pos = self.tail.load(Relaxed);
        loop {
            let slot = self.slot(pos);
            let seq = slot.seq.load(Acquire);
            let diff = seq.wrapping_sub(pos) as isize;
            if diff == 0 {
                match self
                    .tail
                    .compare_exchange_weak(pos, pos.wrapping_add(1), Relaxed, Relaxed)
                {
                    Ok(_) => {
                        // SAFETY: winning the CAS for `pos` while `seq == pos`
                        // makes this thread the only one that may touch the
                        // slot until it stores `seq = pos + 1` below.
                        slot.event.with_mut(|p| unsafe { p.write(event) });
                        slot.seq.store(pos.wrapping_add(1), Release);
                        return Ok(());
                    }
                    Err(actual) => pos = actual,
                }
            } else if diff < 0 {
                // The slot still holds the event of the previous lap.
                return Err(event);
            } else {
                pos = self.tail.load(Relaxed);
            }
        }
    }

    /// Appends `event` to a ring that the caller knows is not logically full:
    /// waits out a consumer that still holds the slot of the previous lap.
    pub(crate) fn push_wait(&self, mut event: Event) {
        let mut backoff = crate::loom::Backoff::new();
        loop {
            match self.push(event) {
                Ok(()) => return,
                Err(back) => event = back,
            }
            backoff.snooze();
        }
    }

    /// The run of consecutive slots from `pos` (at most `max`) whose `seq`
    /// is `p + offset` for their position `p`: 0 for a producer (free
    /// slots), 1 for a consumer (published ones). [`Run::Stale`] if the
    /// first slot is already past that (another thread claimed `pos`).
    fn run_from(&self, pos: usize, offset: usize, max: usize) -> Run {
        let mut n = 0;
        while n < max && n <= self.mask {
            let p = pos.wrapping_add(n);
            let diff = self
                .slot(p)
                .seq
                .load(Acquire)
                .wrapping_sub(p.wrapping_add(offset)) as isize;
            if diff != 0 {
                // Ahead on a later slot: a claim raced ours; the claiming
                // CAS will fail and look again.
                if n == 0 && diff > 0 {
                    return Run::Stale;
                }
                break;
            }
            n += 1;
        }
        if n == 0 {
            Run::Empty
        } else {
            Run::Slots(n)
        }
    }

    /// Appends a prefix of `events` with one claim of consecutive positions,
    /// and returns how many it appended: all of them, unless a slot of the
    /// range still holds an event of the previous lap (then the free slots
    /// before it; zero if the first is busy or `events` is empty).
    pub(crate) fn push_n(&self, events: &[Event]) -> usize {
        let mut pos = self.tail.load(Relaxed);
        loop {
            // Free slots from `pos` on: a slot whose `seq == p` stays free
            // until the producer that claims `p` writes it, and a claim of
            // the range below makes this thread that producer. A slot
            // still holding the previous lap's event ends the run.
            let n = match self.run_from(pos, 0, events.len()) {
                Run::Slots(n) => n,
                Run::Empty => return 0,
                Run::Stale => {
                    pos = self.tail.load(Relaxed);
                    continue;
                }
            };
            match self
                .tail
                .compare_exchange_weak(pos, pos.wrapping_add(n), Relaxed, Relaxed)
            {
                Ok(_) => {
                    for (i, event) in events[..n].iter().enumerate() {
                        let p = pos.wrapping_add(i);
                        let slot = self.slot(p);
                        // SAFETY: winning the CAS for `pos..pos + n`, whose
                        // slots all had `seq == p`, makes this thread the
                        // only one that may touch them until it stores
                        // `seq = p + 1`.
                        slot.event.with_mut(|c| unsafe { c.write(*event) });
                        slot.seq.store(p.wrapping_add(1), Release);
                    }
                    return n;
                }
                Err(actual) => pos = actual,
            }
        }
    }

    /// Removes up to `out.len()` of the oldest events with one claim of
    /// consecutive positions, writing them to the front of `out`; returns
    /// how many (zero if the oldest is not ready). Stops before the first
    /// position whose producer has not finished publishing it.
    pub(crate) fn pop_n(&self, out: &mut [Event]) -> usize {
        let mut pos = self.head.load(Relaxed);
        loop {
            // Published slots from `pos` on: once `seq == p + 1`, only the
            // consumer that claims `p` changes it again. An unpublished
            // slot ends the run.
            let n = match self.run_from(pos, 1, out.len()) {
                Run::Slots(n) => n,
                Run::Empty => return 0,
                Run::Stale => {
                    pos = self.head.load(Relaxed);
                    continue;
                }
            };
            match self
                .head
                .compare_exchange_weak(pos, pos.wrapping_add(n), Relaxed, Relaxed)
            {
                Ok(_) => {
                    for (i, dst) in out[..n].iter_mut().enumerate() {
                        let p = pos.wrapping_add(i);
                        let slot = self.slot(p);
                        // SAFETY: winning the CAS for `pos..pos + n`, whose
                        // slots all had `seq == p + 1`, makes this thread the
                        // only reader of their events until it frees them.
                        *dst = slot.event.with(|c| unsafe { c.read() });
                        slot.seq.store(p.wrapping_add(self.mask + 1), Release);
                    }
                    return n;
                }
                Err(actual) => pos = actual,
            }
        }
    }

    /// Removes the oldest event, if one is ready. Safe with any number of
    /// concurrent consumers.
    #[inline]
    pub(crate) fn pop(&self) -> Option<Event> {
        let mut pos = self.head.load(Relaxed);
        loop {
            let slot = self.slot(pos);
            let seq = slot.seq.load(Acquire);
            let diff = seq.wrapping_sub(pos.wrapping_add(1)) as isize;
            if diff == 0 {
                match self
                    .head
                    .compare_exchange_weak(pos, pos.wrapping_add(1), Relaxed, Relaxed)
                {
                    Ok(_) => {
                        // SAFETY: winning the CAS for `pos` while
                        // `seq == pos + 1` makes this thread the only reader
                        // of the published event until it frees the slot.
                        let event = slot.event.with(|p| unsafe { p.read() });
                        slot.seq.store(pos.wrapping_add(self.mask + 1), Release);
                        return Some(event);
                    }
                    Err(actual) => pos = actual,
                }
            } else if diff < 0 {
                return None;
            } else {
                pos = self.head.load(Relaxed);
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! A producer and two dispatchers (consumers) on one ring, with a
    //! wrap-around: every event is popped exactly once, none is lost.

    use ::loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use ::loom::sync::Arc;
    use ::loom::thread;

    use super::Ring;
    use crate::event::Event;

    #[test]
    fn two_dispatchers_pop_each_event_once() {
        ::loom::model(|| {
            let ring = Arc::new(Ring::new(2));
            // One lap done before the race, so positions wrap.
            ring.push_wait(Event::unordered(0, 1 << 8));
            assert!(ring.pop().is_some());
            let seen = Arc::new(AtomicUsize::new(0));
            let producer = {
                let ring = ring.clone();
                thread::spawn(move || {
                    ring.push_wait(Event::unordered(0, 1));
                    ring.push_wait(Event::unordered(0, 2));
                })
            };
            let dispatcher = {
                let (ring, seen) = (ring.clone(), seen.clone());
                thread::spawn(move || {
                    if let Some(e) = ring.pop() {
                        let prev = seen.fetch_or(e.udata as usize, SeqCst);
                        assert_eq!(prev & e.udata as usize, 0, "popped twice");
                    }
                })
            };
            // The second dispatcher, here: one pop racing the others, then
            // what is left once they are done.
            if let Some(e) = ring.pop() {
                let prev = seen.fetch_or(e.udata as usize, SeqCst);
                assert_eq!(prev & e.udata as usize, 0, "popped twice");
            }
            producer.join().unwrap();
            dispatcher.join().unwrap();
            while let Some(e) = ring.pop() {
                let prev = seen.fetch_or(e.udata as usize, SeqCst);
                assert_eq!(prev & e.udata as usize, 0, "popped twice");
            }
            assert_eq!(seen.load(SeqCst), 0b11, "an event was lost");
        });
    }

    #[test]
    fn batch_push_and_batch_pop_move_each_event_once() {
        ::loom::model(|| {
            let ring = Arc::new(Ring::new(2));
            // One lap done before the race, so positions wrap and a batch
            // can meet the previous lap's slot.
            ring.push_wait(Event::unordered(0, 1 << 8));
            assert_eq!(ring.pop_n(&mut [Event::default(); 1]), 1);
            let seen = Arc::new(AtomicUsize::new(0));
            let record = |seen: &AtomicUsize, events: &[Event]| {
                for e in events {
                    let prev = seen.fetch_or(e.udata as usize, SeqCst);
                    assert_eq!(prev & e.udata as usize, 0, "popped twice");
                }
            };
            let producer = {
                let ring = ring.clone();
                thread::spawn(move || {
                    let events = [Event::unordered(0, 1), Event::unordered(0, 2)];
                    let mut pushed = 0;
                    while pushed < events.len() {
                        pushed += ring.push_n(&events[pushed..]);
                        thread::yield_now();
                    }
                })
            };
            let dispatcher = {
                let (ring, seen) = (ring.clone(), seen.clone());
                thread::spawn(move || {
                    let mut buf = [Event::default(); 2];
                    let n = ring.pop_n(&mut buf);
                    record(&seen, &buf[..n]);
                })
            };
            let mut buf = [Event::default(); 2];
            let n = ring.pop_n(&mut buf);
            record(&seen, &buf[..n]);
            producer.join().unwrap();
            dispatcher.join().unwrap();
            loop {
                let n = ring.pop_n(&mut buf);
                if n == 0 {
                    break;
                }
                record(&seen, &buf[..n]);
            }
            assert_eq!(seen.load(SeqCst), 0b11, "an event was lost");
        });
    }
}
