//! Queries on a published model, scored at query time from its factors: a user's top k unseen
//! items (dot product; seen = the version's interaction snapshot), an item's k most similar
//! items (cosine). Exact for any k, not limited to the k the job wrote files for.
//!
//! A [`Model`] loads a version's factors once and answers any number of queries
//! (`--users-file`); a user's seen items come from the snapshot section of its virtual shard,
//! decoded on first use and kept for the other users of that shard.

use crate::escape::escape;
use crate::ids::RawId;
use crate::store::{self, Manifest};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// One side's ids and row-major factors, with each id's row.
struct Rows {
    ids: Vec<RawId>,
    factors: Vec<f32>,
    row: HashMap<RawId, usize>,
}

impl Rows {
    fn load(dir: &Path, m: &Manifest, side: &str) -> Result<Rows, String> {
        let (ids, factors, _) = store::load_side(dir, m, side)?;
        let row = ids
            .iter()
            .enumerate()
            .map(|(r, id)| (id.clone(), r))
            .collect();
        Ok(Rows { ids, factors, row })
    }
}

/// A loaded version: answers `recommend` and `similar` queries.
pub struct Model {
    dir: PathBuf,
    manifest: Manifest,
    dim: usize,
    items: Rows,
    users: Option<Rows>,
    /// Seen items per user, for the virtual shards decoded so far.
    seen: HashMap<u32, HashMap<RawId, HashSet<RawId>>>,
    /// Snapshot packs read so far (a pack holds many shards).
    packs: store::sections::Cache,
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl Model {
    /// Loads `version` (default `CURRENT`) of a store: the item factors, and the user factors
    /// when `users` (recommend queries need them, similar queries do not).
    pub fn load(store_path: &Path, version: Option<&str>, users: bool) -> Result<Model, String> {
        let (dir, manifest) = store::open(store_path, version)?;
        let items = Rows::load(&dir, &manifest, "items")?;
        let users = if users {
            Some(Rows::load(&dir, &manifest, "users")?)
        } else {
            None
        };
        Ok(Model {
            dim: manifest.factors,
            dir,
            manifest,
            items,
            users,
            seen: HashMap::new(),
            packs: Default::default(),
        })
    }

    fn name(&self) -> String {
        escape(&self.manifest.version)
    }

    /// Decodes the snapshot section of virtual shard `vs` (seen items) unless it already is.
    fn load_seen(&mut self, vs: u32) -> Result<(), String> {
        if self.seen.contains_key(&vs) {
            return Ok(());
        }
        let (dir, files) = (&self.dir, &self.manifest.files);
        let pairs =
            store::sections::snapshot_pairs_cached(dir, files, &|s| s == vs, &mut self.packs)?;
        let mut by_user: HashMap<RawId, HashSet<RawId>> = HashMap::new();
        for (u, i, _, _) in pairs {
            by_user.entry(u).or_default().insert(i);
        }
        self.seen.insert(vs, by_user);
        Ok(())
    }

    /// `id`'s row on `side` ("users" or "items"), or a clear error for an unknown id.
    fn find(&self, side: &str, id: &str) -> Result<(RawId, usize), String> {
        let shown = escape(id);
        let raw = RawId::parse(id.as_bytes()).map_err(|e| format!("'{shown}': {e}"))?;
        let rows = if side == "users" {
            self.users.as_ref()
        } else {
            Some(&self.items)
        };
        let rows = rows.ok_or("this model was loaded without user factors")?;
        let singular = &side[..side.len() - 1];
        let r = *rows.row.get(&raw).ok_or_else(|| {
            format!(
                "unknown {singular} '{shown}': not in model {} ({} {side})",
                self.name(),
                rows.ids.len()
            )
        })?;
        Ok((raw, r))
    }

    /// A user's top `k` unseen items (`side` "users") or an item's `k` most similar items
    /// (`side` "items"), as `id other score rank` lines like the part files.
    pub fn query(&mut self, side: &str, id: &str, k: usize) -> Result<Vec<String>, String> {
        let (raw, r) = self.find(side, id)?;
        let d = self.dim;
        let scored = if side == "users" {
            let vs = raw.vshard(self.manifest.virtual_shards.max(1));
            self.load_seen(vs)?;
            let q = &self.users.as_ref().expect("found a user").factors[r * d..(r + 1) * d];
            let seen = self.seen[&vs].get(&raw);
            let items = &self.items;
            (0..items.ids.len())
                .filter(|&j| !seen.is_some_and(|s| s.contains(&items.ids[j])))
                .map(|j| (dot(q, &items.factors[j * d..(j + 1) * d]), j))
                .collect()
        } else {
            let f = &self.items.factors;
            let row = |j: usize| &f[j * d..(j + 1) * d];
            let norm = |v: &[f32]| dot(v, v).sqrt();
            let qn = norm(row(r));
            (0..self.items.ids.len())
                .filter(|&j| j != r && qn > 0.0 && norm(row(j)) > 0.0)
                .map(|j| (dot(row(r), row(j)) / (qn * norm(row(j))), j))
                .collect()
        };
        let top = top_k(scored, k, &self.items.ids);
        if top.is_empty() {
            let singular = &side[..side.len() - 1];
            return Err(format!(
                "{singular} '{}' has no candidates in model {} (has it seen every item?)",
                escape(id),
                self.name()
            ));
        }
        Ok(top
            .iter()
            .enumerate()
            .map(|(n, &(s, j))| {
                let score = zmij::Buffer::new().format_finite(s).to_string();
                format!("{raw}\t{}\t{score}\t{}", self.items.ids[j], n + 1)
            })
            .collect())
    }
}

/// The `k` best (score, item row): highest score first, ties by item id, so the answer does
/// not depend on the file order. Selects before sorting (the catalogue is much longer than k).
fn top_k(mut scored: Vec<(f32, usize)>, k: usize, ids: &[RawId]) -> Vec<(f32, usize)> {
    let order = |a: &(f32, usize), b: &(f32, usize)| {
        b.0.total_cmp(&a.0).then_with(|| ids[a.1].cmp(&ids[b.1]))
    };
    if k < scored.len() {
        scored.select_nth_unstable_by(k, order);
        scored.truncate(k);
    }
    scored.sort_by(order);
    scored
}

/// `recflow recommend` / `recflow similar` for one id: `side` is "users" (recs) or "items"
/// (similar); `version` defaults to `CURRENT`.
pub fn query(
    store_path: &Path,
    version: Option<&str>,
    side: &str,
    id: &str,
    k: usize,
) -> Result<Vec<String>, String> {
    Model::load(store_path, version, side == "users")?.query(side, id, k)
}

/// The ids of a `--users-file`: one per line (the first field of a tab- or comma-separated
/// line), blank lines and `#` comments skipped. Returns (line number, id).
pub fn read_ids(path: &Path) -> Result<Vec<(usize, String)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .enumerate()
        .filter_map(|(n, l)| {
            let id = l.split(['\t', ',']).next().unwrap_or("").trim();
            (!id.is_empty() && !id.starts_with('#')).then(|| (n + 1, id.to_string()))
        })
        .collect())
}

/// `recflow recommend STORE --users-file FILE`: loads the version once and answers every
/// user in the file, in file order. An unknown user is an error naming the file and line.
pub fn recommend_batch(
    store_path: &Path,
    version: Option<&str>,
    users: &Path,
    k: usize,
) -> Result<Vec<String>, String> {
    let ids = read_ids(users)?;
    let mut model = Model::load(store_path, version, true)?;
    let mut out = Vec::new();
    for (line, id) in ids {
        let lines = model
            .query("users", &id, k)
            .map_err(|e| format!("{}:{line}: {e}", users.display()))?;
        out.extend(lines);
    }
    Ok(out)
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
    let name = escape(&manifest.version);
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
