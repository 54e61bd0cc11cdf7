//! Training checkpoints in the store, and resuming from them.
//!
//! Every `als.checkpoint_every` iterations each worker writes the factor files of the virtual
//! shards it owns to `<store>/.checkpoint/it-NNNNNN/`; once all have, worker 0 points
//! `<store>/.checkpoint/state.json` at it (temp file + rename) and removes older ones. A
//! checkpoint carries a fingerprint of the job and the ingested data, so one from another job
//! or other data is refused. `state.json` also records each file's xxh3-128 digest, so a file
//! swapped in from another checkpoint or store is refused by name (a state without digests,
//! from an older recflow, falls back to the files' own CRC-32). Factors after iteration i are
//! the whole ALS state, so a resumed run ends with the same bytes as an uninterrupted one, on
//! any worker layout.

use crate::cluster::{Comm, CommError};
use crate::comm::Message;
use crate::ingest::IngestStats;
use crate::job::Job;
use crate::side::Side;
use crate::store;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use timely::worker::Worker;

/// One file a worker wrote into a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileDigest {
    /// Its path in the checkpoint directory (`users/vs-NNNNN.bin`).
    pub path: String,
    /// Its xxh3-128 digest, as `state.json` records it.
    pub xxh3: String,
}

/// What a checkpoint's supersteps carry (control only: the factors go to files, not to
/// other workers).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum CheckpointMsg {
    /// The files the sender wrote, to worker 0, which records them in `state.json`.
    Written(Vec<FileDigest>),
}

impl Message for CheckpointMsg {}

/// Fingerprint of what determines the model: the job (without output, iteration count and
/// checkpoint settings) and the ingested counts.
pub fn fingerprint(job: &Job, stats: &IngestStats) -> String {
    let mut j = job.clone();
    j.output = Default::default();
    j.als.iterations = 0;
    j.als.checkpoint_every = 0;
    j.als.loss_every = 0;
    j.als.exchange_kib = 0;
    let text = serde_json::json!({
        "job": j,
        "pairs": stats.pairs,
        "users": stats.users,
        "items": stats.items,
        "events": stats.read.events,
    })
    .to_string();
    format!("{:08x}-{}", crc32fast::hash(text.as_bytes()), text.len())
}

fn root(job: &Job) -> PathBuf {
    Path::new(&job.output.store).join(".checkpoint")
}

