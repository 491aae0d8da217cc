//! The axum example's router on Fulcrum (`fulcrum::http::serve`) and on
//! tokio (`axum::serve`), same worker count, side by side: wrk's closed
//! loop (req/s, p99) and an open loop at a fixed rate (p50, p99 measured
//! from each request's scheduled send time, so queueing counts). Rounds
//! alternate which runtime goes first. Writes JSON (`--out`) and prints a
//! table with the Fulcrum/tokio ratios.
//!
//! `bash benches/axum.sh` builds and runs it; by hand:
//! `cargo bench --features axum --bench axum -- --workers 2 --duration 5 --rounds 2`.
//! Each server runs in its own process (this binary, `server fulcrum|tokio N`).

#[path = "../../examples/axum/app.rs"]
#[allow(dead_code)]
mod app;
#[path = "../common/http.rs"]
mod http;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fulcrum_test_support::median;

const PATH: &str = "/api/items/1";

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("server") {
        let workers = args.get(2).and_then(|w| w.parse().ok()).unwrap_or(2);
        match args.get(1).map(String::as_str) {
            Some("fulcrum") => serve_fulcrum(workers),
            Some("tokio") => serve_tokio(workers),
            other => panic!("server: unknown runtime {other:?}"),
        }
        return;
    }
    let opt = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
            .unwrap_or_else(|| default.to_string())
    };
    let workers: usize = opt("--workers", "2").parse().expect("--workers");
    let duration: u64 = opt("--duration", "5").parse().expect("--duration");
    let rounds: usize = opt("--rounds", "2").parse().expect("--rounds");
    let connections: usize = opt("--connections", "64").parse().expect("--connections");
    let rate: u64 = opt("--rate", "4000").parse().expect("--rate");
    let out = opt("--out", "target/bench/axum.json");
    // Which runtime goes first in round 0 (then they alternate).
    let first_offset = usize::from(opt("--first", "fulcrum") == "tokio");
    run(
        workers,
        duration,
        rounds,
        connections,
        rate,
        &out,
        first_offset,
    );
}

fn serve_fulcrum(workers: usize) {
    let mut builder = fulcrum::runtime::Builder::new_multi_thread();
    builder.worker_threads(workers);
    // Tuning knobs for exploring (the runtime's defaults without them).
    let env_us = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_micros)
    };
    if let Some(wait) = env_us("FULCRUM_BENCH_HANDOFF_WAIT_US") {
        builder.handoff_wait(wait);
    }
    if let Some(spin) = env_us("FULCRUM_BENCH_SPIN_US") {
        builder.spin_before_park(spin);
    }
    if std::env::var("FULCRUM_BENCH_STEALING").is_ok() {
        builder.scheduler(fulcrum::runtime::Scheduler::WorkStealing);
    }
    let rt = builder.build().expect("fulcrum runtime");
    let balance = std::env::var("FULCRUM_BENCH_BALANCE").ok();
    rt.block_on(async {
        let app = app::router(app::AppState::with_items(10));
        if let Some(mode) = balance {
            // `serve_balanced` with a `Balance` mode (dlb, exact, reuseport, race).
            let server = fulcrum::net::Server::bind("127.0.0.1:0".parse().expect("addr"))
                .balance(mode.parse().expect("FULCRUM_BENCH_BALANCE"));
            let running = fulcrum::http::serve_balanced(server, app)
                .bind()
                .await
                .expect("bind");
            announce(running.local_addr());
            running.await.expect("serve");
        } else {
            let listener = fulcrum::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            announce(listener.local_addr().expect("addr"));
            fulcrum::http::serve(listener, app).await.expect("serve");
        }
    });
}

fn serve_tokio(workers: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        announce(listener.local_addr().expect("addr"));
        let app = app::router(app::AppState::with_items(10));
        axum::serve(listener, app).await.expect("serve");
    });
}

