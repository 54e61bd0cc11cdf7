//! Exact scoring kernels: the fused, norm-ordered scan of a whole catalogue ([`ScanIndex`]),
//! candidate scoring, and the deterministic top-k order every mode shares.

use super::topk::Tops;

/// An item's index in the gathered catalogue ([`super::Catalog`]: `keys[i]`, `ids[i]`, row `i`
/// of `factors`), the same on every worker: what every scorer's lists hold and what
/// exclusions (`excluded[u]`, sorted) are given in.
pub type CatalogIx = usize;

/// An item's global key (`Catalog::keys[i]`, [`crate::side::key`]): the tie-break of
/// [`better`], so that no list depends on where an item sits in any array or on the layout.
pub type ItemKey = crate::side::GlobalKey;

/// An item's place in a [`ScanIndex`]'s norm order (non-increasing norm), what its panels,
/// `pos_keys` and `norms` are indexed by. It never leaves the scan: lists come back as
/// [`CatalogIx`] (as a [`Tops`] entry's item it is the plain `u32`).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ScanPos(u32);

impl ScanPos {
    /// The position as an index into the scan's position-ordered arrays.
    #[inline]
    fn ix(self) -> usize {
        self.0 as usize
    }
}

/// Deterministic order: higher score first, then smaller key.
pub fn better(a: (f32, ItemKey), b: (f32, ItemKey)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Top `k` of `scores` (by [`better`]) among indices not `excluded` (sorted), best first.
pub fn top_k(scores: &[f32], keys: &[ItemKey], excluded: &[CatalogIx], k: usize) -> Vec<CatalogIx> {
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
    /// [`ScanPos`] → catalogue index (as `u32`).
    order: Vec<u32>,
    /// [`CatalogIx`] → its position.
    pos_of: Vec<ScanPos>,
    /// Key of the item at each position (ties break by smaller key).
    pos_keys: Vec<ItemKey>,
    /// Norm of the item at each position (non-increasing), plus a trailing 0.
    norms: Vec<f32>,
    /// Panels of NR items, `d × NR` each (dimension-major), zero-padded.
    panels: Vec<f32>,
}

/// Whether the register kernel runs on this machine for dimension `d` (x86-64 with AVX2 and
/// FMA, detected at run time).
pub(super) fn kernel_usable(d: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::als::kernels::simd::usable(d)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = d;
        false
    }
}

/// Users per microkernel call.
pub const MR: usize = 6;
/// Items per panel.
pub const NR: usize = 16;
/// Panels per tile between pruning checks: 64 items. Users stop after ~1800 items on average
/// at full scale, so a check every 64 lets each stop close to where it can; measured against
/// 16 to 1024 items per tile (docs/BENCHMARKS.md), 64 was fastest.
const TILE_PANELS: usize = 4;
/// Panels every user scores first, pushed above a floor ([`Tops::push_opening`]): 256 items.
pub(super) const OPEN_PANELS: usize = 16;

impl ScanIndex {
    /// Builds the index of the items with global `keys` (ties) and row-major `factors`; `None`
    /// unless the AVX2+FMA kernel runs for this `d`.
    pub fn build(keys: &[ItemKey], factors: &[f32], d: usize) -> Option<ScanIndex> {
        kernel_usable(d).then(|| Self::build_any(keys, factors, d))
    }

