//! The model store: versioned directories published atomically.
//!
//! `<store>/<version>/` holds `manifest.json`, the factor and snapshot packs
//! (`users/pack-NNNNN.bin`, one per worker: [`pack`]; older versions hold one
//! `users/vs-NNNNN.bin` per virtual shard, still read: [`sections`]), the held-out pairs
//! (`eval/`) and output parts. A version is written under `<store>/.staging-<version>`, every file is
//! synced, the directory is renamed into place, and only then is `<store>/CURRENT` replaced
//! (write a temporary file, sync, rename). A crash at any moment leaves the previous
//! `CURRENT` naming a complete version.

mod codec;
pub mod format;
pub mod holdout;
pub mod manifest;
pub mod pack;
pub mod parts;
pub mod sections;
pub mod snapshot;
pub mod writer;

pub use manifest::{open, Manifest, MANIFEST_VERSION};
pub use parts::PartWriter;
pub use writer::VersionWriter;

use crate::ids::RawId;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Crash injection for tests: `RECFLOW_TEST_CRASH_AT=N` aborts the process (as `kill -9`
/// would, without unwinding or cleanup) at the N-th [`crash_point`] it passes.
pub const CRASH_ENV: &str = "RECFLOW_TEST_CRASH_AT";

/// A place where a real crash could happen between two durable steps of a publish.
pub fn crash_point() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static AT: OnceLock<u64> = OnceLock::new();
    static PASSED: AtomicU64 = AtomicU64::new(0);
    let at = *AT.get_or_init(|| {
        std::env::var(CRASH_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    });
    if at > 0 && PASSED.fetch_add(1, Ordering::SeqCst) + 1 == at {
        std::process::abort();
    }
}

/// Signal injection for tests: `RECFLOW_TEST_SIGNAL_AT=POINT` sends this process SIGINT when
/// the run reaches [`signal_point`] `POINT` (`staged`: the staging directory exists; `flip`:
/// just before `CURRENT` is replaced; `flipped`: just after, before pruning).
pub const SIGNAL_ENV: &str = "RECFLOW_TEST_SIGNAL_AT";

/// A place where a test may deliver SIGINT at a known step of a publish. Outside the publish
/// lock (`staged`) the run then waits for the handler to end the process, so the outcome does
/// not depend on which thread runs first.
pub fn signal_point(point: &str) {
    if std::env::var(SIGNAL_ENV).is_ok_and(|v| v == point) {
        let _ = signal_hook::low_level::raise(signal_hook::consts::SIGINT);
        if point == "staged" {
            loop {
                std::thread::park();
            }
        }
    }
}

/// Prefix of the directories where workers keep files for the next version before it is
/// staged (large files written early so they need not stay in memory).
pub const PENDING_PREFIX: &str = ".pending-";

/// Subdirectories of a version.
const SUBDIRS: [&str; 7] = [
    "users", "items", "recs", "similar", "buckets", "snapshot", "eval",
];

/// A file recorded in the manifest.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct FileRecord {
    /// Path relative to the version directory.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// CRC-32 of the whole file. For files that end in their own CRC-32 (factor and snapshot
    /// files) this is the same constant for every file: only old stores rely on it.
    pub crc32: u32,
    /// Rows (entities or lines) in it.
    pub rows: u64,
    /// xxh3-128 of the whole file (32 hex digits): what identifies its content. Absent in
    /// manifests written before it existed; readers then fall back to `crc32`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xxh3: Option<String>,
    /// For a pack ([`pack`]): the virtual shards it holds, ascending, so a reader opens only
    /// the packs of the shards it needs. Empty for any other file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vshards: Vec<u32>,
}

/// The content digest recorded in [`FileRecord::xxh3`].
pub fn digest(bytes: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(bytes))
}

/// Checks a file's bytes against its record: size, then the xxh3-128 digest (or, for a
/// record without one, the CRC-32), so a swapped, stale or foreign file is refused by name.
pub fn check_record(path: &Path, f: &FileRecord, bytes: &[u8]) -> Result<(), String> {
    let same = bytes.len() as u64 == f.bytes
        && match &f.xxh3 {
            Some(d) => digest(bytes) == *d,
            None => crc32fast::hash(bytes) == f.crc32,
        };
    if same {
        return Ok(());
    }
    Err(format!(
        "{}: size or checksum differs from the manifest: the file is corrupted, or was replaced by another version's or another store's file",
        path.display()
    ))
}

/// Fault injection for tests: when the environment variable `RECFLOW_FAIL_WRITE` is set to a
/// non-empty string, every store write to a path containing it writes half its bytes and then
/// fails with "No space left on device" (ENOSPC), as on a full disk.
pub const FAIL_WRITE_ENV: &str = "RECFLOW_FAIL_WRITE";

