//! `report.html`: one self-contained page (inline SVG and CSS; no script, no network) rendered
//! from `report.json`.
//!
//! The page is well-formed XML so tools can check it. Every plot is a `<section>` with a stable
//! id (`plot-objective`, `plot-stages`, `plot-workers`, `plot-user-degrees`,
//! `plot-item-degrees`, `plot-buckets`, `plot-candidates`) holding one `<svg>`; every drawn
//! value (point, bar, table cell) carries `data-value` with the number exactly as
//! `report.json` writes it, so a test can compare the two.

use serde_json::Value;
use std::fmt::Write as _;

mod spectrum;

/// Ids of the plots, in page order.
pub const PLOT_IDS: [&str; 7] = [
    "plot-objective",
    "plot-stages",
    "plot-workers",
    "plot-user-degrees",
    "plot-item-degrees",
    "plot-buckets",
    "plot-candidates",
];

const W: f64 = 640.0;
const H: f64 = 300.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 64.0;
const COLORS: [&str; 3] = ["#3b6fb6", "#e08a2e", "#4f9d69"];

/// Escapes text for XML/HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            // Control characters are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

/// The number exactly as `report.json` writes it (for `data-value`).
fn raw(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// A short human form of a number for labels: 1.23M, 45.6k, 0.0123, 7.
pub fn short(v: f64) -> String {
    let a = v.abs();
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if !v.is_finite() {
        "–".into()
    } else if a >= 1e9 {
        format!("{}G", trim(format!("{:.2}", v / 1e9)))
    } else if a >= 1e6 {
        format!("{}M", trim(format!("{:.2}", v / 1e6)))
    } else if a >= 1e4 {
        format!("{}k", trim(format!("{:.1}", v / 1e3)))
    } else if a >= 100.0 || v == v.trunc() {
        trim(format!("{v:.0}"))
    } else if a >= 1.0 {
        trim(format!("{v:.2}"))
    } else if a >= 1e-3 {
        trim(format!("{v:.4}"))
    } else {
        format!("{v:.2e}")
    }
}

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

fn svg_open(out: &mut String, id: &str, label: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" id="svg-{id}" viewBox="0 0 {W} {H}" role="img" aria-label="{}">"#,
        esc(label)
    );
}

