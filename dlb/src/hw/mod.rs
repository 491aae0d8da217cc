//! The hardware backend: a DLB device driven through `libdlb.so`, loaded at
//! run time with `dlopen` so that the crate builds and runs without it.
//!
//! # Mapping
//! - A [`Domain`](crate::Domain) is one libdlb scheduling domain with the
//!   configured number of load-balanced queues (zero sequence numbers, so
//!   they schedule atomic and unordered events).
//! - Each [`Port`](crate::Port) is a *pair* of libdlb ports: a load-balanced
//!   port, linked to its queues, that also sends every event of the port;
//!   and a directed port with its directed queue, which receives the
//!   [`Sched::Directed`] events addressed to the port. `recv` reads both
//!   consumer queues (CQs).
//! - An [`Event`] maps field by field onto `dlb_event_t`; the flow id also
//!   travels in `udata16`, which every device returns on dequeue (only some
//!   return `flow_id`).
//!
//! # Readiness (libdlb's epoll mode)
//! Each CQ gets its own eventfd through `dlb_enable_cq_epoll`. libdlb's
//! contract, read from its implementation: the CQ interrupt is armed when
//! epoll mode is enabled; when it fires the kernel writes the eventfd; a
//! `dlb_recv` that leaves the CQ empty *reads the eventfd itself* and re-arms
//! the interrupt, but only if that read succeeds. Hence:
//! - the application must never read these eventfds (a drained counter would
//!   leave the interrupt disarmed for good), so `finish_park` does nothing;
//! - two CQs cannot share one eventfd (a `dlb_recv` on one would clear the
//!   other's pending wake-up), so the port's readiness fd is an epoll fd
//!   watching both eventfds, readable when either is;
//! - `dlb_recv` is called only on a CQ whose eventfd is readable, and always
//!   for more events than the CQ can hold, so that every call leaves the CQ
//!   empty and re-armed. Events dequeued beyond what the caller asked for
//!   wait in a small per-port stash, handed out first.
//!
//! So a port whose eventfds are both unreadable and whose stash is empty has
//! empty, armed CQs: any delivery makes the readiness fd readable, which is
//! what [`prepare_park`](HwPort::prepare_park) checks.
//!
//! # Setup and teardown
//! [`HwDomain::open`] follows libdlb's order (open, capabilities, resources,
//! create and attach the domain, credit pools, queues, per port: create,
//! attach, link, eventfd + `dlb_enable_cq_epoll`, then the domain alert
//! thread and start). Whatever was set up is torn down in libdlb's order
//! (disable and detach ports, detach and reset the domain, close the
//! device, close the eventfds, `dlclose`) when setup fails or when the last
//! handle on the domain is dropped.

mod sys;

use std::collections::VecDeque;
use std::ffi::{c_int, c_void};
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use self::sys::{DlbEvent, DlbHdl, DomainHdl, Lib, PortHdl};
use crate::config::Config;
use crate::stats::{PortCounters, PortStats};
use crate::{DlbError, Event, Sched, PRIORITY_LOWEST};

/// Device nodes scanned when the requested one is missing: `dlb0..=dlb63`.
const MAX_DEVICE: u32 = 63;

/// Library loaded when no path is configured.
const DEFAULT_LIBRARY: &str = "libdlb.so";

/// Events handed to one `dlb_send` call.
const TX_BATCH: usize = 64;

// `Sched` discriminants are libdlb's `SCHED_*` values: mapped by a cast.
const _: () = {
    assert!(Sched::Atomic as u8 == sys::SCHED_ATOMIC);
    assert!(Sched::Unordered as u8 == sys::SCHED_UNORDERED);
    assert!(Sched::Directed as u8 == sys::SCHED_DIRECTED);
};

/// A DLB scheduling domain on a device, shared by its ports.
///
/// Cheap to clone; the domain is torn down when the last clone and the last
/// [`HwPort`] are gone.
#[derive(Clone, Debug)]
pub struct HwDomain {
    inner: Arc<Inner>,
}

/// What one domain owns. Dropped (and torn down) with the last `Arc`.
struct Inner {
    cfg: Config,
    device: u32,
    /// Per port: hardware id of our port's directed queue (the `queue_id` of
    /// directed events sent to it).
    dir_queue_ids: Box<[u8]>,
    /// Per load-balanced queue of ours: its hardware queue id.
    ldb_queue_ids: Box<[u8]>,
    /// Hardware load-balanced queue id -> our queue index (255: none).
    queue_of_hw: Box<[u8; 256]>,
    slots: Box<[PortSlot]>,
    /// Declared last: dropped (torn down) after everything above.
    hw: Setup,
}

