//! The short summary printed to stderr at the end of `recflow run`, from `report.json`.

use super::html::short;
use serde_json::Value;
use std::fmt::Write as _;

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn secs(v: &Value) -> String {
    format!("{:.2}s", v.as_f64().unwrap_or(0.0))
}

/// The summary lines for a run whose version directory is `dir`.
pub fn render(r: &Value, dir: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "recflow run summary");
    let _ = writeln!(s, "  model      {dir}");
    data_lines(&mut s, r);
    time_line(&mut s, r);
    objective_line(&mut s, r);
    recommend_line(&mut s, r);
    metrics_line(&mut s, r);
    let _ = writeln!(s, "  report     {dir}/report.html");
    s
}

/// `data`, `dropped` and `input` (with the skipped lines' samples).
fn data_lines(s: &mut String, r: &Value) {
    let c = &r["counts"];
    let d = &r["dropped"];
    let _ = writeln!(
        s,
        "  data       {} lines read ({} bytes), {} users, {} items, {} pairs, {} held out",
        n(&c["lines"]),
        n(&c["bytes"]),
        n(&c["users"]),
        n(&c["items"]),
        n(&c["pairs"]),
        n(&c["test_pairs"])
    );
    let _ = writeln!(
        s,
        "  dropped    {} malformed lines skipped, {} below min_weight, {} pairs with weight <= 0, {} by user cap, {} by item cap, {} oversized LSH buckets",
        n(&d["malformed_lines"]),
        n(&d["below_min_weight"]),
        n(&d["nonpositive_pairs"]),
        n(&d["user_cap_pairs"]),
        n(&d["item_cap_pairs"]),
        n(&d["lsh_buckets"])
    );
    let _ = writeln!(s, "  input      {}", super::confidence_line(&r["model"]));
    for x in r["skipped_samples"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "             e.g. {}",
            crate::escape::escape(x.as_str().unwrap_or(""))
        );
    }
}

