//! The direct solve of one entity's normal equations: the system formed explicitly and
//! factorised (faer's Cholesky, or the AVX2 upper-triangle kernels where they run).

#[cfg(target_arch = "x86_64")]
use super::simd;
use super::Solver;
use faer::linalg::cholesky::llt;
use faer::{Accum, MatMut, MatRef, Par};

impl Solver {
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
