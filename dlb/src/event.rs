//! The queue element: [`Event`] and its scheduling type [`Sched`].

use std::fmt;

/// How the arbiter places an event.
///
/// The discriminants are libdlb's `SCHED_*` values, so the hardware backend
/// maps them without a table. `ORDERED` is not offered: a load-balanced queue
/// supports either ordered or atomic+unordered scheduling, and Fulcrum uses
/// the latter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Sched {
    /// All events of one flow go to one port while any of them is unreleased
    /// (libdlb `SCHED_ATOMIC`).
    Atomic = 0,
    /// Each event goes to the least loaded eligible port linked to the queue
    /// (libdlb `SCHED_UNORDERED`). This is what Fulcrum's handoffs use.
    #[default]
    Unordered = 1,
    /// The event goes to the port named by [`Event::queue`]
    /// (libdlb `SCHED_DIRECTED`).
    Directed = 3,
}

/// Highest event priority.
pub const PRIORITY_HIGHEST: u8 = 0;
/// Lowest event priority.
pub const PRIORITY_LOWEST: u8 = 7;

/// One queue element: 16 bytes, like a DLB QE.
///
/// `udata` is the payload (Fulcrum puts a task or socket pointer there).
/// For [`Sched::Unordered`] and [`Sched::Atomic`] events `queue` names a
/// load-balanced queue of the domain; for [`Sched::Directed`] events it names
/// the destination port. `priority` runs from 0 (highest) to 7 (lowest).
///
/// ```
/// use fulcrum_dlb::{Event, Sched};
/// let ev = Event::unordered(0, 42).with_priority(3);
/// assert_eq!((ev.udata, ev.queue, ev.sched, ev.priority), (42, 0, Sched::Unordered, 3));
/// assert_eq!(std::mem::size_of::<Event>(), 16);
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
#[repr(C, align(8))]
pub struct Event {
    /// The 64-bit payload.
    pub udata: u64,
    /// Flow id; meaningful for [`Sched::Atomic`] events.
    pub flow: u16,
    /// Destination queue (or port, for [`Sched::Directed`]).
    pub queue: u8,
    /// Scheduling type.
    pub sched: Sched,
    /// Priority, 0 (highest) ..= 7 (lowest).
    pub priority: u8,
}

const _: () = assert!(std::mem::size_of::<Event>() == 16);
const _: () = assert!(std::mem::align_of::<Event>() == 8);

impl Event {
    /// An unordered event for load-balanced queue `queue`, priority 0.
    pub const fn unordered(queue: u8, udata: u64) -> Self {
        Self {
            udata,
            flow: 0,
            queue,
            sched: Sched::Unordered,
            priority: PRIORITY_HIGHEST,
        }
    }

    /// An atomic event of flow `flow` for load-balanced queue `queue`.
    pub const fn atomic(queue: u8, flow: u16, udata: u64) -> Self {
        Self {
            udata,
            flow,
            queue,
            sched: Sched::Atomic,
            priority: PRIORITY_HIGHEST,
        }
    }

    /// A directed event for port `port`.
    pub const fn directed(port: u8, udata: u64) -> Self {
        Self {
            udata,
            flow: 0,
            queue: port,
            sched: Sched::Directed,
            priority: PRIORITY_HIGHEST,
        }
    }

    /// The same event with another priority (0 highest ..= 7 lowest; other
    /// values are refused by `send`).
    pub const fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("udata", &format_args!("{:#x}", self.udata))
            .field("flow", &self.flow)
            .field("queue", &self.queue)
            .field("sched", &self.sched)
            .field("priority", &self.priority)
            .finish()
    }
}
