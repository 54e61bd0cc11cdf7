//! One group of up to [`LANES`] entities swept block by block (see [`super::Block::sweep_side`]).
//!
//! Per block, on the AVX2 path: the Gram term `G_B· x` of the whole group is one small GEMM
//! (each `G` row segment loaded once for several entities, one FMA chain per output in a fixed
//! order over the `d` coordinates), each entity's system is built as before, and the group's
//! `w × w` systems are factorised and solved together, one entity per lane ([`lanes`]). The
//! group's pair rows are prefetched one group ahead, so the residuals and block steps read
//! them from L2 instead of waiting on memory pair by pair. Nothing an entity computes depends
//! on which entities share its group: results are the same for any worker layout.

use super::gram_term::gram_cols;
use super::lanes::{self, LANES};
use super::{axpy, dot, Block};

/// What a side's sweep reads: the Gram, the gathered other side, the side's CSR and its λs.
/// Built by [`Inputs::new`], which checks once that every pair's row lies in `gathered`
/// (the per-pair kernels rely on it).
pub struct Inputs<'a> {
    d: usize,
    g: &'a [f32],
    gathered: &'a [f32],
    indptr: &'a [usize],
    cols: &'a [u32],
    conf: &'a [f32],
    lambdas: &'a [f32],
    /// The Gram block-major ([`super::gram_term::slab_of`]): block `k0..k0 + w` is `d × w` at `k0·d`.
    slab: &'a [f32],
}

impl<'a> Inputs<'a> {
    /// The sweep's inputs for dimension `d`; `slab` may be empty when no lane step runs.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        d: usize,
        g: &'a [f32],
        gathered: &'a [f32],
        (indptr, cols, conf): (&'a [usize], &'a [u32], &'a [f32]),
        lambdas: &'a [f32],
        slab: &'a [f32],
    ) -> Self {
        let rows = indptr.len().saturating_sub(1);
        assert!(g.len() >= d * d && lambdas.len() == rows && conf.len() == cols.len());
        assert!(indptr.windows(2).all(|p| p[0] <= p[1]) && indptr.last() <= Some(&cols.len()));
        assert!(
            cols.iter().all(|&c| (c as usize + 1) * d <= gathered.len()),
            "block sweep: a pair's column lies past the gathered rows ({} of width {d})",
            gathered.len() / d.max(1)
        );
        Inputs {
            d,
            g,
            gathered,
            indptr,
            cols,
            conf,
            lambdas,
            slab,
        }
    }
}

/// Bytes of a group's pair rows that stay in L2 between its residual pass and its blocks;
/// beyond that the block loop prefetches each next block's segments.
const RESIDENT_BYTES: usize = 512 << 10;

impl Block {
    /// Whether blocks of `w` go through the lane-stacked path.
    fn lanes_for(&self, w: usize) -> bool {
        self.lanes && w.is_multiple_of(8) && w <= lanes::MAX_W && self.d.is_multiple_of(8)
    }

    /// Residuals, then every block's step for the rows `group` (at most [`LANES`]); marks the
    /// rows where a block's system was not positive definite in `failed`.
    pub(super) fn sweep_group(
        &mut self,
        inp: &Inputs,
        group: &[usize],
        s: &mut [f32],
        factors: &mut [f32],
        failed: &mut [bool],
    ) {
        let d = self.d;
        assert!(group.len() <= LANES);
        for &r in group {
            let x = &factors[r * d..(r + 1) * d];
            let (a, b) = (inp.indptr[r], inp.indptr[r + 1]);
            for (s, &c) in s[a..b].iter_mut().zip(&inp.cols[a..b]) {
                *s = dot(&inp.gathered[c as usize * d..(c as usize + 1) * d], x);
            }
        }
        let whole = pairs_of(inp, group) * d * 4 <= RESIDENT_BYTES;
        let mut k0 = 0;
        while k0 < d {
            let w = self.b.min(d - k0);
            if !whole && k0 + w < d {
                let next = self.b.min(d - k0 - w);
                for &r in group {
                    prefetch_rows(inp, r, k0 + w, next);
                }
            }
            if self.lanes_for(w) {
                self.lane_step(inp, group, s, factors, failed, k0, w);
            } else {
                for &r in group {
                    let (a, b) = (inp.indptr[r], inp.indptr[r + 1]);
                    let pairs = (&inp.cols[a..b], &inp.conf[a..b], &mut s[a..b]);
                    let x = &mut factors[r * d..(r + 1) * d];
                    failed[r] |= !self.step(inp.g, inp.lambdas[r], inp.gathered, pairs, x, k0, w);
                }
            }
            k0 += w;
        }
    }

