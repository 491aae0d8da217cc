//! The C side of libdlb: its types, laid out as `dlb.h` / `dlb_common.h` lay
//! them out on x86-64 Linux, and the table of its functions, resolved with
//! `dlopen`/`dlsym` when a domain is opened.
//!
//! # Layouts
//! The layouts follow the libdlb release that supports both DLB 2.0 and
//! DLB 2.5 (the one with `combined_credits`, port classes of service and
//! `producer_coremask`). Every struct has a compile-time size, alignment and
//! offset check below, so a mismatch is a build error, not memory corruption.
//! Input structs that grew at their end across releases (the sched-domain
//! arguments) are passed zero-filled at their largest size: an older library
//! reads a prefix of them.

use std::ffi::{c_int, c_void, CStr, CString};
use std::mem::{align_of, offset_of, size_of};
use std::path::{Path, PathBuf};

use crate::DlbError;

/// `dlb_hdl_t`: an opened device.
pub(crate) type DlbHdl = *mut c_void;
/// `dlb_domain_hdl_t`: an attached scheduling domain.
pub(crate) type DomainHdl = *mut c_void;
/// `dlb_port_hdl_t`: an attached port.
pub(crate) type PortHdl = *mut c_void;

/// `enum dlb_event_sched_t`.
pub(crate) const SCHED_ATOMIC: u8 = 0;
/// `SCHED_UNORDERED`.
pub(crate) const SCHED_UNORDERED: u8 = 1;
/// `SCHED_DIRECTED`.
pub(crate) const SCHED_DIRECTED: u8 = 3;

/// `DLB_PORT_COS_ID_ANY` of `dlb_port_cos_ids_t`.
pub(crate) const PORT_COS_ID_ANY: c_int = 4;

/// `dlb_dev_cap_t`: a 64-bit word of one-bit flags, lowest bit first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DevCap {
    pub(crate) bits: u64,
}

impl DevCap {
    /// Bit 0: the device fills `flow_id` in dequeued load-balanced events.
    pub(crate) fn ldb_deq_event_fid(self) -> bool {
        self.bits & 1 != 0
    }

    /// Bit 4: one credit pool serves both load-balanced and directed
    /// enqueues (DLB 2.5).
    pub(crate) fn combined_credits(self) -> bool {
        self.bits & (1 << 4) != 0
    }
}

/// `dlb_resources_t`. The union in the middle holds either the DLB 2.0
/// credit counts (six words) or the combined ones (`num_credits`,
/// `num_credit_pools`, overlaying the first two words).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Resources {
    pub(crate) num_sched_domains: u32,
    pub(crate) num_ldb_queues: u32,
    pub(crate) num_ldb_ports: u32,
    pub(crate) num_ldb_ports_per_cos: [u32; 4],
    pub(crate) num_dir_ports: u32,
    pub(crate) num_ldb_event_state_entries: u32,
    pub(crate) max_contiguous_ldb_event_state_entries: u32,
    /// DLB 2.0: `num_ldb_credits`, `max_contiguous_ldb_credits`,
    /// `num_dir_credits`, `max_contiguous_dir_credits`,
    /// `num_ldb_credit_pools`, `num_dir_credit_pools`.
    /// DLB 2.5: `num_credits`, `num_credit_pools`, then unused.
    pub(crate) credits: [u32; 6],
    pub(crate) num_sn_slots: [u32; 2],
}

impl Resources {
    pub(crate) fn max_contiguous_ldb_credits(&self) -> u32 {
        self.credits[1]
    }
    pub(crate) fn max_contiguous_dir_credits(&self) -> u32 {
        self.credits[3]
    }
    pub(crate) fn num_credits(&self) -> u32 {
        self.credits[0]
    }
}

/// `dlb_create_sched_domain_t`. `credits` is the union: DLB 2.0
/// `num_ldb_credits`, `num_dir_credits`, `num_ldb_credit_pools`,
/// `num_dir_credit_pools`; DLB 2.5 `num_credits`, `num_credit_pools`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CreateSchedDomain {
    pub(crate) num_ldb_queues: u32,
    pub(crate) num_ldb_ports: u32,
    pub(crate) num_dir_ports: u32,
    pub(crate) num_ldb_event_state_entries: u32,
    pub(crate) num_sn_slots: [u32; 2],
    pub(crate) credits: [u32; 4],
    pub(crate) producer_coremask: [u64; 2],
}

