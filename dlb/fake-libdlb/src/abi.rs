//! The C types of libdlb's API (`dlb.h`, `dlb_common.h`) as this fake sees
//! them: the layouts of the x86-64 Linux build, checked at compile time.

use std::ffi::c_int;
use std::mem::{align_of, offset_of, size_of};

/// `SCHED_ATOMIC`.
pub const SCHED_ATOMIC: u8 = 0;
/// `SCHED_UNORDERED`.
pub const SCHED_UNORDERED: u8 = 1;
/// `SCHED_ORDERED` (refused: the fake's queues have no sequence numbers).
pub const SCHED_ORDERED: u8 = 2;
/// `SCHED_DIRECTED`.
pub const SCHED_DIRECTED: u8 = 3;

/// `dlb_dev_cap_t`: one-bit flags, lowest bit first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DevCap {
    /// Bit 0 `ldb_deq_event_fid`, bit 1 `port_cos`, bit 2 `queue_dt`, bit 3
    /// `lock_id_comp`, bit 4 `combined_credits`, bit 5 `qe_weight`, bit 6
    /// `op_frag`.
    pub bits: u64,
}

/// `ldb_deq_event_fid` flag of [`DevCap`].
pub const CAP_LDB_DEQ_EVENT_FID: u64 = 1 << 0;
/// `combined_credits` flag of [`DevCap`].
pub const CAP_COMBINED_CREDITS: u64 = 1 << 4;

/// `dlb_resources_t`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Resources {
    /// `num_sched_domains`.
    pub num_sched_domains: u32,
    /// `num_ldb_queues`.
    pub num_ldb_queues: u32,
    /// `num_ldb_ports`.
    pub num_ldb_ports: u32,
    /// `num_ldb_ports_per_cos`.
    pub num_ldb_ports_per_cos: [u32; 4],
    /// `num_dir_ports`.
    pub num_dir_ports: u32,
    /// `num_ldb_event_state_entries`.
    pub num_ldb_event_state_entries: u32,
    /// `max_contiguous_ldb_event_state_entries`.
    pub max_contiguous_ldb_event_state_entries: u32,
    /// The credit union: DLB 2.0 `num_ldb_credits`,
    /// `max_contiguous_ldb_credits`, `num_dir_credits`,
    /// `max_contiguous_dir_credits`, `num_ldb_credit_pools`,
    /// `num_dir_credit_pools`; DLB 2.5 `num_credits`, `num_credit_pools`.
    pub credits: [u32; 6],
    /// `num_sn_slots`.
    pub num_sn_slots: [u32; 2],
}

/// `dlb_create_sched_domain_t`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CreateSchedDomain {
    /// `num_ldb_queues`.
    pub num_ldb_queues: u32,
    /// `num_ldb_ports`.
    pub num_ldb_ports: u32,
    /// `num_dir_ports`.
    pub num_dir_ports: u32,
    /// `num_ldb_event_state_entries`.
    pub num_ldb_event_state_entries: u32,
    /// `num_sn_slots`.
    pub num_sn_slots: [u32; 2],
    /// The credit union: DLB 2.0 `num_ldb_credits`, `num_dir_credits`,
    /// `num_ldb_credit_pools`, `num_dir_credit_pools`; DLB 2.5
    /// `num_credits`, `num_credit_pools`.
    pub credits: [u32; 4],
    /// `producer_coremask`.
    pub producer_coremask: [u64; 2],
}

/// `dlb_create_ldb_queue_t`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CreateLdbQueue {
    /// `num_sequence_numbers`.
    pub num_sequence_numbers: u32,
    /// `lock_id_comp_level`.
    pub lock_id_comp_level: u32,
}

/// `dlb_create_port_t`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CreatePort {
    /// The pool union: DLB 2.0 `ldb_credit_pool_id`, `dir_credit_pool_id`;
    /// DLB 2.5 `credit_pool_id`.
    pub pools: [u32; 2],
    /// `cq_depth`.
    pub cq_depth: u16,
    /// `num_ldb_event_state_entries`.
    pub num_ldb_event_state_entries: u32,
    /// `cos_id` (load-balanced ports) or `bool is_producer` (directed).
    pub cos_id: c_int,
}

/// `dlb_event_t`: 16 packed bytes (see the field docs for the bit-fields).
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
pub struct DlbEvent {
    /// `udata64`.
    pub udata64: u64,
    /// `udata16`.
    pub udata16: u16,
    /// `queue_id`.
    pub queue_id: u8,
    /// `sched_type:2` (bits 0-1), `priority:3` (bits 2-4).
    pub sched_prio: u8,
    /// `flow_id`.
    pub flow_id: u16,
    /// Send: `weight:2` in bits 1-2.
    pub meta0: u8,
    /// Receive: `error:1` in bit 5.
    pub meta1: u8,
}

impl DlbEvent {
    /// The `sched_type` bit-field.
    pub fn sched_type(self) -> u8 {
        self.sched_prio & 0b11
    }

    /// The `priority` bit-field.
    pub fn priority(self) -> u8 {
        (self.sched_prio >> 2) & 0b111
    }

    /// Packs `sched_type` and `priority`.
    pub fn pack(sched: u8, priority: u8) -> u8 {
        (sched & 0b11) | ((priority & 0b111) << 2)
    }
}

const _: () = {
    assert!(size_of::<DlbEvent>() == 16 && align_of::<DlbEvent>() == 1);
    assert!(offset_of!(DlbEvent, queue_id) == 10);
    assert!(offset_of!(DlbEvent, flow_id) == 12);
    assert!(size_of::<DevCap>() == 8);
    assert!(size_of::<Resources>() == 72 && offset_of!(Resources, credits) == 40);
    assert!(size_of::<CreateSchedDomain>() == 56);
    assert!(offset_of!(CreateSchedDomain, producer_coremask) == 40);
    assert!(size_of::<CreateLdbQueue>() == 8);
    assert!(size_of::<CreatePort>() == 20 && offset_of!(CreatePort, cos_id) == 16);
};
