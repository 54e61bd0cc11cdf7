//! Top-K recommendations for every user, without the items they already have, and their
//! evaluation on held-out pairs.
//!
//! Every worker gathers all item vectors (one block per worker, all-gather). `exact` scans the
//! whole catalogue for each user in decreasing norm with a register-blocked kernel and stops
//! exactly when no remaining item can enter the top k ([`ScanIndex`]). `lsh` scores candidate
//! lists: with user buckets (the default) every list is scored for all its users as one block
//! (`lists`); with item hashing, per user. `popular` ranks items by interaction count. Each
//! worker writes the lines of the users it owns (`text`).

use crate::cluster::{Body, Comm, CommError};
use crate::eval::{self, Metrics};
use crate::ids::{mix64, RawId};
use crate::job::{Job, Mode};
use crate::lsh::Index;
use crate::side::Side;
use faer::{Accum, MatMut, MatRef, Par};
use std::collections::HashMap;
use timely::worker::Worker;

mod lists;
mod scan;
mod text;
mod topk;

pub use scan::{better, fma_dot, score_candidates, top_k, Packed, ScanIndex, MR, NR};
use topk::Tops;

/// The whole item side, gathered on one worker, ordered by global key.
pub struct Catalog {
    /// Global keys, ascending.
    pub keys: Vec<u64>,
    /// Raw ids.
    pub ids: Vec<RawId>,
    /// Interaction counts.
    pub degrees: Vec<u32>,
    /// Row-major vectors.
    pub factors: Vec<f32>,
}

impl Catalog {
    /// Index of a global key.
    pub fn index(&self, key: u64) -> Option<usize> {
        self.keys.binary_search(&key).ok()
    }
}

/// All-gathers the item side (every worker ends with the same catalog).
pub fn gather_items(
    worker: &mut Worker,
    comm: &mut Comm,
    items: &Side,
) -> Result<Catalog, CommError> {
    let keys: Vec<u64> = (0..items.rows()).map(|r| items.key_of(r)).collect();
    let degrees = (0..items.rows()).map(|r| items.degree(r) as u32).collect();
    comm.broadcast(Body::Block(
        keys,
        items.ids.clone(),
        degrees,
        items.factors.clone(),
    ));
    let d = items.dim;
    let mut rows: Vec<(u64, RawId, u32, usize, usize)> = Vec::new();
    let mut blocks = Vec::new();
    for (_, b) in comm.exchange(worker, "recommend: gather items")? {
        if let Body::Block(k, i, g, f) = b {
            let bi = blocks.len();
            for (j, ((k, i), g)) in k.into_iter().zip(i).zip(g).enumerate() {
                rows.push((k, i, g, bi, j));
            }
            blocks.push(f);
        }
    }
    rows.sort_unstable_by_key(|r| r.0);
    let mut cat = Catalog {
        keys: Vec::with_capacity(rows.len()),
        ids: Vec::with_capacity(rows.len()),
        degrees: Vec::with_capacity(rows.len()),
        factors: Vec::with_capacity(rows.len() * d),
    };
    for (k, i, g, bi, j) in rows {
        cat.keys.push(k);
        cat.ids.push(i);
        cat.degrees.push(g);
        cat.factors
            .extend_from_slice(&blocks[bi][j * d..(j + 1) * d]);
    }
    Ok(cat)
}

/// What the recommendation stage leaves on one worker.
pub struct Recs {
    /// This worker's part file (`user<TAB>item<TAB>score<TAB>rank`), written block by block
    /// under the store's pending directory (synced and moved into the version at publish),
    /// with its record as `recs/part-NNNNN.tsv`; `None` when `recommend.k` is 0.
    pub part: Option<(std::path::PathBuf, crate::store::FileRecord)>,
    /// `(user, item)` of every line as the raw ids' stable hashes, when asked for (the
    /// comparison with the parent version).
    pub pairs: Option<Vec<(u64, u64)>>,
    /// Lines in it.
    pub lines: u64,
    /// Users with no candidate at all (no line written).
    pub users_without_recs: u64,
    /// Evaluation sums (whole job on worker 0 after the merge, summed in vshard order), one
    /// per held-out set given to [`recommend`] (`eval.test` or the holdout, then `eval.valid`).
    pub metrics: Vec<Metrics>,
    /// Items in the catalogue (the coverage denominator).
    pub catalogue: usize,
    /// LSH: this worker's bucket part file and its line count.
    pub buckets: Option<(Vec<u8>, u64)>,
    /// Similar items: this worker's part file (`item<TAB>other<TAB>cosine<TAB>rank`) and lines.
    pub similar: Option<(Vec<u8>, u64)>,
    /// Exact mode: items the pruned scan scored per user (mean, histogram, catalogue share);
    /// None where the scan did not run (the dense fallback scores every item).
    pub exact: Option<serde_json::Value>,
    /// LSH: bucket statistics, candidates scored per user and recall against exact top-k
    /// (complete on worker 0).
    pub lsh: Option<serde_json::Value>,
    /// Where this worker's time went.
    pub phases: Phases,
}

