//! The iALS++ subspace solver (Rendle, Krichene, Zhang, Koren 2021): per entity, one sweep
//! over blocks of `b` coordinates, each an exact Newton step on that block of the entity's
//! quadratic with the other coordinates fixed.
//!
//! The entity's system is `A x = r` with `A = G + λI + Σ_j (c_j − 1) y_j y_jᵀ`, `r = Σ_j c_j y_j`
//! (as [`super::kernels::Solver::solve`]). For a block B the step solves the `b × b` system
//! `A_BB δ = −(A x − r)_B`; the gradient comes from the Gram row block and the residuals
//! `s_j = x·y_j` of the entity's observed pairs, kept current after every block. A block step
//! minimises the quadratic over its coordinates, so the objective never increases; with
//! `b = d` there is one block and the step lands on the Cholesky solution. Cost per entity:
//! `O(d² + n·d·b + d·b²)` instead of Cholesky's `O(n·d² + d³)`.
//!
//! [`Block::sweep_side`] runs block by block over groups of [`GROUP`] entities rather than
//! entity by entity: each entity sees the same steps in the same order, so the result is the
//! same, but the Gram's `b × d` row block is read once per group instead of the whole `d × d`
//! Gram streaming through the cache once per entity (1 MiB at d = 512, the bound there),
//! while the group's gathered rows still fit in L2 (whole-side passes per block, as iALS++
//! runs, measured slower: every block re-fetches every pair's row from memory). With AVX2 and
//! blocks of 8..=64 a multiple of 8 (`group`), the group's Gram terms are one small GEMM and
//! its block systems are solved together, one entity per SIMD lane (`lanes`).

#[cfg(target_arch = "x86_64")]
mod avx512;
mod gram_term;
mod group;
mod lanes;

/// Block sweeps for every row of side `s` (those `only` flags, when given) against the Gram
/// and the gathered other side of `n_o` entities; returns the rows with a singular block.
pub fn solve_side(
    als: &crate::job::Als,
    n_o: u64,
    gram: &[f32],
    gathered: &[f32],
    s: &mut crate::side::Side,
    only: Option<&[bool]>,
) -> u64 {
    let lams: Vec<f32> = (0..s.rows())
        .map(|r| super::lambda_of(als, &s.conf[s.indptr[r]..s.indptr[r + 1]], n_o) as f32)
        .collect();
    let csr = (&s.indptr[..], &s.cols[..], &s.conf[..]);
    let keep = |r: usize| only.is_none_or(|m| m[r]);
    Block::new(als.factors, als.block_size)
        .relaxed(als.block_relaxation as f32)
        .sweep_side(gram, gathered, csr, &mut s.factors, &lams, keep)
}

/// Entities stepped together block by block (see the module comment).
pub const GROUP: usize = lanes::LANES;

/// Scratch for block steps of dimension `d`, blocks of `b` (the last one may be shorter).
pub struct Block {
    d: usize,
    b: usize,
    /// Each block step is `omega` times the exact Newton step (1 unless blocks are smaller
    /// than `d`: with one block the step stays the Cholesky solution).
    omega: f32,
    /// Residual predictions `s_j = x·y_j` of the pairs (one entity's, or a side's).
    s: Vec<f32>,
    /// The block's system (row-major `w × w`) and right-hand side.
    a: Vec<f32>,
    g: Vec<f32>,
    /// Scaled block rows `(c_j − 1) y_jB` for the rank-4 updates.
    coef: Vec<f32>,
    /// Whether lane-stacked group steps run (AVX2 and FMA; tests switch it off to compare).
    lanes: bool,
    /// A group's gradients (`GROUP × w`), lane-stacked systems and right-hand sides.
    grads: Vec<f32>,
    packed: Vec<f32>,
    rhs: Vec<f32>,
    /// The group's per-entity systems (`GROUP` row-major `w × w`), before packing.
    a8: Vec<f32>,
    /// One entity's scaled block rows and row pointers (the AVX-512 build), `d` zeros (tile
    /// padding) and the Gram block-major ([`gram_term::slab_of`]).
    scaled: Vec<f32>,
    ys: Vec<*const f32>,
    zero: Vec<f32>,
    slab: Vec<f32>,
}