/// Writes one side's files; returns each file's path in the checkpoint and digest.
fn write_side(dir: &Path, side: &Side, name: &str, tag: u8) -> Result<Vec<FileDigest>, String> {
    std::fs::create_dir_all(dir.join(name))
        .map_err(|e| format!("cannot create checkpoint {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    // One file per virtual shard (unlike a version's packs): a resume with another worker
    // layout reads exactly the shards it owns.
    for (vs, bytes, _) in store::writer::factor_sections(side, tag) {
        let rel = format!("{name}/vs-{vs:05}.bin");
        store::write_synced(&dir.join(&rel), &bytes)?;
        let xxh3 = store::digest(&bytes);
        out.push(FileDigest { path: rel, xxh3 });
    }
    Ok(out)
}

/// Writes a checkpoint after `iteration` (collective: every worker calls it).
pub fn save(
    worker: &mut Worker,
    comm: &mut Comm,
    job: &Job,
    fp: &str,
    iteration: usize,
    users: &Side,
    items: &Side,
) -> Result<(), CommError> {
    let dir = root(job).join(format!("it-{iteration:06}"));
    let mine = write_side(&dir, users, "users", 0).and_then(|mut u| {
        u.extend(write_side(&dir, items, "items", 1)?);
        Ok(u)
    });
    let ch = &mut comm.channel::<CheckpointMsg>(worker);
    match mine {
        Ok(m) => ch.send(0, CheckpointMsg::Written(m)),
        Err(e) => ch.abort(&e),
    }
    let mut digests = serde_json::Map::new();
    for (_, CheckpointMsg::Written(m)) in ch.exchange(worker, "checkpoint: write")? {
        digests.extend(m.into_iter().map(|f| (f.path, f.xxh3.into())));
    }
    let done = if comm.index == 0 {
        let state = serde_json::json!({ "iteration": iteration, "fingerprint": fp, "dir": format!("it-{iteration:06}"), "xxh3": digests });
        let tmp = root(job).join(format!(".state.tmp-{}", std::process::id()));
        store::write_synced(&tmp, state.to_string().as_bytes())
            .and_then(|_| {
                std::fs::rename(&tmp, root(job).join("state.json"))
                    .map_err(|e| format!("cannot publish checkpoint: {e}"))
            })
            .map(|_| {
                // Older checkpoints are no longer needed.
                if let Ok(rd) = std::fs::read_dir(root(job)) {
                    for e in rd.filter_map(Result::ok) {
                        let n = e.file_name().to_string_lossy().into_owned();
                        if n.starts_with("it-") && n != format!("it-{iteration:06}") {
                            let _ = std::fs::remove_dir_all(e.path());
                        }
                    }
                }
            })
    } else {
        Ok(())
    };
    comm.agree(worker, "checkpoint: publish", done)
}

/// Loads one side; `digests` is the state's `xxh3` map (null in an older state).
fn load_side(
    dir: &Path,
    side: &mut Side,
    name: &str,
    digests: &serde_json::Value,
) -> Result<(), String> {
    for (j, &vs) in side.vshards.iter().enumerate() {
        let rel = format!("{name}/vs-{vs:05}.bin");
        let path = dir.join(&rel);
        let bytes = std::fs::read(&path)
            .map_err(|e| format!("cannot read checkpoint file {}: {e}", path.display()))?;
        if !digests.is_null() && digests[&rel].as_str() != Some(&store::digest(&bytes)) {
            return Err(format!(
                "{}: its digest differs from the checkpoint's state.json: the file is corrupted or was replaced (remove {} to start over)",
                path.display(),
                dir.display()
            ));
        }
        let f = store::sections::factor_section(&bytes, &path, vs, side.dim)?;
        let (a, b) = (side.starts[j], side.starts[j + 1]);
        if f.ids[..] != side.ids[a..b] {
            return Err(format!(
                "{}: does not match the ingested data (different input?)",
                path.display()
            ));
        }
        side.factors[a * side.dim..b * side.dim].copy_from_slice(&f.factors);
    }
    Ok(())
}

/// Loads the last complete checkpoint into this worker's sides; returns its iteration.
/// Collective: every worker calls it, and any worker's failure fails all.
pub fn resume(
    worker: &mut Worker,
    comm: &mut Comm,
    job: &Job,
    fp: &str,
    users: &mut Side,
    items: &mut Side,
) -> Result<usize, CommError> {
    let r = (|| -> Result<usize, String> {
        let sp = root(job).join("state.json");
        let text = std::fs::read_to_string(&sp)
            .map_err(|e| format!("--resume: no checkpoint at {} ({e}); run without --resume, with als.checkpoint_every > 0", sp.display()))?;
        let state: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", sp.display()))?;
        if state["fingerprint"].as_str() != Some(fp) {
            return Err(format!(
                "--resume: the checkpoint in {} was made by a different job or from different data; refusing to load it (remove the directory to start over)",
                root(job).display()
            ));
        }
        let it = state["iteration"]
            .as_u64()
            .ok_or("checkpoint state has no iteration")? as usize;
        let name = state["dir"].as_str().ok_or("checkpoint state has no dir")?;
        // Like CURRENT: a directory of this checkpoint, never a path elsewhere.
        if !name.starts_with("it-") || name.contains(['/', '\\']) || name.contains("..") {
            return Err(format!(
                "{}: bad checkpoint directory '{}'",
                sp.display(),
                crate::escape::escape(name)
            ));
        }
        let dir = root(job).join(name);
        load_side(&dir, users, "users", &state["xxh3"])?;
        load_side(&dir, items, "items", &state["xxh3"])?;
        Ok(it)
    })();
    comm.agree(worker, "checkpoint: resume", r)
}
