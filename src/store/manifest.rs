//! The typed manifest of a version (`manifest.json`), and opening a version by it.
//!
//! The store owns the parts every reader relies on (identity, layout, file records, lineage,
//! the held-out pairs); the stages' own reports (job, counts, training, recommend, metrics)
//! are kept as the JSON their modules serialise, so a stage can add a figure without a
//! schema change here. `format_version` 1 is the only schema so far; fields added since are
//! optional, so manifests written by older recflow load unchanged.

use super::{is_version_name, FileRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Manifest schema version.
pub const MANIFEST_VERSION: u32 = 1;

/// `manifest.json` of one version.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Schema version ([`MANIFEST_VERSION`]).
    pub format_version: u32,
    /// The recflow that wrote it.
    #[serde(default)]
    pub recflow_version: String,
    /// This version's name (`vNNNNNN`).
    #[serde(default)]
    pub version: String,
    /// The version a warm start continued from.
    #[serde(default)]
    pub parent: Option<String>,
    /// Where the version came from.
    #[serde(default)]
    pub lineage: Lineage,
    /// Unix time of publishing.
    #[serde(default)]
    pub created_unix: u64,
    /// The job, as run.
    #[serde(default)]
    pub job: Value,
    /// Workers that trained it (any layout reads it: files are per virtual shard).
    #[serde(default)]
    pub workers: usize,
    /// Virtual shards (fixed for a model's lifetime).
    #[serde(default)]
    pub virtual_shards: u32,
    /// Latent dimension (of the published vectors).
    #[serde(default)]
    pub factors: usize,
    /// The model family (absent before svd existed: als).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<crate::job::Method>,
    /// The svd model's record (singular values, sketch size…); absent for als.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svd: Option<SvdReport>,
    /// Ingest counters ([`crate::ingest::IngestStats`]).
    #[serde(default)]
    pub counts: Value,
    /// The confidence rule applied.
    #[serde(default)]
    pub confidence: Value,
    /// Training report ([`crate::als::TrainReport`]).
    #[serde(default)]
    pub train: Value,
    /// Stage timings.
    #[serde(default)]
    pub timings: Value,
    /// Recommend stage summary.
    #[serde(default)]
    pub recommend: Value,
    /// Metrics against `eval.holdout` / `eval.test` ([`crate::eval::Metrics::report`]).
    #[serde(default)]
    pub metrics: Value,
    /// Metrics against `eval.valid`.
    #[serde(default)]
    pub valid_metrics: Value,
    /// The held-out pairs kept for `recflow eval STORE` (absent in older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout: Option<Holdout>,
    /// Every file of the version, sorted by path.
    #[serde(default)]
    pub files: Vec<FileRecord>,
}

/// Where a version came from.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Lineage {
    /// How the top-k lists changed from the parent's.
    #[serde(default)]
    pub recs_vs_parent: Option<RecsChange>,
    /// The parent version.
    #[serde(default)]
    pub parent: Option<String>,
    /// Input files consumed into the snapshot, this version's and its ancestors'.
    #[serde(default)]
    pub consumed: Vec<InputIdentity>,
    /// Users new in this version (warm start).
    #[serde(default)]
    pub new_users: Option<u64>,
    /// Items new in this version (warm start).
    #[serde(default)]
    pub new_items: Option<u64>,
    /// The parent's final objective.
    #[serde(default)]
    pub parent_objective: Option<Value>,
    /// The parent's metrics.
    #[serde(default)]
    pub parent_metrics: Option<Value>,
}

/// Identity of an input file: canonical path, size and modification time.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct InputIdentity {
    /// Canonical path.
    pub path: String,
    /// Size in bytes.
    pub bytes: Option<u64>,
    /// Modification time, nanoseconds since the Unix epoch.
    pub modified_ns: Option<u64>,
}

/// How a version's top-k lists differ from its parent's.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RecsChange {
    /// Users in both.
    pub users_compared: u64,
    /// Users whose top-k set changed.
    pub users_topk_changed: u64,
    /// Mean share of the top k kept.
    pub mean_topk_overlap: f64,
}

/// The held-out pairs a version keeps (`eval/holdout-NNNNN.bin`, [`crate::store::holdout`]).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Holdout {
    /// Held-out pairs of `eval.holdout` / `eval.test` (the `metrics` set).
    pub test_pairs: u64,
    /// Held-out pairs of `eval.valid` (the `valid_metrics` set).
    pub valid_pairs: u64,
    /// Catalogue size the metrics' coverage divides by.
    pub catalogue: usize,
    /// The cut-offs of the metrics.
    pub ks: Vec<usize>,
}

impl Manifest {
    /// The records of the files under `sub/` (e.g. `"recs"`), sorted by path.
    pub fn records_under(&self, sub: &str) -> Vec<FileRecord> {
        let mut files: Vec<FileRecord> = self
            .files
            .iter()
            .filter(|f| f.path.starts_with(&format!("{sub}/")))
            .cloned()
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    }

    /// As JSON (for the report, which reads stage sections by name).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("manifest serialises")
    }
}

/// Resolves `version` (or CURRENT) to a version directory and reads its manifest.
pub fn open(store: &Path, version: Option<&str>) -> Result<(PathBuf, Manifest), String> {
    let v = match version {
        Some(v) if !is_version_name(v) => {
            return Err(format!(
                "--version '{}': not a version name (vNNNNNN, e.g. v000001)",
                crate::escape::escape(v)
            ))
        }
        Some(v) => v.to_string(),
        None => super::current(store)?.ok_or_else(|| {
            format!("{} has no published model (no CURRENT file): run a job with output.store = \"{}\" first", store.display(), store.display())
        })?,
    };
    let dir = store.join(&v);
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let raw: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a valid manifest: {e}", path.display()))?;
    let fv = raw["format_version"].as_u64().unwrap_or(0);
    if fv != MANIFEST_VERSION as u64 {
        return Err(format!(
            "{}: manifest format {fv}, this recflow reads {MANIFEST_VERSION}",
            path.display()
        ));
    }
    let m: Manifest = serde_json::from_value(raw)
        .map_err(|e| format!("{}: not a valid manifest: {e}", path.display()))?;
    Ok((dir, m))
}

/// What an svd model records in its manifest (`svd`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SvdReport {
    /// Always "svd".
    pub method: String,
    /// Published rank k.
    pub rank: usize,
    /// Columns of the sketch, `min(rank + oversample, users, items)`.
    pub sketch: usize,
    /// Power iterations q.
    pub power_iterations: usize,
    /// What was factorised.
    pub input: Option<crate::job::SvdInput>,
    /// The k leading singular values, descending.
    pub singular_values: Vec<f64>,
    /// Singular values above `svd::project::ZERO_SIGMA` × the largest.
    pub numerical_rank: usize,
    /// Wall seconds of the factorisation (0 on a warm start, which only projects).
    pub secs: f64,
    /// The version whose factorisation a warm start kept (None: factorised in this run).
    pub factorised_in: Option<String>,
}
