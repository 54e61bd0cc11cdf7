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

mod cost;
mod plots;
mod spectrum;
mod svg;

use plots::*;
use svg::*;

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
pub(super) fn raw(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

pub(super) fn num(v: &Value) -> f64 {
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
    let c = &l["similar"];
    if let Some(met) = c["target_met"].as_bool() {
        let verdict = if met { "met" } else { "NOT met" };
        let text = format!(
            "recall@{} {:.4}, target {} {verdict} ({}; {})",
            raw(&c["recall_k"]),
            num(&c["recall_at_k"]),
            num(&c["target_recall"]),
            c["method"].as_str().unwrap_or(""),
            c["stopped"].as_str().unwrap_or("")
        );
        row(
            &mut s,
            "Similar items vs exact cosine",
            &c["target_met"],
            text,
        );
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
    s.push_str(&cost::table(r));
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
