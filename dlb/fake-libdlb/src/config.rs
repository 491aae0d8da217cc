//! Domain configuration: credit pools, queues, ports, links, epoll mode,
//! the alert thread, and the start that builds the software domain.

use std::ffi::{c_int, c_void};
use std::sync::{Arc, Condvar, Mutex};

use fulcrum_dlb::{Backend, Domain};

use crate::abi::{CreateLdbQueue, CreatePort};
use crate::device::{domain_call, port_call};
use crate::domain::{DirSlot, DomainCfg, FakeDomain, FakePort, PortDef, PortSt, Shape, PORT_MAGIC};
use crate::{ffi, lock, Errno};

fn credit_pool(hdl: *mut c_void, name: &str, dir: bool, combined: bool, n: c_int) -> c_int {
    ffi(-1, || {
        domain_call(hdl, name, |_, domain| {
            if domain.combined != combined || n < 0 {
                return Err(libc::EINVAL);
            }
            let mut cfg = lock(&domain.cfg);
            let pools = if dir {
                &mut cfg.dir_pools
            } else {
                &mut cfg.ldb_pools
            };
            pools.push(n as u32);
            Ok((pools.len() - 1) as c_int)
        })
    })
}

/// `int dlb_create_ldb_credit_pool(dlb_domain_hdl_t hdl, int num_credits)` (DLB 2.0).
///
/// # Safety
/// Any values may be passed; unknown handles fail with `EINVAL`.
#[no_mangle]
pub unsafe extern "C" fn dlb_create_ldb_credit_pool(hdl: *mut c_void, num_credits: c_int) -> c_int {
    credit_pool(hdl, "dlb_create_ldb_credit_pool", false, false, num_credits)
}

/// `int dlb_create_dir_credit_pool(dlb_domain_hdl_t hdl, int num_credits)` (DLB 2.0).
///
/// # Safety
/// Any values may be passed; unknown handles fail with `EINVAL`.
#[no_mangle]
pub unsafe extern "C" fn dlb_create_dir_credit_pool(hdl: *mut c_void, num_credits: c_int) -> c_int {
    credit_pool(hdl, "dlb_create_dir_credit_pool", true, false, num_credits)
}

/// `int dlb_create_credit_pool(dlb_domain_hdl_t hdl, int num_credits)` (DLB 2.5).
///
/// # Safety
/// Any values may be passed; unknown handles fail with `EINVAL`.
#[no_mangle]
pub unsafe extern "C" fn dlb_create_credit_pool(hdl: *mut c_void, num_credits: c_int) -> c_int {
    credit_pool(hdl, "dlb_create_credit_pool", false, true, num_credits)
}

/// `int dlb_create_ldb_queue(dlb_domain_hdl_t hdl, dlb_create_ldb_queue_t *args)`.
///
/// # Safety
/// `args` must be null or point to a readable `dlb_create_ldb_queue_t`.
#[no_mangle]
pub unsafe extern "C" fn dlb_create_ldb_queue(
    hdl: *mut c_void,
    args: *mut CreateLdbQueue,
) -> c_int {
    ffi(-1, || {
        domain_call(hdl, "dlb_create_ldb_queue", |_, domain| {
            if args.is_null() {
                return Err(libc::EINVAL);
            }
            // SAFETY: checked non-null; the caller passes a readable struct.
            let args = unsafe { args.read() };
            let mut cfg = lock(&domain.cfg);
            // Ordered queues are not emulated.
            if args.num_sequence_numbers != 0
                || cfg.ldb_queues >= cfg.args.num_ldb_queues as usize
                || cfg.soft.is_some()
            {
                return Err(libc::EINVAL);
            }
            cfg.ldb_queues += 1;
            Ok((cfg.ldb_queues - 1) as c_int)
        })
    })
}

/// Checks port arguments against the domain's pools.
fn check_port_args(domain: &FakeDomain, cfg: &DomainCfg, args: &CreatePort) -> Result<(), Errno> {
    let depth = args.cq_depth;
    if !depth.is_power_of_two() || !(8..=1024).contains(&depth) || cfg.soft.is_some() {
        return Err(libc::EINVAL);
    }
    let ldb_ok = (args.pools[0] as usize) < cfg.ldb_pools.len();
    let dir_ok = domain.combined || (args.pools[1] as usize) < cfg.dir_pools.len();
    if !ldb_ok || !dir_ok {
        return Err(libc::EINVAL);
    }
    Ok(())
}

