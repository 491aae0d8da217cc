//! Per-port counters, readable from any thread.

use crate::loom::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

/// A snapshot of one port's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Events this port sent (accepted by `send`).
    pub sent: u64,
    /// Events this port received.
    pub received: u64,
    /// Events this port released.
    pub released: u64,
    /// Events scheduled to this port and not yet released: those waiting in
    /// its CQ plus those received and unreleased.
    pub in_flight: u64,
    /// Events `send` could not take because the credit pool was empty; the
    /// caller kept them.
    pub credit_waits: u64,
}

/// The live counters behind [`PortStats`]. Only the port's owner writes
/// them (load + store, no read-modify-write), any thread reads them.
#[derive(Debug, Default)]
pub(crate) struct PortCounters {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) credit_waits: AtomicU64,
}

impl PortCounters {
    /// Adds `n` to `counter`. Only the owning port calls this.
    #[inline]
    pub(crate) fn bump(counter: &AtomicU64, n: u64) {
        if n != 0 {
            counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
        }
    }

    pub(crate) fn snapshot(&self, in_flight: u64) -> PortStats {
        PortStats {
            sent: self.sent.load(Relaxed),
            received: self.received.load(Relaxed),
            released: self.released.load(Relaxed),
            in_flight,
            credit_waits: self.credit_waits.load(Relaxed),
        }
    }
}
