//! A `libdlb.so` test double: the libdlb C API, implemented on fulcrum-dlb's
//! software backend, so that the hardware backend's FFI code runs in CI.
//!
//! Built as a `cdylib`, it exports the libdlb functions the hardware backend
//! resolves, with their C signatures. It keeps the parts of libdlb's
//! contract that the backend depends on:
//!
//! - **Setup is incremental and checked.** Domains, pools, queues, ports and
//!   links are recorded as they are created; the software domain is built at
//!   `dlb_start_sched_domain`, which fails with `ESRCH` unless the domain
//!   alert thread was launched. Data-path calls before the start fail with
//!   `EPERM`, on a disabled port with `EACCES`. Teardown is checked too:
//!   detaching a domain with attached ports, resetting a domain with attached
//!   handles and closing a device with attached domains fail with `EEXIST`.
//! - **Ports.** Each load-balanced and each directed libdlb port is one
//!   software port; directed queue N is directed port N. Releases on directed
//!   ports are accepted and ignored, as libdlb drops them.
//! - **Epoll mode** as libdlb implements it: `dlb_enable_cq_epoll` arms the
//!   CQ "interrupt"; while armed, a bridge thread per port watches the
//!   software port and, when events arrive, writes the caller's eventfd once
//!   and disarms; a `dlb_recv` that leaves the CQ empty reads the eventfd and
//!   re-arms only if that read succeeds. A read that fails (the eventfd was
//!   empty) is counted: [`fake_dlb_epoll_read_errors`]; real libdlb prints
//!   an error there and leaves the interrupt as it was.
//!
//! Limitations: `udata16` of load-balanced events is not carried (the fake
//! returns `flow_id` in it; directed events carry it); links cannot change
//! after the start; one software domain holds at most 64 ports in all
//! (load-balanced plus directed).
//!
//! # Test hooks
//! [`fake_dlb_call_log`] returns the calls made on the most recently opened
//! device handle, one per line, with `=-1 (errno)` after a failed one.
//! [`fake_dlb_set_version`], [`fake_dlb_set_limits`] and
//! [`fake_dlb_fail_next`] shape what later calls see. These are process-wide:
//! tests that use them must not run concurrently with each other.
//!
//! Every exported function catches panics and turns them into a failure
//! (`-1` or null, `errno` = `EFAULT`) rather than unwinding into C.
//!
//! Under `--cfg loom` (the software backend's model checks) the crate is
//! empty: the software ports have no readiness fd there.
#![cfg(not(loom))]

pub mod abi;

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use fulcrum_dlb::{Backend, Domain, Event, Port, Sched};

use abi::{CreateLdbQueue, CreatePort, CreateSchedDomain, DevCap, DlbEvent, Resources};

type Errno = c_int;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() = e };
}

fn errno_name(e: c_int) -> &'static str {
    match e {
        libc::EINVAL => "EINVAL",
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::EEXIST => "EEXIST",
        libc::ESRCH => "ESRCH",
        libc::ENOENT => "ENOENT",
        libc::EFAULT => "EFAULT",
        _ => "errno",
    }
}

/// Runs an exported function's body: no unwinding into C, errors become
/// `fail` with `errno` set.
fn ffi<T>(fail: T, body: impl FnOnce() -> Result<T, Errno>) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            set_errno(e);
            fail
        }
        Err(_) => {
            set_errno(libc::EFAULT);
            fail
        }
    }
}

// ---------------------------------------------------------------------------
// Process-wide state.

/// The calls made through one device handle (one `dlb_open`).
#[derive(Default)]
struct Session {
    log: Mutex<Vec<String>>,
}

impl Session {
    fn record<T>(&self, name: &str, r: &Result<T, Errno>) {
        let line = match r {
            Ok(_) => name.to_owned(),
            Err(e) => format!("{name}=-1 ({})", errno_name(*e)),
        };
        lock(&self.log).push(line);
    }
}

/// What the fake device offers; set with the test hooks.
#[derive(Clone, Copy)]
struct Limits {
    /// 2: DLB 2.0 (separate credit pools); 3: DLB 2.5 (combined credits).
    version: c_int,
    ldb_ports: u32,
    dir_ports: u32,
    ldb_queues: u32,
    credits: u32,
}

const DEFAULT_LIMITS: Limits = Limits {
    version: 2,
    ldb_ports: 64,
    dir_ports: 64,
    ldb_queues: 32,
    credits: 8192,
};

