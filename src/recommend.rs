//! Top-K recommendations for every user, without the items they already have, and their
//! evaluation on held-out pairs.
//!
//! `exact` gathers all item vectors on every worker (one block per worker, all-gather) and
//! scores each worker's users in blocks with one GEMM per block; `popular` ranks items by
//! interaction count. Each worker writes the lines of the users it owns.

use crate::cluster::{Body, Comm, CommError};
use crate::eval::{self, Metrics};
use crate::ids::{mix64, RawId};
use crate::job::{Job, Mode};
use crate::lsh::Index;
use crate::side::Side;
use faer::{Accum, MatMut, MatRef, Par};
use std::collections::HashMap;
use timely::worker::Worker;

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
    /// This worker's part file (`user<TAB>item<TAB>score<TAB>rank`).
    pub tsv: Vec<u8>,
    /// Lines in it.
    pub lines: u64,
    /// Users with no candidate at all (no line written).
    pub users_without_recs: u64,
    /// Evaluation sums (whole job on worker 0 after the merge, summed in vshard order).
    pub metrics: Metrics,
    /// LSH: this worker's bucket part file and its line count.
    pub buckets: Option<(Vec<u8>, u64)>,
    /// Similar items: this worker's part file (`item<TAB>other<TAB>cosine<TAB>rank`) and lines.
    pub similar: Option<(Vec<u8>, u64)>,
    /// LSH: bucket statistics, candidates scored per user and recall against exact top-k
    /// (complete on worker 0).
    pub lsh: Option<serde_json::Value>,
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
    let block = (4_000_000 / n.max(1)).clamp(1, 256);
    let mut scores = vec![0.0f32; block * n];
    let mut mark = vec![u32::MAX; n];
    let mut r0 = 0;
    while r0 < items.rows() {
        let r1 = (r0 + block).min(items.rows());
        let b = r1 - r0;
        if index.is_none() {
            let x = MatRef::from_row_major_slice(&mine[r0 * d..r1 * d], b, d);
            let y = MatRef::from_row_major_slice(&all, n, d);
            let s = MatMut::from_row_major_slice_mut(&mut scores[..b * n], b, n);
            faer::linalg::matmul::matmul(s, Accum::Replace, x, y.transpose(), 1.0f32, Par::Seq);
        }
        for r in r0..r1 {
            let me = cat.index(items.key_of(r)).expect("own item in catalogue");
            let x = &mine[r * d..(r + 1) * d];
            let best: Vec<(f32, usize)> = match index {
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
            for (rank, (score, i)) in best.into_iter().enumerate() {
                push_line(&mut out, &items.ids[r], &cat.ids[i], score, rank + 1);
                lines += 1;
            }
        }
        r0 = r1;
    }
    (out, lines)
}

/// Appends `user<TAB>item<TAB>score<TAB>rank\n` (the recs line) without a `fmt` round trip for
/// the integers: 10 M lines per run make this a hot path.
pub fn push_line(out: &mut Vec<u8>, user: &RawId, item: &RawId, score: f32, rank: usize) {
    push_id(out, user);
    out.push(b'\t');
    push_id(out, item);
    out.push(b'\t');
    // The shortest text that reads back as the same f32 (std's Display).
    let _ = std::io::Write::write_fmt(out, format_args!("{score}"));
    out.push(b'\t');
    push_u64(out, rank as u64);
    out.push(b'\n');
}

fn push_id(out: &mut Vec<u8>, id: &RawId) {
    match id {
        RawId::Num(n) => push_u64(out, *n),
        RawId::Str(s) => out.extend_from_slice(s.as_bytes()),
    }
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[at..]);
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn unit(h: u64) -> f64 {
    (mix64(h) >> 11) as f64 / (1u64 << 53) as f64
}

