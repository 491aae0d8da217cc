//! SVG bar charts for the benchmark and simulator reports: groups of bars,
//! one colour per series, on a linear or a log₁₀ axis.

use std::fmt::Write as _;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

const COLORS: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f",
];

/// The value axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Linear,
    /// Log₁₀, for values that span decades (latencies); values ≤ 0 are
    /// drawn as missing.
    Log,
}

/// A bar chart: one group of bars per label, one series per colour;
/// values ≥ 0 (NaN drawn as missing).
pub fn bar_chart(
    title: &str,
    y_label: &str,
    groups: &[(String, Vec<f64>)],
    series: &[String],
    scale: Scale,
) -> String {
    let w = (160.0 + 70.0 * groups.len() as f64 * series.len().max(1) as f64 / 3.0).max(760.0);
    let h = 440.0;
    let (left, right, top, bottom) = (70.0, 20.0, 50.0, 90.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let finite = || {
        groups
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .filter(|x| x.is_finite() && (scale == Scale::Linear || *x > 0.0))
    };
    let max = finite().fold(0.0f64, f64::max);
    // The axis: [lo, hi] in linear units, or in decades for the log scale.
    let (lo, hi) = match scale {
        Scale::Linear => (0.0, if max > 0.0 { max * 1.1 } else { 1.0 }),
        Scale::Log => {
            let min = finite().fold(f64::INFINITY, f64::min);
            let lo = if min.is_finite() {
                min.log10().floor()
            } else {
                0.0
            };
            let hi = if max > 0.0 { max.log10().ceil() } else { 1.0 };
            (lo, hi.max(lo + 1.0))
        }
    };
    let pos = |v: f64| -> Option<f64> {
        let t = match scale {
            Scale::Linear => v / hi,
            Scale::Log if v > 0.0 => (v.log10() - lo) / (hi - lo),
            Scale::Log => return None,
        };
        Some(plot_h * t.clamp(0.0, 1.0))
    };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h}" viewBox="0 0 {w:.0} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{w:.0}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        w / 2.0,
        esc(title)
    );
    let ticks: Vec<f64> = match scale {
        Scale::Linear => (0..=5).map(|i| hi * f64::from(i) / 5.0).collect(),
        Scale::Log => (lo as i32..=hi as i32).map(|e| 10f64.powi(e)).collect(),
    };
    for v in ticks {
        let y = top + plot_h - pos(v).unwrap_or(0.0);
        let label = if v >= 1.0 || v == 0.0 {
            format!("{v:.0}")
        } else {
            format!("{v}")
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            left + plot_w,
            left - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">{}</text>"#,
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        esc(y_label)
    );
    let gw = plot_w / groups.len().max(1) as f64;
    for (gi, (label, vals)) in groups.iter().enumerate() {
        let gx = left + gw * gi as f64;
        let n = vals.len().max(1) as f64;
        let bw = (gw * 0.8) / n;
        for (i, &v) in vals.iter().enumerate() {
            let Some(bh) = v.is_finite().then(|| pos(v)).flatten() else {
                continue;
            };
            let x = gx + gw * 0.1 + bw * i as f64;
            let y = top + plot_h - bh;
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{bh:.1}" fill="{}"><title>{}: {v:.1}</title></rect>"#,
                (bw - 2.0).max(1.0),
                COLORS[i % COLORS.len()],
                esc(series.get(i).map_or("", String::as_str))
            );
            if n <= 1.0 || bw >= 28.0 {
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{v:.0}</text>"#,
                    x + bw / 2.0,
                    y - 4.0
                );
            }
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"#,
            gx + gw / 2.0,
            top + plot_h + 18.0,
            esc(label)
        );
    }
    let _ = writeln!(
        svg,
        r#"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/>"#,
        top + plot_h,
        left + plot_w,
        top + plot_h
    );
    if series.len() > 1 {
        for (i, s) in series.iter().enumerate() {
            let x = left + 120.0 * i as f64;
            let y = h - 22.0;
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{y:.1}">{}</text>"#,
                y - 10.0,
                COLORS[i % COLORS.len()],
                x + 16.0,
                esc(s)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}
