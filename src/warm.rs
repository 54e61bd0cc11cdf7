//! Warm start: continue from the store's current version (DESIGN §7).
//!
//! The parent version contributes its interaction snapshot (read by ingest as pairs added to the
//! new events, so removals retract them) and its factors: known users and items keep their
//! vectors, new ones keep their random start and are folded in by one exact least-squares
//! solve against the fixed other side before the warm iterations. Factor files are per virtual
//! shard, so the parent may have been trained with any worker count or process layout.

use crate::cluster::{Body, Comm, CommError};
use crate::job::Job;
use crate::side::Side;
use crate::store::{self, FileRecord};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use timely::worker::Worker;

/// The version a warm start continues from.
pub struct Parent {
    /// Version name (`vNNNNNN`).
    pub version: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: serde_json::Value,
    /// Its snapshot files, in a fixed order.
    pub snapshot: Vec<PathBuf>,
    files: Vec<FileRecord>,
}

/// Finds the parent: worker 0 reads `CURRENT` (under the store lock) and tells everybody;
/// every worker opens the same version and checks it fits the job. `None` without
/// `model.warm_start` or when the store has no version yet (day 1).
pub fn find(worker: &mut Worker, comm: &mut Comm, job: &Job) -> Result<Option<Parent>, CommError> {
    if !job.model.warm_start {
        return Ok(None);
    }
    let store = Path::new(&job.output.store);
    if comm.index == 0 {
        match store::current(store) {
            Ok(v) => comm.broadcast(Body::Text(v.unwrap_or_default())),
            Err(e) => comm.broadcast(Body::Abort(format!("warm start: {e}"))),
        }
    }
    let mut version = String::new();
    for (_, b) in comm.exchange(worker, "warm start: find parent")? {
        if let Body::Text(t) = b {
            version = t;
        }
    }
    if version.is_empty() {
        return Ok(None);
    }
    let opened = open(store, &version, job);
    comm.agree(worker, "warm start: open parent", opened)
        .map(Some)
}

fn open(store: &Path, version: &str, job: &Job) -> Result<Parent, String> {
    let (dir, manifest) = store::open(store, Some(version))?;
    let files: Vec<FileRecord> = serde_json::from_value(manifest["files"].clone())
        .map_err(|e| format!("{}: bad file list in manifest: {e}", dir.display()))?;
    let v = manifest["virtual_shards"].as_u64().unwrap_or(0);
    if v != job.shards.virtual_shards as u64 {
        return Err(format!(
            "warm start: {} was trained with shards.virtual = {v}, this job has {}; virtual shards are fixed for a model's lifetime (set it back, or set model.warm_start = false to train from scratch)",
            dir.display(),
            job.shards.virtual_shards
        ));
    }
    let d = manifest["factors"].as_u64().unwrap_or(0);
    if d != job.als.factors as u64 {
        return Err(format!(
            "warm start: {} has als.factors = {d}, this job has {}; set it back, or set model.warm_start = false to train from scratch",
            dir.display(),
            job.als.factors
        ));
    }
    let snapshot: Vec<PathBuf> = files
        .iter()
        .filter(|f| f.path.starts_with("snapshot/"))
        .map(|f| dir.join(&f.path))
        .collect();
    if snapshot.is_empty() && manifest["counts"]["pairs"].as_u64().unwrap_or(0) > 0 {
        return Err(format!(
            "warm start: {} has no interaction snapshot (made by an older recflow?); set model.warm_start = false once to publish a version with one",
            dir.display()
        ));
    }
    Ok(Parent {
        version: version.to_string(),
        dir,
        manifest,
        snapshot,
        files,
    })
}

/// Gives every entity of `side` that the parent knows its parent vector. Returns, per row,
/// whether the entity is new (not in the parent).
pub fn load_factors(parent: &Parent, side: &mut Side, name: &str) -> Result<Vec<bool>, String> {
    let d = side.dim;
    let mut new = vec![true; side.rows()];
    for (j, &vs) in side.vshards.iter().enumerate() {
        let rel = format!("{name}/vs-{vs:05}.bin");
        let Some(rec) = parent.files.iter().find(|f| f.path == rel) else {
            continue;
        };
        let path = parent.dir.join(&rel);
        let bytes =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if bytes.len() as u64 != rec.bytes || crc32fast::hash(&bytes) != rec.crc32 {
            return Err(format!(
                "{}: size or checksum differs from the manifest: the parent version is corrupted (train from scratch with model.warm_start = false)",
                path.display()
            ));
        }
        let f = store::format::decode(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let at: HashMap<&crate::ids::RawId, usize> =
            f.ids.iter().enumerate().map(|(i, id)| (id, i)).collect();
        for r in side.starts[j]..side.starts[j + 1] {
            if let Some(&i) = at.get(&side.ids[r]) {
                side.factors[r * d..(r + 1) * d].copy_from_slice(&f.factors[i * d..(i + 1) * d]);
                new[r] = false;
            }
        }
    }
    Ok(new)
}