/// Deterministic order: higher score first, then smaller key.
fn better(a: (f32, u64), b: (f32, u64)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Top `k` of `scores` (by [`better`]) among indices not `excluded` (sorted), best first.
pub fn top_k(scores: &[f32], keys: &[u64], excluded: &[usize], k: usize) -> Vec<usize> {
    let mut cand: Vec<usize> = Vec::with_capacity(scores.len());
    let mut e = excluded.iter().peekable();
    for i in 0..scores.len() {
        if e.peek() == Some(&&i) {
            e.next();
            continue;
        }
        cand.push(i);
    }
    let cmp = |&a: &usize, &b: &usize| better((scores[a], keys[a]), (scores[b], keys[b]));
    if cand.len() > k && k > 0 {
        cand.select_nth_unstable_by(k - 1, cmp);
        cand.truncate(k);
    }
    cand.sort_unstable_by(cmp);
    cand.truncate(k);
    cand
}

/// Exact maximum-inner-product top-k over the whole catalogue without a score matrix.
///
/// Items are reordered by decreasing norm and packed in panels of [`NR`] items, dimension-major,
/// so a register-blocked kernel scores [`MR`] users × [`NR`] items at a time and compares the
/// scores with each user's current k-th best while they are still in registers; only scores
/// that can enter a user's list leave them. Between tiles of items a user stops as soon as its
/// k-th best score exceeds `‖u‖·max‖i‖` over the items left (Cauchy–Schwarz, with a margin for
/// rounding), which is exact. Every score is one fused multiply-add chain over the dimensions
/// in order, so it does not depend on blocking, tiles or the worker layout.
pub struct ScanIndex {
    n: usize,
    d: usize,
    /// Position (norm order) → catalogue index.
    order: Vec<u32>,
    /// Catalogue index → position.
    pos_of: Vec<u32>,
    /// Key of the item at each position (ties break by smaller key).
    pos_keys: Vec<u64>,
    /// Norm of the item at each position (non-increasing), plus a trailing 0.
    norms: Vec<f32>,
    /// Panels of NR items, `d × NR` each (dimension-major), zero-padded.
    panels: Vec<f32>,
}

/// Users per microkernel call.
pub const MR: usize = 6;
/// Items per panel.
pub const NR: usize = 16;
/// Panels per tile between pruning checks (1024 items: 256 KiB at d = 64, inside L2).
const TILE_PANELS: usize = 64;

impl ScanIndex {
    /// Builds the index of the items with global `keys` (ties) and row-major `factors`; `None`
    /// unless the AVX2+FMA kernel runs for this `d`.
    pub fn build(keys: &[u64], factors: &[f32], d: usize) -> Option<ScanIndex> {
        #[cfg(target_arch = "x86_64")]
        {
            if !crate::als::kernels::simd::usable(d) {
                return None;
            }
            Some(Self::build_any(keys, factors, d))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (keys, factors, d);
            None
        }
    }

    fn build_any(keys: &[u64], factors: &[f32], d: usize) -> ScanIndex {
        let n = keys.len();
        let norm =
            |i: usize| fma_dot(&factors[i * d..(i + 1) * d], &factors[i * d..(i + 1) * d]).sqrt();
        let inorm: Vec<f32> = (0..n).map(norm).collect();
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_unstable_by(|&a, &b| {
            inorm[b as usize]
                .total_cmp(&inorm[a as usize])
                .then(a.cmp(&b))
        });
        let mut pos_of = vec![0u32; n];
        for (p, &i) in order.iter().enumerate() {
            pos_of[i as usize] = p as u32;
        }
        let pos_keys = order.iter().map(|&i| keys[i as usize]).collect();
        let mut norms: Vec<f32> = order.iter().map(|&i| inorm[i as usize]).collect();
        norms.push(0.0);
        let np = n.div_ceil(NR);
        let mut panels = vec![0.0f32; np * d * NR];
        for (p, &i) in order.iter().enumerate() {
            let (pan, lane) = (p / NR, p % NR);
            let v = &factors[i as usize * d..(i as usize + 1) * d];
            for (k, &x) in v.iter().enumerate() {
                panels[pan * d * NR + k * NR + lane] = x;
            }
        }
        ScanIndex {
            n,
            d,
            order,
            pos_of,
            pos_keys,
            norms,
            panels,
        }
    }

    /// For each user (rows of `users`, row-major `d` wide), its `k` best catalogue items by
    /// [`better`] (score, then smaller key), excluding `excluded[u]` (sorted catalogue
    /// indices); best first, with scores.
    pub fn top_k(
        &self,
        users: &[f32],
        excluded: &[Vec<usize>],
        k: usize,
    ) -> Vec<Vec<(f32, usize)>> {
        let d = self.d;
        let b = users.len() / d;
        let mut lists: Vec<TopK> = (0..b).map(|_| TopK::new(k)).collect();
        if k == 0 || self.n == 0 {
            return vec![Vec::new(); b];
        }
        // Excluded items as positions, sorted, per user.
        let ex: Vec<Vec<u32>> = excluded
            .iter()
            .map(|e| {
                let mut v: Vec<u32> = e.iter().map(|&i| self.pos_of[i]).collect();
                v.sort_unstable();
                v
            })
            .collect();
        let unorm: Vec<f32> = users
            .chunks_exact(d)
            .map(|u| fma_dot(u, u).sqrt())
            .collect();
        let np = self.n.div_ceil(NR);
        let mut active: Vec<usize> = (0..b).collect();
        let zero = vec![0.0f32; d];
        let mut t0 = 0;
        while t0 < np && !active.is_empty() {
            let t1 = (t0 + TILE_PANELS).min(np);
            for grp in active.chunks(MR) {
                let mut rows = [zero.as_ptr(); MR];
                for (slot, &u) in rows.iter_mut().zip(grp) {
                    *slot = users[u * d..].as_ptr();
                }
                for pan in t0..t1 {
                    let mut out = [[0.0f32; NR]; MR];
                    let mut thr = [f32::INFINITY; MR];
                    for (t, &u) in thr.iter_mut().zip(grp) {
                        *t = lists[u].threshold();
                    }
                    // SAFETY: `build` only succeeds where simd::usable(d) holds; every row
                    // pointer addresses d floats; the panel holds d × NR floats.
                    let hit = unsafe {
                        scan_kernel(
                            rows,
                            &self.panels[pan * d * NR..(pan + 1) * d * NR],
                            d,
                            &thr,
                            &mut out,
                        )
                    };
                    if hit == 0 {
                        continue;
                    }
                    for (g, &u) in grp.iter().enumerate() {
                        if hit & (1 << g) == 0 {
                            continue;
                        }
                        for (lane, &sc) in out[g].iter().enumerate() {
                            let p = pan * NR + lane;
                            if p < self.n
                                && sc >= lists[u].threshold()
                                && ex[u].binary_search(&(p as u32)).is_err()
                            {
                                lists[u].push(sc, self.pos_keys[p], p as u32);
                            }
                        }
                    }
                }
            }
            t0 = t1;
            // Users whose k-th best beats every item left stop here.
            let rest = self.norms[(t0 * NR).min(self.n)];
            active.retain(|&u| {
                let l = &lists[u];
                !(l.full() && l.threshold() > unorm[u] * rest * (1.0 + 1e-4) + f32::MIN_POSITIVE)
            });
        }
        lists
            .into_iter()
            .map(|l| {
                l.best
                    .into_iter()
                    .map(|(s, _, p)| (s, self.order[p as usize] as usize))
                    .collect()
            })
            .collect()
    }
}

/// A user's best `k` so far, best first.
struct TopK {
    k: usize,
    best: Vec<(f32, u64, u32)>,
}

impl TopK {
    fn new(k: usize) -> TopK {
        TopK {
            k,
            best: Vec::with_capacity(k + 1),
        }
    }
    fn full(&self) -> bool {
        self.best.len() >= self.k
    }
    /// Scores below this cannot enter (ties may, by key).
    fn threshold(&self) -> f32 {
        if self.full() {
            self.best[self.k - 1].0
        } else {
            f32::NEG_INFINITY
        }
    }
    fn push(&mut self, s: f32, key: u64, p: u32) {
        let at = self
            .best
            .partition_point(|&(bs, bk, _)| better((bs, bk), (s, key)).is_lt());
        if at < self.k {
            self.best.insert(at, (s, key, p));
            self.best.truncate(self.k);
        }
    }
}

/// `a·b` as one fused multiply-add chain in dimension order (what [`scan_kernel`] computes).
pub fn fma_dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .fold(0.0f32, |acc, (&x, &y)| x.mul_add(y, acc))
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
    best: &mut TopK,
    x: &[f32],
    nx: f32,
    cand: &mut Vec<usize>,
    inorm: &[f32],
    cat: &Catalog,
    buf: &mut Vec<f32>,
) {
    let floor = best.threshold();
    cand.retain(|&i| !(best.full() && nx * inorm[i] * (1.0 + 1e-4) < floor));
    score_candidates(x, &cat.factors, x.len(), cand, buf);
    for (&i, &sc) in cand.iter().zip(buf.iter()) {
        if sc >= best.threshold() {
            best.push(sc, cat.keys[i], i as u32);
        }
    }
}

