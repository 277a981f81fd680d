//! The HTML report (`--html PATH`): one self-contained file, no script and no
//! external resource, with the summary, the thresholds, and SVG plots of
//! connections per node and pickup p99 over time and of failures by reason, the
//! faults marked on the time axis.
//!
//! The plots are drawn as plain SVG here: a polyline per series and a few
//! labels. A plotting crate would need a font backend to measure its labels,
//! which this machine-independent file does not need.

use std::fmt::Write as _;

use crate::counts::Counts;
use crate::report::Report;
use crate::timeline::{p99_ms, CoverageSample};

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 50.0;
const BOTTOM: f64 = 30.0;
const TOP: f64 = 15.0;
const COLOURS: [&str; 8] = [
    "#3b6fd4", "#3aa76d", "#e0a030", "#9b59b6", "#16a3b8", "#d6457a", "#7a8b99", "#5c4033",
];

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A line plot: `series` of (seconds, value) over `[0, end]`, faults at `marks`.
fn line_plot(
    title: &str,
    unit: &str,
    end: f64,
    series: &[(String, Vec<(f64, f64)>)],
    marks: &[(f64, String)],
) -> String {
    let max = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|(_, v)| *v))
        .fold(0.0_f64, f64::max)
        .max(1.0)
        * 1.1;
    let end = end.max(1.0);
    let x = |t: f64| LEFT + (t / end) * (WIDTH - LEFT - 10.0);
    let y = |v: f64| TOP + (1.0 - v / max) * (HEIGHT - TOP - BOTTOM);
    let mut svg = format!(
        r#"<figure><figcaption>{}</figcaption><svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">"#,
        escape(title)
    );
    let _ = write!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="#fff" stroke="#ccd"/>"##,
        WIDTH - LEFT - 10.0,
        HEIGHT - TOP - BOTTOM
    );
    for step in 0..=4 {
        let value = max * f64::from(step) / 4.0;
        let _ = write!(
            svg,
            r##"<text x="{}" y="{}" font-size="10" text-anchor="end" fill="#556">{value:.1}</text>"##,
            LEFT - 4.0,
            y(value) + 3.0
        );
        let t = end * f64::from(step) / 4.0;
        let label = if t >= 20.0 {
            format!("{t:.0}")
        } else {
            format!("{t:.1}")
        };
        let _ = write!(
            svg,
            r##"<text x="{}" y="{}" font-size="10" text-anchor="middle" fill="#556">{label} s</text>"##,
            x(t),
            HEIGHT - BOTTOM + 14.0
        );
    }
    let _ = write!(
        svg,
        r##"<text x="4" y="{}" font-size="10" fill="#556">{}</text>"##,
        TOP + 8.0,
        escape(unit)
    );
    for (at, what) in marks {
        let _ = write!(
            svg,
            r##"<line class="fault" x1="{0:.1}" x2="{0:.1}" y1="{TOP}" y2="{1}" stroke="#d64545" stroke-dasharray="4 3"/><text x="{2:.1}" y="{3}" font-size="10" fill="#d64545">{4}</text>"##,
            x(*at),
            HEIGHT - BOTTOM,
            x(*at) + 3.0,
            TOP + 10.0,
            escape(what)
        );
    }
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline class="series" points="{}" fill="none" stroke="{colour}" stroke-width="1.8"/>"#,
            path.join(" ")
        );
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" font-size="11" fill="{colour}">{}</text>"#,
            LEFT + 8.0 + 90.0 * i as f64,
            HEIGHT - 4.0,
            escape(name)
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