struct Global {
    next_handle: usize,
    devices: BTreeMap<usize, Device>,
    domain_handles: BTreeMap<usize, Arc<FakeDomain>>,
    limits: Limits,
    fail_next: Vec<String>,
    last_session: Option<Arc<Session>>,
    last_device: c_int,
}

static GLOBAL: Mutex<Global> = Mutex::new(Global {
    next_handle: 0x1000,
    devices: BTreeMap::new(),
    domain_handles: BTreeMap::new(),
    limits: DEFAULT_LIMITS,
    fail_next: Vec::new(),
    last_session: None,
    last_device: -1,
});

static EPOLL_READ_ERRORS: AtomicU64 = AtomicU64::new(0);

impl Global {
    fn new_handle(&mut self) -> usize {
        let h = self.next_handle;
        self.next_handle += 0x10;
        h
    }

    /// Consumes an injected failure of `name`, if one is pending.
    fn injected(&mut self, name: &str) -> Result<(), Errno> {
        if let Some(i) = self.fail_next.iter().position(|n| n == name) {
            self.fail_next.remove(i);
            return Err(libc::EINVAL);
        }
        Ok(())
    }
}

/// An opened device (`dlb_hdl_t`).
struct Device {
    session: Arc<Session>,
    limits: Limits,
    domains: BTreeMap<c_int, Arc<FakeDomain>>,
    next_domain: c_int,
}

// ---------------------------------------------------------------------------
// Domains and ports.

struct FakeDomain {
    session: Arc<Session>,
    combined: bool,
    cfg: Mutex<DomainCfg>,
}

#[derive(Default)]
struct DomainCfg {
    args: CreateSchedDomain,
    /// Credits of each pool: load-balanced (or combined) and directed.
    ldb_pools: Vec<u32>,
    dir_pools: Vec<u32>,
    ldb_queues: usize,
    ldb_ports: Vec<PortDef>,
    /// Directed port N and directed queue N.
    dir_ports: Vec<DirSlot>,
    handles: usize,
    alert: bool,
    soft: Option<Domain>,
}

struct PortDef {
    cq_depth: u16,
    links: Vec<(u8, u8)>,
    attached: Option<Arc<FakePort>>,
}

#[derive(Default)]
struct DirSlot {
    port: Option<PortDef>,
    queue: bool,
}

/// Numbers the data path needs, fixed at the start.
#[derive(Clone, Copy)]
struct Shape {
    ldb_ports: usize,
    ldb_queues: usize,
    dir_ports: usize,
}

const PORT_MAGIC: u64 = 0x666b_646c_6270_6f72;

/// An attached port (`dlb_port_hdl_t` points at one; never freed, so a
/// stale handle fails cleanly instead of touching freed memory).
struct FakePort {
    magic: u64,
    domain: Arc<FakeDomain>,
    is_ldb: bool,
    index: usize,
    st: Mutex<PortSt>,
    cond: Condvar,
}

#[derive(Default)]
struct PortSt {
    shape: Option<Shape>,
    soft: Option<Port>,
    efd: Option<RawFd>,
    armed: bool,
    disabled: bool,
    detached: bool,
    stop: bool,
    bridge: Option<(JoinHandle<()>, OwnedFd)>,
}

/// The port behind a handle, if the handle is one of ours.
fn port_ref<'a>(hdl: *mut c_void) -> Result<&'a FakePort, Errno> {
    if hdl.is_null() || (hdl as usize) % std::mem::align_of::<FakePort>() != 0 {
        return Err(libc::EINVAL);
    }
    // SAFETY: non-null and aligned; handles are made by `Arc::into_raw` in
    // `attach_port` and never freed, so a handle we issued always points at
    // a live `FakePort`. Anything else is the caller's bug, as with libdlb;
    // the magic check catches the common cases.
    let port = unsafe { &*(hdl as *const FakePort) };
    if port.magic != PORT_MAGIC {
        return Err(libc::EINVAL);
    }
    Ok(port)
}

fn domain_of(g: &Global, hdl: *mut c_void) -> Result<Arc<FakeDomain>, Errno> {
    g.domain_handles
        .get(&(hdl as usize))
        .cloned()
        .ok_or(libc::EINVAL)
}

fn write_eventfd(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64; a bad fd only fails the call.
    let _ = unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

fn read_eventfd(fd: RawFd) -> bool {
    let mut v: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live u64.
    unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) == 8 }
}