    /// The Newton step on coordinates `k0..k0 + w` for every row of `group`, the systems
    /// solved lane-stacked. A lane whose system is not positive definite is redone by the
    /// per-entity [`Block::step`] (with its jitter retry).
    #[allow(clippy::too_many_arguments)]
    fn lane_step(
        &mut self,
        inp: &Inputs,
        group: &[usize],
        s: &mut [f32],
        factors: &mut [f32],
        failed: &mut [bool],
        k0: usize,
        w: usize,
    ) {
        let d = self.d;
        let xs: Vec<&[f32]> = group
            .iter()
            .map(|&r| &factors[r * d..(r + 1) * d])
            .collect();
        let mut grads = std::mem::take(&mut self.grads);
        grads.resize(2 * LANES * w, 0.0);
        self.zero.resize(d, 0.0);
        gram_cols(
            &inp.slab[k0 * d..(k0 + w) * d],
            d,
            w,
            &xs,
            &self.zero,
            &mut grads,
        );
        let mut a8 = std::mem::take(&mut self.a8);
        a8.resize(LANES * w * w, 0.0);
        let mut rhs = std::mem::take(&mut self.rhs);
        rhs.resize(w * LANES, 0.0);
        for (l, &r) in group.iter().enumerate() {
            let (a, b) = (inp.indptr[r], inp.indptr[r + 1]);
            let (cols, conf, lam) = (&inp.cols[a..b], &inp.conf[a..b], inp.lambdas[r]);
            let x = &factors[r * d + k0..r * d + k0 + w];
            // (A x − r)_B = (G x)_B + λ x_B + Σ_j ((c_j − 1) s_j − c_j) y_jB.
            let grad = &mut grads[l * w..(l + 1) * w];
            grad.iter_mut().zip(x).for_each(|(gi, &xi)| *gi += lam * xi);
            pair_gradient(inp, r, &s[a..b], k0, grad);
            for (i, &gi) in grad.iter().enumerate() {
                rhs[i * LANES + l] = -gi;
            }
            let sys = &mut a8[l * w * w..(l + 1) * w * w];
            self.build_into(sys, inp, (cols, conf), lam, k0, w);
        }
        let mut packed = std::mem::take(&mut self.packed);
        packed.resize(lanes::packed_len(w), 0.0);
        lanes::pack_lanes(&a8, w, &mut packed);
        for l in group.len()..LANES {
            lanes::put_identity(&mut packed, w, l);
            (0..w).for_each(|i| rhs[i * LANES + l] = 0.0);
        }
        let ok = lanes::cholesky_solve(&mut packed, w, &mut rhs);
        for (l, &r) in group.iter().enumerate() {
            let (a, b) = (inp.indptr[r], inp.indptr[r + 1]);
            let x = &mut factors[r * d..(r + 1) * d];
            if ok & (1 << l) == 0 {
                let pairs = (&inp.cols[a..b], &inp.conf[a..b], &mut s[a..b]);
                failed[r] |= !self.step(inp.g, inp.lambdas[r], inp.gathered, pairs, x, k0, w);
                continue;
            }
            let delta = &mut self.coef[..w];
            delta
                .iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = rhs[i * LANES + l]);
            super::relax(delta, self.omega);
            x[k0..k0 + w]
                .iter_mut()
                .zip(&*delta)
                .for_each(|(x, v)| *x += v);
            pair_residuals(inp, r, &mut s[a..b], k0, delta);
        }
        (self.grads, self.packed, self.rhs, self.a8) = (grads, packed, rhs, a8);
    }

    /// `sys = G_BB + λI + Σ_j (c_j − 1) y_jB y_jBᵀ` (upper triangle) for one entity's pairs:
    /// [`Block::build`]'s sums on AVX-512 when `w` allows (the same FMA chains, so the same
    /// bits), else `build` itself.
    fn build_into(
        &mut self,
        sys: &mut [f32],
        inp: &Inputs,
        (cols, conf): (&[u32], &[f32]),
        lam: f32,
        k0: usize,
        w: usize,
    ) {
        let d = self.d;
        #[cfg(target_arch = "x86_64")]
        if super::avx512::usable(w) {
            for i in 0..w {
                let row = &inp.g[(k0 + i) * d + k0..(k0 + i) * d + k0 + w];
                sys[i * w..(i + 1) * w].copy_from_slice(row);
                // From `row`, not `sys`: reading back one float of the fresh wide copy stalls.
                sys[i * w + i] = row[i] + lam;
            }
            self.ys.clear();
            self.ys.extend(
                cols.iter()
                    .map(|&c| inp.gathered[c as usize * d + k0..].as_ptr()),
            );
            self.scaled.resize(cols.len() * w, 0.0);
            // SAFETY: usable(w) checked; each pointer starts a w-float segment of `gathered`
            // (k0 + w ≤ d, rows checked by Inputs::new); `scaled` holds cols.len() · w floats.
            unsafe { super::avx512::scale_rows(&self.ys, conf, w, &mut self.scaled) };
            // SAFETY: usable(w) checked the features and w; `sys` is w × w, `scaled` holds
            // one w-row per pair and every pointer w floats of `gathered`.
            unsafe { super::avx512::syrk_upper(sys, w, &self.scaled, &self.ys) };
            return;
        }
        self.build(inp.g, lam, inp.gathered, cols, conf, k0, w);
        sys.copy_from_slice(&self.a[..w * w]);
    }
}

