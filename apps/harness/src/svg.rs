//! `report.svg`: three panels over the run's seconds (latency percentiles,
//! throughput, errors), hand-written SVG (no plotting dependency), with the
//! nemesis's faults as marks on the time axis.

use std::fmt::Write;

use serde_json::Value;

const W: f64 = 960.0;
const PANEL_H: f64 = 200.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const GAP: f64 = 50.0;

struct Line<'a> {
    name: &'a str,
    color: &'a str,
    values: Vec<f64>,
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[allow(clippy::too_many_arguments)]
fn panel(
    out: &mut String,
    y0: f64,
    title: &str,
    unit: &str,
    lines: &[Line<'_>],
    bars: bool,
    marks: &[(f64, String)],
    secs: usize,
) {
    let x1 = W - RIGHT;
    let max = nice_max(
        lines
            .iter()
            .flat_map(|l| l.values.iter().copied())
            .fold(0.0, f64::max),
    );
    let n = secs.max(1) as f64;
    let x = |t: f64| LEFT + (x1 - LEFT) * t / n;
    let y = |v: f64| y0 + PANEL_H - PANEL_H * (v / max).min(1.0);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{}" font-size="14" font-weight="bold">{}</text>"#,
        y0 - 8.0,
        esc(title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{y0}" width="{}" height="{PANEL_H}" fill="#fafafa" stroke="#999"/>"##,
        x1 - LEFT
    );
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let yy = y(v);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{x1}" y2="{yy:.1}" stroke="#e0e0e0"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{} {}</text>"##,
            LEFT - 4.0,
            yy + 4.0,
            fmt_num(v),
            unit
        );
    }
    let step = ((n / 10.0).ceil() as usize).max(1);
    for t in (0..=secs).step_by(step) {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{t}s</text>"#,
            x(t as f64),
            y0 + PANEL_H + 14.0
        );
    }
    for (t, label) in marks {
        let xx = x(*t);
        let _ = writeln!(
            out,
            r##"<line x1="{xx:.1}" y1="{y0}" x2="{xx:.1}" y2="{:.1}" stroke="#d08000" stroke-dasharray="3,3" opacity="0.6"><title>{}</title></line>"##,
            y0 + PANEL_H,
            esc(label)
        );
    }
    for (k, l) in lines.iter().enumerate() {
        if bars {
            let bw = ((x1 - LEFT) / n * 0.8).max(1.0);
            for (t, v) in l.values.iter().enumerate() {
                if *v > 0.0 {
                    let _ = writeln!(
                        out,
                        r#"<rect x="{:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" fill="{}"/>"#,
                        x(t as f64),
                        y(*v),
                        y0 + PANEL_H - y(*v),
                        l.color
                    );
                }
            }
        } else {
            let pts: Vec<String> = l
                .values
                .iter()
                .enumerate()
                .map(|(t, v)| format!("{:.1},{:.1}", x(t as f64 + 0.5), y(*v)))
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
                l.color,
                pts.join(" ")
            );
        }
        let lx = x1 - 110.0;
        let ly = y0 + 14.0 + 14.0 * k as f64;
        let _ = writeln!(
            out,
            r#"<rect x="{lx}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{}" y="{ly:.1}" font-size="11">{}</text>"#,
            ly - 9.0,
            l.color,
            lx + 14.0,
            esc(l.name)
        );
    }
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Renders the time series (as in `report.json`) with fault marks
/// `(seconds, label)`.
pub fn render(title: &str, series: &[Value], marks: &[(f64, String)]) -> String {
    let col = |k: &str| -> Vec<f64> {
        series
            .iter()
            .map(|s| s[k].as_f64().unwrap_or(0.0))
            .collect()
    };
    let secs = series.len();
    let h = TOP + 3.0 * (PANEL_H + GAP) + 10.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="20" font-size="16" font-weight="bold">{}</text>"#,
        esc(title)
    );
    let mut y0 = TOP + 10.0;
    panel(
        &mut out,
        y0,
        "latency of successful operations, per second",
        "ms",
        &[
            Line {
                name: "p50",
                color: "#1f77b4",
                values: col("p50_ms"),
            },
            Line {
                name: "p90",
                color: "#2ca02c",
                values: col("p90_ms"),
            },
            Line {
                name: "p99",
                color: "#d62728",
                values: col("p99_ms"),
            },
        ],
        false,
        marks,
        secs,
    );
    y0 += PANEL_H + GAP;
    panel(
        &mut out,
        y0,
        "throughput (successful operations per second)",
        "/s",
        &[Line {
            name: "ops/s",
            color: "#1f77b4",
            values: col("ok"),
        }],
        false,
        marks,
        secs,
    );
    y0 += PANEL_H + GAP;
    panel(
        &mut out,
        y0,
        "errors per second",
        "/s",
        &[Line {
            name: "errors",
            color: "#d62728",
            values: col("errors"),
        }],
        true,
        marks,
        secs,
    );
    out.push_str("</svg>\n");
    out
}
