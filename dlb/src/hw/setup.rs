//! Bring-up and teardown of a domain on the device: finding the device node,
//! libdlb's setup sequence (domain, credit pools, queues, ports, links,
//! epoll mode, alert thread, start) and its undoing in `Drop`.

use std::ffi::{c_int, c_void};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use super::hw_error;
use super::sys::{self, DlbHdl, DomainHdl, Lib, PortHdl};
use crate::config::Config;
use crate::DlbError;

/// Device nodes scanned when the requested one is missing: `dlb0..=dlb63`.
const MAX_DEVICE: u32 = 63;

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
pub(super) fn find_device(dir: &Path, requested: u32) -> Result<u32, DlbError> {
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
pub(super) struct Ids {
    pub(super) ldb_queues: Vec<u8>,
    pub(super) dir_queues: Vec<u8>,
}

/// One port's hardware objects (null handles and `None`s until created).
pub(super) struct HwPortObjs {
    pub(super) ldb: PortHdl,
    pub(super) dir: PortHdl,
    pub(super) ldb_efd: Option<OwnedFd>,
    pub(super) dir_efd: Option<OwnedFd>,
    pub(super) epoll: Option<OwnedFd>,
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
pub(super) struct Setup {
    hdl: DlbHdl,
    domain_id: Option<c_int>,
    domain: DomainHdl,
    pub(super) ports: Vec<HwPortObjs>,
    /// Declared last: `dlclose`d after the teardown in `drop`.
    pub(super) lib: Lib,
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
    pub(super) fn new(lib: Lib) -> Self {
        Self {
            hdl: std::ptr::null_mut(),
            domain_id: None,
            domain: std::ptr::null_mut(),
            ports: Vec::new(),
            lib,
        }
    }

    /// Runs libdlb's setup sequence for `cfg` on `device`.
    pub(super) fn build(&mut self, cfg: &Config, device: u32) -> Result<Ids, DlbError> {
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
