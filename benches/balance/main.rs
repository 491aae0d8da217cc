//! `cargo bench --bench balance`: one small TCP server on Fulcrum (every
//! balance mode of `Server`, and tokio's idiom of an accept loop that
//! spawns a task per connection, on the DLB and the work-stealing
//! schedulers), on tokio's multi-thread runtime, and as one OS thread per
//! connection (the kernel's scheduler alone), side by side.
//!
//! Protocol: the client sends an 8-byte request (little-endian cost in µs;
//! bit 63 set: block the thread instead of spinning); the server spins (or
//! sleeps) that long inside the handler's poll and echoes the 8 bytes back.
//! Handlers are per-connection loops (read, work, reply), as a real
//! server's are.
//!
//! Scenarios (offered load with the defaults; the 2 cores of the reference
//! machine are shared by the server and the load generator, and each
//! request also costs roughly 40–50 µs of CPU in syscalls and wake-ups on
//! the two sides):
//! - `uniform`: 64 connections × 250 req/s × 20 µs, all opened at once.
//! - `skewed`: 4 elephant connections × 100 req/s × 1 ms among 60 light ones
//!   × 170 req/s × 20 µs.
//! - `churn`: 16 generator threads open 6,000 connections/s in total; each
//!   sends one 20 µs request, reads the reply and closes with a reset.
//! - `sat-wW-kK-spin|block` (the saturated family): 24 light connections ×
//!   200 req/s (0 µs) beside K = 1, 2, 3 heavy *closed-loop* connections
//!   whose every request costs 2 ms of CPU (`spin`) or blocks the handler's
//!   thread for 2 ms (`block`), on W = 4 and W = 2 workers. At K ≥ cores
//!   the heavy clients keep every core busy: the light requests show
//!   whether a server keeps them off the heavy ones' workers.
//!
//! `FULCRUM_BENCH_VERBOSE=1` prints every run's figures on stderr.
//! `FULCRUM_BENCH_LOAD` (default 1.0) multiplies every open-loop rate;
//! `FULCRUM_BENCH_WORKERS` (default 4) sets the workers of the first three
//! scenarios.
//!
//! Each (scenario, system) runs `FULCRUM_BENCH_RUNS` times (default 3) for
//! `FULCRUM_BENCH_SECS` seconds (default 4) after a 0.5 s warm-up, systems
//! alternating (the order rotates each round); the table shows medians.
//! Arguments filter: scenario names or prefixes and/or system names
//! (`cargo bench --bench balance -- sat-w4 tokio fulcrum-spawn threads`).
//!
//! Output: a markdown table, PASS/MISS lines for the goals, and in
//! `$CARGO_TARGET_DIR/bench/` (default `target/bench/`): `balance.json`,
//! `balance_p99_skewed.svg`, `balance_p99_saturated.svg` and
//! `balance_conns.svg`.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../common/chart.rs"]
mod chart;
#[path = "../common/mod.rs"]
mod common;
mod loadgen;
mod report;
mod scenario;
mod server;

use chart::{bar_chart, Scale};
use common::env;
use loadgen::{process_cpu, sleep_until, Window};
use report::{fmt_f, goals, pct_us, spread, summarize, Latencies, RunResult, Summary};
use scenario::Scenario;
use server::{Stats, SYSTEMS};

const WARMUP: Duration = Duration::from_millis(500);

/// Handoffs, rescued I/O events and moved registrations so far, summed
/// over the workers.
fn dlb_counts(m: Option<fulcrum::runtime::RuntimeMetrics>) -> Option<[u64; 3]> {
    let m = m?;
    Some(m.workers.iter().fold([0; 3], |a, w| {
        [a[0] + w.dlb_sent, a[1] + w.io_rescued, a[2] + w.io_moved_in]
    }))
}