/// `dlb_create_ldb_queue_t`. Zero sequence numbers: the queue schedules
/// atomic and unordered events.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CreateLdbQueue {
    pub(crate) num_sequence_numbers: u32,
    pub(crate) lock_id_comp_level: u32,
}

/// `dlb_create_port_t`. `pools` is the union: DLB 2.0
/// `ldb_credit_pool_id`, `dir_credit_pool_id`; DLB 2.5 `credit_pool_id`.
/// `cos_id` shares its slot with the directed ports' `bool is_producer`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CreatePort {
    pub(crate) pools: [u32; 2],
    pub(crate) cq_depth: u16,
    pub(crate) num_ldb_event_state_entries: u32,
    pub(crate) cos_id: c_int,
}

/// `dlb_alert_t`, handed to the domain alert callback.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Alert {
    pub(crate) id: c_int,
    pub(crate) data: u64,
}

/// `DLB_ALERT_DEVICE_RESET`.
pub(crate) const ALERT_DEVICE_RESET: c_int = 0;
/// `DLB_ALERT_DOMAIN_RESET`.
pub(crate) const ALERT_DOMAIN_RESET: c_int = 1;

/// `domain_alert_callback_t`.
pub(crate) type AlertCallback =
    unsafe extern "C" fn(alert: *mut Alert, domain_id: c_int, arg: *mut c_void);

/// `dlb_event_t`: the 16-byte queue element, a union of packed structs
/// (`dlb_send_t`, `dlb_recv_t`, `dlb_adv_send_t`) with one layout:
///
/// | bytes | send | recv |
/// |---|---|---|
/// | 0..8 | `udata64` | `udata64` |
/// | 8..10 | `udata16` | `udata16` |
/// | 10 | `queue_id` | `queue_id` |
/// | 11 | `sched_type:2, priority:3, rsvd:3` | same |
/// | 12..14 | `flow_id` | `flow_id` |
/// | 14 | `rsvd:1, weight:2, rsvd:5` | reserved |
/// | 15 | reserved | `rsvd:5, error:1, rsvd:2` |
///
/// GCC on x86-64 allocates bit-fields from the least significant bit.
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
pub(crate) struct DlbEvent {
    pub(crate) udata64: u64,
    pub(crate) udata16: u16,
    pub(crate) queue_id: u8,
    /// `sched_type` in bits 0-1, `priority` in bits 2-4.
    pub(crate) sched_prio: u8,
    pub(crate) flow_id: u16,
    /// Send: `weight` in bits 1-2. Receive: reserved.
    pub(crate) meta0: u8,
    /// Receive: `error` in bit 5.
    pub(crate) meta1: u8,
}

impl DlbEvent {
    pub(crate) fn sched_type(self) -> u8 {
        self.sched_prio & 0b11
    }
    pub(crate) fn priority(self) -> u8 {
        (self.sched_prio >> 2) & 0b111
    }
    pub(crate) fn error(self) -> bool {
        self.meta1 & (1 << 5) != 0
    }
    pub(crate) fn pack_sched_prio(sched: u8, priority: u8) -> u8 {
        (sched & 0b11) | ((priority & 0b111) << 2)
    }
}

impl std::fmt::Debug for DlbEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (udata64, udata16, flow_id) = (self.udata64, self.udata16, self.flow_id);
        f.debug_struct("DlbEvent")
            .field("udata64", &format_args!("{udata64:#x}"))
            .field("udata16", &udata16)
            .field("queue_id", &self.queue_id)
            .field("sched_type", &self.sched_type())
            .field("priority", &self.priority())
            .field("flow_id", &flow_id)
            .field("error", &self.error())
            .finish()
    }
}