/// `grad += Σ_j ((c_j − 1) s_j − c_j) y_jB` over row `r`'s pairs in order, `s` its residuals
/// (the same operations as one [`axpy`] per pair, without a call and a reload of `grad` each).
fn pair_gradient(inp: &Inputs, r: usize, s: &[f32], k0: usize, grad: &mut [f32]) {
    let (d, w, (a, b)) = (inp.d, grad.len(), (inp.indptr[r], inp.indptr[r + 1]));
    let (cols, conf) = (&inp.cols[a..b], &inp.conf[a..b]);
    assert!(s.len() == cols.len() && k0 + w <= d);
    #[cfg(target_arch = "x86_64")]
    if super::super::kernels::simd::usable(w) {
        // SAFETY: features and w % 8 == 0 checked; every row of `inp.cols` lies in
        // `gathered` (Inputs::new) and k0 + w ≤ d.
        unsafe { avx::pair_gradient(inp.gathered.as_ptr(), d, k0, (cols, conf, s), grad) };
        return;
    }
    for ((&c, &sj), &col) in conf.iter().zip(s).zip(cols) {
        let y = &inp.gathered[col as usize * d + k0..col as usize * d + k0 + w];
        axpy(grad, (c - 1.0) * sj - c, y);
    }
}

/// `s_j += y_jB · delta` over row `r`'s pairs (one [`dot`] each, without a call per pair).
fn pair_residuals(inp: &Inputs, r: usize, s: &mut [f32], k0: usize, delta: &[f32]) {
    let (d, w, (a, b)) = (inp.d, delta.len(), (inp.indptr[r], inp.indptr[r + 1]));
    let cols = &inp.cols[a..b];
    assert!(s.len() == cols.len() && k0 + w <= d);
    #[cfg(target_arch = "x86_64")]
    if super::super::kernels::simd::usable(w) {
        // SAFETY: as in pair_gradient.
        unsafe { avx::pair_residuals(inp.gathered.as_ptr(), d, k0, cols, s, delta) };
        return;
    }
    for (sj, &col) in s.iter_mut().zip(cols) {
        let y = &inp.gathered[col as usize * d + k0..col as usize * d + k0 + w];
        *sj += dot(y, delta);
    }
}

/// Pairs of the rows `group`.
pub fn pairs_of(inp: &Inputs, group: &[usize]) -> usize {
    group
        .iter()
        .map(|&r| inp.indptr[r + 1] - inp.indptr[r])
        .sum()
}

