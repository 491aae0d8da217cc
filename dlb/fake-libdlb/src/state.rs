//! Process-wide state: the opened devices and domain handles, the limits
//! the test hooks set, and the call log of each device handle.

use std::collections::BTreeMap;
use std::ffi::c_int;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use crate::domain::FakeDomain;
use crate::{errno_name, lock, Errno};

/// The calls made through one device handle (one `dlb_open`).
#[derive(Default)]
pub(crate) struct Session {
    pub(crate) log: Mutex<Vec<String>>,
}

impl Session {
    pub(crate) fn record<T>(&self, name: &str, r: &Result<T, Errno>) {
        let line = match r {
            Ok(_) => name.to_owned(),
            Err(e) => format!("{name}=-1 ({})", errno_name(*e)),
        };
        lock(&self.log).push(line);
    }
}

/// What the fake device offers; set with the test hooks.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    /// 2: DLB 2.0 (separate credit pools); 3: DLB 2.5 (combined credits).
    pub(crate) version: c_int,
    pub(crate) ldb_ports: u32,
    pub(crate) dir_ports: u32,
    pub(crate) ldb_queues: u32,
    pub(crate) credits: u32,
}

pub(crate) const DEFAULT_LIMITS: Limits = Limits {
    version: 2,
    ldb_ports: 64,
    dir_ports: 64,
    ldb_queues: 32,
    credits: 8192,
};

pub(crate) struct Global {
    next_handle: usize,
    pub(crate) devices: BTreeMap<usize, Device>,
    pub(crate) domain_handles: BTreeMap<usize, Arc<FakeDomain>>,
    pub(crate) limits: Limits,
    pub(crate) fail_next: Vec<String>,
    pub(crate) last_session: Option<Arc<Session>>,
    pub(crate) last_device: c_int,
}

pub(crate) static GLOBAL: Mutex<Global> = Mutex::new(Global {
    next_handle: 0x1000,
    devices: BTreeMap::new(),
    domain_handles: BTreeMap::new(),
    limits: DEFAULT_LIMITS,
    fail_next: Vec::new(),
    last_session: None,
    last_device: -1,
});

pub(crate) static EPOLL_READ_ERRORS: AtomicU64 = AtomicU64::new(0);

impl Global {
    pub(crate) fn new_handle(&mut self) -> usize {
        let h = self.next_handle;
        self.next_handle += 0x10;
        h
    }

    /// Consumes an injected failure of `name`, if one is pending.
    pub(crate) fn injected(&mut self, name: &str) -> Result<(), Errno> {
        if let Some(i) = self.fail_next.iter().position(|n| n == name) {
            self.fail_next.remove(i);
            return Err(libc::EINVAL);
        }
        Ok(())
    }
}

/// An opened device (`dlb_hdl_t`).
pub(crate) struct Device {
    pub(crate) session: Arc<Session>,
    pub(crate) limits: Limits,
    pub(crate) domains: BTreeMap<c_int, Arc<FakeDomain>>,
    pub(crate) next_domain: c_int,
}
