//! [`VersionWriter`]: the one way a file enters a version (or a worker's pending directory
//! that is moved into one): written, synced, checksummed and recorded for the manifest.

use super::format;
use super::pack::{self, Kind};
use super::{digest, sync_file, write_synced, FileRecord};
use crate::side::Side;
use std::path::{Path, PathBuf};

/// Writes files under one directory and keeps their manifest records.
pub struct VersionWriter {
    dir: PathBuf,
    records: Vec<FileRecord>,
}

impl VersionWriter {
    /// A writer for files under `dir` (a staging or pending directory).
    pub fn new(dir: &Path) -> VersionWriter {
        VersionWriter {
            dir: dir.to_path_buf(),
            records: Vec::new(),
        }
    }

    /// Writes and syncs `rel` (its directory is created) holding `rows` rows.
    pub fn write(&mut self, rel: &str, bytes: &[u8], rows: u64) -> Result<&FileRecord, String> {
        self.write_indexed(rel, bytes, rows, Vec::new())
    }

    /// Writes an output part held in memory (similar, buckets) as `rel` names it
    /// ([`super::parts::part_path`]): `plain` is its text, compressed on the way for `.zst`.
    pub fn part(&mut self, rel: &str, plain: &[u8], rows: u64) -> Result<&FileRecord, String> {
        self.write(rel, &super::parts::encode(rel, plain), rows)
    }

    fn write_indexed(
        &mut self,
        rel: &str,
        bytes: &[u8],
        rows: u64,
        vshards: Vec<u32>,
    ) -> Result<&FileRecord, String> {
        let path = self.dir.join(rel);
        if let Some(parent) = path.parent() {
            crate::cleanup::create_dir_all(parent)?;
        }
        write_synced(&path, bytes)?;
        self.records.push(FileRecord {
            path: rel.to_string(),
            bytes: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
            rows,
            xxh3: Some(digest(bytes)),
            vshards,
        });
        Ok(self.records.last().expect("just pushed"))
    }

    /// Writes the sections (vshard, bytes, rows) of one kind as one pack
    /// `<sub>/pack-NNNNN.bin`, NNNNN its first shard (each shard has one owner, so names never
    /// collide); nothing when there are no sections.
    pub fn pack(
        &mut self,
        kind: Kind,
        sub: &str,
        sections: Vec<(u32, Vec<u8>, u64)>,
    ) -> Result<(), String> {
        let Some(first) = sections.first().map(|s| s.0) else {
            return Ok(());
        };
        let rows = sections.iter().map(|s| s.2).sum();
        let vshards = sections.iter().map(|s| s.0).collect();
        let bytes = pack::encode(
            kind,
            &sections.into_iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
        );
        self.write_indexed(&format!("{sub}/pack-{first:05}.bin"), &bytes, rows, vshards)?;
        Ok(())
    }

    /// Writes one side's factors: a pack of one section per owned virtual shard.
    pub fn factors(&mut self, side: &Side, kind: Kind) -> Result<(), String> {
        let sub = if kind == Kind::Users {
            "users"
        } else {
            "items"
        };
        self.pack(kind, sub, factor_sections(side, kind as u8))
    }

    /// Moves in a file written earlier elsewhere (a worker's pending snapshot or recs part,
    /// its record's path relative to the version), syncing it first.
    pub fn adopt(&mut self, from: &Path, rec: &FileRecord) -> Result<(), String> {
        sync_file(from)?;
        let dest = self.dir.join(&rec.path);
        if let Some(parent) = dest.parent() {
            crate::cleanup::create_dir_all(parent)?;
        }
        std::fs::rename(from, &dest)
            .map_err(|e| format!("cannot move {} to {}: {e}", from.display(), dest.display()))?;
        self.records.push(rec.clone());
        Ok(())
    }

    /// The records of the files written or adopted, in that order.
    pub fn records(&self) -> &[FileRecord] {
        &self.records
    }

    /// Where `rel` lies under this writer's directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// The records, consuming the writer.
    pub fn into_records(self) -> Vec<FileRecord> {
        self.records
    }
}

/// One factor file per owned virtual shard of `side`: (vshard, bytes, rows). The one factor
/// encoder (versions and checkpoints alike).
pub fn factor_sections(side: &Side, tag: u8) -> Vec<(u32, Vec<u8>, u64)> {
    side.vshards
        .iter()
        .enumerate()
        .map(|(j, &vs)| {
            let (a, b) = (side.starts[j], side.starts[j + 1]);
            let d = side.dim;
            let bytes = format::encode(tag, vs, d, &side.ids[a..b], &side.factors[a * d..b * d]);
            (vs, bytes, (b - a) as u64)
        })
        .collect()
}
