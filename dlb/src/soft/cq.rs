//! A port's consumer queue (CQ): slots filled by producers that reserved
//! them, emptied in order by the port's owner.
//!
//! Producers do not race for positions here: the reservation CAS on the
//! port's state word hands each producer its position (the state's `tail`
//! field), and bounds the producers to the free slots. So a push is one
//! write and one Release store, with no CAS of its own.
//!
//! Each slot's `seq` says what it holds: `pos + 1` (as `u32`) when the event
//! for position `pos` is published, with [`TOMBSTONE`] set when the producer
//! gave its reservation up and the owner should skip the slot. A stale
//! value from an earlier lap never equals `pos + 1`.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::event::Event;
use crate::loom::{AtomicU32, AtomicU64, UnsafeCell};

/// Set in a slot's `seq` when the slot carries no event.
const TOMBSTONE: u64 = 1 << 32;

struct Slot {
    seq: AtomicU64,
    /// Written only by the producer holding the reservation for the slot's
    /// position; read only by the owner after it sees `seq == pos + 1`.
    event: UnsafeCell<Event>,
}

/// What the owner found at the head of its CQ.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Popped {
    /// Nothing is published at the head.
    Empty,
    /// A delivered event, now in the caller's slot.
    Event,
    /// A slot whose reservation was given up.
    Skip,
}

/// The consumer queue of one port.
pub(crate) struct Cq {
    slots: Box<[Slot]>,
    mask: u32,
    /// Next position to pop. Only the port's owner reads and writes it; it
    /// is atomic so that a later owner of the port (after the previous one
    /// dropped it) sees where to resume.
    head: AtomicU32,
}

// SAFETY: each slot's cell is written by the one producer whose reservation
// covers its position, and read by the owner only after the Release store of
// `seq` that publishes it (Acquire load); the owner gives the slot back
// (through the port state RMW) only after reading it. `Event` is plain data.
unsafe impl Sync for Cq {}
// SAFETY: as above; nothing in the CQ is tied to a thread.
unsafe impl Send for Cq {}

impl Cq {
    /// A CQ of `depth` slots (a power of two).
    pub(crate) fn new(depth: u32) -> Self {
        debug_assert!(depth.is_power_of_two());
        let slots = (0..depth)
            .map(|i| Slot {
                // `i` never equals `i + 1`: nothing is published at start.
                seq: AtomicU64::new(u64::from(i)),
                event: UnsafeCell::new(Event::default()),
            })
            .collect();
        Self {
            slots,
            mask: depth - 1,
            head: AtomicU32::new(0),
        }
    }

    fn slot(&self, pos: u32) -> &Slot {
        &self.slots[(pos & self.mask) as usize]
    }

    /// Publishes `event` at `pos`.
    ///
    /// # Safety
    /// The caller must hold the reservation for `pos` (from the port's state
    /// CAS), and use it once.
    #[inline]
    pub(crate) unsafe fn write(&self, pos: u32, event: Event) {
        let slot = self.slot(pos);
        // SAFETY: the caller's reservation makes this thread the only writer
        // of the slot, and the owner does not read it before `seq` says so.
        slot.event.with_mut(|p| unsafe { p.write(event) });
        slot.seq.store(u64::from(pos.wrapping_add(1)), Release);
    }

    /// Gives up the reservation for `pos`: the owner will skip the slot.
    ///
    /// # Safety
    /// As for [`write`](Self::write).
    pub(crate) unsafe fn skip(&self, pos: u32) {
        self.slot(pos)
            .seq
            .store(u64::from(pos.wrapping_add(1)) | TOMBSTONE, Release);
    }

    /// Pops the head slot if it is published, writing a delivered event
    /// into `out` (left alone otherwise). Writing in place, rather than
    /// returning the event in an enum, keeps the copy to two plain moves.
    ///
    /// # Safety
    /// Only the port's current owner may call this.
    #[inline]
    pub(crate) unsafe fn pop_into(&self, out: &mut Event) -> Popped {
        let head = self.head.load(Relaxed);
        let slot = self.slot(head);
        let seq = slot.seq.load(Acquire);
        if seq as u32 != head.wrapping_add(1) {
            return Popped::Empty;
        }
        self.head.store(head.wrapping_add(1), Relaxed);
        if seq & TOMBSTONE != 0 {
            return Popped::Skip;
        }
        // SAFETY: `seq == head + 1` (Acquire) means the producer's write is
        // visible and finished; the slot stays ours until the owner's state
        // RMW gives it back.
        *out = slot.event.with(|p| unsafe { p.read() });
        Popped::Event
    }

    /// Whether the head slot is published (owner only; a hint).
    pub(crate) fn head_ready(&self) -> bool {
        let head = self.head.load(Relaxed);
        self.slot(head).seq.load(Acquire) as u32 == head.wrapping_add(1)
    }
}
