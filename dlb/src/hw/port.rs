//! The data path of a hardware port: `send`, `recv` and `release` on its
//! two libdlb ports, the stash and the books of what is owed, and parking on
//! the readiness fd (the contract is in the parent module's "Readiness").

use std::collections::VecDeque;
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use super::sys::{self, DlbEvent, Lib, PortHdl};
use super::{hw_error, Inner, PortSlot};
use crate::stats::{PortCounters, PortStats};
use crate::{DlbError, Event, Sched, PRIORITY_LOWEST};

/// Events handed to one `dlb_send` call.
const TX_BATCH: usize = 64;

// `Sched` discriminants are libdlb's `SCHED_*` values: mapped by a cast.
const _: () = {
    assert!(Sched::Atomic as u8 == sys::SCHED_ATOMIC);
    assert!(Sched::Unordered as u8 == sys::SCHED_UNORDERED);
    assert!(Sched::Directed as u8 == sys::SCHED_DIRECTED);
};

impl Inner {
    fn validate(&self, event: &Event) -> Result<(), &'static str> {
        if event.priority > PRIORITY_LOWEST {
            return Err("priority must be 0 (highest) to 7 (lowest)");
        }
        match event.sched {
            Sched::Directed if usize::from(event.queue) >= self.cfg.ports => {
                Err("directed event names a port that does not exist")
            }
            Sched::Unordered | Sched::Atomic if usize::from(event.queue) >= self.cfg.queues => {
                Err("event names a load-balanced queue that does not exist")
            }
            _ => Ok(()),
        }
    }

    /// The queue element for a validated event.
    fn to_qe(&self, event: &Event) -> DlbEvent {
        let queue_id = match event.sched {
            Sched::Directed => self.dir_queue_ids[usize::from(event.queue)],
            Sched::Unordered | Sched::Atomic => self.ldb_queue_ids[usize::from(event.queue)],
        };
        DlbEvent {
            udata64: event.udata,
            // Carries the flow back to the receiver on every device.
            udata16: event.flow,
            queue_id,
            sched_prio: DlbEvent::pack_sched_prio(event.sched as u8, event.priority),
            flow_id: event.flow,
            meta0: 0,
            meta1: 0,
        }
    }
}

/// Which of a port's two CQs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cq {
    Ldb,
    Dir,
}

/// What a dequeued event owes the hardware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A load-balanced event: needs a `dlb_release`.
    Lb,
    /// A directed event: needs no release in hardware, but counts for
    /// `release(n)`, which releases the n oldest received events of any kind.
    Dir,
    /// A load-balanced event the device flagged with `error`: never handed
    /// out, released in hardware when the releases reach it.
    LbDropped,
}

/// The owner's mutable state of a port; kept by the domain between owners.
pub(super) struct PortState {
    /// Dequeued from a CQ, not yet handed out, oldest first.
    stash: VecDeque<(Event, Kind)>,
    /// Handed out (or dropped) and not released, oldest first, run-length
    /// encoded.
    owed: VecDeque<(Kind, u32)>,
    /// Handed-out events in `owed` (dropped ones excluded).
    owed_count: usize,
    /// Receive buffer of `cq_depth + 1` elements: one more than a CQ holds,
    /// so that every `dlb_recv` empties its CQ (and so re-arms it).
    rx: Box<[DlbEvent]>,
    /// Send buffer of `TX_BATCH` elements.
    tx: Box<[DlbEvent]>,
}

impl fmt::Debug for PortState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortState")
            .field("stashed", &self.stash.len())
            .field("owed", &self.owed_count)
            .finish()
    }
}

impl PortState {
    pub(super) fn new(cq_depth: u32) -> Self {
        let rx_len = cq_depth as usize + 1;
        Self {
            stash: VecDeque::with_capacity(2 * rx_len),
            owed: VecDeque::with_capacity(4),
            owed_count: 0,
            rx: vec![DlbEvent::default(); rx_len].into_boxed_slice(),
            tx: vec![DlbEvent::default(); TX_BATCH].into_boxed_slice(),
        }
    }

    fn push_owed(&mut self, kind: Kind) {
        match self.owed.back_mut() {
            Some((k, count)) if *k == kind && *count < u32::MAX => *count += 1,
            _ => self.owed.push_back((kind, 1)),
        }
        if kind != Kind::LbDropped {
            self.owed_count += 1;
        }
    }

