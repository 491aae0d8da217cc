//! The reports: a markdown table, `sim.json` and the p99 chart.

use std::fmt::Write as _;

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

/// A log-y line chart of p99 against worker count (x on a log2 scale).
pub fn svg(args: &Args, rows: &[Row]) -> String {
    let (w, h) = (820.0, 520.0);
    let (left, right, top, bottom) = (80.0, 190.0, 50.0, 60.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let p99s = rows.iter().map(|r| r.stats.p99).filter(|x| *x > 0.0);
    let lo = p99s.clone().fold(f64::INFINITY, f64::min);
    let hi = p99s.fold(0.0, f64::max);
    let (dlo, dhi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let mut ws = args.workers.clone();
    ws.sort_unstable();
    ws.dedup();
    let (xlo, xhi) = (
        (ws[0] as f64).log2(),
        (ws[ws.len() - 1] as f64)
            .log2()
            .max((ws[0] as f64).log2() + 1.0),
    );
    let x_of = |n: usize| left + ((n as f64).log2() - xlo) / (xhi - xlo) * pw;
    let y_of = |v: f64| top + ph - (v.log10() - dlo) / (dhi - dlo) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"13\">"
    );
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"28\" text-anchor=\"middle\" font-size=\"16\">Simulated p99 response \
         time, load {}, Pareto(α={}) costs (seed {})</text>",
        left + pw / 2.0,
        args.shape.load,
        args.shape.alpha,
        args.seed
    );
    // Y grid: decades, plus 2× and 5×.
    let mut d = dlo as i32;
    while d <= dhi as i32 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(d);
            if v.log10() > dhi + 1e-9 {
                continue;
            }
            let y = y_of(v);
            let major = m == 1.0;
            let _ = writeln!(
                s,
                "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{}\"/>",
                left + pw,
                if major { "#bbb" } else { "#eee" }
            );
            let label = if v >= 1000.0 {
                format!("{} ms", v / 1000.0)
            } else {
                format!("{v} µs")
            };
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"{}\">{label}</text>",
                left - 6.0,
                y + 4.0,
                if major { "#000" } else { "#888" }
            );
        }
        d += 1;
    }
    // X ticks.
    for &n in &ws {
        let x = x_of(n);
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\n\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{n}</text>",
            top + ph,
            top + ph + 18.0
        );
    }
    let _ = writeln!(
        s,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" \
         stroke=\"#000\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">workers (log scale)</text>\n\
         <text transform=\"translate(20,{:.1}) rotate(-90)\" text-anchor=\"middle\">\
         p99 response time (log scale)</text>",
        left + pw / 2.0,
        h - 15.0,
        top + ph / 2.0
    );
    for (li, p) in Policy::ALL.iter().enumerate() {
        let pts: Vec<(f64, f64)> = ws
            .iter()
            .filter_map(|&n| {
                rows.iter()
                    .find(|r| r.policy == *p && r.workers == n)
                    .map(|r| (x_of(n), y_of(r.stats.p99)))
            })
            .collect();
        let path: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let dash = if *p == Policy::Pooled {
            " stroke-dasharray=\"6,4\""
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash}/>",
            path.join(" "),
            p.color()
        );
        for (x, y) in &pts {
            let _ = writeln!(
                s,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\" fill=\"{}\"/>",
                p.color()
            );
        }
        let ly = top + 10.0 + li as f64 * 22.0;
        let lx = left + pw + 15.0;
        let _ = writeln!(
            s,
            "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{:.1}\" y2=\"{ly}\" stroke=\"{}\" \
             stroke-width=\"2\"{dash}/>\n<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            lx + 24.0,
            p.color(),
            lx + 30.0,
            ly + 4.0,
            p.name()
        );
    }
    s.push_str("</svg>\n");
    s
}
