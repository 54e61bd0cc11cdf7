//! The last stage: every worker writes its files into a staging directory, worker 0 writes the
//! manifest and the report and flips `CURRENT`, so a version appears whole or not at all.

use super::msg::RunMsg;
use super::stages::{has_test, unexpected, RunCh};
use super::Summary;
use crate::als::TrainReport;
use crate::cluster::{Comm, CommError};
use crate::comm::Json;
use crate::ingest::Ingested;
use crate::job::Job;
use crate::recommend::Recs;
use crate::store::manifest::SvdReport;
use crate::store::{self, FileRecord};
use serde_json::json;
use std::path::{Path, PathBuf};
use timely::worker::Worker;

/// What the manifest records besides the data: the model's training, its recommendations, the
/// stage timings and the lineage.
pub(super) struct Outcome<'a> {
    /// The training report.
    pub train: &'a TrainReport,
    /// The SVD's record (`model.method = "svd"`).
    pub svd: Option<&'a SvdReport>,
    /// Recommendations and metrics, when the job asked for any.
    pub recs: Option<&'a Recs>,
    /// Stage seconds (`total_secs` is added at the end).
    pub timings: serde_json::Value,
    /// Where the version came from.
    pub lineage: store::manifest::Lineage,
    /// When the run started.
    pub started: std::time::Instant,
}

/// Publishes the version; returns worker 0's summary.
pub(super) fn publish(
    worker: &mut Worker,
    (comm, ch): (&mut Comm, &mut RunCh),
    job: &Job,
    data: &Ingested,
    out: Outcome<'_>,
) -> Result<Option<Summary>, CommError> {
    let store_path = PathBuf::from(&job.output.store);
    // 1. Worker 0 opens a staging directory and tells everybody where it is.
    let staging = match (ch.index == 0).then(|| store::begin(&store_path)) {
        Some(Ok((version, dir))) => Some(RunMsg::Staging { version, dir }),
        Some(Err(e)) => {
            ch.abort(&e);
            None
        }
        None => None,
    };
    let (version, dir) = match ch.broadcast_from(worker, "publish: prepare", 0, staging)? {
        RunMsg::Staging { version, dir } => (version, dir),
        other => return unexpected("publish: prepare", &other),
    };
    // 2. Every worker writes (and syncs) the files of the shards it owns.
    match worker_files(&dir, ch.index, data, out.recs, job.output.compression) {
        Ok(r) => ch.send(0, RunMsg::Written(Json(r))),
        Err(e) => ch.abort(&e),
    }
    let mut files: Vec<FileRecord> = Vec::new();
    for (_, m) in ch.exchange(worker, "publish: write")? {
        if let RunMsg::Written(Json(r)) = m {
            files.extend(r);
        }
    }
    // Degree distributions for the report, summed on worker 0.
    let degrees = crate::report::gather_degrees(worker, comm, &data.users, &data.items)?;
    // 3. Worker 0 writes the manifest and flips CURRENT; everybody learns the outcome.
    let published = (ch.index == 0).then(|| {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let manifest = manifest(job, data, &out, &version, files, ch.peers);
        commit(job, &store_path, &dir, &version, manifest, degrees.as_ref())
    });
    let summary = match published {
        Some(Err(e)) => {
            ch.abort(&e);
            None
        }
        Some(Ok(s)) => {
            ch.broadcast(RunMsg::Published);
            Some(s)
        }
        None => None,
    };
    ch.exchange(worker, "publish: commit")?;
    Ok(summary)
}

/// Writes the report into the staging directory and publishes it with the manifest, then
/// prunes old versions (never fatal); one step against a signal (crate::cleanup).
fn commit(
    job: &Job,
    store_path: &Path,
    staging: &Path,
    version: &str,
    manifest: store::Manifest,
    degrees: Option<&crate::report::Degrees>,
) -> Result<Summary, String> {
    let mut value = manifest.to_value();
    // report.json and report.html go into the staging directory: published with the rest.
    let report = crate::report::write(staging, &mut value, degrees);
    crate::cleanup::publishing(|| {
        let typed: store::Manifest =
            serde_json::from_value(value.clone()).expect("the manifest just built");
        let dir = report.and_then(|_| store::publish(store_path, staging, version, &typed))?;
        // Retention: only after the new version is published.
        if let Err(e) = store::prune(store_path, job.output.keep_versions) {
            eprintln!("warning: published {version}, but pruning old versions failed: {e}");
        }
        Ok(Summary {
            version_dir: dir,
            manifest: value,
        })
    })
}