/// `time`: every stage's seconds, the total and the worker count.
fn time_line(s: &mut String, r: &Value) {
    let stages: Vec<String> = r["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| format!("{} {}", x["name"].as_str().unwrap_or("?"), secs(&x["secs"])))
        .collect();
    let _ = writeln!(
        s,
        "  time       {}, total {} on {} worker(s)",
        stages.join(", "),
        secs(&r["total_secs"]),
        n(&r["layout"]["workers"])
    );
}

/// `objective`: the value after each logged iteration (its items half-step); none if unlogged.
fn objective_line(s: &mut String, r: &Value) {
    let obj: Vec<String> = r["objective"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["half"] == "items")
        .map(|p| {
            format!(
                "{}:{:.4e}",
                n(&p["iteration"]),
                p["value"].as_f64().unwrap_or(f64::NAN)
            )
        })
        .collect();
    if !obj.is_empty() {
        let _ = writeln!(s, "  objective  {}", obj.join(" "));
    }
}

/// `recommend`: lines, mode, candidates and LSH recall (only when the run recommended).
fn recommend_line(s: &mut String, r: &Value) {
    let cand = &r["candidates"];
    let Some(mode) = cand["mode"].as_str().filter(|m| *m != "none") else {
        return;
    };
    let _ = write!(
        s,
        "  recommend  {} lines, mode {mode}, {} users without candidates",
        n(&r["counts"]["recommendation_lines"]),
        n(&r["dropped"]["users_without_recs"])
    );
    if let Some(m) = cand["per_user_mean"].as_f64() {
        let _ = write!(s, ", {} candidates per user", short(m));
    }
    if let Some(x) = r["lsh"]["recall_at_k"].as_f64() {
        let _ = write!(s, ", LSH recall@{} {x:.4}", n(&r["lsh"]["recall_k"]));
    }
    s.push_str(&lsh_target(&r["lsh"]));
    s.push('\n');
    similar_line(s, &r["lsh"]["similar"]);
}

/// How similar items met `lsh.target_recall` (only under a target).
fn similar_line(s: &mut String, c: &Value) {
    let (Some(t), Some(met)) = (c["target_recall"].as_f64(), c["target_met"].as_bool()) else {
        return;
    };
    let how = match c["method"].as_str() {
        Some("graph") => format!(
            "neighbour graph, {} rounds, {:.4} of the catalogue scored",
            n(&c["rounds"]),
            c["catalog_share"].as_f64().unwrap_or(0.0)
        ),
        _ => "exact".to_string(),
    };
    let recall = c["recall_at_k"].as_f64().unwrap_or(0.0);
    let k = n(&c["recall_k"]);
    let verdict = match met {
        true => format!("target {t} met"),
        false => format!(
            "BELOW the target {t}: {}",
            c["stopped"].as_str().unwrap_or("")
        ),
    };
    let _ = writeln!(
        s,
        "  similar    items recall@{k} {recall:.4} ({verdict}; {how})"
    );
}

/// `metrics` at the headline cut-off (only when the run evaluated).
fn metrics_line(s: &mut String, r: &Value) {
    let m = &r["metrics"];
    if !m.is_object() {
        return;
    }
    let f = |k: &str| {
        m[k].as_f64()
            .map(|v| format!("{v:.4}"))
            .unwrap_or_else(|| "-".into())
    };
    let _ = writeln!(
        s,
        "  metrics    @{}: precision {}  map {}  ndcg {}  auc {}  ({} users)",
        n(&m["k"]),
        f("precision"),
        f("map"),
        f("ndcg"),
        f("auc"),
        n(&m["users"])
    );
}

/// Whether LSH reached `lsh.target_recall`, and with which sizes (empty without a target).
fn lsh_target(l: &Value) -> String {
    let (Some(t), Some(met)) = (l["target_recall"].as_f64(), l["target_met"].as_bool()) else {
        return String::new();
    };
    let z = &l["sizes"];
    let sizes = format!(
        "head {}, tables {}, bucket_items {}",
        n(&z["head"]),
        n(&z["tables"]),
        n(&z["bucket_items"])
    );
    if met {
        format!(" (target {t} met: {sizes})")
    } else {
        let why = l["stopped"].as_str().unwrap_or("");
        format!(" (BELOW the target {t}: {why}; {sizes})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{degrees, manifest};

    #[test]
    fn summary_names_counts_drops_stages_objective_and_metrics() {
        let r = crate::report::build(&manifest(), Some(&degrees()));
        let s = render(&r, "models/x/v000002");
        assert!(s.contains("100 lines read"), "{s}");
        assert!(s.contains("2 malformed lines skipped"), "{s}");
        assert!(s.contains("e.g. a.tsv:3:"), "{s}");
        assert!(
            s.contains("ingest 1.00s, train 2.00s, recommend 0.50s, publish 0.50s"),
            "{s}"
        );
        assert!(s.contains("1:2.0025e2 2:1.4900e2"), "{s}");
        assert!(s.contains("precision 0.1250"), "{s}");
        assert!(
            s.contains("weights column 2 (found: it holds numbers); confidence log, c = 1 + 12.5000·ln(1 + w/1) (alpha auto: mean confidence 10.0 = 1/sqrt(density 1.000e-2))"),
            "{s}"
        );
        assert!(s.contains("LSH recall@10 0.9000"), "{s}");
        assert!(s.contains("models/x/v000002/report.html"), "{s}");
        // No target in this manifest: nothing said about one.
        assert!(!s.contains("target"), "{s}");
    }

    /// A manifest whose LSH calibration met its target (or not).
    fn with_target(met: bool) -> serde_json::Value {
        let mut m = manifest();
        let l = &mut m["recommend"]["lsh"];
        l["target_recall"] = serde_json::json!(0.95);
        l["target_met"] = serde_json::json!(met);
        l["calibration"] = serde_json::json!({
            "stopped": if met { "target reached" } else { "larger sizes would score more than lsh.max_share of the catalogue" },
            "chosen": { "head": 512, "tables": 2, "bucket_items": 64 },
            "rounds": [{}, {}, {}],
        });
        m
    }

    #[test]
    fn summary_says_whether_the_lsh_target_was_met() {
        let r = crate::report::build(&with_target(true), Some(&degrees()));
        let s = render(&r, "d");
        assert!(
            s.contains(
                "LSH recall@10 0.9000 (target 0.95 met: head 512, tables 2, bucket_items 64)"
            ),
            "{s}"
        );
        let r = crate::report::build(&with_target(false), Some(&degrees()));
        assert_eq!(r["lsh"]["rounds"], 3);
        let s = render(&r, "d");
        assert!(
            s.contains("(BELOW the target 0.95: larger sizes would score more than lsh.max_share"),
            "{s}"
        );
        let h = crate::report::html::render(&r);
        assert!(h.contains("0.95 NOT met"), "{h}");
        assert!(h.contains("head 512, tables 2, bucket_items 64"), "{h}");
    }
}