/// `x·y_i` for every candidate `i` (rows of `factors`, `d` wide) into `out`, each exactly
/// [`fma_dot`]: eight candidates at a time as eight independent chains, so the FMA latency is
/// hidden (one chain per candidate is latency-bound, and without the `fma` feature a libm call).
pub fn score_candidates(x: &[f32], factors: &[f32], d: usize, cand: &[usize], out: &mut Vec<f32>) {
    out.clear();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the fma feature was just detected.
            unsafe { score_candidates_fma(x, factors, d, cand, out) };
            return;
        }
    }
    out.extend(
        cand.iter()
            .map(|&i| fma_dot(x, &factors[i * d..(i + 1) * d])),
    );
}

/// # Safety
/// The `fma` target feature must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn score_candidates_fma(
    x: &[f32],
    factors: &[f32],
    d: usize,
    cand: &[usize],
    out: &mut Vec<f32>,
) {
    let x = &x[..d];
    let mut groups = cand.chunks_exact(8);
    for g in groups.by_ref() {
        let rows: [&[f32]; 8] = std::array::from_fn(|j| &factors[g[j] * d..(g[j] + 1) * d]);
        let mut acc = [0.0f32; 8];
        for k in 0..d {
            for j in 0..8 {
                acc[j] = x[k].mul_add(rows[j][k], acc[j]);
            }
        }
        out.extend_from_slice(&acc);
    }
    for &i in groups.remainder() {
        out.push(fma_dot(x, &factors[i * d..(i + 1) * d]));
    }
}

