//! Latency-by-percentile plots (the HdrHistogram plotter's layout: a log scale of
//! 1/(1-percentile) across, latency up), as self-contained SVG; and the `.hgrm` text format.

use std::fmt::Write as _;
use std::fs;

use bidir::hdrhistogram::Histogram;

/// One line in a plot: (percentile 0..=1, latency in microseconds) points.
#[derive(Clone, Debug)]
pub(crate) struct Series {
    pub(crate) label: String,
    pub(crate) points: Vec<(f64, f64)>,
}

/// The `.hgrm` percentile distribution of a nanosecond histogram, values in milliseconds
/// (the unit wrk2 and HdrHistogram's plotter expect).
pub(crate) fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let p = v.quantile_iterated_to();
        let ms = v.value_iterated_to() as f64 / 1e6;
        if p < 1.0 {
            let _ = writeln!(out, "{ms:12.6} {p:14.12} {total:10} {:14.2}", 1.0 / (1.0 - p));
        } else {
            let _ = writeln!(out, "{ms:12.6} {p:14.12} {total:10}");
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.6}, StdDeviation   = {:12.6}]",
        h.mean() / 1e6,
        h.stdev() / 1e6
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.6}, Total count    = {:12}]",
        h.max() as f64 / 1e6,
        h.len()
    );
    out
}

/// Reads an `.hgrm` file back as a series (values in microseconds).
pub(crate) fn parse_hgrm(text: &str, label: &str) -> Result<Series, String> {
    let mut points = Vec::new();
    for line in text.lines() {
        let mut cols = line.split_whitespace();
        let (Some(value), Some(p)) = (cols.next(), cols.next()) else { continue };
        let (Ok(ms), Ok(p)) = (value.parse::<f64>(), p.parse::<f64>()) else { continue };
        points.push((p, ms * 1e3));
    }
    if points.is_empty() {
        return Err(format!("{label}: no percentile lines"));
    }
    Ok(Series { label: label.to_owned(), points })
}

/// A series from a nanosecond histogram.
pub(crate) fn series(h: &Histogram<u64>, label: &str) -> Series {
    let points = h
        .iter_quantiles(5)
        .map(|v| (v.quantile_iterated_to(), v.value_iterated_to() as f64 / 1e3))
        .collect();
    Series { label: label.to_owned(), points }
}

const COLORS: [&str; 8] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/// Where a percentile falls across: log10(1/(1-p)), with p = 1 drawn at `top`.
fn x_of(p: f64, top: f64) -> f64 {
    if p >= 1.0 { top } else { (1.0 / (1.0 - p)).log10().min(top) }
}

/// 1, 2 or 5 times a power of ten, at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let base = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * base).find(|c| *c >= v).unwrap_or(10.0 * base)
}

/// 1, 2 or 5 times a power of ten, at most `v`.
fn nice_floor(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let base = 10f64.powf(v.log10().floor());
    [5.0, 2.0, 1.0].iter().map(|m| m * base).find(|c| *c <= v).unwrap_or(base)
}

