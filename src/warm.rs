//! Warm start (`model.warm_start`, the nightly retrain): continue from the store's current version.
//!
//! The parent version contributes its interaction snapshot (read by ingest as pairs added to the
//! new events, so removals retract them) and its factors: known users and items keep their
//! vectors, new ones keep their random start and are folded in by one exact least-squares
//! solve against the fixed other side before the warm iterations. Factor sections are per
//! virtual shard (packed per worker, found by the pack index: [`crate::store::sections`]), so
//! the parent may have been trained with any worker count or process layout.

use crate::cluster::{Comm, CommError};
use crate::comm::Message;
use crate::ids::RawId;
use crate::job::{Job, Method};
use crate::side::Side;
use crate::store::manifest::{InputIdentity, RecsChange};
use crate::store::pack::Kind;
use crate::store::{self, FileRecord, Manifest};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use timely::worker::Worker;

/// What a warm start's supersteps carry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum WarmMsg {
    /// Worker 0's reading of the store's `CURRENT` (None: no version yet, day 1).
    Parent(Option<String>),
    /// The parent's top-k lines as (user, item) raw-id hashes, to the user's owner.
    ParentRecs(Vec<(u64, u64)>),
    /// The sender's share of the comparison with the parent's lists, to worker 0.
    Change(ChangeCounts),
}

/// One worker's comparison of its users' top-k lists with the parent's (integers, so the
/// sum over workers does not depend on its order).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct ChangeCounts {
    /// Users in both versions.
    pub compared: u64,
    /// Of those, users whose top-k set changed.
    pub changed: u64,
    /// Sum over compared users of the share of the lists they keep, in 1e-6 units.
    pub overlap_micros: u64,
}

impl Message for WarmMsg {
    /// 16 bytes per (user, item) pair: the bulk of a warm start's traffic.
    fn payload_bytes(&self) -> u64 {
        match self {
            WarmMsg::ParentRecs(p) => 16 * p.len() as u64,
            _ => 0,
        }
    }
}

/// The version a warm start continues from.
pub struct Parent {
    /// Version name (`vNNNNNN`).
    pub version: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// Its snapshot files: (its directory, the file's manifest record), in a fixed order.
    pub snapshot: Vec<(PathBuf, FileRecord)>,
    files: Vec<FileRecord>,
}

/// Finds the parent: worker 0 reads `CURRENT` (under the store lock) and tells everybody;
/// every worker opens the same version and checks it fits the job. `None` without
/// `model.warm_start` or when the store has no version yet (day 1).
pub fn find(
    worker: &mut Worker,
    comm: &mut Comm,
    job: &Job,
    files: &[PathBuf],
) -> Result<Option<Parent>, CommError> {
    if !job.model.warm_start {
        return Ok(None);
    }
    let store = Path::new(&job.output.store);
    let ch = &mut comm.channel::<WarmMsg>(worker);
    let mut current = None;
    if comm.index == 0 {
        match store::current(store) {
            Ok(v) => current = Some(WarmMsg::Parent(v)),
            Err(e) => ch.abort(&format!("warm start: {e}")),
        }
    }
    let got = ch.broadcast_from(worker, "warm start: find parent", 0, current)?;
    let version = match got {
        WarmMsg::Parent(Some(v)) if !v.is_empty() => v,
        _ => return Ok(None),
    };
    let opened = open(store, &version, job).and_then(|p| {
        if job.model.snapshot && files.is_empty() {
            return Err("warm start: the built-in demo data is already in the parent's snapshot and would count twice; set input.path to the new events, or model.snapshot = false".into());
        }
        if job.model.snapshot {
            refuse_consumed(&p, files)?;
        }
        Ok(p)
    });
    comm.agree(worker, "warm start: open parent", opened)
        .map(Some)
}

