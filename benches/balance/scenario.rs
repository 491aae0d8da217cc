//! The scenarios: who connects, how often they send, and what each request
//! costs the server.

use std::time::Duration;

/// Cost of a light request (µs of server CPU) in the open-loop scenarios.
pub const LIGHT_US: u64 = 20;
/// Cost of an elephant request in `skewed`.
pub const ELEPHANT_US: u64 = 1_000;
/// Cost of a heavy request in the saturated family.
pub const HEAVY_US: u64 = 2_000;

/// Bit 63 of a request: the server blocks its thread for the cost
/// (`thread::sleep`) instead of spinning, as a handler that makes a
/// synchronous call does.
pub const BLOCK_BIT: u64 = 1 << 63;

/// The 8 bytes of a request: the cost in µs, and whether to block.
pub fn encode(cost_us: u64, block: bool) -> [u8; 8] {
    (cost_us | if block { BLOCK_BIT } else { 0 }).to_le_bytes()
}

/// What the server does for a request (see [`encode`]).
pub fn decode(req: [u8; 8]) -> (Duration, bool) {
    let v = u64::from_le_bytes(req);
    (Duration::from_micros(v & !BLOCK_BIT), v & BLOCK_BIT != 0)
}

/// A group of long-lived connections with one request cost and rate.
#[derive(Clone, Copy, Debug)]
pub struct Group {
    pub conns: usize,
    pub per_conn_rps: f64,
    pub cost_us: u64,
}

/// The clients of a scenario.
#[derive(Clone, Debug)]
pub enum Load {
    /// Long-lived connections, each with its own constant-rate schedule.
    Persistent(Vec<Group>),
    /// One request per connection; `rate` connections/s in total over
    /// `threads` generator threads.
    Churn {
        threads: usize,
        rate: f64,
        cost_us: u64,
    },
    /// Open-loop light connections beside `heavy` closed-loop ones, each
    /// of which sends its next heavy request as soon as the previous one is
    /// answered (so that each keeps a worker busy).
    Saturated {
        light: Group,
        heavy: usize,
        heavy_cost_us: u64,
        block: bool,
    },
}

/// One scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    /// Workers of every runtime in this scenario (`None`: the
    /// `FULCRUM_BENCH_WORKERS` default).
    pub workers: Option<usize>,
    pub load: Load,
}

/// Every scenario, with every open-loop rate multiplied by `load`.
pub fn all(load: f64) -> Vec<Scenario> {
    let mut v = vec![
        Scenario {
            name: "uniform".into(),
            workers: None,
            load: Load::Persistent(vec![Group {
                conns: 64,
                per_conn_rps: 250.0 * load,
                cost_us: LIGHT_US,
            }]),
        },
        Scenario {
            name: "skewed".into(),
            workers: None,
            // Elephants first in the list; connections are opened
            // interleaved (see `loadgen::start`), so they are not the first
            // four accepted.
            load: Load::Persistent(vec![
                Group {
                    conns: 4,
                    per_conn_rps: 100.0 * load,
                    cost_us: ELEPHANT_US,
                },
                Group {
                    conns: 60,
                    per_conn_rps: 170.0 * load,
                    cost_us: LIGHT_US,
                },
            ]),
        },
        Scenario {
            name: "churn".into(),
            workers: None,
            load: Load::Churn {
                threads: 16,
                rate: 6_000.0 * load,
                cost_us: LIGHT_US,
            },
        },
    ];
    // The saturated family: 24 light clients, one request every 5 ms each,
    // beside K heavy closed-loop clients, at 4 and at 2 workers.
    for workers in [4, 2] {
        for heavy in [1, 2, 3] {
            for block in [false, true] {
                v.push(Scenario {
                    name: format!(
                        "sat-w{workers}-k{heavy}-{}",
                        if block { "block" } else { "spin" }
                    ),
                    workers: Some(workers),
                    load: Load::Saturated {
                        light: Group {
                            conns: 24,
                            per_conn_rps: 200.0 * load,
                            cost_us: 0,
                        },
                        heavy,
                        heavy_cost_us: HEAVY_US,
                        block,
                    },
                });
            }
        }
    }
    v
}
