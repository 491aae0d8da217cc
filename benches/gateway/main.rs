//! `cargo bench --bench gateway`: the Fulcrum gateway
//! (`target/release/examples/gateway`) against nginx as a reverse proxy
//! and against a tokio + hyper + hyper-util reverse proxy
//! (`tokio_proxy.rs`, what a Rust user would build instead), all in front
//! of the same static nginx upstream, over loopback. `bash
//! benches/gateway.sh` installs nginx and wrk, builds the release gateway
//! and runs this; by hand, after `cargo build --release --example gateway`:
//!
//! ```text
//! cargo bench --bench gateway -- --rounds 3 --duration 10
//! ```
//!
//! What runs (each in its own process, all started once):
//! - `upstream`: nginx, `return 200 "ok\n"` on `/`, `--upstream-workers`
//!   worker(s) (default 1). A separate upstream costs every system the same.
//! - `fulcrum-gateway-hyper`: the same gateway with `http1 = "hyper"`
//!   (HTTP/1.1 on hyper alone, not on its own path): the A/B of that path.
//!   HTTP/2 is hyper's in both, so only `fulcrum-gateway` runs h2load.
//! - `fulcrum-gateway`: `--workers` listener workers, `balance = "dlb"`,
//!   no access log, one route `/` to the upstream, pooled keep-alive
//!   (32 idle per worker), no health check.
//! - `nginx`: `worker_processes --workers`, `keepalive 32`, HTTP/1.1
//!   upstream, the client's `Host`, `X-Forwarded-For` appended,
//!   `X-Forwarded-Proto`, `X-Request-Id` kept or generated, as the gateway
//!   does.
//! - `tokio-proxy`: `--workers` tokio workers, the same header work
//!   (this binary re-executed as `server tokio-proxy UPSTREAM WORKERS`).
//!
//! Before any load, each proxy must answer `/` with `ok` and forward
//! `Host`, `X-Forwarded-For` and `X-Forwarded-Proto` identically, and a
//! generated `X-Request-Id` (the upstream echoes them); those that speak
//! HTTP/2 must answer 20 requests of h2load with 2xx.
//!
//! Load, per system and round, the systems' order rotated each round:
//! wrk's closed loop (`wrk -t<wrk-threads> -c<connections> -d<duration>s
//! --latency`), then an open loop (`--rate` requests/s over
//! `--open-connections` keep-alive connections for `--duration` s, latency
//! from each request's scheduled send time: no coordinated omission;
//! `benches/common/http.rs`), then, for the systems that speak cleartext
//! HTTP/2 with prior knowledge (the gateway on its one listener, nginx on
//! a second `listen ... http2` server; not the tokio proxy), `h2load
//! -t<wrk-threads> -c<h2-connections> -m<h2-streams> -D<duration>`
//! (`h2load.rs`; p50/p99 from its per-request log). Every proxy speaks
//! HTTP/1.1 keep-alive to the upstream. One wrk warm-up of `--warmup` s
//! per system first. CPU is read from `/proc/<pid>/stat` of the proxy's processes
//! (nginx: master and workers) around each load, and context switches from
//! `/proc/<pid>/task/*/status` (a table of their own, per response).
//!
//! Output: a markdown table (medians over the rounds, ratios to nginx, to
//! the tokio proxy and to the gateway on hyper alone) on stdout, `target/bench/gateway.json` (`--out`),
//! and in `target/bench/gateway/` the raw wrk output of every run and the
//! gateway's `/stats` at the end.
//!
//! Options (defaults): `--workers 2 --upstream-workers 1 --rounds 3
//! --duration 10 --warmup 3 --wrk-threads 2 --connections 64 --rate 4000
//! --open-connections 16 --h2-connections 16 --h2-streams 10 --systems
//! fulcrum-gateway,fulcrum-gateway-hyper,nginx,tokio-proxy --gateway-bin
//! <target>/release/examples/gateway`. The defaults take about 6
//! minutes. On the 2-core reference machine wrk, the proxy and
//! the upstream share the cores: compare the ratios, not the absolute
//! figures.
//!
//! Goals (issues 7 and 18): gateway requests/s ≥ 1.2 × nginx, gateway p99
//! ≤ nginx; over HTTP/2, requests/s ≥ 1.0 × nginx.