/// `int dlb_create_ldb_port(dlb_domain_hdl_t hdl, dlb_create_port_t *args)`.
///
/// # Safety
/// `args` must be null or point to a readable `dlb_create_port_t`.
#[no_mangle]
pub unsafe extern "C" fn dlb_create_ldb_port(hdl: *mut c_void, args: *mut CreatePort) -> c_int {
    ffi(-1, || {
        domain_call(hdl, "dlb_create_ldb_port", |_, domain| {
            if args.is_null() {
                return Err(libc::EINVAL);
            }
            // SAFETY: checked non-null; the caller passes a readable struct.
            let args = unsafe { args.read() };
            let mut cfg = lock(&domain.cfg);
            check_port_args(domain, &cfg, &args)?;
            if cfg.ldb_ports.len() >= cfg.args.num_ldb_ports as usize
                || args.num_ldb_event_state_entries < u32::from(args.cq_depth)
            {
                return Err(libc::EINVAL);
            }
            cfg.ldb_ports.push(PortDef {
                cq_depth: args.cq_depth,
                links: Vec::new(),
                attached: None,
            });
            Ok((cfg.ldb_ports.len() - 1) as c_int)
        })
    })
}

/// `int dlb_create_dir_port(dlb_domain_hdl_t hdl, dlb_create_port_t *args, int queue_id)`.
///
/// # Safety
/// `args` must be null or point to a readable `dlb_create_port_t`.
#[no_mangle]
pub unsafe extern "C" fn dlb_create_dir_port(
    hdl: *mut c_void,
    args: *mut CreatePort,
    queue_id: c_int,
) -> c_int {
    ffi(-1, || {
        domain_call(hdl, "dlb_create_dir_port", |_, domain| {
            if args.is_null() {
                return Err(libc::EINVAL);
            }
            // SAFETY: checked non-null; the caller passes a readable struct.
            let args = unsafe { args.read() };
            let mut cfg = lock(&domain.cfg);
            check_port_args(domain, &cfg, &args)?;
            let def = PortDef {
                cq_depth: args.cq_depth,
                links: Vec::new(),
                attached: None,
            };
            if queue_id < 0 {
                if cfg.dir_ports.len() >= cfg.args.num_dir_ports as usize {
                    return Err(libc::EINVAL);
                }
                cfg.dir_ports.push(DirSlot {
                    port: Some(def),
                    queue: false,
                });
                return Ok((cfg.dir_ports.len() - 1) as c_int);
            }
            let slot = cfg
                .dir_ports
                .get_mut(queue_id as usize)
                .filter(|s| s.queue && s.port.is_none())
                .ok_or(libc::EINVAL)?;
            slot.port = Some(def);
            Ok(queue_id)
        })
    })
}

/// `int dlb_create_dir_queue(dlb_domain_hdl_t hdl, int port_id)`.
///
/// # Safety
/// Any values may be passed; unknown ones fail with `EINVAL`.
#[no_mangle]
pub unsafe extern "C" fn dlb_create_dir_queue(hdl: *mut c_void, port_id: c_int) -> c_int {
    ffi(-1, || {
        domain_call(hdl, "dlb_create_dir_queue", |_, domain| {
            let mut cfg = lock(&domain.cfg);
            if cfg.soft.is_some() {
                return Err(libc::EINVAL);
            }
            if port_id < 0 {
                if cfg.dir_ports.len() >= cfg.args.num_dir_ports as usize {
                    return Err(libc::EINVAL);
                }
                cfg.dir_ports.push(DirSlot {
                    port: None,
                    queue: true,
                });
                return Ok((cfg.dir_ports.len() - 1) as c_int);
            }
            let slot = cfg
                .dir_ports
                .get_mut(port_id as usize)
                .filter(|s| !s.queue && s.port.is_some())
                .ok_or(libc::EINVAL)?;
            slot.queue = true;
            Ok(port_id)
        })
    })
}

