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

mod config;
mod datapath;
mod device;
mod domain;
mod hooks;
mod state;
mod teardown;

use std::ffi::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard, PoisonError};

// The exported libdlb functions and test hooks, at the crate root.
pub use config::*;
pub use datapath::*;
pub use device::*;
pub use hooks::*;
pub use teardown::*;

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