/// Flops of one entity's sweep with `n` pairs (see `TrainReport::flops_per_half_step`):
/// residuals `2·n·d`; per block of `w`: gradient `2·w·d + 2·n·w`, system `n·w·(w + 8)` on the
/// AVX2 path (`2·n·w²` otherwise), factorisation `w³/3`, solves `2·w²`, residual update `2·n·w`.
pub fn flops(d: u64, n: u64, b: u64, upper: bool) -> u64 {
    let mut f = 2 * n * d;
    let mut k = 0;
    while k < d {
        let w = b.min(d - k);
        let build = if upper {
            n * w * (w + 8)
        } else {
            2 * n * w * w
        };
        f += 2 * w * d + 2 * n * w + build + w * w * w / 3 + 2 * w * w + 2 * n * w;
        k += w;
    }
    f
}

impl Block {
    /// Scratch for dimension `d` and blocks of `b` coordinates (capped at `d`).
    pub fn new(d: usize, b: usize) -> Block {
        let b = b.clamp(1, d.max(1));
        Block {
            d,
            b,
            omega: 1.0,
            s: Vec::new(),
            a: vec![0.0; b * b],
            g: vec![0.0; b],
            coef: vec![0.0; 4 * b],
            lanes: super::kernels::simd_usable(lanes::LANES),
            grads: Vec::new(),
            packed: Vec::new(),
            rhs: Vec::new(),
            a8: Vec::new(),
            scaled: Vec::new(),
            ys: Vec::new(),
            zero: Vec::new(),
            slab: Vec::new(),
        }
    }

    /// Steps of `omega` times the exact block step (over-/under-relaxation; `0 < omega < 2`
    /// still lowers the block's quadratic at every step). Ignored when one block covers `d`.
    pub fn relaxed(mut self, omega: f32) -> Block {
        if self.b < self.d {
            self.omega = omega;
        }
        self
    }

    /// One sweep of block steps on `x` (the entity's current vector), against the Gram `g`,
    /// `λ`, and the rows `cols` of `gathered` with confidences `conf`. Returns false if some
    /// block's system was not positive definite even with a small jitter (that block is left
    /// as it was).
    pub fn solve(
        &mut self,
        g: &[f32],
        lambda: f32,
        gathered: &[f32],
        cols: &[u32],
        conf: &[f32],
        x: &mut [f32],
    ) -> bool {
        assert!(x.len() == self.d && cols.len() == conf.len());
        let indptr = [0, cols.len()];
        self.sweep_side(g, gathered, (&indptr, cols, conf), x, &[lambda], |_| true) == 0
    }

    /// [`Block::solve`] for every row `r` of a side's CSR (`indptr`, `cols`, `conf`, row-major
    /// `factors`) with `keep(r)`, λ `lambdas[r]`, block by block over all rows. Returns the
    /// rows where some block's system was not positive definite.
    #[allow(clippy::too_many_arguments)]
    pub fn sweep_side(
        &mut self,
        g: &[f32],
        gathered: &[f32],
        (indptr, cols, conf): (&[usize], &[u32], &[f32]),
        factors: &mut [f32],
        lambdas: &[f32],
        keep: impl Fn(usize) -> bool,
    ) -> u64 {
        let d = self.d;
        let rows = indptr.len().saturating_sub(1);
        assert!(g.len() >= d * d && factors.len() == rows * d && lambdas.len() == rows);
        assert!(cols.iter().all(|&c| (c as usize + 1) * d <= gathered.len()));
        let mut slab = std::mem::take(&mut self.slab);
        if self.lanes {
            gram_term::slab_of(g, d, self.b, &mut slab);
        }
        let inp = group::Inputs::new(d, g, gathered, (indptr, cols, conf), lambdas, &slab);
        let mut s = std::mem::take(&mut self.s);
        s.clear();
        s.resize(cols.len(), 0.0);
        let mut failed = vec![false; rows];
        let kept: Vec<usize> = (0..rows).filter(|&r| keep(r)).collect();
        let groups: Vec<&[usize]> = kept.chunks(GROUP).collect();
        for (i, &grp) in groups.iter().enumerate() {
            if let Some(next) = groups.get(i + 1) {
                group::prefetch_group(&inp, next);
            }
            self.sweep_group(&inp, grp, &mut s, factors, &mut failed);
        }
        (self.s, self.slab) = (s, slab);
        failed.iter().filter(|&&f| f).count() as u64
    }

