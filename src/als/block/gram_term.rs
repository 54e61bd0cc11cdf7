//! The Gram term of a block step for a group of entities, `(G x_e)_B` for every `e`: one
//! small GEMM per group and block instead of one matrix-vector product per entity.
//!
//! `G` is first rearranged block-major ([`slab_of`]) so a block's `d × w` slab streams in
//! order; each slab row is loaded once for several entities (3 on AVX2, up to 8 on AVX-512).
//! Every output is one FMA chain over the `d` coordinates in order, whichever entities share
//! a tile and whichever instruction set runs, so results are bit-identical across worker
//! layouts and across machines with and without AVX-512.

use super::lanes::LANES;

/// `G` rearranged block-major for blocks of `b`: block `k0..k0 + w` holds rows
/// `G[t][k0..k0 + w]` contiguously, so a block's Gram term streams `d·w` floats in order.
pub fn slab_of(g: &[f32], d: usize, b: usize, out: &mut Vec<f32>) {
    out.clear();
    let mut k0 = 0;
    while k0 < d {
        let w = b.min(d - k0);
        for t in 0..d {
            out.extend_from_slice(&g[t * d + k0..t * d + k0 + w]);
        }
        k0 += w;
    }
}

/// `out[e·w + i] = Σ_t G[t][k0 + i] · xs[e][t]` for `i < w` (the Gram term of block `k0..k0+w`
/// for every entity `e`; `G` symmetric, so its columns are its rows), from the block's `slab`
/// (`d × w`, [`slab_of`]). Each output is one FMA chain over `t = 0..d` in order, whichever
/// entities share the call. `out` needs rows past `xs.len()` for the AVX-512 tiles' padding
/// (`2·LANES·w` floats hold any group); `zero` is `d` zeros.
pub fn gram_cols(slab: &[f32], d: usize, w: usize, xs: &[&[f32]], zero: &[f32], out: &mut [f32]) {
    assert!(slab.len() >= d * w && out.len() >= 2 * LANES.max(xs.len()) * w && zero.len() >= d);
    assert!(xs.iter().all(|x| x.len() == d) && xs.len() <= 2 * LANES);
    #[cfg(target_arch = "x86_64")]
    if super::avx512::usable(w) && d > 0 {
        // SAFETY: usable(w) checked; slab is d × w, xs and zero hold d floats, out has room
        // for the padded last tile (asserted above).
        unsafe { super::avx512::gram_cols(slab, d, w, xs, zero, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::super::kernels::simd::usable(w) && d > 0 {
        return gram_cols_avx2(slab, d, w, xs, out);
    }
    let _ = zero;
    for (e, x) in xs.iter().enumerate() {
        for i in 0..w {
            let mut acc = 0.0f32;
            for (t, &xt) in x.iter().enumerate() {
                acc = slab[t * w + i].mul_add(xt, acc);
            }
            out[e * w + i] = acc;
        }
    }
}

/// [`gram_cols`] on AVX2: tiles of up to 3 entities × 4 vectors.
#[cfg(target_arch = "x86_64")]
fn gram_cols_avx2(slab: &[f32], d: usize, w: usize, xs: &[&[f32]], out: &mut [f32]) {
    assert!(super::super::kernels::simd::usable(w) && slab.len() >= d * w);
    assert!(out.len() >= xs.len() * w && xs.iter().all(|x| x.len() == d));
    let mut e = 0;
    while e < xs.len() {
        let n = (xs.len() - e).min(3);
        let mut v = 0;
        while v < w / 8 {
            let nv = (w / 8 - v).min(4);
            // SAFETY: AVX2 and FMA detected; slab rows `t·w + 8v ..+ 8nv` lie in `slab`, each
            // `xs` holds d floats and `out` holds xs.len() · w (asserted above).
            unsafe { avx::gram_tile(slab, d, w, 8 * v, &xs[e..e + n], out, e, nv) };
            v += nv;
        }
        e += n;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    /// Outputs `i0 .. i0 + 8·nv` of [`super::gram_cols`] for the (at most 3) entities `xs`,
    /// written at `out[(e0 + e)·w + i0 ..]`.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `slab` is `d × w` with `i0 + 8·nv ≤ w`; every `xs[e]`
    /// holds `d` floats; `out` holds `(e0 + xs.len())·w` floats.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gram_tile(
        slab: &[f32],
        d: usize,
        w: usize,
        i0: usize,
        xs: &[&[f32]],
        out: &mut [f32],
        e0: usize,
        nv: usize,
    ) {
        let (gp, op) = (slab.as_ptr().add(i0), out.as_mut_ptr().add(e0 * w + i0));
        macro_rules! go {
            ($e:literal, $v:literal) => {
                tile::<$e, $v>(gp, d, w, xs, op)
            };
        }
        match (xs.len(), nv) {
            (1, 1) => go!(1, 1),
            (1, 2) => go!(1, 2),
            (1, 3) => go!(1, 3),
            (1, 4) => go!(1, 4),
            (2, 1) => go!(2, 1),
            (2, 2) => go!(2, 2),
            (2, 3) => go!(2, 3),
            (2, 4) => go!(2, 4),
            (3, 1) => go!(3, 1),
            (3, 2) => go!(3, 2),
            (3, 3) => go!(3, 3),
            (3, 4) => go!(3, 4),
            _ => unreachable!("gram_tile: {} entities, {nv} vectors", xs.len()),
        }
    }

    /// `E` entities × `V` vectors of outputs in registers while the `d` row segments stream.
    #[inline]
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const E: usize, const V: usize>(
        g: *const f32,
        d: usize,
        w: usize,
        xs: &[&[f32]],
        out: *mut f32,
    ) {
        let mut acc = [[_mm256_setzero_ps(); V]; E];
        let mut xp = [std::ptr::null::<f32>(); E];
        for e in 0..E {
            xp[e] = xs[e].as_ptr();
        }
        for t in 0..d {
            let row = g.add(t * w);
            let mut gv = [_mm256_setzero_ps(); V];
            for v in 0..V {
                gv[v] = _mm256_loadu_ps(row.add(8 * v));
            }
            for e in 0..E {
                let xb = _mm256_set1_ps(*xp[e].add(t));
                for v in 0..V {
                    acc[e][v] = _mm256_fmadd_ps(gv[v], xb, acc[e][v]);
                }
            }
        }
        for e in 0..E {
            for v in 0..V {
                _mm256_storeu_ps(out.add(e * w + 8 * v), acc[e][v]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::kernels::gram;
    use super::*;
    use crate::ids::SplitMix;

    /// The Gram GEMM equals the naive per-output FMA chain bit for bit, on every path this
    /// machine has (AVX-512, AVX2, portable), for any number of entities per call and block
    /// widths that are and are not whole tiles.
    #[test]
    fn gram_cols_equals_the_naive_chain() {
        let mut r = SplitMix::new(41);
        let d = 80;
        let ys: Vec<f32> = (0..100 * d).map(|_| r.next_normal() as f32).collect();
        let mut g = vec![0.0; d * d];
        gram(&ys, 100, d, &mut g);
        let xs: Vec<Vec<f32>> = (0..8)
            .map(|_| (0..d).map(|_| r.next_normal() as f32).collect())
            .collect();
        let zero = vec![0.0; d];
        for (k0, w) in [
            (0, 8),
            (8, 32),
            (16, 64),
            (40, 24),
            (32, 48),
            (0, 16),
            (0, 80),
        ] {
            let slab: Vec<f32> = (0..d)
                .flat_map(|t| g[t * d + k0..t * d + k0 + w].to_vec())
                .collect();
            for n in 1..=8 {
                let refs: Vec<&[f32]> = xs[..n].iter().map(|x| &x[..]).collect();
                let mut out = vec![0.0; 2 * LANES * w];
                gram_cols(&slab, d, w, &refs, &zero, &mut out);
                #[cfg(target_arch = "x86_64")]
                let mut avx2 = vec![f32::NAN; n * w];
                #[cfg(target_arch = "x86_64")]
                if super::super::super::kernels::simd_usable(w) {
                    gram_cols_avx2(&slab, d, w, &refs, &mut avx2);
                }
                for (e, x) in refs.iter().enumerate() {
                    for i in 0..w {
                        let mut acc = 0.0f32;
                        for t in 0..d {
                            acc = g[t * d + k0 + i].mul_add(x[t], acc);
                        }
                        assert_eq!(out[e * w + i].to_bits(), acc.to_bits(), "k0={k0} w={w}");
                        #[cfg(target_arch = "x86_64")]
                        if super::super::super::kernels::simd_usable(w) {
                            assert_eq!(avx2[e * w + i].to_bits(), acc.to_bits(), "avx2 w={w}");
                        }
                    }
                }
            }
        }
    }
}
