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

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// wrk's closed loop: `connections` connections on one thread.
fn wrk(addr: SocketAddr, connections: usize, duration: u64) -> (f64, f64) {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{duration}s"),
            "--latency",
            &format!("http://{addr}{PATH}"),
        ])
        .output()
        .expect("run wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("wrk output: {text}"));
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| parse_wrk_duration(v.trim()))
        .unwrap_or_else(|| panic!("wrk output: {text}"));
    (rps, p99)
}

/// "1.23ms", "870.00us", "1.02s" → milliseconds.
fn parse_wrk_duration(v: &str) -> f64 {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().unwrap_or(f64::NAN) * scale
}

/// The open loop: `rate` requests a second over 16 keep-alive connections,
/// each request sent at its scheduled time (or as soon as its connection
/// is free), its latency counted from that scheduled time.
fn open_loop(addr: SocketAddr, rate: u64, duration: u64) -> (f64, f64, u64, u64) {
    const CONNS: u64 = 16;
    let per_conn = Duration::from_secs_f64(CONNS as f64 / rate as f64);
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + Duration::from_secs(duration);
    let threads: Vec<_> = (0..CONNS)
        .map(|c| {
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut errors = 0;
                let mut stream = TcpStream::connect(addr).expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let request = format!("GET {PATH} HTTP/1.1\r\nhost: bench\r\n\r\n");
                let mut buf = vec![0u8; 16 * 1024];
                let mut next = start + per_conn.mul_f64(c as f64 / CONNS as f64);
                while next < end {
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    }
                    if stream.write_all(request.as_bytes()).is_err()
                        || !read_response(&mut stream, &mut buf)
                    {
                        errors += 1;
                        stream = TcpStream::connect(addr).expect("reconnect");
                    } else {
                        lat.push(next.elapsed().as_secs_f64() * 1000.0);
                    }
                    next += per_conn;
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in threads {
        let (lat, e) = t.join().expect("load thread");
        all.extend(lat);
        errors += e;
    }
    all.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    (pct(0.50), pct(0.99), all.len() as u64, errors)
}

/// Reads one HTTP/1.1 response with a `content-length` body.
fn read_response(stream: &mut TcpStream, buf: &mut [u8]) -> bool {
    let mut have = 0;
    loop {
        match stream.read(&mut buf[have..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => have += n,
        }
        let Some(head_end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let total = head_end + 4 + len;
        while have < total {
            match stream.read(&mut buf[have..]) {
                Ok(0) | Err(_) => return false,
                Ok(n) => have += n,
            }
        }
        return true;
    }
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
