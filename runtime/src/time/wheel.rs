//! A hierarchical timing wheel: the timer store of one worker.
//!
//! Time is counted in ticks of one millisecond since the worker started. The
//! wheel holds entries (a deadline and a value), fires them in deadline order
//! when the worker [advances](Wheel::advance) it, and tells the worker the
//! [earliest deadline](Wheel::next_deadline) so that it knows how long it may
//! sleep in its `Poll`.
//!
//! # Layout
//! - `LEVELS` levels of 64 slots. Slot `s` of level `L` covers the ticks whose
//!   bits `6L..6L + 6` equal `s` and whose higher bits equal those of `now`.
//!   Level 0 slots are one tick wide, level 1 slots 64 ticks, level `L` slots
//!   `64^L` ticks. There are 11 levels (`6 * 11 >= 64`), not tokio's 6
//!   (2^36 ms, about two years), so that every `u64` deadline has an exact
//!   place and nothing needs clamping or an overflow list; the 5 extra levels
//!   cost 5 bitmaps and 320 list heads, and are only visited when occupied.
//! - Each slot is an intrusive doubly-linked list threaded through the
//!   entries, which live in a [`Slab`]; an entry knows its list, so removal is
//!   O(1). One `u64` bitmap per level says which slots are non-empty, so
//!   finding the next non-empty slot is a `trailing_zeros`.
//! - A *pending* list holds entries whose deadline was already in the past
//!   when they were inserted or reset (deadline `< now`). They fire first on
//!   the next advance.
//!
//! # Invariants
//! Between public calls, with `now` the wheel's current tick:
//! - an entry with `deadline < now` is on the pending list;
//! - an entry with `deadline >= now` is in the slot given by
//!   [`location`]`(now, deadline)`: its level is the level of the highest bit
//!   in which `deadline` and `now` differ (level 0 if they are equal or
//!   differ only in the low 6 bits), its slot is `deadline`'s 6 bits at that
//!   level. Hence every occupied slot of level `L > 0` starts after `now`,
//!   every entry of a lower level has an earlier deadline than every entry of
//!   a higher level, and all entries of one level-0 slot share one deadline.
//! - the bitmap bit of a slot is set exactly when its list is non-empty.
//!
//! # Advancing
//! [`Wheel::advance`] first fires the pending list, then repeatedly takes the
//! earliest occupied slot (lowest non-empty level, lowest set bit) while it
//! starts no later than the target tick, moves `now` to the slot's start, and
//! either fires it (level 0: every entry's deadline is exactly `now`) or
//! cascades it (re-files each entry relative to the new `now`, which puts it
//! on a lower level). Empty slots are never visited, so the cost of a jump
//! depends on the occupied slots it crosses, not on its length. Entries that
//! fire together (one slot, or the pending list) are sorted by
//! `(deadline, seq)`, where `seq` counts insertions and resets, which gives
//! the documented tie order.
//!
//! # Re-entrancy
//! The `fire` callback of [`Wheel::advance`] runs while the wheel is mutably
//! borrowed, so it cannot touch the wheel. A fired value whose handling
//! re-arms a timer (a waker whose task sleeps again) must do so after
//! `advance` returns — typically the waker only schedules the task, and the
//! task inserts its next timer when it is polled. A timer inserted after
//! `advance` with a deadline at or before `now` fires on the next advance,
//! so deferring loses nothing. If `fire` panics, the entries not yet fired
//! stay in the wheel, consistently filed, and fire on a later advance.

use std::cell::Cell;
use std::fmt;
use std::mem;

use slab::Slab;

/// Bits of a tick resolved by one level.
const LEVEL_BITS: usize = 6;

/// Slots per level.
const SLOTS: usize = 1 << LEVEL_BITS;

/// Mask of the bits of a tick that select a slot within one level.
const SLOT_MASK: u64 = SLOTS as u64 - 1;

/// Levels: enough that `64^LEVELS` exceeds every `u64` tick, so that no
/// deadline needs clamping or an overflow list.
const LEVELS: usize = (u64::BITS as usize).div_ceil(LEVEL_BITS);

/// A handle to a timer in a [`Wheel`].
///
/// It names a slab entry and the generation the entry had when the timer was
/// inserted, so a key whose timer fired or was removed stays harmless after
/// the slab reuses the entry: every operation on it reports the timer gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TimerKey {
    /// Index of the entry in the wheel's slab.
    index: usize,
    /// The entry's generation: the insertion counter at insertion time,
    /// unique over the wheel's life.
    generation: u64,
}

/// The list an entry is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// The pending list: the deadline was before `now` when the entry was
    /// filed.
    Pending,
    /// A wheel slot, as the flat index `level * SLOTS + slot` into
    /// [`Wheel::slots`].
    Slot(usize),
}