/// Horizontal bars of failures by reason.
fn bars(title: &str, values: &[(String, u64)]) -> String {
    let max = values.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1) as f64;
    let row = 22.0;
    let height = 20.0 + row * values.len().max(1) as f64;
    let mut svg = format!(
        r#"<figure><figcaption>{}</figcaption><svg class="plot" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg">"#,
        escape(title)
    );
    if values.is_empty() {
        svg.push_str(
            r##"<text x="10" y="20" font-size="12" fill="#3aa76d">no request failed</text>"##,
        );
    }
    for (i, (reason, count)) in values.iter().enumerate() {
        let y = 10.0 + row * i as f64;
        let width = (*count as f64 / max) * (WIDTH - 260.0);
        let _ = write!(
            svg,
            r##"<text x="190" y="{0:.1}" font-size="12" text-anchor="end">{1}</text><rect class="bar" x="200" y="{2:.1}" width="{width:.1}" height="16" fill="#d64545"/><text x="{3:.1}" y="{0:.1}" font-size="12">{count}</text>"##,
            y + 12.0,
            escape(reason),
            y,
            205.0 + width
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

/// The whole report as one HTML file.
pub fn render(
    report: &Report,
    samples: &[CoverageSample],
    counts: &Counts,
    nodes: &[String],
) -> String {
    // The pickup series runs per second of the ledger, which may outlast the samples.
    let end = samples
        .last()
        .map_or(0.0, |s| s.t.as_secs_f64())
        .max(counts.seconds.len() as f64);
    let marks: Vec<(f64, String)> = report
        .faults
        .iter()
        .map(|f| {
            (
                f.at_s,
                f.fault.split(" at ").next().unwrap_or(&f.fault).to_string(),
            )
        })
        .collect();
    let connections: Vec<(String, Vec<(f64, f64)>)> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let points = samples
                .iter()
                .map(|s| {
                    (
                        s.t.as_secs_f64(),
                        s.connections.get(i).copied().unwrap_or(0) as f64,
                    )
                })
                .collect();
            (node.clone(), points)
        })
        .collect();
    let pickup = vec![(
        "pickup p99 (ms)".to_string(),
        counts
            .seconds
            .iter()
            .enumerate()
            .map(|(second, c)| (second as f64 + 0.5, p99_ms(&c.pickups_us)))
            .collect::<Vec<_>>(),
    )];
    let failures: Vec<(String, u64)> = report
        .failures_by_reason
        .iter()
        .map(|(reason, count)| (reason.clone(), *count))
        .collect();

    let title = report.name.as_deref().unwrap_or("run");
    let mut html = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>octopoll report: {}</title><style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d2330; }}
pre {{ background: #f6f7f9; padding: 1em; border-radius: 6px; }}
.passed {{ color: #3aa76d; }} .breached {{ color: #d64545; font-weight: bold; }}
figure {{ margin: 1em 0; }} figcaption {{ font-weight: bold; margin-bottom: .3em; }}
</style></head><body><h1>octopoll report: {}</h1>"#,
        escape(title),
        escape(title)
    );
    let verdicts = if report.thresholds.is_empty() {
        "<p>No thresholds set.</p>".to_string()
    } else {
        let items: Vec<String> = report
            .thresholds
            .iter()
            .map(|v| {
                let class = if v.passed { "passed" } else { "breached" };
                format!(r#"<li class="{class}">{}</li>"#, escape(&v.to_string()))
            })
            .collect();
        let verdict = report.verdict().unwrap_or_default();
        let class = if verdict.starts_with("PASSED") {
            "passed"
        } else {
            "breached"
        };
        format!(
            "<p id=\"verdict\" class=\"{class}\">{}</p><ul id=\"thresholds\">{}</ul>",
            escape(&verdict),
            items.join("")
        )
    };
    let _ = write!(
        html,
        "<h2>Summary</h2><pre id=\"summary\">{}</pre><h2>Thresholds</h2>{verdicts}<h2>Over time</h2>",
        escape(&report.to_string())
    );
    html.push_str(&line_plot(
        "Connections per node",
        "connections",
        end,
        &connections,
        &marks,
    ));
    html.push_str(&line_plot(
        "Pickup p99 per second",
        "ms",
        end,
        &pickup,
        &marks,
    ));
    html.push_str(&bars("Failures by reason", &failures));
    html.push_str("</body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_escape_text_and_mark_faults() {
        let svg = line_plot(
            "a <b> & c",
            "n",
            10.0,
            &[("node-1".into(), vec![(0.0, 1.0), (10.0, 2.0)])],
            &[(5.0, "kill node-2".into())],
        );
        assert!(svg.contains("a &lt;b&gt; &amp; c"), "{svg}");
        assert_eq!(svg.matches("class=\"series\"").count(), 1);
        assert_eq!(svg.matches("class=\"fault\"").count(), 1);
        let empty = bars("Failures", &[]);
        assert!(empty.contains("no request failed"));
        assert_eq!(p99_ms(&[1000, 2000, 3000]), 3.0);
    }
}
