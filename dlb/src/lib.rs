//! Load-balancing queues with the semantics of Intel DLB's load-balanced
//! queues, in software and over `libdlb`.
//!
//! A [`Domain`] is one scheduling domain: some load-balanced queues, some
//! [`Port`]s, a consumer-queue (CQ) depth and a credit pool. Each port is
//! owned by one thread at a time. A port [`send`](Port::send)s [`Event`]s to
//! queues; the arbiter places each event on a port linked to its queue, and
//! that port [`recv`](Port::recv)s it and later [`release`](Port::release)s
//! it.
//!
//! # Arbitration
//! - [`Sched::Unordered`]: the event goes to the eligible linked port with the
//!   lowest load (events in its CQ plus events received and not released),
//!   round-robin among equals.
//! - [`Sched::Atomic`]: like unordered, but all events of one flow go to the
//!   same port while any of them is unreleased. (The software backend keeps
//!   this pinning but, unlike hardware, not the order within a flow.)
//! - [`Sched::Directed`]: the event goes to the port named by its `queue`.
//! - A port whose CQ is full, or which owes more than the CQ depth in
//!   releases, is not eligible. Events that no port can take wait in their
//!   queue, highest priority first, and are delivered when a port receives or
//!   releases.
//!
//! # What if it is full?
//! Waiting events hold a credit each; when the credit pool is empty,
//! [`Port::send`] sends only part of the batch and returns how many it sent.
//! The caller keeps the rest: nothing is ever dropped. A full CQ only makes
//! its port ineligible; events then wait in their queue.
//!
//! # Backends
//! [`Backend::Software`] is a lock-free emulation (atomics and bounded rings,
//! model-checked with loom). [`Backend::Hardware`] drives a DLB device
//! through `libdlb.so`, loaded at run time. [`Backend::Auto`] (the default)
//! picks hardware when a device and the library are present. The environment
//! variable `FULCRUM_DLB=auto|soft|hw|hw:N` overrides the choice.
//!
//! # Cargo features
//! - `fault-injection` (off by default, **for tests only**): the `fault`
//!   module, which makes the software backend cut sends short, hold events
//!   back and refuse ports at random, once switched on at run time. Without
//!   the feature none of that code is compiled.
//!
//! # Example
//! ```
//! use fulcrum_dlb::{Backend, Domain, Event};
//!
//! let domain = Domain::builder().backend(Backend::Software).ports(2).build()?;
//! let mut producer = domain.port(0)?;
//! let mut consumer = domain.port(1)?;
//!
//! // Port 1 is idle and port 0 is idle too: the arbiter spreads the events.
//! let sent = producer.send(&[Event::unordered(0, 7), Event::unordered(0, 8)])?;
//! assert_eq!(sent, 2);
//!
//! let mut buf = [Event::default(); 4];
//! let a = producer.recv(&mut buf)?;
//! let b = consumer.recv(&mut buf[a..])?;
//! assert_eq!(a + b, 2);
//! producer.release(a)?;
//! consumer.release(b)?;
//! # Ok::<(), fulcrum_dlb::DlbError>(())
//! ```

mod config;
mod error;
mod event;
#[cfg(feature = "fault-injection")]
pub mod fault;
#[cfg(not(loom))]
pub mod hw;
mod loom;
pub mod soft;
mod stats;

use std::{cell::Cell, marker::PhantomData, time::Duration};

pub use config::{
    Backend, DomainBuilder, BACKEND_ENV, DEFAULT_CQ_DEPTH, DEFAULT_CREDITS, MAX_CQ_DEPTH,
    MAX_CREDITS, MAX_LINKS_PER_PORT, MAX_PORTS, MAX_QUEUES, MIN_CQ_DEPTH,
};
pub use error::DlbError;
pub use event::{Event, Sched, PRIORITY_HIGHEST, PRIORITY_LOWEST};
pub use stats::PortStats;

/// The backend a domain ended up on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// The software emulation.
    Software,
    /// DLB device `/dev/dlb{device}`.
    Hardware {
        /// The device number.
        device: u32,
    },
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Software => f.write_str("software"),
            Self::Hardware { device } => write!(f, "hardware (dlb{device})"),
        }
    }
}

#[derive(Clone, Debug)]
enum DomainImpl {
    Soft(soft::SoftDomain),
    #[cfg(not(loom))]
    Hw(hw::HwDomain),
}

/// One scheduling domain: queues, ports and a credit pool.
///
/// Cheap to clone; all clones refer to the same domain. The domain lives
/// until the last clone and the last [`Port`] are dropped.
#[derive(Clone, Debug)]
pub struct Domain {
    imp: DomainImpl,
}

impl Domain {
    /// A builder with default settings.
    pub fn builder() -> DomainBuilder {
        DomainBuilder::new()
    }

