//! The software DLB queue against its reference model
//! (`dlb/tests/support/queue_model.rs`, the same one the proptest of
//! `dlb/tests/model.rs` uses): the input bytes choose a domain shape and a
//! sequence of up to 200 `send`/`recv`/`release` operations; the model
//! checks the queue after every step and, once everything is drained, that
//! every event came out once and every credit came back. A disagreement
//! panics, which libFuzzer reports as a crash.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../dlb/tests/support/queue_model.rs"]
mod queue_model;
use queue_model::{run, Op, Shape};

/// The first 9 bytes: the shape (ports, CQ depth, credits, linked ports,
/// link priorities); then 3 bytes per operation.
fn decode(data: &[u8]) -> Option<(Shape, Vec<Op>)> {
    let (head, rest) = data.split_at_checked(9)?;
    let ports = 2 + usize::from(head[0] % 3);
    let cq_depth = [8, 16, 32][usize::from(head[1] % 3)];
    let credits = 1 + u32::from(u16::from_le_bytes([head[2], head[3]])) % 300;
    let mask = 1 + u32::from(head[4]) % ((1 << ports) - 1);
    let shape = Shape {
        ports,
        cq_depth,
        credits,
        linked: (0..ports).map(|p| mask & (1 << p) != 0).collect(),
        link_priority: (0..ports).map(|p| head[5 + p] % 8).collect(),
    };
    let ops = rest
        .chunks_exact(3)
        .take(200)
        .map(|op| {
            let port = usize::from(op[1] % 4);
            match op[0] % 8 {
                0..=2 => Op::Send {
                    port,
                    batch: 1 + usize::from(op[2] % 40),
                },
                3..=5 => Op::Recv {
                    port,
                    buf: 1 + usize::from(op[2] % 48),
                },
                _ => Op::Release {
                    port,
                    raw: u32::from(op[2]),
                    over: op[1] >= 0xe0,
                },
            }
        })
        .collect();
    Some((shape, ops))
}

fuzz_target!(|data: &[u8]| {
    if let Some((shape, ops)) = decode(data) {
        run(&shape, &ops);
    }
});