fn run_once(
    sc: &Scenario,
    system: &str,
    workers: usize,
    secs: Duration,
    cores: usize,
) -> std::io::Result<RunResult> {
    let st = Arc::new(Stats::new(workers));
    let (running, addr) = server::start(system, workers, st.clone())?;
    let t0 = Instant::now() + Duration::from_millis(150);
    let w = Window {
        t0,
        warm: t0 + WARMUP,
        end: t0 + WARMUP + secs,
    };
    let threads = loadgen::start(&sc.load, addr, w)?;
    sleep_until(w.warm);
    let (acc0, req0, cpu0) = (
        st.accepted.load(Relaxed),
        st.requests.load(Relaxed),
        process_cpu(),
    );
    let dlb0 = dlb_counts(running.metrics());
    sleep_until(w.end);
    let (acc1, req1, cpu1) = (
        st.accepted.load(Relaxed),
        st.requests.load(Relaxed),
        process_cpu(),
    );
    let dlb1 = dlb_counts(running.metrics());
    let mut results = Vec::with_capacity(threads.len());
    for t in threads {
        results.push(t.join().expect("load generator thread panicked"));
    }
    let lat = Latencies::collect(results);
    // Let handlers see the clients' closes before reading the counts.
    std::thread::sleep(Duration::from_millis(50));
    let conns = running.conns_per_worker(&st);
    let counts_disagree = matches!(
        running,
        server::Running::Fulcrum(_) | server::Running::Tokio(_)
    ) && conns.iter().sum::<u64>() != st.accepted.load(Relaxed);
    let busy_ms: Vec<u64> = if matches!(running, server::Running::Threads(_)) {
        Vec::new()
    } else {
        st.busy_ns
            .iter()
            .map(|b| b.load(Relaxed) / 1_000_000)
            .collect()
    };
    running.shutdown();
    let secs_f = secs.as_secs_f64();
    let requests = req1.saturating_sub(req0).max(1) as f64;
    let per_req = |i: usize| match (dlb0, dlb1) {
        (Some(a), Some(b)) => b[i].saturating_sub(a[i]) as f64 / requests,
        _ => f64::NAN,
    };
    let server_cpu = (cpu1 - cpu0).saturating_sub(lat.gen_cpu);
    let mut samples = lat.samples;
    if counts_disagree {
        samples.push("per-worker counts disagree".into());
    }
    Ok(RunResult {
        rps: lat.done as f64 / secs_f,
        light_p50_us: pct_us(&lat.light, 0.5),
        light_p99_us: pct_us(&lat.light, 0.99),
        light_p999_us: pct_us(&lat.light, 0.999),
        p99_us: pct_us(&lat.all, 0.99),
        heavy_rps: lat.heavy_done as f64 / secs_f,
        accepts_per_s: acc1.saturating_sub(acc0) as f64 / secs_f,
        conn_spread: spread(&conns),
        busy_spread: spread(&busy_ms),
        conns,
        busy_ms,
        server_cpu_pct: 100.0 * server_cpu.as_secs_f64() / (secs_f * cores as f64),
        gen_cpu_pct: 100.0 * lat.gen_cpu.as_secs_f64() / (secs_f * cores as f64),
        handoffs_per_req: per_req(0),
        rescues_per_req: per_req(1),
        migrations_per_req: per_req(2),
        errors: lat.errors,
        server_errors: st.errors.load(Relaxed)
            + st.accept_errors.load(Relaxed)
            + st.bad_worker.load(Relaxed),
        samples,
    })
}

/// The scenarios and systems the arguments pick (all when none names one).
fn pick(
    args: &[String],
    all: Vec<Scenario>,
) -> std::io::Result<(Vec<Scenario>, Vec<&'static str>)> {
    let names_scenario = |a: &str, s: &Scenario| s.name == a || s.name.starts_with(a);
    for a in args {
        if !SYSTEMS.contains(&a.as_str()) && !all.iter().any(|s| names_scenario(a, s)) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("unknown argument {a:?}: expected a scenario (or prefix) or a system name"),
            ));
        }
    }
    let scenario_args: Vec<&String> = args
        .iter()
        .filter(|a| !SYSTEMS.contains(&a.as_str()))
        .collect();
    let scenarios = if scenario_args.is_empty() {
        all
    } else {
        all.into_iter()
            .filter(|s| scenario_args.iter().any(|a| names_scenario(a, s)))
            .collect()
    };
    Ok((scenarios, common::named_systems(args, &SYSTEMS)))
}