/// One timer.
struct Entry<T> {
    /// What `fire` receives.
    value: T,
    /// The tick at or after which the entry fires.
    deadline: u64,
    /// Tie-break among equal deadlines: the insertion counter at the last
    /// insert or reset, so a reset counts as a fresh insertion.
    seq: u64,
    /// Must equal [`TimerKey::generation`] for a key to name this entry.
    generation: u64,
    /// Which list the entry is on.
    place: Place,
    /// Previous entry on the same list.
    prev: Option<usize>,
    /// Next entry on the same list.
    next: Option<usize>,
}

/// Head and tail of an intrusive list threaded through [`Entry::prev`] and
/// [`Entry::next`].
#[derive(Clone, Copy, Debug, Default)]
struct List {
    /// First entry, `None` when the list is empty.
    head: Option<usize>,
    /// Last entry, `None` when the list is empty.
    tail: Option<usize>,
}

/// A cached answer of [`Wheel::next_deadline`].
#[derive(Clone, Copy, Debug)]
enum Earliest {
    /// Must be recomputed.
    Unknown,
    /// The earliest deadline (`None`: the wheel is empty).
    Known(Option<u64>),
}

/// The next slot that [`Wheel::advance`] would process.
#[derive(Clone, Copy, Debug)]
struct Expiration {
    /// Level of the slot.
    level: usize,
    /// Slot within the level.
    slot: usize,
    /// First tick the slot covers.
    time: u64,
}

/// A hierarchical timing wheel of timers carrying values of type `T`.
///
/// Owned by one worker; single-threaded. See the [module docs](self) for the
/// layout, invariants and costs.
pub(crate) struct Wheel<T> {
    /// The timers.
    entries: Slab<Entry<T>>,
    /// `LEVELS * SLOTS` lists; slot `s` of level `L` is at `L * SLOTS + s`.
    slots: Box<[List]>,
    /// Per level, bit `s` is set exactly when slot `s` is non-empty.
    occupied: [u64; LEVELS],
    /// Entries whose deadline was before `now` when they were filed.
    pending: List,
    /// The last tick advanced to.
    now: u64,
    /// Source of generations and tie-break sequence numbers.
    counter: u64,
    /// Cache of [`Wheel::next_deadline`]; a `Cell` so that the query can fill
    /// it through `&self`.
    earliest: Cell<Earliest>,
    /// Reused buffer of `(deadline, seq, index)` for sorting what fires
    /// together.
    scratch: Vec<(u64, u64, usize)>,
}

impl<T> Wheel<T> {
    /// Creates an empty wheel at tick 0.
    pub(crate) fn new() -> Self {
        Wheel {
            entries: Slab::new(),
            slots: vec![List::default(); LEVELS * SLOTS].into_boxed_slice(),
            occupied: [0; LEVELS],
            pending: List::default(),
            now: 0,
            counter: 0,
            earliest: Cell::new(Earliest::Known(None)),
            scratch: Vec::new(),
        }
    }

    /// The last tick the wheel was advanced to.
    #[cfg_attr(not(test), allow(dead_code))] // API of the wheel; the driver does not need it yet
    pub(crate) fn now(&self) -> u64 {
        self.now
    }

    /// Number of timers in the wheel (not yet fired or removed).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the wheel holds no timer.
    #[cfg_attr(not(test), allow(dead_code))] // API of the wheel; the driver does not need it yet
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Inserts a timer firing at tick `deadline`. O(1).
    ///
    /// A deadline at or before [`now`](Wheel::now) fires on the next
    /// [`advance`](Wheel::advance), whatever tick it advances to.
    pub(crate) fn insert(&mut self, deadline: u64, value: T) -> TimerKey {
        let generation = self.bump();
        let index = self.entries.insert(Entry {
            value,
            deadline,
            seq: generation,
            generation,
            place: Place::Pending,
            prev: None,
            next: None,
        });
        self.file(index);
        self.note_added(deadline);
        TimerKey { index, generation }
    }

    /// Cancels a timer and returns its value. O(1).
    ///
    /// Returns `None` if the timer already fired or was removed; a stale key
    /// never removes another timer.
    pub(crate) fn remove(&mut self, key: TimerKey) -> Option<T> {
        let index = self.lookup(key)?;
        self.unlink(index);
        let entry = self.entries.remove(index);
        self.note_removed(entry.deadline);
        Some(entry.value)
    }

    /// Moves a timer to a new deadline. O(1).
    ///
    /// For the order among equal deadlines, a reset counts as a fresh
    /// insertion. Returns `false` (and does nothing) if the timer already
    /// fired or was removed.
    #[cfg_attr(not(test), allow(dead_code))] // API of the wheel; the driver does not need it yet
    pub(crate) fn reset(&mut self, key: TimerKey, deadline: u64) -> bool {
        let Some(index) = self.lookup(key) else {
            return false;
        };
        self.unlink(index);
        let seq = self.bump();
        let entry = &mut self.entries[index];
        let old = mem::replace(&mut entry.deadline, deadline);
        entry.seq = seq;
        self.file(index);
        self.note_removed(old);
        self.note_added(deadline);
        true
    }

    /// The deadline of a timer, or `None` if it already fired or was
    /// removed.
    #[cfg_attr(not(test), allow(dead_code))] // API of the wheel; the driver does not need it yet
    pub(crate) fn deadline(&self, key: TimerKey) -> Option<u64> {
        self.lookup(key).map(|index| self.entries[index].deadline)
    }

