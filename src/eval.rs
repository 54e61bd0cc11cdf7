//! Ranking metrics at one or more cut-offs k for implicit feedback.
//!
//! Per user u with held-out items T_u and ranked list R_u (seen items removed), at each k:
//! - `precision`: hits / Σ_u min(k, |T_u|), summed over users before dividing (`implicit`'s
//!   `ranking_metrics_at_k`; 1.0 is reachable even when |T_u| < k);
//! - `precision_at_k`: mean over users of hits_u / k (the textbook precision@k);
//! - `recall`: mean over users of hits_u / |T_u| (LightGCN's Recall@k; held-out items without
//!   training data count in |T_u| and can never be hit);
//! - `hit_rate`: share of users with at least one hit;
//! - `map`: mean AP@k, each over min(k, |T_u|);
//! - `ndcg`: binary gains 1/log2(rank + 1), ideal DCG over min(k, |T_u|) hits (LightGCN's);
//! - `coverage`: distinct items in the evaluated users' top k / items in the catalogue.
//!
//! AUC is the exact per-user AUC over all unseen items when full scores are available, on a
//! hash-chosen sample of users (every user on small jobs; `auc_users` in the metrics says how many).

use serde::{Deserialize, Serialize};

/// Sums at one cut-off.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AtK {
    /// The cut-off.
    pub k: usize,
    /// Hits in the top k.
    pub hits: u64,
    /// Σ_u min(k, |T_u|).
    pub relevant: u64,
    /// Σ_u hits_u / |T_u|.
    pub recall: f64,
    /// Users with at least one hit.
    pub hit_users: u64,
    /// Σ_u AP@k.
    pub ap: f64,
    /// Σ_u NDCG@k.
    pub ndcg: f64,
    /// Bitset over catalogue indices: items in some evaluated user's top k (filled by
    /// [`Metrics::cover`], once per worker, not per shard part).
    pub covered: Vec<u64>,
}

/// Sums over evaluated users; combine with [`Metrics::merge`], finish with [`Metrics::report`].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    /// Users with at least one held-out item.
    pub users: u64,
    /// One entry per cut-off, ascending.
    pub at: Vec<AtK>,
    /// Σ_u AUC (over users where it was computed).
    pub auc: f64,
    /// Users with an AUC.
    pub auc_users: u64,
}

impl Metrics {
    /// Empty sums for the cut-offs `ks` (deduplicated, ascending).
    pub fn new(ks: &[usize]) -> Metrics {
        let mut ks = ks.to_vec();
        ks.sort_unstable();
        ks.dedup();
        Metrics {
            at: ks
                .into_iter()
                .map(|k| AtK {
                    k,
                    ..AtK::default()
                })
                .collect(),
            ..Metrics::default()
        }
    }

    /// Adds one user's ranked list (`recs`, best first) against held-out `test` items.
    pub fn add_user(&mut self, recs: &[u64], test: &[u64]) {
        if test.is_empty() {
            return;
        }
        self.users += 1;
        for a in &mut self.at {
            let rel = a.k.min(test.len());
            let (mut hits, mut ap, mut dcg) = (0u64, 0.0, 0.0);
            for (i, r) in recs.iter().take(a.k).enumerate() {
                if test.contains(r) {
                    hits += 1;
                    ap += hits as f64 / (i + 1) as f64;
                    dcg += 1.0 / ((i + 2) as f64).log2();
                }
            }
            let idcg: f64 = (0..rel).map(|i| 1.0 / ((i + 2) as f64).log2()).sum();
            a.hits += hits;
            a.relevant += rel as u64;
            a.recall += hits as f64 / test.len() as f64;
            a.hit_users += (hits > 0) as u64;
            a.ap += ap / rel as f64;
            a.ndcg += dcg / idcg;
        }
    }

    /// Marks an evaluated user's top items (catalogue indices `< n`) as covered.
    pub fn cover(&mut self, recs: &[usize], n: usize) {
        for a in &mut self.at {
            a.covered.resize(n.div_ceil(64), 0);
            for &i in recs.iter().take(a.k).filter(|&&i| i < n) {
                a.covered[i / 64] |= 1 << (i % 64);
            }
        }
    }