/// Writes `bytes` to `path` and syncs it.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut f = File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    crash_point();
    let inject = fail_injected(path);
    let written = if inject {
        f.write_all(&bytes[..bytes.len() / 2])
            .and_then(|_| Err(std::io::Error::from_raw_os_error(28)))
    } else {
        f.write_all(bytes).and_then(|_| f.sync_all())
    };
    written.map_err(|e| write_error(path, e))
}

pub(crate) fn fail_injected(path: &Path) -> bool {
    std::env::var(FAIL_WRITE_ENV)
        .is_ok_and(|v| !v.is_empty() && path.to_string_lossy().contains(v.as_str()))
}

pub(crate) fn write_error(path: &Path, e: std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::StorageFull {
        format!(
            "cannot write {}: {e}: the disk is full; free space (published versions are intact, CURRENT is unchanged) and run again",
            path.display()
        )
    } else {
        format!("cannot write {}: {e} (is the disk full?)", path.display())
    }
}

/// Where worker `me` of this process writes files before publishing (the snapshot, the recs
/// part): renamed into the staging directory at publish, swept by [`clean_leftovers`] after a
/// crash.
pub fn pending_dir(store: &Path, me: usize) -> PathBuf {
    store.join(format!("{PENDING_PREFIX}{}-w{me}", std::process::id()))
}

/// Syncs a file written earlier (a [`PartWriter`]'s) before it is published.
pub fn sync_file(path: &Path) -> Result<(), String> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| write_error(path, e))
}

fn sync_dir(path: &Path) -> Result<(), String> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("cannot sync directory {}: {e}", path.display()))
}

/// Writes a file under a version directory and returns its manifest record (one file:
/// [`VersionWriter`] for several).
pub fn write_part(dir: &Path, rel: &str, bytes: &[u8], rows: u64) -> Result<FileRecord, String> {
    let mut w = VersionWriter::new(dir);
    w.write(rel, bytes, rows)?;
    Ok(w.into_records().remove(0))
}

/// Whether `n` is a version directory name: `v` and six digits (so no separator, no `..`).
pub fn is_version_name(n: &str) -> bool {
    n.len() == 7 && n.starts_with('v') && n[1..].bytes().all(|b| b.is_ascii_digit())
}

/// Published versions (`vNNNNNN` directories), ascending.
pub fn versions(store: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(store)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| is_version_name(n))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Reads `CURRENT` (at most 64 bytes: a crafted one cannot make this read a large file).
fn read_current(store: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut b = Vec::new();
    File::open(store.join("CURRENT"))?
        .take(64)
        .read_to_end(&mut b)?;
    Ok(b)
}

/// The version `CURRENT` names, if any. It must name a `vNNNNNN` directory of this store:
/// anything else (`../other/store/v000001`, garbage) is refused, its value escaped.
pub fn current(store: &Path) -> Result<Option<String>, String> {
    match read_current(store) {
        Ok(b) => {
            let v = String::from_utf8_lossy(&b).trim().to_string();
            if !is_version_name(&v) {
                return Err(format!(
                    "{}/CURRENT holds '{}', which is not a version name of this store (vNNNNNN): the file was edited or damaged; write the name of one of its published versions into it (recflow inspect lists them)",
                    store.display(),
                    crate::escape::sample(v.as_bytes())
                ));
            }
            if !store.join(&v).join("manifest.json").is_file() {
                return Err(format!(
                    "{}/CURRENT names '{v}', which has no manifest",
                    store.display()
                ));
            }
            Ok(Some(v))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}/CURRENT: {e}", store.display())),
    }
}

/// Creates the store (if needed) and a fresh staging directory for the next version.
/// Returns (version name, staging path).
pub fn begin(store: &Path) -> Result<(String, PathBuf), String> {
    if store.exists() && !store.is_dir() {
        return Err(format!(
            "model store {} exists but is not a directory: set output.store to a directory",
            store.display()
        ));
    }
    fs::create_dir_all(store).map_err(|e| {
        format!(
            "cannot create model store {}: {e} (output.store must name a directory you can write)",
            store.display()
        )
    })?;
    let next = versions(store)
        .last()
        .map(|v| v[1..].parse::<u32>().unwrap_or(0) + 1)
        .unwrap_or(1);
    let version = format!("v{next:06}");
    let staging = store.join(format!(".staging-{version}-{}", std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging)
            .map_err(|e| format!("cannot clear {}: {e}", staging.display()))?;
    }
    for sub in SUBDIRS {
        crate::cleanup::create_dir_all(&staging.join(sub))?;
    }
    signal_point("staged");
    Ok((version, staging))
}

