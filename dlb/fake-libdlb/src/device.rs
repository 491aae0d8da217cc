//! Device-level functions: open and close, capabilities and resources,
//! and creating, attaching, detaching and resetting scheduling domains.

use std::collections::BTreeMap;
use std::ffi::{c_int, c_void};
use std::sync::{Arc, Mutex};

use crate::abi::{self, CreateSchedDomain, DevCap, Resources};
use crate::domain::{domain_of, port_ref, DomainCfg, FakeDomain, FakePort};
use crate::state::{Device, Global, Session, GLOBAL};
use crate::{ffi, lock, Errno};

/// `int dlb_open(int device_id, dlb_hdl_t *hdl)`.
///
/// # Safety
/// `hdl` must be null or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn dlb_open(device_id: c_int, hdl: *mut *mut c_void) -> c_int {
    ffi(-1, || {
        let mut g = lock(&GLOBAL);
        let session = Arc::new(Session::default());
        g.last_session = Some(Arc::clone(&session));
        g.last_device = device_id;
        let r = (|| {
            g.injected("dlb_open")?;
            if hdl.is_null() || device_id < 0 {
                return Err(libc::EINVAL);
            }
            let h = g.new_handle();
            let limits = g.limits;
            g.devices.insert(
                h,
                Device {
                    session: Arc::clone(&session),
                    limits,
                    domains: BTreeMap::new(),
                    next_domain: 0,
                },
            );
            // SAFETY: checked non-null; the caller passes a writable slot.
            unsafe { *hdl = h as *mut c_void };
            Ok(0)
        })();
        session.record("dlb_open", &r);
        r
    })
}

/// Runs a device-level call: finds the device, applies injected failures,
/// logs the call in the device's session.
fn device_call<T>(
    hdl: *mut c_void,
    name: &str,
    f: impl FnOnce(&mut Global, usize) -> Result<T, Errno>,
) -> Result<T, Errno> {
    let mut g = lock(&GLOBAL);
    let key = hdl as usize;
    let session = g
        .devices
        .get(&key)
        .map(|d| Arc::clone(&d.session))
        .ok_or(libc::EINVAL)?;
    let r = g.injected(name).and_then(|()| f(&mut g, key));
    session.record(name, &r);
    r
}

/// Runs a domain-level call, like [`device_call`].
pub(crate) fn domain_call<T>(
    hdl: *mut c_void,
    name: &str,
    f: impl FnOnce(&mut Global, &Arc<FakeDomain>) -> Result<T, Errno>,
) -> Result<T, Errno> {
    let mut g = lock(&GLOBAL);
    let domain = domain_of(&g, hdl)?;
    let r = g.injected(name).and_then(|()| f(&mut g, &domain));
    domain.session.record(name, &r);
    r
}

/// Runs a control call on a port, like [`device_call`].
pub(crate) fn port_call<T>(
    hdl: *mut c_void,
    name: &str,
    f: impl FnOnce(&mut Global, &FakePort) -> Result<T, Errno>,
) -> Result<T, Errno> {
    let mut g = lock(&GLOBAL);
    let port = port_ref(hdl)?;
    let r = g.injected(name).and_then(|()| f(&mut g, port));
    port.domain.session.record(name, &r);
    r
}

/// `int dlb_close(dlb_hdl_t hdl)`.
///
/// # Safety
/// Any value may be passed; unknown handles fail with `EINVAL`.
#[no_mangle]
pub unsafe extern "C" fn dlb_close(hdl: *mut c_void) -> c_int {
    ffi(-1, || {
        device_call(hdl, "dlb_close", |g, key| {
            let busy = g.devices[&key]
                .domains
                .values()
                .any(|d| lock(&d.cfg).handles > 0);
            if busy {
                return Err(libc::EEXIST);
            }
            g.devices.remove(&key);
            Ok(0)
        })
    })
}

/// `int dlb_get_dev_capabilities(dlb_hdl_t hdl, dlb_dev_cap_t *cap)`.
///
/// # Safety
/// `cap` must be null or valid for writing a `dlb_dev_cap_t`.
#[no_mangle]
pub unsafe extern "C" fn dlb_get_dev_capabilities(hdl: *mut c_void, cap: *mut DevCap) -> c_int {
    ffi(-1, || {
        device_call(hdl, "dlb_get_dev_capabilities", |g, key| {
            if cap.is_null() {
                return Err(libc::EINVAL);
            }
            let bits = if g.devices[&key].limits.version >= 3 {
                abi::CAP_COMBINED_CREDITS | abi::CAP_LDB_DEQ_EVENT_FID
            } else {
                0
            };
            // SAFETY: checked non-null; the caller passes a writable struct.
            unsafe { cap.write(DevCap { bits }) };
            Ok(0)
        })
    })
}