    /// Adds one user's AUC.
    pub fn add_auc(&mut self, auc: f64) {
        self.auc += auc;
        self.auc_users += 1;
    }

    /// Adds another partial sum (over the same cut-offs, or an empty one).
    pub fn merge(&mut self, o: &Metrics) {
        if self.at.is_empty() {
            self.at =
                o.at.iter()
                    .map(|a| AtK {
                        k: a.k,
                        ..AtK::default()
                    })
                    .collect();
        }
        self.users += o.users;
        for (a, b) in self.at.iter_mut().zip(&o.at) {
            a.hits += b.hits;
            a.relevant += b.relevant;
            a.recall += b.recall;
            a.hit_users += b.hit_users;
            a.ap += b.ap;
            a.ndcg += b.ndcg;
            if a.covered.len() < b.covered.len() {
                a.covered.resize(b.covered.len(), 0);
            }
            a.covered
                .iter_mut()
                .zip(&b.covered)
                .for_each(|(x, y)| *x |= y);
        }
        self.auc += o.auc;
        self.auc_users += o.auc_users;
    }

    /// Final values as JSON over a catalogue of `catalogue` items: the first cut-off's metrics
    /// as flat fields (`k`, precision, precision_at_k, recall, hit_rate, map, ndcg, coverage),
    /// every cut-off's under `at_k` ("10", "20", …), AUC (null without) and the users each is
    /// over.
    pub fn report(&self, catalogue: usize) -> serde_json::Value {
        let n = self.users.max(1) as f64;
        let one = |a: &AtK| {
            let covered: u64 = a.covered.iter().map(|w| w.count_ones() as u64).sum();
            serde_json::json!({
                "precision": a.hits as f64 / a.relevant.max(1) as f64,
                "precision_at_k": a.hits as f64 / (n * a.k as f64),
                "recall": a.recall / n,
                "hit_rate": a.hit_users as f64 / n,
                "map": a.ap / n,
                "ndcg": a.ndcg / n,
                "coverage": covered as f64 / catalogue.max(1) as f64,
            })
        };
        let mut out = match self.at.first() {
            Some(a) => one(a),
            None => serde_json::json!({}),
        };
        out["k"] = serde_json::json!(self.at.first().map(|a| a.k));
        out["users"] = serde_json::json!(self.users);
        out["auc"] = serde_json::json!(if self.auc_users > 0 {
            Some(self.auc / self.auc_users as f64)
        } else {
            None
        });
        out["auc_users"] = serde_json::json!(self.auc_users);
        let at: serde_json::Map<String, serde_json::Value> =
            self.at.iter().map(|a| (a.k.to_string(), one(a))).collect();
        out["at_k"] = serde_json::Value::Object(at);
        out
    }
}

/// A metric named like `ndcg@20` (or `auc`) from a [`Metrics::report`] value.
pub fn lookup(report: &serde_json::Value, name: &str) -> Option<f64> {
    match name.split_once('@') {
        Some((m, k)) => report["at_k"][k][m].as_f64(),
        None => report[name].as_f64(),
    }
}

/// Exact AUC of one user: the share of (held-out, negative) pairs ordered correctly, where
/// negatives are all items neither seen nor held out; ties count one half.
pub fn auc(scores: &[f32], test: &[usize], excluded: &[usize]) -> Option<f64> {
    let mut drop: Vec<usize> = test.iter().chain(excluded).copied().collect();
    drop.sort_unstable();
    drop.dedup();
    let negatives = scores.len() - drop.len();
    if negatives == 0 || test.is_empty() {
        return None;
    }
    let mut good = 0.0;
    if test.len() <= 32 {
        // A few held-out items (the usual case): one pass over the scores per item, counting
        // every item below and level, then taking the dropped ones back out. Cheaper than
        // sorting the catalogue for every sampled user.
        for &t in test {
            let s = scores[t];
            let (mut below, mut ties) = (0usize, 0usize);
            for &x in scores {
                below += (x < s) as usize;
                ties += (x == s) as usize;
            }
            for &i in &drop {
                below -= (scores[i] < s) as usize;
                ties -= (scores[i] == s) as usize;
            }
            good += below as f64 + 0.5 * ties as f64;
        }
    } else {
        let mut neg: Vec<f32> = scores.to_vec();
        for &i in drop.iter().rev() {
            neg.swap_remove(i);
        }
        neg.sort_unstable_by(|a, b| a.total_cmp(b));
        for &t in test {
            let s = scores[t];
            let below = neg.partition_point(|&x| x < s);
            let ties = neg[below..].partition_point(|&x| x <= s);
            good += below as f64 + 0.5 * ties as f64;
        }
    }
    Some(good / (test.len() * negatives) as f64)
}

