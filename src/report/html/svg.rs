//! SVG building blocks of the report page: axes, legends, bar charts, histograms.

use super::*;

pub(super) const W: f64 = 640.0;
pub(super) const H: f64 = 300.0;
pub(super) const LEFT: f64 = 72.0;
pub(super) const RIGHT: f64 = 16.0;
pub(super) const TOP: f64 = 30.0;
pub(super) const BOTTOM: f64 = 64.0;
pub(super) const COLORS: [&str; 3] = ["#3b6fb6", "#e08a2e", "#4f9d69"];

/// Evenly spaced "nice" ticks (1, 2, 5 × 10^k) covering `[lo, hi]`.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else if hi == 0.0 {
        (0.0, 1.0)
    } else {
        (lo - hi.abs() * 0.1, hi + hi.abs() * 0.1)
    };
    let raw_step = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw_step.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw_step)
        .unwrap_or(10.0 * mag);
    let a = (lo / step).floor() as i64;
    let b = (hi / step).ceil() as i64;
    (a..=b).map(|i| i as f64 * step).collect()
}

pub(super) fn svg_open(out: &mut String, id: &str, label: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" id="svg-{id}" viewBox="0 0 {W} {H}" role="img" aria-label="{}">"#,
        esc(label)
    );
}

/// A message in place of a plot (nothing to draw).
pub(super) fn note_svg(id: &str, label: &str, lines: &[String], value: Option<&Value>) -> String {
    let mut s = String::new();
    svg_open(&mut s, id, label);
    let _ = write!(
        s,
        r##"<rect x="1" y="1" width="{}" height="{}" fill="#fafafa" stroke="#ddd"/>"##,
        W - 2.0,
        H - 2.0
    );
    for (i, l) in lines.iter().enumerate() {
        let dv = match (i, value) {
            (0, Some(v)) => format!(r#" class="value" data-value="{}""#, esc(&raw(v))),
            _ => String::new(),
        };
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="{}"{dv}>{}</text>"#,
            W / 2.0,
            H / 2.0 - 10.0 + 24.0 * i as f64,
            if i == 0 { 18 } else { 13 },
            esc(l)
        );
    }
    s.push_str("</svg>");
    s
}

/// Y axis with grid lines; returns the value → y mapping bounds.
pub(super) fn y_axis(s: &mut String, ticks: &[f64], y_label: &str) -> (f64, f64) {
    let (lo, hi) = (ticks[0], *ticks.last().unwrap_or(&1.0));
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - (v - lo) / (hi - lo).max(f64::MIN_POSITIVE));
    for &t in ticks {
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{}" y="{:.1}" text-anchor="end" font-size="11" fill="#444">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y(t) + 4.0,
            esc(&short(t)),
            y = y(t)
        );
    }
    let _ = write!(
        s,
        r##"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{}" stroke="#888"/><line x1="{LEFT}" x2="{}" y1="{}" y2="{}" stroke="#888"/><text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle" font-size="12" fill="#222">{}</text>"##,
        H - BOTTOM,
        W - RIGHT,
        H - BOTTOM,
        H - BOTTOM,
        (TOP + H - BOTTOM) / 2.0,
        (TOP + H - BOTTOM) / 2.0,
        esc(y_label)
    );
    (lo, hi)
}

pub(super) fn x_label(s: &mut String, label: &str) {
    let _ = write!(
        s,
        r##"<text x="{}" y="{}" text-anchor="middle" font-size="12" fill="#222">{}</text>"##,
        (LEFT + W - RIGHT) / 2.0,
        H - 6.0,
        esc(label)
    );
}

pub(super) fn legend(s: &mut String, names: &[&str]) {
    if names.len() < 2 {
        return;
    }
    let mut x = LEFT + 4.0;
    for (i, n) in names.iter().enumerate() {
        let _ = write!(
            s,
            r##"<rect x="{x}" y="8" width="12" height="12" fill="{}"/><text x="{}" y="18" font-size="12" fill="#222">{}</text>"##,
            COLORS[i % COLORS.len()],
            x + 16.0,
            esc(n)
        );
        x += 24.0 + 7.0 * n.chars().count() as f64;
    }
}

/// One series of a bar chart: name and one JSON number per category.
pub(super) struct Series<'a> {
    pub name: &'a str,
    pub values: Vec<Value>,
}