// The layouts, checked at compile time.
const _: () = {
    assert!(size_of::<DlbEvent>() == 16 && align_of::<DlbEvent>() == 1);
    assert!(offset_of!(DlbEvent, udata16) == 8);
    assert!(offset_of!(DlbEvent, queue_id) == 10);
    assert!(offset_of!(DlbEvent, sched_prio) == 11);
    assert!(offset_of!(DlbEvent, flow_id) == 12);
    assert!(offset_of!(DlbEvent, meta1) == 15);
    assert!(size_of::<DevCap>() == 8);
    assert!(size_of::<Resources>() == 72 && align_of::<Resources>() == 4);
    assert!(offset_of!(Resources, num_dir_ports) == 28);
    assert!(offset_of!(Resources, credits) == 40);
    assert!(offset_of!(Resources, num_sn_slots) == 64);
    assert!(size_of::<CreateSchedDomain>() == 56 && align_of::<CreateSchedDomain>() == 8);
    assert!(offset_of!(CreateSchedDomain, credits) == 24);
    assert!(offset_of!(CreateSchedDomain, producer_coremask) == 40);
    assert!(size_of::<CreateLdbQueue>() == 8);
    assert!(size_of::<CreatePort>() == 20 && align_of::<CreatePort>() == 4);
    assert!(offset_of!(CreatePort, cq_depth) == 8);
    assert!(offset_of!(CreatePort, num_ldb_event_state_entries) == 12);
    assert!(offset_of!(CreatePort, cos_id) == 16);
    assert!(size_of::<Alert>() == 16 && offset_of!(Alert, data) == 8);
};

/// Declares the function table: one field per libdlb function, and a
/// loader that resolves all of them (a missing one is an error).
macro_rules! dlb_functions {
    ($( $name:ident : fn($($arg:ty),*) -> $ret:ty; )*) => {
        /// libdlb, loaded: the library handle and every function the backend
        /// calls. Dropping it `dlclose`s the library, so it must outlive
        /// every handle obtained through it.
        pub(crate) struct Lib {
            handle: *mut c_void,
            path: PathBuf,
            $( pub(crate) $name: unsafe extern "C" fn($($arg),*) -> $ret, )*
        }

        impl Lib {
            /// `dlopen`s `path` (a bare name goes through the loader's search
            /// path) and resolves every function up front.
            pub(crate) fn load(path: &Path) -> Result<Self, DlbError> {
                let handle = open(path)?;
                let lib = Self {
                    handle,
                    path: path.to_owned(),
                    $(
                        // SAFETY: `sym` returned a non-null address of the
                        // exported symbol `$name`; libdlb defines it with
                        // exactly this C signature (see `dlb.h`), so the
                        // transmute only gives the address its real type.
                        $name: unsafe {
                            std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($arg),*) -> $ret>(
                                sym(handle, path, stringify!($name))?,
                            )
                        },
                    )*
                };
                Ok(lib)
            }
        }
    };
}

dlb_functions! {
    dlb_open: fn(c_int, *mut DlbHdl) -> c_int;
    dlb_close: fn(DlbHdl) -> c_int;
    dlb_get_dev_capabilities: fn(DlbHdl, *mut DevCap) -> c_int;
    dlb_get_num_resources: fn(DlbHdl, *mut Resources) -> c_int;
    dlb_create_sched_domain: fn(DlbHdl, *mut CreateSchedDomain) -> c_int;
    dlb_attach_sched_domain: fn(DlbHdl, c_int) -> DomainHdl;
    dlb_detach_sched_domain: fn(DomainHdl) -> c_int;
    dlb_reset_sched_domain: fn(DlbHdl, c_int) -> c_int;
    dlb_create_ldb_credit_pool: fn(DomainHdl, c_int) -> c_int;
    dlb_create_dir_credit_pool: fn(DomainHdl, c_int) -> c_int;
    dlb_create_credit_pool: fn(DomainHdl, c_int) -> c_int;
    dlb_create_ldb_queue: fn(DomainHdl, *mut CreateLdbQueue) -> c_int;
    dlb_create_dir_queue: fn(DomainHdl, c_int) -> c_int;
    dlb_create_ldb_port: fn(DomainHdl, *mut CreatePort) -> c_int;
    dlb_create_dir_port: fn(DomainHdl, *mut CreatePort, c_int) -> c_int;
    dlb_attach_ldb_port: fn(DomainHdl, c_int) -> PortHdl;
    dlb_attach_dir_port: fn(DomainHdl, c_int) -> PortHdl;
    dlb_link_queue: fn(PortHdl, c_int, c_int) -> c_int;
    dlb_enable_cq_epoll: fn(PortHdl, bool, c_int) -> c_int;
    dlb_launch_domain_alert_thread: fn(DomainHdl, Option<AlertCallback>, *mut c_void) -> c_int;
    dlb_start_sched_domain: fn(DomainHdl) -> c_int;
    dlb_send: fn(PortHdl, u32, *mut DlbEvent) -> c_int;
    dlb_recv: fn(PortHdl, u32, bool, *mut DlbEvent) -> c_int;
    dlb_release: fn(PortHdl, u32) -> c_int;
    dlb_disable_port: fn(PortHdl) -> c_int;
    dlb_detach_port: fn(PortHdl) -> c_int;
}