/// Watches a software port for deliveries while the CQ "interrupt" is armed
/// and signals the caller's eventfd, like the CQ interrupt does.
fn bridge(port: Arc<FakePort>, soft_fd: RawFd, stop_fd: RawFd) {
    let mut st = lock(&port.st);
    loop {
        while !st.stop && !st.armed {
            st = port.cond.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        if st.stop {
            return;
        }
        let Some(soft) = st.soft.as_mut() else {
            return;
        };
        if !soft.prepare_park() {
            soft.finish_park();
            if let Some(efd) = st.efd {
                write_eventfd(efd);
            }
            st.armed = false;
            continue;
        }
        drop(st);
        let mut fds = [
            libc::pollfd {
                fd: soft_fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop_fd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a live array of two pollfds. EINTR just loops.
        unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        st = lock(&port.st);
        if let Some(soft) = st.soft.as_mut() {
            soft.finish_park();
        }
    }
}

impl FakePort {
    /// Starts the bridge if the port is started, in epoll mode, and has none.
    fn start_bridge(self: &Arc<Self>, st: &mut PortSt) -> Result<(), Errno> {
        if st.bridge.is_some() || st.efd.is_none() || st.disabled {
            return Ok(());
        }
        let Some(soft) = st.soft.as_ref() else {
            return Ok(());
        };
        let soft_fd = soft.readiness_fd();
        // SAFETY: no pointers; the result is checked.
        let stop = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if stop < 0 {
            return Err(libc::EMFILE);
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let stop = unsafe { OwnedFd::from_raw_fd(stop) };
        let stop_fd = stop.as_raw_fd();
        let me = Arc::clone(self);
        let handle = std::thread::Builder::new()
            .name(format!("fake-dlb-cq-{}", self.index))
            .spawn(move || bridge(me, soft_fd, stop_fd))
            .map_err(|_| libc::EAGAIN)?;
        st.stop = false;
        st.bridge = Some((handle, stop));
        Ok(())
    }

    /// Stops the bridge thread, if any, and waits for it.
    fn stop_bridge(&self) {
        let bridge = {
            let mut st = lock(&self.st);
            st.stop = true;
            self.cond.notify_all();
            st.bridge.take()
        };
        if let Some((handle, stop)) = bridge {
            write_eventfd(stop.as_raw_fd());
            let _ = handle.join();
        }
    }

    /// The software port for a data-path call, after libdlb's checks.
    fn data<'a>(&self, st: &'a mut PortSt) -> Result<(&'a mut Port, Shape), Errno> {
        if st.detached {
            return Err(libc::EINVAL);
        }
        let shape = st.shape.ok_or(libc::EPERM)?;
        if st.disabled {
            return Err(libc::EACCES);
        }
        let soft = st.soft.as_mut().ok_or(libc::EPERM)?;
        Ok((soft, shape))
    }
}

// ---------------------------------------------------------------------------
// Device-level functions.

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
fn domain_call<T>(
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
fn port_call<T>(
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

// ---------------------------------------------------------------------------
// Domain configuration.

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

// ---------------------------------------------------------------------------
// Ports: teardown.

/// `int dlb_disable_port(dlb_port_hdl_t hdl)`.
///
/// # Safety
/// `hdl` must be null or a handle this library returned.
#[no_mangle]
pub unsafe extern "C" fn dlb_disable_port(hdl: *mut c_void) -> c_int {
    ffi(-1, || {
        port_call(hdl, "dlb_disable_port", |_, port| {
            if lock(&port.st).detached {
                return Err(libc::EINVAL);
            }
            port.stop_bridge();
            lock(&port.st).disabled = true;
            Ok(0)
        })
    })
}

/// `int dlb_detach_port(dlb_port_hdl_t hdl)`.
///
/// # Safety
/// `hdl` must be null or a handle this library returned; it is not usable
/// afterwards.
#[no_mangle]
pub unsafe extern "C" fn dlb_detach_port(hdl: *mut c_void) -> c_int {
    ffi(-1, || {
        port_call(hdl, "dlb_detach_port", |_, port| {
            if lock(&port.st).detached {
                return Err(libc::EINVAL);
            }
            port.stop_bridge();
            {
                let mut st = lock(&port.st);
                st.detached = true;
                st.soft = None;
                st.efd = None;
            }
            let mut cfg = lock(&port.domain.cfg);
            let def = if port.is_ldb {
                cfg.ldb_ports.get_mut(port.index)
            } else {
                cfg.dir_ports
                    .get_mut(port.index)
                    .and_then(|s| s.port.as_mut())
            };
            if let Some(def) = def {
                def.attached = None;
            }
            Ok(0)
        })
    })
}

// ---------------------------------------------------------------------------
// Data path.

/// `int dlb_send(dlb_port_hdl_t hdl, uint32_t num, dlb_event_t *events)`.
///
/// # Safety
/// `hdl` must be null or a handle this library returned; `events` must be
/// null or point to `num` readable events.
#[no_mangle]
pub unsafe extern "C" fn dlb_send(hdl: *mut c_void, num: u32, events: *mut DlbEvent) -> c_int {
    ffi(-1, || {
        let port = port_ref(hdl)?;
        if events.is_null() {
            return Err(libc::EINVAL);
        }
        // SAFETY: checked non-null; the caller passes `num` readable events.
        let qes = unsafe { std::slice::from_raw_parts(events, num as usize) };
        let mut st = lock(&port.st);
        let (soft, shape) = port.data(&mut st)?;
        let mut batch = Vec::with_capacity(qes.len());
        for &qe in qes {
            let (queue, sched, flow) = match qe.sched_type() {
                abi::SCHED_DIRECTED => {
                    let q = usize::from(qe.queue_id);
                    if q >= shape.dir_ports {
                        return Err(libc::EINVAL);
                    }
                    // Directed events carry `udata16` in the flow slot.
                    (shape.ldb_ports + q, Sched::Directed, qe.udata16)
                }
                abi::SCHED_ORDERED => return Err(libc::EINVAL),
                t => {
                    if usize::from(qe.queue_id) >= shape.ldb_queues {
                        return Err(libc::EINVAL);
                    }
                    let sched = if t == abi::SCHED_ATOMIC {
                        Sched::Atomic
                    } else {
                        Sched::Unordered
                    };
                    (usize::from(qe.queue_id), sched, qe.flow_id)
                }
            };
            batch.push(Event {
                udata: qe.udata64,
                flow,
                queue: u8::try_from(queue).map_err(|_| libc::EINVAL)?,
                sched,
                priority: qe.priority(),
            });
        }
        let sent = soft.send(&batch).map_err(|_| libc::EINVAL)?;
        c_int::try_from(sent).map_err(|_| libc::EINVAL)
    })
}

/// `int dlb_recv(dlb_port_hdl_t hdl, uint32_t max, bool wait, dlb_event_t *events)`.
///
/// # Safety
/// `hdl` must be null or a handle this library returned; `events` must be
/// null or point to room for `max` events.
#[no_mangle]
pub unsafe extern "C" fn dlb_recv(
    hdl: *mut c_void,
    max: u32,
    wait: bool,
    events: *mut DlbEvent,
) -> c_int {
    ffi(-1, || {
        let port = port_ref(hdl)?;
        if events.is_null() {
            return Err(libc::EINVAL);
        }
        let max = (max as usize).min(4096);
        // SAFETY: checked non-null; the caller passes room for `max` events.
        let out = unsafe { std::slice::from_raw_parts_mut(events, max) };
        let mut buf = vec![Event::default(); max];
        loop {
            let mut st = lock(&port.st);
            let (soft, shape) = port.data(&mut st)?;
            let n = soft.recv(&mut buf).map_err(|_| libc::EIO)?;
            if !port.is_ldb && n > 0 {
                // Directed events need no release in libdlb.
                soft.release(n).map_err(|_| libc::EIO)?;
            }
            for (qe, ev) in out.iter_mut().zip(&buf[..n]) {
                *qe = to_qe(ev, shape);
            }
            if n < max {
                // The CQ is empty: libdlb's epoll mode resets the eventfd and
                // re-arms the interrupt, unless the read fails.
                if let Some(efd) = st.efd {
                    if read_eventfd(efd) {
                        st.armed = true;
                        port.cond.notify_all();
                    } else {
                        EPOLL_READ_ERRORS.fetch_add(1, SeqCst);
                    }
                }
            }
            if n > 0 || !wait || max == 0 {
                return c_int::try_from(n).map_err(|_| libc::EINVAL);
            }
            drop(st);
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
    })
}

fn to_qe(ev: &Event, shape: Shape) -> DlbEvent {
    if ev.sched == Sched::Directed {
        DlbEvent {
            udata64: ev.udata,
            udata16: ev.flow,
            queue_id: (usize::from(ev.queue) - shape.ldb_ports.min(usize::from(ev.queue))) as u8,
            sched_prio: DlbEvent::pack(abi::SCHED_DIRECTED, ev.priority),
            flow_id: 0,
            meta0: 0,
            meta1: 0,
        }
    } else {
        DlbEvent {
            udata64: ev.udata,
            udata16: ev.flow,
            queue_id: ev.queue,
            sched_prio: DlbEvent::pack(ev.sched as u8, ev.priority),
            flow_id: ev.flow,
            meta0: 0,
            meta1: 0,
        }
    }
}

/// `int dlb_release(dlb_port_hdl_t hdl, uint32_t num)`.
///
/// # Safety
/// `hdl` must be null or a handle this library returned.
#[no_mangle]
pub unsafe extern "C" fn dlb_release(hdl: *mut c_void, num: u32) -> c_int {
    ffi(-1, || {
        let port = port_ref(hdl)?;
        let mut st = lock(&port.st);
        let (soft, _) = port.data(&mut st)?;
        if !port.is_ldb {
            return c_int::try_from(num).map_err(|_| libc::EINVAL);
        }
        let n = soft.release(num as usize).map_err(|_| libc::EIO)?;
        c_int::try_from(n).map_err(|_| libc::EINVAL)
    })
}

// ---------------------------------------------------------------------------
// Test hooks.

/// Copies the call log of the most recently opened device handle into
/// `buf` (one call per line, NUL-terminated if it fits) and returns its full
/// length in bytes, without the NUL.
///
/// # Safety
/// `buf` must be null or valid for writing `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn fake_dlb_call_log(buf: *mut c_char, len: usize) -> usize {
    ffi(0, || {
        let session = lock(&GLOBAL).last_session.clone();
        let text = session.map_or_else(String::new, |s| lock(&s.log).join("\n"));
        if !buf.is_null() && len > 0 {
            let n = text.len().min(len - 1);
            // SAFETY: `buf` has room for `len` > n bytes; the source is live.
            unsafe {
                std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
                *buf.add(n) = 0;
            }
        }
        Ok(text.len())
    })
}

/// Makes later `dlb_open`s report a DLB 2.0 device (`2`: separate
/// load-balanced and directed credit pools) or a DLB 2.5 device (`3`:
/// combined credits). Returns the previous version.
///
/// # Safety
/// Safe to call with any value.
#[no_mangle]
pub unsafe extern "C" fn fake_dlb_set_version(version: c_int) -> c_int {
    ffi(-1, || {
        let mut g = lock(&GLOBAL);
        let old = g.limits.version;
        g.limits.version = version;
        Ok(old)
    })
}

/// Sets the resources later `dlb_open`s report: load-balanced ports,
/// directed ports, load-balanced queues and (load-balanced or combined)
/// credits. Zeros restore the defaults (64, 64, 32, 8192).
///
/// # Safety
/// Safe to call with any values.
#[no_mangle]
pub unsafe extern "C" fn fake_dlb_set_limits(
    ldb_ports: u32,
    dir_ports: u32,
    ldb_queues: u32,
    credits: u32,
) {
    ffi((), || {
        let mut g = lock(&GLOBAL);
        let or = |v: u32, d: u32| if v == 0 { d } else { v };
        g.limits.ldb_ports = or(ldb_ports, DEFAULT_LIMITS.ldb_ports);
        g.limits.dir_ports = or(dir_ports, DEFAULT_LIMITS.dir_ports);
        g.limits.ldb_queues = or(ldb_queues, DEFAULT_LIMITS.ldb_queues);
        g.limits.credits = or(credits, DEFAULT_LIMITS.credits);
        Ok(())
    })
}

/// Makes the next call of the libdlb function `name` fail (`-1` or null,
/// `errno` = `EINVAL`). Returns 0, or -1 if `name` is not a C string.
///
/// # Safety
/// `name` must be null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn fake_dlb_fail_next(name: *const c_char) -> c_int {
    ffi(-1, || {
        if name.is_null() {
            return Err(libc::EINVAL);
        }
        // SAFETY: checked non-null; the caller passes a C string.
        let name = unsafe { CStr::from_ptr(name) }
            .to_str()
            .map_err(|_| libc::EINVAL)?;
        lock(&GLOBAL).fail_next.push(name.to_owned());
        Ok(0)
    })
}

/// How many times a `dlb_recv` emptied a CQ in epoll mode while its eventfd
/// was unreadable (where real libdlb prints an error and does not re-arm):
/// a caller that only receives when the eventfd says so never causes one.
#[no_mangle]
pub extern "C" fn fake_dlb_epoll_read_errors() -> u64 {
    EPOLL_READ_ERRORS.load(SeqCst)
}

/// The device id passed to the most recent `dlb_open`, or -1.
#[no_mangle]
pub extern "C" fn fake_dlb_last_device() -> c_int {
    ffi(-1, || Ok(lock(&GLOBAL).last_device))
}