fn attach_port(hdl: *mut c_void, name: &str, is_ldb: bool, port_id: c_int) -> *mut c_void {
    ffi(std::ptr::null_mut(), || {
        domain_call(hdl, name, |_, domain| {
            let mut cfg = lock(&domain.cfg);
            let shape = shape_of(&cfg);
            let def = if is_ldb {
                cfg.ldb_ports.get_mut(port_id as usize)
            } else {
                cfg.dir_ports
                    .get_mut(port_id as usize)
                    .and_then(|s| s.port.as_mut())
            }
            .filter(|_| port_id >= 0)
            .ok_or(libc::EINVAL)?;
            if def.attached.is_some() {
                return Err(libc::EEXIST);
            }
            let port = Arc::new(FakePort {
                magic: PORT_MAGIC,
                domain: Arc::clone(domain),
                is_ldb,
                index: port_id as usize,
                st: Mutex::new(PortSt::default()),
                cond: Condvar::new(),
            });
            def.attached = Some(Arc::clone(&port));
            if let (Some(soft), Some(shape)) = (cfg.soft.as_ref(), shape) {
                // Attached after the start: take its software port now.
                let soft_id = soft_port_id(shape, is_ldb, port_id as usize);
                let soft_port = soft.port(soft_id).map_err(|_| libc::EINVAL)?;
                let mut st = lock(&port.st);
                st.soft = Some(soft_port);
                st.shape = Some(shape);
            }
            Ok(Arc::into_raw(port) as *mut c_void)
        })
    })
}

fn shape_of(cfg: &DomainCfg) -> Option<Shape> {
    cfg.soft.as_ref().map(|_| Shape {
        ldb_ports: cfg.ldb_ports.len(),
        ldb_queues: cfg.ldb_queues,
        dir_ports: cfg.dir_ports.len(),
    })
}

/// The software port behind libdlb port `id`.
fn soft_port_id(shape: Shape, is_ldb: bool, id: usize) -> usize {
    if is_ldb {
        id
    } else {
        shape.ldb_ports + id
    }
}

/// `dlb_port_hdl_t dlb_attach_ldb_port(dlb_domain_hdl_t hdl, int port_id)`.
///
/// # Safety
/// Any values may be passed; unknown ones fail with `EINVAL`.
#[no_mangle]
pub unsafe extern "C" fn dlb_attach_ldb_port(hdl: *mut c_void, port_id: c_int) -> *mut c_void {
    attach_port(hdl, "dlb_attach_ldb_port", true, port_id)
}

/// `dlb_port_hdl_t dlb_attach_dir_port(dlb_domain_hdl_t hdl, int port_id)`.
///
/// # Safety
/// Any values may be passed; unknown ones fail with `EINVAL`.
#[no_mangle]
pub unsafe extern "C" fn dlb_attach_dir_port(hdl: *mut c_void, port_id: c_int) -> *mut c_void {
    attach_port(hdl, "dlb_attach_dir_port", false, port_id)
}

/// `int dlb_link_queue(dlb_port_hdl_t hdl, int queue_id, int priority)`.
///
/// # Safety
/// `hdl` must be null or a handle this library returned.
#[no_mangle]
pub unsafe extern "C" fn dlb_link_queue(
    hdl: *mut c_void,
    queue_id: c_int,
    priority: c_int,
) -> c_int {
    ffi(-1, || {
        port_call(hdl, "dlb_link_queue", |_, port| {
            let mut cfg = lock(&port.domain.cfg);
            if !port.is_ldb
                || cfg.soft.is_some()
                || queue_id < 0
                || queue_id as usize >= cfg.ldb_queues
                || !(0..=7).contains(&priority)
            {
                return Err(libc::EINVAL);
            }
            let def = &mut cfg.ldb_ports[port.index];
            if def.links.len() >= 8 || def.links.iter().any(|&(q, _)| c_int::from(q) == queue_id) {
                return Err(libc::EINVAL);
            }
            def.links.push((queue_id as u8, priority as u8));
            Ok(0)
        })
    })
}

/// `int dlb_enable_cq_epoll(dlb_port_hdl_t hdl, bool is_ldb, int efd)`.
///
/// # Safety
/// `hdl` must be null or a handle this library returned; `efd` must be an
/// eventfd that stays open while the port is attached.
#[no_mangle]
pub unsafe extern "C" fn dlb_enable_cq_epoll(hdl: *mut c_void, is_ldb: bool, efd: c_int) -> c_int {
    ffi(-1, || {
        port_call(hdl, "dlb_enable_cq_epoll", |_, port| {
            if port.is_ldb != is_ldb || efd < 0 {
                return Err(libc::EINVAL);
            }
            // SAFETY: `port_ref` only returns ports reached through an `Arc`
            // that is never freed; re-wrapping needs an owned count.
            let me = unsafe { arc_of(port) };
            let mut st = lock(&port.st);
            st.efd = Some(efd);
            st.armed = true;
            let r = me.start_bridge(&mut st);
            port.cond.notify_all();
            r.map(|()| 0)
        })
    })
}