/// A message in place of a plot (nothing to draw).
fn note_svg(id: &str, label: &str, lines: &[String], value: Option<&Value>) -> String {
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
fn y_axis(s: &mut String, ticks: &[f64], y_label: &str) -> (f64, f64) {
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

fn x_label(s: &mut String, label: &str) {
    let _ = write!(
        s,
        r##"<text x="{}" y="{}" text-anchor="middle" font-size="12" fill="#222">{}</text>"##,
        (LEFT + W - RIGHT) / 2.0,
        H - 6.0,
        esc(label)
    );
}

fn legend(s: &mut String, names: &[&str]) {
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
struct Series<'a> {
    name: &'a str,
    values: Vec<Value>,
}

/// Vertical (optionally stacked) bars, one group per category.
fn bar_chart(
    id: &str,
    label: &str,
    categories: &[String],
    series: &[Series<'_>],
    stacked: bool,
    x_title: &str,
    y_title: &str,
) -> String {
    let n = categories.len();
    let top = (0..n)
        .map(|i| {
            let vals = series.iter().map(|s| num(&s.values[i]));
            if stacked {
                vals.sum::<f64>()
            } else {
                vals.fold(0.0, f64::max)
            }
        })
        .fold(0.0, f64::max);
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
        let cx = LEFT + slot * (i as f64 + 0.5);
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
    legend(&mut s, &series.iter().map(|x| x.name).collect::<Vec<_>>());
    x_label(&mut s, x_title);
    s.push_str("</svg>");
    s
}

/// Label of a log2 histogram bin.
fn bin_label(b: &Value) -> String {
    let (lo, hi) = (b["lo"].as_u64().unwrap_or(0), b["hi"].as_u64().unwrap_or(0));
    if lo == hi {
        format!("{lo}")
    } else {
        format!("{}–{}", short(lo as f64), short(hi as f64))
    }
}

fn histogram(id: &str, label: &str, bins: &[Value], x_title: &str, y_title: &str) -> String {
    let cats: Vec<String> = bins.iter().map(bin_label).collect();
    let series = [Series {
        name: "count",
        values: bins.iter().map(|b| b["count"].clone()).collect(),
    }];
    bar_chart(id, label, &cats, &series, false, x_title, y_title)
}

/// Objective after each half-step, one line per half.
fn objective_plot(r: &Value) -> String {
    let id = "plot-objective";
    let pts: Vec<&Value> = r["objective"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if pts.is_empty() {
        return note_svg(
            id,
            "objective per iteration",
            &[
                "objective not computed".into(),
                "set als.loss_every = 1 to record it".into(),
            ],
            None,
        );
    }
    let it = |p: &Value| p["iteration"].as_f64().unwrap_or(0.0);
    let (xmin, xmax) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| {
        (a.min(it(p)), b.max(it(p)))
    });
    let (vmin, vmax) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| {
        (a.min(num(&p["value"])), b.max(num(&p["value"])))
    });
    let pad = ((vmax - vmin) * 0.05).max(vmax.abs() * 1e-6);
    let mut s = String::new();
    svg_open(&mut s, id, "objective per iteration");
    let ticks = nice_ticks(vmin - pad, vmax + pad, 5);
    let (lo, hi) = y_axis(&mut s, &ticks, "weighted objective");
    let pw = W - LEFT - RIGHT;
    let x = |v: f64| {
        if xmax > xmin {
            LEFT + 20.0 + (pw - 40.0) * (v - xmin) / (xmax - xmin)
        } else {
            LEFT + pw / 2.0
        }
    };
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - (v - lo) / (hi - lo));
    // Iteration ticks (at most ~12 labels).
    let step = ((xmax - xmin) / 12.0).ceil().max(1.0) as usize;
    let mut i = xmin as usize;
    while i as f64 <= xmax {
        let xi = x(i as f64);
        let _ = write!(
            s,
            r##"<line x1="{xi:.2}" x2="{xi:.2}" y1="{}" y2="{}" stroke="#888"/><text x="{xi:.2}" y="{}" text-anchor="middle" font-size="11" fill="#444">{i}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 5.0,
            H - BOTTOM + 18.0
        );
        i += step;
    }
    let halves = ["users", "items"];
    for (k, half) in halves.iter().enumerate() {
        let mine: Vec<&&Value> = pts.iter().filter(|p| p["half"] == *half).collect();
        if mine.is_empty() {
            continue;
        }
        let path: Vec<String> = mine
            .iter()
            .map(|p| format!("{:.2},{:.2}", x(it(p)), y(num(&p["value"]))))
            .collect();
        let _ = write!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
            path.join(" "),
            COLORS[k]
        );
        for p in mine {
            let _ = write!(
                s,
                r#"<circle class="point" cx="{:.2}" cy="{:.2}" r="3.5" fill="{}" data-iteration="{}" data-half="{half}" data-value="{}"><title>iteration {}, after the {half} half-step: {}</title></circle>"#,
                x(it(p)),
                y(num(&p["value"])),
                COLORS[k],
                raw(&p["iteration"]),
                esc(&raw(&p["value"])),
                raw(&p["iteration"]),
                esc(&format!("{:.6e}", num(&p["value"])))
            );
        }
    }
    legend(
        &mut s,
        &["after the users half-step", "after the items half-step"],
    );
    x_label(&mut s, "iteration");
    s.push_str("</svg>");
    s
}