mod h2load;
#[path = "../common/http.rs"]
mod http;
mod systems;
mod tokio_proxy;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use fulcrum_test_support::median;
use serde::Serialize;

use systems::{Proc, Scratch, SYSTEMS};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The command line.
struct Options {
    workers: usize,
    upstream_workers: usize,
    rounds: usize,
    duration: u64,
    warmup: u64,
    wrk_threads: usize,
    connections: usize,
    rate: f64,
    open_connections: usize,
    h2_connections: usize,
    h2_streams: usize,
    systems: Vec<&'static str>,
    gateway_bin: PathBuf,
    out: PathBuf,
}

fn target_dir() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        const KNOWN: [&str; 14] = [
            "--workers",
            "--upstream-workers",
            "--rounds",
            "--duration",
            "--warmup",
            "--wrk-threads",
            "--connections",
            "--rate",
            "--open-connections",
            "--h2-connections",
            "--h2-streams",
            "--systems",
            "--gateway-bin",
            "--out",
        ];
        for pair in args.chunks(2) {
            if !KNOWN.contains(&pair[0].as_str()) || pair.len() < 2 {
                return Err(format!(
                    "unexpected argument {:?}: options are {} (each with a value)",
                    pair[0],
                    KNOWN.join(" ")
                )
                .into());
            }
        }
        let opt = |name: &str| -> Option<&str> {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .map(String::as_str)
        };
        fn num<T: std::str::FromStr>(v: Option<&str>, name: &str, default: T) -> Result<T> {
            match v {
                None => Ok(default),
                Some(v) => v
                    .parse()
                    .map_err(|_| format!("{name}: not a number: {v:?}").into()),
            }
        }
        let systems = match opt("--systems") {
            None => SYSTEMS.to_vec(),
            Some(list) => list
                .split(',')
                .map(|s| {
                    SYSTEMS
                        .into_iter()
                        .find(|k| *k == s)
                        .ok_or_else(|| format!("--systems: unknown {s:?} (known: {SYSTEMS:?})"))
                })
                .collect::<std::result::Result<_, _>>()?,
        };
        // The bench binary lives in <target>/release/deps/.
        let default_bin = std::env::current_exe()?
            .parent()
            .and_then(|deps| deps.parent())
            .map(|profile| profile.join("examples/gateway"))
            .unwrap_or_else(|| target_dir().join("release/examples/gateway"));
        Ok(Self {
            workers: num(opt("--workers"), "--workers", 2)?,
            upstream_workers: num(opt("--upstream-workers"), "--upstream-workers", 1)?,
            rounds: num(opt("--rounds"), "--rounds", 3usize)?.max(1),
            duration: num(opt("--duration"), "--duration", 10u64)?.max(1),
            warmup: num(opt("--warmup"), "--warmup", 3)?,
            wrk_threads: num(opt("--wrk-threads"), "--wrk-threads", 2)?,
            connections: num(opt("--connections"), "--connections", 64)?,
            rate: num(opt("--rate"), "--rate", 4000.0)?,
            open_connections: num(opt("--open-connections"), "--open-connections", 16)?,
            h2_connections: num(opt("--h2-connections"), "--h2-connections", 16usize)?.max(1),
            h2_streams: num(opt("--h2-streams"), "--h2-streams", 10usize)?.max(1),
            systems,
            gateway_bin: opt("--gateway-bin").map_or(default_bin, PathBuf::from),
            out: opt("--out")
                .map_or_else(|| target_dir().join("bench/gateway.json"), PathBuf::from),
        })
    }
}

/// What one load of one system measured (or the medians of them).
#[derive(Clone, Debug, Default, Serialize)]
struct Figures {
    /// wrk's closed loop.
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
    /// The proxy's CPU per response during the wrk run, and the upstream's.
    cpu_us_per_req: f64,
    upstream_cpu_us_per_req: f64,
    /// The proxy's context switches per response during the wrk run.
    switches_per_req: f64,
    /// The open loop at the fixed rate.
    open_ok: u64,
    open_p50_us: f64,
    open_p99_us: f64,
    open_p999_us: f64,
    open_errors: u64,
    open_cpu_us_per_req: f64,
    open_switches_per_req: f64,
    /// h2load's HTTP/2 load (all zero for a system that does not speak
    /// HTTP/2 with prior knowledge).
    h2_rps: f64,
    h2_p50_us: f64,
    h2_p99_us: f64,
    h2_errors: u64,
    h2_cpu_us_per_req: f64,
}