    /// The Newton step on coordinates `k0..k0 + w` of `x`, whose pairs are `cols`, `conf`
    /// with residuals `s` (updated).
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        g: &[f32],
        lambda: f32,
        gathered: &[f32],
        (cols, conf, s): (&[u32], &[f32], &mut [f32]),
        x: &mut [f32],
        k0: usize,
        w: usize,
    ) -> bool {
        let d = self.d;
        let yb = |j: usize| &gathered[cols[j] as usize * d + k0..cols[j] as usize * d + k0 + w];
        // Gradient (A x − r)_B = (G x)_B + λ x_B + Σ_j ((c_j − 1) s_j − c_j) y_jB.
        let grad = &mut self.g[..w];
        gram_rows_times(&g[k0 * d..(k0 + w) * d], x, grad);
        for (gi, &xi) in grad.iter_mut().zip(&x[k0..k0 + w]) {
            *gi += lambda * xi;
        }
        for (j, (&c, &sj)) in conf.iter().zip(s.iter()).enumerate() {
            axpy(grad, (c - 1.0) * sj - c, yb(j));
        }
        let tr: f32 = (0..w)
            .map(|i| g[(k0 + i) * d + k0 + i])
            .sum::<f32>()
            .max(1.0);
        for shift in [lambda, lambda + 1e-6 * tr] {
            self.build(g, shift, gathered, cols, conf, k0, w);
            // The step −A_BB⁻¹·grad, in the `coef` scratch (free once the system is built).
            let delta = &mut self.coef[..w];
            delta
                .iter_mut()
                .zip(&self.g[..w])
                .for_each(|(o, &v)| *o = -v);
            if !cholesky_solve(&mut self.a[..w * w], w, delta) {
                continue;
            }
            relax(delta, self.omega);
            let delta = &self.coef[..w];
            x[k0..k0 + w]
                .iter_mut()
                .zip(delta)
                .for_each(|(x, d)| *x += d);
            for (j, sj) in s.iter_mut().enumerate() {
                *sj += dot(yb(j), delta);
            }
            return true;
        }
        false
    }

    /// `a = G_BB + shift·I + Σ_j (c_j − 1) y_jB y_jBᵀ` (row-major `w × w`; with the AVX2 path
    /// only the upper triangle is meaningful).
    #[allow(clippy::too_many_arguments)]
    fn build(
        &mut self,
        g: &[f32],
        shift: f32,
        gathered: &[f32],
        cols: &[u32],
        conf: &[f32],
        k0: usize,
        w: usize,
    ) {
        let d = self.d;
        let a = &mut self.a[..w * w];
        for i in 0..w {
            a[i * w..(i + 1) * w].copy_from_slice(&g[(k0 + i) * d + k0..(k0 + i) * d + k0 + w]);
            a[i * w + i] += shift;
        }
        let yb = |j: usize| &gathered[cols[j] as usize * d + k0..cols[j] as usize * d + k0 + w];
        #[cfg(target_arch = "x86_64")]
        if super::kernels::simd::usable(w) {
            use super::kernels::simd::upper_update;
            for (cc, base) in conf.chunks(4).zip((0..cols.len()).step_by(4)) {
                let mut coef = [self.coef.as_ptr(); 4];
                let mut vecs = [gathered.as_ptr(); 4];
                for (t, &c) in cc.iter().enumerate() {
                    let dst = &mut self.coef[t * w..(t + 1) * w];
                    dst.iter_mut()
                        .zip(yb(base + t))
                        .for_each(|(o, &v)| *o = (c - 1.0) * v);
                }
                for t in 0..cc.len() {
                    coef[t] = self.coef[t * w..].as_ptr();
                    vecs[t] = yb(base + t).as_ptr();
                }
                let ap = a.as_mut_ptr();
                // SAFETY: usable(w) checked AVX2, FMA and w % 8 == 0; `a` is w × w, every
                // coefficient and vector row addresses w floats.
                unsafe {
                    match cc.len() {
                        4 => upper_update::<4>(ap, w, 0, w, coef, vecs, 1.0),
                        3 => upper_update::<3>(
                            ap,
                            w,
                            0,
                            w,
                            [coef[0], coef[1], coef[2]],
                            [vecs[0], vecs[1], vecs[2]],
                            1.0,
                        ),
                        2 => upper_update::<2>(
                            ap,
                            w,
                            0,
                            w,
                            [coef[0], coef[1]],
                            [vecs[0], vecs[1]],
                            1.0,
                        ),
                        _ => upper_update::<1>(ap, w, 0, w, [coef[0]], [vecs[0]], 1.0),
                    }
                }
            }
            return;
        }
        for (j, &c) in conf.iter().enumerate() {
            let y = yb(j);
            for p in 0..w {
                let s = (c - 1.0) * y[p];
                for q in p..w {
                    a[p * w + q] += s * y[q];
                }
            }
        }
    }
}

