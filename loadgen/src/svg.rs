//! The chart, written as plain SVG: latency over time (p50, p99 and max of each second, phase
//! starts marked) above the latency histogram of all phases (log-spaced bins).

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::histogram::Histogram;

const WIDTH: f64 = 900.0;
const PANEL: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;

/// Log-scale y axis between `lo` and `hi` milliseconds (decades).
struct LogAxis {
    lo: f64,
    hi: f64,
}

impl LogAxis {
    fn new(min_ms: f64, max_ms: f64) -> LogAxis {
        let lo = 10f64.powf(min_ms.max(0.01).log10().floor());
        let hi = 10f64.powf(max_ms.max(lo * 10.0).log10().ceil());
        LogAxis { lo, hi }
    }

    /// 0..1 along the axis.
    fn frac(&self, ms: f64) -> f64 {
        ((ms.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())).clamp(0.0, 1.0)
    }

    fn decades(&self) -> Vec<f64> {
        let mut v = Vec::new();
        let mut d = self.lo;
        while d <= self.hi * 1.0001 {
            v.push(d);
            d *= 10.0;
        }
        v
    }
}

fn label_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{}s", ms / 1000.0)
    } else if ms >= 1.0 {
        format!("{ms}ms")
    } else {
        format!("{}µs", (ms * 1000.0).round())
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Renders the chart. `phases` are (start µs since the epoch, label).
pub fn render(title: &str, seconds: &BTreeMap<u64, Histogram>, phases: &[(u64, String)], all: &Histogram) -> String {
    let height = PANEL * 2.0 + 120.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ =
        writeln!(s, r#"<text x="{}" y="20" text-anchor="middle" font-size="15">{}</text>"#, WIDTH / 2.0, escape(title));
    over_time(&mut s, 40.0, seconds, phases);
    histogram(&mut s, PANEL + 90.0, all);
    s.push_str("</svg>\n");
    s
}

fn over_time(s: &mut String, top: f64, seconds: &BTreeMap<u64, Histogram>, phases: &[(u64, String)]) {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = PANEL - 40.0;
    let _ = writeln!(s, r#"<text x="{LEFT}" y="{}">Delivery latency per second (p50, p99, max)</text>"#, top + 8.0);
    let y0 = top + 20.0;
    let (Some(first), Some(last)) = (seconds.keys().next().copied(), seconds.keys().next_back().copied()) else {
        let _ = writeln!(s, r#"<text x="{}" y="{}">no deliveries</text>"#, LEFT + 20.0, y0 + 40.0);
        return;
    };
    let t0 = phases.first().map_or(first, |(us, _)| (us / 1_000_000).min(first));
    let span = ((last - t0) as f64).max(1.0);
    let max_ms = seconds.values().map(|h| h.max() as f64 / 1000.0).fold(0.0, f64::max);
    let min_ms = seconds.values().map(|h| h.quantile(0.5) as f64 / 1000.0).fold(f64::MAX, f64::min);
    let axis = LogAxis::new(min_ms, max_ms);
    let x = |t: f64| LEFT + plot_w * (t - t0 as f64) / span;
    let y = |ms: f64| y0 + plot_h * (1.0 - axis.frac(ms));
    let _ =
        writeln!(s, r##"<rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>"##);
    for d in axis.decades() {
        let yy = y(d);
        let _ = writeln!(s, r##"<line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/>"##, LEFT + plot_w);
        let _ = writeln!(s, r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#, LEFT - 5.0, yy + 4.0, label_ms(d));
    }
    let step = (span / 10.0).ceil().max(1.0);
    let mut t = 0.0;
    while t <= span {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}s</text>"#,
            x(t0 as f64 + t),
            y0 + plot_h + 15.0,
            t
        );
        t += step;
    }
    for (us, label) in phases {
        let xx = x(*us as f64 / 1e6);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{y0}" y2="{}" stroke="#888" stroke-dasharray="4,3"/><text x="{:.1}" y="{}" fill="#555">{}</text>"##,
            y0 + plot_h,
            xx + 3.0,
            y0 + 12.0,
            escape(label)
        );
    }
    for (q, color, name) in [(0.5, "#1f77b4", "p50"), (0.99, "#ff7f0e", "p99"), (1.0, "#d62728", "max")] {
        let points: Vec<String> = seconds
            .iter()
            .map(|(sec, h)| {
                let ms = if q >= 1.0 { h.max() } else { h.quantile(q) } as f64 / 1000.0;
                format!("{:.1},{:.1}", x(*sec as f64 + 0.5), y(ms))
            })
            .collect();
        let _ =
            writeln!(s, r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#, points.join(" "));
        let lx = LEFT + plot_w - 150.0
            + 50.0
                * if q < 0.9 {
                    0.0
                } else if q < 1.0 {
                    1.0
                } else {
                    2.0
                };
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{}" width="10" height="10" fill="{color}"/><text x="{}" y="{}">{name}</text>"#,
            top - 2.0,
            lx + 14.0,
            top + 8.0
        );
    }
}

fn histogram(s: &mut String, top: f64, all: &Histogram) {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = PANEL - 40.0;
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="{}">Latency histogram, all phases ({} deliveries; share per bin)</text>"#,
        top + 8.0,
        all.count()
    );
    let y0 = top + 20.0;
    let _ =
        writeln!(s, r##"<rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>"##);
    if all.count() == 0 {
        return;
    }
    let axis = LogAxis::new(all.quantile(0.0) as f64 / 1000.0, all.max() as f64 / 1000.0);
    const PER_DECADE: f64 = 10.0;
    let bins = ((axis.hi.log10() - axis.lo.log10()) * PER_DECADE).round() as usize;
    let mut counts = vec![0u64; bins.max(1)];
    for (upper_us, c) in all.buckets() {
        let f = axis.frac(upper_us as f64 / 1000.0);
        let i = ((f * bins as f64) as usize).min(counts.len() - 1);
        counts[i] += c;
    }
    let top_share = counts.iter().copied().max().unwrap_or(1) as f64 / all.count() as f64;
    let bar_w = plot_w / counts.len() as f64;
    for (i, c) in counts.iter().enumerate() {
        if *c == 0 {
            continue;
        }
        let share = *c as f64 / all.count() as f64;
        let h = plot_h * share / top_share;
        let _ = writeln!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#4c78a8"><title>{:.2}%</title></rect>"##,
            LEFT + i as f64 * bar_w + 0.5,
            y0 + plot_h - h,
            (bar_w - 1.0).max(0.5),
            h,
            share * 100.0
        );
    }
    for d in axis.decades() {
        let xx = LEFT + plot_w * axis.frac(d);
        let _ =
            writeln!(s, r#"<text x="{xx:.1}" y="{}" text-anchor="middle">{}</text>"#, y0 + plot_h + 15.0, label_ms(d));
    }
    let _ =
        writeln!(s, r#"<text x="{}" y="{}" text-anchor="end">{:.1}%</text>"#, LEFT - 5.0, y0 + 10.0, top_share * 100.0);
    for (i, (q, name)) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")].into_iter().enumerate() {
        let xx = LEFT + plot_w * axis.frac(all.quantile(q) as f64 / 1000.0);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{y0}" y2="{}" stroke="#d62728" stroke-dasharray="3,3"/><text x="{:.1}" y="{}" fill="#d62728">{name}</text>"##,
            y0 + plot_h,
            xx + 3.0,
            y0 + 24.0 + 14.0 * i as f64
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_well_formed_svg() {
        let mut seconds = BTreeMap::new();
        let mut all = Histogram::new(crate::histogram::FINE_BITS);
        for sec in 100..110u64 {
            let mut h = Histogram::new(crate::histogram::COARSE_BITS);
            for v in [200, 900, 5_000 + sec] {
                h.record(v);
                all.record(v);
            }
            seconds.insert(sec, h);
        }
        let svg = render("t <1>", &seconds, &[(100_000_000, "5/s".into())], &all);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("t &lt;1&gt;") && svg.contains("polyline") && svg.contains("p99.9"));
        let empty = render("e", &BTreeMap::new(), &[], &Histogram::new(crate::histogram::FINE_BITS));
        assert!(empty.contains("no deliveries"));
    }
}
