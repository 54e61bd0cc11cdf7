//! Dense kernels of one ALS half-step: Gram matrices, per-entity normal equations, solves.
//!
//! Everything is f32 row-major; faer does the GEMMs and the Cholesky factorisation
//! (sequentially: parallelism comes from workers, not from inside a 64×64 solve).

use faer::linalg::cholesky::llt;
use faer::{Accum, MatMut, MatRef, Par};

/// `out = blockᵀ·block` for a row-major `n × d` block (`out` is `d × d`).
pub fn gram(block: &[f32], n: usize, d: usize, out: &mut [f32]) {
    out.fill(0.0);
    if n == 0 {
        return;
    }
    let y = MatRef::from_row_major_slice(block, n, d);
    let g = MatMut::from_row_major_slice_mut(out, d, d);
    faer::linalg::matmul::matmul(g, Accum::Replace, y.transpose(), y, 1.0f32, Par::Seq);
}

/// Scratch space for per-entity solves, reused across entities (no allocation per entity).
pub struct Solver {
    d: usize,
    a: Vec<f32>,
    yu: Vec<f32>,
    bu: Vec<f32>,
    b: Vec<f32>,
    /// CG with the objective: `y_j·x` per interaction, and `y_j·p` of the current step.
    yx: Vec<f32>,
    yp: Vec<f32>,
    stack: faer::dyn_stack::MemBuffer,
}

impl Solver {
    /// Scratch for dimension `d`.
    pub fn new(d: usize) -> Solver {
        let req = llt::factor::cholesky_in_place_scratch::<f32>(d, Par::Seq, Default::default())
            .or(llt::solve::solve_in_place_scratch::<f32>(d, 1, Par::Seq));
        Solver {
            d,
            a: vec![0.0; (d * d).max(2 * d)],
            yu: Vec::new(),
            bu: Vec::new(),
            b: vec![0.0; d],
            yx: Vec::new(),
            yp: Vec::new(),
            stack: faer::dyn_stack::MemBuffer::new(req),
        }
    }

    /// Solves `(G + λI + Σ_j (c_j − 1) y_j y_jᵀ) x = Σ_j c_j y_j` into `x`, where `y_j` are
    /// rows `cols[j]` of `gathered` (row-major, `d` wide). The sum is one GEMM over the
    /// entity's scaled block. Returns false if the matrix was not positive definite even
    /// after a small diagonal jitter (then `x` is zeroed).
    pub fn solve(
        &mut self,
        g: &[f32],
        lambda: f32,
        gathered: &[f32],
        cols: &[u32],
        conf: &[f32],
        x: &mut [f32],
    ) -> bool {
        let d = self.d;
        #[cfg(target_arch = "x86_64")]
        if simd::usable(d) {
            return self.solve_simd(g, lambda, gathered, cols, conf, x);
        }
        let n = cols.len();
        self.yu.resize(n * d, 0.0);
        self.bu.resize(n * d, 0.0);
        self.b.fill(0.0);
        for (j, (&c, &col)) in conf.iter().zip(cols).enumerate() {
            let y = &gathered[col as usize * d..(col as usize + 1) * d];
            let dst = &mut self.yu[j * d..(j + 1) * d];
            dst.copy_from_slice(y);
            let s = c - 1.0;
            for ((b, bb), &v) in self.bu[j * d..(j + 1) * d]
                .iter_mut()
                .zip(self.b.iter_mut())
                .zip(y)
            {
                *b = s * v;
                *bb += c * v;
            }
        }
        // Not positive definite only with λ = 0 and a degenerate Gram: then retry once with a
        // tiny jitter on the diagonal.
        let tr: f32 = (0..d).map(|i| g[i * d + i]).sum::<f32>().max(1.0);
        for shift in [lambda, lambda + 1e-6 * tr] {
            self.build(g, shift, n);
            x.copy_from_slice(&self.b);
            if self.cholesky_solve(x) {
                return true;
            }
        }
        x.fill(0.0);
        false
    }