/// A text file's contents (invalid UTF-8 replaced), which [`pairs`] borrows from; gzip and
/// zstd files (told by their magic bytes, as ingest does) are decompressed.
fn load(path: &std::path::Path) -> Result<String, String> {
    use crate::ingest::compress::{self, Codec};
    use std::io::Read;
    let codec = Codec::detect(path)?;
    let mut text = Vec::new();
    compress::open(path, codec)?
        .read_to_end(&mut text)
        .map_err(|e| compress::read_error(path, codec, 0, &e))?;
    Ok(match String::from_utf8(text) {
        Ok(t) => t,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// A line's user, item and rank (when it has a rank column), borrowed from the file text.
type Line<'a> = (&'a str, &'a str, Option<usize>);

/// `user item …` pairs of `text` (the contents of `path`; tab, comma, space or `::`
/// separated), with the rank column when there is one. The ids borrow from `text`: tens of
/// millions of lines would otherwise be as many small allocations.
fn pairs<'a>(path: &std::path::Path, text: &'a str) -> Result<Vec<Line<'a>>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        // The first four fields (user, item, score, rank), without a vector per line.
        let mut f = [""; 4];
        let mut len = 0;
        let mut take = |x: &'a str| {
            if len < 4 {
                f[len] = x;
            }
            len += 1;
        };
        if line.contains("::") {
            line.split("::").for_each(&mut take);
        } else {
            line.split(['\t', ',', ' '])
                .filter(|x| !x.is_empty())
                .for_each(&mut take);
        }
        if len < 2 {
            return Err(format!(
                "{}:{}: need at least two columns (user, item): '{}'",
                path.display(),
                n + 1,
                crate::escape::sample(line.as_bytes())
            ));
        }
        let rank = (len > 3).then(|| f[3].parse().ok()).flatten();
        out.push((f[0].trim_matches('"'), f[1].trim_matches('"'), rank));
    }
    Ok(out)
}