/// The domain's side of one port.
struct PortSlot {
    taken: AtomicBool,
    counters: PortCounters,
    /// Events received and not released, plus events in the stash. Written
    /// by the owner only.
    in_flight: AtomicU64,
    /// The owner's state while nobody owns the port: dequeued events not
    /// yet handed out survive a change of owner here.
    idle_state: Mutex<Option<PortState>>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HwDomain")
            .field("device", &self.device)
            .field("library", &self.hw.lib.path())
            .field("ports", &self.cfg.ports)
            .field("queues", &self.cfg.queues)
            .field("cq_depth", &self.cfg.cq_depth)
            .field("credits", &self.cfg.credits)
            .finish()
    }
}

impl HwDomain {
    /// Finds the device, loads libdlb and sets up a started scheduling
    /// domain for `cfg`.
    ///
    /// # Errors
    /// [`DlbError::DeviceNotFound`] (checked before the library is loaded),
    /// [`DlbError::Library`], a resource error naming what the device lacks,
    /// or [`DlbError::Hardware`] for the libdlb call that failed; everything
    /// set up before the failure is torn down.
    pub(crate) fn open(cfg: &Config, device: u32) -> Result<Self, DlbError> {
        let device = find_device(&cfg.device_dir, device)?;
        let path = cfg
            .library_path
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_LIBRARY));
        let lib = Lib::load(&path)?;
        let mut hw = Setup::new(lib);
        let ids = hw.build(cfg, device)?;
        let mut queue_of_hw = Box::new([u8::MAX; 256]);
        for (q, &hw_id) in ids.ldb_queues.iter().enumerate() {
            // `q` < MAX_QUEUES (32) was checked by the config.
            queue_of_hw[usize::from(hw_id)] = q as u8;
        }
        let slots = (0..cfg.ports)
            .map(|_| PortSlot {
                taken: AtomicBool::new(false),
                counters: PortCounters::default(),
                in_flight: AtomicU64::new(0),
                idle_state: Mutex::new(None),
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                cfg: cfg.clone(),
                device,
                dir_queue_ids: ids.dir_queues.into_boxed_slice(),
                ldb_queue_ids: ids.ldb_queues.into_boxed_slice(),
                queue_of_hw,
                slots,
                hw,
            }),
        })
    }

    /// The device number actually used (`/dev/dlb{device}`).
    pub(crate) fn device(&self) -> u32 {
        self.inner.device
    }

    /// The configuration the domain was built from.
    pub(crate) fn config(&self) -> &Config {
        &self.inner.cfg
    }

    /// Takes port `id` for exclusive use.
    ///
    /// # Errors
    /// [`DlbError::NoSuchPort`], or [`DlbError::PortTaken`] while another
    /// [`HwPort`] for `id` is alive.
    pub(crate) fn take_port(&self, id: usize) -> Result<HwPort, DlbError> {
        let inner = &self.inner;
        let slot = inner.slots.get(id).ok_or(DlbError::NoSuchPort {
            port: id,
            ports: inner.slots.len(),
        })?;
        if slot.taken.swap(true, SeqCst) {
            return Err(DlbError::PortTaken { port: id });
        }
        let st = slot
            .idle_state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_else(|| PortState::new(inner.cfg.cq_depth));
        let hw = &inner.hw.ports[id];
        Ok(HwPort {
            inner: Arc::clone(inner),
            id,
            ldb: hw.ldb,
            dir: hw.dir,
            ldb_efd: hw.ldb_efd.as_ref().map_or(-1, AsRawFd::as_raw_fd),
            dir_efd: hw.dir_efd.as_ref().map_or(-1, AsRawFd::as_raw_fd),
            epoll_fd: hw.epoll.as_ref().map_or(-1, AsRawFd::as_raw_fd),
            st,
        })
    }

    /// Counters of port `id`, or `None` if there is no such port.
    pub(crate) fn port_stats(&self, id: usize) -> Option<PortStats> {
        let slot = self.inner.slots.get(id)?;
        Some(slot.counters.snapshot(slot.in_flight.load(Relaxed)))
    }
}

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
struct PortState {
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
    fn new(cq_depth: u32) -> Self {
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

/// `DlbError::Hardware` for a failed call, with the current `errno`.
fn hw_error(call: &'static str, code: c_int) -> DlbError {
    DlbError::Hardware {
        call,
        code: i64::from(code),
        errno: sys::errno(),
    }
}

/// Fails with `DlbError::Hardware` if `r` is negative.
fn check(call: &'static str, r: c_int) -> Result<c_int, DlbError> {
    if r < 0 {
        Err(hw_error(call, r))
    } else {
        Ok(r)
    }
}

/// A hardware id that must fit the 8-bit `queue_id` of a QE.
fn queue_id(call: &'static str, id: c_int) -> Result<u8, DlbError> {
    u8::try_from(id).map_err(|_| DlbError::Hardware {
        call,
        code: i64::from(id),
        errno: libc::ERANGE,
    })
}

/// `{dir}/dlb{requested}`, else the first `{dir}/dlbN` for N in 0..=63 (with a
/// warning).
fn find_device(dir: &Path, requested: u32) -> Result<u32, DlbError> {
    let exists = |n: u32| std::fs::metadata(dir.join(format!("dlb{n}"))).is_ok();
    if exists(requested) {
        return Ok(requested);
    }
    match (0..=MAX_DEVICE).find(|&n| exists(n)) {
        Some(found) => {
            tracing::warn!("dlb device {requested} is not found, use dlb device {found} instead");
            Ok(found)
        }
        None => Err(DlbError::DeviceNotFound {
            dir: dir.to_owned(),
            requested,
        }),
    }
}

/// Hardware ids assigned during setup.
struct Ids {
    ldb_queues: Vec<u8>,
    dir_queues: Vec<u8>,
}

/// One port's hardware objects (null handles and `None`s until created).
struct HwPortObjs {
    ldb: PortHdl,
    dir: PortHdl,
    ldb_efd: Option<OwnedFd>,
    dir_efd: Option<OwnedFd>,
    epoll: Option<OwnedFd>,
}

impl Default for HwPortObjs {
    fn default() -> Self {
        Self {
            ldb: std::ptr::null_mut(),
            dir: std::ptr::null_mut(),
            ldb_efd: None,
            dir_efd: None,
            epoll: None,
        }
    }
}

/// Everything set up on the device so far; `Drop` undoes it in libdlb's
/// order. Built step by step by [`Setup::build`], so a failed setup tears
/// down exactly what exists.
struct Setup {
    hdl: DlbHdl,
    domain_id: Option<c_int>,
    domain: DomainHdl,
    ports: Vec<HwPortObjs>,
    /// Declared last: `dlclose`d after the teardown in `drop`.
    lib: Lib,
}

// SAFETY: the device and domain handles are used by libdlb's MT-safe device-
// and domain-level functions only, and by teardown, which runs once with no
// other user left (the last `Arc<Inner>`). Port handles stored here are used by
// their single `HwPort` owner or by teardown, never both (see `HwPort`'s
// `Send`).
unsafe impl Send for Setup {}
// SAFETY: shared references to `Setup` only read the handles; see `Send`.
unsafe impl Sync for Setup {}

impl Setup {
    fn new(lib: Lib) -> Self {
        Self {
            hdl: std::ptr::null_mut(),
            domain_id: None,
            domain: std::ptr::null_mut(),
            ports: Vec::new(),
            lib,
        }
    }

    /// Runs libdlb's setup sequence for `cfg` on `device`.
    fn build(&mut self, cfg: &Config, device: u32) -> Result<Ids, DlbError> {
        let lib = &self.lib;
        let dev_id = c_int::try_from(device).map_err(|_| DlbError::DeviceNotFound {
            dir: cfg.device_dir.clone(),
            requested: device,
        })?;
        let mut hdl: DlbHdl = std::ptr::null_mut();
        // SAFETY: `hdl` is a live out-pointer; on success libdlb stores a handle.
        check("dlb_open", unsafe { (lib.dlb_open)(dev_id, &mut hdl) })?;
        self.hdl = hdl;

        let mut cap = sys::DevCap::default();
        // SAFETY: live device handle; `cap` is a live, correctly sized out-struct.
        check("dlb_get_dev_capabilities", unsafe {
            (lib.dlb_get_dev_capabilities)(hdl, &mut cap)
        })?;
        let mut rsrc = sys::Resources::default();
        // SAFETY: live device handle; `rsrc` is a live, correctly sized out-struct.
        check("dlb_get_num_resources", unsafe {
            (lib.dlb_get_num_resources)(hdl, &mut rsrc)
        })?;
        let combined = cap.combined_credits();
        let plan = Plan::new(cfg, &rsrc, combined)?;
        tracing::debug!(
            device,
            combined_credits = combined,
            flow_id_on_dequeue = cap.ldb_deq_event_fid(),
            ?rsrc,
            "dlb: device resources"
        );

        let mut args = sys::CreateSchedDomain {
            num_ldb_queues: cfg.queues as u32,
            num_ldb_ports: cfg.ports as u32,
            num_dir_ports: cfg.ports as u32,
            num_ldb_event_state_entries: plan.es_per_port * cfg.ports as u32,
            num_sn_slots: [0, 0],
            credits: if combined {
                [cfg.credits, 1, 0, 0]
            } else {
                [cfg.credits, plan.dir_credits, 1, 1]
            },
            producer_coremask: [0, 0],
        };
        // SAFETY: live device handle; `args` is a live, initialised struct of
        // the header's layout.
        let domain_id = check("dlb_create_sched_domain", unsafe {
            (lib.dlb_create_sched_domain)(hdl, &mut args)
        })?;
        self.domain_id = Some(domain_id);
        // SAFETY: live device handle and a domain id it just created.
        let domain = unsafe { (lib.dlb_attach_sched_domain)(hdl, domain_id) };
        if domain.is_null() {
            return Err(hw_error("dlb_attach_sched_domain", 0));
        }
        self.domain = domain;

        let credit = |call, f: unsafe extern "C" fn(DomainHdl, c_int) -> c_int, n: u32| {
            let n = c_int::try_from(n).unwrap_or(c_int::MAX);
            // SAFETY: live domain handle; plain integer argument.
            check(call, unsafe { f(domain, n) }).map(|id| id as u32)
        };
        let pools = if combined {
            [
                credit(
                    "dlb_create_credit_pool",
                    lib.dlb_create_credit_pool,
                    cfg.credits,
                )?,
                0,
            ]
        } else {
            [
                credit(
                    "dlb_create_ldb_credit_pool",
                    lib.dlb_create_ldb_credit_pool,
                    cfg.credits,
                )?,
                credit(
                    "dlb_create_dir_credit_pool",
                    lib.dlb_create_dir_credit_pool,
                    plan.dir_credits,
                )?,
            ]
        };

        let mut ldb_queues = Vec::with_capacity(cfg.queues);
        for _ in 0..cfg.queues {
            let mut q = sys::CreateLdbQueue::default();
            // SAFETY: live domain handle; `q` is a live, initialised struct.
            let id = check("dlb_create_ldb_queue", unsafe {
                (lib.dlb_create_ldb_queue)(domain, &mut q)
            })?;
            ldb_queues.push(queue_id("dlb_create_ldb_queue", id)?);
        }

        let mut dir_queues = Vec::with_capacity(cfg.ports);
        for links in &cfg.links {
            // Recorded before anything is created, so that a failure below
            // tears down exactly what this port got.
            self.ports.push(HwPortObjs::default());
            let last = self.ports.len() - 1;
            let objs = &mut self.ports[last];
            // `cq_depth` <= 1024 fits u16.
            let mut port_args = sys::CreatePort {
                pools,
                cq_depth: cfg.cq_depth as u16,
                num_ldb_event_state_entries: plan.es_per_port,
                cos_id: sys::PORT_COS_ID_ANY,
            };
            // SAFETY: live domain handle; `port_args` is live and initialised.
            let ldb_id = check("dlb_create_ldb_port", unsafe {
                (lib.dlb_create_ldb_port)(domain, &mut port_args)
            })?;
            // SAFETY: live domain handle and a port id it just created.
            let ldb = unsafe { (lib.dlb_attach_ldb_port)(domain, ldb_id) };
            if ldb.is_null() {
                return Err(hw_error("dlb_attach_ldb_port", 0));
            }
            objs.ldb = ldb;
            for &(queue, priority) in links {
                let hw_queue = c_int::from(ldb_queues[usize::from(queue)]);
                // SAFETY: live port handle; plain integer arguments.
                check("dlb_link_queue", unsafe {
                    (lib.dlb_link_queue)(ldb, hw_queue, c_int::from(priority))
                })?;
            }
            let efd = new_eventfd()?;
            // SAFETY: live port handle and a live eventfd that outlives the
            // domain (closed only after `dlb_close`).
            check("dlb_enable_cq_epoll", unsafe {
                (lib.dlb_enable_cq_epoll)(ldb, true, efd.as_raw_fd())
            })?;
            objs.ldb_efd = Some(efd);

            let mut dir_args = sys::CreatePort {
                pools,
                cq_depth: cfg.cq_depth as u16,
                num_ldb_event_state_entries: 0,
                // Overlays `is_producer = false`: this port receives.
                cos_id: 0,
            };
            // SAFETY: live domain handle; `dir_args` is live and initialised;
            // -1: the directed queue is created after the port.
            let dir_id = check("dlb_create_dir_port", unsafe {
                (lib.dlb_create_dir_port)(domain, &mut dir_args, -1)
            })?;
            // SAFETY: live domain handle; `dir_id` is a directed port it created.
            let dir_queue = check("dlb_create_dir_queue", unsafe {
                (lib.dlb_create_dir_queue)(domain, dir_id)
            })?;
            dir_queues.push(queue_id("dlb_create_dir_queue", dir_queue)?);
            // SAFETY: live domain handle and a directed port id it created.
            let dir = unsafe { (lib.dlb_attach_dir_port)(domain, dir_id) };
            if dir.is_null() {
                return Err(hw_error("dlb_attach_dir_port", 0));
            }
            objs.dir = dir;
            let efd = new_eventfd()?;
            // SAFETY: as for the load-balanced port above.
            check("dlb_enable_cq_epoll", unsafe {
                (lib.dlb_enable_cq_epoll)(dir, false, efd.as_raw_fd())
            })?;
            objs.dir_efd = Some(efd);
            objs.epoll = Some(new_epoll(&[
                objs.ldb_efd.as_ref().map_or(-1, AsRawFd::as_raw_fd),
                objs.dir_efd.as_ref().map_or(-1, AsRawFd::as_raw_fd),
            ])?);
        }

        // SAFETY: live domain handle; `on_alert` has the callback's C
        // signature, never unwinds, and ignores its (null) argument.
        check("dlb_launch_domain_alert_thread", unsafe {
            (lib.dlb_launch_domain_alert_thread)(domain, Some(on_alert), std::ptr::null_mut())
        })?;
        // SAFETY: live domain handle, fully configured above.
        check("dlb_start_sched_domain", unsafe {
            (lib.dlb_start_sched_domain)(domain)
        })?;
        Ok(Ids {
            ldb_queues,
            dir_queues,
        })
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let lib = &self.lib;
        let warn = |call: &str, r: c_int| {
            if r < 0 {
                let err = std::io::Error::last_os_error();
                tracing::warn!("dlb: {call} failed during teardown: {err}");
            }
        };
        for objs in &self.ports {
            for hdl in [objs.ldb, objs.dir] {
                if !hdl.is_null() {
                    // SAFETY: a live port handle from setup; no `HwPort` uses it
                    // any more (this runs with the last `Arc<Inner>`, or on a
                    // failed setup before any port was handed out).
                    warn("dlb_disable_port", unsafe { (lib.dlb_disable_port)(hdl) });
                    // SAFETY: as above; the handle is not used after this.
                    warn("dlb_detach_port", unsafe { (lib.dlb_detach_port)(hdl) });
                }
            }
        }
        if !self.domain.is_null() {
            // SAFETY: live domain handle whose ports were all detached above.
            warn("dlb_detach_sched_domain", unsafe {
                (lib.dlb_detach_sched_domain)(self.domain)
            });
        }
        if let Some(id) = self.domain_id {
            // SAFETY: live device handle and the domain it created; every
            // handle into the domain is detached.
            warn("dlb_reset_sched_domain", unsafe {
                (lib.dlb_reset_sched_domain)(self.hdl, id)
            });
        }
        if !self.hdl.is_null() {
            // SAFETY: live device handle with no attached domain; not used after.
            warn("dlb_close", unsafe { (lib.dlb_close)(self.hdl) });
        }
        // The eventfds and epoll fds close here, after the device; `lib` is
        // dlclosed after this function returns (it is the last field).
        self.ports.clear();
    }
}

/// Resource decisions made from `dlb_get_num_resources`.
struct Plan {
    /// Event-state (history list) entries per load-balanced port.
    es_per_port: u32,
    /// Directed credits (DLB 2.0; unused with combined credits).
    dir_credits: u32,
}

impl Plan {
    fn new(cfg: &Config, rsrc: &sys::Resources, combined: bool) -> Result<Self, DlbError> {
        let ports = cfg.ports as u32;
        if rsrc.num_sched_domains == 0 {
            tracing::warn!("dlb: the device has no free scheduling domain");
            return Err(DlbError::Hardware {
                call: "dlb_get_num_resources",
                code: 0,
                errno: libc::EBUSY,
            });
        }
        if (rsrc.num_ldb_ports as usize) < cfg.ports {
            return Err(DlbError::TooManyPorts {
                requested: cfg.ports,
                max: rsrc.num_ldb_ports as usize,
            });
        }
        // Each port also needs a directed port, to receive directed events.
        if (rsrc.num_dir_ports as usize) < cfg.ports {
            return Err(DlbError::TooManyPorts {
                requested: cfg.ports,
                max: rsrc.num_dir_ports as usize,
            });
        }
        if (rsrc.num_ldb_queues as usize) < cfg.queues {
            return Err(DlbError::Queues {
                requested: cfg.queues,
                max: rsrc.num_ldb_queues as usize,
            });
        }
        let ldb_credits = if combined {
            rsrc.num_credits()
        } else {
            rsrc.max_contiguous_ldb_credits()
        };
        if ldb_credits < cfg.credits {
            return Err(DlbError::Credits {
                requested: cfg.credits,
                max: ldb_credits,
            });
        }
        let dir_credits = cfg.credits.min(rsrc.max_contiguous_dir_credits());
        if !combined && dir_credits == 0 {
            return Err(DlbError::Credits {
                requested: cfg.credits,
                max: 0,
            });
        }
        // libdlb recommends two history-list entries per CQ slot; one per
        // slot is the minimum.
        let es = rsrc.max_contiguous_ldb_event_state_entries;
        let es_per_port = if es >= 2 * cfg.cq_depth * ports {
            2 * cfg.cq_depth
        } else if es >= cfg.cq_depth * ports {
            cfg.cq_depth
        } else {
            tracing::warn!(
                available = es,
                needed = cfg.cq_depth * ports,
                "dlb: not enough event-state entries for {} ports of CQ depth {}",
                cfg.ports,
                cfg.cq_depth
            );
            return Err(DlbError::Hardware {
                call: "dlb_get_num_resources",
                code: i64::from(es),
                errno: libc::ENOSPC,
            });
        };
        Ok(Self {
            es_per_port,
            dir_credits,
        })
    }
}

fn new_eventfd() -> Result<OwnedFd, DlbError> {
    // SAFETY: eventfd takes no pointers; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(DlbError::Io(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An epoll fd watching `fds` for input, level-triggered.
fn new_epoll(fds: &[RawFd]) -> Result<OwnedFd, DlbError> {
    // SAFETY: no pointers; the result is checked.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(DlbError::Io(std::io::Error::last_os_error()));
    }
    // SAFETY: `ep` is a fresh descriptor that nothing else owns.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    for &fd in fds {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: `ep` and `fd` are live descriptors; `ev` is a live struct.
        if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(DlbError::Io(std::io::Error::last_os_error()));
        }
    }
    Ok(ep)
}

/// The domain alert callback, run on libdlb's alert thread.
unsafe extern "C" fn on_alert(alert: *mut sys::Alert, domain_id: c_int, _arg: *mut c_void) {
    // Never unwind into C.
    let _ = std::panic::catch_unwind(|| {
        if alert.is_null() {
            return;
        }
        // SAFETY: libdlb passes a pointer to a live alert for the duration
        // of the call; it was checked for null.
        let alert = unsafe { *alert };
        match alert.id {
            sys::ALERT_DOMAIN_RESET => tracing::debug!(domain_id, "dlb: domain reset"),
            sys::ALERT_DEVICE_RESET => {
                tracing::error!(
                    domain_id,
                    "dlb: the device is being reset; its ports are disabled"
                )
            }
            id => tracing::warn!(domain_id, id, data = alert.data, "dlb: domain alert"),
        }
    });
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