    /// The earliest deadline among the timers, exactly (not a slot bound), or
    /// `None` if the wheel is empty. It is before `now` if a timer was
    /// inserted in the past and has not fired yet.
    ///
    /// The answer is cached, and the cache survives insertions, resets and
    /// removals of other than the earliest timer, and advances that fire
    /// nothing. Recomputing it finds the earliest occupied slot in O(levels)
    /// and, unless that slot is on level 0 (one deadline per slot), scans that
    /// slot's list (or the pending list if it is non-empty).
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        if let Earliest::Known(earliest) = self.earliest.get() {
            return earliest;
        }
        let earliest = self.compute_earliest();
        self.earliest.set(Earliest::Known(earliest));
        earliest
    }

    /// Advances the wheel to tick `now`, calling `fire` on every timer whose
    /// deadline is at or before `now`, in non-decreasing deadline order (among
    /// equal deadlines, in insertion order, a reset counting as an
    /// insertion). A fired timer's key is stale when `fire` receives it.
    ///
    /// A `now` before [`Wheel::now`] is ignored: nothing fires and the wheel
    /// keeps its tick.
    ///
    /// The cost is proportional to the occupied slots crossed plus the timers
    /// fired and cascaded (each timer cascades at most once per level); empty
    /// slots are skipped, so a long jump is not iterated tick by tick.
    ///
    /// `fire` cannot reach the wheel (it is mutably borrowed): timers that a
    /// fired value wants re-armed must be inserted after this returns; see
    /// the [module docs](self#re-entrancy). If `fire` panics, the timers not
    /// yet fired stay in the wheel and fire on a later advance.
    pub(crate) fn advance(&mut self, now: u64, mut fire: impl FnMut(TimerKey, T)) {
        if now < self.now {
            return;
        }
        if self.pending.head.is_some() {
            self.fire_list(Place::Pending, &mut fire);
        }
        while let Some(expiration) = self.next_expiration() {
            if expiration.time > now {
                break;
            }
            // No entry lies between the old `now` and the slot's start (the
            // slot is the earliest occupied one), so moving `now` there keeps
            // every other entry correctly filed.
            self.now = expiration.time;
            let flat = expiration.level * SLOTS + expiration.slot;
            if expiration.level == 0 {
                self.fire_list(Place::Slot(flat), &mut fire);
            } else {
                self.cascade(flat);
            }
        }
        // Every remaining entry is in a slot starting after `now`, and such a
        // slot is where `location(now, deadline)` files it too.
        self.now = now;
    }

    /// Takes the next value of the insertion counter.
    fn bump(&mut self) -> u64 {
        let value = self.counter;
        // Wrapping would take 2^64 insertions; if it ever happens, only the
        // tie order and stale-key detection of keys that old suffer.
        self.counter = value.wrapping_add(1);
        value
    }

    /// The slab index named by `key`, if the key is not stale.
    fn lookup(&self, key: TimerKey) -> Option<usize> {
        match self.entries.get(key.index) {
            Some(entry) if entry.generation == key.generation => Some(key.index),
            _ => None,
        }
    }

    /// Updates the `next_deadline` cache after adding `deadline`.
    fn note_added(&self, deadline: u64) {
        if let Earliest::Known(earliest) = self.earliest.get() {
            let earliest = earliest.map_or(deadline, |earliest| earliest.min(deadline));
            self.earliest.set(Earliest::Known(Some(earliest)));
        }
    }

    /// Updates the `next_deadline` cache after removing `deadline`.
    fn note_removed(&self, deadline: u64) {
        if let Earliest::Known(Some(earliest)) = self.earliest.get() {
            if earliest == deadline {
                self.earliest.set(Earliest::Unknown);
            }
        }
    }

    /// Computes what [`Wheel::next_deadline`] returns.
    fn compute_earliest(&self) -> Option<u64> {
        // Pending deadlines are before `now`, wheel deadlines at or after it.
        if self.pending.head.is_some() {
            return self.list_min(self.pending);
        }
        let expiration = self.next_expiration()?;
        if expiration.level == 0 {
            // Every entry of a level-0 slot has the slot's tick as deadline.
            return Some(expiration.time);
        }
        self.list_min(self.slots[expiration.level * SLOTS + expiration.slot])
    }

    /// The smallest deadline on a list.
    fn list_min(&self, list: List) -> Option<u64> {
        let mut min = None;
        let mut cursor = list.head;
        while let Some(index) = cursor {
            let entry = &self.entries[index];
            min = Some(min.map_or(entry.deadline, |min: u64| min.min(entry.deadline)));
            cursor = entry.next;
        }
        min
    }

    /// The earliest occupied slot: the lowest set bit of the lowest non-empty
    /// level (lower levels hold earlier deadlines). O(levels).
    fn next_expiration(&self) -> Option<Expiration> {
        let level = self.occupied.iter().position(|&bits| bits != 0)?;
        let bits = self.occupied[level];
        let slot = bits.trailing_zeros() as usize;
        debug_assert!(
            slot as u64 >= (self.now >> (level * LEVEL_BITS)) & SLOT_MASK,
            "an occupied slot lies before now"
        );
        Some(Expiration {
            level,
            slot,
            time: slot_start(self.now, level, slot),
        })
    }

    /// Files entry `index` (not on any list) according to its deadline and
    /// `now`, at the tail of its list.
    fn file(&mut self, index: usize) {
        let deadline = self.entries[index].deadline;
        let place = if deadline < self.now {
            Place::Pending
        } else {
            let (level, slot) = location(self.now, deadline);
            self.occupied[level] |= 1 << slot;
            Place::Slot(level * SLOTS + slot)
        };
        let list = list_mut(&mut self.pending, &mut self.slots, place);
        let old_tail = list.tail.replace(index);
        if list.head.is_none() {
            list.head = Some(index);
        }
        if let Some(tail) = old_tail {
            self.entries[tail].next = Some(index);
        }
        let entry = &mut self.entries[index];
        entry.place = place;
        entry.prev = old_tail;
        entry.next = None;
    }

    /// Takes entry `index` off its list. O(1).
    fn unlink(&mut self, index: usize) {
        let entry = &mut self.entries[index];
        let (prev, next, place) = (entry.prev.take(), entry.next.take(), entry.place);
        let list = list_mut(&mut self.pending, &mut self.slots, place);
        match prev {
            Some(prev) => self.entries[prev].next = next,
            None => list.head = next,
        }
        match next {
            Some(next) => self.entries[next].prev = prev,
            None => list.tail = prev,
        }
        if list.head.is_none() {
            if let Place::Slot(flat) = place {
                self.occupied[flat / SLOTS] &= !(1 << (flat % SLOTS));
            }
        }
    }

    /// Re-files every entry of slot `flat` (of a level above 0, starting at
    /// `now`) relative to `now`; each lands on a lower level.
    fn cascade(&mut self, flat: usize) {
        let list = mem::take(&mut self.slots[flat]);
        self.occupied[flat / SLOTS] &= !(1 << (flat % SLOTS));
        let mut cursor = list.head;
        while let Some(index) = cursor {
            cursor = self.entries[index].next;
            self.file(index);
            debug_assert!(
                matches!(self.entries[index].place, Place::Slot(to) if to / SLOTS < flat / SLOTS),
                "a cascaded entry must move down"
            );
        }
    }

    /// Fires every entry of one list (the pending list, or a level-0 slot
    /// starting at `now`) in `(deadline, seq)` order.
    ///
    /// Entries are unlinked one at a time just before `fire` gets them, so a
    /// panic in `fire` leaves the rest filed where they were.
    fn fire_list<F: FnMut(TimerKey, T)>(&mut self, place: Place, fire: &mut F) {
        let list = *list_mut(&mut self.pending, &mut self.slots, place);
        let mut batch = mem::take(&mut self.scratch);
        batch.clear();
        let mut cursor = list.head;
        while let Some(index) = cursor {
            let entry = &self.entries[index];
            batch.push((entry.deadline, entry.seq, index));
            cursor = entry.next;
        }
        // `seq` is unique, so the unstable sort is deterministic.
        batch.sort_unstable();
        self.earliest.set(Earliest::Unknown);
        for &(_, _, index) in &batch {
            self.unlink(index);
            let entry = self.entries.remove(index);
            fire(
                TimerKey {
                    index,
                    generation: entry.generation,
                },
                entry.value,
            );
        }
        self.scratch = batch;
    }
}

