//! `recflow eval STORE [--version V]`: recomputes a version's metrics from what it keeps, its
//! recommendation parts and its held-out pairs ([`crate::store::holdout`]), so a published
//! figure can be checked without the input data or a retrain.
//!
//! Each held-out user's list is the version's recs in rank order, its items mapped to the
//! keys the held-out pairs use (position in the version's item factor sections); the sums
//! are [`Metrics`]' in the recommend stage's order (per virtual shard, merged in shard order),
//! so every figure equals the manifest's to the bit and `matches_manifest` asks for equality.
//! AUC is recomputed from the factors ([`auc`]): every item's score for each user the run
//! sampled, its training items (the snapshot less the holdout) excluded.

use crate::eval::Metrics;
use crate::ids::RawId;
use crate::side::key;
use crate::store::pack::Kind;
use crate::store::{self, Manifest};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

mod auc;

/// An item as the metrics see it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct ItemAt {
    /// Its global key (as the held-out pairs hold it).
    key: u64,
    /// Its catalogue index (for coverage).
    index: usize,
}

/// Every item of the version: its key and catalogue index.
fn item_keys(dir: &Path, m: &Manifest) -> Result<HashMap<RawId, ItemAt>, String> {
    let mut out = HashMap::new();
    for f in store::sections::factors(dir, &m.files, Kind::Items, m.factors, &|_| true)? {
        for (local, id) in f.ids.into_iter().enumerate() {
            let n = out.len();
            let at = ItemAt {
                key: key(f.vshard, local as u32),
                index: n,
            };
            out.insert(id, at);
        }
    }
    Ok(out)
}

/// Each user's recommended items (key, catalogue index), best first.
type Lists = HashMap<RawId, Vec<ItemAt>>;

/// The version's recommendation parts as lists (`user item score rank` lines).
fn rec_lists(dir: &Path, m: &Manifest, items: &HashMap<RawId, ItemAt>) -> Result<Lists, String> {
    let mut ranked: HashMap<RawId, Vec<(usize, ItemAt)>> = HashMap::new();
    for rec in m.records_under("recs") {
        let path = dir.join(&rec.path);
        let text = store::parts::read(dir, &rec)?;
        for (n, line) in text
            .split(|&b| b == b'\n')
            .enumerate()
            .filter(|l| !l.1.is_empty())
        {
            let bad = || {
                format!(
                    "{}:{}: not a `user item score rank` line",
                    path.display(),
                    n + 1
                )
            };
            let f: Vec<&[u8]> = line.split(|&b| b == b'\t').collect();
            if f.len() != 4 {
                return Err(bad());
            }
            let user = RawId::parse(f[0]).map_err(|_| bad())?;
            let item = RawId::parse(f[1]).map_err(|_| bad())?;
            let rank: usize = std::str::from_utf8(f[3])
                .ok()
                .and_then(|r| r.parse().ok())
                .ok_or_else(bad)?;
            let at = *items.get(&item).ok_or_else(|| {
                format!(
                    "{}:{}: item {item} is not in the version's factors",
                    path.display(),
                    n + 1
                )
            })?;
            ranked.entry(user).or_default().push((rank, at));
        }
    }
    Ok(ranked
        .into_iter()
        .map(|(u, mut l)| {
            l.sort_unstable();
            (u, l.into_iter().map(|x| x.1).collect())
        })
        .collect())
}

/// The held-out pairs of one set (`holdout` or `valid`), item keys per user.
fn held_out(dir: &Path, m: &Manifest, set: &str) -> Result<BTreeMap<RawId, Vec<u64>>, String> {
    let mut out: BTreeMap<RawId, Vec<u64>> = BTreeMap::new();
    for rec in m
        .records_under("eval")
        .iter()
        .filter(|r| r.path.starts_with(&format!("eval/{set}-")))
    {
        let bytes = store::read_record(dir, rec)?;
        let pairs = store::holdout::decode(&bytes)
            .map_err(|e| format!("{}: {e}", dir.join(&rec.path).display()))?;
        for (u, k) in pairs {
            out.entry(u).or_default().push(k);
        }
    }
    Ok(out)
}

/// What a version keeps that every held-out set is evaluated against.
struct Kept {
    lists: Lists,
    trained: HashSet<RawId>,
    /// Virtual shards.
    v: u32,
    ks: Vec<usize>,
    catalogue: usize,
    /// Item keys by catalogue index (ascending).
    keys: Vec<u64>,
}

impl Kept {
    /// Held-out keys as catalogue indices (`usize::MAX`: an item without training data).
    fn indices(&self, test: &[u64]) -> Vec<usize> {
        let at = |k: &u64| self.keys.binary_search(k).unwrap_or(usize::MAX);
        test.iter().map(at).collect()
    }
}

