//! The reports: a markdown table, `sim.json` and the p99 chart.

use std::fmt::Write as _;

use crate::chart::{bar_chart, Scale};
use crate::cli::Args;
use crate::sim::{Policy, Stats};

pub struct Row {
    pub policy: Policy,
    pub workers: usize,
    pub stats: Stats,
    pub vs_pooled: f64,
}

pub fn fmt_us(x: f64) -> String {
    if x >= 1000.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

pub fn markdown(args: &Args, rows: &[Row]) -> String {
    let s = &args.shape;
    let k = &args.knobs;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Simulated response time (load {}, seed {}, ~{} measured requests per run)\n\n\
         Pareto(α={}) request cost, mean {} µs; Poisson requests within connections, \
         {} per connection on average, each connection offering {}% of a worker; \
         Pareto(α={}) lifetimes. exact lock {} µs per accept; DLB CQ depth {}; \
         rescue after {} µs.\n",
        s.load,
        args.seed,
        args.requests,
        s.alpha,
        s.mean_us,
        s.conn_requests,
        s.conn_share * 100.0,
        s.life_alpha,
        k.lock_us,
        k.cq_depth,
        k.rescue_us,
    );
    out.push_str(
        "| policy | workers | p50 (µs) | p99 (µs) | p99.9 (µs) | util mean | util max/mean | p99 / pooled p99 |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let st = &r.stats;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.3} | {:.2} | {:.2}× |",
            r.policy.name(),
            r.workers,
            fmt_us(st.p50),
            fmt_us(st.p99),
            fmt_us(st.p999),
            st.util_mean,
            st.util_max / st.util_mean,
            r.vs_pooled,
        );
    }
    out.push_str("\n## p99 as a multiple of the ideal pooled (M/G/c) p99\n\n| policy |");
    for w in &args.workers {
        let _ = write!(out, " {w} workers |");
    }
    out.push_str("\n|---|");
    for _ in &args.workers {
        out.push_str("---:|");
    }
    out.push('\n');
    for p in Policy::ALL {
        let _ = write!(out, "| {} |", p.name());
        for &w in &args.workers {
            match rows.iter().find(|r| r.policy == p && r.workers == w) {
                Some(r) => {
                    let _ = write!(out, " {:.2}× |", r.vs_pooled);
                }
                None => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    out
}

pub fn json(rows: &[Row]) -> String {
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            let s = &r.stats;
            format!(
                "  {{\"policy\": \"{}\", \"workers\": {}, \"p50_us\": {:.3}, \"p99_us\": {:.3}, \
                 \"p999_us\": {:.3}, \"util_mean\": {:.5}, \"util_max\": {:.5}, \
                 \"p99_vs_pooled\": {:.4}}}",
                r.policy.id(),
                r.workers,
                s.p50,
                s.p99,
                s.p999,
                s.util_mean,
                s.util_max,
                r.vs_pooled
            )
        })
        .collect();
    format!("[\n{}\n]\n", items.join(",\n"))
}

/// The p99 chart, on a log scale: one group of bars per policy, one bar
/// per worker count (missing where a run did not happen).
pub fn svg(args: &Args, rows: &[Row]) -> String {
    let mut workers = args.workers.clone();
    workers.sort_unstable();
    workers.dedup();
    let groups: Vec<(String, Vec<f64>)> = Policy::ALL
        .iter()
        .map(|&p| {
            let p99s = workers
                .iter()
                .map(|&w| {
                    rows.iter()
                        .find(|r| r.policy == p && r.workers == w)
                        .map_or(f64::NAN, |r| r.stats.p99)
                })
                .collect();
            (p.name().to_string(), p99s)
        })
        .collect();
    let series: Vec<String> = workers.iter().map(|w| format!("{w} workers")).collect();
    let title = format!(
        "Simulated p99 response time, load {}, Pareto(α={}) costs (seed {})",
        args.shape.load, args.shape.alpha, args.seed
    );
    bar_chart(
        &title,
        "p99 response time (µs, log scale)",
        &groups,
        &series,
        Scale::Log,
    )
}