impl<T> Default for Wheel<T> {
    fn default() -> Self {
        Wheel::new()
    }
}

impl<T> fmt::Debug for Wheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wheel")
            .field("now", &self.now)
            .field("len", &self.len())
            .field("next_deadline", &self.next_deadline())
            .finish_non_exhaustive()
    }
}

/// The list `place` names. A free function so that callers can keep
/// borrowing the slab while holding the list.
fn list_mut<'a>(pending: &'a mut List, slots: &'a mut [List], place: Place) -> &'a mut List {
    match place {
        Place::Pending => pending,
        Place::Slot(flat) => &mut slots[flat],
    }
}

/// The `(level, slot)` where an entry with `deadline >= now` is filed: the
/// level of the highest bit in which the two differ (level 0 if they differ
/// in no bit above the lowest 6), and `deadline`'s bits at that level.
fn location(now: u64, deadline: u64) -> (usize, usize) {
    debug_assert!(deadline >= now, "past deadlines go to the pending list");
    // Never zero, thanks to the mask, so `leading_zeros` is at most 57.
    let masked = (now ^ deadline) | SLOT_MASK;
    let significant = (u64::BITS - 1 - masked.leading_zeros()) as usize;
    let level = significant / LEVEL_BITS;
    let slot = ((deadline >> (level * LEVEL_BITS)) & SLOT_MASK) as usize;
    (level, slot)
}