    /// [`Solver::solve`] with the AVX2 kernels: the upper triangle of the system is built by
    /// rank-4 updates straight from the gathered rows, factorised by [`simd::cholesky_upper`]
    /// and solved by two triangular sweeps (no faer call, no copy of the entity's block).
    #[cfg(target_arch = "x86_64")]
    fn solve_simd(
        &mut self,
        g: &[f32],
        lambda: f32,
        gathered: &[f32],
        cols: &[u32],
        conf: &[f32],
        x: &mut [f32],
    ) -> bool {
        let d = self.d;
        assert_eq!(cols.len(), conf.len());
        assert!(g.len() >= d * d && x.len() == d);
        let rows = gathered.len() / d;
        assert!(cols.iter().all(|&c| (c as usize) < rows));
        self.yu.resize(4 * d, 0.0);
        self.b.fill(0.0);
        // SAFETY (all calls below): simd::usable(d) held; every pointer addresses d (rows)
        // or d × d (matrix) floats, as asserted above.
        for (&c, &col) in conf.iter().zip(cols) {
            let y = gathered[col as usize * d..].as_ptr();
            unsafe { simd::axpy(self.b.as_mut_ptr(), c, y, d) };
        }
        let tr: f32 = (0..d).map(|i| g[i * d + i]).sum::<f32>().max(1.0);
        for shift in [lambda, lambda + 1e-6 * tr] {
            self.a[..d * d].copy_from_slice(&g[..d * d]);
            for i in 0..d {
                self.a[i * d + i] += shift;
            }
            for (cc, ch) in conf.chunks(4).zip(cols.chunks(4)) {
                for (t, (&c, &col)) in cc.iter().zip(ch).enumerate() {
                    let y = &gathered[col as usize * d..(col as usize + 1) * d];
                    let dst = &mut self.yu[t * d..(t + 1) * d];
                    dst.iter_mut().zip(y).for_each(|(o, &v)| *o = (c - 1.0) * v);
                }
                let mut coef = [self.yu.as_ptr(); 4];
                let mut vecs = [gathered.as_ptr(); 4];
                for (t, &col) in ch.iter().enumerate() {
                    coef[t] = self.yu[t * d..].as_ptr();
                    vecs[t] = gathered[col as usize * d..].as_ptr();
                }
                let a = self.a.as_mut_ptr();
                unsafe {
                    match cc.len() {
                        4 => simd::upper_update::<4>(a, d, 0, d, coef, vecs, 1.0),
                        3 => simd::upper_update::<3>(
                            a,
                            d,
                            0,
                            d,
                            [coef[0], coef[1], coef[2]],
                            [vecs[0], vecs[1], vecs[2]],
                            1.0,
                        ),
                        2 => simd::upper_update::<2>(
                            a,
                            d,
                            0,
                            d,
                            [coef[0], coef[1]],
                            [vecs[0], vecs[1]],
                            1.0,
                        ),
                        _ => simd::upper_update::<1>(a, d, 0, d, [coef[0]], [vecs[0]], 1.0),
                    }
                }
            }
            if unsafe { simd::cholesky_upper(self.a.as_mut_ptr(), d) } {
                x.copy_from_slice(&self.b);
                unsafe { simd::solve_upper(self.a.as_ptr(), d, x.as_mut_ptr()) };
                if x.iter().all(|v| v.is_finite()) {
                    return true;
                }
            }
        }
        x.fill(0.0);
        false
    }

    /// `a = G + shift·I + Yuᵀ·Bu` (one GEMM over the entity's block).
    fn build(&mut self, g: &[f32], shift: f32, n: usize) {
        let d = self.d;
        self.a[..d * d].copy_from_slice(g);
        for i in 0..d {
            self.a[i * d + i] += shift;
        }
        if n > 0 {
            let yu = MatRef::from_row_major_slice(&self.yu[..n * d], n, d);
            let bu = MatRef::from_row_major_slice(&self.bu[..n * d], n, d);
            let a = MatMut::from_row_major_slice_mut(&mut self.a[..d * d], d, d);
            faer::linalg::matmul::matmul(a, Accum::Add, yu.transpose(), bu, 1.0f32, Par::Seq);
        }
    }

    /// Conjugate gradient warm-started from `x` (the previous iteration's vector), `steps`
    /// steps, on the same system as [`Solver::solve`] but without forming the matrix:
    /// `A·p = G·p + λp + Σ_j (c_j − 1)(y_j·p) y_j` (Takács et al. 2011, as `implicit`).
    ///
    /// With AVX2+FMA (detected at run time) and `d` a multiple of 8 this runs the
    /// register-blocked kernel [`simd::cg`]; otherwise [`cg_portable`]. Both are the same
    /// algorithm; the choice depends only on the machine and `d`, never on the worker layout.
    #[allow(clippy::too_many_arguments)]
    pub fn cg(
        &mut self,
        g: &[f32],
        lambda: f32,
        gathered: &[f32],
        cols: &[u32],
        conf: &[f32],
        x: &mut [f32],
        steps: usize,
        loss: bool,
    ) -> f64 {
        let d = self.d;
        // With the objective, every `y_j·x` is tracked through the steps (`y_j·x += α·y_j·p`,
        // from the products each step computes anyway), so it costs O(n) per step instead of
        // another pass over the entity's rows.
        let track = if loss {
            self.yx.resize(cols.len(), 0.0);
            self.yp.resize(cols.len(), 0.0);
            Some((&mut self.yx[..], &mut self.yp[..]))
        } else {
            None
        };
        #[cfg(target_arch = "x86_64")]
        if simd::usable(d) {
            let (p, ap) = self.a.split_at_mut(d);
            // SAFETY: `usable` checked AVX2 and FMA at run time and d % 8 == 0; every slice
            // has the lengths `simd::cg` asserts.
            unsafe {
                simd::cg(
                    g,
                    lambda,
                    gathered,
                    cols,
                    conf,
                    x,
                    steps,
                    p,
                    &mut ap[..d],
                    &mut self.b,
                    track,
                )
            };
            return if loss {
                observed_from(conf, &self.yx)
            } else {
                0.0
            };
        }
        cg_portable(
            g,
            lambda,
            gathered,
            cols,
            conf,
            x,
            steps,
            &mut self.a,
            &mut self.b,
            track,
        );
        if loss {
            observed_from(conf, &self.yx)
        } else {
            0.0
        }
    }

    fn cholesky_solve(&mut self, x: &mut [f32]) -> bool {
        let d = self.d;
        let stack = faer::dyn_stack::MemStack::new(&mut self.stack);
        // `a` is symmetric, so its row-major view is its own transpose: lower = upper.
        let a = MatMut::from_column_major_slice_mut(&mut self.a[..d * d], d, d);
        if llt::factor::cholesky_in_place(
            a,
            Default::default(),
            Par::Seq,
            stack,
            Default::default(),
        )
        .is_err()
        {
            return false;
        }
        let l = MatRef::from_column_major_slice(&self.a[..d * d], d, d);
        let rhs = MatMut::from_column_major_slice_mut(x, d, 1);
        llt::solve::solve_in_place(l, rhs, Par::Seq, stack);
        x.iter().all(|v| v.is_finite())
    }
}