    fn build_any(keys: &[ItemKey], factors: &[f32], d: usize) -> ScanIndex {
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
        let mut pos_of = vec![ScanPos(0); n];
        for (p, &i) in order.iter().enumerate() {
            pos_of[i as usize] = ScanPos(p as u32);
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
        excluded: &[Vec<CatalogIx>],
        k: usize,
    ) -> Vec<Vec<(f32, CatalogIx)>> {
        self.top_k_scored(users, excluded, k).0
    }

    /// [`ScanIndex::top_k`], and per user how many items it scored before the Cauchy–Schwarz
    /// stop (what the report shows as exact mode's candidates).
    pub fn top_k_scored(
        &self,
        users: &[f32],
        excluded: &[Vec<CatalogIx>],
        k: usize,
    ) -> (Vec<Vec<(f32, CatalogIx)>>, Vec<u32>) {
        let d = self.d;
        let b = users.len() / d;
        let mut lists = Tops::new(b, k);
        if k == 0 || self.n == 0 {
            return (vec![Vec::new(); b], vec![0; b]);
        }
        let ex = self.excluded_positions(excluded);
        let unorm: Vec<f32> = users
            .chunks_exact(d)
            .map(|u| fma_dot(u, u).sqrt())
            .collect();
        let np = self.n.div_ceil(NR);
        let mut active: Vec<usize> = (0..b).collect();
        let zero = vec![0.0f32; d];
        // The opening: the first panels as one buffer per user, pushed above a floor
        // (`Tops::push_opening`); then tiles with the Cauchy–Schwarz stop.
        let open = if k <= NR { OPEN_PANELS.min(np) } else { 0 };
        let mut scored = vec![(open * NR).min(self.n) as u32; b];
        if open > 0 {
            self.score_opening_panels(users, &zero, &active, &ex, open, &mut lists);
            self.retire_finished(&mut active, &lists, &unorm, open);
        }
        let mut t0 = open;
        while t0 < np && !active.is_empty() {
            let t1 = (t0 + TILE_PANELS).min(np);
            for &u in &active {
                scored[u] = (t1 * NR).min(self.n) as u32;
            }
            for grp in active.chunks(MR) {
                let rows = Self::user_rows(users, grp, d, &zero);
                self.score_tile(rows, grp, &ex, t0..t1, &mut lists);
            }
            t0 = t1;
            self.retire_finished(&mut active, &lists, &unorm, t0);
        }
        (self.catalogue_lists(&lists, b), scored)
    }

    /// Every user's excluded catalogue indices as scan positions, sorted (the scan looks
    /// them up by position).
    fn excluded_positions(&self, excluded: &[Vec<CatalogIx>]) -> Vec<Vec<ScanPos>> {
        excluded
            .iter()
            .map(|e| {
                let mut v: Vec<ScanPos> = e.iter().map(|&i| self.pos_of[i]).collect();
                v.sort_unstable();
                v
            })
            .collect()
    }

    /// Row pointers of the users `grp` (at most [`MR`]); unused slots point at `zero`.
    #[inline]
    fn user_rows(users: &[f32], grp: &[usize], d: usize, zero: &[f32]) -> [*const f32; MR] {
        let mut rows = [zero.as_ptr(); MR];
        for (slot, &u) in rows.iter_mut().zip(grp) {
            *slot = users[u * d..].as_ptr();
        }
        rows
    }

    /// Scores the first `open` panels for every active user and pushes them as one buffer per
    /// user ([`Tops::push_opening`]), padding and excluded positions set to −∞.
    fn score_opening_panels(
        &self,
        users: &[f32],
        zero: &[f32],
        active: &[usize],
        ex: &[Vec<ScanPos>],
        open: usize,
        lists: &mut Tops,
    ) {
        let d = self.d;
        let mut buf = Vec::new();
        for grp in active.chunks(MR) {
            let rows = Self::user_rows(users, grp, d, zero);
            // SAFETY: as in `score_tile`.
            unsafe { score_opening(rows, &self.panels, d, open, &mut buf) };
            for (g, &u) in grp.iter().enumerate() {
                let ub = &mut buf[g * open..(g + 1) * open];
                // Padding past the catalogue and seen items never count or rank.
                for p in self.n.min(open * NR)..open * NR {
                    ub[p / NR][p % NR] = f32::NEG_INFINITY;
                }
                for p in ex[u].iter().map(|p| p.ix()).take_while(|&p| p < open * NR) {
                    ub[p / NR][p % NR] = f32::NEG_INFINITY;
                }
                lists.push_opening(u, ub, |p| (self.pos_keys[p], p as u32));
            }
        }
    }

    /// Scores panels `pans` for the users `grp` (at most [`MR`], their rows at `rows`) and
    /// pushes every score that can enter a user's list; the kernel compares with the
    /// thresholds in registers.
    #[inline]
    fn score_tile(
        &self,
        rows: [*const f32; MR],
        grp: &[usize],
        ex: &[Vec<ScanPos>],
        pans: std::ops::Range<usize>,
        lists: &mut Tops,
    ) {
        let d = self.d;
        for pan in pans {
            let mut out = [[0.0f32; NR]; MR];
            let mut thr = [f32::INFINITY; MR];
            for (t, &u) in thr.iter_mut().zip(grp) {
                *t = lists.threshold(u);
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
                        && sc >= lists.threshold(u)
                        && ex[u].binary_search(&ScanPos(p as u32)).is_err()
                    {
                        lists.push(u, sc, self.pos_keys[p], p as u32);
                    }
                }
            }
        }
    }

    /// Drops the users whose k-th best beats every item from panel `next` on
    /// (Cauchy–Schwarz: `‖u‖·max‖i‖`, with a margin for rounding).
    fn retire_finished(&self, active: &mut Vec<usize>, lists: &Tops, unorm: &[f32], next: usize) {
        let rest = self.norms[(next * NR).min(self.n)];
        active.retain(|&u| {
            !(lists.full(u)
                && lists.threshold(u) > unorm[u] * rest * (1.0 + 1e-4) + f32::MIN_POSITIVE)
        });
    }

    /// The `b` users' lists with scan positions turned back into catalogue indices.
    fn catalogue_lists(&self, lists: &Tops, b: usize) -> Vec<Vec<(f32, CatalogIx)>> {
        (0..b)
            .map(|u| {
                lists
                    .list(u)
                    .map(|(s, _, p)| (s, self.order[ScanPos(p).ix()] as CatalogIx))
                    .collect()
            })
            .collect()
    }
}

/// `a·b` as one fused multiply-add chain in dimension order (what the scan kernel computes).
pub fn fma_dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the fma feature was just detected.
            return unsafe { fma_dot_fma(a, b) };
        }
    }
    fma_chain(a, b)
}