/// Asks the cache for the start of the next group's pair rows (two lines each: the residual
/// pass then streams each row on the hardware prefetcher), so those misses overlap this
/// group's work instead of stalling the next group's first dot products one row at a time.
pub fn prefetch_group(inp: &Inputs, group: &[usize]) {
    for &r in group {
        prefetch_rows(inp, r, 0, 32.min(inp.d));
    }
}

/// Prefetches coordinates `k0..k0 + len` of the gathered rows of row `r`'s pairs (a hint only).
fn prefetch_rows(inp: &Inputs, r: usize, k0: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        for &c in &inp.cols[inp.indptr[r]..inp.indptr[r + 1]] {
            let start = c as usize * inp.d + k0;
            let Some(seg) = inp.gathered.get(start..start + len) else {
                continue;
            };
            // One hint per 64-byte line, and the segment's last float (its line may be one more).
            let mut off = 0;
            while off < len {
                // SAFETY: prefetch is a hint; the address lies inside `gathered`.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(seg.as_ptr().add(off) as *const i8) };
                off += 16;
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (inp, r, k0, len);
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::super::super::kernels::simd;

    /// [`super::pair_gradient`]: the [`simd::axpy`] of every pair, inlined.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `w = grad.len()` a multiple of 8; every
    /// `cols[j]·d + k0 + w` within the gathered rows at `y`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn pair_gradient(
        y: *const f32,
        d: usize,
        k0: usize,
        (cols, conf, s): (&[u32], &[f32], &[f32]),
        grad: &mut [f32],
    ) {
        let (w, gp) = (grad.len(), grad.as_mut_ptr());
        for ((&c, &sj), &col) in conf.iter().zip(s).zip(cols) {
            simd::axpy(gp, (c - 1.0) * sj - c, y.add(col as usize * d + k0), w);
        }
    }

    /// [`super::pair_residuals`]: the [`simd::dot`] of every pair, inlined.
    ///
    /// # Safety
    /// As [`pair_gradient`], with `w = delta.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn pair_residuals(
        y: *const f32,
        d: usize,
        k0: usize,
        cols: &[u32],
        s: &mut [f32],
        delta: &[f32],
    ) {
        let w = delta.len();
        for (sj, &col) in s.iter_mut().zip(cols) {
            *sj += simd::dot(y.add(col as usize * d + k0), delta.as_ptr(), w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::kernels::gram;
    use super::*;
    use crate::ids::SplitMix;

    /// A side of `rows` entities over `m` other-side rows of dimension `d`: (Gram, gathered,
    /// indptr, cols, conf, λs, factors); row degrees from 0 to ~3·mean so groups are ragged.
    #[allow(clippy::type_complexity)]
    fn side(
        r: &mut SplitMix,
        rows: usize,
        m: usize,
        d: usize,
    ) -> (
        Vec<f32>,
        Vec<f32>,
        Vec<usize>,
        Vec<u32>,
        Vec<f32>,
        Vec<f32>,
        Vec<f32>,
    ) {
        let ys: Vec<f32> = (0..m * d).map(|_| 0.3 * r.next_normal() as f32).collect();
        let mut g = vec![0.0; d * d];
        gram(&ys, m, d, &mut g);
        let (mut indptr, mut cols, mut conf) = (vec![0], Vec::new(), Vec::new());
        for _ in 0..rows {
            let n = r.below(3 * 12) as usize;
            let mut c: Vec<u32> = (0..n).map(|_| r.below(m as u64) as u32).collect();
            c.sort_unstable();
            c.dedup();
            conf.extend(c.iter().map(|_| 1.0 + 20.0 * r.next_f64() as f32));
            cols.extend(c);
            indptr.push(cols.len());
        }
        let lams = (0..rows).map(|_| 0.05 + r.next_f64() as f32).collect();
        let x = (0..rows * d)
            .map(|_| 0.1 * r.next_normal() as f32)
            .collect();
        (g, ys, indptr, cols, conf, lams, x)
    }

    /// The AVX-512 build of a block system equals [`Block::build`]'s bit for bit (upper
    /// triangle), for entities with 0 to many pairs.
    #[test]
    fn wide_build_equals_build_bit_for_bit() {
        let mut r = SplitMix::new(44);
        let d = 96;
        let (g, ys, indptr, cols, conf, lams, _) = side(&mut r, 12, 200, d);
        let inp = Inputs::new(d, &g, &ys, (&indptr, &cols, &conf), &lams, &[]);
        for (b, k0) in [(16, 16), (32, 64), (48, 48), (64, 32)] {
            let mut bl = Block::new(d, b);
            for row in 0..12 {
                let (a, e) = (indptr[row], indptr[row + 1]);
                let mut sys = vec![0.0; b * b];
                bl.build_into(&mut sys, &inp, (&cols[a..e], &conf[a..e]), lams[row], k0, b);
                bl.build(&g, lams[row], &ys, &cols[a..e], &conf[a..e], k0, b);
                for i in 0..b {
                    for j in i..b {
                        let (x, y) = (sys[i * b + j], bl.a[i * b + j]);
                        assert_eq!(x.to_bits(), y.to_bits(), "b={b} row={row} ({i},{j})");
                    }
                }
            }
        }
    }

    /// Lane-stacked group steps give the per-entity steps' vectors (up to rounding) for block
    /// sizes on the lane path (8..=64), beside it (24 with d = 60: not a multiple of 8, 128),
    /// and ragged last blocks, exact and relaxed.
    #[test]
    fn lane_steps_match_per_entity_steps() {
        let mut r = SplitMix::new(42);
        for (d, b, omega) in [
            (64, 8, 1.0),
            (64, 16, 0.8),
            (64, 32, 1.0),
            (64, 32, 0.8),
            (64, 64, 1.0),
            (96, 40, 1.3),
            (128, 48, 0.8),
            (128, 128, 1.0),
            (60, 24, 0.8),
        ] {
            let (g, ys, indptr, cols, conf, lams, x0) = side(&mut r, 21, 150, d);
            let mut want = x0.clone();
            let mut slow = Block::new(d, b).relaxed(omega);
            slow.lanes = false;
            let f0 = slow.sweep_side(&g, &ys, (&indptr, &cols, &conf), &mut want, &lams, |_| true);
            let mut got = x0.clone();
            let f1 = Block::new(d, b).relaxed(omega).sweep_side(
                &g,
                &ys,
                (&indptr, &cols, &conf),
                &mut got,
                &lams,
                |_| true,
            );
            assert_eq!((f0, f1), (0, 0));
            let scale = want.iter().map(|v| v.abs()).fold(1e-3f32, f32::max);
            for (a, w) in got.iter().zip(&want) {
                assert!((a - w).abs() < 1e-4 * scale, "d={d} b={b}: {a} vs {w}");
            }
        }
    }

    /// An entity's vector is bit-identical whichever entities share its group: the whole side,
    /// every other row (other groups, other lanes), and each row alone.
    #[test]
    fn an_entity_is_the_same_in_any_group() {
        let mut r = SplitMix::new(43);
        let d = 64;
        let (g, ys, indptr, cols, conf, lams, x0) = side(&mut r, 19, 120, d);
        let csr = (&indptr[..], &cols[..], &conf[..]);
        let mut all = x0.clone();
        Block::new(d, 32).sweep_side(&g, &ys, csr, &mut all, &lams, |_| true);
        let mut odd = x0.clone();
        Block::new(d, 32).sweep_side(&g, &ys, csr, &mut odd, &lams, |r| r % 2 == 1);
        for row in 0..19 {
            let mut alone = x0.clone();
            Block::new(d, 32).sweep_side(&g, &ys, csr, &mut alone, &lams, |r| r == row);
            let span = row * d..(row + 1) * d;
            assert_eq!(alone[span.clone()], all[span.clone()], "row {row} alone");
            if row % 2 == 1 {
                assert_eq!(
                    odd[span.clone()],
                    all[span.clone()],
                    "row {row} among odd rows"
                );
            } else {
                assert_eq!(odd[span.clone()], x0[span], "row {row} not kept");
            }
        }
    }
}
