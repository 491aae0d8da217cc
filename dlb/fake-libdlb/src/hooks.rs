//! Test hooks: the call log, and the knobs that shape what later calls see.

use std::ffi::{c_char, c_int, CStr};
use std::sync::atomic::Ordering::SeqCst;

use crate::state::{DEFAULT_LIMITS, EPOLL_READ_ERRORS, GLOBAL};
use crate::{ffi, lock};

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
