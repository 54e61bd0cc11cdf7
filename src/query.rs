//! Queries on a published model: recommendations for a user, similar items for an item.

use crate::ids::RawId;
use crate::store;
use std::path::Path;

/// Lines of `<version>/<dir>/part-*.tsv` whose first field is `id`, at most `k` (rank order).
/// Only the parts the manifest lists are read, each checked against its size and checksum.
fn lines_for(
    dir: &Path,
    manifest: &serde_json::Value,
    sub: &str,
    id: &str,
    k: usize,
) -> Result<Vec<String>, String> {
    let prefix = format!("{id}\t");
    let mut out = Vec::new();
    for rec in store::records_under(dir, manifest, sub)? {
        let bytes = store::read_record(dir, &rec)?;
        let text = String::from_utf8_lossy(&bytes);
        out.extend(
            text.lines()
                .filter(|l| l.starts_with(&prefix))
                .map(String::from),
        );
    }
    out.truncate(k);
    Ok(out)
}

/// `recflow recommend` / `recflow similar`: `side` is "users" (recs) or "items" (similar).
pub fn query(store_path: &Path, side: &str, id: &str, k: usize) -> Result<Vec<String>, String> {
    let (dir, manifest) = store::open(store_path, None)?;
    let version = crate::escape::escape(manifest["version"].as_str().unwrap_or("?"));
    let (sub, what, key) = if side == "users" {
        ("recs", "recommendations", "recommend.k")
    } else {
        ("similar", "similar items", "similar.k")
    };
    let lines = lines_for(&dir, &manifest, sub, id, k)?;
    if !lines.is_empty() {
        return Ok(lines);
    }
    let (ids, _, _) = store::load_side(&dir, &manifest, side)?;
    let shown = crate::escape::escape(id);
    let raw = RawId::parse(id.as_bytes()).map_err(|e| format!("'{shown}': {e}"))?;
    let singular = if side == "users" { "user" } else { "item" };
    if !ids.contains(&raw) {
        return Err(format!(
            "unknown {singular} '{shown}': not in model {version} ({} {side})",
            ids.len()
        ));
    }
    Err(format!(
        "{singular} '{shown}' has no {what} in model {version} (was {key} 0, or are all items already seen?)"
    ))
}
