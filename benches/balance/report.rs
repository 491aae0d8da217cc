//! One run's figures, their medians over runs, the goals, and the JSON.

use fulcrum_test_support::median;

use crate::loadgen::{GenResult, Kind};

/// What one run of one system in one scenario measured.
pub struct RunResult {
    /// Responses per second, all clients.
    pub rps: f64,
    /// Light requests' latency percentiles, µs.
    pub light_p50_us: f64,
    pub light_p99_us: f64,
    pub light_p999_us: f64,
    /// p99 of every request, µs.
    pub p99_us: f64,
    /// Responses per second to the heavy clients (elephants included).
    pub heavy_rps: f64,
    pub accepts_per_s: f64,
    /// Connections and busy time (ms) per worker.
    pub conns: Vec<u64>,
    pub busy_ms: Vec<u64>,
    pub conn_spread: f64,
    pub busy_spread: f64,
    /// The server's CPU over the window (the process minus the load
    /// generator), % of all cores.
    pub server_cpu_pct: f64,
    /// The load generator's CPU, % of all cores.
    pub gen_cpu_pct: f64,
    /// Per answered request, over the window: tasks handed through the DLB
    /// queue, ready I/O events rescued from a busy worker, and I/O
    /// registrations that moved to another worker (NaN: not Fulcrum).
    pub handoffs_per_req: f64,
    pub rescues_per_req: f64,
    pub migrations_per_req: f64,
    /// Client-side failures.
    pub errors: u64,
    /// Server-side failures (I/O errors, accept errors, unknown worker).
    pub server_errors: u64,
    pub samples: Vec<String>,
}

/// Nearest-rank percentile of sorted samples (ns), in µs.
pub fn pct_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1_000.0
}

/// max ÷ mean (1.0 is perfectly even); NaN when there is nothing.
pub fn spread(v: &[u64]) -> f64 {
    let total: u64 = v.iter().sum();
    if v.is_empty() || total == 0 {
        return f64::NAN;
    }
    let mean = total as f64 / v.len() as f64;
    *v.iter().max().expect("non-empty") as f64 / mean
}

/// Light and all latencies, sorted, and totals, from the generator threads.
pub struct Latencies {
    pub light: Vec<u64>,
    pub all: Vec<u64>,
    pub done: u64,
    pub heavy_done: u64,
    pub errors: u64,
    pub gen_cpu: std::time::Duration,
    pub samples: Vec<String>,
}

impl Latencies {
    pub fn collect(results: Vec<GenResult>) -> Self {
        let mut l = Latencies {
            light: Vec::new(),
            all: Vec::new(),
            done: 0,
            heavy_done: 0,
            errors: 0,
            gen_cpu: std::time::Duration::ZERO,
            samples: Vec::new(),
        };
        for r in results {
            if r.kind == Kind::Light {
                l.light.extend_from_slice(&r.lat_ns);
            } else {
                l.heavy_done += r.done_in_window;
            }
            l.all.extend(r.lat_ns);
            l.done += r.done_in_window;
            l.errors += r.errors;
            l.gen_cpu += r.cpu;
            for s in r.samples {
                if l.samples.len() < 3 {
                    l.samples.push(s);
                }
            }
        }
        l.light.sort_unstable();
        l.all.sort_unstable();
        l
    }
}

/// The medians of a system's runs in one scenario.
pub struct Summary {
    pub scenario: String,
    pub system: &'static str,
    pub rps: f64,
    pub light_p50_us: f64,
    pub light_p99_us: f64,
    pub light_p999_us: f64,
    pub p99_us: f64,
    pub heavy_rps: f64,
    pub accepts_per_s: f64,
    pub conn_spread: f64,
    pub busy_spread: f64,
    pub server_cpu_pct: f64,
    pub gen_cpu_pct: f64,
    pub handoffs_per_req: f64,
    pub rescues_per_req: f64,
    pub migrations_per_req: f64,
    pub errors: u64,
    pub server_errors: u64,
    /// Every run's light p99, in run order (to show the spread).
    pub light_p99_runs: Vec<f64>,
    /// Connections and busy ms per worker of the run with the median
    /// light p99.
    pub conns: Vec<u64>,
    pub busy_ms: Vec<u64>,
}

