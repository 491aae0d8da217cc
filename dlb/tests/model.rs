//! Model-based property test of the software queue: random sequences of
//! `send`, `recv` and `release` over 2 to 4 ports, run on one thread and
//! checked after every step against a sequential reference model.
//!
//! What the model holds the queue to:
//! - **conservation**: every event a `send` accepted is received exactly
//!   once, by a port linked to its queue; nothing is invented, lost or
//!   duplicated; events a short `send` did not take stay with the caller
//!   (the model keeps them and sends them again later);
//! - **credits**: a `send` comes up short only when the credit pool is
//!   empty; `credits - available` is exactly the number of events waiting
//!   in the queue (sent, in no CQ yet); once everything is received and
//!   released the pool is full again;
//! - **eligibility**: a CQ never holds more than `cq_depth` events; a port
//!   whose CQ is full or which owes more than `cq_depth` gets no new
//!   deliveries; a `recv` never returns more than its buffer, and returns at
//!   least what its CQ held (up to the buffer); a `release` releases
//!   `min(n, owed)`;
//! - **no stranding**: while events wait in the queue, no linked port is
//!   eligible (the dispatcher delivers as soon as one becomes so);
//! - the port counters (`sent`, `received`, `released`, `credit_waits`,
//!   `in_flight`) agree with the model.
#![cfg(not(loom))]

#[path = "support/queue_model.rs"]
mod queue_model;
use queue_model::{run, Op, Shape};

use proptest::prelude::*;
use proptest::test_runner::Config;

fn shape() -> impl Strategy<Value = Shape> {
    (2usize..=4)
        .prop_flat_map(|ports| {
            (
                Just(ports),
                prop::sample::select(vec![8u32, 16, 32]),
                // Small pools as well as large, so that short sends happen.
                prop_oneof![1u32..=8, 9u32..=64, 65u32..=300],
                // At least one consumer.
                1u32..(1 << ports),
                prop::collection::vec(0u8..=7, ports),
            )
        })
        .prop_map(|(ports, cq_depth, credits, mask, link_priority)| Shape {
            ports,
            cq_depth,
            credits,
            linked: (0..ports).map(|p| mask & (1 << p) != 0).collect(),
            link_priority,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..4, 1usize..=40).prop_map(|(port, batch)| Op::Send { port, batch }),
        3 => (0usize..4, 1usize..=48).prop_map(|(port, buf)| Op::Recv { port, buf }),
        2 => (0usize..4, any::<u32>(), prop::bool::weighted(0.1))
            .prop_map(|(port, raw, over)| Op::Release { port, raw, over }),
    ]
}

proptest! {
    // Each case is one domain and at most 200 steps: 1024 cases take about
    // 5 s in the debug profile (`PROPTEST_CASES=N` for a longer hunt). No
    // regression file is written; a failure prints its minimal scenario.
    #![proptest_config(Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1024),
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn the_queue_matches_its_model(s in shape(), ops in prop::collection::vec(op(), 1..200)) {
        run(&s, &ops);
    }
}
