//! Domains and ports: what setup records, and the bridge thread that plays
//! a CQ interrupt in epoll mode.

use std::ffi::c_void;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use fulcrum_dlb::{Domain, Port};

use crate::abi::CreateSchedDomain;
use crate::state::{Global, Session};
use crate::{lock, Errno};

pub(crate) struct FakeDomain {
    pub(crate) session: Arc<Session>,
    pub(crate) combined: bool,
    pub(crate) cfg: Mutex<DomainCfg>,
}

#[derive(Default)]
pub(crate) struct DomainCfg {
    pub(crate) args: CreateSchedDomain,
    /// Credits of each pool: load-balanced (or combined) and directed.
    pub(crate) ldb_pools: Vec<u32>,
    pub(crate) dir_pools: Vec<u32>,
    pub(crate) ldb_queues: usize,
    pub(crate) ldb_ports: Vec<PortDef>,
    /// Directed port N and directed queue N.
    pub(crate) dir_ports: Vec<DirSlot>,
    pub(crate) handles: usize,
    pub(crate) alert: bool,
    pub(crate) soft: Option<Domain>,
}

pub(crate) struct PortDef {
    pub(crate) cq_depth: u16,
    pub(crate) links: Vec<(u8, u8)>,
    pub(crate) attached: Option<Arc<FakePort>>,
}

#[derive(Default)]
pub(crate) struct DirSlot {
    pub(crate) port: Option<PortDef>,
    pub(crate) queue: bool,
}

/// Numbers the data path needs, fixed at the start.
#[derive(Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) ldb_ports: usize,
    pub(crate) ldb_queues: usize,
    pub(crate) dir_ports: usize,
}

pub(crate) const PORT_MAGIC: u64 = 0x666b_646c_6270_6f72;

/// An attached port (`dlb_port_hdl_t` points at one; never freed, so a
/// stale handle fails cleanly instead of touching freed memory).
pub(crate) struct FakePort {
    pub(crate) magic: u64,
    pub(crate) domain: Arc<FakeDomain>,
    pub(crate) is_ldb: bool,
    pub(crate) index: usize,
    pub(crate) st: Mutex<PortSt>,
    pub(crate) cond: Condvar,
}

#[derive(Default)]
pub(crate) struct PortSt {
    pub(crate) shape: Option<Shape>,
    pub(crate) soft: Option<Port>,
    pub(crate) efd: Option<RawFd>,
    pub(crate) armed: bool,
    pub(crate) disabled: bool,
    pub(crate) detached: bool,
    stop: bool,
    pub(crate) bridge: Option<(JoinHandle<()>, OwnedFd)>,
}

/// The port behind a handle, if the handle is one of ours.
pub(crate) fn port_ref<'a>(hdl: *mut c_void) -> Result<&'a FakePort, Errno> {
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

pub(crate) fn domain_of(g: &Global, hdl: *mut c_void) -> Result<Arc<FakeDomain>, Errno> {
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

pub(crate) fn read_eventfd(fd: RawFd) -> bool {
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
    pub(crate) fn start_bridge(self: &Arc<Self>, st: &mut PortSt) -> Result<(), Errno> {
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
    pub(crate) fn stop_bridge(&self) {
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
    pub(crate) fn data<'a>(&self, st: &'a mut PortSt) -> Result<(&'a mut Port, Shape), Errno> {
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