impl Figures {
    /// The HTTP/2 table's cells from requests/s on.
    fn h2_cells(&self) -> String {
        if self.h2_rps == 0.0 {
            return "— | — | — | — | —".into();
        }
        format!(
            "{:.0} | {:.0} | {:.0} | {} | {:.1}",
            self.h2_rps, self.h2_p50_us, self.h2_p99_us, self.h2_errors, self.h2_cpu_us_per_req
        )
    }

    /// The table's cells from requests/s on.
    fn cells(&self) -> String {
        format!(
            "{:.0} | {:.0} | {:.0} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {} | {:.1}",
            self.rps,
            self.p50_us,
            self.p99_us,
            self.errors,
            self.cpu_us_per_req,
            self.open_p50_us,
            self.open_p99_us,
            self.open_p999_us,
            self.open_errors,
            self.open_cpu_us_per_req
        )
    }
}

/// One system's figures in one round.
#[derive(Clone, Debug, Serialize)]
struct Run {
    round: usize,
    #[serde(flatten)]
    figures: Figures,
}

/// A system's medians over the rounds (error counts summed), and the runs.
#[derive(Debug, Serialize)]
struct Summary {
    system: &'static str,
    #[serde(flatten)]
    median: Figures,
    runs: Vec<Run>,
}

impl Summary {
    fn new(system: &'static str, runs: Vec<Run>) -> Self {
        let m = |f: fn(&Figures) -> f64| median(runs.iter().map(|r| f(&r.figures)));
        let sum = |f: fn(&Figures) -> u64| runs.iter().map(|r| f(&r.figures)).sum();
        let median = Figures {
            rps: m(|f| f.rps),
            p50_us: m(|f| f.p50_us),
            p99_us: m(|f| f.p99_us),
            errors: sum(|f| f.errors),
            cpu_us_per_req: m(|f| f.cpu_us_per_req),
            upstream_cpu_us_per_req: m(|f| f.upstream_cpu_us_per_req),
            switches_per_req: m(|f| f.switches_per_req),
            open_ok: m(|f| f.open_ok as f64) as u64,
            open_p50_us: m(|f| f.open_p50_us),
            open_p99_us: m(|f| f.open_p99_us),
            open_p999_us: m(|f| f.open_p999_us),
            open_errors: sum(|f| f.open_errors),
            open_cpu_us_per_req: m(|f| f.open_cpu_us_per_req),
            open_switches_per_req: m(|f| f.open_switches_per_req),
            h2_rps: m(|f| f.h2_rps),
            h2_p50_us: m(|f| f.h2_p50_us),
            h2_p99_us: m(|f| f.h2_p99_us),
            h2_errors: sum(|f| f.h2_errors),
            h2_cpu_us_per_req: m(|f| f.h2_cpu_us_per_req),
        };
        Self {
            system,
            median,
            runs,
        }
    }
}

/// What `target/bench/gateway.json` holds.
#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    cpus: usize,
    workers: usize,
    upstream_workers: usize,
    rounds: usize,
    duration_s: u64,
    warmup_s: u64,
    wrk_threads: usize,
    wrk_connections: usize,
    open_rate: f64,
    open_connections: usize,
    h2_connections: usize,
    h2_streams: usize,
    systems: Vec<Summary>,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("server") {
        return match (args.get(1).map(String::as_str), args.get(2), args.get(3)) {
            (Some("tokio-proxy"), Some(upstream), Some(workers)) => {
                Ok(tokio_proxy::serve(upstream.parse()?, workers.parse()?)?)
            }
            _ => Err(format!("usage: server tokio-proxy UPSTREAM WORKERS (got {args:?})").into()),
        };
    }
    let o = Options::parse(&args)?;
    run(&o)
}