/// Measures this core's peak for the solve's inner kernel: GFLOP/s of the Gram matvec
/// `G·v + λv` (the CG step's `2·d²` flops) on an L1-resident `d × d` Gram, best of a few
/// ~10 ms rounds. With the AVX2 kernel this is the machine's FMA throughput on cached data,
/// the fastest any half-step flop can go; it is the denominator of the training floor.
pub fn measure_peak_gflops(d: usize) -> f64 {
    let d = d.clamp(8, 64) / 8 * 8;
    let g: Vec<f32> = (0..d * d)
        .map(|i| ((i * 7919) % 97) as f32 * 1e-3)
        .collect();
    let mut v: Vec<f32> = (0..d).map(|i| 1.0 + i as f32 * 1e-3).collect();
    let mut out = vec![0.0f32; d];
    let mut best = 0.0f64;
    for _ in 0..5 {
        let reps = 20_000usize;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            matvec(&g, 1e-3, &v, &mut out);
            // Feed the result back (scaled) so the loop cannot be hoisted.
            let s = 1.0 / (1.0 + out[0].abs());
            v.iter_mut().zip(&out).for_each(|(a, &b)| *a = b * s);
        }
        let secs = t.elapsed().as_secs_f64();
        best = best.max((reps * 2 * d * d) as f64 / secs / 1e9);
    }
    std::hint::black_box(&v);
    best
}

/// `out = G·v + λv` for a symmetric `G` (the AVX2 kernel where it runs).
pub fn matvec(g: &[f32], lambda: f32, v: &[f32], out: &mut [f32]) {
    let d = v.len();
    assert!(g.len() >= d * d && out.len() == d);
    #[cfg(target_arch = "x86_64")]
    if simd::usable(d) {
        // SAFETY: features checked, lengths asserted.
        unsafe { simd::symv(g.as_ptr(), lambda, v.as_ptr(), out.as_mut_ptr(), d) };
        return;
    }
    for i in 0..d {
        out[i] = g[i * d..(i + 1) * d]
            .iter()
            .zip(v)
            .map(|(a, b)| a * b)
            .sum::<f32>()
            + lambda * v[i];
    }
}

/// The portable CG (the reference for [`simd::cg`]); `scratch` holds at least `2d` floats,
/// `r` exactly `d`.
#[allow(clippy::too_many_arguments)]
pub fn cg_portable(
    g: &[f32],
    lambda: f32,
    gathered: &[f32],
    cols: &[u32],
    conf: &[f32],
    x: &mut [f32],
    steps: usize,
    scratch: &mut [f32],
    r: &mut [f32],
    mut track: Option<(&mut [f32], &mut [f32])>,
) {
    let d = x.len();
    let ys = |j: usize| &gathered[cols[j] as usize * d..(cols[j] as usize + 1) * d];
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f32>();
    let (p, rest) = scratch.split_at_mut(d);
    let ap = &mut rest[..d];
    // out = A·v; `yv` (when given) receives every y_j·v on the way.
    let apply = |v: &[f32], out: &mut [f32], mut yv: Option<&mut [f32]>| {
        for i in 0..d {
            let row = &g[i * d..(i + 1) * d];
            out[i] = row.iter().zip(v).map(|(a, b)| a * b).sum::<f32>() + lambda * v[i];
        }
        for (j, &c) in conf.iter().enumerate() {
            let y = ys(j);
            let t = dot(y, v);
            if let Some(yv) = &mut yv {
                yv[j] = t;
            }
            let s = (c - 1.0) * t;
            out.iter_mut().zip(y).for_each(|(o, &yy)| *o += s * yy);
        }
    };
    // r = b − A·x
    apply(x, ap, track.as_mut().map(|t| &mut *t.0));
    r.iter_mut().zip(ap.iter()).for_each(|(r, &a)| *r = -a);
    for (j, &c) in conf.iter().enumerate() {
        r.iter_mut().zip(ys(j)).for_each(|(r, &y)| *r += c * y);
    }
    p.copy_from_slice(r);
    let mut rs: f32 = r.iter().map(|v| v * v).sum();
    for _ in 0..steps {
        if rs < 1e-20 {
            break;
        }
        apply(p, ap, track.as_mut().map(|t| &mut *t.1));
        let pap: f32 = p.iter().zip(ap.iter()).map(|(a, b)| a * b).sum();
        if pap <= 0.0 || !pap.is_finite() {
            break;
        }
        let alpha = rs / pap;
        x.iter_mut()
            .zip(p.iter())
            .for_each(|(x, &p)| *x += alpha * p);
        if let Some((sx, tp)) = &mut track {
            sx.iter_mut()
                .zip(tp.iter())
                .for_each(|(s, &t)| *s += alpha * t);
        }
        r.iter_mut()
            .zip(ap.iter())
            .for_each(|(r, &a)| *r -= alpha * a);
        let rs_new: f32 = r.iter().map(|v| v * v).sum();
        let beta = rs_new / rs;
        p.iter_mut()
            .zip(r.iter())
            .for_each(|(p, &r)| *p = r + beta * *p);
        rs = rs_new;
    }
}