/// An SVG plot of the series; `log_y`: a logarithmic latency axis (for series that differ by
/// orders of magnitude).
pub(crate) fn svg(title: &str, series: &[Series], log_y: bool) -> String {
    let (w, h) = (860.0, 480.0);
    let (left, right, top, bottom) = (80.0, 44.0, 50.0, 60.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    // Across: up to the highest finite percentile any series reached (at least 99.9 %).
    let reached = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(p, _)| *p < 1.0)
        .map(|(p, _)| x_of(*p, 7.0))
        .fold(3.0f64, f64::max);
    let x_top = reached.ceil().min(7.0);
    let values = || series.iter().flat_map(|s| s.points.iter()).map(|(_, v)| *v);
    let y_max = nice_ceiling(values().fold(0.0, f64::max));
    let y_min = if log_y {
        nice_floor(values().filter(|v| *v > 0.0).fold(f64::MAX, f64::min)).min(y_max / 10.0)
    } else {
        0.0
    };
    let px = |p: f64| left + x_of(p, x_top) / x_top * pw;
    let py = |v: f64| {
        let frac = if log_y {
            (v.max(y_min).log10() - y_min.log10()) / (y_max.log10() - y_min.log10())
        } else {
            v / y_max
        };
        top + ph - frac.clamp(0.0, 1.0) * ph
    };
    let y_ticks: Vec<f64> = if log_y {
        let mut ticks = Vec::new();
        let mut decade = 10f64.powf(y_min.log10().floor());
        while decade <= y_max {
            for m in [1.0, 2.0, 5.0] {
                let v = decade * m;
                if v >= y_min * 0.999 && v <= y_max * 1.001 {
                    ticks.push(v);
                }
            }
            decade *= 10.0;
        }
        ticks
    } else {
        (0..=5).map(|i| y_max * f64::from(i) / 5.0).collect()
    };

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="24" font-size="15" text-anchor="middle">{}</text>"#,
        w / 2.0,
        escape(title)
    );
    // Grid and axes.
    for i in 0..=x_top as u32 {
        let x = left + f64::from(i) / x_top * pw;
        let label = match i {
            0 => "0%".to_owned(),
            i => format!("{}%", 100.0 - 100.0 / 10f64.powi(i as i32)),
        };
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{}" stroke="#ddd"/>"##,
            top + ph
        );
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{label}</text>"#,
            top + ph + 18.0
        );
    }
    for v in y_ticks {
        let y = py(v);
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/>"##,
            left + pw
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 6.0,
            y + 4.0,
            trim(v)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        left + pw / 2.0,
        h - 18.0
    );
    let _ = writeln!(
        out,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">latency (µs)</text>"#,
        top + ph / 2.0,
        top + ph / 2.0
    );
    let _ = writeln!(
        out,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    // Lines, then the legend.
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut path = String::new();
        for (j, (p, v)) in s.points.iter().enumerate() {
            let _ = write!(path, "{}{:.1},{:.1}", if j == 0 { "M" } else { " L" }, px(*p), py(*v));
        }
        let _ =
            writeln!(out, r#"<path d="{path}" fill="none" stroke="{color}" stroke-width="2"/>"#);
        let y = top + 16.0 + 18.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="3"/>"#,
            left + 12.0,
            left + 36.0
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}">{}</text>"#,
            left + 42.0,
            y + 4.0,
            escape(&s.label)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `bidir-load plot --out FILE.svg [--title TEXT] RUN.hgrm[:LABEL]...`
pub(crate) fn command(argv: &[String]) -> Result<(), String> {
    let mut out = None;
    let mut title = "latency by percentile".to_owned();
    let mut log_y = false;
    let mut series = Vec::new();
    let mut args = argv.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = args.next().cloned(),
            "--title" => title = args.next().cloned().ok_or("--title needs a value")?,
            "--log-y" => log_y = true,
            file => {
                let (path, label) = match file.rsplit_once(':') {
                    Some((path, label)) => (path, label.to_owned()),
                    None => (file, file.trim_end_matches(".hgrm").to_owned()),
                };
                let text = fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
                series.push(parse_hgrm(&text, &label)?);
            }
        }
    }
    let out = out.ok_or("--out is required")?;
    if series.is_empty() {
        return Err("no .hgrm file given".into());
    }
    fs::write(&out, svg(&title, &series, log_y)).map_err(|e| format!("{out}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_round_trips_and_plots() {
        let mut h = crate::run::histogram();
        for i in 1..=10_000u64 {
            h.record(i * 1_000).unwrap(); // 1 µs .. 10 ms
        }
        let text = hgrm(&h);
        assert!(text.contains("#[Max     ="));
        let s = parse_hgrm(&text, "x").unwrap();
        let (p_last, v_last) = *s.points.last().unwrap();
        assert_eq!(p_last, 1.0);
        assert!((v_last - 10_000.0).abs() / 10_000.0 < 0.01, "{v_last}");
        let median = s.points.iter().find(|(p, _)| *p >= 0.5).unwrap().1;
        assert!((median - 5_000.0).abs() / 5_000.0 < 0.01, "{median}");
        let svg = svg("a <title>", &[s.clone(), series(&h, "y")], false);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt;title&gt;") && svg.matches("<path").count() == 2);
        assert!(svg.contains("99.9%"));
        let log = super::svg("log", &[s], true);
        // Ticks at 1, 2, 5 per decade from 1 µs to 10 ms.
        for tick in [">1<", ">10<", ">100<", ">1000<", ">5000<", ">10000<"] {
            assert!(log.contains(tick), "{tick}");
        }
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(37.0), 50.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(nice_ceiling(1000.0), 1000.0);
        assert_eq!(nice_floor(37.0), 20.0);
        assert_eq!(nice_floor(0.7), 0.5);
    }
}
