//! The migration demo's plot: RTT and frame gaps over time, migrations marked, as SVG.
//!
//! Hand-written: two line panels with axes are a few dozen lines of SVG text, where a plotting
//! crate would bring a font stack and a dozen dependencies to the binary.

use std::fmt::Write as _;

const W: f64 = 960.0;
const PANEL_H: f64 = 240.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const GAP: f64 = 60.0;

/// One row of the loadgen's `--trace` CSV.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceRow {
    pub t_s: f64,
    pub max_gap_ms: f64,
    pub rtt_max_ms: f64,
    pub rtt_avg_ms: f64,
}

/// Parse the trace CSV by header names, skipping rows that do not parse.
pub fn parse_trace(csv: &str) -> Vec<TraceRow> {
    let mut lines = csv.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    let idx = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(t), Some(g), Some(rm), Some(ra)) = (
        idx("t_s"),
        idx("max_gap_ms"),
        idx("rtt_max_ms"),
        idx("rtt_avg_ms"),
    ) else {
        return Vec::new();
    };
    lines
        .filter_map(|l| {
            let f: Vec<f64> = l
                .split(',')
                .map(|x| x.trim().parse().unwrap_or(f64::NAN))
                .collect();
            let get = |i: usize| f.get(i).copied().filter(|v| v.is_finite());
            Some(TraceRow {
                t_s: get(t)?,
                max_gap_ms: get(g).unwrap_or(0.0),
                rtt_max_ms: get(rm).unwrap_or(0.0),
                rtt_avg_ms: get(ra).unwrap_or(0.0),
            })
        })
        .collect()
}

/// A "nice" axis maximum and step for values up to `max`.
fn nice_axis(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

/// One line: legend name, colour, (t, value) points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

struct Panel<'a> {
    top: f64,
    title: &'a str,
    series: Vec<Series<'a>>,
    hline: Option<(f64, &'a str)>,
}

fn draw_panel(svg: &mut String, p: &Panel, t_max: f64, marks_s: &[f64]) {
    let plot_w = W - LEFT - RIGHT;
    let y_data_max = p
        .series
        .iter()
        .flat_map(|(_, _, pts)| pts.iter().map(|(_, y)| *y))
        .chain(p.hline.map(|(y, _)| y))
        .fold(0.0, f64::max);
    let (y_max, y_step) = nice_axis(y_data_max * 1.05);
    let x = |t: f64| LEFT + t / t_max * plot_w;
    let y = |v: f64| p.top + PANEL_H - (v / y_max).min(1.0) * PANEL_H;
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="{:.1}" font-size="14" font-weight="bold">{}</text>"##,
        p.top - 8.0,
        p.title
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{:.1}" width="{plot_w:.1}" height="{PANEL_H}" fill="none" stroke="#888"/>"##,
        p.top
    );
    let mut v = 0.0;
    while v <= y_max + 1e-9 {
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            W - RIGHT,
            y(v),
            y(v),
            LEFT - 6.0,
            y(v) + 4.0,
            fmt_num(v)
        );
        v += y_step;
    }
    let (_, t_step) = nice_axis(t_max);
    let mut t = 0.0;
    while t <= t_max + 1e-9 {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"##,
            x(t),
            p.top + PANEL_H + 16.0,
            fmt_num(t)
        );
        t += t_step;
    }
    for m in marks_s {
        let _ = writeln!(
            svg,
            r##"<line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#d62728" stroke-dasharray="4 3"/>"##,
            x(*m),
            x(*m),
            p.top,
            p.top + PANEL_H
        );
    }
    if let Some((hv, label)) = p.hline {
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#2ca02c" stroke-dasharray="2 2"/><text x="{:.1}" y="{:.1}" font-size="11" fill="#2ca02c" text-anchor="end">{label}</text>"##,
            W - RIGHT,
            y(hv),
            y(hv),
            W - RIGHT - 4.0,
            y(hv) - 4.0
        );
    }
    for (i, (name, color, pts)) in p.series.iter().enumerate() {
        let mut d = String::new();
        for (t, v) in pts {
            let _ = write!(d, "{:.1},{:.1} ", x(*t), y(*v));
        }
        let _ = writeln!(
            svg,
            r##"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.2"/>"##,
            d.trim_end()
        );
        // Legend at the panel's top right, clear of the title.
        let lx = W - RIGHT - (p.series.len() - i) as f64 * 100.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{lx:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}" font-size="11">{name}</text>"##,
            lx + 18.0,
            p.top - 12.0,
            p.top - 12.0,
            lx + 22.0,
            p.top - 8.0
        );
    }
}

fn fmt_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}")
    }
}

/// The demo's plot from the loadgen trace (`t_s` counted from `start_ns`) with a dashed red
/// line at each migration start (`marks_ns`, CLOCK_MONOTONIC).
pub fn migration_svg(trace_csv: &str, start_ns: u64, marks_ns: &[u64], interval_ms: f64) -> String {
    let rows = parse_trace(trace_csv);
    let t_max = rows.iter().map(|r| r.t_s).fold(1.0, f64::max);
    let marks_s: Vec<f64> = marks_ns
        .iter()
        .map(|m| m.saturating_sub(start_ns) as f64 / 1e9)
        .collect();
    let h = TOP + 2.0 * PANEL_H + GAP + 40.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif">"##
    );
    let _ = writeln!(svg, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let pts = |f: fn(&TraceRow) -> f64| rows.iter().map(|r| (r.t_s, f(r))).collect::<Vec<_>>();
    draw_panel(
        &mut svg,
        &Panel {
            top: TOP,
            title: "Echo RTT per 100 ms (ms)",
            series: vec![
                ("max", "#ff7f0e", pts(|r| r.rtt_max_ms)),
                ("avg", "#1f77b4", pts(|r| r.rtt_avg_ms)),
            ],
            hline: None,
        },
        t_max,
        &marks_s,
    );
    draw_panel(
        &mut svg,
        &Panel {
            top: TOP + PANEL_H + GAP,
            title: "Longest gap between frames per 100 ms (ms); dashed red: migrations",
            series: vec![("max gap", "#9467bd", pts(|r| r.max_gap_ms))],
            hline: Some((interval_ms, "frame interval")),
        },
        t_max,
        &marks_s,
    );
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">time (s)</text>"##,
        LEFT + (W - LEFT - RIGHT) / 2.0,
        h - 8.0
    );
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_parses_by_header_and_plot_marks_migrations() {
        let csv = "t_s,frames,max_gap_ms,rtt_max_ms,rtt_avg_ms\n0.1,200,2.1,0.4,0.3\n0.2,190,9.5,3.0,0.5\nbad,row\n";
        let rows = parse_trace(csv);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].max_gap_ms, 9.5);
        let svg = migration_svg(csv, 0, &[150_000_000], 2.0);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        // One migration mark per panel, and three data series.
        assert_eq!(svg.matches("stroke=\"#d62728\"").count(), 2);
        assert_eq!(svg.matches("<polyline").count(), 3);
    }

    #[test]
    fn nice_axes() {
        assert_eq!(nice_axis(9.5), (10.0, 2.0));
        assert_eq!(nice_axis(0.0), (1.0, 0.2));
        assert_eq!(nice_axis(430.0), (500.0, 100.0));
    }
}
