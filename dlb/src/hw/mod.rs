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
//!   [`Sched::Directed`](crate::Sched::Directed) events addressed to the
//!   port. `recv` reads both consumer queues (CQs).
//! - An [`Event`](crate::Event) maps field by field onto `dlb_event_t`; the
//!   flow id also travels in `udata16`, which every device returns on
//!   dequeue (only some return `flow_id`).
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

mod port;
mod setup;
mod sys;

use std::ffi::c_int;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

pub use self::port::HwPort;
use self::port::PortState;
use self::setup::{find_device, Setup};
use self::sys::Lib;
use crate::config::Config;
use crate::stats::{PortCounters, PortStats};
use crate::DlbError;

/// Library loaded when no path is configured.
const DEFAULT_LIBRARY: &str = "libdlb.so";

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
        Ok(HwPort::new(Arc::clone(inner), id))
    }

    /// Counters of port `id`, or `None` if there is no such port.
    pub(crate) fn port_stats(&self, id: usize) -> Option<PortStats> {
        let slot = self.inner.slots.get(id)?;
        Some(slot.counters.snapshot(slot.in_flight.load(Relaxed)))
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