    /// Walks `owed` for a release of `n` handed-out events (plus the dropped
    /// events before and right after them). Returns the load-balanced events
    /// to release in hardware; removes the entries only if `apply`.
    fn plan_release(&mut self, n: usize, apply: bool) -> u32 {
        let mut left = n;
        let mut hw: u32 = 0;
        let mut i = 0;
        while let Some(&(kind, count)) = self.owed.get(i) {
            let take = match kind {
                Kind::LbDropped => count,
                _ if left == 0 => break,
                _ => count.min(u32::try_from(left).unwrap_or(u32::MAX)),
            };
            if kind != Kind::Dir {
                hw = hw.saturating_add(take);
            }
            if kind != Kind::LbDropped {
                left -= take as usize;
            }
            if apply {
                if take == count {
                    self.owed.remove(i);
                    continue;
                }
                self.owed[i].1 -= take;
            }
            if take < count {
                break;
            }
            i += 1;
        }
        if apply {
            self.owed_count -= n - left;
        }
        hw
    }
}

/// The owner's handle on a hardware port: a load-balanced and a directed
/// libdlb port.
pub struct HwPort {
    inner: Arc<Inner>,
    id: usize,
    ldb: PortHdl,
    dir: PortHdl,
    ldb_efd: RawFd,
    dir_efd: RawFd,
    epoll_fd: RawFd,
    st: PortState,
}

// SAFETY: the port handles are plain pointers into libdlb's per-process state;
// libdlb allows a port handle to be used from any thread of the process, as
// long as its data-path calls are not concurrent. `HwPort` is the only user of
// its handles (the domain hands each port to one owner at a time and uses the
// handles again only in teardown, after every `HwPort` is gone), it is not
// `Sync`, and every data-path call takes `&mut self`, so moving it to another
// thread cannot make two calls overlap.
unsafe impl Send for HwPort {}

impl fmt::Debug for HwPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HwPort")
            .field("id", &self.id)
            .field("device", &self.inner.device)
            .field("state", &self.st)
            .finish()
    }
}

impl HwPort {
    /// The handle on port `id` of the domain, whose slot the caller has just
    /// marked taken: with the state its last owner left, or a fresh one.
    pub(super) fn new(inner: Arc<Inner>, id: usize) -> Self {
        let st = inner.slots[id]
            .idle_state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_else(|| PortState::new(inner.cfg.cq_depth));
        let hw = &inner.hw.ports[id];
        let raw = |fd: &Option<OwnedFd>| fd.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        Self {
            id,
            ldb: hw.ldb,
            dir: hw.dir,
            ldb_efd: raw(&hw.ldb_efd),
            dir_efd: raw(&hw.dir_efd),
            epoll_fd: raw(&hw.epoll),
            st,
            inner,
        }
    }

    /// This port's id in its domain.
    pub(crate) fn id(&self) -> usize {
        self.id
    }

    fn lib(&self) -> &Lib {
        &self.inner.hw.lib
    }

    fn slot(&self) -> &PortSlot {
        &self.inner.slots[self.id]
    }

    fn update_in_flight(&self) {
        let n = self.st.owed_count + self.st.stash.len();
        self.slot().in_flight.store(n as u64, Relaxed);
    }

    /// Sends events in order through the load-balanced port; returns how
    /// many the device took. Short when credits ran out; never retried here.
    pub(crate) fn send(&mut self, events: &[Event]) -> Result<usize, DlbError> {
        let mut valid = events.len();
        for (index, event) in events.iter().enumerate() {
            if let Err(reason) = self.inner.validate(event) {
                if index == 0 {
                    return Err(DlbError::InvalidEvent { index, reason });
                }
                valid = index;
                break;
            }
        }
        let mut sent = 0;
        while sent < valid {
            let chunk = &events[sent..valid.min(sent + TX_BATCH)];
            for (qe, event) in self.st.tx.iter_mut().zip(chunk) {
                *qe = self.inner.to_qe(event);
            }
            // `chunk.len()` <= TX_BATCH, so the cast is exact.
            let num = chunk.len() as u32;
            // SAFETY: `self.ldb` is a live attached port handle owned by this
            // `HwPort` (no concurrent data-path call, see `Send`); `tx` holds at
            // least `num` initialised 16-byte QEs and outlives the call.
            let r = unsafe { (self.lib().dlb_send)(self.ldb, num, self.st.tx.as_mut_ptr()) };
            if r < 0 {
                if sent == 0 {
                    return Err(hw_error("dlb_send", r));
                }
                // Report what went out; the failure recurs on the next call.
                tracing::debug!(port = self.id, "dlb_send failed after {sent} events");
                PortCounters::bump(&self.slot().counters.sent, sent as u64);
                return Ok(sent);
            }
            let took = (r as usize).min(chunk.len());
            sent += took;
            if took < chunk.len() {
                break;
            }
        }
        let counters = &self.slot().counters;
        PortCounters::bump(&counters.sent, sent as u64);
        PortCounters::bump(&counters.credit_waits, (valid - sent) as u64);
        Ok(sent)
    }