impl Lib {
    /// Where the library was loaded from (or the name given to the loader).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl std::fmt::Debug for Lib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lib").field("path", &self.path).finish()
    }
}

impl Drop for Lib {
    fn drop(&mut self) {
        // SAFETY: `handle` came from a successful dlopen and is closed once;
        // the owner guarantees that no handle or pointer into the library is
        // used after this (see the type's docs).
        unsafe { libc::dlclose(self.handle) };
    }
}

/// The loader's last error message, or `fallback` if it has none.
fn dl_error(fallback: &str) -> String {
    // SAFETY: dlerror takes no arguments; it returns null or a C string that
    // stays valid until the next dl* call on this thread, and it is copied
    // out before any.
    let msg = unsafe { libc::dlerror() };
    if msg.is_null() {
        fallback.to_owned()
    } else {
        // SAFETY: non-null, NUL-terminated, live until the next dl* call.
        unsafe { CStr::from_ptr(msg) }
            .to_string_lossy()
            .into_owned()
    }
}

fn open(path: &Path) -> Result<*mut c_void, DlbError> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| DlbError::Library {
        path: path.to_owned(),
        reason: "the path contains a NUL byte".to_owned(),
    })?;
    // Clear any stale message so that the one read below is ours.
    // SAFETY: no arguments; the returned pointer is ignored.
    unsafe { libc::dlerror() };
    // SAFETY: `c_path` is a live NUL-terminated string; the flags are valid.
    let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(DlbError::Library {
            path: path.to_owned(),
            reason: dl_error("dlopen failed"),
        });
    }
    Ok(handle)
}

/// Resolves `name`; on failure closes `handle` (the caller gives up on it).
fn sym(handle: *mut c_void, path: &Path, name: &str) -> Result<*mut c_void, DlbError> {
    let fail = |reason: String| {
        // SAFETY: `handle` is a live dlopen handle that the caller abandons
        // on this error; nothing from it was used.
        unsafe { libc::dlclose(handle) };
        DlbError::Library {
            path: path.to_owned(),
            reason,
        }
    };
    let c_name = CString::new(name).map_err(|_| fail(format!("bad symbol name {name:?}")))?;
    // SAFETY: no arguments; clears the pending error message.
    unsafe { libc::dlerror() };
    // SAFETY: `handle` is live, `c_name` is a NUL-terminated string.
    let addr = unsafe { libc::dlsym(handle, c_name.as_ptr()) };
    if addr.is_null() {
        return Err(fail(dl_error(&format!("symbol {name} not found"))));
    }
    Ok(addr)
}

// SAFETY: the library handle and function pointers are process-wide and
// immutable; libdlb's device- and domain-level functions are MT-safe per
// `dlb.h`, and the port data-path functions are only called by the single
// owner of each port (enforced by `HwPort` being `!Sync` and handed out once).
unsafe impl Send for Lib {}
// SAFETY: see `Send`: `Lib` is never mutated after `load`.
unsafe impl Sync for Lib {}

/// `errno` as left by the last failed call on this thread.
pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