fn run(o: &Options) -> Result<()> {
    let raw_dir = o.out.with_extension("");
    std::fs::create_dir_all(&raw_dir)?;
    for old in std::fs::read_dir(&raw_dir)?.flatten() {
        let name = old.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("wrk-") || name.starts_with("h2load-") {
            std::fs::remove_file(old.path())?;
        }
    }
    let scratch = Scratch::new(&raw_dir)?;
    let dir = scratch.dir.clone();
    let nginx = systems::nginx_binary()?;
    if o.systems.contains(&"fulcrum-gateway") && !o.gateway_bin.is_file() {
        return Err(format!(
            "{} not built: cargo build --release --example gateway",
            o.gateway_bin.display()
        )
        .into());
    }
    let nginx_cmd = |name: &str, conf: String| -> Result<Command> {
        let path = dir.join(format!("{name}.conf"));
        std::fs::write(&path, conf)?;
        let mut cmd = Command::new(&nginx);
        cmd.arg("-p").arg(&dir);
        cmd.arg("-e").arg(dir.join(format!("{name}-error.log")));
        cmd.arg("-c").arg(path);
        Ok(cmd)
    };

    let up_port = systems::free_port()?;
    let upstream = Proc::spawn(
        "upstream",
        nginx_cmd(
            "upstream",
            systems::upstream_conf(&dir, up_port, o.upstream_workers),
        )?,
        &dir,
        up_port,
        true,
    )?;
    let mut procs: Vec<Proc> = Vec::new();
    let mut admin_port = None;
    let h2_check = h2load::H2Load {
        threads: 1,
        connections: 1,
        streams: 4,
        secs: 0,
    };
    let h2 = h2load::H2Load {
        threads: o.wrk_threads,
        connections: o.h2_connections,
        streams: o.h2_streams,
        secs: o.duration,
    };
    for &s in &o.systems {
        let p = match s {
            "fulcrum-gateway" | "fulcrum-gateway-hyper" => {
                let native = s == "fulcrum-gateway";
                let (port, admin) = (systems::free_port()?, systems::free_port()?);
                if native {
                    admin_port = Some(admin);
                }
                let conf = dir.join(format!("{s}.toml"));
                let http1 = if native { "native" } else { "hyper" };
                std::fs::write(
                    &conf,
                    systems::gateway_conf(port, admin, up_port, o.workers, http1),
                )?;
                let mut cmd = Command::new(&o.gateway_bin);
                cmd.arg("--config").arg(&conf);
                if std::env::var_os("RUST_LOG").is_none() {
                    cmd.env("RUST_LOG", "warn");
                }
                let mut p = Proc::spawn(s, cmd, &dir, port, false)?;
                // HTTP/2 with prior knowledge on the same listener (hyper's
                // in both, so measured once).
                p.h2_addr = native.then_some(p.addr);
                p
            }
            "nginx" => {
                let (port, h2_port) = (systems::free_port()?, systems::free_port()?);
                let conf = systems::nginx_proxy_conf(&dir, port, h2_port, up_port, o.workers);
                let mut p = Proc::spawn(s, nginx_cmd("nginx", conf)?, &dir, port, true)?;
                // nginx speaks cleartext HTTP/2 only on a listener of its own.
                p.h2_addr = Some(SocketAddr::from(([127, 0, 0, 1], h2_port)));
                p
            }
            _ => Proc::spawn_self(
                s,
                &[
                    "tokio-proxy".into(),
                    upstream.addr.to_string(),
                    o.workers.to_string(),
                ],
                &dir,
            )?,
        };
        p.check()?;
        if let Some(h2) = p.h2_addr {
            let log = dir.join(format!("h2load-check-{s}.log"));
            let (r, text) = h2_check.count(20, &format!("http://{h2}/"), &log)?;
            if (r.ok, r.errors) != (20, 0) {
                return Err(format!("{s}: 20 HTTP/2 requests gave {r:?}: {text}").into());
            }
        }
        procs.push(p);
    }
    eprintln!(
        "upstream {} ({} worker); {} answer and forward Host, X-Forwarded-For/-Proto and X-Request-Id alike ({} workers each)",
        upstream.addr,
        o.upstream_workers,
        procs
            .iter()
            .map(|p| format!("{} {}", p.name, p.addr))
            .collect::<Vec<_>>()
            .join(", "),
        o.workers
    );

    let started = Instant::now();
    let url = |p: &Proc| format!("http://{}/", p.addr);
    if o.warmup > 0 {
        for p in &procs {
            eprintln!("warm-up {} ({} s)", p.name, o.warmup);
            http::wrk(&url(p), o.wrk_threads, o.connections, o.warmup)?;
        }
    }
    let open = http::OpenLoop {
        rate: o.rate,
        connections: o.open_connections,
        duration: Duration::from_secs(o.duration),
        path: "/".into(),
    };
    let mut runs: Vec<Vec<Run>> = procs.iter().map(|_| Vec::new()).collect();
    for round in 0..o.rounds {
        for k in 0..procs.len() {
            let i = (k + round) % procs.len();
            let p = &procs[i];
            let (cpu0, up0, sw0) = (p.cpu(), upstream.cpu(), p.switches());
            let (w, text) = http::wrk(&url(p), o.wrk_threads, o.connections, o.duration)?;
            std::fs::write(raw_dir.join(format!("wrk-{}-{round}.txt", p.name)), text)?;
            let (cpu1, up1, sw1) = (p.cpu(), upstream.cpu(), p.switches());
            let ol = open.run(p.addr);
            let (cpu2, sw2) = (p.cpu(), p.switches());
            let per_req = |cpu: Duration, n: u64| cpu.as_secs_f64() * 1e6 / n.max(1) as f64;
            let count_per_req = |k: u64, n: u64| k as f64 / n.max(1) as f64;
            let mut h2r = h2load::H2Result::default();
            let mut h2_cpu = 0.0;
            if let Some(addr) = p.h2_addr {
                let log = dir.join(format!("h2load-{}.log", p.name));
                let (r, text) = h2.run(&format!("http://{addr}/"), &log)?;
                std::fs::write(raw_dir.join(format!("h2load-{}-{round}.txt", p.name)), text)?;
                h2_cpu = per_req(p.cpu().saturating_sub(cpu2), r.ok);
                h2r = r;
            }
            let r = Figures {
                rps: w.rps,
                p50_us: w.p50_ms * 1e3,
                p99_us: w.p99_ms * 1e3,
                errors: w.errors,
                cpu_us_per_req: per_req(cpu1.saturating_sub(cpu0), w.requests),
                upstream_cpu_us_per_req: per_req(up1.saturating_sub(up0), w.requests),
                switches_per_req: count_per_req(sw1.saturating_sub(sw0), w.requests),
                open_ok: ol.ok,
                open_p50_us: ol.percentile_ms(0.50) * 1e3,
                open_p99_us: ol.percentile_ms(0.99) * 1e3,
                open_p999_us: ol.percentile_ms(0.999) * 1e3,
                open_errors: ol.errors,
                open_cpu_us_per_req: per_req(cpu2.saturating_sub(cpu1), ol.ok),
                open_switches_per_req: count_per_req(sw2.saturating_sub(sw1), ol.ok),
                h2_rps: h2r.rps,
                h2_p50_us: h2r.p50_ms * 1e3,
                h2_p99_us: h2r.p99_ms * 1e3,
                h2_errors: h2r.errors,
                h2_cpu_us_per_req: h2_cpu,
            };
            eprintln!(
                "round {}/{} | {} | {} | h2: {} |",
                round + 1,
                o.rounds,
                p.name,
                r.cells(),
                r.h2_cells()
            );
            runs[i].push(Run { round, figures: r });
        }
    }
    eprintln!("load phase took {:.0?}", started.elapsed());
    if let Some(admin) = admin_port {
        save_stats(admin, &raw_dir.join("gateway-stats.json"));
    }

    let summaries: Vec<Summary> = procs
        .iter()
        .zip(runs)
        .map(|(p, r)| Summary::new(p.name, r))
        .collect();
    print_table(o, &summaries);
    let report = Report {
        bench: "gateway",
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        workers: o.workers,
        upstream_workers: o.upstream_workers,
        rounds: o.rounds,
        duration_s: o.duration,
        warmup_s: o.warmup,
        wrk_threads: o.wrk_threads,
        wrk_connections: o.connections,
        open_rate: o.rate,
        open_connections: o.open_connections,
        h2_connections: o.h2_connections,
        h2_streams: o.h2_streams,
        systems: summaries,
    };
    if let Some(parent) = o.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&o.out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!();
    println!(
        "JSON: {}; raw wrk output and the gateway's /stats: {}/",
        o.out.display(),
        raw_dir.display()
    );
    drop(procs);
    drop(upstream);
    drop(scratch);
    Ok(())
}