/// Vertical (optionally stacked) bars, one group per category.
pub(super) fn bar_chart(
    id: &str,
    label: &str,
    categories: &[String],
    series: &[Series<'_>],
    stacked: bool,
    x_title: &str,
    y_title: &str,
) -> String {
    let n = categories.len();
    let top = bar_top(series, n, stacked);
    let mut s = String::new();
    svg_open(&mut s, id, label);
    let ticks = nice_ticks(0.0, top, 5);
    let (lo, hi) = y_axis(&mut s, &ticks, y_title);
    let ph = H - TOP - BOTTOM;
    let y = |v: f64| TOP + ph * (1.0 - (v - lo) / (hi - lo));
    let slot = (W - LEFT - RIGHT) / n.max(1) as f64;
    let groups = if stacked { 1 } else { series.len().max(1) };
    let bw = (slot * 0.8 / groups as f64).max(0.5);
    let rotate = n > 8 || categories.iter().any(|c| c.chars().count() > 9);
    for (i, cat) in categories.iter().enumerate() {
        let x0 = LEFT + slot * i as f64 + slot * 0.1;
        let mut base = 0.0;
        for (k, se) in series.iter().enumerate() {
            let v = num(&se.values[i]);
            let (x, y0, y1) = if stacked {
                let r = (x0, y(base + v), y(base));
                base += v;
                r
            } else {
                (x0 + bw * k as f64, y(v), y(0.0))
            };
            let _ = write!(
                s,
                r#"<rect class="bar" x="{x:.2}" y="{y0:.2}" width="{bw:.2}" height="{:.2}" fill="{}" data-series="{}" data-category="{}" data-value="{}"><title>{}: {} = {}</title></rect>"#,
                (y1 - y0).max(0.0),
                COLORS[k % COLORS.len()],
                esc(se.name),
                esc(cat),
                esc(&raw(&se.values[i])),
                esc(cat),
                esc(se.name),
                esc(&short(v))
            );
        }
        // Value labels over bars when there is room.
        if n <= 16 && (stacked || series.len() == 1) {
            let total: f64 = series.iter().map(|se| num(&se.values[i])).sum();
            let _ = write!(
                s,
                r##"<text x="{:.2}" y="{:.2}" text-anchor="middle" font-size="11" fill="#222">{}</text>"##,
                x0 + bw * groups as f64 / 2.0,
                y(total) - 4.0,
                esc(&short(total))
            );
        }
        category_label(&mut s, cat, LEFT + slot * (i as f64 + 0.5), rotate);
    }
    legend(&mut s, &series.iter().map(|x| x.name).collect::<Vec<_>>());
    x_label(&mut s, x_title);
    s.push_str("</svg>");
    s
}

/// The highest bar (or stack) over the `n` categories: the top of the value axis.
fn bar_top(series: &[Series<'_>], n: usize, stacked: bool) -> f64 {
    (0..n)
        .map(|i| {
            let vals = series.iter().map(|s| num(&s.values[i]));
            if stacked {
                vals.sum::<f64>()
            } else {
                vals.fold(0.0, f64::max)
            }
        })
        .fold(0.0, f64::max)
}

/// A category's name under its group of bars at `cx`, slanted when names would collide.
fn category_label(s: &mut String, cat: &str, cx: f64, rotate: bool) {
    let ly = H - BOTTOM + 14.0;
    if rotate {
        let _ = write!(
            s,
            r##"<text x="{cx:.2}" y="{ly}" transform="rotate(-35 {cx:.2} {ly})" text-anchor="end" font-size="10" fill="#444">{}</text>"##,
            esc(cat)
        );
    } else {
        let _ = write!(
            s,
            r##"<text x="{cx:.2}" y="{ly}" text-anchor="middle" font-size="11" fill="#444">{}</text>"##,
            esc(cat)
        );
    }
}

/// Label of a log2 histogram bin.
pub(super) fn bin_label(b: &Value) -> String {
    let (lo, hi) = (b["lo"].as_u64().unwrap_or(0), b["hi"].as_u64().unwrap_or(0));
    if lo == hi {
        format!("{lo}")
    } else {
        format!("{}–{}", short(lo as f64), short(hi as f64))
    }
}

pub(super) fn histogram(
    id: &str,
    label: &str,
    bins: &[Value],
    x_title: &str,
    y_title: &str,
) -> String {
    let cats: Vec<String> = bins.iter().map(bin_label).collect();
    let series = [Series {
        name: "count",
        values: bins.iter().map(|b| b["count"].clone()).collect(),
    }];
    bar_chart(id, label, &cats, &series, false, x_title, y_title)
}