fn open(store: &Path, version: &str, job: &Job) -> Result<Parent, String> {
    let (dir, manifest) = store::open(store, Some(version))?;
    let files = manifest.files.clone();
    let v = manifest.virtual_shards;
    if v != job.shards.virtual_shards {
        return Err(format!(
            "warm start: {} was trained with shards.virtual = {v}, this job has {}; virtual shards are fixed for a model's lifetime (set it back, or set model.warm_start = false to train from scratch)",
            dir.display(),
            job.shards.virtual_shards
        ));
    }
    let d = manifest.factors;
    let (want, key) = job.factors();
    if d != want {
        return Err(format!(
            "warm start: {} has {key} = {d}, this job has {want}; set it back, or set model.warm_start = false to train from scratch",
            dir.display(),
        ));
    }
    if job.model.method == Method::Svd && crate::svd::of_manifest(&manifest).is_none() {
        return Err(format!(
            "warm start: {} is an als model, and an svd warm start projects new users against the parent's singular vectors; set model.warm_start = false once to factorise with model.method = \"svd\"",
            dir.display()
        ));
    }
    let snapshot: Vec<(PathBuf, FileRecord)> = files
        .iter()
        .filter(|f| job.model.snapshot && f.path.starts_with("snapshot/"))
        .map(|f| (dir.clone(), f.clone()))
        .collect();
    if job.model.snapshot
        && snapshot.is_empty()
        && manifest.counts["pairs"].as_u64().unwrap_or(0) > 0
    {
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
    let kind = if name == "users" {
        Kind::Users
    } else {
        Kind::Items
    };
    let mut new = vec![true; side.rows()];
    let owned = |vs: u32| side.vshards.binary_search(&vs).is_ok();
    let shards = store::sections::factors(&parent.dir, &parent.files, kind, d, &owned)
        .map_err(|e| format!("{e} (the parent version is damaged: train from scratch with model.warm_start = false)"))?;
    for f in shards {
        let j = side
            .vshards
            .binary_search(&f.vshard)
            .expect("an owned shard");
        let at: HashMap<&RawId, usize> = f.ids.iter().enumerate().map(|(i, id)| (id, i)).collect();
        let rows = side.starts[j]..side.starts[j + 1];
        for (r, is_new) in rows.clone().zip(&mut new[rows]) {
            if let Some(&i) = at.get(&side.ids[r]) {
                side.factors[r * d..(r + 1) * d].copy_from_slice(&f.factors[i * d..(i + 1) * d]);
                *is_new = false;
            }
        }
    }
    Ok(new)
}

/// How many consumed input files a version remembers (its own and its ancestors').
const CONSUMED_MAX: usize = 10_000;

/// Folds new entities in before training: ALS solves them against the fixed other side
/// (then iterates); an svd model projects them against the parent's factorisation
/// ([`crate::svd::project::fold_in`]) and is not refactorised. Collective.
#[allow(clippy::too_many_arguments)]
pub fn fold_in(
    worker: &mut Worker,
    comm: &mut Comm,
    job: &Job,
    parent: &Parent,
    users: &mut Side,
    items: &mut Side,
    new_users: &[bool],
    new_items: &[bool],
) -> Result<(), CommError> {
    if job.model.method == Method::Als {
        return crate::als::fold_in(worker, comm, &job.als, users, items, new_users, new_items);
    }
    // `open` checked that the parent has an svd record; its input is what V factorised.
    let rec = crate::svd::of_manifest(&parent.manifest).unwrap_or_default();
    let input = rec.input.unwrap_or(job.svd.input);
    let sigma = rec.singular_values;
    let kib = job.als.exchange_kib;
    let sides = (users, items);
    crate::svd::project::fold_in(
        worker,
        comm,
        kib,
        sides,
        (new_users, new_items),
        &sigma,
        input,
    )
}

/// Identity of an input file: canonical path, size and modification time.
fn identity(path: &Path) -> InputIdentity {
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let meta = std::fs::metadata(path).ok();
    let modified = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64);
    InputIdentity {
        path: canonical.display().to_string(),
        bytes: meta.map(|m| m.len()),
        modified_ns: modified,
    }
}

