//! Queries on a published model, scored at query time from its factors: a user's top k unseen
//! items (dot product; seen = the version's interaction snapshot), an item's k most similar
//! items (cosine). Exact for any k, not limited to the k the job wrote files for.

use crate::escape::escape;
use crate::ids::RawId;
use crate::store;
use std::collections::HashSet;
use std::path::Path;

/// The items a user has interacted with, from the version's snapshot file of its shard.
fn seen_items(
    dir: &Path,
    manifest: &serde_json::Value,
    user: &RawId,
) -> Result<HashSet<RawId>, String> {
    let v = manifest["virtual_shards"].as_u64().unwrap_or(1).max(1) as u32;
    let name = format!("snapshot/vs-{:05}.bin", user.vshard(v));
    let mut seen = HashSet::new();
    for rec in store::records_under(dir, manifest, "snapshot")? {
        if rec.path != name {
            continue;
        }
        let bytes = store::read_record(dir, &rec)?;
        let (_, pairs) = store::snapshot::decode(&bytes)
            .map_err(|e| format!("{}: {e}", dir.join(&rec.path).display()))?;
        seen.extend(pairs.into_iter().filter(|p| &p.0 == user).map(|p| p.1));
    }
    Ok(seen)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `recflow recommend` / `recflow similar`: `side` is "users" (recs) or "items" (similar);
/// `version` defaults to `CURRENT`. Lines are `id other score rank`, as in the part files.
pub fn query(
    store_path: &Path,
    version: Option<&str>,
    side: &str,
    id: &str,
    k: usize,
) -> Result<Vec<String>, String> {
    let (dir, manifest) = store::open(store_path, version)?;
    let name = escape(manifest["version"].as_str().unwrap_or("?"));
    let shown = escape(id);
    let raw = RawId::parse(id.as_bytes()).map_err(|e| format!("'{shown}': {e}"))?;
    let (items, ifac, d) = store::load_side(&dir, &manifest, "items")?;
    let (ids, fac, _) = if side == "users" {
        store::load_side(&dir, &manifest, "users")?
    } else {
        (items.clone(), ifac.clone(), d)
    };
    let singular = if side == "users" { "user" } else { "item" };
    let r = ids.iter().position(|x| *x == raw).ok_or_else(|| {
        format!(
            "unknown {singular} '{shown}': not in model {name} ({} {side})",
            ids.len()
        )
    })?;
    let q = &fac[r * d..(r + 1) * d];
    let row = |j: usize| &ifac[j * d..(j + 1) * d];
    let mut scored: Vec<(f32, usize)> = if side == "users" {
        let seen = seen_items(&dir, &manifest, &raw)?;
        (0..items.len())
            .filter(|&j| !seen.contains(&items[j]))
            .map(|j| (dot(q, row(j)), j))
            .collect()
    } else {
        let norm = |v: &[f32]| dot(v, v).sqrt();
        let qn = norm(q);
        (0..items.len())
            .filter(|&j| j != r && qn > 0.0 && norm(row(j)) > 0.0)
            .map(|j| (dot(q, row(j)) / (qn * norm(row(j))), j))
            .collect()
    };
    // Highest score first; ties by id, so the answer does not depend on the file order.
    scored.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then_with(|| items[a.1].cmp(&items[b.1]))
    });
    scored.truncate(k);
    if scored.is_empty() {
        return Err(format!(
            "{singular} '{shown}' has no candidates in model {name} (has it seen every item?)"
        ));
    }
    Ok(scored
        .iter()
        .enumerate()
        .map(|(n, &(s, j))| {
            let score = zmij::Buffer::new().format_finite(s).to_string();
            format!("{raw}\t{}\t{score}\t{}", items[j], n + 1)
        })
        .collect())
}

/// `recflow recommend STORE --items a,b,c`: the top `k` items for an ad-hoc list (a basket, a
/// curated list), the listed items excluded. The list's vector is a projection for an svd
/// model and one least-squares solve for an als model ([`crate::svd::basket`]). Lines are
/// `- item score rank` (no user id).
pub fn query_items(
    store_path: &Path,
    version: Option<&str>,
    list: &str,
    k: usize,
) -> Result<Vec<String>, String> {
    let (dir, manifest) = store::open(store_path, version)?;
    let name = escape(manifest["version"].as_str().unwrap_or("?"));
    let ids: Vec<RawId> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| RawId::parse(s.as_bytes()).map_err(|e| format!("--items '{}': {e}", escape(s))))
        .collect::<Result<_, _>>()?;
    let (items, ifac, d) = store::load_side(&dir, &manifest, "items")?;
    let rows = crate::svd::basket::rows_of(&items, &ids, &name)?;
    let q = crate::svd::basket::vector(&manifest, &ifac, d, &rows)?;
    let mut scored: Vec<(f32, usize)> = (0..items.len())
        .filter(|j| rows.binary_search(j).is_err())
        .map(|j| (dot(&q, &ifac[j * d..(j + 1) * d]), j))
        .collect();
    scored.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then_with(|| items[a.1].cmp(&items[b.1]))
    });
    scored.truncate(k);
    if scored.is_empty() {
        return Err(format!(
            "--items: the list covers every item of model {name}: nothing left to recommend"
        ));
    }
    Ok(scored
        .iter()
        .enumerate()
        .map(|(n, &(s, j))| {
            let score = zmij::Buffer::new().format_finite(s).to_string();
            format!("-\t{}\t{score}\t{}", items[j], n + 1)
        })
        .collect())
}