/// Seconds one worker spent in each part of the recommendation stage.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Phases {
    /// Gathering the catalogue, building the scan index, LSH tables and user buckets.
    pub prepare: f64,
    /// Finding every user's top k (seen items, candidates, scoring).
    pub score: f64,
    /// Writing the recs lines.
    pub write: f64,
    /// Evaluation and LSH recall against the exact top k.
    pub eval: f64,
    /// Similar items (`[similar]`).
    pub similar: f64,
}

/// For each item this worker owns, the `k` most similar items by cosine: among all items, or
/// among the item's LSH candidates (same buckets, probes and head list) when `index` is given.
pub fn similar_items(
    cat: &Catalog,
    items: &Side,
    index: Option<&Index>,
    k: usize,
) -> (Vec<u8>, u64) {
    let n = cat.keys.len();
    let d = items.dim;
    let unit_rows = |f: &[f32]| -> Vec<f32> {
        let mut v = f.to_vec();
        for row in v.chunks_mut(d) {
            let nn = dot(row, row).sqrt();
            if nn > 0.0 {
                row.iter_mut().for_each(|x| *x /= nn);
            }
        }
        v
    };
    let all = unit_rows(&cat.factors);
    let mine = unit_rows(&items.factors);
    let mut out = Vec::new();
    let mut lines = 0u64;
    let text = text::Lines::new(&cat.ids, k);
    // Without LSH: the fused scan over the unit vectors where the kernel runs (all norms are 1,
    // so nothing is pruned, but no score matrix is stored or sorted: 2–3× faster than GEMM
    // plus a selection per item at 100 k items); else blocks of GEMM.
    let scan = index
        .is_none()
        .then(|| ScanIndex::build(&cat.keys, &all, d))
        .flatten();
    let block = if scan.is_some() {
        192
    } else {
        (4_000_000 / n.max(1)).clamp(1, 256)
    };
    let dense = index.is_none() && scan.is_none();
    let mut scores = vec![0.0f32; if dense { block * n } else { 0 }];
    let mut mark = vec![u32::MAX; n];
    let mut r0 = 0;
    while r0 < items.rows() {
        let r1 = (r0 + block).min(items.rows());
        let b = r1 - r0;
        let me_of = |r: usize| cat.index(items.key_of(r)).expect("own item in catalogue");
        if dense {
            let x = MatRef::from_row_major_slice(&mine[r0 * d..r1 * d], b, d);
            let y = MatRef::from_row_major_slice(&all, n, d);
            let s = MatMut::from_row_major_slice_mut(&mut scores[..b * n], b, n);
            faer::linalg::matmul::matmul(s, Accum::Replace, x, y.transpose(), 1.0f32, Par::Seq);
        }
        let mut scanned = scan.as_ref().map(|ix| {
            let me: Vec<Vec<usize>> = (r0..r1).map(|r| vec![me_of(r)]).collect();
            ix.top_k(&mine[r0 * d..r1 * d], &me, k)
        });
        for r in r0..r1 {
            let me = me_of(r);
            let x = &mine[r * d..(r + 1) * d];
            let best: Vec<(f32, usize)> = match index {
                None if scanned.is_some() => {
                    std::mem::take(&mut scanned.as_mut().expect("checked")[r - r0])
                }
                None => {
                    let row = &scores[(r - r0) * n..(r - r0 + 1) * n];
                    top_k(row, &cat.keys, &[me], k)
                        .into_iter()
                        .map(|i| (row[i], i))
                        .collect()
                }
                Some(ix) => {
                    let mut cand = Vec::new();
                    ix.candidates(&items.factors[r * d..(r + 1) * d], |i| {
                        let i = i as usize;
                        if i != me && mark[i] != r as u32 {
                            mark[i] = r as u32;
                            cand.push((dot(x, &all[i * d..(i + 1) * d]), i));
                        }
                    });
                    cand.sort_unstable_by(|a, b| {
                        better((a.0, cat.keys[a.1]), (b.0, cat.keys[b.1]))
                    });
                    cand.truncate(k);
                    cand
                }
            };
            lines += best.len() as u64;
            text.push_user(
                &mut out,
                &items.ids[r],
                best.into_iter().map(|(s, i)| (i, s)),
            );
        }
        r0 = r1;
    }
    (out, lines)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn unit(h: u64) -> f64 {
    (mix64(h) >> 11) as f64 / (1u64 << 53) as f64
}

/// Adds catalogue item `i` to user `r`'s candidates unless it is already there (`mark`), in
/// the head list (scored as a block) or excluded (sorted).
fn admit(
    i: usize,
    r: usize,
    mark: &mut [u32],
    sub_of: &[u32],
    excluded: &[usize],
    cand: &mut Vec<usize>,
) {
    if mark[i] != r as u32 && sub_of[i] == u32::MAX && excluded.binary_search(&i).is_err() {
        mark[i] = r as u32;
        cand.push(i);
    }
}

/// Scores `cand` for `x` (norm `nx`) and merges them into `best`. Candidates that
/// Cauchy–Schwarz rules out against the current k-th best (with a margin for rounding) are
/// dropped unscored.
fn merge_scored(
    best: &mut Tops,
    x: &[f32],
    nx: f32,
    cand: &mut Vec<usize>,
    inorm: &[f32],
    cat: &Catalog,
    buf: &mut Vec<f32>,
) {
    let floor = best.threshold(0);
    cand.retain(|&i| !(best.full(0) && nx * inorm[i] * (1.0 + 1e-4) < floor));
    score_candidates(x, &cat.factors, x.len(), cand, buf);
    for (&i, &sc) in cand.iter().zip(buf.iter()) {
        if sc >= best.threshold(0) {
            best.push(0, sc, cat.keys[i], i as u32);
        }
    }
}

/// LSH recall for one sampled user: how many of its exact top `ek` (a scan of the whole
/// catalogue without `excluded`) are among the first `ek` items of `got`, and how many there
/// are.
fn recall_hits(
    full: &ScanIndex,
    x: &[f32],
    excluded: &[usize],
    ek: usize,
    got: &[(usize, f32)],
) -> [u64; 2] {
    let exact = full.top_k(x, std::slice::from_ref(&excluded.to_vec()), ek);
    let hits = exact[0]
        .iter()
        .filter(|e| got.iter().take(ek).any(|g| g.0 == e.1))
        .count();
    [hits as u64, exact[0].len() as u64]
}

/// Scores computed for AUC over the whole job (see `auc_rate`).
const AUC_SCORES: f64 = 4e8;

/// Users per block in list scoring (user buckets).
const LIST_BLOCK: usize = 16384;

/// Tag of a held-out set's per-vshard metrics in [`Body::Metrics`] (vshards are < 2^16).
const SET_SHIFT: u32 = 24;
/// The vshard slot of a worker's coverage bitsets (after every real vshard).
const COVERAGE: u32 = (1 << SET_SHIFT) - 1;

/// Held-out items per user row as catalogue indices (`usize::MAX`: no training data).
fn held_out_rows(users: &Side, cat: &Catalog, held: &[(RawId, u64)]) -> HashMap<usize, Vec<usize>> {
    let row_of: HashMap<&RawId, usize> = users
        .ids
        .iter()
        .enumerate()
        .map(|(r, id)| (id, r))
        .collect();
    let mut tests: HashMap<usize, Vec<usize>> = HashMap::new();
    for (u, ik) in held {
        if let Some(&r) = row_of.get(u) {
            // An item with no training data is never recommended.
            tests
                .entry(r)
                .or_default()
                .push(cat.index(*ik).unwrap_or(usize::MAX));
        }
    }
    tests
}

/// Recommends for this worker's users and evaluates against each held-out set of `held`
/// (user id, item key); `keep_pairs`: also return the lines' (user, item) hashes.
pub fn recommend(
    worker: &mut Worker,
    comm: &mut Comm,
    job: &Job,
    users: &Side,
    items: &Side,
    held: &[&[(RawId, u64)]],
    keep_pairs: bool,
) -> Result<Recs, CommError> {
    let k = job.recommend.k;
    // Lists go as deep as the largest metric cut-off, whatever `recommend.k` writes.
    let ek = job.eval.k.max();
    let ks = job.eval.k.list();
    // Where this worker's time goes (the report's `recommend_phases`).
    let mut phases = Phases::default();
    let mut clock = std::time::Instant::now();
    let cat = gather_items(worker, comm, items)?;
    let n = cat.keys.len();
    let d = users.dim;
    let tests: Vec<HashMap<usize, Vec<usize>>> =
        held.iter().map(|h| held_out_rows(users, &cat, h)).collect();
    let popular: Vec<usize> = {
        let mut p: Vec<usize> = (0..n).collect();
        p.sort_unstable_by(|&a, &b| {
            cat.degrees[b]
                .cmp(&cat.degrees[a])
                .then(cat.keys[a].cmp(&cat.keys[b]))
        });
        p
    };
    let mode = job.recommend.mode;
    // The fused scan of the whole catalogue (where the kernel runs): exact mode's scorer; in LSH
    // mode it ranks the user buckets and gives sampled users' exact top-k for recall.
    let full_scan = matches!(mode, Mode::Exact | Mode::Lsh)
        .then(|| ScanIndex::build(&cat.keys, &cat.factors, d))
        .flatten();
    let mut index = (mode == Mode::Lsh).then(|| Index::build(&job.lsh, &cat.factors, &cat.keys, d));
    // User buckets: the tables hash users; each bucket lists the items best for its users.
    let mut user_codes: Vec<u32> = Vec::new();
    if let Some(ix) = index
        .as_mut()
        .filter(|_| job.lsh.transform == crate::job::Transform::Users && job.lsh.tables > 0)
    {
        // Bucket lists leave out the head list's items: every user scores those anyway.
        let head: Vec<usize> = ix.head.iter().map(|&i| i as usize).collect();
        user_codes = ix.user_buckets(worker, comm, &users.factors, |dirs, n| {
            let heads = vec![head.clone(); dirs.len() / d.max(1)];
            match &full_scan {
                Some(s) => s
                    .top_k(dirs, &heads, n)
                    .into_iter()
                    .map(|l| l.into_iter().map(|(_, i)| i as u32).collect())
                    .collect(),
                None => dirs
                    .chunks_exact(d.max(1))
                    .map(|q| {
                        let sc: Vec<f32> = (0..cat.keys.len())
                            .map(|i| fma_dot(q, &cat.factors[i * d..(i + 1) * d]))
                            .collect();
                        top_k(&sc, &cat.keys, &head, n)
                            .into_iter()
                            .map(|i| i as u32)
                            .collect()
                    })
                    .collect(),
            }
        })?;
    }
    let index = index;
    phases.prepare += lap(&mut clock);
    // User buckets with the kernel: the head list (list 0, everybody's) and the bucket lists,
    // each scored for its users as one block.
    let listed = match (&index, &full_scan) {
        (Some(ix), Some(_)) if !user_codes.is_empty() => {
            let mut refs: Vec<&[u32]> = Vec::with_capacity(ix.user_lists().len() + 1);
            if !ix.head.is_empty() {
                refs.push(&ix.head);
            }
            refs.extend(ix.user_lists().iter().map(|v| v.as_slice()));
            lists::Lists::build(&refs, &cat.factors, d)
        }
        _ => None,
    };
    let mut list_scratch = lists::Scratch::default();
    // Users sampled for LSH recall: a hash-based share, the same whatever the worker count.
    comm.broadcast(Body::Counts(vec![users.rows() as u64]));
    let mut total_users = 0u64;
    for (_, b) in comm.exchange(worker, "recommend: count users")? {
        if let Body::Counts(c) = b {
            total_users += c[0];
        }
    }
    let recall_rate = job.eval.recall_sample as f64 / total_users.max(1) as f64;
    // AUC needs every item's score for a user: a hash-chosen share of users whose total work is
    // about AUC_SCORES scores (all users on small jobs; ~4000 at 100 k items), so evaluation
    // stays a small part of the stage at any scale.
    let auc_rate = (AUC_SCORES / (n.max(1) as f64 * total_users.max(1) as f64)).min(1.0);
    let lsh_n = if index.is_some() { n } else { 0 };
    let mut mark = vec![u32::MAX; lsh_n];
    let mut cand: Vec<usize> = Vec::new();
    let mut cand_buf: Vec<f32> = Vec::new();
    // candidates scored (LSH, or what exact mode's scan scored), users, recall hits, recall total
    let mut lsh_counts = [0u64; 4];
    // Users by candidates scored (log2 bins, for the report).
    let mut cand_hist = vec![0u64; crate::report::BINS];
    let mut out = Recs {
        part: None,
        pairs: keep_pairs.then(Vec::new),
        lines: 0,
        users_without_recs: 0,
        metrics: vec![Metrics::new(&ks); held.len()],
        catalogue: n,
        buckets: index
            .as_ref()
            .map(|ix| ix.bucket_lines(&cat.ids, comm.index, comm.peers)),
        similar: None,
        exact: None,
        lsh: None,
        phases: Phases::default(),
    };
    phases.prepare += lap(&mut clock);
    if job.similar.k > 0 {
        let ix = index.as_ref().filter(|_| job.lsh.tables > 0);
        out.similar = Some(similar_items(&cat, items, ix, job.similar.k));
    }
    phases.similar += lap(&mut clock);
    // Per-vshard sums, so the totals do not depend on which worker summed what.
    let mut parts: Vec<Vec<(u32, Metrics)>> = (0..held.len() as u32)
        .map(|set| {
            let vs = users.vshards.iter();
            vs.map(|&v| (v | set << SET_SHIFT, Metrics::new(&ks)))
                .collect()
        })
        .collect();
    // Coverage: one bitset per set and cut-off for the whole worker (a union: any order).
    let mut coverage = vec![Metrics::new(&ks); held.len()];
    // Exact mode scans with the fused kernel where it runs (no score matrix); the full score
    // row is then computed only for users sampled for AUC.
    let scan = full_scan.as_ref().filter(|_| mode == Mode::Exact);
    // Item-hashing LSH with the fused kernel: the head list is one dense block per user block,
    // scored like exact mode; bucket candidates are scored one by one and merged into the same
    // lists. (User buckets go through `listed` instead.) Sampled users' exact top-k (LSH
    // recall) comes from a scan of the whole catalogue.
    let head_scan = index.as_ref().filter(|_| listed.is_none()).and_then(|ix| {
        let keys: Vec<u64> = ix.head.iter().map(|&i| cat.keys[i as usize]).collect();
        let mut f = Vec::with_capacity(ix.head.len() * d);
        for &i in &ix.head {
            f.extend_from_slice(&cat.factors[i as usize * d..(i as usize + 1) * d]);
        }
        full_scan.as_ref()?;
        let hs = ScanIndex::build(&keys, &f, d)?;
        let mut sub_of = vec![u32::MAX; n];
        for (s, &i) in ix.head.iter().enumerate() {
            sub_of[i as usize] = s as u32;
        }
        let inorm: Vec<f32> = cat
            .factors
            .chunks_exact(d.max(1))
            .map(|y| fma_dot(y, y).sqrt())
            .collect();
        Some((hs, sub_of, inorm))
    });
    let block = if listed.is_some() {
        // Large blocks: each list is read once per block, for all of the block's users in it.
        LIST_BLOCK
    } else if scan.is_some() || head_scan.is_some() {
        192
    } else {
        (4_000_000 / n.max(1)).clamp(1, 256)
    };
    // A dense score block only for exact mode where the kernel does not run: nothing else reads
    // it, and LSH blocks are far larger (users × catalogue floats would not fit).
    let dense = scan.is_none() && mode == Mode::Exact;
    let mut scores = vec![0.0f32; if dense { block * n } else { 0 }];
    let mut auc_row = vec![0.0f32; if scan.is_some() { n } else { 0 }];
    // Catalogue index of each gathered item (u32::MAX: not in the catalogue), looked up once.
    let cat_of: Vec<u32> = users
        .gathered_keys
        .iter()
        .map(|&k| cat.index(k).map_or(u32::MAX, |i| i as u32))
        .collect();
    let lines = text::Lines::new(&cat.ids, k);
    let item_hash: Vec<u64> = if keep_pairs {
        cat.ids.iter().map(RawId::stable_hash).collect()
    } else {
        Vec::new()
    };
    // This worker's part, written block by block (see `Recs::part`).
    let mut writer = (k > 0).then(|| {
        let rel = format!("recs/part-{:05}.tsv", comm.index);
        let pending =
            crate::store::pending_dir(std::path::Path::new(&job.output.store), comm.index);
        crate::store::PartWriter::create(pending.join(&rel), &rel)
    });
    let (mut text, mut written) = (Vec::new(), 0u64);
    // The block's lists, `(catalogue index, score)`, user after user (`blk_at`: starts).
    let mut blk: Vec<(usize, f32)> = Vec::new();
    let mut blk_at: Vec<usize> = Vec::new();
    let mut r0 = 0;
    while r0 < users.rows() {
        let r1 = (r0 + block).min(users.rows());
        let b = r1 - r0;
        phases.eval += lap(&mut clock);
        let seen_block: Vec<Vec<usize>> = (r0..r1)
            .map(|r| {
                let mut seen: Vec<usize> = users.cols[users.indptr[r]..users.indptr[r + 1]]
                    .iter()
                    .map(|&c| cat_of[c as usize])
                    .filter(|&i| i != u32::MAX)
                    .map(|i| i as usize)
                    .collect();
                seen.sort_unstable();
                seen
            })
            .collect();
        let (scanned, scan_scored) = scan
            .as_ref()
            .map(|ix| {
                let none = vec![Vec::new(); b];
                let ex = if job.recommend.exclude_seen {
                    &seen_block
                } else {
                    &none
                };
                ix.top_k_scored(&users.factors[r0 * d..r1 * d], ex, k.max(ek))
            })
            .unzip();
        let head_lists = head_scan.as_ref().map(|(hs, sub_of, _)| {
            let ex: Vec<Vec<usize>> = seen_block
                .iter()
                .map(|seen| {
                    let mut e: Vec<usize> = if job.recommend.exclude_seen {
                        seen.iter()
                            .filter(|&&i| sub_of[i] != u32::MAX)
                            .map(|&i| sub_of[i] as usize)
                            .collect()
                    } else {
                        Vec::new()
                    };
                    e.sort_unstable();
                    e
                })
                .collect();
            hs.top_k(&users.factors[r0 * d..r1 * d], &ex, k.max(ek))
        });
        let listed_block = listed.as_ref().map(|ls| {
            let tables = job.lsh.tables as usize;
            let head = !index.as_ref().expect("listed").head.is_empty();
            let shift = head as u32;
            let mut member = Vec::with_capacity(b * (tables + shift as usize));
            for r in r0..r1 {
                if head {
                    member.push(0);
                }
                member.extend(
                    user_codes[r * tables..(r + 1) * tables]
                        .iter()
                        .map(|&c| c + shift),
                );
            }
            let mut ex_start = Vec::with_capacity(b + 1);
            let mut ex_items = Vec::new();
            ex_start.push(0u32);
            for seen in seen_block.iter().filter(|_| job.recommend.exclude_seen) {
                ex_items.extend(seen.iter().map(|&i| i as u32));
                ex_start.push(ex_items.len() as u32);
            }
            ex_start.resize(b + 1, 0);
            let mut scored = vec![0u32; b];
            let best = ls.score(
                &users.factors[r0 * d..r1 * d],
                tables + shift as usize,
                &member,
                (&ex_start, &ex_items),
                &cat.keys,
                k.max(ek),
                &mut scored,
                &mut list_scratch,
            );
            (best, scored)
        });
        if dense {
            let x = MatRef::from_row_major_slice(&users.factors[r0 * d..r1 * d], b, d);
            let y = MatRef::from_row_major_slice(&cat.factors, n, d);
            let s = MatMut::from_row_major_slice_mut(&mut scores[..b * n], b, n);
            faer::linalg::matmul::matmul(s, Accum::Replace, x, y.transpose(), 1.0f32, Par::Seq);
        }
        // Three passes over the block's users (lists, lines, evaluation), so the phases are
        // timed per block: a clock read per user and phase cost more than some phases.
        blk.clear();
        blk_at.clear();
        blk_at.push(0);
        for r in r0..r1 {
            let seen = &seen_block[r - r0];
            let row: &[f32] = if !dense {
                &[]
            } else {
                &scores[(r - r0) * n..(r - r0 + 1) * n]
            };
            let excluded: &[usize] = if job.recommend.exclude_seen {
                seen
            } else {
                &[]
            };
            // (catalogue index, score), best first.
            let list: Vec<(usize, f32)> = match (mode, &index) {
                (Mode::Popular, _) => popular
                    .iter()
                    .copied()
                    .filter(|i| excluded.binary_search(i).is_err())
                    .take(k.max(ek))
                    .map(|i| (i, cat.degrees[i] as f32))
                    .collect(),
                (Mode::Lsh, Some(_)) if listed_block.is_some() => {
                    let (best, scored) = listed_block.as_ref().expect("checked");
                    let (best, scored) = (&best[r - r0], scored[r - r0]);
                    lsh_counts[0] += scored as u64;
                    lsh_counts[1] += 1;
                    cand_hist[crate::report::log2_bin(scored as u64)] += 1;
                    let list: Vec<(usize, f32)> =
                        best.iter().map(|b| (b.2 as usize, b.0)).collect();
                    if unit(users.ids[r].stable_hash() ^ job.eval.seed ^ 0x5eed) < recall_rate {
                        let full = full_scan.as_ref().expect("built with lists");
                        let [hits, all] = recall_hits(full, users.row(r), excluded, ek, &list);
                        lsh_counts[2] += hits;
                        lsh_counts[3] += all;
                    }
                    list
                }
                (Mode::Lsh, Some(ix)) if head_scan.is_some() => {
                    let (_, sub_of, inorm) = head_scan.as_ref().expect("checked");
                    let full = full_scan.as_ref().expect("built with head_scan");
                    let x = users.row(r);
                    let kk = k.max(ek);
                    let mut best = Tops::new(1, kk);
                    let heads = head_lists.as_ref().expect("built with head_scan");
                    for &(sc, s) in &heads[r - r0] {
                        let i = ix.head[s] as usize;
                        best.push(0, sc, cat.keys[i], i as u32);
                    }
                    // Bands in decreasing norm order. Cauchy–Schwarz (with a margin for
                    // rounding): once ‖x‖ times a band's largest norm is below the k-th best
                    // score, neither that band nor any later one can add an item, so their
                    // buckets are not even listed; the same test skips single candidates.
                    let nx = fma_dot(x, x).sqrt();
                    let mut scored = ix.head.len();
                    if !user_codes.is_empty() {
                        let tables = job.lsh.tables as usize;
                        cand.clear();
                        for &b in &user_codes[r * tables..(r + 1) * tables] {
                            for &i in ix.user_bucket(b) {
                                admit(i as usize, r, &mut mark, sub_of, excluded, &mut cand);
                            }
                        }
                        scored += cand.len();
                        merge_scored(&mut best, x, nx, &mut cand, inorm, &cat, &mut cand_buf);
                    }
                    let probes = if user_codes.is_empty() {
                        ix.probes(x)
                    } else {
                        Vec::new()
                    };
                    for (b, &m) in ix.band_max.iter().enumerate() {
                        if best.full(0) && nx * m * (1.0 + 1e-4) < best.threshold(0) {
                            break;
                        }
                        cand.clear();
                        ix.band_items(&probes, b as u32, |i| {
                            admit(i as usize, r, &mut mark, sub_of, excluded, &mut cand)
                        });
                        scored += cand.len();
                        merge_scored(&mut best, x, nx, &mut cand, inorm, &cat, &mut cand_buf);
                    }
                    lsh_counts[0] += scored as u64;
                    lsh_counts[1] += 1;
                    cand_hist[crate::report::log2_bin(scored as u64)] += 1;
                    let list: Vec<(usize, f32)> =
                        best.list(0).map(|(sc, _, i)| (i as usize, sc)).collect();
                    if unit(users.ids[r].stable_hash() ^ job.eval.seed ^ 0x5eed) < recall_rate {
                        let [hits, all] = recall_hits(full, x, excluded, ek, &list);
                        lsh_counts[2] += hits;
                        lsh_counts[3] += all;
                    }
                    list
                }
                (Mode::Lsh, Some(ix)) => {
                    let x = users.row(r);
                    cand.clear();
                    ix.candidates(x, |i| {
                        let i = i as usize;
                        if mark[i] != r as u32 && excluded.binary_search(&i).is_err() {
                            mark[i] = r as u32;
                            cand.push(i);
                        }
                    });
                    lsh_counts[0] += cand.len() as u64;
                    lsh_counts[1] += 1;
                    cand_hist[crate::report::log2_bin(cand.len() as u64)] += 1;
                    let mut best: Vec<(f32, u64, usize)> = cand
                        .iter()
                        .map(|&i| (dot(x, &cat.factors[i * d..(i + 1) * d]), cat.keys[i], i))
                        .collect();
                    best.sort_unstable_by(|a, b| better((a.0, a.1), (b.0, b.1)));
                    best.truncate(k.max(ek));
                    if unit(users.ids[r].stable_hash() ^ job.eval.seed ^ 0x5eed) < recall_rate {
                        let full: Vec<f32> = (0..n)
                            .map(|i| dot(x, &cat.factors[i * d..(i + 1) * d]))
                            .collect();
                        let exact = top_k(&full, &cat.keys, excluded, ek);
                        lsh_counts[2] += exact
                            .iter()
                            .filter(|i| best.iter().take(ek).any(|b| b.2 == **i))
                            .count() as u64;
                        lsh_counts[3] += exact.len() as u64;
                    }
                    best.into_iter().map(|b| (b.2, b.0)).collect()
                }
                _ => match &scanned {
                    Some(l) => {
                        // Exact mode: what the pruned scan really scored for this user.
                        let c = scan_scored.as_ref().map_or(n as u64, |s| s[r - r0] as u64);
                        lsh_counts[0] += c;
                        lsh_counts[1] += 1;
                        cand_hist[crate::report::log2_bin(c)] += 1;
                        l[r - r0].iter().map(|&(sc, i)| (i, sc)).collect()
                    }
                    None => top_k(row, &cat.keys, excluded, k.max(ek))
                        .into_iter()
                        .map(|i| (i, row[i]))
                        .collect(),
                },
            };
            blk.extend(list);
            blk_at.push(blk.len());
        }
        phases.score += lap(&mut clock);
        for r in r0..r1 {
            let list = &blk[blk_at[r - r0]..blk_at[r - r0 + 1]];
            if list.is_empty() && k > 0 {
                out.users_without_recs += 1;
            }
            lines.push_user(&mut text, &users.ids[r], list.iter().take(k).copied());
            out.lines += list.len().min(k) as u64;
            if let Some(p) = out.pairs.as_mut() {
                let u = users.ids[r].stable_hash();
                p.extend(list.iter().take(k).map(|&(i, _)| (u, item_hash[i])));
            }
        }
        // The block's lines go to disk now: a worker's recs are hundreds of MB at scale. After
        // a failed write nothing more is written; the error ends the stage on every worker.
        if let Some(Ok(w)) = writer.as_mut() {
            if let Err(e) = w.append(&text, out.lines - written) {
                writer = Some(Err(e));
            }
        }
        written = out.lines;
        text.clear();
        phases.write += lap(&mut clock);
        for (set, r) in (0..held.len()).flat_map(|s| (r0..r1).map(move |r| (s, r))) {
            let list = &blk[blk_at[r - r0]..blk_at[r - r0 + 1]];
            if let Some(t) = tests[set].get(&r) {
                let seen = &seen_block[r - r0];
                let row: &[f32] = if !dense {
                    &[]
                } else {
                    &scores[(r - r0) * n..(r - r0 + 1) * n]
                };
                let j = users.starts.partition_point(|&s| s <= r) - 1;
                let m = &mut parts[set][j].1;
                let keys: Vec<u64> = list.iter().map(|&(i, _)| i as u64).collect();
                let tk: Vec<u64> = t.iter().map(|&i| i as u64).collect();
                m.add_user(&keys, &tk);
                let idx: Vec<usize> = list.iter().map(|&(i, _)| i).collect();
                coverage[set].cover(&idx, n);
                let sampled = unit(users.ids[r].stable_hash() ^ job.eval.seed) <= auc_rate;
                if sampled && mode == Mode::Exact {
                    let known: Vec<usize> =
                        t.iter().copied().filter(|&i| i != usize::MAX).collect();
                    let full: &[f32] = if scanned.is_some() {
                        let x = MatRef::from_row_major_slice(users.row(r), 1, d);
                        let y = MatRef::from_row_major_slice(&cat.factors, n, d);
                        let s = MatMut::from_row_major_slice_mut(&mut auc_row, 1, n);
                        faer::linalg::matmul::matmul(
                            s,
                            Accum::Replace,
                            x,
                            y.transpose(),
                            1.0f32,
                            Par::Seq,
                        );
                        &auc_row
                    } else {
                        row
                    };
                    if let Some(a) = eval::auc(full, &known, seen) {
                        m.add_auc(a);
                    }
                }
            }
        }
        phases.eval += lap(&mut clock);
        r0 = r1;
    }
    let finished = writer.map(|w| w.and_then(|w| w.finish())).transpose();
    out.part = comm.agree(worker, "recommend: write", finished)?;
    phases.write += lap(&mut clock);
    let mut sums: Vec<(u32, Metrics)> = parts.into_iter().flatten().collect();
    for (set, c) in coverage.into_iter().enumerate() {
        sums.push((COVERAGE | (set as u32) << SET_SHIFT, c));
    }
    comm.send(0, Body::Metrics(sums));
    comm.send(
        0,
        Body::Counts(
            vec![
                out.users_without_recs,
                out.lines,
                lsh_counts[0],
                lsh_counts[1],
                lsh_counts[2],
                lsh_counts[3],
            ]
            .into_iter()
            .chain(cand_hist)
            .collect(),
        ),
    );
    let mut hist = vec![0u64; crate::report::BINS];
    let mut all = Vec::new();
    let (mut without, mut lines) = (0, 0);
    let mut lc = [0u64; 4];
    for (_, b) in comm.exchange(worker, "recommend: metrics")? {
        match b {
            Body::Metrics(mut m) => all.append(&mut m),
            Body::Counts(c) => {
                without += c[0];
                lines += c[1];
                lc.iter_mut().zip(&c[2..]).for_each(|(a, b)| *a += b);
                hist.iter_mut().zip(&c[6..]).for_each(|(a, b)| *a += b);
            }
            _ => unreachable!(),
        }
    }
    if comm.index == 0 {
        all.sort_by_key(|p| p.0);
        for (tag, m) in &all {
            out.metrics[(tag >> SET_SHIFT) as usize].merge(m);
        }
        out.users_without_recs = without;
        out.lines = lines;
        if scan.is_some() {
            let per_user = lc[0] as f64 / lc[1].max(1) as f64;
            out.exact = Some(serde_json::json!({
                "candidates_per_user": per_user,
                "candidates_histogram": hist,
                "catalog_share": per_user / n.max(1) as f64,
            }));
        }
        if let Some(ix) = &index {
            let per_user = lc[0] as f64 / lc[1].max(1) as f64;
            out.lsh = Some(serde_json::json!({
                "buckets": ix.stats(),
                "candidates_per_user": per_user,
                "candidates_histogram": hist,
                "catalog_share": per_user / n.max(1) as f64,
                "recall_at_k": if lc[3] > 0 { Some(lc[2] as f64 / lc[3] as f64) } else { None },
                "recall_k": ek,
                "recall_users": (lc[3] as f64 / ek.max(1) as f64).round(),
            }));
        }
    }
    out.phases = phases;
    Ok(out)
}

/// Seconds since `clock`, which restarts.
fn lap(clock: &mut std::time::Instant) -> f64 {
    let now = std::time::Instant::now();
    let s = (now - *clock).as_secs_f64();
    *clock = now;
    s
}
