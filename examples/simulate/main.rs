//! A deterministic discrete-event simulation of connection and request
//! balancing policies (docs/DESIGN.md, "Two levels of balancing").
//!
//! ```text
//! cargo run --release --example simulate -- [--load 0.7] [--seed N] [--requests N]
//!     [--workers 8,16,64,256] [--alpha 2.0] [--mean-us 50] [--life-alpha 1.5]
//!     [--conn-requests 20] [--conn-share 0.02] [--lock-us 2] [--rescue-us 100]
//!     [--cq-depth 8]
//! ```
//!
//! # Model
//!
//! * **Connections** arrive as a Poisson process. Each lives for a
//!   Pareto(`--life-alpha`) time whose mean is chosen so that a connection
//!   issues `--conn-requests` requests on average. The run starts in steady
//!   state: at t = 0 a Poisson number of connections is already open, with
//!   residual lifetimes drawn from the lifetime's equilibrium distribution;
//!   they are all accepted at t = 0, and the first two mean lifetimes are a
//!   warm-up that is simulated but not measured.
//! * **Requests** within a connection are an *open* Poisson process (think
//!   HTTP/2 or gRPC streams multiplexed on one connection) with rate
//!   `--conn-share` / mean cost, i.e. each connection offers 2% of one worker
//!   by default. Open loop keeps the offered load identical for every policy,
//!   so the policies are compared on exactly the same arrivals (common random
//!   numbers: one workload per worker count, replayed for each policy).
//!   Requests are independent, so any worker may run any request.
//! * **Costs** are Pareto(`--alpha`) with mean `--mean-us` (50 µs). The
//!   default α = 2.0 is heavy tailed (infinite variance, so M/G/1 mean waits
//!   diverge) yet its p99 and p99.9 settle within a run of a few million
//!   requests; at α = 1.5 the pinned policies' p99 is set by a handful of
//!   giant requests and swings several-fold between seeds. The connection
//!   arrival rate is set so that the offered load is `--load` × workers.
//! * **Workers** run one request at a time, FIFO from their local queue,
//!   never preempted. Response time = request arrival to completion,
//!   including any time its connection waited to be accepted or adopted.
//!   Utilisation is busy time over the measured window, per worker.
//!
//! # Policies
//!
//! * `hash`: `SO_REUSEPORT`: a uniformly random worker at accept, for life.
//! * `race`: a uniformly random currently idle worker (nothing running, empty
//!   queue) accepts; if none is idle, a uniformly random worker.
//! * `exact`: Envoy's exact balance: accepts are serialised by a global lock
//!   held for `--lock-us` each (FIFO); the holder picks the worker with the
//!   fewest open connections. A connection counts until its lifetime ends.
//! * `dlb`: the accept event goes through an unordered DLB queue. The arbiter
//!   delivers it to the least loaded eligible worker (load = queued + running
//!   items, where queued = ready requests + undelivered DLB events; a worker
//!   with `--cq-depth` items queued is ineligible, and the event waits in the
//!   queue until one is eligible). The worker adopts the connection at its
//!   next scheduling point (immediately if idle, else when its current
//!   request ends), then releases the event. Requests that arrived before
//!   adoption become ready at adoption.
//! * `dlb_rescue`: `dlb`, plus the runtime's request-level rescue: a ready
//!   request that has waited `--rescue-us` in a busy worker's queue is run by
//!   an idle worker (oldest overdue first). The connection stays put.
//! * `stealing`: connections placed as `hash`, but runnable requests are
//!   pooled: an idle worker immediately takes the oldest request of the
//!   longest queue (no stealing latency is modelled).
//! * `pooled`: the ideal reference, M/G/c: one shared FIFO of requests, any
//!   idle worker.
//!
//! Everything is driven by one seeded `fastrand` stream
//! (`fulcrum_test_support::rng`) per workload and per policy run, seeded
//! from `--seed`, so a seed gives bit-identical results.
//!
//! Output: a markdown table on stdout, `target/bench/sim.json` and the chart
//! `target/bench/sim_p99.svg` (`$CARGO_TARGET_DIR/bench` if that is set).

// The SVG chart writer of the benchmarks' reports.
#[path = "../../benches/common/chart.rs"]
mod chart;
mod cli;
mod model;
mod report;
mod sim;

use std::path::PathBuf;
use std::time::Instant;

use cli::parse_args;
use model::Workload;
use report::{fmt_us, json, markdown, svg, Row};
use sim::{mix, simulate, Policy};

fn main() -> std::io::Result<()> {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("simulate: {msg}");
            std::process::exit(2);
        }
    };
    let mut rows = Vec::new();
    for &c in &args.workers {
        let t0 = Instant::now();
        let wl = Workload::connections(&args.shape, c, args.requests, mix(args.seed, c as u64, 0));
        eprintln!(
            "{c} workers: {} connections, {} requests (generated in {:.1?})",
            wl.conn_at.len(),
            wl.reqs.len(),
            t0.elapsed()
        );
        let mut runs = Vec::new();
        for (pi, p) in Policy::ALL.iter().enumerate() {
            let t = Instant::now();
            let st = simulate(
                *p,
                args.knobs,
                &wl,
                c,
                mix(args.seed, c as u64, pi as u64 + 1),
            );
            assert!(
                st.completed == st.total && st.leftover == 0 && st.impossible == 0,
                "{} lost work: {st:?}",
                p.id()
            );
            eprintln!(
                "  {:<15} p99 {:>10} µs  ({:.1?})",
                p.name(),
                fmt_us(st.p99),
                t.elapsed()
            );
            runs.push((*p, st));
        }
        let pooled = runs
            .iter()
            .find(|(p, _)| *p == Policy::Pooled)
            .map(|(_, s)| s.p99)
            .expect("pooled is simulated");
        for (policy, stats) in runs {
            rows.push(Row {
                policy,
                workers: c,
                vs_pooled: stats.p99 / pooled,
                stats,
            });
        }
    }
    print!("{}", markdown(&args, &rows));

    let dir = PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
        .join("bench");
    std::fs::create_dir_all(&dir)?;
    let (jp, sp) = (dir.join("sim.json"), dir.join("sim_p99.svg"));
    std::fs::write(&jp, json(&rows))?;
    std::fs::write(&sp, svg(&args, &rows))?;
    println!("\nwrote {} and {}", jp.display(), sp.display());
    Ok(())
}