    /// Receives without blocking: the stash first, then the CQs whose
    /// eventfds say they have events.
    pub(crate) fn recv(&mut self, out: &mut [Event]) -> Result<usize, DlbError> {
        if matches!(self.st.owed.front(), Some((Kind::LbDropped, _))) {
            self.release_hw(0)?;
        }
        if out.is_empty() {
            return Ok(0);
        }
        if self.st.stash.is_empty() {
            self.pull()?;
        }
        let mut n = 0;
        while n < out.len() {
            let Some((event, kind)) = self.st.stash.pop_front() else {
                break;
            };
            self.st.push_owed(kind);
            if kind != Kind::LbDropped {
                out[n] = event;
                n += 1;
            }
        }
        PortCounters::bump(&self.slot().counters.received, n as u64);
        self.update_in_flight();
        Ok(n)
    }

    /// Releases the `n` oldest received events; returns how many (fewer only
    /// if fewer were owed).
    pub(crate) fn release(&mut self, n: usize) -> Result<usize, DlbError> {
        let n = n.min(self.st.owed_count);
        self.release_hw(n)?;
        PortCounters::bump(&self.slot().counters.released, n as u64);
        self.update_in_flight();
        Ok(n)
    }

    /// Releases `n` handed-out events (and the dropped ones around them) in
    /// the books and, for the load-balanced ones, in hardware.
    fn release_hw(&mut self, n: usize) -> Result<(), DlbError> {
        let hw = self.st.plan_release(n, false);
        if hw > 0 {
            // SAFETY: live port handle used by its only owner (see `Send`);
            // `hw` never exceeds the load-balanced events dequeued on this
            // port and not yet released.
            let r = unsafe { (self.lib().dlb_release)(self.ldb, hw) };
            if r < 0 {
                return Err(hw_error("dlb_release", r));
            }
            if r as u32 != hw {
                tracing::warn!(
                    port = self.id,
                    asked = hw,
                    released = r,
                    "dlb_release came short"
                );
            }
        }
        self.st.plan_release(n, true);
        Ok(())
    }