pub fn summarize(scenario: &str, system: &'static str, runs: &[RunResult]) -> Summary {
    let m = |f: fn(&RunResult) -> f64| median(runs.iter().map(f));
    let mut by_p99: Vec<&RunResult> = runs.iter().collect();
    by_p99.sort_by(|a, b| a.light_p99_us.total_cmp(&b.light_p99_us));
    let mid = by_p99[by_p99.len() / 2];
    Summary {
        scenario: scenario.to_string(),
        system,
        rps: m(|r| r.rps),
        light_p50_us: m(|r| r.light_p50_us),
        light_p99_us: m(|r| r.light_p99_us),
        light_p999_us: m(|r| r.light_p999_us),
        p99_us: m(|r| r.p99_us),
        heavy_rps: m(|r| r.heavy_rps),
        accepts_per_s: m(|r| r.accepts_per_s),
        conn_spread: m(|r| r.conn_spread),
        busy_spread: m(|r| r.busy_spread),
        server_cpu_pct: m(|r| r.server_cpu_pct),
        gen_cpu_pct: m(|r| r.gen_cpu_pct),
        handoffs_per_req: m(|r| r.handoffs_per_req),
        rescues_per_req: m(|r| r.rescues_per_req),
        migrations_per_req: m(|r| r.migrations_per_req),
        errors: runs.iter().map(|r| r.errors).sum(),
        server_errors: runs.iter().map(|r| r.server_errors).sum(),
        light_p99_runs: runs.iter().map(|r| r.light_p99_us).collect(),
        conns: mid.conns.clone(),
        busy_ms: mid.busy_ms.clone(),
    }
}

pub fn fmt_f(x: f64, prec: usize) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:.prec$}")
    }
}

/// The markdown table's header.
pub const TABLE_HEADER: &str = "| scenario | system | req/s | light p50 µs | light p99 µs | \
     light p99.9 µs | all p99 µs | heavy req/s | accepts/s | conn spread | busy spread | \
     server cpu % | handoffs/req | rescues/req | migrations/req | errors (client/server) |\n\
     |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

impl Summary {
    /// One row of the markdown table.
    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |",
            self.scenario,
            self.system,
            fmt_f(self.rps, 0),
            fmt_f(self.light_p50_us, 0),
            fmt_f(self.light_p99_us, 0),
            fmt_f(self.light_p999_us, 0),
            fmt_f(self.p99_us, 0),
            fmt_f(self.heavy_rps, 0),
            fmt_f(self.accepts_per_s, 0),
            fmt_f(self.conn_spread, 2),
            fmt_f(self.busy_spread, 2),
            fmt_f(self.server_cpu_pct, 0),
            fmt_f(self.handoffs_per_req, 3),
            fmt_f(self.rescues_per_req, 3),
            fmt_f(self.migrations_per_req, 4),
            self.errors,
            self.server_errors
        )
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "scenario": self.scenario,
            "system": self.system,
            "rps": num(self.rps),
            "light_p50_us": num(self.light_p50_us),
            "light_p99_us": num(self.light_p99_us),
            "light_p999_us": num(self.light_p999_us),
            "light_p99_us_runs": self.light_p99_runs.iter().map(|&x| num(x)).collect::<Vec<_>>(),
            "p99_us": num(self.p99_us),
            "heavy_rps": num(self.heavy_rps),
            "accepts_per_s": num(self.accepts_per_s),
            "conn_spread": num(self.conn_spread),
            "busy_spread": num(self.busy_spread),
            "conns_per_worker": self.conns,
            "busy_ms_per_worker": self.busy_ms,
            "server_cpu_pct": num(self.server_cpu_pct),
            "loadgen_cpu_pct": num(self.gen_cpu_pct),
            "handoffs_per_req": num(self.handoffs_per_req),
            "rescues_per_req": num(self.rescues_per_req),
            "migrations_per_req": num(self.migrations_per_req),
            "client_errors": self.errors,
            "server_errors": self.server_errors,
        })
    }
}