/// Solves `a x = rhs` in place (`x` holds `rhs`) for symmetric positive definite `a` given by
/// its upper triangle (row-major `w × w`, destroyed). False when not positive definite.
fn cholesky_solve(a: &mut [f32], w: usize, x: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if super::kernels::simd::usable(w) {
        use super::kernels::simd;
        // SAFETY: features and w % 8 == 0 checked; `a` is w × w, `x` w floats.
        if !unsafe { simd::cholesky_upper(a.as_mut_ptr(), w) } {
            return false;
        }
        unsafe { simd::solve_upper(a.as_ptr(), w, x.as_mut_ptr()) };
        return x.iter().all(|v| v.is_finite());
    }
    // Portable: A = UᵀU in f64 on the upper triangle, then two triangular sweeps.
    let mut u: Vec<f64> = a.iter().map(|&v| v as f64).collect();
    for i in 0..w {
        for k in 0..i {
            let uki = u[k * w + i];
            for j in i..w {
                u[i * w + j] -= uki * u[k * w + j];
            }
        }
        let p = u[i * w + i];
        if !(p > 0.0 && p.is_finite()) {
            return false;
        }
        let r = p.sqrt();
        for j in i..w {
            u[i * w + j] /= r;
        }
    }
    let mut y: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    for i in 0..w {
        let s: f64 = (0..i).map(|k| u[k * w + i] * y[k]).sum();
        y[i] = (y[i] - s) / u[i * w + i];
    }
    for i in (0..w).rev() {
        let s: f64 = (i + 1..w).map(|k| u[i * w + k] * y[k]).sum();
        y[i] = (y[i] - s) / u[i * w + i];
    }
    x.iter_mut().zip(&y).for_each(|(x, &v)| *x = v as f32);
    x.iter().all(|v| v.is_finite())
}

/// `out[i] = rows[i]·x` for the row-major `out.len() × x.len()` block `rows` of the Gram.
fn gram_rows_times(rows: &[f32], x: &[f32], out: &mut [f32]) {
    let d = x.len();
    assert_eq!(rows.len(), out.len() * d);
    #[cfg(target_arch = "x86_64")]
    if super::kernels::simd::usable(d) {
        // SAFETY: features and d % 8 == 0 checked; lengths asserted.
        unsafe { rows_times_avx(rows, x, out) };
        return;
    }
    for (o, r) in out.iter_mut().zip(rows.chunks_exact(d.max(1))) {
        *o = dot(r, x);
    }
}