fn stages_plot(r: &Value) -> String {
    let st: Vec<&Value> = r["stages"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let cats: Vec<String> = st
        .iter()
        .map(|x| x["name"].as_str().unwrap_or("?").to_string())
        .collect();
    let series = [Series {
        name: "seconds",
        values: st.iter().map(|x| x["secs"].clone()).collect(),
    }];
    bar_chart(
        "plot-stages",
        "wall seconds per stage",
        &cats,
        &series,
        false,
        "stage",
        "seconds",
    )
}

fn workers_plot(r: &Value) -> String {
    let w: Vec<&Value> = r["workers"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if w.is_empty() {
        return note_svg(
            "plot-workers",
            "solve seconds per worker",
            &["no training half-steps ran".into()],
            None,
        );
    }
    let cats: Vec<String> = w
        .iter()
        .map(|x| format!("w{}", raw(&x["worker"])))
        .collect();
    let series = [
        Series {
            name: "solving users",
            values: w.iter().map(|x| x["users_solve_secs"].clone()).collect(),
        },
        Series {
            name: "solving items",
            values: w.iter().map(|x| x["items_solve_secs"].clone()).collect(),
        },
    ];
    bar_chart(
        "plot-workers",
        "solve seconds per worker",
        &cats,
        &series,
        true,
        "worker",
        "seconds solving (all iterations)",
    )
}

fn degree_plot(r: &Value, side: &str) -> String {
    let id = format!("plot-{}-degrees", &side[..side.len() - 1]);
    let d = &r["degrees"][side];
    match d["histogram"].as_array() {
        Some(bins) if !bins.is_empty() => histogram(
            &id,
            &format!("{side} by number of interactions"),
            bins,
            "interactions (log2 bins)",
            side,
        ),
        _ => note_svg(&id, side, &["no degree data".into()], None),
    }
}

fn buckets_plot(r: &Value) -> String {
    let id = "plot-buckets";
    match r["lsh"]["size_histogram"].as_array() {
        Some(bins) if !bins.is_empty() => histogram(
            id,
            "LSH bucket sizes",
            bins,
            "items in bucket (log2 bins)",
            "buckets",
        ),
        _ => {
            let mode = r["candidates"]["mode"].as_str().unwrap_or("none");
            let why = if r["lsh"].is_object() {
                "the LSH index has no hash tables (lsh.tables = 0)".to_string()
            } else {
                format!("recommend.mode = {mode}: no LSH index was built")
            };
            note_svg(
                id,
                "LSH bucket sizes",
                &["no LSH buckets".into(), why],
                None,
            )
        }
    }
}

fn candidates_plot(r: &Value) -> String {
    let id = "plot-candidates";
    let c = &r["candidates"];
    match c["histogram"].as_array() {
        Some(bins) if !bins.is_empty() => histogram(
            id,
            "candidates scored per user",
            bins,
            "candidates scored (log2 bins)",
            "users",
        ),
        _ => {
            let mode = c["mode"].as_str().unwrap_or("none");
            if c["per_user_mean"].is_number() {
                note_svg(
                    id,
                    "candidates scored per user",
                    &[
                        format!("{} candidates per user", short(num(&c["per_user_mean"]))),
                        format!("recommend.mode = {mode}: every item is scored for every user"),
                    ],
                    Some(&c["per_user_mean"]),
                )
            } else {
                note_svg(
                    id,
                    "candidates scored per user",
                    &[if mode == "exact" {
                        "recommend.mode = exact: not recorded (made by an older recflow)".into()
                    } else {
                        format!("recommend.mode = {mode}: no candidate scoring")
                    }],
                    None,
                )
            }
        }
    }
}

fn row(out: &mut String, name: &str, v: &Value, shown: String) {
    let _ = write!(
        out,
        r#"<tr><th>{}</th><td data-value="{}">{}</td></tr>"#,
        esc(name),
        esc(&raw(v)),
        esc(&shown)
    );
}

fn count_row(out: &mut String, name: &str, v: &Value) {
    row(out, name, v, group_digits(v.as_u64().unwrap_or(0)));
}

/// 1234567 → "1 234 567" (thin spaces).
fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut o = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            o.push('\u{2009}');
        }
        o.push(c);
    }
    o
}