/// A JSON number rounded to 3 decimals; null for NaN.
pub fn num(x: f64) -> serde_json::Value {
    serde_json::Number::from_f64((x * 1_000.0).round() / 1_000.0)
        .map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// One goal's verdict.
pub struct Verdict {
    pub name: String,
    pub value: f64,
    pub bound: f64,
    pub pass: Option<bool>,
}

impl Verdict {
    pub fn line(&self) -> String {
        match self.pass {
            None => format!("SKIP {}: not measured", self.name),
            Some(ok) => format!(
                "{} {}: {:.2} (bound {:.2})",
                if ok { "PASS" } else { "MISS" },
                self.name,
                self.value,
                self.bound
            ),
        }
    }
}

fn find<'a>(s: &'a [Summary], scenario: &str, system: &str) -> Option<&'a Summary> {
    s.iter()
        .find(|x| x.scenario == scenario && x.system == system)
}

/// A ratio goal `a ÷ b ≤ bound` (or `≥` when `!lower`), SKIP if either
/// side was not measured.
fn ratio_goal(name: String, a: f64, b: f64, bound: f64, lower: bool) -> Verdict {
    let value = a / b;
    let pass = (!value.is_nan()).then_some(if lower {
        value <= bound
    } else {
        value >= bound
    });
    Verdict {
        name,
        value,
        bound,
        pass,
    }
}

/// The Fulcrum systems the goals are about: the tokio-style accept loop
/// and `Server` in `Balance::Dlb` mode.
const FULCRUM: [&str; 2] = ["fulcrum-spawn", "fulcrum-dlb"];

/// Every goal that the measured systems allow checking.
pub fn goals(s: &[Summary]) -> Vec<Verdict> {
    let mut v = Vec::new();
    let get = |sc: &str, sy: &str, f: fn(&Summary) -> f64| find(s, sc, sy).map_or(f64::NAN, f);
    let mut scenarios: Vec<&str> = s.iter().map(|x| x.scenario.as_str()).collect();
    scenarios.dedup();
    for sc in scenarios.iter().copied() {
        let saturated = sc.starts_with("sat-");
        if !(saturated || sc == "skewed") {
            continue;
        }
        for sy in FULCRUM {
            let p99 = get(sc, sy, |x| x.light_p99_us);
            v.push(ratio_goal(
                format!("{sc} light p99 {sy} ÷ tokio"),
                p99,
                get(sc, "tokio", |x| x.light_p99_us),
                0.5,
                true,
            ));
            v.push(ratio_goal(
                format!("{sc} light p99 {sy} ÷ reuseport"),
                p99,
                get(sc, "fulcrum-reuseport", |x| x.light_p99_us),
                0.5,
                true,
            ));
            v.push(ratio_goal(
                format!("{sc} light p50 {sy} ÷ tokio"),
                get(sc, sy, |x| x.light_p50_us),
                get(sc, "tokio", |x| x.light_p50_us),
                1.0,
                true,
            ));
            if saturated {
                v.push(ratio_goal(
                    format!("{sc} light p99 {sy} ÷ threads"),
                    p99,
                    get(sc, "threads", |x| x.light_p99_us),
                    3.0,
                    true,
                ));
            }
        }
    }
    for sc in ["uniform", "skewed"] {
        for sy in FULCRUM {
            v.push(ratio_goal(
                format!("{sc} server cpu {sy} ÷ tokio"),
                get(sc, sy, |x| x.server_cpu_pct),
                get(sc, "tokio", |x| x.server_cpu_pct),
                1.1,
                true,
            ));
        }
    }
    for sy in FULCRUM {
        let value = get("uniform", sy, |x| x.conn_spread);
        v.push(Verdict {
            name: format!("uniform conn spread {sy} (64 connections at once)"),
            value,
            bound: 1.25,
            pass: (!value.is_nan()).then_some(value <= 1.25),
        });
    }
    let acc = |sy| get("churn", sy, |x| x.accepts_per_s);
    v.push(ratio_goal(
        "churn accepts/s fulcrum-dlb ÷ reuseport".into(),
        acc("fulcrum-dlb"),
        acc("fulcrum-reuseport"),
        0.95,
        false,
    ));
    v
}