/// Asks the cache for the gathered rows `cols` (each `d` floats) ahead of their use: the solve
/// of one entity is latency-bound on these random rows, so the loop prefetches the next
/// entity's rows while it solves the current one. A hint only; no effect on results.
#[inline]
pub fn prefetch_rows(gathered: &[f32], cols: &[u32], d: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        for &c in cols {
            let start = c as usize * d;
            if start + d > gathered.len() {
                continue;
            }
            let row = gathered[start..start + d].as_ptr();
            let mut off = 0;
            while off < d {
                // SAFETY: prefetch is a hint; the address lies inside `gathered`.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(row.add(off) as *const i8) };
                off += 16;
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (gathered, cols, d);
}

/// AVX2+FMA kernels for `d` a multiple of 8 (x86-64, detected at run time).
#[cfg(target_arch = "x86_64")]
pub mod simd {
    use std::arch::x86_64::*;

    /// Whether the AVX2 kernels run for dimension `d` on this machine.
    pub fn usable(d: usize) -> bool {
        d.is_multiple_of(8)
            && d > 0
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    /// `a·b` over `d` (a multiple of 8) floats; two accumulators, fixed order.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `a` and `b` address `d` floats.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: *const f32, b: *const f32, d: usize) -> f32 {
        let mut s0 = _mm256_setzero_ps();
        let mut s1 = _mm256_setzero_ps();
        let mut k = 0;
        while k + 16 <= d {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(k)), _mm256_loadu_ps(b.add(k)), s0);
            s1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(a.add(k + 8)),
                _mm256_loadu_ps(b.add(k + 8)),
                s1,
            );
            k += 16;
        }
        if k < d {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(k)), _mm256_loadu_ps(b.add(k)), s0);
        }
        hsum(_mm256_add_ps(s0, s1))
    }

    /// `out += s·y` over `d` floats.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `out` and `y` address `d` floats, `d` a multiple of 8.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy(out: *mut f32, s: f32, y: *const f32, d: usize) {
        let sv = _mm256_set1_ps(s);
        let mut k = 0;
        while k < d {
            let o = _mm256_loadu_ps(out.add(k));
            _mm256_storeu_ps(
                out.add(k),
                _mm256_fmadd_ps(sv, _mm256_loadu_ps(y.add(k)), o),
            );
            k += 8;
        }
    }

    /// Columns `c0 .. c0 + 8·NB` of `out = G·v + λv` (G symmetric, row-major `d × d`, so
    /// column i of G is row i): the accumulators stay in registers while the rows stream.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn symv_block<const NB: usize>(
        g: *const f32,
        lambda: f32,
        v: *const f32,
        out: *mut f32,
        d: usize,
        c0: usize,
    ) {
        let lv = _mm256_set1_ps(lambda);
        let mut acc = [_mm256_setzero_ps(); NB];
        for (t, a) in acc.iter_mut().enumerate() {
            *a = _mm256_mul_ps(lv, _mm256_loadu_ps(v.add(c0 + 8 * t)));
        }
        for j in 0..d {
            let b = _mm256_set1_ps(*v.add(j));
            let row = g.add(j * d + c0);
            for (t, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(_mm256_loadu_ps(row.add(8 * t)), b, *a);
            }
        }
        for (t, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.add(c0 + 8 * t), *a);
        }
    }

    /// `out = G·v + λv` for symmetric `G`.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `g` addresses `d × d` floats, `v` and `out` `d`, `d` a
    /// multiple of 8.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn symv(g: *const f32, lambda: f32, v: *const f32, out: *mut f32, d: usize) {
        let mut c0 = 0;
        while c0 < d {
            match ((d - c0) / 8).min(8) {
                8 => symv_block::<8>(g, lambda, v, out, d, c0),
                7 => symv_block::<7>(g, lambda, v, out, d, c0),
                6 => symv_block::<6>(g, lambda, v, out, d, c0),
                5 => symv_block::<5>(g, lambda, v, out, d, c0),
                4 => symv_block::<4>(g, lambda, v, out, d, c0),
                3 => symv_block::<3>(g, lambda, v, out, d, c0),
                2 => symv_block::<2>(g, lambda, v, out, d, c0),
                _ => symv_block::<1>(g, lambda, v, out, d, c0),
            }
            c0 += 64;
        }
    }

    /// Rows `r0..r1` of the upper triangle of the row-major `d × d` matrix `a`:
    /// `a[i][j] += sign · Σ_t coef_t[i] · vecs_t[j]` for `j ≥ i` (columns from `i` rounded down
    /// to a multiple of 8 are written; those left of the diagonal are scratch, never read).
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `a` addresses `d × d` floats, every `coef_t` and
    /// `vecs_t` `d` floats, `d` a multiple of 8.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn upper_update<const R: usize>(
        a: *mut f32,
        d: usize,
        r0: usize,
        r1: usize,
        coef: [*const f32; R],
        vecs: [*const f32; R],
        sign: f32,
    ) {
        for i in r0..r1 {
            let mut c = [_mm256_setzero_ps(); R];
            for t in 0..R {
                c[t] = _mm256_set1_ps(sign * *coef[t].add(i));
            }
            let row = a.add(i * d);
            let mut j = i & !7;
            while j < d {
                let mut acc = _mm256_loadu_ps(row.add(j));
                for t in 0..R {
                    acc = _mm256_fmadd_ps(c[t], _mm256_loadu_ps(vecs[t].add(j)), acc);
                }
                _mm256_storeu_ps(row.add(j), acc);
                j += 8;
            }
        }
    }

    /// In-place Cholesky `A = UᵀU` of the symmetric row-major `d × d` matrix `a`, reading and
    /// writing its upper triangle only (right-looking, blocks of 4 rows: one rank-4 update of
    /// the trailing rows per block). Returns false when a pivot is not positive and finite.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `a` addresses `d × d` floats, `d` a multiple of 8.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn cholesky_upper(a: *mut f32, d: usize) -> bool {
        let mut kb = 0;
        while kb < d {
            let ke = (kb + 4).min(d);
            for k in kb..ke {
                let piv = *a.add(k * d + k);
                if !(piv > 0.0 && piv.is_finite()) {
                    return false;
                }
                let s = piv.sqrt();
                *a.add(k * d + k) = s;
                let inv = 1.0 / s;
                let mut j = k + 1;
                while j < d && j % 8 != 0 {
                    *a.add(k * d + j) *= inv;
                    j += 1;
                }
                let iv = _mm256_set1_ps(inv);
                while j < d {
                    let p = a.add(k * d + j);
                    _mm256_storeu_ps(p, _mm256_mul_ps(iv, _mm256_loadu_ps(p)));
                    j += 8;
                }
                let row = a.add(k * d) as *const f32;
                upper_update::<1>(a, d, k + 1, ke, [row], [row], -1.0);
            }
            if ke < d {
                let r = |k: usize| a.add(k * d) as *const f32;
                if ke - kb == 4 {
                    let rows = [r(kb), r(kb + 1), r(kb + 2), r(kb + 3)];
                    upper_update::<4>(a, d, ke, d, rows, rows, -1.0);
                } else {
                    for k in kb..ke {
                        upper_update::<1>(a, d, ke, d, [r(k)], [r(k)], -1.0);
                    }
                }
            }
            kb = ke;
        }
        true
    }

    /// Solves `UᵀU x = b` in place (`x` holds `b`), `U` the upper triangle of row-major `u`.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `u` addresses `d × d` floats, `x` `d`, `d` a multiple of 8.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn solve_upper(u: *const f32, d: usize, x: *mut f32) {
        // Uᵀz = b: column sweep over the rows of U.
        for k in 0..d {
            let z = *x.add(k) / *u.add(k * d + k);
            *x.add(k) = z;
            let row = u.add(k * d);
            let mut j = k + 1;
            while j < d && j % 8 != 0 {
                *x.add(j) -= z * *row.add(j);
                j += 1;
            }
            if j < d {
                axpy(x.add(j), -z, row.add(j), d - j);
            }
        }
        // U x = z: dot of each row with the solved tail.
        for i in (0..d).rev() {
            let row = u.add(i * d);
            let mut s = 0.0f32;
            let mut j = i + 1;
            while j < d && j % 8 != 0 {
                s += *row.add(j) * *x.add(j);
                j += 1;
            }
            if j < d {
                s += dot(row.add(j), x.add(j) as *const f32, d - j);
            }
            *x.add(i) = (*x.add(i) - s) / *row.add(i);
        }
    }

    /// [`super::cg_portable`] with AVX2+FMA: the same steps, fused loops.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `d = x.len()` a multiple of 8; `g` is `d × d`; `p`, `ap`
    /// and `r` hold `d` floats; every `cols[j]` indexes a `d`-row of `gathered`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn cg(
        g: &[f32],
        lambda: f32,
        gathered: &[f32],
        cols: &[u32],
        conf: &[f32],
        x: &mut [f32],
        steps: usize,
        p: &mut [f32],
        ap: &mut [f32],
        r: &mut [f32],
        mut track: Option<(&mut [f32], &mut [f32])>,
    ) {
        let d = x.len();
        if let Some((sx, tp)) = &track {
            assert!(sx.len() == cols.len() && tp.len() == cols.len());
        }
        assert!(
            d.is_multiple_of(8)
                && g.len() >= d * d
                && p.len() == d
                && ap.len() == d
                && r.len() == d
        );
        assert_eq!(cols.len(), conf.len());
        let rows = gathered.len() / d;
        assert!(cols.iter().all(|&c| (c as usize) < rows));
        let gp = g.as_ptr();
        let y = |j: usize| gathered.as_ptr().add(cols[j] as usize * d);
        // r = b − A·x = −(G + λI)x + Σ_j (c_j − (c_j − 1) y_j·x) y_j
        symv(gp, lambda, x.as_ptr(), ap.as_mut_ptr(), d);
        for (r, &a) in r.iter_mut().zip(ap.iter()) {
            *r = -a;
        }
        for (j, &c) in conf.iter().enumerate() {
            // First touch of each row: ask for the one PF rows ahead (the entity's first rows
            // were prefetched during the previous entity).
            const PF: usize = 6;
            if j + PF < cols.len() {
                let ahead = y(j + PF);
                let mut off = 0;
                while off < d {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.add(off) as *const i8);
                    off += 16;
                }
            }
            let yx = dot(y(j), x.as_ptr(), d);
            if let Some((sx, _)) = &mut track {
                sx[j] = yx;
            }
            let s = c - (c - 1.0) * yx;
            axpy(r.as_mut_ptr(), s, y(j), d);
        }
        p.copy_from_slice(r);
        let mut rs = dot(r.as_ptr(), r.as_ptr(), d);
        for _ in 0..steps {
            if rs < 1e-20 {
                break;
            }
            symv(gp, lambda, p.as_ptr(), ap.as_mut_ptr(), d);
            for (j, &c) in conf.iter().enumerate() {
                let yp = dot(y(j), p.as_ptr(), d);
                if let Some((_, tp)) = &mut track {
                    tp[j] = yp;
                }
                axpy(ap.as_mut_ptr(), (c - 1.0) * yp, y(j), d);
            }
            let pap = dot(p.as_ptr(), ap.as_ptr(), d);
            if pap <= 0.0 || !pap.is_finite() {
                break;
            }
            let alpha = rs / pap;
            axpy(x.as_mut_ptr(), alpha, p.as_ptr(), d);
            if let Some((sx, tp)) = &mut track {
                sx.iter_mut()
                    .zip(tp.iter())
                    .for_each(|(s, &t)| *s += alpha * t);
            }
            axpy(r.as_mut_ptr(), -alpha, ap.as_ptr(), d);
            let rs_new = dot(r.as_ptr(), r.as_ptr(), d);
            let beta = rs_new / rs;
            let bv = _mm256_set1_ps(beta);
            let mut k = 0;
            while k < d {
                let pv = _mm256_loadu_ps(p.as_ptr().add(k));
                let rv = _mm256_loadu_ps(r.as_ptr().add(k));
                _mm256_storeu_ps(p.as_mut_ptr().add(k), _mm256_fmadd_ps(bv, pv, rv));
                k += 8;
            }
            rs = rs_new;
        }
    }
}