/// The input files consumed into a new version's snapshot: the parent's (when its snapshot
/// was carried forward) and this run's, newest last, at most [`CONSUMED_MAX`].
pub fn consumed(parent: Option<&Parent>, job: &Job, files: &[PathBuf]) -> Vec<InputIdentity> {
    let mut all: Vec<InputIdentity> = parent
        .filter(|_| job.model.snapshot)
        .map(|p| p.manifest.lineage.consumed.clone())
        .unwrap_or_default();
    all.extend(files.iter().map(|f| identity(f)));
    let skip = all.len().saturating_sub(CONSUMED_MAX);
    all.split_off(skip)
}

/// A warm start adds the parent's snapshot to the input: an input file the snapshot already
/// holds would count its events twice (the classic re-run of last night's job).
fn refuse_consumed(parent: &Parent, files: &[PathBuf]) -> Result<(), String> {
    let seen = &parent.manifest.lineage.consumed;
    for f in files {
        if seen.contains(&identity(f)) {
            return Err(format!(
                "warm start: input {} (same path, size and modification time) was already consumed into {}; its events would count twice. Point input.path at the events since then, or set model.snapshot = false if the input is a full dump of all events",
                f.display(),
                parent.dir.display()
            ));
        }
    }
    Ok(())
}

/// `user<TAB>item<TAB>…` lines → (user, item) as the raw ids' stable hashes, in file order;
/// lines that do not parse are skipped (the parent's files were written by recflow and
/// checksummed). The comparison needs only equality, and hashes sort and compare without an
/// allocation per user (with maps of raw ids it took longer than the recommend stage).
fn rec_pairs(text: &[u8]) -> Vec<(u64, u64)> {
    text.split(|&b| b == b'\n')
        .filter_map(|l| {
            let mut f = l.split(|&b| b == b'\t');
            let u = RawId::parse(f.next()?).ok()?.stable_hash();
            Some((u, RawId::parse(f.next()?).ok()?.stable_hash()))
        })
        .collect()
}

/// How this version's top-k lists differ from the parent's, for the users both have: users
/// compared, users whose top-k set changed, mean overlap. Collective; complete on worker 0.
/// `new` is this worker's recommendations (its users only) as [`rec_pairs`] gives them.
pub fn compare_recs(
    worker: &mut Worker,
    comm: &mut Comm,
    parent: &Parent,
    owners: &crate::side::Assignment,
    mut new: Vec<(u64, u64)>,
) -> Result<RecsChange, CommError> {
    let ch = &mut comm.channel::<WarmMsg>(worker);
    match parent_recs_by_owner(parent, owners, comm.index, comm.peers) {
        Ok(out) => {
            for (w, o) in out.into_iter().enumerate() {
                ch.send(w, WarmMsg::ParentRecs(o));
            }
        }
        Err(e) => ch.abort(&format!("comparing with the parent: {e}")),
    }
    let mut old: Vec<(u64, u64)> = Vec::new();
    for (_, m) in ch.exchange(worker, "report: parent recommendations")? {
        if let WarmMsg::ParentRecs(mut p) = m {
            old.append(&mut p);
        }
    }
    old.sort_unstable();
    new.sort_unstable();
    ch.send(0, WarmMsg::Change(count_changes(&old, &new)));
    let mut total = ChangeCounts::default();
    for (_, m) in ch.exchange(worker, "report: compare recommendations")? {
        if let WarmMsg::Change(c) = m {
            total.compared += c.compared;
            total.changed += c.changed;
            total.overlap_micros += c.overlap_micros;
        }
    }
    Ok(RecsChange {
        users_compared: total.compared,
        users_topk_changed: total.changed,
        mean_topk_overlap: if total.compared > 0 {
            total.overlap_micros as f64 / 1e6 / total.compared as f64
        } else {
            0.0
        },
    })
}

