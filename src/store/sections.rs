//! Reading a version's per-virtual-shard sections, whichever way they were stored: packed
//! per worker ([`super::pack`], written now) or one file per virtual shard
//! (`users/vs-NNNNN.bin`, `snapshot/vs-NNNNN.bin`, written by older versions). The one place
//! that decodes factor and snapshot files of a version, so warm start, queries, export and
//! ingest read old and new stores alike.

use super::format::{self, FactorFile};
use super::pack::{self, Kind};
use super::{read_record, snapshot, FileRecord};
use crate::ids::Pair;
use std::path::Path;

/// The virtual shard an older per-shard file holds, from its name (`<sub>/vs-NNNNN.bin`).
fn per_shard(rec: &FileRecord) -> Option<u32> {
    let name = rec.path.rsplit('/').next()?;
    name.strip_prefix("vs-")?.strip_suffix(".bin")?.parse().ok()
}

fn sub(kind: Kind) -> &'static str {
    match kind {
        Kind::Users => "users/",
        Kind::Items => "items/",
        Kind::Snapshot => "snapshot/",
    }
}

/// What [`for_each`] calls per section: (vshard, its bytes, the file's path).
pub type Each<'a> = dyn FnMut(u32, &[u8], &Path) -> Result<(), String> + 'a;

/// Calls `each(vshard, section bytes, file path)` for every section of `kind` under `dir`
/// whose virtual shard `wanted` accepts, in file order and, within a pack, in shard order.
/// Only files holding a wanted shard are read; each is checked against its record first.
pub fn for_each(
    dir: &Path,
    files: &[FileRecord],
    kind: Kind,
    wanted: &dyn Fn(u32) -> bool,
    each: &mut Each,
) -> Result<(), String> {
    for_each_cached(dir, files, kind, wanted, &mut Cache::default(), each)
}

/// Files already read and checked, by path: a process answering many queries reads a
/// worker's pack once, not once per virtual shard it needs from it.
#[derive(Default)]
pub struct Cache(std::collections::HashMap<String, Vec<u8>>);

impl Cache {
    fn read(&mut self, dir: &Path, rec: &FileRecord) -> Result<&[u8], String> {
        if !self.0.contains_key(&rec.path) {
            self.0.insert(rec.path.clone(), read_record(dir, rec)?);
        }
        Ok(&self.0[&rec.path])
    }
}

/// [`for_each`], keeping what it reads in `cache` (and reading nothing it holds).
pub fn for_each_cached(
    dir: &Path,
    files: &[FileRecord],
    kind: Kind,
    wanted: &dyn Fn(u32) -> bool,
    cache: &mut Cache,
    each: &mut Each,
) -> Result<(), String> {
    for rec in files.iter().filter(|f| f.path.starts_with(sub(kind))) {
        let path = dir.join(&rec.path);
        if let Some(vs) = per_shard(rec) {
            if wanted(vs) {
                each(vs, &read_record(dir, rec)?, &path)?;
            }
            continue;
        }
        // A pack's record lists its shards; an empty list (a damaged manifest) reads it.
        if !rec.vshards.is_empty() && !rec.vshards.iter().any(|&v| wanted(v)) {
            continue;
        }
        let bytes = cache.read(dir, rec)?;
        let sections = pack::decode(bytes, kind).map_err(|e| format!("{}: {e}", path.display()))?;
        let listed: Vec<u32> = sections.iter().map(|s| s.0).collect();
        if listed != rec.vshards {
            return Err(format!(
                "{}: its index lists virtual shards {listed:?}, the manifest {:?}: the file or the manifest was replaced",
                path.display(),
                rec.vshards
            ));
        }
        for (vs, s) in sections.into_iter().filter(|s| wanted(s.0)) {
            each(vs, s, &path)?;
        }
    }
    Ok(())
}

/// Decodes one factor section and checks it is the shard and dimension expected.
pub fn factor_section(
    bytes: &[u8],
    path: &Path,
    vs: u32,
    dim: usize,
) -> Result<FactorFile, String> {
    let f = format::decode(bytes).map_err(|e| format!("{}: shard {vs}: {e}", path.display()))?;
    if f.vshard != vs || f.dim != dim {
        return Err(format!(
            "{}: holds shard {} of dimension {}, expected shard {vs} of dimension {dim}: the version is inconsistent",
            path.display(),
            f.vshard,
            f.dim
        ));
    }
    Ok(f)
}

/// The factor sections of one side whose shard `wanted` accepts, in shard order.
pub fn factors(
    dir: &Path,
    files: &[FileRecord],
    kind: Kind,
    dim: usize,
    wanted: &dyn Fn(u32) -> bool,
) -> Result<Vec<FactorFile>, String> {
    let mut out = Vec::new();
    for_each(dir, files, kind, wanted, &mut |vs, b, path| {
        out.push(factor_section(b, path, vs, dim)?);
        Ok(())
    })?;
    out.sort_by_key(|f| f.vshard);
    Ok(out)
}

/// The snapshot pairs of the shards `wanted` accepts, shard by shard in file order.
pub fn snapshot_pairs(
    dir: &Path,
    files: &[FileRecord],
    wanted: &dyn Fn(u32) -> bool,
) -> Result<Vec<Pair>, String> {
    snapshot_pairs_cached(dir, files, wanted, &mut Cache::default())
}

/// [`snapshot_pairs`] through a [`Cache`].
pub fn snapshot_pairs_cached(
    dir: &Path,
    files: &[FileRecord],
    wanted: &dyn Fn(u32) -> bool,
    cache: &mut Cache,
) -> Result<Vec<Pair>, String> {
    let mut out = Vec::new();
    for_each_cached(
        dir,
        files,
        Kind::Snapshot,
        wanted,
        cache,
        &mut |vs, b, path| {
            let (got, pairs) =
                snapshot::decode(b).map_err(|e| format!("{}: shard {vs}: {e}", path.display()))?;
            if got != vs {
                return Err(format!("{}: holds shard {got}, not {vs}", path.display()));
            }
            out.extend(pairs);
            Ok(())
        },
    )?;
    Ok(out)
}