fn main() -> std::io::Result<()> {
    let started = Instant::now();
    // Churn and the saturated family open thousands of sockets on both
    // sides: take what the hard limit allows.
    fulcrum_test_support::raise_fd_limit(u64::MAX);
    let default_workers = env("FULCRUM_BENCH_WORKERS", 4).max(1);
    let runs = env("FULCRUM_BENCH_RUNS", 3).max(1);
    let secs = Duration::from_secs(env("FULCRUM_BENCH_SECS", 4).max(1) as u64);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // `cargo bench` passes `--bench`; other arguments select scenarios
    // and/or systems by name.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let load = std::env::var("FULCRUM_BENCH_LOAD")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|l| *l > 0.0)
        .unwrap_or(1.0);
    let (scenarios, systems) = pick(&args, scenario::all(load))?;
    // `FULCRUM_BENCH_VERBOSE=1`: every run's figures on stderr.
    let verbose = env("FULCRUM_BENCH_VERBOSE", 0) != 0;

    println!(
        "{cores} cores, {runs} runs × {}s (+{}s warm-up) per system and scenario, \
         alternating; medians. Latency from intended send time (open loop).",
        secs.as_secs(),
        WARMUP.as_secs_f64()
    );
    println!();
    println!("{}", report::TABLE_HEADER);
    let mut summaries: Vec<Summary> = Vec::new();
    for sc in &scenarios {
        let workers = sc.workers.unwrap_or(default_workers);
        let mut results: Vec<Vec<RunResult>> = systems.iter().map(|_| Vec::new()).collect();
        for run in 0..runs {
            for k in 0..systems.len() {
                let i = (k + run) % systems.len();
                let r = run_once(sc, systems[i], workers, secs, cores)?;
                if verbose {
                    eprintln!(
                        "{} / {} run {run}: light p50 {} p99 {} µs, conns {:?}, busy ms {:?}, \
                         handoffs/req {}, rescues/req {}, moves/req {}, server cpu {}%",
                        sc.name,
                        systems[i],
                        fmt_f(r.light_p50_us, 0),
                        fmt_f(r.light_p99_us, 0),
                        r.conns,
                        r.busy_ms,
                        fmt_f(r.handoffs_per_req, 3),
                        fmt_f(r.rescues_per_req, 3),
                        fmt_f(r.migrations_per_req, 4),
                        fmt_f(r.server_cpu_pct, 0),
                    );
                }
                for s in &r.samples {
                    eprintln!("{} / {} run {run}: {s}", sc.name, systems[i]);
                }
                results[i].push(r);
            }
        }
        for (i, sys) in systems.iter().enumerate() {
            let s = summarize(&sc.name, sys, &results[i]);
            println!("{}", s.row());
            summaries.push(s);
        }
        let _ = std::io::stdout().flush();
    }

    println!();
    for s in summaries.iter().filter(|s| s.scenario != "churn") {
        println!(
            "{} / {}: connections per worker {:?}, busy ms per worker {:?} (median run); \
             light p99 per run {:?} µs",
            s.scenario,
            s.system,
            s.conns,
            s.busy_ms,
            s.light_p99_runs
                .iter()
                .map(|x| fmt_f(*x, 0))
                .collect::<Vec<_>>()
        );
    }
    println!();
    let verdicts = goals(&summaries);
    let (mut pass, mut miss) = (0, 0);
    for v in &verdicts {
        match v.pass {
            Some(true) => pass += 1,
            Some(false) => miss += 1,
            None => continue,
        }
        println!("{}", v.line());
    }
    println!("goals: {pass} met, {miss} missed");

    let dir = PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
        .join("bench");
    std::fs::create_dir_all(&dir)?;
    let json = serde_json::json!({
        "cores": cores,
        "runs": runs,
        "secs": secs.as_secs(),
        "summaries": summaries.iter().map(Summary::json).collect::<Vec<_>>(),
        "goals": verdicts.iter().filter(|v| v.pass.is_some()).map(|v| serde_json::json!({
            "goal": v.name,
            "value": report::num(v.value),
            "bound": v.bound,
            "met": v.pass,
        })).collect::<Vec<_>>(),
    });
    let json_path = dir.join("balance.json");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&json).map_err(std::io::Error::other)? + "\n",
    )?;
    let mut written = vec![json_path];
    written.extend(charts(&dir, &summaries, default_workers)?);
    println!();
    for p in &written {
        println!("wrote {}", p.display());
    }
    println!("total time {:.0?}", started.elapsed());
    Ok(())
}

