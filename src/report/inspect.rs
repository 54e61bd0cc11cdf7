//! `recflow inspect STORE`: every published version with the key figures of its report.

use super::html::short;
use crate::store;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;

/// `YYYY-MM-DD HH:MM` (UTC) of a Unix time.
pub fn utc(secs: u64) -> String {
    // Days to civil date (Howard Hinnant's algorithm).
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3_600,
        rem % 3_600 / 60
    )
}

fn metric(m: &Value, k: &str) -> String {
    m[k].as_f64()
        .map(|v| format!("{v:.4}"))
        .unwrap_or_else(|| "-".into())
}

/// One version's lines: from `report.json` when the version has one, else from the manifest.
pub fn version_lines(dir: &Path, manifest: &Value, current: bool) -> String {
    let r = super::read(dir).unwrap_or_else(|| super::build(manifest, None));
    let mut s = String::new();
    let c = &r["counts"];
    let _ = write!(
        s,
        "{} {}  {} UTC",
        if current { "*" } else { " " },
        r["version"].as_str().unwrap_or("?"),
        utc(r["created_unix"].as_u64().unwrap_or(0))
    );
    if let Some(p) = r["parent"].as_str() {
        let _ = write!(s, "  warm start from {p}");
    }
    s.push('\n');
    let _ = writeln!(
        s,
        "    data     {} users, {} items, {} pairs ({} lines read, {} malformed skipped)",
        c["users"], c["items"], c["pairs"], c["lines"], r["dropped"]["malformed_lines"]
    );
    let obj = r["objective"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(|p| p["value"].as_f64())
        .map(|v| format!("{v:.6e}"))
        .unwrap_or_else(|| "-".into());
    let m = &r["model"];
    let _ = writeln!(
        s,
        "    model    {} factors, {} iterations ({}), final objective {obj}, {} worker(s), {} total",
        m["factors"],
        m["iterations"],
        m["solver"].as_str().unwrap_or("?"),
        r["layout"]["workers"],
        format_args!("{}s", short(r["total_secs"].as_f64().unwrap_or(0.0)))
    );
    let _ = writeln!(s, "    input    {}", crate::report::confidence_line(m));
    let x = &r["metrics"];
    if x.is_object() {
        let _ = writeln!(
            s,
            "    metrics  @{}: precision {}  map {}  ndcg {}  auc {}  ({} users)",
            x["k"],
            metric(x, "precision"),
            metric(x, "map"),
            metric(x, "ndcg"),
            metric(x, "auc"),
            x["users"]
        );
    }
    if let Some(mode) = m["recommend_mode"].as_str() {
        let _ = write!(
            s,
            "    recs     {mode}, k = {}, {} lines",
            m["k"], c["recommendation_lines"]
        );
        if let Some(rc) = r["lsh"]["recall_at_k"].as_f64() {
            let _ = write!(s, ", LSH recall@{} {rc:.4}", r["lsh"]["recall_k"]);
        }
        s.push('\n');
    }
    if dir.join("report.html").is_file() {
        let _ = writeln!(s, "    report   {}", dir.join("report.html").display());
    }
    s
}

/// The text `recflow inspect` prints.
pub fn inspect(store_path: &Path) -> Result<String, String> {
    if !store_path.is_dir() {
        return Err(format!(
            "{}: {}",
            store_path.display(),
            if store_path.exists() {
                "not a directory (a model store is a directory)"
            } else {
                "no such directory (is the store path right?)"
            }
        ));
    }
    let versions = store::versions(store_path);
    if versions.is_empty() {
        return Err(format!(
            "{} holds no published version",
            store_path.display()
        ));
    }
    let cur = store::current(store_path)?;
    let mut s = format!(
        "store {} ({} version(s), CURRENT = {})\n",
        store_path.display(),
        versions.len(),
        cur.as_deref().unwrap_or("none")
    );
    for v in versions {
        match store::open(store_path, Some(&v)) {
            Ok((dir, m)) => {
                let current = cur.as_deref() == Some(&v);
                s.push_str(&version_lines(&dir, &m.to_value(), current));
            }
            Err(e) => {
                let _ = writeln!(
                    s,
                    "{} {v}  unreadable: {e}",
                    if cur.as_deref() == Some(&v) { "*" } else { " " }
                );
            }
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{degrees, manifest};

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00");
        assert_eq!(utc(1_795_409_585), "2026-11-23 04:53");
    }

    #[test]
    fn version_lines_show_key_figures() {
        let dir = tempfile::tempdir().unwrap();
        let r = crate::report::build(&manifest(), Some(&degrees()));
        std::fs::write(
            dir.path().join("report.json"),
            serde_json::to_string(&r).unwrap(),
        )
        .unwrap();
        let s = version_lines(dir.path(), &Value::Null, true);
        assert!(s.starts_with("* v000002"), "{s}");
        assert!(s.contains("50 users, 20 items, 90 pairs"), "{s}");
        assert!(s.contains("final objective 1.490000e2"), "{s}");
        assert!(s.contains("precision 0.1250"), "{s}");
        assert!(s.contains("LSH recall@10 0.9000"), "{s}");
        // Without report.json the manifest gives the same figures.
        let empty = tempfile::tempdir().unwrap();
        let t = version_lines(empty.path(), &manifest(), false);
        assert!(t.contains("50 users, 20 items, 90 pairs"), "{t}");
    }
}
