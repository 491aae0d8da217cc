//! The data path: send, receive and release.

use std::ffi::{c_int, c_void};
use std::sync::atomic::Ordering::SeqCst;

use fulcrum_dlb::{Event, Sched};

use crate::abi::{self, DlbEvent};
use crate::domain::{port_ref, read_eventfd, Shape};
use crate::state::EPOLL_READ_ERRORS;
use crate::{ffi, lock};

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