    fn from_builder(builder: DomainBuilder) -> Result<Self, DlbError> {
        let cfg = builder.validate()?;
        let imp = match builder.effective_backend()? {
            Backend::Software => DomainImpl::Soft(soft::SoftDomain::new(&cfg)?),
            #[cfg(not(loom))]
            Backend::Hardware { device } => DomainImpl::Hw(hw::HwDomain::open(&cfg, device)?),
            #[cfg(not(loom))]
            Backend::Auto => match hw::HwDomain::open(&cfg, 0) {
                Ok(d) => {
                    tracing::info!(device = d.device(), "dlb: using the hardware backend");
                    DomainImpl::Hw(d)
                }
                Err(e @ DlbError::DeviceNotFound { .. }) => {
                    tracing::info!("dlb: using the software backend ({e})");
                    DomainImpl::Soft(soft::SoftDomain::new(&cfg)?)
                }
                Err(e) => {
                    tracing::warn!("dlb: hardware unusable, using the software backend ({e})");
                    DomainImpl::Soft(soft::SoftDomain::new(&cfg)?)
                }
            },
            #[cfg(loom)]
            Backend::Auto | Backend::Hardware { .. } => {
                DomainImpl::Soft(soft::SoftDomain::new(&cfg)?)
            }
        };
        Ok(Self { imp })
    }

    /// Which backend carries this domain's events.
    pub fn backend(&self) -> BackendKind {
        match &self.imp {
            DomainImpl::Soft(_) => BackendKind::Software,
            #[cfg(not(loom))]
            DomainImpl::Hw(d) => BackendKind::Hardware { device: d.device() },
        }
    }

    fn config(&self) -> &config::Config {
        match &self.imp {
            DomainImpl::Soft(d) => d.config(),
            #[cfg(not(loom))]
            DomainImpl::Hw(d) => d.config(),
        }
    }

    /// Number of ports.
    pub fn num_ports(&self) -> usize {
        self.config().ports
    }

    /// Number of load-balanced queues.
    pub fn num_queues(&self) -> usize {
        self.config().queues
    }

    /// Depth of each port's CQ.
    pub fn cq_depth(&self) -> u32 {
        self.config().cq_depth
    }

    /// Size of the credit pool.
    pub fn credits(&self) -> u32 {
        self.config().credits
    }

    /// Credits not held by waiting events, where the backend can tell
    /// (the software backend can; hardware cannot).
    pub fn credits_available(&self) -> Option<u32> {
        match &self.imp {
            DomainImpl::Soft(d) => Some(d.credits_available()),
            #[cfg(not(loom))]
            DomainImpl::Hw(_) => None,
        }
    }

    /// Takes port `id`. Each port can be taken once; it is then owned by
    /// whoever holds the [`Port`].
    ///
    /// # Errors
    /// [`DlbError::NoSuchPort`] or [`DlbError::PortTaken`]; with the
    /// test-only `fault-injection` feature switched on, also a transient
    /// refusal ([`DlbError::is_transient`]) that a retry may overcome.
    pub fn port(&self, id: usize) -> Result<Port, DlbError> {
        let imp = match &self.imp {
            DomainImpl::Soft(d) => PortImpl::Soft(d.take_port(id)?),
            #[cfg(not(loom))]
            DomainImpl::Hw(d) => PortImpl::Hw(d.take_port(id)?),
        };
        Ok(Port {
            imp,
            _not_sync: PhantomData,
        })
    }

    /// Counters of port `id`, or `None` if there is no such port.
    pub fn port_stats(&self, id: usize) -> Option<PortStats> {
        match &self.imp {
            DomainImpl::Soft(d) => d.port_stats(id),
            #[cfg(not(loom))]
            DomainImpl::Hw(d) => d.port_stats(id),
        }
    }

    /// Sets port `id`'s load hint on its owner's behalf (see
    /// [`Port::set_load_hint`]): for a thread that sees the owner is busy
    /// while the owner cannot say so itself (it is inside a long piece of
    /// work). The owner's next [`Port::set_load_hint`] replaces it. Does
    /// nothing for an unknown port or on the hardware backend.
    pub fn set_load_hint(&self, id: usize, hint: u32) {
        match &self.imp {
            DomainImpl::Soft(d) => d.set_load_hint(id, hint),
            #[cfg(not(loom))]
            DomainImpl::Hw(_) => {}
        }
    }
}

#[derive(Debug)]
enum PortImpl {
    Soft(soft::SoftPort),
    #[cfg(not(loom))]
    Hw(hw::HwPort),
}

macro_rules! on_port {
    ($self:expr, $p:ident => $e:expr) => {
        match &mut $self.imp {
            PortImpl::Soft($p) => $e,
            #[cfg(not(loom))]
            PortImpl::Hw($p) => $e,
        }
    };
}

