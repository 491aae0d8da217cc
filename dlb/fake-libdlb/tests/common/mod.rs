//! Shared helpers: where the fake library is, fake device directories, and
//! the fake's test hooks.
#![allow(dead_code)]

use std::ffi::{c_char, c_int, c_void, CString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use fulcrum_dlb::{Backend, DomainBuilder};

/// `libfake_libdlb.so`, built by cargo next to this test executable (in
/// `target/<profile>/` or its `deps/`).
pub fn fake_lib() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let deps = exe.parent().expect("the executable is in a directory");
    let candidates = [
        deps.parent().map(|p| p.join("libfake_libdlb.so")),
        Some(deps.join("libfake_libdlb.so")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("libfake_libdlb.so not found near {}", exe.display()))
}

/// A fresh directory holding empty files named after `devices` (e.g.
/// `dlb0`); removed on drop.
pub struct DevDir(PathBuf);

impl DevDir {
    pub fn new(devices: &[&str]) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fulcrum-fake-dlb-{}-{}",
            std::process::id(),
            N.fetch_add(1, Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the fake device directory");
        for d in devices {
            std::fs::write(dir.join(d), b"").expect("create a fake device node");
        }
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for DevDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A builder for the hardware backend on device 0 of `dev`, over the fake.
pub fn hw_builder(dev: &DevDir) -> DomainBuilder {
    fulcrum_dlb::Domain::builder()
        .backend(Backend::Hardware { device: 0 })
        .ignore_env()
        .library_path(fake_lib())
        .device_dir(dev.path())
}

/// The fake's test hooks, reached through `dlopen` of the same library the
/// hardware backend loads (so the same instance and the same state).
pub struct Hooks {
    handle: *mut c_void,
}

impl Hooks {
    pub fn open() -> Self {
        let path = CString::new(fake_lib().into_os_string().into_encoded_bytes())
            .expect("no NUL in the path");
        // SAFETY: a live C string and valid flags; the result is checked.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!handle.is_null(), "dlopen of the fake library failed");
        Self { handle }
    }

    fn sym(&self, name: &str) -> *mut c_void {
        let c = CString::new(name).expect("no NUL in the name");
        // SAFETY: `handle` is a live dlopen handle; `c` is a C string.
        let f = unsafe { libc::dlsym(self.handle, c.as_ptr()) };
        assert!(!f.is_null(), "the fake library lacks {name}");
        f
    }

    /// The calls of the most recent `dlb_open`, in order.
    pub fn call_log(&self) -> Vec<String> {
        type F = unsafe extern "C" fn(*mut c_char, usize) -> usize;
        // SAFETY: the fake defines this symbol with exactly this signature.
        let f: F = unsafe { std::mem::transmute::<*mut c_void, F>(self.sym("fake_dlb_call_log")) };
        // SAFETY: a null buffer only asks for the length.
        let len = unsafe { f(std::ptr::null_mut(), 0) };
        let mut buf = vec![0u8; len + 1];
        // SAFETY: `buf` has room for `len + 1` bytes.
        unsafe { f(buf.as_mut_ptr().cast(), buf.len()) };
        buf.truncate(len);
        let text = String::from_utf8(buf).expect("the log is UTF-8");
        text.lines().map(str::to_owned).collect()
    }

    pub fn set_version(&self, version: c_int) {
        type F = unsafe extern "C" fn(c_int) -> c_int;
        // SAFETY: the fake defines this symbol with exactly this signature.
        let f: F =
            unsafe { std::mem::transmute::<*mut c_void, F>(self.sym("fake_dlb_set_version")) };
        // SAFETY: any value is accepted.
        unsafe { f(version) };
    }

    pub fn set_limits(&self, ldb_ports: u32, dir_ports: u32, ldb_queues: u32, credits: u32) {
        type F = unsafe extern "C" fn(u32, u32, u32, u32);
        // SAFETY: the fake defines this symbol with exactly this signature.
        let f: F =
            unsafe { std::mem::transmute::<*mut c_void, F>(self.sym("fake_dlb_set_limits")) };
        // SAFETY: any values are accepted.
        unsafe { f(ldb_ports, dir_ports, ldb_queues, credits) };
    }

    pub fn fail_next(&self, call: &str) {
        type F = unsafe extern "C" fn(*const c_char) -> c_int;
        // SAFETY: the fake defines this symbol with exactly this signature.
        let f: F = unsafe { std::mem::transmute::<*mut c_void, F>(self.sym("fake_dlb_fail_next")) };
        let c = CString::new(call).expect("no NUL in the name");
        // SAFETY: `c` is a live C string.
        assert_eq!(unsafe { f(c.as_ptr()) }, 0);
    }

    pub fn epoll_read_errors(&self) -> u64 {
        type F = extern "C" fn() -> u64;
        // SAFETY: the fake defines this symbol with exactly this signature.
        let f: F = unsafe {
            std::mem::transmute::<*mut c_void, F>(self.sym("fake_dlb_epoll_read_errors"))
        };
        f()
    }

    pub fn last_device(&self) -> c_int {
        type F = extern "C" fn() -> c_int;
        // SAFETY: the fake defines this symbol with exactly this signature.
        let f: F =
            unsafe { std::mem::transmute::<*mut c_void, F>(self.sym("fake_dlb_last_device")) };
        f()
    }
}

impl Drop for Hooks {
    fn drop(&mut self) {
        // SAFETY: a live handle from dlopen, closed once; the backend holds
        // its own reference, so the library stays loaded while in use.
        unsafe { libc::dlclose(self.handle) };
    }
}
