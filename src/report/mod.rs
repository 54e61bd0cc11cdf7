//! What a person sees: progress while a job runs ([`Log`]), and at the end a summary on stderr
//! plus `report.json` and `report.html` beside the outputs of the published version.
//!
//! `report.json` is built from the manifest and the degree histograms gathered on worker 0
//! ([`build`]); [`html::render`] and [`summary::render`] are pure functions of it, so every
//! number the HTML or the summary shows is one the JSON holds.

pub mod cost;
pub mod html;
pub mod inspect;
mod progress;
pub mod summary;

pub use progress::Log;

use crate::cluster::{Comm, CommError};
use crate::comm::{Channel, Message};
use crate::side::Side;
use crate::store::{self, FileRecord};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use timely::worker::Worker;

/// Version of the `report.json` layout; bumped on any incompatible change.
pub const SCHEMA_VERSION: u64 = 1;

/// Bins of a log2 histogram of `u64` values: bin 0 holds 0, bin b ≥ 1 holds `[2^(b-1), 2^b)`.
pub const BINS: usize = 65;

/// The log2 bin of `n` (see [`BINS`]).
pub fn log2_bin(n: u64) -> usize {
    (64 - n.leading_zeros()) as usize
}

/// Smallest and largest value of bin `b` (inclusive).
pub fn bin_range(b: usize) -> (u64, u64) {
    match b {
        0 => (0, 0),
        64 => (1 << 63, u64::MAX),
        _ => (1 << (b - 1), (1 << b) - 1),
    }
}

/// A log2 histogram as JSON: `[{"lo", "hi", "count"}]` from the first to the last non-empty bin.
pub fn histogram_json(counts: &[u64]) -> Value {
    let first = counts.iter().position(|&c| c > 0);
    let last = counts.iter().rposition(|&c| c > 0);
    let bins: Vec<Value> = match (first, last) {
        (Some(a), Some(b)) => (a..=b)
            .map(|i| {
                let (lo, hi) = bin_range(i);
                json!({ "lo": lo, "hi": hi, "count": counts[i] })
            })
            .collect(),
        _ => Vec::new(),
    };
    Value::Array(bins)
}

/// Degree distribution of one side (whole job).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DegreeStats {
    /// Entities.
    pub count: u64,
    /// Sum of degrees (= training pairs).
    pub sum: u64,
    /// Smallest degree.
    pub min: u64,
    /// Largest degree.
    pub max: u64,
    /// Log2 histogram ([`BINS`] bins).
    pub histogram: Vec<u64>,
}

impl DegreeStats {
    /// Degrees (CSR row lengths) of this worker's rows of `side`.
    pub fn of(side: &Side) -> DegreeStats {
        let mut s = DegreeStats {
            min: u64::MAX,
            histogram: vec![0; BINS],
            ..DegreeStats::default()
        };
        for r in 0..side.rows() {
            s.add(side.degree(r) as u64);
        }
        s
    }

    fn add(&mut self, d: u64) {
        self.count += 1;
        self.sum += d;
        self.min = self.min.min(d);
        self.max = self.max.max(d);
        self.histogram[log2_bin(d)] += 1;
    }

    fn merge(&mut self, o: &DegreeStats) {
        self.count += o.count;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.histogram
            .iter_mut()
            .zip(&o.histogram)
            .for_each(|(a, b)| *a += b);
    }

    fn to_counts(&self) -> Vec<u64> {
        let mut v = vec![self.count, self.sum, self.min, self.max];
        v.extend_from_slice(&self.histogram);
        v
    }

    fn from_counts(c: &[u64]) -> DegreeStats {
        DegreeStats {
            count: c[0],
            sum: c[1],
            min: c[2],
            max: c[3],
            histogram: c[4..4 + BINS].to_vec(),
        }
    }