/// The metrics of one held-out set over the version's lists, summed as the recommend stage
/// sums them: per virtual shard over its trained users in id order (held-out users without
/// training data are not evaluated), the shards merged in ascending order. AUC where `auc`
/// is given, for the users the run sampled.
fn metrics_of(
    held: &BTreeMap<RawId, Vec<u64>>,
    kept: &Kept,
    mut auc: Option<&mut auc::Scores>,
) -> Value {
    let ks = &kept.ks;
    let mut per_shard: BTreeMap<u32, Metrics> = BTreeMap::new();
    let mut coverage = Metrics::new(ks);
    for (user, test) in held.iter().filter(|(u, _)| kept.trained.contains(*u)) {
        let list = kept.lists.get(user).map(|l| &l[..]).unwrap_or(&[]);
        let keys: Vec<u64> = list.iter().map(|x| x.key).collect();
        let m = per_shard
            .entry(user.vshard(kept.v))
            .or_insert_with(|| Metrics::new(ks));
        m.add_user(&keys, test);
        let index: Vec<usize> = list.iter().map(|x| x.index).collect();
        coverage.cover(&index, kept.catalogue);
        if let Some(a) = auc.as_mut().and_then(|s| s.auc(user, &kept.indices(test))) {
            m.add_auc(a);
        }
    }
    let mut total = Metrics::new(ks);
    for m in per_shard.values() {
        total.merge(m);
    }
    for (a, c) in total.at.iter_mut().zip(coverage.at) {
        a.covered = c.covered;
    }
    total.report(kept.catalogue)
}

/// Whether two metric reports agree within `tol` on every number (the AUC fields only when
/// `auc`: they are compared when recomputed).
pub fn agree(a: &Value, b: &Value, tol: f64, auc: bool) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys = |o: &serde_json::Map<String, Value>| {
                o.keys()
                    .filter(|k| auc || !k.starts_with("auc"))
                    .cloned()
                    .collect::<Vec<_>>()
            };
            keys(x) == keys(y) && keys(x).iter().all(|k| agree(&x[k], &y[k], tol, auc))
        }
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            (x - y).abs() <= tol * x.abs().max(y.abs()).max(1.0)
        }
        _ => a == b,
    }
}

/// The AUC inputs of the users the run sampled: held-out users of every set, the snapshot
/// less the holdout split (`eval.holdout` > 0; a separate `eval.test` file is not in it).
fn auc_scores(
    dir: &Path,
    m: &Manifest,
    kept: &Kept,
    items: &HashMap<RawId, ItemAt>,
    sets: &[(&str, BTreeMap<RawId, Vec<u64>>)],
) -> Result<auc::Scores, String> {
    let index: HashMap<RawId, usize> = items.iter().map(|(id, a)| (id.clone(), a.index)).collect();
    let split: HashMap<RawId, Vec<usize>> = match sets.first() {
        Some(("metrics", h)) if m.job["eval"]["holdout"].as_f64().unwrap_or(0.0) > 0.0 => h
            .iter()
            .map(|(u, t)| (u.clone(), kept.indices(t)))
            .collect(),
        _ => HashMap::new(),
    };
    let held: Vec<&BTreeMap<RawId, Vec<u64>>> = sets.iter().map(|s| &s.1).collect();
    auc::Scores::load(dir, m, &held, &kept.trained, &index, &split)
}

/// Recomputes `version`'s (default CURRENT) metrics: `{version, metrics, valid_metrics,
/// manifest_metrics, manifest_valid_metrics, matches_manifest}`.
pub fn eval_store(store_path: &Path, version: Option<&str>) -> Result<Value, String> {
    let (dir, m) = store::open(store_path, version)?;
    let h = m.holdout.clone().ok_or_else(|| {
        format!(
            "{}: keeps no held-out pairs (made by an older recflow, or without eval.holdout / eval.test); evaluate its recs with `recflow eval --recs {} --train FILE --test FILE`",
            dir.display(),
            store_path.display()
        )
    })?;
    let k = m.recommend["k"].as_u64().unwrap_or(0) as usize;
    let need = h.ks.iter().copied().max().unwrap_or(0);
    if need > k {
        return Err(format!(
            "{}: metrics at k = {need} need top-{need} lists, the version kept top-{k} (recommend.k); set recommend.k >= {need} to make them reproducible",
            dir.display()
        ));
    }
    let items = item_keys(&dir, &m)?;
    let mut keys: Vec<(usize, u64)> = items.values().map(|a| (a.index, a.key)).collect();
    keys.sort_unstable();
    let (users, _, _) = store::load_side(&dir, &m, "users")?;
    let kept = Kept {
        lists: rec_lists(&dir, &m, &items)?,
        trained: users.into_iter().collect(),
        v: m.virtual_shards.max(1),
        ks: h.ks.clone(),
        catalogue: h.catalogue,
        keys: keys.into_iter().map(|k| k.1).collect(),
    };
    let mut sets = Vec::new();
    for (set, name, pairs) in [
        ("holdout", "metrics", h.test_pairs),
        ("valid", "valid_metrics", h.valid_pairs),
    ] {
        if pairs > 0 {
            sets.push((name, held_out(&dir, &m, set)?));
        }
    }
    let why_not = auc::not_recomputable(&m);
    let mut scores = match &why_not {
        Some(_) => None,
        None => Some(auc_scores(&dir, &m, &kept, &items, &sets)?),
    };
    let mut out = json!({
        "version": m.version,
        "auc": why_not.clone().unwrap_or_else(|| "recomputed from the factors".into()),
    });
    let mut matches = true;
    for (name, held) in &sets {
        let got = metrics_of(held, &kept, scores.as_mut());
        // As the manifest holds it: written as text and read back (serde_json's float
        // parsing can differ from the value in the last bit, the same way both times).
        let got: Value = serde_json::from_str(&got.to_string()).expect("metrics json");
        let recorded = if *name == "metrics" {
            &m.metrics
        } else {
            &m.valid_metrics
        };
        matches &= agree(&got, recorded, 0.0, why_not.is_none());
        out[format!("manifest_{name}")] = recorded.clone();
        out[*name] = got;
    }
    out["matches_manifest"] = json!(matches);
    Ok(out)
}