/// The gateway's `/stats` (DLB handoffs, pool reuse) after the load.
fn save_stats(admin: u16, path: &std::path::Path) {
    let fetched = (|| -> Result<Vec<u8>> {
        let mut c = http::Conn::connect(([127, 0, 0, 1], admin).into())?;
        use std::io::Write as _;
        c.stream
            .write_all(b"GET /stats HTTP/1.1\r\nhost: admin\r\n\r\n")?;
        Ok(c.read_response_body()?.1)
    })();
    match fetched.and_then(|body| Ok(std::fs::write(path, body)?)) {
        Ok(()) => {}
        Err(e) => eprintln!("could not save the gateway's /stats: {e}"),
    }
}

fn print_table(o: &Options, s: &[Summary]) {
    println!();
    println!(
        "Reverse proxies in front of one static nginx upstream ({} worker): wrk -t{} -c{} -d{}s, \
         then an open loop at {} req/s over {} connections ({} s); {} workers each; {} rounds, \
         order rotated; medians",
        o.upstream_workers,
        o.wrk_threads,
        o.connections,
        o.duration,
        o.rate,
        o.open_connections,
        o.duration,
        o.workers,
        o.rounds
    );
    println!();
    println!(
        "| system | req/s | p50 µs | p99 µs | errors | CPU µs/req | open p50 µs | open p99 µs | \
         open p99.9 µs | open errors | open CPU µs/req |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for x in s {
        println!("| {} | {} |", x.system, x.median.cells());
    }
    let find = |name: &str| s.iter().find(|x| x.system == name).map(|x| &x.median);
    let Some(g) = find("fulcrum-gateway") else {
        return;
    };
    for other in ["nginx", "tokio-proxy", "fulcrum-gateway-hyper"] {
        let Some(b) = find(other) else { continue };
        println!(
            "| **gateway ÷ {other}** | **{:.2}×** | {:.2}× | **{:.2}×** | | {:.2}× | {:.2}× | {:.2}× | {:.2}× | | {:.2}× |",
            g.rps / b.rps,
            g.p50_us / b.p50_us,
            g.p99_us / b.p99_us,
            g.cpu_us_per_req / b.cpu_us_per_req,
            g.open_p50_us / b.open_p50_us,
            g.open_p99_us / b.open_p99_us,
            g.open_p999_us / b.open_p999_us,
            g.open_cpu_us_per_req / b.open_cpu_us_per_req
        );
    }
    println!();
    println!(
        "Context switches of the proxy's threads per response (from /proc/<pid>/task/*/status; \
         nginx's workers counted), same runs; medians"
    );
    println!();
    println!("| system | closed loop | open loop |");
    println!("|---|---|---|");
    for x in s {
        println!(
            "| {} | {:.2} | {:.2} |",
            x.system, x.median.switches_per_req, x.median.open_switches_per_req
        );
    }
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    if let Some(n) = find("nginx") {
        let (rps, p99) = (g.rps / n.rps, g.p99_us / n.p99_us);
        println!();
        println!(
            "Goal (issue 7): requests/s ≥ 1.20 × nginx: {rps:.2}× ({}); p99 ≤ nginx: {p99:.2}× ({}).",
            verdict(rps >= 1.2),
            verdict(p99 <= 1.0)
        );
    }

    println!();
    println!(
        "HTTP/2 with prior knowledge (h2c): h2load -t{} -c{} -m{} -D{}, same rounds and order; \
         each proxy speaks HTTP/1.1 to the upstream; medians (the tokio proxy serves HTTP/1 only)",
        o.wrk_threads, o.h2_connections, o.h2_streams, o.duration
    );
    println!();
    println!("| system | req/s | p50 µs | p99 µs | errors | CPU µs/req |");
    println!("|---|---|---|---|---|---|");
    for x in s {
        println!("| {} | {} |", x.system, x.median.h2_cells());
    }
    if let Some(n) = find("nginx").filter(|n| n.h2_rps > 0.0 && g.h2_rps > 0.0) {
        let rps = g.h2_rps / n.h2_rps;
        println!(
            "| **gateway ÷ nginx** | **{rps:.2}×** | {:.2}× | **{:.2}×** | | {:.2}× |",
            g.h2_p50_us / n.h2_p50_us,
            g.h2_p99_us / n.h2_p99_us,
            g.h2_cpu_us_per_req / n.h2_cpu_us_per_req
        );
        println!();
        println!(
            "Goal (issue 18): HTTP/2 requests/s ≥ 1.0 × nginx: {rps:.2}× ({}).",
            verdict(rps >= 1.0)
        );
    }
}