/// This worker's files of the version: factor packs, the snapshot and recs parts written
/// earlier, similar and bucket parts, held-out pairs.
fn worker_files(
    staging: &Path,
    me: usize,
    data: &Ingested,
    recs: Option<&Recs>,
    compression: crate::job::Compression,
) -> Result<Vec<FileRecord>, String> {
    use store::pack::Kind;
    let mut w = store::VersionWriter::new(staging);
    w.factors(&data.users, Kind::Users)?;
    w.factors(&data.items, Kind::Items)?;
    for (pending, rec) in &data.snapshot {
        w.adopt(pending, rec)?;
    }
    if let Some((b, n)) = recs.and_then(|r| r.similar.as_ref()) {
        w.part(&store::parts::part_path("similar", me, compression), b, *n)?;
    }
    if let Some((b, n)) = recs.and_then(|r| r.buckets.as_ref()) {
        w.part(&store::parts::part_path("buckets", me, compression), b, *n)?;
    }
    if let Some((pending, rec)) = recs.and_then(|r| r.part.as_ref()) {
        w.adopt(pending, rec)?;
    }
    // The held-out pairs the metrics were computed against (`recflow eval STORE`).
    for (set, pairs) in [("holdout", &data.test), ("valid", &data.valid)] {
        if recs.is_some() && !pairs.is_empty() {
            let rel = format!("eval/{set}-{me:05}.bin");
            w.write(&rel, &store::holdout::encode(pairs), pairs.len() as u64)?;
        }
    }
    Ok(w.into_records())
}

/// The version's manifest (worker 0, with every worker's file records).
fn manifest(
    job: &Job,
    data: &Ingested,
    out: &Outcome<'_>,
    version: &str,
    files: Vec<FileRecord>,
    workers: usize,
) -> store::Manifest {
    let mut timings = out.timings.clone();
    timings["total_secs"] = json!(out.started.elapsed().as_secs_f64());
    let recs = out.recs;
    store::Manifest {
        format_version: store::MANIFEST_VERSION,
        recflow_version: env!("CARGO_PKG_VERSION").into(),
        version: version.into(),
        parent: out.lineage.parent.clone(),
        lineage: out.lineage.clone(),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        job: json!(job),
        workers,
        virtual_shards: job.shards.virtual_shards,
        factors: job.factors().0,
        method: Some(job.model.method),
        svd: out.svd.cloned(),
        counts: json!(data.stats),
        confidence: json!(data.confidence),
        train: json!(out.train),
        timings,
        recommend: json!(recs.map(|r| json!({
            "k": job.recommend.k,
            "mode": job.recommend.mode,
            "lines": r.lines,
            "users_without_recs": r.users_without_recs,
            "exact": r.exact,
            "lsh": r.lsh,
        }))),
        metrics: json!(recs
            .filter(|_| has_test(job))
            .map(|r| r.metrics[0].report(r.catalogue))),
        valid_metrics: json!(recs
            .filter(|_| job.eval.valid.is_some())
            .map(|r| r.metrics[1].report(r.catalogue))),
        holdout: recs
            .map(|r| store::manifest::Holdout {
                test_pairs: files_rows(&files, "eval/holdout-"),
                valid_pairs: files_rows(&files, "eval/valid-"),
                catalogue: r.catalogue,
                ks: job.eval.k.list(),
            })
            .filter(|h| h.test_pairs + h.valid_pairs > 0),
        files,
    }
}

/// Rows of the files whose path starts with `prefix`.
fn files_rows(files: &[FileRecord], prefix: &str) -> u64 {
    files
        .iter()
        .filter(|f| f.path.starts_with(prefix))
        .map(|f| f.rows)
        .sum()
}
