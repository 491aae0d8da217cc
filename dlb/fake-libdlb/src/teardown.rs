//! Ports: teardown (disable and detach).

use std::ffi::{c_int, c_void};

use crate::device::port_call;
use crate::{ffi, lock};

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
