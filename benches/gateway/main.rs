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
//! generated `X-Request-Id` (the upstream echoes them).
//!
//! Load, per system and round, the systems' order rotated each round:
//! wrk's closed loop (`wrk -t<wrk-threads> -c<connections> -d<duration>s
//! --latency`), then an open loop (`--rate` requests/s over
//! `--open-connections` keep-alive connections for `--duration` s, latency
//! from each request's scheduled send time: no coordinated omission;
//! `benches/common/http.rs`). One wrk warm-up of `--warmup` s per system
//! first. CPU is read from `/proc/<pid>/stat` of the proxy's processes
//! (nginx: master and workers) around each load.
//!
//! Output: a markdown table (medians over the rounds, ratios to nginx and
//! to the tokio proxy) on stdout, `target/bench/gateway.json` (`--out`),
//! and in `target/bench/gateway/` the raw wrk output of every run and the
//! gateway's `/stats` at the end.
//!
//! Options (defaults): `--workers 2 --upstream-workers 1 --rounds 3
//! --duration 10 --warmup 3 --wrk-threads 2 --connections 64 --rate 4000
//! --open-connections 16 --systems fulcrum-gateway,nginx,tokio-proxy
//! --gateway-bin <target>/release/examples/gateway`. The defaults take
//! about 3.5 minutes. On the 2-core reference machine wrk, the proxy and
//! the upstream share the cores: compare the ratios, not the absolute
//! figures.
//!
//! Goal (issue 7): gateway requests/s ≥ 1.2 × nginx, gateway p99 ≤ nginx.

#[path = "../common/http.rs"]
mod http;
mod systems;
mod tokio_proxy;

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
    systems: Vec<&'static str>,
    gateway_bin: PathBuf,
    out: PathBuf,
}

fn target_dir() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        const KNOWN: [&str; 12] = [
            "--workers",
            "--upstream-workers",
            "--rounds",
            "--duration",
            "--warmup",
            "--wrk-threads",
            "--connections",
            "--rate",
            "--open-connections",
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
    /// The open loop at the fixed rate.
    open_ok: u64,
    open_p50_us: f64,
    open_p99_us: f64,
    open_p999_us: f64,
    open_errors: u64,
    open_cpu_us_per_req: f64,
}

impl Figures {
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
            open_ok: m(|f| f.open_ok as f64) as u64,
            open_p50_us: m(|f| f.open_p50_us),
            open_p99_us: m(|f| f.open_p99_us),
            open_p999_us: m(|f| f.open_p999_us),
            open_errors: sum(|f| f.open_errors),
            open_cpu_us_per_req: m(|f| f.open_cpu_us_per_req),
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
        if old.file_name().to_string_lossy().starts_with("wrk-") {
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
    for &s in &o.systems {
        let p = match s {
            "fulcrum-gateway" => {
                let (port, admin) = (systems::free_port()?, systems::free_port()?);
                admin_port = Some(admin);
                let conf = dir.join("gateway.toml");
                std::fs::write(
                    &conf,
                    systems::gateway_conf(port, admin, up_port, o.workers),
                )?;
                let mut cmd = Command::new(&o.gateway_bin);
                cmd.arg("--config").arg(&conf);
                if std::env::var_os("RUST_LOG").is_none() {
                    cmd.env("RUST_LOG", "warn");
                }
                Proc::spawn(s, cmd, &dir, port, false)?
            }
            "nginx" => {
                let port = systems::free_port()?;
                let conf = systems::nginx_proxy_conf(&dir, port, up_port, o.workers);
                Proc::spawn(s, nginx_cmd("nginx", conf)?, &dir, port, true)?
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
            let (cpu0, up0) = (p.cpu(), upstream.cpu());
            let (w, text) = http::wrk(&url(p), o.wrk_threads, o.connections, o.duration)?;
            std::fs::write(raw_dir.join(format!("wrk-{}-{round}.txt", p.name)), text)?;
            let (cpu1, up1) = (p.cpu(), upstream.cpu());
            let ol = open.run(p.addr);
            let cpu2 = p.cpu();
            let per_req = |cpu: Duration, n: u64| cpu.as_secs_f64() * 1e6 / n.max(1) as f64;
            let r = Figures {
                rps: w.rps,
                p50_us: w.p50_ms * 1e3,
                p99_us: w.p99_ms * 1e3,
                errors: w.errors,
                cpu_us_per_req: per_req(cpu1.saturating_sub(cpu0), w.requests),
                upstream_cpu_us_per_req: per_req(up1.saturating_sub(up0), w.requests),
                open_ok: ol.ok,
                open_p50_us: ol.percentile_ms(0.50) * 1e3,
                open_p99_us: ol.percentile_ms(0.99) * 1e3,
                open_p999_us: ol.percentile_ms(0.999) * 1e3,
                open_errors: ol.errors,
                open_cpu_us_per_req: per_req(cpu2.saturating_sub(cpu1), ol.ok),
            };
            eprintln!(
                "round {}/{} | {} | {} |",
                round + 1,
                o.rounds,
                p.name,
                r.cells()
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
    for other in ["nginx", "tokio-proxy"] {
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
    if let Some(n) = find("nginx") {
        let (rps, p99) = (g.rps / n.rps, g.p99_us / n.p99_us);
        let verdict = |ok: bool| if ok { "met" } else { "missed" };
        println!();
        println!(
            "Goal (issue 7): requests/s ≥ 1.20 × nginx: {rps:.2}× ({}); p99 ≤ nginx: {p99:.2}× ({}).",
            verdict(rps >= 1.2),
            verdict(p99 <= 1.0)
        );
    }
}