fn announce(addr: SocketAddr) {
    println!("listening {addr}");
    std::io::stdout().flush().expect("stdout");
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(runtime: &str, workers: usize) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .args(["server", runtime, &workers.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start server");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("server address");
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("server said {line:?}"));
        Self { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Sample {
    wrk_rps: f64,
    wrk_p99_ms: f64,
    open_p50_ms: f64,
    open_p99_ms: f64,
    open_sent: u64,
    open_errors: u64,
}

/// wrk's closed loop: `connections` connections on one thread; req/s and
/// p99 (ms).
fn wrk(addr: SocketAddr, connections: usize, duration: u64) -> (f64, f64) {
    let (r, _) = http::wrk(&format!("http://{addr}{PATH}"), 1, connections, duration)
        .unwrap_or_else(|e| panic!("{e}"));
    (r.rps, r.p99_ms)
}

/// The open loop: `rate` requests a second over 16 keep-alive connections
/// (p50 and p99 in ms, answered, errors).
fn open_loop(addr: SocketAddr, rate: u64, duration: u64) -> (f64, f64, u64, u64) {
    let r = http::OpenLoop {
        rate: rate as f64,
        connections: 16,
        duration: Duration::from_secs(duration),
        path: PATH.into(),
    }
    .run(addr);
    (
        r.percentile_ms(0.50),
        r.percentile_ms(0.99),
        r.latencies.len() as u64,
        r.errors,
    )
}

/// Reads one figure of a sample.
type Metric = fn(&Sample) -> f64;

fn run(
    workers: usize,
    duration: u64,
    rounds: usize,
    connections: usize,
    rate: u64,
    out: &str,
    first_offset: usize,
) {
    let mut samples: Vec<(String, usize, Sample)> = Vec::new();
    for round in 0..rounds {
        let order = if (round + first_offset) % 2 == 0 {
            ["fulcrum", "tokio"]
        } else {
            ["tokio", "fulcrum"]
        };
        for rt in order {
            let server = Server::start(rt, workers);
            // Warm up: connections, allocator, caches.
            let _ = wrk(server.addr, connections, 1);
            let (wrk_rps, wrk_p99_ms) = wrk(server.addr, connections, duration);
            let (open_p50_ms, open_p99_ms, open_sent, open_errors) =
                open_loop(server.addr, rate, duration);
            let s = Sample {
                wrk_rps,
                wrk_p99_ms,
                open_p50_ms,
                open_p99_ms,
                open_sent,
                open_errors,
            };
            eprintln!("round {round} {rt:8} {s:?}");
            samples.push((rt.to_string(), round, s));
            drop(server);
        }
    }
    let summary = |rt: &str, f: fn(&Sample) -> f64| {
        median(
            samples
                .iter()
                .filter(|(r, _, _)| r == rt)
                .map(|(_, _, s)| f(s)),
        )
    };
    let metrics: [(&str, Metric); 4] = [
        ("wrk_rps", |s| s.wrk_rps),
        ("wrk_p99_ms", |s| s.wrk_p99_ms),
        ("open_p50_ms", |s| s.open_p50_ms),
        ("open_p99_ms", |s| s.open_p99_ms),
    ];
    let mut table = serde_json::Map::new();
    println!("| metric (median of {rounds} rounds) | Fulcrum | tokio | Fulcrum / tokio |");
    println!("|---|---|---|---|");
    for (name, f) in metrics {
        let (a, b) = (summary("fulcrum", f), summary("tokio", f));
        println!("| {name} | {a:.2} | {b:.2} | {:.3} |", a / b);
        table.insert(
            name.into(),
            serde_json::json!({ "fulcrum": a, "tokio": b, "ratio": a / b }),
        );
    }
    let json = serde_json::json!({
        "bench": "axum",
        "path": PATH,
        "workers": workers,
        "duration_s": duration,
        "rounds": rounds,
        "wrk_connections": connections,
        "open_loop_rate": rate,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "summary": table,
        "samples": samples.iter().map(|(rt, round, s)| serde_json::json!({ "runtime": rt, "round": round, "sample": s })).collect::<Vec<_>>(),
    });
    if let Some(dir) = std::path::Path::new(out).parent() {
        std::fs::create_dir_all(dir).expect("output directory");
    }
    std::fs::write(out, serde_json::to_string_pretty(&json).expect("json")).expect("write results");
    eprintln!("wrote {out}");
}