/// [`gram_rows_times`] four rows at a time: four independent FMA chains instead of one
/// latency-bound dot per row (the Gram term is the sweep's fixed `d²` cost per entity).
///
/// # Safety
/// AVX2 and FMA must be available; `x.len()` a multiple of 8, `rows` holds `out.len()` rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_times_avx(rows: &[f32], x: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let d = x.len();
    let hsum = |v: __m256| {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
    };
    let (xp, gp) = (x.as_ptr(), rows.as_ptr());
    let mut i = 0;
    while i + 4 <= out.len() {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut k = 0;
        while k < d {
            let xv = _mm256_loadu_ps(xp.add(k));
            for (t, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(_mm256_loadu_ps(gp.add((i + t) * d + k)), xv, *a);
            }
            k += 8;
        }
        for (t, a) in acc.iter().enumerate() {
            out[i + t] = hsum(*a);
        }
        i += 4;
    }
    for (t, o) in out.iter_mut().enumerate().skip(i) {
        *o = super::kernels::simd::dot(gp.add(t * d), xp, d);
    }
}

/// `a·b` (the AVX2 kernel for lengths that are multiples of 8; a fixed order either way).
/// Scales a block's exact step by the relaxation (nothing at 1, so the step's bits stay).
fn relax(delta: &mut [f32], omega: f32) {
    if omega != 1.0 {
        delta.iter_mut().for_each(|v| *v *= omega);
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    #[cfg(target_arch = "x86_64")]
    if super::kernels::simd::usable(n) {
        // SAFETY: features and n % 8 == 0 checked; both slices hold n floats.
        return unsafe { super::kernels::simd::dot(a.as_ptr(), b.as_ptr(), n) };
    }
    a[..n].iter().zip(&b[..n]).map(|(x, y)| x * y).sum()
}

/// `out += s·y`.
fn axpy(out: &mut [f32], s: f32, y: &[f32]) {
    let n = out.len().min(y.len());
    #[cfg(target_arch = "x86_64")]
    if super::kernels::simd::usable(n) {
        // SAFETY: features and n % 8 == 0 checked; both slices hold n floats.
        unsafe { super::kernels::simd::axpy(out.as_mut_ptr(), s, y.as_ptr(), n) };
        return;
    }
    out[..n]
        .iter_mut()
        .zip(&y[..n])
        .for_each(|(o, &v)| *o += s * v);
}

#[cfg(test)]
mod tests {
    use super::super::kernels::{entity_loss, gram, Solver};
    use super::*;
    use crate::ids::SplitMix;

    /// A random entity: `m` other-side rows of dimension `d`, their Gram, `n` distinct columns.
    fn entity(
        r: &mut SplitMix,
        m: usize,
        d: usize,
        n: usize,
    ) -> (Vec<f32>, Vec<f32>, Vec<u32>, Vec<f32>) {
        let ys: Vec<f32> = (0..m * d).map(|_| 0.3 * r.next_normal() as f32).collect();
        let mut g = vec![0.0; d * d];
        gram(&ys, m, d, &mut g);
        let mut cols: Vec<u32> = (0..n).map(|_| r.below(m as u64) as u32).collect();
        cols.sort_unstable();
        cols.dedup();
        let conf = cols
            .iter()
            .map(|_| 1.0 + 20.0 * r.next_f64() as f32)
            .collect();
        (ys, g, cols, conf)
    }

    /// With `b = d` (one block) the step lands on the Cholesky solution, from any start, on the
    /// AVX2 path (d a multiple of 8) and the portable one.
    #[test]
    fn block_of_d_equals_cholesky() {
        let mut r = SplitMix::new(21);
        for (m, d, n) in [(50, 8, 5), (200, 64, 40), (120, 13, 9), (300, 32, 0)] {
            let (ys, g, cols, conf) = entity(&mut r, m, d, n);
            let mut want = vec![0.0; d];
            assert!(Solver::new(d).solve(&g, 0.2, &ys, &cols, &conf, &mut want));
            let mut x: Vec<f32> = (0..d).map(|_| r.next_normal() as f32).collect();
            // One block: the relaxation does not apply (the step is the exact solve).
            let mut bl = Block::new(d, d).relaxed(0.5);
            assert!(bl.solve(&g, 0.2, &ys, &cols, &conf, &mut x));
            let scale = want.iter().map(|v| v.abs()).fold(1e-3f32, f32::max);
            for (a, b) in x.iter().zip(&want) {
                assert!((a - b).abs() < 2e-3 * scale, "d={d}: {x:?} vs {want:?}");
            }
        }
    }

    /// Every sweep (and every block inside it) lowers the entity's objective or leaves it, for
    /// several block sizes and relaxations, and repeated sweeps approach the exact solution.
    #[test]
    fn block_steps_never_increase_the_objective() {
        let mut r = SplitMix::new(22);
        for (m, d, n, b, omega) in [
            (100, 16, 12, 8, 1.0),
            (200, 64, 50, 16, 0.8),
            (90, 24, 30, 5, 1.0),
            (150, 40, 20, 32, 0.8),
            (120, 32, 25, 8, 0.6),
            (120, 32, 25, 16, 1.5),
        ] {
            let (ys, g, cols, conf) = entity(&mut r, m, d, n);
            let lam = 0.1;
            let mut x: Vec<f32> = (0..d).map(|_| 0.1 * r.next_normal() as f32).collect();
            let mut prev = entity_loss(&g, lam as f64, &ys, &cols, &conf, &x);
            let mut bl = Block::new(d, b).relaxed(omega);
            for _ in 0..60 {
                assert!(bl.solve(&g, lam, &ys, &cols, &conf, &mut x));
                let l = entity_loss(&g, lam as f64, &ys, &cols, &conf, &x);
                assert!(
                    l <= prev + 1e-5 * prev.abs().max(1.0),
                    "d={d} b={b}: {l} > {prev}"
                );
                prev = l;
            }
            let mut exact = vec![0.0; d];
            Solver::new(d).solve(&g, lam, &ys, &cols, &conf, &mut exact);
            let le = entity_loss(&g, lam as f64, &ys, &cols, &conf, &exact);
            assert!(
                (prev - le).abs() < 1e-3 * le.abs().max(1.0),
                "d={d} b={b}: {prev} vs {le}"
            );
        }
    }

    /// A relaxed sweep's first block moves by ω times the exact block step (the first step
    /// depends only on the start), and the sweep as a whole differs from the exact one.
    #[test]
    fn relaxation_scales_each_block_step() {
        let mut r = SplitMix::new(23);
        let (m, d, n, b) = (120, 32, 25, 16);
        let (ys, g, cols, conf) = entity(&mut r, m, d, n);
        let x0: Vec<f32> = (0..d).map(|_| 0.1 * r.next_normal() as f32).collect();
        let sweep = |omega: f32| {
            let mut x = x0.clone();
            assert!(Block::new(d, b)
                .relaxed(omega)
                .solve(&g, 0.1, &ys, &cols, &conf, &mut x));
            x
        };
        let (exact, damped) = (sweep(1.0), sweep(0.6));
        for i in 0..b {
            let want = 0.6 * (exact[i] - x0[i]);
            assert!(
                (damped[i] - x0[i] - want).abs() < 1e-5,
                "{i}: {} vs {want}",
                damped[i] - x0[i]
            );
        }
        assert!(exact[b..]
            .iter()
            .zip(&damped[b..])
            .any(|(a, b)| (a - b).abs() > 1e-4));
    }

    #[test]
    fn flops_of_one_block_match_cholesky_order() {
        // One block: residuals, gradient and the full system, as Cholesky plus O(n·d + d²).
        assert_eq!(
            flops(8, 2, 8, false),
            2 * 2 * 8 + 2 * 8 * 8 + 2 * 2 * 8 + 2 * 2 * 64 + 512 / 3 + 128 + 2 * 2 * 8
        );
    }
}
