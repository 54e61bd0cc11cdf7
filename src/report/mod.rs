//! What a person sees at the end of a run (progress while it runs is [`crate::progress`]): a
//! summary on stderr plus `report.json` and `report.html` beside the outputs of the published version.
//!
//! `report.json` is built from the manifest and the degree histograms gathered on worker 0
//! ([`build`]); [`html::render`] and [`summary::render`] are pure functions of it, so every
//! number the HTML or the summary shows is one the JSON holds.

pub mod cost;
pub mod html;
pub mod inspect;
pub mod summary;

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
            "similar": similar_report(&lsh["similar"]),
        })
    } else {
        Value::Null
    }
}

/// How similar items were found under a target (null without one).
fn similar_report(c: &Value) -> Value {
    if !c.is_object() {
        return Value::Null;
    }
    json!({
        "method": c["method"], "recall_at_k": c["recall_at_k"], "recall_k": c["recall_k"],
        "target_recall": c["target_recall"], "target_met": c["target_met"],
        "stopped": c["stopped"], "catalog_share": c["catalog_share"],
        "rounds": c["rounds"].as_array().map_or(0, |a| a.len()),
    })
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
pub(crate) mod tests;