    /// JSON for the report.
    pub fn to_json(&self) -> Value {
        json!({
            "entities": self.count,
            "min": if self.count > 0 { self.min } else { 0 },
            "max": self.max,
            "mean": self.sum as f64 / self.count.max(1) as f64,
            "histogram": histogram_json(&self.histogram),
        })
    }
}

/// User and item degree distributions (whole job, on worker 0).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Degrees {
    /// Interactions per user.
    pub users: DegreeStats,
    /// Interactions per item.
    pub items: DegreeStats,
}

/// One worker's degree statistics of (users, items) as counters, to worker 0.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct DegreeCounts([Vec<u64>; 2]);

impl Message for DegreeCounts {}

/// Sums every worker's degree histograms on worker 0 (one superstep; every worker must call
/// it). Returns `Some` on worker 0.
pub fn gather_degrees(
    worker: &mut Worker,
    comm: &mut Comm,
    users: &Side,
    items: &Side,
) -> Result<Option<Degrees>, CommError> {
    let ch = &mut Channel::<DegreeCounts>::new(worker, comm.deadline);
    let mine =
        DegreeCounts([DegreeStats::of(users), DegreeStats::of(items)].map(|d| d.to_counts()));
    let got = ch.gather_to_leader(worker, "report: degrees", mine)?;
    if ch.index != 0 {
        return Ok(None);
    }
    let empty = || DegreeStats {
        min: u64::MAX,
        histogram: vec![0; BINS],
        ..DegreeStats::default()
    };
    let mut d = Degrees {
        users: empty(),
        items: empty(),
    };
    for (_, DegreeCounts([u, i])) in got {
        d.users.merge(&DegreeStats::from_counts(&u));
        d.items.merge(&DegreeStats::from_counts(&i));
    }
    Ok(Some(d))
}