/// This worker's share of the parent's recs parts (read round-robin), as [`rec_pairs`], per
/// destination: the owner of each line's user.
fn parent_recs_by_owner(
    parent: &Parent,
    owners: &crate::side::Assignment,
    index: usize,
    peers: usize,
) -> Result<Vec<Vec<(u64, u64)>>, String> {
    let parts: Vec<&FileRecord> = parent
        .files
        .iter()
        .filter(|f| f.path.starts_with("recs/"))
        .collect();
    let mut out: Vec<Vec<(u64, u64)>> = vec![Vec::new(); peers];
    for f in parts.iter().skip(index).step_by(peers) {
        let text = store::parts::read(&parent.dir, f)?;
        for (u, i) in rec_pairs(&text) {
            // The same owner as `RawId::vshard` gives.
            let v = (u % owners.shards() as u64) as u32;
            out[owners.owner(v)].push((u, i));
        }
    }
    Ok(out)
}

/// Compares this worker's users' lists `new` with the parent's `old` (both sorted).
fn count_changes(old: &[(u64, u64)], new: &[(u64, u64)]) -> ChangeCounts {
    let mut c = ChangeCounts::default();
    // Users matched in one merge walk (a binary search of the parent's pairs per user cost
    // 2 s at a million users: a cache miss per step).
    let mut olds = old.chunk_by(|a, b| a.0 == b.0).peekable();
    for items in new.chunk_by(|a, b| a.0 == b.0) {
        let u = items[0].0;
        while olds.next_if(|o| o[0].0 < u).is_some() {}
        let Some(before) = olds.next_if(|o| o[0].0 == u) else {
            continue;
        };
        let kept = items
            .iter()
            .filter(|i| before.binary_search(i).is_ok())
            .count();
        c.compared += 1;
        if kept != items.len() || items.len() != before.len() {
            c.changed += 1;
        }
        c.overlap_micros +=
            (1e6 * kept as f64 / items.len().max(before.len()) as f64).round() as u64;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SplitMix;
    use std::collections::{BTreeMap, BTreeSet};

    /// Random top-k lists: users 0..40, up to 5 items of 0..12 each, no duplicates.
    fn lists(seed: u64) -> Vec<(u64, u64)> {
        let mut rng = SplitMix::new(seed);
        let mut out = BTreeSet::new();
        for u in 0..40 {
            for _ in 0..rng.next_u64() % 6 {
                out.insert((u, rng.next_u64() % 12));
            }
        }
        out.into_iter().collect()
    }

    /// [`count_changes`] by sets per user, the definition it implements.
    fn naive(old: &[(u64, u64)], new: &[(u64, u64)]) -> ChangeCounts {
        let by_user = |p: &[(u64, u64)]| {
            let mut m: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
            p.iter().for_each(|&(u, i)| {
                m.entry(u).or_default().insert(i);
            });
            m
        };
        let (old, new) = (by_user(old), by_user(new));
        let mut c = ChangeCounts::default();
        for (u, n) in &new {
            let Some(o) = old.get(u) else { continue };
            let kept = n.intersection(o).count();
            c.compared += 1;
            c.changed += u64::from(n != o);
            c.overlap_micros += (1e6 * kept as f64 / n.len().max(o.len()) as f64).round() as u64;
        }
        c
    }

    #[test]
    fn list_changes_match_the_per_user_set_comparison() {
        for seed in 0..20 {
            let (old, new) = (lists(seed), lists(seed + 100));
            let (got, want) = (count_changes(&old, &new), naive(&old, &new));
            assert_eq!(
                (got.compared, got.changed, got.overlap_micros),
                (want.compared, want.changed, want.overlap_micros),
                "seed {seed}"
            );
            assert!(want.compared > 0 && want.changed > 0);
            let same = count_changes(&old, &old);
            assert_eq!(same.changed, 0);
            assert_eq!(same.overlap_micros, 1_000_000 * same.compared);
        }
    }
}