/// Scores MR users × NR items (`panel` is `d × NR`) into `out` and returns the bit mask of
/// users with at least one score ≥ their threshold.
///
/// # Safety
/// AVX2 and FMA must be available; each `rows[g]` points at `d` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scan_kernel(
    rows: [*const f32; MR],
    panel: &[f32],
    d: usize,
    thr: &[f32; MR],
    out: &mut [[f32; NR]; MR],
) -> u32 {
    use std::arch::x86_64::*;
    assert!(panel.len() >= d * NR);
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    let pp = panel.as_ptr();
    for k in 0..d {
        let y0 = _mm256_loadu_ps(pp.add(k * NR));
        let y1 = _mm256_loadu_ps(pp.add(k * NR + 8));
        for g in 0..MR {
            let u = _mm256_broadcast_ss(&*rows[g].add(k));
            acc[g][0] = _mm256_fmadd_ps(u, y0, acc[g][0]);
            acc[g][1] = _mm256_fmadd_ps(u, y1, acc[g][1]);
        }
    }
    let mut hit = 0u32;
    for g in 0..MR {
        let t = _mm256_set1_ps(thr[g]);
        let m = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(acc[g][0], t))
            | _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(acc[g][1], t));
        if m != 0 {
            hit |= 1 << g;
            _mm256_storeu_ps(out[g].as_mut_ptr(), acc[g][0]);
            _mm256_storeu_ps(out[g].as_mut_ptr().add(8), acc[g][1]);
        }
    }
    hit
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn scan_kernel(
    _rows: [*const f32; MR],
    _panel: &[f32],
    _d: usize,
    _thr: &[f32; MR],
    _out: &mut [[f32; NR]; MR],
) -> u32 {
    unreachable!("ScanIndex::build returns None off x86-64")
}