fn metrics_table(r: &Value) -> String {
    let m = &r["metrics"];
    let mut s = String::from(r#"<table id="table-metrics">"#);
    if m.is_object() {
        let k = raw(&m["k"]);
        for (key, name) in [
            ("precision", format!("precision@{k}")),
            ("map", format!("MAP@{k}")),
            ("ndcg", format!("NDCG@{k}")),
            ("auc", "AUC".to_string()),
        ] {
            let v = &m[key];
            let shown = v
                .as_f64()
                .map(|x| format!("{x:.4}"))
                .unwrap_or_else(|| "not computed".into());
            row(&mut s, &name, v, shown);
        }
        count_row(&mut s, "users evaluated", &m["users"]);
    } else {
        s.push_str(r#"<tr><td>no evaluation (eval.holdout = 0 and no eval.test)</td></tr>"#);
    }
    let l = &r["lsh"];
    if l["recall_at_k"].is_number() {
        row(
            &mut s,
            &format!("LSH recall@{} vs exact", raw(&l["recall_k"])),
            &l["recall_at_k"],
            format!("{:.4}", num(&l["recall_at_k"])),
        );
    }
    if let Some(met) = l["target_met"].as_bool() {
        let verdict = if met { "met" } else { "NOT met" };
        let why = l["stopped"].as_str().unwrap_or("");
        let t = num(&l["target_recall"]);
        row(
            &mut s,
            "LSH target recall",
            &l["target_met"],
            format!("{t} {verdict} ({why})"),
        );
        let z = &l["sizes"];
        let sizes = format!(
            "head {}, tables {}, bucket_items {}",
            raw(&z["head"]),
            raw(&z["tables"]),
            raw(&z["bucket_items"])
        );
        row(&mut s, "LSH sizes chosen", z, sizes);
    }
    if r["candidates"]["catalog_share"].is_number() {
        row(
            &mut s,
            "share of catalogue scored",
            &r["candidates"]["catalog_share"],
            format!("{:.4}", num(&r["candidates"]["catalog_share"])),
        );
    }
    s.push_str("</table>");
    s
}

fn counts_tables(r: &Value) -> String {
    let c = &r["counts"];
    let d = &r["dropped"];
    let mut s =
        String::from(r#"<div class="tables"><table id="table-counts"><caption>data</caption>"#);
    for (k, name) in [
        ("bytes", "bytes read"),
        ("lines", "lines read"),
        ("events", "events kept"),
        ("users", "users"),
        ("items", "items"),
        ("pairs", "training pairs"),
        ("test_pairs", "held-out pairs"),
        ("recommendation_lines", "recommendation lines"),
    ] {
        count_row(&mut s, name, &c[k]);
    }
    s.push_str(r#"</table><table id="table-dropped"><caption>dropped</caption>"#);
    for (k, name) in [
        ("malformed_lines", "malformed lines skipped"),
        ("below_min_weight", "events below min_weight"),
        ("nonpositive_pairs", "pairs with weight ≤ 0"),
        ("user_cap_pairs", "pairs over the user cap"),
        ("item_cap_pairs", "pairs over the item cap"),
        ("test_unknown_item", "held-out pairs, item unseen"),
        ("lsh_buckets", "LSH buckets over max_bucket"),
        ("lsh_memberships", "LSH memberships lost with them"),
        ("singular_solves", "singular solves (zeroed)"),
        ("users_without_recs", "users without recommendations"),
    ] {
        count_row(&mut s, name, &d[k]);
    }
    s.push_str("</table></div>");
    if let Some(samples) = r["skipped_samples"].as_array().filter(|a| !a.is_empty()) {
        s.push_str(r#"<p>Skipped lines, e.g.:</p><ul id="skipped-samples">"#);
        for x in samples {
            let _ = write!(s, "<li><code>{}</code></li>", esc(x.as_str().unwrap_or("")));
        }
        s.push_str("</ul>");
    }
    s
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;background:#fff;max-width:1400px}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:0 0 6px}\
.meta{color:#555;margin:0 0 16px}\
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:18px}\
section{border:1px solid #e3e3e3;border-radius:6px;padding:12px}\
svg{width:100%;height:auto;display:block}\
.tables{display:flex;flex-wrap:wrap;gap:24px}\
table{border-collapse:collapse;font-size:14px}caption{text-align:left;font-weight:600;padding:4px 0}\
th,td{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}td{text-align:right;font-variant-numeric:tabular-nums}\
code{font-size:12px}";

fn plot_section(out: &mut String, id: &str, title: &str, svg: String) {
    let _ = write!(
        out,
        r#"<section class="plot" id="{id}"><h2>{}</h2>{svg}</section>"#,
        esc(title)
    );
}

/// Renders the report page from `report.json`.
pub fn render(r: &Value) -> String {
    let version = r["version"].as_str().unwrap_or("?");
    let mut s = String::with_capacity(64 << 10);
    s.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>");
    s.push_str(r#"<meta name="viewport" content="width=device-width, initial-scale=1"/>"#);
    let _ = write!(s, "<title>recflow report {}</title>", esc(version));
    let _ = write!(s, "<style>{CSS}</style></head><body>");
    let _ = write!(s, "<h1>recflow run report: {}</h1>", esc(version));
    let m = &r["model"];
    let _ = write!(
        s,
        r#"<p class="meta" id="meta">recflow {} · report schema {} · {} factors, {} iterations ({}), recommend mode {}, k = {} · {} worker(s), {} virtual shards · total {} s{}</p>"#,
        esc(r["recflow_version"].as_str().unwrap_or("?")),
        raw(&r["schema_version"]),
        raw(&m["factors"]),
        raw(&m["iterations"]),
        esc(m["solver"].as_str().unwrap_or("?")),
        esc(m["recommend_mode"].as_str().unwrap_or("none")),
        raw(&m["k"]),
        raw(&r["layout"]["workers"]),
        raw(&r["layout"]["virtual_shards"]),
        esc(&short(num(&r["total_secs"]))),
        match r["parent"].as_str() {
            Some(p) => format!(" · warm start from {}", esc(p)),
            None => String::new(),
        }
    );
    let _ = write!(
        s,
        r#"<p class="meta" id="confidence">{}</p>"#,
        esc(&crate::report::confidence_line(m))
    );
    s.push_str(&counts_tables(r));
    s.push_str(r#"<h2 style="margin-top:18px">Metrics</h2>"#);
    s.push_str(&metrics_table(r));
    s.push_str(&crate::report::cost::table(r));
    s.push_str(r#"<div class="grid" style="margin-top:18px">"#);
    plot_section(
        &mut s,
        "plot-objective",
        "Objective per iteration",
        objective_plot(r),
    );
    if r["svd"].is_object() {
        plot_section(
            &mut s,
            "plot-spectrum",
            "Singular values (svd model)",
            spectrum::plot(r),
        );
    }
    plot_section(&mut s, "plot-stages", "Time per stage (s)", stages_plot(r));
    plot_section(
        &mut s,
        "plot-workers",
        "ALS solve time per worker (s)",
        workers_plot(r),
    );
    plot_section(
        &mut s,
        "plot-user-degrees",
        "User degree distribution",
        degree_plot(r, "users"),
    );
    plot_section(
        &mut s,
        "plot-item-degrees",
        "Item degree distribution",
        degree_plot(r, "items"),
    );
    plot_section(&mut s, "plot-buckets", "LSH bucket sizes", buckets_plot(r));
    plot_section(
        &mut s,
        "plot-candidates",
        "Candidates scored per user",
        candidates_plot(r),
    );
    s.push_str("</div></body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{degrees, manifest};

    #[test]
    fn nice_ticks_cover_the_range() {
        let t = nice_ticks(0.0, 93.0, 5);
        assert_eq!(t.first(), Some(&0.0));
        assert!(*t.last().unwrap() >= 93.0);
        assert!(t.len() <= 8);
        let t = nice_ticks(1.93e6, 3.8e6, 5);
        assert!(t[0] <= 1.93e6 && *t.last().unwrap() >= 3.8e6);
        assert!(nice_ticks(0.0, 0.0, 5).len() >= 2);
        assert!(nice_ticks(5.0, 5.0, 5).len() >= 2);
    }

    #[test]
    fn short_numbers() {
        assert_eq!(short(1_234_567.0), "1.23M");
        assert_eq!(short(45_600.0), "45.6k");
        assert_eq!(short(7.0), "7");
        assert_eq!(short(0.5), "0.5");
        assert_eq!(short(0.01234), "0.0123");
        assert_eq!(short(1024.0), "1024");
    }

    #[test]
    fn escaping() {
        assert_eq!(esc("a<b & \"c\"'"), "a&lt;b &amp; &quot;c&quot;&#39;");
        assert_eq!(esc("x\u{1}y"), "x\u{fffd}y");
    }

    fn count(h: &str, pat: &str) -> usize {
        h.matches(pat).count()
    }

    #[test]
    fn page_has_every_plot_and_balanced_svg() {
        let r = crate::report::build(&manifest(), Some(&degrees()));
        let h = render(&r);
        assert!(
            h.contains("id=\"confidence\">weights column 2"),
            "the page names the weights"
        );
        for id in PLOT_IDS {
            assert_eq!(count(&h, &format!("id=\"{id}\"")), 1, "{id}");
            assert_eq!(count(&h, &format!("id=\"svg-{id}\"")), 1, "{id}");
        }
        assert_eq!(count(&h, "<svg "), PLOT_IDS.len());
        assert_eq!(count(&h, "<svg "), count(&h, "</svg>"));
        balanced(&h).unwrap();
        assert!(!h.contains("<script"));
        // No network: the only URL is the SVG namespace name.
        let rest = h.replace("http://www.w3.org/2000/svg", "");
        assert!(!rest.contains("http://") && !rest.contains("https://"));
        // Objective points carry the JSON numbers.
        assert!(h.contains(r#"data-half="items" data-value="200.25""#));
        assert!(h.contains(r#"data-value="0.125""#));
    }

    /// Every element closed in order (attribute values never hold '>': they are escaped).
    fn balanced(h: &str) -> Result<(), String> {
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = h;
        while let Some(i) = rest.find('<') {
            let end = rest[i..].find('>').ok_or("unterminated tag")? + i;
            let tag = &rest[i + 1..end];
            rest = &rest[end + 1..];
            if tag.starts_with('!') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                match stack.pop() {
                    Some(open) if open == name => {}
                    other => return Err(format!("</{name}> closes {other:?}")),
                }
            } else if !tag.ends_with('/') {
                stack.push(tag.split([' ', '\n']).next().unwrap_or(""));
            }
        }
        if stack.is_empty() {
            Ok(())
        } else {
            Err(format!("unclosed: {stack:?}"))
        }
    }

    #[test]
    fn notes_replace_plots_without_data() {
        let mut m = manifest();
        m["train"]["objective"] = serde_json::json!([]);
        m["recommend"] = serde_json::json!({ "k": 10, "mode": "popular", "lines": 1, "users_without_recs": 0, "lsh": null });
        let h = render(&crate::report::build(&m, None));
        for id in PLOT_IDS {
            assert!(h.contains(&format!("id=\"{id}\"")), "{id}");
        }
        assert!(h.contains("objective not computed"));
        assert!(h.contains("no LSH buckets"));
        assert!(h.contains("no degree data"));
    }
}