/// Writes the manifest, moves the staging directory into place and points `CURRENT` at it.
/// Call inside [`crate::cleanup::publishing`]: until `CURRENT` names the new version, the
/// renamed directory and the temporary `CURRENT` are this run's temporary files.
pub fn publish(
    store: &Path,
    staging: &Path,
    version: &str,
    manifest: &Manifest,
) -> Result<PathBuf, String> {
    let text = serde_json::to_string_pretty(manifest).expect("manifest serialises");
    write_synced(&staging.join("manifest.json"), text.as_bytes())?;
    crash_point();
    for sub in SUBDIRS.iter().chain(&[""]) {
        sync_dir(&staging.join(sub))?;
    }
    let dest = store.join(version);
    fs::rename(staging, &dest).map_err(|e| {
        format!(
            "cannot move {} to {}: {e}",
            staging.display(),
            dest.display()
        )
    })?;
    crate::cleanup::forget(staging);
    crate::cleanup::register(&dest);
    sync_dir(store)?;
    crash_point();
    let tmp = store.join(format!(".CURRENT.tmp-{}", std::process::id()));
    crate::cleanup::register(&tmp);
    write_synced(&tmp, format!("{version}\n").as_bytes())?;
    crash_point();
    signal_point("flip");
    fs::rename(&tmp, store.join("CURRENT"))
        .map_err(|e| format!("cannot replace {}/CURRENT: {e}", store.display()))?;
    crate::cleanup::forget(&tmp);
    crate::cleanup::published(&dest);
    signal_point("flipped");
    // CURRENT has flipped: the version is published even if this last sync fails.
    if let Err(e) = sync_dir(store) {
        eprintln!("warning: published {version}, but {e}");
    }
    Ok(dest)
}

/// Reads one file of a version and checks it against its manifest record (size from the
/// metadata before reading, then the CRC-32). A crafted manifest cannot make this read outside
/// the version directory, a device or an unbounded file.
pub fn read_record(dir: &Path, f: &FileRecord) -> Result<Vec<u8>, String> {
    // An absolute path has an empty first component.
    let bad_path = f
        .path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..");
    if bad_path {
        return Err(format!(
            "{}: bad file path '{}' in manifest",
            dir.display(),
            crate::escape::escape(&f.path)
        ));
    }
    let path = dir.join(&f.path);
    let meta = fs::metadata(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() || meta.len() != f.bytes {
        return Err(format!(
            "{}: size differs from the manifest ({} bytes recorded): the file is corrupted or truncated",
            path.display(),
            f.bytes
        ));
    }
    let bytes = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    check_record(&path, f, &bytes)?;
    Ok(bytes)
}

/// Loads every factor file of one side (`"users"` or `"items"`), verifying manifest checksums.
/// Returns (ids, row-major factors, dim), shard by shard.
pub fn load_side(
    dir: &Path,
    manifest: &Manifest,
    side: &str,
) -> Result<(Vec<RawId>, Vec<f32>, usize), String> {
    let kind = if side == "users" {
        pack::Kind::Users
    } else {
        pack::Kind::Items
    };
    let dim = manifest.factors;
    let mut ids = Vec::new();
    let mut factors = Vec::new();
    for f in sections::factors(dir, &manifest.files, kind, dim, &|_| true)? {
        ids.extend(f.ids);
        factors.extend(f.factors);
    }
    Ok((ids, factors, dim))
}

/// Removes all but the newest `keep` published versions (never `CURRENT`), then leftovers
/// ([`clean_leftovers`]). Call only while holding the store lock and after a successful
/// publish. A version is first renamed out of the version namespace, so a crash mid-removal
/// never leaves a half-deleted version that looks published. Returns the removed versions.
pub fn prune(store: &Path, keep: usize) -> Result<Vec<String>, String> {
    let current = current(store)?;
    let all = versions(store);
    let mut removed = Vec::new();
    if keep > 0 && all.len() > keep {
        for v in &all[..all.len() - keep] {
            if Some(v) != current.as_ref() {
                retire(store, v)?;
                removed.push(v.clone());
            }
        }
    }
    clean_leftovers(store)?;
    Ok(removed)
}

fn retire(store: &Path, v: &str) -> Result<(), String> {
    let trash = store.join(format!(".trash-{v}"));
    fs::rename(store.join(v), &trash)
        .map_err(|e| format!("cannot retire {}/{v}: {e}", store.display()))?;
    crash_point();
    Ok(())
}

/// Removes what crashed or failed runs left: staging, pending and trash directories,
/// temporary files, and versions newer than `CURRENT` (complete but never published: the
/// crash came between the rename and the flip of `CURRENT`). Call only while holding the
/// store lock, before this run creates anything.
pub fn clean_leftovers(store: &Path) -> Result<(), String> {
    let current = current(store)?;
    for v in versions(store) {
        if current.as_ref().is_some_and(|c| v > *c) {
            retire(store, &v)?;
        }
    }
    if let Ok(rd) = fs::read_dir(store) {
        for e in rd.filter_map(Result::ok) {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(".trash-")
                || n.starts_with(".staging-")
                || n.starts_with(PENDING_PREFIX)
            {
                fs::remove_dir_all(e.path())
                    .map_err(|err| format!("cannot remove {}: {err}", e.path().display()))?;
            } else if n.starts_with(".CURRENT.tmp-") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    sync_dir(store)
}