/// An owned `Arc` for a port reached through its handle.
///
/// # Safety
/// `port` must come from `port_ref` (so from `Arc::into_raw`).
unsafe fn arc_of(port: &FakePort) -> Arc<FakePort> {
    let ptr: *const FakePort = port;
    // SAFETY: per the contract `ptr` came from `Arc::into_raw` and that
    // count is never given back, so the allocation is live; taking one more
    // count first keeps the handle's own count intact.
    unsafe {
        Arc::increment_strong_count(ptr);
        Arc::from_raw(ptr)
    }
}

/// `int dlb_launch_domain_alert_thread(dlb_domain_hdl_t hdl, domain_alert_callback_t cb, void *arg)`.
///
/// The fake raises no alerts, so the callback is never called.
///
/// # Safety
/// Any values may be passed; unknown handles fail with `EINVAL`.
#[no_mangle]
pub unsafe extern "C" fn dlb_launch_domain_alert_thread(
    hdl: *mut c_void,
    _callback: Option<unsafe extern "C" fn(*mut c_void, c_int, *mut c_void)>,
    _arg: *mut c_void,
) -> c_int {
    ffi(-1, || {
        domain_call(hdl, "dlb_launch_domain_alert_thread", |_, domain| {
            let mut cfg = lock(&domain.cfg);
            if cfg.alert {
                return Err(libc::EEXIST);
            }
            cfg.alert = true;
            Ok(0)
        })
    })
}

/// `int dlb_start_sched_domain(dlb_domain_hdl_t hdl)`: builds the software
/// domain from everything recorded so far.
///
/// # Safety
/// Any value may be passed; unknown handles fail with `EINVAL`.
#[no_mangle]
pub unsafe extern "C" fn dlb_start_sched_domain(hdl: *mut c_void) -> c_int {
    ffi(-1, || {
        domain_call(hdl, "dlb_start_sched_domain", |_, domain| {
            let mut cfg = lock(&domain.cfg);
            if !cfg.alert {
                return Err(libc::ESRCH);
            }
            if cfg.soft.is_some() || cfg.dir_ports.iter().any(|s| !s.queue || s.port.is_none()) {
                return Err(libc::EINVAL);
            }
            let ldb_ports = cfg.ldb_ports.len();
            let dir_ports = cfg.dir_ports.len();
            let cq_depth = cfg
                .ldb_ports
                .iter()
                .chain(cfg.dir_ports.iter().filter_map(|s| s.port.as_ref()))
                .map(|p| u32::from(p.cq_depth))
                .max()
                .unwrap_or(8);
            let credits: u32 = cfg.ldb_pools.iter().sum();
            let mut builder = Domain::builder()
                .backend(Backend::Software)
                .ignore_env()
                .queues(cfg.ldb_queues.max(1))
                .ports(ldb_ports + dir_ports)
                .cq_depth(cq_depth)
                .credits(credits);
            for (i, def) in cfg.ldb_ports.iter().enumerate() {
                for &(q, prio) in &def.links {
                    builder = builder.link(i, q, prio);
                }
            }
            let soft = builder.build().map_err(|_| libc::EINVAL)?;
            let shape = Shape {
                ldb_ports,
                ldb_queues: cfg.ldb_queues,
                dir_ports,
            };
            let attached: Vec<(Arc<FakePort>, usize)> = cfg
                .ldb_ports
                .iter()
                .enumerate()
                .filter_map(|(i, d)| d.attached.clone().map(|p| (p, i)))
                .chain(cfg.dir_ports.iter().enumerate().filter_map(|(i, s)| {
                    s.port
                        .as_ref()
                        .and_then(|d| d.attached.clone())
                        .map(|p| (p, ldb_ports + i))
                }))
                .collect();
            for (port, soft_id) in attached {
                let soft_port = soft.port(soft_id).map_err(|_| libc::EINVAL)?;
                let mut st = lock(&port.st);
                st.soft = Some(soft_port);
                st.shape = Some(shape);
                port.start_bridge(&mut st)?;
            }
            cfg.soft = Some(soft);
            Ok(0)
        })
    })
}