/// `int dlb_get_num_resources(dlb_hdl_t hdl, dlb_resources_t *rsrcs)`.
///
/// # Safety
/// `rsrcs` must be null or valid for writing a `dlb_resources_t`.
#[no_mangle]
pub unsafe extern "C" fn dlb_get_num_resources(hdl: *mut c_void, rsrcs: *mut Resources) -> c_int {
    ffi(-1, || {
        device_call(hdl, "dlb_get_num_resources", |g, key| {
            if rsrcs.is_null() {
                return Err(libc::EINVAL);
            }
            let l = g.devices[&key].limits;
            let credits = if l.version >= 3 {
                [l.credits, 64, 0, 0, 0, 0]
            } else {
                [l.credits, l.credits, l.credits / 4, l.credits / 4, 64, 64]
            };
            let r = Resources {
                num_sched_domains: 32,
                num_ldb_queues: l.ldb_queues,
                num_ldb_ports: l.ldb_ports,
                num_ldb_ports_per_cos: [l.ldb_ports / 4; 4],
                num_dir_ports: l.dir_ports,
                num_ldb_event_state_entries: 2048,
                max_contiguous_ldb_event_state_entries: 2048,
                credits,
                num_sn_slots: [16, 16],
            };
            // SAFETY: checked non-null; the caller passes a writable struct.
            unsafe { rsrcs.write(r) };
            Ok(0)
        })
    })
}

/// `int dlb_create_sched_domain(dlb_hdl_t hdl, dlb_create_sched_domain_t *args)`.
///
/// # Safety
/// `args` must be null or point to a readable `dlb_create_sched_domain_t`.
#[no_mangle]
pub unsafe extern "C" fn dlb_create_sched_domain(
    hdl: *mut c_void,
    args: *mut CreateSchedDomain,
) -> c_int {
    ffi(-1, || {
        device_call(hdl, "dlb_create_sched_domain", |g, key| {
            if args.is_null() {
                return Err(libc::EINVAL);
            }
            // SAFETY: checked non-null; the caller passes a readable struct.
            let args = unsafe { args.read() };
            let dev = g.devices.get_mut(&key).ok_or(libc::EINVAL)?;
            let l = dev.limits;
            let combined = l.version >= 3;
            if args.num_ldb_queues > l.ldb_queues
                || args.num_ldb_ports > l.ldb_ports
                || args.num_dir_ports > l.dir_ports
                || args.credits[0] > l.credits
                || args.num_ldb_event_state_entries > 2048
            {
                return Err(libc::EINVAL);
            }
            let id = dev.next_domain;
            dev.next_domain += 1;
            let domain = FakeDomain {
                session: Arc::clone(&dev.session),
                combined,
                cfg: Mutex::new(DomainCfg {
                    args,
                    ..DomainCfg::default()
                }),
            };
            dev.domains.insert(id, Arc::new(domain));
            Ok(id)
        })
    })
}

/// `dlb_domain_hdl_t dlb_attach_sched_domain(dlb_hdl_t hdl, int domain_id)`.
///
/// # Safety
/// Any values may be passed; unknown ones fail with `EINVAL`.
#[no_mangle]
pub unsafe extern "C" fn dlb_attach_sched_domain(
    hdl: *mut c_void,
    domain_id: c_int,
) -> *mut c_void {
    ffi(std::ptr::null_mut(), || {
        device_call(hdl, "dlb_attach_sched_domain", |g, key| {
            let domain = g.devices[&key]
                .domains
                .get(&domain_id)
                .cloned()
                .ok_or(libc::EINVAL)?;
            lock(&domain.cfg).handles += 1;
            let h = g.new_handle();
            g.domain_handles.insert(h, domain);
            Ok(h as *mut c_void)
        })
    })
}

/// `int dlb_detach_sched_domain(dlb_domain_hdl_t hdl)`.
///
/// # Safety
/// Any value may be passed; unknown handles fail with `EINVAL`.
#[no_mangle]
pub unsafe extern "C" fn dlb_detach_sched_domain(hdl: *mut c_void) -> c_int {
    ffi(-1, || {
        domain_call(hdl, "dlb_detach_sched_domain", |g, domain| {
            let mut cfg = lock(&domain.cfg);
            let attached = cfg
                .ldb_ports
                .iter()
                .chain(cfg.dir_ports.iter().filter_map(|d| d.port.as_ref()))
                .any(|p| p.attached.is_some());
            if attached {
                return Err(libc::EEXIST);
            }
            cfg.handles -= 1;
            g.domain_handles.remove(&(hdl as usize));
            Ok(0)
        })
    })
}

/// `int dlb_reset_sched_domain(dlb_hdl_t hdl, int domain_id)`.
///
/// # Safety
/// Any values may be passed; unknown ones fail with `EINVAL`.
#[no_mangle]
pub unsafe extern "C" fn dlb_reset_sched_domain(hdl: *mut c_void, domain_id: c_int) -> c_int {
    ffi(-1, || {
        device_call(hdl, "dlb_reset_sched_domain", |g, key| {
            let dev = g.devices.get_mut(&key).ok_or(libc::EINVAL)?;
            let domain = dev.domains.get(&domain_id).ok_or(libc::EINVAL)?;
            let mut cfg = lock(&domain.cfg);
            if cfg.handles > 0 {
                return Err(libc::EEXIST);
            }
            cfg.soft = None;
            drop(cfg);
            dev.domains.remove(&domain_id);
            Ok(0)
        })
    })
}