/// A port of a [`Domain`]: sends events, and receives the events the arbiter
/// schedules to it.
///
/// A port is `Send` but not `Sync`: one thread owns it at a time, as libdlb
/// requires of its data-path calls.
///
/// ```
/// fn moves_between_threads<T: Send>() {}
/// moves_between_threads::<fulcrum_dlb::Port>();
/// ```
/// ```compile_fail
/// fn shared_between_threads<T: Sync>() {}
/// shared_between_threads::<fulcrum_dlb::Port>();
/// ```
#[derive(Debug)]
pub struct Port {
    imp: PortImpl,
    _not_sync: PhantomData<Cell<()>>,
}

impl Port {
    /// This port's id in its domain.
    pub fn id(&self) -> usize {
        match &self.imp {
            PortImpl::Soft(p) => p.id(),
            #[cfg(not(loom))]
            PortImpl::Hw(p) => p.id(),
        }
    }

    /// Sends events, in order, and returns how many were sent.
    ///
    /// The count is short when the credit pool runs out; the events from
    /// that index on were not sent and remain the caller's. Nothing is
    /// dropped.
    ///
    /// # Errors
    /// [`DlbError::InvalidEvent`] if the first event is invalid (no such queue
    /// or port, priority above 7); valid events before an invalid one are
    /// sent and counted, and the error comes on the call that starts with the
    /// invalid event. [`DlbError::Hardware`] if libdlb fails.
    #[inline]
    pub fn send(&mut self, events: &[Event]) -> Result<usize, DlbError> {
        on_port!(self, p => p.send(events))
    }

    /// Receives up to `out.len()` events without blocking, and returns how
    /// many were written to the front of `out`. Each must later be released.
    ///
    /// # Errors
    /// [`DlbError::Hardware`] if libdlb fails; the software backend does not.
    #[inline]
    pub fn recv(&mut self, out: &mut [Event]) -> Result<usize, DlbError> {
        on_port!(self, p => p.recv(out))
    }

    /// Releases the `n` oldest received events, which makes room for new
    /// deliveries. Returns how many were released: fewer than `n` only if
    /// fewer were owed.
    ///
    /// # Errors
    /// [`DlbError::Hardware`] if libdlb fails.
    #[inline]
    pub fn release(&mut self, n: usize) -> Result<usize, DlbError> {
        on_port!(self, p => p.release(n))
    }

    /// The readiness fd: a pollable fd that becomes readable when events are
    /// delivered to this port while it is parked (see
    /// [`prepare_park`](Self::prepare_park)). Register it with epoll/mio,
    /// level- or edge-triggered, and never read from it: the software backend
    /// uses an eventfd, the hardware backend an epoll fd over libdlb's CQ
    /// eventfds, which libdlb resets itself when a receive empties a CQ.
    #[cfg(not(loom))]
    pub fn readiness_fd(&self) -> std::os::fd::RawFd {
        match &self.imp {
            PortImpl::Soft(p) => p.readiness_fd(),
            PortImpl::Hw(p) => p.readiness_fd(),
        }
    }

    /// Announces that the owner is about to sleep on the readiness fd.
    ///
    /// Returns `false` if events can already be received: do not sleep, call
    /// [`recv`](Self::recv). Returns `true` if the owner may sleep: any
    /// delivery from now on makes the readiness fd readable. Call
    /// [`finish_park`](Self::finish_park) after waking, in either case.
    ///
    /// A port that owes more than the CQ depth in releases gets no
    /// deliveries, so release before sleeping.
    pub fn prepare_park(&mut self) -> bool {
        on_port!(self, p => p.prepare_park())
    }

    /// Ends a park: stops wake-ups and clears the readiness fd (on hardware
    /// the fd clears once `recv` has taken every delivered event).
    pub fn finish_park(&mut self) {
        on_port!(self, p => p.finish_park())
    }

    /// Blocks until events can be received or `timeout` passes. Returns
    /// whether events are (probably) ready. For threads that do not run an
    /// event loop; an event loop registers [`readiness_fd`](Self::readiness_fd)
    /// instead.
    ///
    /// # Errors
    /// An I/O error from `poll(2)`.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<bool, DlbError> {
        on_port!(self, p => p.wait(timeout))
    }

    /// Publishes how loaded this port's owner is beyond what the queue
    /// sees (its CQ occupancy and unreleased events): the work its own
    /// connections bring it, its recent busy time. The software arbiter
    /// adds the hint to the port's load when it ranks eligible ports for an
    /// unordered event, so that it can steer new work away from an owner
    /// that is busy for reasons it cannot see; the hint never makes a port
    /// ineligible. The hardware arbiter sees only its own queues: on the
    /// hardware backend this does nothing, and placement falls back to CQ
    /// occupancy alone.
    pub fn set_load_hint(&self, hint: u32) {
        match &self.imp {
            PortImpl::Soft(p) => p.set_load_hint(hint),
            #[cfg(not(loom))]
            PortImpl::Hw(_) => {}
        }
    }

    /// This port's counters.
    pub fn stats(&self) -> PortStats {
        match &self.imp {
            PortImpl::Soft(p) => p.stats(),
            #[cfg(not(loom))]
            PortImpl::Hw(p) => p.stats(),
        }
    }
}