/// Total size of the input files (for the ingest byte bar).
pub fn input_bytes(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// One line on how weights became confidences, from `report.json`'s `model`: where the
/// weights came from, the scheme and its parameters (summary, report page and `inspect`).
pub fn confidence_line(model: &Value) -> String {
    let c = &model["confidence"];
    let applied = &model["confidence_applied"];
    let a = applied["alpha"]
        .as_f64()
        .or_else(|| c["alpha"].as_f64())
        .map(|a| format!("{a:.4}"))
        .unwrap_or_else(|| "?".into());
    let rule = match c["scheme"].as_str() {
        Some("log") => format!(
            "log, c = 1 + {a}·ln(1 + w/{})",
            c["epsilon"].as_f64().unwrap_or(f64::NAN)
        ),
        Some("linear") => format!("linear, c = 1 + {a}·w"),
        _ => "unknown (an older version)".into(),
    };
    let rule = if applied["auto"].as_bool() == Some(true) {
        format!(
            "{rule} (alpha auto: mean confidence {:.1} = 1/sqrt(density {:.3e}))",
            applied["target"].as_f64().unwrap_or(f64::NAN),
            applied["density"].as_f64().unwrap_or(f64::NAN)
        )
    } else {
        rule
    };
    let weights: Vec<&str> = model["weights"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let weights = if weights.is_empty() {
        "not recorded".to_string()
    } else {
        weights.join("; ")
    };
    format!("weights {weights}; confidence {rule}")
}

/// Builds `report.json` from a manifest and the gathered degree distributions.
pub fn build(m: &Value, degrees: Option<&Degrees>) -> Value {
    let c = &m["counts"];
    let r = &c["read"];
    let t = &m["timings"];
    let train = &m["train"];
    let rec = &m["recommend"];
    let buckets = &rec["lsh"]["buckets"];
    json!({
        "schema_version": SCHEMA_VERSION,
        "recflow_version": m["recflow_version"],
        "version": m["version"],
        "svd": m["svd"],
        "parent": m["parent"],
        "created_unix": m["created_unix"],
        "layout": { "workers": m["workers"], "virtual_shards": m["virtual_shards"] },
        "model": {
            "method": m["method"],
            "factors": m["factors"],
            "iterations": m["job"]["als"]["iterations"],
            "solver": m["job"]["als"]["solver"],
            "recommend_mode": rec["mode"],
            "k": rec["k"],
            "regularization": m["job"]["als"]["regularization"],
            "regularization_scaling": m["job"]["als"]["regularization_scaling"],
            "weights": r["weights"].as_array().cloned().unwrap_or_default(),
            "confidence": m["job"]["confidence"],
            "confidence_applied": m["confidence"],
        },
        "counts": {
            "bytes": u(&r["bytes"]),
            "lines": u(&r["lines"]),
            "events": u(&r["events"]),
            "users": u(&c["users"]),
            "items": u(&c["items"]),
            "pairs": u(&c["pairs"]),
            "test_pairs": u(&c["test_pairs"]),
            "recommendation_lines": u(&rec["lines"]),
        },
        "dropped": {
            "malformed_lines": u(&r["skipped"]),
            "below_min_weight": u(&r["below_min_weight"]),
            "nonpositive_pairs": u(&c["nonpositive_pairs"]),
            "user_cap_pairs": u(&c["dropped_user_cap"]),
            "item_cap_pairs": u(&c["dropped_item_cap"]),
            "test_unknown_item": u(&c["test_unknown_item"]),
            "lsh_buckets": u(&buckets["dropped_buckets"]),
            "lsh_memberships": u(&buckets["dropped_memberships"]),
            "singular_solves": u(&train["singular"]),
            "users_without_recs": u(&rec["users_without_recs"]),
        },
        "skipped_samples": r["samples"].as_array().cloned().unwrap_or_default(),
        "stages": stages(t),
        "total_secs": f(&t["total_secs"]),
        "objective": train["objective"].as_array().cloned().unwrap_or_default(),
        "iteration_secs": train["iteration_secs"].as_array().cloned().unwrap_or_default(),
        "workers": solve_per_worker(train),
        "cost": cost::json(train),
        "degrees": degrees.map(|d| json!({ "users": d.users.to_json(), "items": d.items.to_json() })),
        "lsh": lsh_report(&rec["lsh"]),
        "candidates": candidates(rec, c),
        "metrics": m["metrics"],
    })
}

/// Seconds per stage; publish is what the others leave of the total.
fn stages(t: &Value) -> Value {
    let known: f64 = ["ingest_secs", "train_secs", "recommend_secs"]
        .iter()
        .map(|k| f(&t[k]))
        .sum();
    let total = f(&t["total_secs"]);
    json!([
        { "name": "ingest", "secs": f(&t["ingest_secs"]) },
        { "name": "train", "secs": f(&t["train_secs"]) },
        { "name": "recommend", "secs": f(&t["recommend_secs"]) },
        { "name": "publish", "secs": (total - known).max(0.0) },
    ])
}

/// Each worker's solve seconds per side, summed over the half-steps (load balance).
fn solve_per_worker(train: &Value) -> Vec<Value> {
    // Half-steps alternate users, items; sum each worker's solve time per side.
    let per_half: Vec<Vec<f64>> = train["solve_secs_per_worker"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|h| {
                    h.as_array()
                        .map(|w| w.iter().map(f).collect())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    let nw = per_half.iter().map(Vec::len).max().unwrap_or(0);
    (0..nw)
        .map(|w| {
            let side = |parity: usize| -> f64 {
                per_half
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % 2 == parity)
                    .map(|(_, h)| h.get(w).copied().unwrap_or(0.0))
                    .sum()
            };
            json!({ "worker": w, "users_solve_secs": side(0), "items_solve_secs": side(1) })
        })
        .collect()
}

/// What the recommend stage scored per user, by mode.
fn candidates(rec: &Value, c: &Value) -> Value {
    let lsh = &rec["lsh"];
    let mode = rec["mode"].as_str().unwrap_or("none").to_string();
    match mode.as_str() {
        "lsh" => json!({
            "mode": "lsh",
            "per_user_mean": lsh["candidates_per_user"],
            "catalog_share": lsh["catalog_share"],
            "histogram": if lsh["candidates_histogram"].is_array() {
                histogram_json(&lsh["candidates_histogram"].as_array().map(|a| a.iter().map(u).collect::<Vec<_>>()).unwrap_or_default())
            } else { Value::Null },
        }),
        // What the pruned scan really scored; `exact: null` is the dense fallback, which
        // scores every item; a manifest without the key (older recflow) did not record it.
        "exact" => match rec.get("exact") {
            Some(e) if e.is_object() => json!({
                "mode": "exact",
                "per_user_mean": e["candidates_per_user"],
                "catalog_share": e["catalog_share"],
                "histogram": histogram_json(&e["candidates_histogram"].as_array().map(|a| a.iter().map(u).collect::<Vec<_>>()).unwrap_or_default()),
            }),
            Some(_) => json!({
                "mode": "exact",
                "per_user_mean": c["items"],
                "catalog_share": 1.0,
                "histogram": Value::Null,
            }),
            None => {
                json!({ "mode": "exact", "per_user_mean": Value::Null, "catalog_share": Value::Null, "histogram": Value::Null })
            }
        },
        _ => {
            json!({ "mode": mode, "per_user_mean": Value::Null, "catalog_share": Value::Null, "histogram": Value::Null })
        }
    }
}

/// The LSH index's buckets, recall and calibration (null outside LSH mode).
fn lsh_report(lsh: &Value) -> Value {
    let buckets = &lsh["buckets"];
    if buckets.is_object() {
        json!({
            "buckets": buckets["buckets"],
            "max_size": buckets["max_size"],
            "mean_size": buckets["mean_size"],
            "head": buckets["head"],
            "dropped_buckets": buckets["dropped_buckets"],
            "dropped_memberships": buckets["dropped_memberships"],
            "size_histogram": histogram_json(&buckets["size_histogram"].as_array().map(|a| a.iter().map(u).collect::<Vec<_>>()).unwrap_or_default()),
            "recall_at_k": lsh["recall_at_k"],
            "recall_k": lsh["recall_k"],
            "recall_users": lsh["recall_users"],
            "target_recall": lsh["target_recall"], "target_met": lsh["target_met"],
            "sizes": lsh["calibration"]["chosen"], "stopped": lsh["calibration"]["stopped"],
            "rounds": lsh["calibration"]["rounds"].as_array().map_or(0, |a| a.len()),
        })
    } else {
        Value::Null
    }
}

/// Writes `report.json` and `report.html` into the staging directory of a version and adds
/// their records to the manifest's file list (call before `store::publish`).
pub fn write(
    staging: &Path,
    manifest: &mut Value,
    degrees: Option<&Degrees>,
) -> Result<(), String> {
    let report = build(manifest, degrees);
    let text = serde_json::to_string_pretty(&report).expect("report serialises");
    let html = html::render(&report);
    let recs: Vec<FileRecord> = vec![
        store::write_part(staging, "report.json", text.as_bytes(), 1)?,
        store::write_part(staging, "report.html", html.as_bytes(), 1)?,
    ];
    if let Some(files) = manifest["files"].as_array_mut() {
        for r in recs {
            files.push(serde_json::to_value(r).expect("record"));
        }
    }
    Ok(())
}

/// Reads `report.json` of a version directory, if it has one.
pub fn read(version_dir: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(version_dir.join("report.json")).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn log2_bins_cover_every_value_once() {
        assert_eq!(log2_bin(0), 0);
        assert_eq!(log2_bin(1), 1);
        assert_eq!(log2_bin(2), 2);
        assert_eq!(log2_bin(3), 2);
        assert_eq!(log2_bin(4), 3);
        assert_eq!(log2_bin(u64::MAX), 64);
        for n in [0u64, 1, 2, 3, 7, 8, 1000, 1 << 40, u64::MAX] {
            let (lo, hi) = bin_range(log2_bin(n));
            assert!(lo <= n && n <= hi, "{n} not in [{lo}, {hi}]");
        }
        for b in 1..BINS {
            assert_eq!(bin_range(b).0, bin_range(b - 1).1 + 1);
        }
    }

    #[test]
    fn histogram_json_trims_empty_ends() {
        let mut c = vec![0u64; BINS];
        c[2] = 5;
        c[4] = 1;
        let h = histogram_json(&c);
        let a = h.as_array().unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a[0], json!({"lo": 2, "hi": 3, "count": 5}));
        assert_eq!(a[1]["count"], 0);
        assert_eq!(a[2], json!({"lo": 8, "hi": 15, "count": 1}));
        assert_eq!(histogram_json(&[0, 0]), json!([]));
    }

    #[test]
    fn degree_counts_round_trip_and_merge() {
        let mut a = DegreeStats {
            min: u64::MAX,
            histogram: vec![0; BINS],
            ..Default::default()
        };
        let mut b = a.clone();
        [1u64, 2, 3, 10].iter().for_each(|&d| a.add(d));
        [5u64, 100].iter().for_each(|&d| b.add(d));
        assert_eq!(DegreeStats::from_counts(&a.to_counts()), a);
        a.merge(&b);
        assert_eq!((a.count, a.sum, a.min, a.max), (6, 121, 1, 100));
        assert_eq!(a.histogram.iter().sum::<u64>(), 6);
        let j = a.to_json();
        assert_eq!(j["entities"], 6);
        assert_eq!(j["max"], 100);
    }

    /// A manifest like the pipeline writes (two workers, two iterations, LSH mode).
    pub(crate) fn manifest() -> Value {
        let mut hist = vec![0u64; BINS];
        hist[3] = 7;
        hist[5] = 2;
        let mut cand = vec![0u64; BINS];
        cand[6] = 40;
        cand[7] = 10;
        json!({
            "recflow_version": "0.1.0",
            "version": "v000002",
            "parent": null,
            "created_unix": 1,
            "job": { "als": { "iterations": 2, "solver": "cholesky" },
                     "confidence": { "scheme": "log", "alpha": "auto", "epsilon": 1.0 } },
            "confidence": { "alpha": 12.5, "auto": true, "density": 0.01, "mean_term": 0.72, "target": 10.0 },
            "workers": 2,
            "virtual_shards": 16,
            "factors": 8,
            "counts": {
                "read": { "bytes": 1000, "lines": 100, "events": 98, "skipped": 2, "below_min_weight": 0,
                          "weights": ["column 2 (found: it holds numbers)"],
                          "samples": ["a.tsv:3: field weight: not a number: 'x\ty\tz'"] },
                "users": 50, "items": 20, "pairs": 90, "test_pairs": 8, "nonpositive_pairs": 1,
                "dropped_user_cap": 0, "dropped_item_cap": 0, "test_unknown_item": 0
            },
            "train": {
                "objective": [
                    { "iteration": 1, "half": "users", "value": 300.5 },
                    { "iteration": 1, "half": "items", "value": 200.25 },
                    { "iteration": 2, "half": "users", "value": 150.0 },
                    { "iteration": 2, "half": "items", "value": 149.0 }
                ],
                "iteration_secs": [0.5, 0.25],
                "solve_secs_per_worker": [[0.1, 0.2], [0.01, 0.02], [0.1, 0.3], [0.01, 0.04]],
                "singular": 0
            },
            "timings": { "ingest_secs": 1.0, "train_secs": 2.0, "recommend_secs": 0.5, "total_secs": 4.0 },
            "recommend": {
                "k": 10, "mode": "lsh", "lines": 500, "users_without_recs": 0,
                "lsh": {
                    "buckets": { "buckets": 9, "max_size": 40, "mean_size": 9.5, "dropped_buckets": 1,
                                 "dropped_memberships": 50, "head": 3, "size_histogram": hist },
                    "candidates_per_user": 70.5, "catalog_share": 0.3, "candidates_histogram": cand,
                    "recall_at_k": 0.9, "recall_k": 10, "recall_users": 20.0
                }
            },
            "metrics": { "k": 10, "precision": 0.125, "map": 0.0625, "ndcg": 0.2, "auc": null, "users": 40 },
            "files": []
        })
    }

    pub(crate) fn degrees() -> Degrees {
        let mut d = Degrees {
            users: DegreeStats {
                min: u64::MAX,
                histogram: vec![0; BINS],
                ..Default::default()
            },
            items: DegreeStats {
                min: u64::MAX,
                histogram: vec![0; BINS],
                ..Default::default()
            },
        };
        (1..=50).for_each(|i| d.users.add(i % 7 + 1));
        (1..=20).for_each(|i| d.items.add(i * 3));
        d
    }

    #[test]
    fn report_collects_counts_stages_workers_and_histograms() {
        let r = build(&manifest(), Some(&degrees()));
        assert_eq!(r["schema_version"], SCHEMA_VERSION);
        assert_eq!(r["counts"]["pairs"], 90);
        assert_eq!(r["dropped"]["malformed_lines"], 2);
        assert_eq!(r["dropped"]["lsh_buckets"], 1);
        let st = r["stages"].as_array().unwrap();
        assert_eq!(st.len(), 4);
        assert_eq!(st[3]["name"], "publish");
        assert!((f(&st[3]["secs"]) - 0.5).abs() < 1e-12);
        let w = r["workers"].as_array().unwrap();
        assert_eq!(w.len(), 2);
        assert!((f(&w[1]["users_solve_secs"]) - 0.5).abs() < 1e-12);
        assert!((f(&w[1]["items_solve_secs"]) - 0.06).abs() < 1e-12);
        assert_eq!(r["lsh"]["size_histogram"].as_array().unwrap().len(), 3);
        assert_eq!(r["candidates"]["histogram"][0]["lo"], 32);
        assert_eq!(r["degrees"]["users"]["entities"], 50);
        assert_eq!(r["objective"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn report_without_lsh_or_degrees_still_builds() {
        let mut m = manifest();
        // The dense fallback (`exact: null`) scores every item.
        m["recommend"] = json!({ "k": 10, "mode": "exact", "lines": 500, "users_without_recs": 0,
            "exact": null, "lsh": null });
        m["metrics"] = Value::Null;
        let r = build(&m, None);
        assert!(r["lsh"].is_null());
        assert!(r["degrees"].is_null());
        assert_eq!(r["candidates"]["mode"], "exact");
        assert_eq!(r["candidates"]["per_user_mean"], 20);
        let h = html::render(&r);
        assert!(h.contains("id=\"plot-candidates\""));
    }

    /// Exact mode reports what the pruned scan scored, not the catalogue; a manifest from
    /// before the count existed reports nothing rather than the catalogue.
    #[test]
    fn exact_mode_reports_the_items_really_scored() {
        let mut m = manifest();
        let mut hist = vec![0u64; BINS];
        hist[3] = 50;
        m["recommend"] = json!({ "k": 10, "mode": "exact", "lines": 500, "users_without_recs": 0,
            "exact": { "candidates_per_user": 9.5, "catalog_share": 0.475, "candidates_histogram": hist },
            "lsh": null });
        let r = build(&m, None);
        assert_eq!(r["candidates"]["per_user_mean"], 9.5);
        assert_eq!(r["candidates"]["catalog_share"], 0.475);
        assert_eq!(r["candidates"]["histogram"][0]["lo"], 4);
        m["recommend"].as_object_mut().unwrap().remove("exact");
        assert!(build(&m, None)["candidates"]["per_user_mean"].is_null());
    }
}
