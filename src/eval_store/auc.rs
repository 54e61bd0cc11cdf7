//! AUC of a version recomputed from what it keeps: every item's score from the version's
//! factors for each sampled held-out user, the user's training items (the interaction
//! snapshot less the held-out split) excluded, as the recommend stage computes it.

use crate::ids::RawId;
use crate::recommend::{auc_rate, auc_sampled, score_row};
use crate::store::{self, Manifest};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// Why a version's AUC cannot be recomputed exactly, or `None` when it can.
pub fn not_recomputable(m: &Manifest) -> Option<String> {
    let mode = m.job["recommend"]["mode"].as_str().unwrap_or("exact");
    if mode != "exact" {
        return Some(format!("not computed in {mode} mode"));
    }
    let capped = ["dropped_user_cap", "dropped_item_cap"]
        .iter()
        .any(|c| m.counts[*c].as_u64().unwrap_or(0) > 0);
    if capped {
        // The run excludes a user's kept training items; the snapshot also holds the pairs the
        // caps dropped, which the run scored as negatives.
        return Some("not recomputed: confidence.max_per_user / max_per_item dropped pairs, which the snapshot keeps but training did not".into());
    }
    None
}

/// What every sampled user's AUC needs.
pub struct Scores {
    /// Item factors in catalogue (global key) order, row-major.
    items: Vec<f32>,
    /// Sampled users' vectors.
    users: HashMap<RawId, Vec<f32>>,
    /// Sampled users' training items (catalogue indices).
    seen: HashMap<RawId, Vec<usize>>,
    row: Vec<f32>,
}

impl Scores {
    /// Loads what the users of `held` (every held-out set, by user) that the run sampled need:
    /// the sample drawn as the run draws it, over `trained` users (`catalogue` items);
    /// `index` maps an item id to its catalogue index; `split` is the holdout taken out of
    /// the snapshot (`eval.holdout` > 0), as catalogue indices per user.
    pub fn load(
        dir: &Path,
        m: &Manifest,
        held: &[&BTreeMap<RawId, Vec<u64>>],
        trained: &HashSet<RawId>,
        index: &HashMap<RawId, usize>,
        split: &HashMap<RawId, Vec<usize>>,
    ) -> Result<Scores, String> {
        let rate = auc_rate(index.len(), trained.len() as u64);
        let seed = m.job["eval"]["seed"].as_u64().unwrap_or(3);
        let sampled: HashSet<&RawId> = held
            .iter()
            .flat_map(|h| h.keys())
            .filter(|u| trained.contains(*u) && auc_sampled(u, rate, seed))
            .collect();
        let (ids, factors, d) = store::load_side(dir, m, "users")?;
        let users = ids
            .into_iter()
            .enumerate()
            .filter(|(_, u)| sampled.contains(u))
            .map(|(r, u)| (u, factors[r * d..(r + 1) * d].to_vec()))
            .collect();
        let mut seen: HashMap<RawId, Vec<usize>> = HashMap::new();
        for (u, item, _, _) in store::sections::snapshot_pairs(dir, &m.files, &|_| true)? {
            if let (true, Some(&i)) = (sampled.contains(&u), index.get(&item)) {
                seen.entry(u).or_default().push(i);
            }
        }
        for (u, s) in seen.iter_mut() {
            let out = split.get(u).map(|v| &v[..]).unwrap_or(&[]);
            s.retain(|i| !out.contains(i));
        }
        Ok(Scores {
            items: store::load_side(dir, m, "items")?.1,
            users,
            seen,
            row: Vec::new(),
        })
    }

    /// User `u`'s AUC over held-out catalogue indices `test` (`usize::MAX`: an item without
    /// training data, left out), when the run sampled it.
    pub fn auc(&mut self, u: &RawId, test: &[usize]) -> Option<f64> {
        let x = self.users.get(u)?;
        let known: Vec<usize> = test.iter().copied().filter(|&i| i != usize::MAX).collect();
        score_row(x, &self.items, &mut self.row);
        let seen = self.seen.get(u).map(|v| &v[..]).unwrap_or(&[]);
        crate::eval::auc(&self.row, &known, seen)
    }
}