    /// Which CQs have a readable eventfd (so probably events).
    fn ready_cqs(&self) -> Result<(bool, bool), DlbError> {
        let mut fds = [
            libc::pollfd {
                fd: self.ldb_efd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.dir_efd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        loop {
            // SAFETY: `fds` is a live array of 2 pollfds; timeout 0 never blocks.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, 0) };
            if r >= 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(DlbError::Io(err));
            }
        }
        let ready = |p: &libc::pollfd| p.revents & (libc::POLLIN | libc::POLLERR) != 0;
        Ok((ready(&fds[0]), ready(&fds[1])))
    }

    /// Moves everything in the CQs with readable eventfds into the stash.
    fn pull(&mut self) -> Result<(), DlbError> {
        let (ldb, dir) = self.ready_cqs()?;
        if ldb {
            self.drain_cq(Cq::Ldb)?;
        }
        if dir {
            self.drain_cq(Cq::Dir)?;
        }
        Ok(())
    }

    /// One `dlb_recv` for more events than the CQ can hold: empties the CQ,
    /// which makes libdlb reset its eventfd and re-arm its interrupt.
    fn drain_cq(&mut self, cq: Cq) -> Result<(), DlbError> {
        let hdl = match cq {
            Cq::Ldb => self.ldb,
            Cq::Dir => self.dir,
        };
        // `rx` has cq_depth + 1 <= 1025 elements.
        let max = self.st.rx.len() as u32;
        // SAFETY: live port handle used by its only owner (see `Send`); `rx`
        // has room for `max` QEs and outlives the call; `wait` is false, so
        // the call does not block.
        let r = unsafe { (self.lib().dlb_recv)(hdl, max, false, self.st.rx.as_mut_ptr()) };
        if r < 0 {
            return Err(hw_error("dlb_recv", r));
        }
        let n = (r as usize).min(self.st.rx.len());
        for i in 0..n {
            let qe = self.st.rx[i];
            let priority = qe.priority();
            let (event, kind) = match cq {
                Cq::Ldb => {
                    let queue = self.inner.queue_of_hw[usize::from(qe.queue_id)];
                    let sched = if qe.sched_type() == sys::SCHED_ATOMIC {
                        Sched::Atomic
                    } else {
                        Sched::Unordered
                    };
                    let event = Event {
                        udata: qe.udata64,
                        flow: qe.udata16,
                        queue,
                        sched,
                        priority,
                    };
                    (
                        event,
                        if qe.error() {
                            Kind::LbDropped
                        } else {
                            Kind::Lb
                        },
                    )
                }
                Cq::Dir => {
                    let event = Event {
                        udata: qe.udata64,
                        flow: qe.udata16,
                        // `id` < MAX_PORTS (64).
                        queue: self.id as u8,
                        sched: Sched::Directed,
                        priority,
                    };
                    if qe.error() {
                        tracing::error!(
                            port = self.id,
                            ?qe,
                            "dlb: directed event flagged with an error, skipped"
                        );
                        continue;
                    }
                    (event, Kind::Dir)
                }
            };
            if kind == Kind::LbDropped {
                tracing::error!(
                    port = self.id,
                    ?qe,
                    "dlb: event flagged with an error, skipped"
                );
            }
            self.st.stash.push_back((event, kind));
        }
        Ok(())
    }

    /// The port's readiness fd: an epoll fd watching the eventfds of both
    /// CQs, readable while either CQ has undelivered events.
    pub(crate) fn readiness_fd(&self) -> RawFd {
        self.epoll_fd
    }

    /// Returns `false` if events can be received now (some may already sit
    /// in the stash); `true` if both CQs are empty and armed, so that any
    /// delivery makes the readiness fd readable.
    pub(crate) fn prepare_park(&mut self) -> bool {
        if !self.st.stash.is_empty() {
            return false;
        }
        if let Err(e) = self.pull() {
            // Do not sleep on a port in trouble: `recv` will report it.
            tracing::debug!(
                port = self.id,
                "dlb: prepare_park could not poll the CQs: {e}"
            );
            return false;
        }
        self.update_in_flight();
        self.st.stash.is_empty()
    }

    /// Ends a park. Nothing to undo: the readiness fd belongs to libdlb's
    /// epoll mode and is cleared by `dlb_recv` when it empties a CQ; reading
    /// the eventfds here would leave the CQ interrupts disarmed.
    pub(crate) fn finish_park(&mut self) {}

    /// Blocks until events can be received or `timeout` passes.
    pub(crate) fn wait(&mut self, timeout: Option<Duration>) -> Result<bool, DlbError> {
        if !self.prepare_park() {
            self.finish_park();
            return Ok(true);
        }
        let ready = poll_readable(self.epoll_fd, timeout);
        self.finish_park();
        ready
    }

    /// This port's counters.
    pub(crate) fn stats(&self) -> PortStats {
        let slot = self.slot();
        slot.counters.snapshot(slot.in_flight.load(Relaxed))
    }
}

impl Drop for HwPort {
    fn drop(&mut self) {
        // Like the software backend: release what the owner still owes and
        // give the port back; undelivered events stay for the next owner.
        let owed = self.st.owed_count;
        match self.release_hw(owed) {
            Ok(()) => PortCounters::bump(&self.slot().counters.released, owed as u64),
            Err(e) => tracing::warn!(port = self.id, "dlb: releasing on drop failed: {e}"),
        }
        self.update_in_flight();
        let st = std::mem::replace(&mut self.st, PortState::new(0));
        let slot = self.slot();
        *slot
            .idle_state
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(st);
        slot.taken.store(false, SeqCst);
    }
}

/// Polls `fd` for readability until `timeout` (forever if `None`).
fn poll_readable(fd: RawFd, timeout: Option<Duration>) -> Result<bool, DlbError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so that a short timeout does not become a spin.
                i32::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX)
            }
        };
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is a live array of one pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r >= 0 {
            return Ok(r > 0);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(DlbError::Io(err));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Kind, PortState};

    fn state(kinds: &[Kind]) -> PortState {
        let mut st = PortState::new(8);
        for &k in kinds {
            st.push_owed(k);
        }
        st
    }

    #[test]
    fn releases_count_only_load_balanced_events_in_hardware() {
        use Kind::{Dir, Lb, LbDropped};
        let mut st = state(&[Lb, Dir, Dir, Lb, LbDropped, Lb, Dir]);
        assert_eq!(st.owed_count, 6);
        // Dry run changes nothing.
        assert_eq!(st.plan_release(2, false), 1);
        assert_eq!(st.owed_count, 6);
        // Lb, Dir, Dir, Lb, then the dropped one right after them.
        assert_eq!(st.plan_release(4, true), 3);
        assert_eq!(st.owed_count, 2);
        assert_eq!(st.owed, [(Lb, 1), (Dir, 1)]);
        assert_eq!(st.plan_release(2, true), 1);
        assert_eq!((st.owed_count, st.owed.len()), (0, 0));
    }

    #[test]
    fn leading_dropped_events_are_released_with_zero() {
        use Kind::{Lb, LbDropped};
        let mut st = state(&[LbDropped, LbDropped, Lb]);
        assert_eq!(st.plan_release(0, true), 2);
        assert_eq!(st.owed, [(Lb, 1)]);
        assert_eq!(st.owed_count, 1);
    }
}