/// Recommends for this worker's users and evaluates against `test` (user id, item key).
pub fn recommend(
    worker: &mut Worker,
    comm: &mut Comm,
    job: &Job,
    users: &Side,
    items: &Side,
    test: &[(RawId, u64)],
) -> Result<Recs, CommError> {
    let k = job.recommend.k;
    let ek = job.eval.k;
    let cat = gather_items(worker, comm, items)?;
    let n = cat.keys.len();
    let d = users.dim;
    // Held-out items per user row, as catalogue indices.
    let row_of: HashMap<&RawId, usize> = users
        .ids
        .iter()
        .enumerate()
        .map(|(r, id)| (id, r))
        .collect();
    let mut tests: HashMap<usize, Vec<usize>> = HashMap::new();
    for (u, ik) in test {
        if let Some(&r) = row_of.get(u) {
            let e = tests.entry(r).or_default();
            if let Some(i) = cat.index(*ik) {
                e.push(i);
            } else {
                e.push(usize::MAX); // an item with no training data: never recommended
            }
        }
    }
    let popular: Vec<usize> = {
        let mut p: Vec<usize> = (0..n).collect();
        p.sort_unstable_by(|&a, &b| {
            cat.degrees[b]
                .cmp(&cat.degrees[a])
                .then(cat.keys[a].cmp(&cat.keys[b]))
        });
        p
    };
    let auc_rate = (20_000.0 / n.max(1) as f64).min(1.0);
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
        user_codes = ix.user_buckets(worker, comm, &users.factors, |dirs, n| {
            let none = vec![Vec::new(); dirs.len() / d.max(1)];
            match &full_scan {
                Some(s) => s
                    .top_k(dirs, &none, n)
                    .into_iter()
                    .map(|l| l.into_iter().map(|(_, i)| i as u32).collect())
                    .collect(),
                None => dirs
                    .chunks_exact(d.max(1))
                    .map(|q| {
                        let sc: Vec<f32> = (0..cat.keys.len())
                            .map(|i| fma_dot(q, &cat.factors[i * d..(i + 1) * d]))
                            .collect();
                        top_k(&sc, &cat.keys, &[], n)
                            .into_iter()
                            .map(|i| i as u32)
                            .collect()
                    })
                    .collect(),
            }
        })?;
    }
    let index = index;
    // Users sampled for LSH recall: a hash-based share, the same whatever the worker count.
    comm.broadcast(Body::Counts(vec![users.rows() as u64]));
    let mut total_users = 0u64;
    for (_, b) in comm.exchange(worker, "recommend: count users")? {
        if let Body::Counts(c) = b {
            total_users += c[0];
        }
    }
    let recall_rate = job.eval.recall_sample as f64 / total_users.max(1) as f64;
    let lsh_n = if index.is_some() { n } else { 0 };
    let mut mark = vec![u32::MAX; lsh_n];
    let mut cand: Vec<usize> = Vec::new();
    let mut cand_buf: Vec<f32> = Vec::new();
    let mut cand_scores = vec![0.0f32; lsh_n];
    // candidates scored, users, recall hits, recall total
    let mut lsh_counts = [0u64; 4];
    // Users by candidates scored (log2 bins, for the report).
    let mut cand_hist = vec![0u64; crate::report::BINS];
    let mut out = Recs {
        tsv: Vec::new(),
        lines: 0,
        users_without_recs: 0,
        metrics: Metrics::default(),
        buckets: index
            .as_ref()
            .map(|ix| ix.bucket_lines(&cat.ids, comm.index, comm.peers)),
        similar: None,
        lsh: None,
    };
    if job.similar.k > 0 {
        let ix = index.as_ref().filter(|_| job.lsh.tables > 0);
        out.similar = Some(similar_items(&cat, items, ix, job.similar.k));
    }
    // Per-vshard sums, so the totals do not depend on which worker summed what.
    let mut parts: Vec<(u32, Metrics)> = users
        .vshards
        .iter()
        .map(|&v| (v, Metrics::default()))
        .collect();
    // Exact mode scans with the fused kernel where it runs (no score matrix); the full score
    // row is then computed only for users sampled for AUC.
    let scan = full_scan.as_ref().filter(|_| mode == Mode::Exact);
    // LSH mode with the fused kernel: the head list is one dense block per user block, scored
    // like exact mode; bucket candidates are scored one by one and merged into the same lists.
    // Sampled users' exact top-k (LSH recall) comes from a scan of the whole catalogue.
    let head_scan = index.as_ref().and_then(|ix| {
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
    let block = if scan.is_some() || head_scan.is_some() {
        192
    } else {
        (4_000_000 / n.max(1)).clamp(1, 256)
    };
    let mut scores = vec![0.0f32; if scan.is_some() { 0 } else { block * n }];
    let mut auc_row = vec![0.0f32; if scan.is_some() { n } else { 0 }];
    // Catalogue index of each gathered item (u32::MAX: not in the catalogue), looked up once.
    let cat_of: Vec<u32> = users
        .gathered_keys
        .iter()
        .map(|&k| cat.index(k).map_or(u32::MAX, |i| i as u32))
        .collect();
    let mut r0 = 0;
    while r0 < users.rows() {
        let r1 = (r0 + block).min(users.rows());
        let b = r1 - r0;
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
        let scanned = scan.as_ref().map(|ix| {
            let none = vec![Vec::new(); b];
            let ex = if job.recommend.exclude_seen {
                &seen_block
            } else {
                &none
            };
            ix.top_k(&users.factors[r0 * d..r1 * d], ex, k.max(ek))
        });
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
        if scan.is_none() && (mode == Mode::Exact || (mode == Mode::Popular && !tests.is_empty())) {
            let x = MatRef::from_row_major_slice(&users.factors[r0 * d..r1 * d], b, d);
            let y = MatRef::from_row_major_slice(&cat.factors, n, d);
            let s = MatMut::from_row_major_slice_mut(&mut scores[..b * n], b, n);
            faer::linalg::matmul::matmul(s, Accum::Replace, x, y.transpose(), 1.0f32, Par::Seq);
        }
        for r in r0..r1 {
            let seen = &seen_block[r - r0];
            let row: &[f32] = if scanned.is_some() {
                &[]
            } else {
                &scores[(r - r0) * n..(r - r0 + 1) * n]
            };
            let excluded: &[usize] = if job.recommend.exclude_seen {
                seen
            } else {
                &[]
            };
            let list: Vec<usize> = match (mode, &index) {
                (Mode::Popular, _) => popular
                    .iter()
                    .copied()
                    .filter(|i| excluded.binary_search(i).is_err())
                    .take(k.max(ek))
                    .collect(),
                (Mode::Lsh, Some(ix)) if head_scan.is_some() => {
                    let (_, sub_of, inorm) = head_scan.as_ref().expect("checked");
                    let full = full_scan.as_ref().expect("built with head_scan");
                    let x = users.row(r);
                    let kk = k.max(ek);
                    let mut best = TopK::new(kk);
                    let heads = head_lists.as_ref().expect("built with head_scan");
                    for &(sc, s) in &heads[r - r0] {
                        let i = ix.head[s] as usize;
                        best.push(sc, cat.keys[i], i as u32);
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
                        if best.full() && nx * m * (1.0 + 1e-4) < best.threshold() {
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
                    for &(sc, _, i) in &best.best {
                        cand_scores[i as usize] = sc;
                    }
                    if unit(users.ids[r].stable_hash() ^ job.eval.seed ^ 0x5eed) < recall_rate {
                        let exact = full.top_k(x, std::slice::from_ref(&excluded.to_vec()), ek);
                        lsh_counts[2] += exact[0]
                            .iter()
                            .filter(|e| best.best.iter().take(ek).any(|b| b.2 as usize == e.1))
                            .count() as u64;
                        lsh_counts[3] += exact[0].len() as u64;
                    }
                    best.best.iter().map(|b| b.2 as usize).collect()
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
                    for &(sc, _, i) in &best {
                        cand_scores[i] = sc;
                    }
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
                    best.into_iter().map(|b| b.2).collect()
                }
                _ => match &scanned {
                    Some(l) => l[r - r0].iter().map(|p| p.1).collect(),
                    None => top_k(row, &cat.keys, excluded, k.max(ek)),
                },
            };
            if list.is_empty() && k > 0 {
                out.users_without_recs += 1;
            }
            for (rank, &i) in list.iter().take(k).enumerate() {
                let score = match mode {
                    Mode::Popular => cat.degrees[i] as f32,
                    Mode::Lsh => cand_scores[i],
                    Mode::Exact => match &scanned {
                        Some(l) => l[r - r0][rank].0,
                        None => row[i],
                    },
                };
                push_line(&mut out.tsv, &users.ids[r], &cat.ids[i], score, rank + 1);
                out.lines += 1;
            }
            if let Some(t) = tests.get(&r) {
                let j = users.starts.partition_point(|&s| s <= r) - 1;
                let m = &mut parts[j].1;
                let keys: Vec<u64> = list.iter().map(|&i| i as u64).collect();
                let tk: Vec<u64> = t.iter().map(|&i| i as u64).collect();
                m.add_user(ek, &keys, &tk);
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
        r0 = r1;
    }
    comm.send(0, Body::Metrics(parts));
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
        all.iter().for_each(|(_, m)| out.metrics.merge(m));
        out.users_without_recs = without;
        out.lines = lines;
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
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SplitMix;

    /// The fused scan (norm order, pruning, register kernel) against a naive full sort of the
    /// same scores, with ties (coarse vectors), exclusions, zero vectors and k > catalogue.
    #[test]
    fn scan_top_k_matches_naive_sort() {
        let mut r = SplitMix::new(11);
        for (n, d, coarse) in [
            (1usize, 8usize, false),
            (37, 16, true),
            (700, 64, false),
            (2100, 24, true),
            (300, 128, false),
        ] {
            let keys: Vec<u64> = (0..n as u64).map(|i| i * 7 + 3).collect();
            let val = |r: &mut SplitMix| {
                if coarse {
                    (r.below(5) as f32 - 2.0) / 2.0
                } else {
                    r.next_normal() as f32 * (0.2 + r.next_f64() as f32)
                }
            };
            let mut factors: Vec<f32> = (0..n * d).map(|_| val(&mut r)).collect();
            // Some items with zero vectors.
            for i in (0..n).step_by(13) {
                factors[i * d..(i + 1) * d].fill(0.0);
            }
            let cat = Catalog {
                keys: keys.clone(),
                ids: Vec::new(),
                degrees: vec![0; n],
                factors,
            };
            let Some(ix) = ScanIndex::build(&cat.keys, &cat.factors, d) else {
                return; // no AVX2 here: the fallback path is the old one
            };
            let nu = 50;
            let mut users: Vec<f32> = (0..nu * d).map(|_| val(&mut r)).collect();
            users[..d].fill(0.0);
            let excluded: Vec<Vec<usize>> = (0..nu)
                .map(|_| {
                    let mut e: Vec<usize> = (0..n).filter(|_| r.below(10) == 0).collect();
                    e.dedup();
                    e
                })
                .collect();
            for k in [0usize, 1, 10, n + 5] {
                let got = ix.top_k(&users, &excluded, k);
                for u in 0..nu {
                    let x = &users[u * d..(u + 1) * d];
                    let mut all: Vec<(f32, usize)> = (0..n)
                        .filter(|i| !excluded[u].contains(i))
                        .map(|i| (fma_dot(x, &cat.factors[i * d..(i + 1) * d]), i))
                        .collect();
                    all.sort_by(|a, b| better((a.0, keys[a.1]), (b.0, keys[b.1])));
                    all.truncate(k);
                    assert_eq!(got[u], all, "n={n} d={d} k={k} user {u}");
                }
            }
        }
    }

    #[test]
    fn score_candidates_equals_fma_dot_bit_for_bit() {
        let mut r = SplitMix::new(3);
        for d in [1usize, 7, 8, 64, 100] {
            let n = 50;
            let f: Vec<f32> = (0..n * d).map(|_| r.next_normal() as f32).collect();
            let x: Vec<f32> = (0..d).map(|_| r.next_normal() as f32).collect();
            let cand: Vec<usize> = (0..23).map(|j| (j * 7) % n).collect();
            let mut got = Vec::new();
            score_candidates(&x, &f, d, &cand, &mut got);
            let want: Vec<u32> = cand
                .iter()
                .map(|&i| fma_dot(&x, &f[i * d..(i + 1) * d]).to_bits())
                .collect();
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want,
                "d = {d}"
            );
        }
    }

    #[test]
    fn push_line_matches_display() {
        let ids = [
            RawId::Num(0),
            RawId::Num(7),
            RawId::Num(1234567890),
            RawId::Num(u64::MAX),
            RawId::Str("item-ü".into()),
        ];
        for u in &ids {
            for i in &ids {
                for (score, rank) in [(0.0f32, 1), (-1.5e-7, 10), (3.25, 100), (f32::MAX, 9)] {
                    let mut got = Vec::new();
                    push_line(&mut got, u, i, score, rank);
                    assert_eq!(
                        String::from_utf8(got).unwrap(),
                        format!("{u}\t{i}\t{score}\t{rank}\n")
                    );
                }
            }
        }
    }

    #[test]
    fn top_k_matches_brute_force() {
        let mut r = SplitMix::new(5);
        for n in [1usize, 5, 50, 300] {
            // Coarse scores so that ties happen; ties break by smaller key.
            let scores: Vec<f32> = (0..n).map(|_| (r.below(7) as f32) / 7.0).collect();
            let keys: Vec<u64> = (0..n as u64).map(|i| i * 3).collect();
            let excluded: Vec<usize> = (0..n).filter(|i| i % 4 == 1).collect();
            for k in [0, 1, 3, 10, 400] {
                let got = top_k(&scores, &keys, &excluded, k);
                let mut all: Vec<usize> = (0..n).filter(|i| !excluded.contains(i)).collect();
                all.sort_by(|&a, &b| {
                    scores[b]
                        .partial_cmp(&scores[a])
                        .unwrap()
                        .then(keys[a].cmp(&keys[b]))
                });
                all.truncate(k);
                assert_eq!(got, all, "n={n} k={k}");
            }
        }
    }
}