fn short(system: &str) -> String {
    system.trim_start_matches("fulcrum-").to_string()
}

/// The charts of the scenarios that ran.
fn charts(
    dir: &std::path::Path,
    summaries: &[Summary],
    workers: usize,
) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let skewed: Vec<(String, Vec<f64>)> = summaries
        .iter()
        .filter(|s| s.scenario == "skewed")
        .map(|s| (short(s.system), vec![s.light_p99_us]))
        .collect();
    if !skewed.is_empty() {
        let p = dir.join("balance_p99_skewed.svg");
        std::fs::write(
            &p,
            bar_chart(
                "light-request p99, skewed scenario (lower is better)",
                "p99 µs",
                &skewed,
                &["light p99".to_string()],
                Scale::Linear,
            ),
        )?;
        written.push(p);
    }
    // Saturated: one group per scenario, one bar per system, log scale.
    let mut sat_names: Vec<&str> = summaries
        .iter()
        .filter(|s| s.scenario.starts_with("sat-"))
        .map(|s| s.scenario.as_str())
        .collect();
    sat_names.dedup();
    if !sat_names.is_empty() {
        let mut systems: Vec<&'static str> = Vec::new();
        for s in summaries.iter().filter(|s| s.scenario.starts_with("sat-")) {
            if !systems.contains(&s.system) {
                systems.push(s.system);
            }
        }
        let groups: Vec<(String, Vec<f64>)> = sat_names
            .iter()
            .map(|sc| {
                let vals = systems
                    .iter()
                    .map(|sy| {
                        summaries
                            .iter()
                            .find(|s| s.scenario == *sc && s.system == *sy)
                            .map_or(f64::NAN, |s| s.light_p99_us)
                    })
                    .collect();
                (sc.trim_start_matches("sat-").to_string(), vals)
            })
            .collect();
        let p = dir.join("balance_p99_saturated.svg");
        std::fs::write(
            &p,
            bar_chart(
                "light-request p99 beside K heavy clients (log scale, lower is better)",
                "p99 µs",
                &groups,
                &systems.iter().map(|s| short(s)).collect::<Vec<_>>(),
                Scale::Log,
            ),
        )?;
        written.push(p);
    }
    let conn_sc = if summaries.iter().any(|s| s.scenario == "uniform") {
        "uniform"
    } else {
        "skewed"
    };
    let conns: Vec<(String, Vec<f64>)> = summaries
        .iter()
        .filter(|s| s.scenario == conn_sc && !s.conns.is_empty())
        .map(|s| (short(s.system), s.conns.iter().map(|&c| c as f64).collect()))
        .collect();
    if !conns.is_empty() {
        let p = dir.join("balance_conns.svg");
        std::fs::write(
            &p,
            bar_chart(
                &format!("connections per worker, {conn_sc} scenario (median run)"),
                "connections",
                &conns,
                &(0..workers)
                    .map(|i| format!("worker {i}"))
                    .collect::<Vec<_>>(),
                Scale::Linear,
            ),
        )?;
        written.push(p);
    }
    Ok(written)
}