/// The recommendation texts `--recs` names: a model store (its `CURRENT` version's parts,
/// checked against the manifest), a directory of part files, or one file.
fn recs_texts(recs: &std::path::Path) -> Result<Vec<(std::path::PathBuf, String)>, String> {
    if recs.join("CURRENT").is_file() {
        let (dir, manifest) = crate::store::open(recs, None)?;
        let parts = manifest.records_under("recs");
        if parts.is_empty() {
            return Err(format!(
                "{}: the store's current version has no recommendations (recommend.k = 0?)",
                recs.display()
            ));
        }
        return parts
            .iter()
            .map(|f| {
                let b = crate::store::parts::read(&dir, f)?;
                Ok((dir.join(&f.path), String::from_utf8_lossy(&b).into_owned()))
            })
            .collect();
    }
    let files: Vec<std::path::PathBuf> = if recs.is_dir() {
        let mut v: Vec<_> = std::fs::read_dir(recs)
            .map_err(|e| format!("cannot list {}: {e}", recs.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        v.sort();
        v
    } else {
        vec![recs.to_path_buf()]
    };
    files
        .into_iter()
        .map(|f| Ok((f.clone(), load(&f)?)))
        .collect()
}

/// `recflow eval`: metrics at each of `ks` of any recommendation file(s) (`user item [score rank]`,
/// ranked by the rank column when present, else by line order) against held-out `test` pairs.
/// Users are evaluated when they have held-out items and appear in `train`. `recs` may also be
/// a model store. Recommendations that match no evaluated user, or no item of the data, are an
/// error (the wrong file, not a model that scores 0).
pub fn eval_files(
    recs: &std::path::Path,
    train: &std::path::Path,
    test: &std::path::Path,
    ks: &[usize],
) -> Result<serde_json::Value, String> {
    use std::collections::{HashMap, HashSet};
    let texts = recs_texts(recs)?;
    let mut lists: HashMap<&str, Vec<(usize, usize, &str)>> = HashMap::new();
    let mut order = 0;
    for (f, text) in &texts {
        for (u, i, r) in pairs(f, text)? {
            order += 1;
            lists
                .entry(u)
                .or_default()
                .push((r.unwrap_or(order), order, i));
        }
    }
    let train_text = load(train)?;
    let train_pairs = pairs(train, &train_text)?;
    let train_users: HashSet<&str> = train_pairs.iter().map(|p| p.0).collect();
    // Training items are numbered first: they are the catalogue coverage is measured over.
    let mut ids: HashMap<&str, u64> = HashMap::new();
    for p in &train_pairs {
        let n = ids.len() as u64;
        ids.entry(p.1).or_insert(n);
    }
    let catalogue = ids.len();
    let test_text = load(test)?;
    let test_pairs = pairs(test, &test_text)?;
    let mut tests: HashMap<&str, Vec<&str>> = HashMap::new();
    for &(u, i, _) in &test_pairs {
        if train_users.contains(u) {
            tests.entry(u).or_default().push(i);
        }
    }
    let mut users: Vec<&str> = tests.keys().copied().collect();
    users.sort_unstable();
    let known: HashSet<&str> = train_pairs.iter().chain(&test_pairs).map(|p| p.1).collect();
    matches_data(recs, &lists, &users, &known)?;
    let mut m = Metrics::new(ks);
    let mut id = |s| {
        let n = ids.len() as u64;
        *ids.entry(s).or_insert(n)
    };
    for u in users {
        let mut l = lists.remove(u).unwrap_or_default();
        l.sort_unstable();
        // A repeated item counts once, at its best rank.
        let mut rec: Vec<u64> = Vec::with_capacity(l.len());
        for x in &l {
            let i = id(x.2);
            if !rec.contains(&i) {
                rec.push(i);
            }
        }
        let mut t: Vec<u64> = tests[u].iter().map(|x| id(x)).collect();
        t.sort_unstable();
        t.dedup();
        m.add_user(&rec, &t);
        let idx: Vec<usize> = rec.iter().map(|&i| i as usize).collect();
        m.cover(&idx, catalogue);
    }
    Ok(m.report(catalogue))
}

/// Refuses recommendations that share no user with the evaluated users, or no item with the
/// training and test data: metrics of 0 would read as a bad model rather than a wrong file.
fn matches_data(
    recs: &std::path::Path,
    lists: &std::collections::HashMap<&str, Vec<(usize, usize, &str)>>,
    users: &[&str],
    known_items: &std::collections::HashSet<&str>,
) -> Result<(), String> {
    let matched: Vec<&str> = users
        .iter()
        .copied()
        .filter(|u| lists.contains_key(u))
        .collect();
    let hint = "are --recs, --train and --test from the same data and id scheme?";
    if matched.is_empty() {
        return Err(format!(
            "{}: none of its {} recommended user(s) is an evaluated user (held out in --test and present in --train, {} users): {hint}",
            recs.display(),
            lists.len(),
            users.len()
        ));
    }
    let any_item = matched
        .iter()
        .any(|u| lists[u].iter().any(|x| known_items.contains(x.2)));
    if !any_item {
        return Err(format!(
            "{}: none of the items recommended to the {} evaluated user(s) occurs in --train or --test: {hint}",
            recs.display(),
            matched.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_by_hand() {
        let mut m = Metrics::new(&[3]);
        // k=3, test {1, 9}: hits at ranks 1 and 3.
        m.add_user(&[1, 5, 9], &[1, 9]);
        let r = m.report(10);
        assert_eq!(r["precision"], 1.0);
        assert!((r["map"].as_f64().unwrap() - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        let ndcg = (1.0 + 1.0 / 4f64.log2()) / (1.0 + 1.0 / 3f64.log2());
        assert!((r["ndcg"].as_f64().unwrap() - ndcg).abs() < 1e-12);
        m.add_user(&[2, 3, 4], &[7]);
        assert_eq!(m.report(10)["precision"], 2.0 / 3.0);
        m.add_user(&[2], &[]); // no held-out items: not counted
        assert_eq!(m.users, 2);
    }

    /// Recall, hit rate, precision@k and coverage at several cut-offs against naive code
    /// written from the definitions, over random lists split into shard parts and merged.
    #[test]
    fn recall_hit_rate_coverage_match_naive() {
        let mut r = crate::ids::SplitMix::new(5);
        let (n, ks) = (60usize, [1usize, 5, 20]);
        let mut parts = [Metrics::new(&ks), Metrics::new(&ks), Metrics::new(&ks)];
        let mut cases = Vec::new();
        for u in 0..40 {
            let mut recs: Vec<u64> = (0..25).map(|_| r.below(n as u64)).collect();
            recs.dedup();
            let mut test: Vec<u64> = (0..1 + r.below(8)).map(|_| r.below(n as u64)).collect();
            test.sort_unstable();
            test.dedup();
            let p = &mut parts[u % 3];
            p.add_user(&recs, &test);
            p.cover(&recs.iter().map(|&i| i as usize).collect::<Vec<_>>(), n);
            cases.push((recs, test));
        }
        let mut m = Metrics::default();
        parts.iter().for_each(|p| m.merge(p));
        let rep = m.report(n);
        for k in ks {
            let (mut recall, mut hit, mut prec) = (0.0, 0.0, 0.0);
            let mut seen = std::collections::BTreeSet::new();
            for (recs, test) in &cases {
                let top = &recs[..k.min(recs.len())];
                let h = top.iter().filter(|i| test.contains(i)).count() as f64;
                recall += h / test.len() as f64;
                hit += (h > 0.0) as u64 as f64;
                prec += h / k as f64;
                seen.extend(top.iter().copied());
            }
            let u = cases.len() as f64;
            let at = &rep["at_k"][k.to_string()];
            for (name, want) in [
                ("recall", recall / u),
                ("hit_rate", hit / u),
                ("precision_at_k", prec / u),
                ("coverage", seen.len() as f64 / n as f64),
            ] {
                let got = at[name].as_f64().unwrap();
                assert!((got - want).abs() < 1e-12, "{name}@{k}: {got} vs {want}");
            }
        }
        assert_eq!(rep["k"], 1);
        assert_eq!(
            lookup(&rep, "recall@5"),
            rep["at_k"]["5"]["recall"].as_f64()
        );
    }

    #[test]
    fn auc_by_hand() {
        // scores: item0 .9 (test), item1 .5, item2 .7 (seen), item3 .1
        let s = [0.9, 0.5, 0.7, 0.1];
        assert_eq!(auc(&s, &[0], &[2]), Some(1.0));
        assert_eq!(auc(&s, &[3], &[2]), Some(0.0));
        assert_eq!(auc(&s, &[1], &[]), Some(1.0 / 3.0));
        assert_eq!(auc(&[0.5, 0.5, 0.2], &[0], &[]), Some(0.75));
    }

    /// Both paths (few held-out items: counting; many: sorting) against the definition, pair by
    /// pair, with ties and overlapping held-out and excluded items.
    #[test]
    fn auc_matches_pair_counting() {
        let mut r = crate::ids::SplitMix::new(9);
        for (n, t) in [
            (50usize, 1usize),
            (300, 5),
            (300, 32),
            (400, 33),
            (500, 120),
        ] {
            let scores: Vec<f32> = (0..n).map(|_| r.below(40) as f32 / 8.0).collect();
            let test: Vec<usize> = (0..t).map(|_| r.below(n as u64) as usize).collect();
            let mut test = test;
            test.sort_unstable();
            test.dedup();
            let excluded: Vec<usize> = (0..n).filter(|_| r.below(5) == 0).collect();
            let neg: Vec<usize> = (0..n)
                .filter(|i| !test.contains(i) && !excluded.contains(i))
                .collect();
            let mut good = 0.0;
            for &p in &test {
                for &q in &neg {
                    good += if scores[p] > scores[q] {
                        1.0
                    } else if scores[p] == scores[q] {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
            let want = good / (test.len() * neg.len()) as f64;
            let got = auc(&scores, &test, &excluded).unwrap();
            assert!((got - want).abs() < 1e-12, "n={n} t={t}: {got} vs {want}");
        }
    }
}