/// The first tick covered by slot `slot` of `level`, in the range of that
/// level which contains `now`.
fn slot_start(now: u64, level: usize, slot: usize) -> u64 {
    let span_bits = (level + 1) * LEVEL_BITS;
    // For the top level the span exceeds 64 bits: the range is all of `u64`.
    let base = u32::try_from(span_bits)
        .ok()
        .and_then(|bits| now.checked_shr(bits))
        .map_or(0, |high| high << span_bits);
    base | ((slot as u64) << (level * LEVEL_BITS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulcrum_test_support::fastrand;
    use std::collections::{BTreeMap, HashMap};

    /// Advances `wheel` to `now` and returns what fired, as `(key, value)`.
    fn advance<T>(wheel: &mut Wheel<T>, now: u64) -> Vec<(TimerKey, T)> {
        let mut fired = Vec::new();
        wheel.advance(now, |key, value| fired.push((key, value)));
        fired
    }

    /// Advances `wheel` to `now` and returns the fired values.
    fn values<T>(wheel: &mut Wheel<T>, now: u64) -> Vec<T> {
        advance(wheel, now).into_iter().map(|(_, v)| v).collect()
    }

    #[test]
    fn levels_cover_u64() {
        assert_eq!(LEVELS, 11);
        assert_eq!(location(0, u64::MAX), (10, 15));
        assert_eq!(location(0, 0), (0, 0));
        assert_eq!(location(0, 63), (0, 63));
        assert_eq!(location(0, 64), (1, 1));
        assert_eq!(location(100, 127), (0, 63));
        assert_eq!(location(100, 128), (1, 2));
        assert_eq!(slot_start(0, 10, 15), 15 << 60);
        assert_eq!(slot_start(4097, 1, 3), 4096 + 3 * 64);
    }

    #[test]
    fn empty_wheel() {
        let mut wheel = Wheel::<u32>::new();
        assert_eq!(wheel.now(), 0);
        assert!(wheel.is_empty());
        assert_eq!(wheel.len(), 0);
        assert_eq!(wheel.next_deadline(), None);
        assert!(advance(&mut wheel, 1_000_000).is_empty());
        assert_eq!(wheel.now(), 1_000_000);
        assert_eq!(wheel.next_deadline(), None);
        assert!(format!("{wheel:?}").contains("now: 1000000"));
    }

    #[test]
    fn insert_and_fire() {
        let mut wheel = Wheel::new();
        let a = wheel.insert(10, "a");
        let b = wheel.insert(5, "b");
        let c = wheel.insert(1000, "c");
        assert_eq!(wheel.len(), 3);
        assert_eq!(wheel.deadline(a), Some(10));
        assert_eq!(wheel.next_deadline(), Some(5));
        assert!(advance(&mut wheel, 4).is_empty());
        assert_eq!(advance(&mut wheel, 10), vec![(b, "b"), (a, "a")]);
        assert_eq!(wheel.now(), 10);
        assert_eq!(wheel.deadline(a), None);
        assert_eq!(wheel.next_deadline(), Some(1000));
        assert!(advance(&mut wheel, 999).is_empty());
        assert_eq!(advance(&mut wheel, 1000), vec![(c, "c")]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn never_early() {
        let mut wheel = Wheel::new();
        for deadline in [1, 63, 64, 65, 4095, 4096, 4097, 100_000] {
            wheel.insert(deadline, deadline);
        }
        let mut now = 0;
        while !wheel.is_empty() {
            let fired = values(&mut wheel, now);
            assert!(fired.iter().all(|&d| d == now), "at {now}: {fired:?}");
            now += 1;
        }
    }

    #[test]
    fn remove_and_reset() {
        let mut wheel = Wheel::new();
        let a = wheel.insert(100, 'a');
        let b = wheel.insert(200, 'b');
        assert_eq!(wheel.remove(a), Some('a'));
        assert_eq!(wheel.remove(a), None);
        assert!(!wheel.reset(a, 5));
        assert_eq!(wheel.next_deadline(), Some(200));
        assert!(wheel.reset(b, 50));
        assert_eq!(wheel.deadline(b), Some(50));
        assert_eq!(wheel.next_deadline(), Some(50));
        assert!(advance(&mut wheel, 49).is_empty());
        assert!(wheel.reset(b, 10_000));
        assert!(advance(&mut wheel, 9_999).is_empty());
        assert_eq!(values(&mut wheel, 10_000), vec!['b']);
        assert!(!wheel.reset(b, 20_000));
        assert_eq!(wheel.remove(b), None);
        assert!(wheel.is_empty());
    }

    #[test]
    fn past_deadlines_fire_on_next_advance() {
        let mut wheel = Wheel::new();
        assert!(advance(&mut wheel, 1000).is_empty());
        wheel.insert(1000, "now");
        wheel.insert(3, "past");
        wheel.insert(999, "recent");
        wheel.insert(3, "past too");
        wheel.insert(1001, "future");
        assert_eq!(wheel.next_deadline(), Some(3));
        // Advancing to the same tick fires everything due.
        assert_eq!(
            values(&mut wheel, 1000),
            vec!["past", "past too", "recent", "now"]
        );
        assert_eq!(wheel.next_deadline(), Some(1001));
        // Resetting into the past works the same way.
        let key = wheel.insert(5000, "reset");
        assert!(wheel.reset(key, 0));
        assert_eq!(values(&mut wheel, 1000), vec!["reset"]);
    }

    #[test]
    fn backwards_is_a_no_op() {
        let mut wheel = Wheel::new();
        assert!(advance(&mut wheel, 500).is_empty());
        wheel.insert(100, 1);
        wheel.insert(400, 2);
        assert!(advance(&mut wheel, 300).is_empty());
        assert_eq!(wheel.now(), 500);
        assert_eq!(wheel.len(), 2);
        assert_eq!(values(&mut wheel, 500), vec![1, 2]);
    }

    #[test]
    fn ties_fire_in_insertion_order() {
        let mut wheel = Wheel::new();
        // Filed at different levels at different times, same deadline.
        wheel.insert(5000, 0); // level 2
        wheel.insert(5000, 1);
        assert!(advance(&mut wheel, 4200).is_empty()); // cascades them
        wheel.insert(5000, 2); // level 1
        assert!(advance(&mut wheel, 4995).is_empty()); // cascades again
        wheel.insert(5000, 3); // level 0
        let late = wheel.insert(9000, 4);
        let early = wheel.insert(5000, 5);
        // A reset counts as a fresh insertion.
        assert!(wheel.reset(late, 5000));
        assert!(wheel.reset(early, 5000));
        wheel.insert(4999, 6);
        assert_eq!(values(&mut wheel, 6000), vec![6, 0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn stale_keys_after_slab_reuse() {
        let mut wheel = Wheel::new();
        let old = wheel.insert(10, "old");
        assert_eq!(wheel.remove(old), Some("old"));
        let new = wheel.insert(20, "new");
        assert_ne!(old, new);
        assert_eq!(old.index, new.index, "the slab reuses the entry");
        assert_eq!(wheel.remove(old), None);
        assert!(!wheel.reset(old, 5));
        assert_eq!(wheel.deadline(old), None);
        assert_eq!(wheel.deadline(new), Some(20));
        // A key of a fired timer is stale too.
        let fired = advance(&mut wheel, 20);
        assert_eq!(fired, vec![(new, "new")]);
        let newer = wheel.insert(30, "newer");
        assert_eq!(newer.index, new.index);
        assert_eq!(wheel.remove(new), None);
        assert_eq!(wheel.remove(newer), Some("newer"));
    }

    #[test]
    fn huge_jumps_skip_empty_slots() {
        let mut wheel = Wheel::new();
        let day = 86_400_000;
        wheel.insert(3 * day, 3);
        wheel.insert(400 * day, 400);
        wheel.insert(u64::MAX / 2, 0);
        wheel.insert(u64::MAX, 1);
        assert_eq!(values(&mut wheel, 2 * day), Vec::<u64>::new());
        assert_eq!(wheel.next_deadline(), Some(3 * day));
        assert_eq!(values(&mut wheel, 1000 * day), vec![3, 400]);
        assert_eq!(wheel.next_deadline(), Some(u64::MAX / 2));
        assert_eq!(values(&mut wheel, u64::MAX - 1), vec![0]);
        assert_eq!(wheel.next_deadline(), Some(u64::MAX));
        assert_eq!(values(&mut wheel, u64::MAX), vec![1]);
        assert_eq!(wheel.now(), u64::MAX);
        // At the end of time everything is due immediately.
        wheel.insert(u64::MAX, 2);
        wheel.insert(7, 3);
        assert_eq!(values(&mut wheel, u64::MAX), vec![3, 2]);
    }

    #[test]
    fn boundaries_at_powers_of_64() {
        for k in 1..LEVELS as u32 {
            let Some(boundary) = 64u64.checked_pow(k) else {
                break;
            };
            for start in [0, 1, boundary - 1] {
                let mut wheel = Wheel::new();
                assert!(advance(&mut wheel, start).is_empty());
                for deadline in [boundary - 1, boundary, boundary + 1] {
                    wheel.insert(deadline, deadline);
                }
                assert_eq!(wheel.next_deadline(), Some(boundary - 1));
                if start < boundary - 1 {
                    assert!(values(&mut wheel, boundary - 2).is_empty());
                }
                assert_eq!(values(&mut wheel, boundary - 1), vec![boundary - 1]);
                assert_eq!(wheel.next_deadline(), Some(boundary));
                assert_eq!(values(&mut wheel, boundary), vec![boundary]);
                assert_eq!(wheel.next_deadline(), Some(boundary + 1));
                assert_eq!(values(&mut wheel, boundary + 1), vec![boundary + 1]);
                assert!(wheel.is_empty());
            }
        }
    }

    #[test]
    fn next_deadline_is_exact_across_levels() {
        let mut wheel = Wheel::new();
        assert!(advance(&mut wheel, 7).is_empty());
        // One deadline per level, in a slot shared with a later deadline.
        let mut keys = Vec::new();
        for level in (0..8u32).rev() {
            let base = 7 + 64u64.pow(level);
            keys.push(wheel.insert(base + 3, base + 3));
            keys.push(wheel.insert(base + 1, base + 1));
        }
        keys.reverse();
        // keys: level 0 (+1, +3), level 1 (+1, +3), ...
        let mut expected: Vec<u64> = keys.iter().filter_map(|&k| wheel.deadline(k)).collect();
        expected.sort_unstable();
        assert_eq!(wheel.next_deadline(), Some(expected[0]));
        // Removing the earliest reveals the next, on the same or a higher
        // level.
        for (i, &key) in keys.iter().enumerate() {
            let deadline = wheel.deadline(key);
            assert_eq!(wheel.next_deadline(), deadline, "key {i}");
            assert!(wheel.remove(key).is_some());
        }
        assert_eq!(wheel.next_deadline(), None);

        // After partial advances (cascades) the answer stays exact.
        let mut wheel = Wheel::new();
        for deadline in [70_000, 70_001, 300_000, 5_000_000] {
            wheel.insert(deadline, deadline);
        }
        for now in [1, 65_536, 69_999, 70_000, 299_999, 4_999_999] {
            let fired = values(&mut wheel, now);
            assert!(fired.iter().all(|&d| d <= now));
            let next = wheel.next_deadline();
            assert!(next.is_some_and(|d| d > now), "at {now}: {next:?}");
        }
        assert_eq!(wheel.next_deadline(), Some(5_000_000));
        // Inserting an earlier or later deadline updates the cached answer.
        wheel.insert(5_000_100, 0);
        assert_eq!(wheel.next_deadline(), Some(5_000_000));
        wheel.insert(4_999_999, 0);
        assert_eq!(wheel.next_deadline(), Some(4_999_999));
    }

    #[test]
    fn panicking_fire_loses_nothing() {
        let mut wheel = Wheel::new();
        for value in 0..5u64 {
            wheel.insert(100, value);
        }
        wheel.insert(50, 99);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wheel.advance(200, |_, value| assert_ne!(value, 2, "boom"));
        }));
        assert!(result.is_err());
        // 99, 0, 1 fired, 2 was consumed by the panic; 3 and 4 remain.
        assert_eq!(wheel.len(), 2);
        assert_eq!(wheel.next_deadline(), Some(100));
        assert_eq!(values(&mut wheel, 200), vec![3, 4]);
    }

    /// The reference: timers ordered by `(deadline, seq)`.
    #[derive(Default)]
    struct Model {
        now: u64,
        seq: u64,
        order: BTreeMap<(u64, u64), (TimerKey, u64)>,
        by_key: HashMap<TimerKey, (u64, u64)>,
    }

    impl Model {
        fn insert(&mut self, key: TimerKey, deadline: u64, value: u64) {
            self.seq += 1;
            self.order.insert((deadline, self.seq), (key, value));
            self.by_key.insert(key, (deadline, self.seq));
        }

        fn remove(&mut self, key: TimerKey) -> Option<u64> {
            let at = self.by_key.remove(&key)?;
            self.order.remove(&at).map(|(_, value)| value)
        }

        fn reset(&mut self, key: TimerKey, deadline: u64) -> bool {
            match self.remove(key) {
                Some(value) => {
                    self.insert(key, deadline, value);
                    true
                }
                None => false,
            }
        }

        fn advance(&mut self, now: u64) -> Vec<(TimerKey, u64)> {
            let mut fired = Vec::new();
            if now < self.now {
                return fired;
            }
            while let Some(entry) = self.order.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let (key, value) = entry.remove();
                self.by_key.remove(&key);
                fired.push((key, value));
            }
            self.now = now;
            fired
        }

        fn next_deadline(&self) -> Option<u64> {
            self.order.keys().next().map(|&(deadline, _)| deadline)
        }
    }

    /// Picks a deadline from a mix of scales, boundaries and ties.
    fn random_deadline(rng: &mut fastrand::Rng, model: &Model) -> u64 {
        let now = model.now;
        match rng.u64(..10) {
            0 => rng.u64(..1_000_000_000),
            1 => now + rng.u64(..64),
            2 => now + rng.u64(..4096),
            3 => now + rng.u64(..1_000_000),
            4 | 5 => now + rng.u64(..1_000_000_000),
            6 => now.saturating_sub(rng.u64(..1000)),
            7 => {
                // Around a multiple of 64^k.
                let unit = 64u64.pow(1 + rng.u32(..5));
                let boundary = (now / unit + 1 + rng.u64(..2)) * unit;
                boundary + rng.u64(..3) - 1
            }
            _ => {
                // A tie with one of the earliest timers, if any.
                let skip = rng.usize(..64);
                let mut deadlines = model.order.keys().map(|&(deadline, _)| deadline);
                deadlines
                    .clone()
                    .nth(skip)
                    .or_else(|| deadlines.next())
                    .unwrap_or(now)
            }
        }
    }

    /// Picks the tick to advance to.
    fn random_target(rng: &mut fastrand::Rng, model: &Model) -> u64 {
        let now = model.now;
        match rng.u64(..20) {
            0..=2 => now,
            3..=5 => now + 1,
            6..=8 => now + rng.u64(..64),
            9..=11 => now + rng.u64(..5000),
            12 | 13 => now + rng.u64(..1_000_000),
            14 => match rng.u64(..100) {
                0 => now + 10_000_000_000 + rng.u64(..64), // ~4 months
                1..=10 => now + rng.u64(..100_000_000),    // ~1 day
                _ => now + rng.u64(..100_000),
            },
            15 => now.saturating_sub(rng.u64(..100)),
            // Exactly the next deadline, or just before it.
            16 | 17 => model.next_deadline().map_or(now, |d| d.max(now)),
            _ => model
                .next_deadline()
                .map_or(now, |d| d.saturating_sub(1).max(now)),
        }
    }

    fn run_model(seed: u64, ops: usize) {
        let mut rng = fulcrum_test_support::rng(seed);
        let mut wheel = Wheel::new();
        let mut model = Model::default();
        let mut live: Vec<TimerKey> = Vec::new();
        let mut dead: Vec<TimerKey> = Vec::new();
        let mut next_value = 0u64;
        let mut fired_total = 0usize;

        // A key the model holds (dropping dead ones lazily), if any.
        let pick_live = |rng: &mut fastrand::Rng,
                         live: &mut Vec<TimerKey>,
                         dead: &mut Vec<TimerKey>,
                         model: &Model| {
            while !live.is_empty() {
                let i = rng.usize(..live.len());
                let key = live[i];
                if model.by_key.contains_key(&key) {
                    return Some(key);
                }
                dead.push(live.swap_remove(i));
            }
            None
        };

        for op in 0..ops {
            // Cycle through phases in which the population grows (no
            // advances), churns, and shrinks.
            let choice = match op % 3000 {
                0..=999 => rng.u64(..74),
                1000..=1999 => rng.u64(..100),
                _ => rng.u64(..50) + 50,
            };
            match choice {
                0..=49 => {
                    let deadline = random_deadline(&mut rng, &model);
                    let key = wheel.insert(deadline, next_value);
                    model.insert(key, deadline, next_value);
                    next_value += 1;
                    live.push(key);
                }
                50..=61 => {
                    let key = if rng.u64(..5) == 0 && !dead.is_empty() {
                        dead[rng.usize(..dead.len())]
                    } else {
                        match pick_live(&mut rng, &mut live, &mut dead, &model) {
                            Some(key) => key,
                            None => continue,
                        }
                    };
                    assert_eq!(wheel.remove(key), model.remove(key), "seed {seed} op {op}");
                }
                62..=73 => {
                    let key = if rng.u64(..5) == 0 && !dead.is_empty() {
                        dead[rng.usize(..dead.len())]
                    } else {
                        match pick_live(&mut rng, &mut live, &mut dead, &model) {
                            Some(key) => key,
                            None => continue,
                        }
                    };
                    let deadline = random_deadline(&mut rng, &model);
                    assert_eq!(
                        wheel.reset(key, deadline),
                        model.reset(key, deadline),
                        "seed {seed} op {op}"
                    );
                }
                _ => {
                    let target = random_target(&mut rng, &model);
                    let fired = advance(&mut wheel, target);
                    let expected = model.advance(target);
                    assert_eq!(fired, expected, "seed {seed} op {op}: advance to {target}");
                    assert_eq!(wheel.now(), model.now, "seed {seed} op {op}");
                    fired_total += fired.len();
                }
            }
            assert_eq!(wheel.len(), model.order.len(), "seed {seed} op {op}");
            assert_eq!(
                wheel.next_deadline(),
                model.next_deadline(),
                "seed {seed} op {op}"
            );
            if op % 16 == 0 {
                if let Some(key) = pick_live(&mut rng, &mut live, &mut dead, &model) {
                    assert_eq!(wheel.deadline(key), model.by_key.get(&key).map(|&(d, _)| d));
                }
                if let Some(&key) = dead.last() {
                    assert_eq!(wheel.deadline(key), None, "seed {seed} op {op}");
                }
            }
            if dead.len() > 4096 {
                dead.drain(..2048);
            }
        }
        // Drain everything: nothing is ever lost.
        let fired = advance(&mut wheel, u64::MAX);
        assert_eq!(fired, model.advance(u64::MAX), "seed {seed}: final drain");
        fired_total += fired.len();
        assert!(wheel.is_empty());
        assert!(
            fired_total > ops / 10,
            "seed {seed}: only {fired_total} fired"
        );
    }

    #[test]
    fn model_random_ops() {
        for seed in [
            0x9E37_79B9_7F4A_7C15,
            0x2545_F491_4F6C_DD1D,
            1,
            0xDEAD_BEEF,
            0x0123_4567_89AB_CDEF,
            42,
        ] {
            run_model(seed, 20_000);
        }
    }
}