fn fma_chain(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .fold(0.0f32, |acc, (&x, &y)| x.mul_add(y, acc))
}

/// [`fma_chain`] compiled with the `fma` feature: the same correctly rounded operations as one
/// instruction each instead of a libm call each.
///
/// # Safety
/// The `fma` target feature must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn fma_dot_fma(a: &[f32], b: &[f32]) -> f32 {
    fma_chain(a, b)
}

/// A few vectors packed for the register kernel, to take every user's dot product with all of
/// them (LSH hyperplanes): `MR` users × `NR` vectors per kernel call instead of one chain at a
/// time.
pub struct Packed {
    d: usize,
    n: usize,
    panels: Vec<f32>,
}

impl Packed {
    /// Packs `n` vectors given as the first `d` of every `stride` floats of `vectors`; `None`
    /// unless the AVX2+FMA kernel runs for this `d`.
    pub fn new(vectors: &[f32], stride: usize, d: usize) -> Option<Packed> {
        if !kernel_usable(d) {
            return None;
        }
        let n = vectors.len() / stride.max(1);
        let mut panels = vec![0.0f32; n.div_ceil(NR) * d * NR];
        for j in 0..n {
            let (pan, lane) = (j / NR, j % NR);
            for k in 0..d {
                panels[pan * d * NR + k * NR + lane] = vectors[j * stride + k];
            }
        }
        Some(Packed { d, n, panels })
    }

    /// `out[u * n + j]` = user `u` · vector `j`, each exactly [`fma_dot`] (rows of `users`).
    pub fn dots(&self, users: &[f32], out: &mut Vec<f32>) {
        let (d, n) = (self.d, self.n);
        let b = users.len() / d;
        out.clear();
        out.resize(b * n, 0.0);
        let zero = vec![0.0f32; d];
        let all = [f32::NEG_INFINITY; MR];
        for u0 in (0..b).step_by(MR) {
            let g = (b - u0).min(MR);
            let mut rows = [zero.as_ptr(); MR];
            for (j, slot) in rows.iter_mut().enumerate().take(g) {
                *slot = users[(u0 + j) * d..].as_ptr();
            }
            for pan in 0..n.div_ceil(NR) {
                let mut tile = [[0.0f32; NR]; MR];
                // SAFETY: `new` only succeeds where the kernel is usable for d; every row
                // pointer addresses d floats; the panel holds d × NR floats. A threshold of
                // -inf stores every row whose scores are not all NaN.
                unsafe {
                    scan_kernel(
                        rows,
                        &self.panels[pan * d * NR..(pan + 1) * d * NR],
                        d,
                        &all,
                        &mut tile,
                    )
                };
                let lanes = (n - pan * NR).min(NR);
                for (j, t) in tile.iter().enumerate().take(g) {
                    let at = (u0 + j) * n + pan * NR;
                    out[at..at + lanes].copy_from_slice(&t[..lanes]);
                }
            }
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

/// Scores the first `open` panels of `panels` (`d × NR` floats each) for the users `rows`
/// into `buf`: `open` panels of NR scores per user, user after user (MR users).
///
/// # Safety
/// As [`scan_kernel`]: AVX2 and FMA available, each `rows[g]` pointing at `d` floats.
pub(super) unsafe fn score_opening(
    rows: [*const f32; MR],
    panels: &[f32],
    d: usize,
    open: usize,
    buf: &mut Vec<[f32; NR]>,
) {
    buf.clear();
    buf.resize(MR * open, [0.0; NR]);
    // A -inf threshold makes the kernel write every row's scores.
    let all = [f32::NEG_INFINITY; MR];
    for pan in 0..open {
        let mut out = [[0.0f32; NR]; MR];
        scan_kernel(
            rows,
            &panels[pan * d * NR..(pan + 1) * d * NR],
            d,
            &all,
            &mut out,
        );
        for (g, o) in out.iter().enumerate() {
            buf[g * open + pan] = *o;
        }
    }
}

/// Scores MR users × NR items (`panel` is `d × NR`) into `out` and returns the bit mask of
/// users with at least one score ≥ their threshold.
///
/// # Safety
/// AVX2 and FMA must be available; each `rows[g]` points at `d` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn scan_kernel(
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
pub(super) unsafe fn scan_kernel(
    _rows: [*const f32; MR],
    _panel: &[f32],
    _d: usize,
    _thr: &[f32; MR],
    _out: &mut [[f32; NR]; MR],
) -> u32 {
    unreachable!("ScanIndex::build returns None off x86-64")
}

/// A random test value: coarse ones (five levels) make ties; fine ones have varied norms.
#[cfg(test)]
pub(super) fn test_value(r: &mut crate::ids::SplitMix, coarse: bool) -> f32 {
    if coarse {
        (r.below(5) as f32 - 2.0) / 2.0
    } else {
        r.next_normal() as f32 * (0.2 + r.next_f64() as f32)
    }
}

#[cfg(test)]
mod tests;