/// The observed-pair part of one entity's objective, `Σ_j [c_j (1 − s_j)² − s_j²]` with
/// `s_j = x·y_j`: the `− s_j²` takes out the weight-1 term that the Gram part (`xᵀGx`, summed
/// for a whole side as `⟨G_other, G_side⟩`) counts for every pair. `n·d` flops in f32 dot
/// products, summed in f64.
pub fn observed_loss(gathered: &[f32], cols: &[u32], conf: &[f32], x: &[f32]) -> f64 {
    let d = x.len();
    let fast = simd_usable(d);
    let mut obs = 0.0f64;
    for (&c, &col) in conf.iter().zip(cols) {
        let y = &gathered[col as usize * d..(col as usize + 1) * d];
        let s = dot(fast, x, y) as f64;
        obs += c as f64 * (1.0 - s) * (1.0 - s) - s * s;
    }
    obs
}

/// [`observed_loss`] from the products `y_j·x` already at hand.
fn observed_from(conf: &[f32], yx: &[f32]) -> f64 {
    conf.iter()
        .zip(yx)
        .map(|(&c, &s)| {
            let s = s as f64;
            c as f64 * (1.0 - s) * (1.0 - s) - s * s
        })
        .sum()
}

/// Whether the AVX2 kernels run for dimension `d` (false off x86-64).
pub fn simd_usable(d: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    return simd::usable(d);
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// `a·b`; `fast` (from [`simd_usable`]) picks the AVX2 kernel.
#[inline]
fn dot(fast: bool, a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if fast {
        // SAFETY: AVX2/FMA were checked by `simd_usable` for this length; both hold `len` floats.
        return unsafe { simd::dot(a.as_ptr(), b.as_ptr(), a.len()) };
    }
    let _ = fast;
    a.iter().zip(b).map(|(&x, &y)| x * y).sum()
}

/// Objective contribution of one solved entity, computed directly (the reference the
/// Gram-trick objective of a half-step is tested against):
/// `xᵀGx + Σ_j [c_j (1 − s_j)² − s_j²] + λ‖x‖²` with `s_j = x·y_j`.
pub fn entity_loss(
    g: &[f32],
    lambda: f64,
    gathered: &[f32],
    cols: &[u32],
    conf: &[f32],
    x: &[f32],
) -> f64 {
    let d = x.len();
    let mut quad = 0.0f64;
    for i in 0..d {
        let row = &g[i * d..(i + 1) * d];
        let gx: f64 = row.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum();
        quad += x[i] as f64 * gx;
    }
    let obs = observed_loss(gathered, cols, conf, x);
    let norm: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
    quad + obs + lambda * norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SplitMix;

    fn rand_mat(r: &mut SplitMix, n: usize) -> Vec<f32> {
        (0..n).map(|_| r.next_normal() as f32).collect()
    }

    /// A random entity against `m` other-side rows of dimension `d` (scaled by `scale`): the
    /// rows, their Gram matrix, `n` random columns and confidences in [1, 1 + cmax).
    #[allow(clippy::type_complexity)]
    fn entity(
        r: &mut SplitMix,
        (m, d, n): (usize, usize, usize),
        scale: f32,
        cmax: f32,
    ) -> (Vec<f32>, Vec<f32>, Vec<u32>, Vec<f32>) {
        let ys: Vec<f32> = rand_mat(r, m * d).iter().map(|v| scale * v).collect();
        let mut g = vec![0.0; d * d];
        gram(&ys, m, d, &mut g);
        let cols: Vec<u32> = (0..n).map(|_| r.below(m as u64) as u32).collect();
        let conf: Vec<f32> = (0..n).map(|_| 1.0 + cmax * r.next_f64() as f32).collect();
        (ys, g, cols, conf)
    }

    #[test]
    fn gram_matches_naive() {
        let mut r = SplitMix::new(1);
        for (n, d) in [(0, 3), (1, 4), (17, 8), (100, 33)] {
            let y = rand_mat(&mut r, n * d);
            let mut g = vec![0.0; d * d];
            gram(&y, n, d, &mut g);
            for a in 0..d {
                for b in 0..d {
                    let want: f64 = (0..n)
                        .map(|i| y[i * d + a] as f64 * y[i * d + b] as f64)
                        .sum();
                    assert!((g[a * d + b] as f64 - want).abs() < 1e-3 * (1.0 + want.abs()));
                }
            }
        }
    }

    /// Solves the augmented system `a = [A | b]` by Gauss–Jordan elimination with partial
    /// pivoting, in f64.
    fn gauss(mut a: Vec<Vec<f64>>) -> Vec<f64> {
        let d = a.len();
        for p in 0..d {
            let piv = (p..d)
                .max_by(|&x, &y| a[x][p].abs().total_cmp(&a[y][p].abs()))
                .unwrap();
            a.swap(p, piv);
            let pivot = a[p].clone();
            for (r, row) in a.iter_mut().enumerate() {
                if r != p {
                    let f = row[p] / pivot[p];
                    for (x, y) in row[p..].iter_mut().zip(&pivot[p..]) {
                        *x -= f * y;
                    }
                }
            }
        }
        (0..d).map(|i| a[i][d] / a[i][i]).collect()
    }

    /// Dense reference: Gaussian elimination in f64 on the explicitly built system.
    fn naive_solve(
        g: &[f32],
        lambda: f64,
        ys: &[f32],
        cols: &[u32],
        conf: &[f32],
        d: usize,
    ) -> Vec<f64> {
        let mut a = vec![vec![0.0f64; d + 1]; d];
        for i in 0..d {
            for j in 0..d {
                a[i][j] = g[i * d + j] as f64 + if i == j { lambda } else { 0.0 };
            }
        }
        for (&c, &col) in conf.iter().zip(cols) {
            let y = &ys[col as usize * d..(col as usize + 1) * d];
            for i in 0..d {
                for j in 0..d {
                    a[i][j] += (c as f64 - 1.0) * y[i] as f64 * y[j] as f64;
                }
                a[i][d] += c as f64 * y[i] as f64;
            }
        }
        gauss(a)
    }

    #[test]
    fn solve_matches_dense_direct_solve() {
        let mut r = SplitMix::new(2);
        for (m, d, n) in [(20, 4, 3), (50, 16, 10), (80, 7, 0), (40, 32, 40)] {
            let (ys, g, cols, conf) = entity(&mut r, (m, d, n), 1.0, 10.0);
            let mut x = vec![0.0; d];
            let mut s = Solver::new(d);
            assert!(s.solve(&g, 0.5, &ys, &cols, &conf, &mut x));
            let want = naive_solve(&g, 0.5, &ys, &cols, &conf, d);
            for (a, b) in x.iter().zip(&want) {
                assert!(
                    (*a as f64 - b).abs() < 1e-3 * (1.0 + b.abs()),
                    "{x:?} vs {want:?}"
                );
            }
        }
    }

    /// The full weighted least-squares problem of one user, built densely over every item
    /// (c = 1 and p = 0 for unobserved items), with no Gram trick.
    #[test]
    fn solve_matches_the_full_dense_weighted_problem() {
        let mut r = SplitMix::new(8);
        let (m, d) = (25, 5);
        let ys = rand_mat(&mut r, m * d);
        let cols = [2u32, 3, 11, 19];
        let conf = [4.0f32, 1.5, 9.0, 2.0];
        let lambda = 0.3;
        let mut c_full = vec![1.0f64; m];
        let mut p_full = vec![0.0f64; m];
        for (&c, &i) in conf.iter().zip(&cols) {
            c_full[i as usize] = c as f64;
            p_full[i as usize] = 1.0;
        }
        // Normal equations (Yᵀ C Y + λI) x = Yᵀ C p, solved by Gaussian elimination.
        let mut a = vec![vec![0.0f64; d + 1]; d];
        for i in 0..m {
            let y = &ys[i * d..(i + 1) * d];
            for p in 0..d {
                for q in 0..d {
                    a[p][q] += c_full[i] * y[p] as f64 * y[q] as f64;
                }
                a[p][d] += c_full[i] * p_full[i] * y[p] as f64;
            }
        }
        for (p, row) in a.iter_mut().enumerate() {
            row[p] += lambda;
        }
        let want = gauss(a);
        let mut g = vec![0.0; d * d];
        gram(&ys, m, d, &mut g);
        let mut x = vec![0.0; d];
        assert!(Solver::new(d).solve(&g, lambda as f32, &ys, &cols, &conf, &mut x));
        for (a, b) in x.iter().zip(&want) {
            assert!(
                (*a as f64 - b).abs() < 1e-4 * (1.0 + b.abs()),
                "{x:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn cg_converges_to_the_exact_solve() {
        let mut r = SplitMix::new(6);
        let (m, d) = (60, 12);
        let (ys, g, cols, conf) = entity(&mut r, (m, d, 15), 1.0, 5.0);
        let mut exact = vec![0.0; d];
        let mut s = Solver::new(d);
        s.solve(&g, 0.5, &ys, &cols, &conf, &mut exact);
        // d steps of CG solve a d×d SPD system (up to rounding); few steps already get close.
        let mut x = vec![0.0; d];
        s.cg(&g, 0.5, &ys, &cols, &conf, &mut x, 3 * d, false);
        for (a, b) in x.iter().zip(&exact) {
            assert!((a - b).abs() < 1e-3 * (1.0 + b.abs()), "{x:?} vs {exact:?}");
        }
        let mut x3 = vec![0.0; d];
        s.cg(&g, 0.5, &ys, &cols, &conf, &mut x3, 3, false);
        let l3 = entity_loss(&g, 0.5, &ys, &cols, &conf, &x3);
        let l0 = entity_loss(&g, 0.5, &ys, &cols, &conf, &vec![0.0; d]);
        let le = entity_loss(&g, 0.5, &ys, &cols, &conf, &exact);
        assert!(l3 < l0 && l3 >= le - 1e-3, "{l0} {l3} {le}");
    }

    /// The AVX2 Cholesky path (d a multiple of 8) against the dense f64 reference, including
    /// d = 64 and 128, entities without interactions and heavy ones.
    #[test]
    fn simd_cholesky_solve_matches_dense_solve() {
        let mut r = SplitMix::new(12);
        for (m, d, n) in [
            (100, 8, 3),
            (200, 24, 0),
            (300, 64, 9),
            (400, 64, 150),
            (500, 128, 40),
        ] {
            let (ys, g, cols, conf) = entity(&mut r, (m, d, n), 0.3, 10.0);
            let mut x = vec![0.0; d];
            assert!(Solver::new(d).solve(&g, 0.1, &ys, &cols, &conf, &mut x));
            let want = naive_solve(&g, 0.1, &ys, &cols, &conf, d);
            let scale = want.iter().map(|v| v.abs()).fold(1e-3f64, f64::max);
            for (a, b) in x.iter().zip(&want) {
                assert!(
                    (*a as f64 - b).abs() < 2e-3 * scale,
                    "d={d} n={n}: {x:?} vs {want:?}"
                );
            }
        }
        // Not positive definite (zero Gram, λ = 0, no interactions): jitter, then a finite x.
        let d = 16;
        let mut x = vec![1.0; d];
        let ok = Solver::new(d).solve(&vec![0.0; d * d], 0.0, &[0.0; 16], &[], &[], &mut x);
        assert!(x.iter().all(|v| v.is_finite()), "{ok} {x:?}");
    }

    /// The AVX2 CG kernel against the portable one (the same algorithm), for d = 8..128 and
    /// entities with 0 to 300 interactions, warm-started from a random vector.
    #[test]
    fn simd_cg_matches_portable_cg() {
        let mut r = SplitMix::new(9);
        for (m, d, n) in [
            (40, 8, 0),
            (60, 16, 5),
            (200, 64, 30),
            (500, 64, 300),
            (300, 128, 40),
            (90, 72, 9),
        ] {
            let (ys, g, cols, conf) = entity(&mut r, (m, d, n), 0.3, 20.0);
            let x0: Vec<f32> = rand_mat(&mut r, d).iter().map(|v| 0.1 * v).collect();
            for steps in [1, 3, 8] {
                let mut want = x0.clone();
                let (mut sc, mut rr) = (vec![0.0; 2 * d], vec![0.0; d]);
                cg_portable(
                    &g, 0.05, &ys, &cols, &conf, &mut want, steps, &mut sc, &mut rr, None,
                );
                let mut got = x0.clone();
                Solver::new(d).cg(&g, 0.05, &ys, &cols, &conf, &mut got, steps, false);
                let scale = want.iter().map(|v| v.abs()).fold(1e-3f32, f32::max);
                for (a, b) in got.iter().zip(&want) {
                    assert!(
                        (a - b).abs() <= 2e-3 * scale,
                        "d={d} n={n} steps={steps}: {got:?} vs {want:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn solve_minimises_entity_loss() {
        // The exact solve is the minimiser: nudging x in any direction raises the loss.
        let mut r = SplitMix::new(3);
        let (m, d) = (30, 6);
        let ys = rand_mat(&mut r, m * d);
        let mut g = vec![0.0; d * d];
        gram(&ys, m, d, &mut g);
        let cols = [1u32, 5, 9, 20];
        let conf = [3.0f32, 1.0, 7.0, 2.0];
        let mut x = vec![0.0; d];
        Solver::new(d).solve(&g, 0.1, &ys, &cols, &conf, &mut x);
        let base = entity_loss(&g, 0.1, &ys, &cols, &conf, &x);
        for k in 0..d {
            for eps in [-1e-2f32, 1e-2] {
                let mut x2 = x.clone();
                x2[k] += eps;
                assert!(entity_loss(&g, 0.1, &ys, &cols, &conf, &x2) > base);
            }
        }
    }

    #[test]
    fn entity_loss_matches_dense_objective() {
        let mut r = SplitMix::new(4);
        let (m, d) = (12, 3);
        let ys = rand_mat(&mut r, m * d);
        let mut g = vec![0.0; d * d];
        gram(&ys, m, d, &mut g);
        let cols = [0u32, 4, 7];
        let conf = [2.0f32, 5.0, 1.5];
        let x = rand_mat(&mut r, d);
        let mut want = 0.3 * x.iter().map(|&v| (v * v) as f64).sum::<f64>();
        for i in 0..m {
            let s: f64 = (0..d).map(|k| x[k] as f64 * ys[i * d + k] as f64).sum();
            match cols.iter().position(|&c| c as usize == i) {
                Some(j) => want += conf[j] as f64 * (1.0 - s).powi(2),
                None => want += s * s,
            }
        }
        let got = entity_loss(&g, 0.3, &ys, &cols, &conf, &x);
        assert!(
            (got - want).abs() < 1e-4 * want.abs().max(1.0),
            "{got} vs {want}"
        );
    }
}
