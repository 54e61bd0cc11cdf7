//! Small SPD solves for [`LANES`] entities at once, one entity per SIMD lane.
//!
//! A block step factorises a `w × w` system per entity (w = 32 by default). One such
//! factorisation is a chain of `w` pivots whose rows shrink below a vector's width, so a
//! per-entity kernel waits on latency; stacking eight entities' systems lane by lane makes
//! every operation a full-width vertical one with no horizontal sums, and the pivots of eight
//! entities proceed together. Lanes never mix: each lane's result is exactly what it would be
//! with any other entities (or padding) in the other lanes, so models stay bit-identical for
//! any worker layout.
//!
//! Layout: the upper triangle packed row by row (row `i` holds columns `i..w`), each element
//! a run of [`LANES`] floats, one per entity; right-hand sides `w` runs of [`LANES`].

/// Entities per lane-stacked system (the f32 width of an AVX2 register).
pub const LANES: usize = 8;

/// The largest order solved lane-stacked (64: 66 KiB of triangles, still in L2); larger
/// blocks are long enough for the per-entity kernels to run at full width.
pub const MAX_W: usize = 64;

/// Floats of one lane-stacked packed upper triangle of order `w`.
pub fn packed_len(w: usize) -> usize {
    w * (w + 1) / 2 * LANES
}

/// Element index (in runs of [`LANES`]) of `(i, j)`, `j ≥ i`, in the packed upper triangle.
#[inline]
fn at(w: usize, i: usize, j: usize) -> usize {
    i * (2 * w - i + 1) / 2 + (j - i)
}

/// Stores the upper triangle of the row-major `w × w` matrix `a` into lane `lane` of `packed`.
pub fn put_upper(packed: &mut [f32], w: usize, lane: usize, a: &[f32]) {
    assert!(packed.len() >= packed_len(w) && a.len() >= w * w && lane < LANES);
    let mut e = 0;
    for i in 0..w {
        for &v in &a[i * w + i..(i + 1) * w] {
            packed[e * LANES + lane] = v;
            e += 1;
        }
    }
}

/// Stores the upper triangles of the [`LANES`] row-major `w × w` matrices `a8` (lane `l` at
/// `l·w²`) into `packed`: [`put_upper`] for every lane, eight columns of eight lanes at a
/// time through an 8 × 8 register transpose on AVX2 (`w` a multiple of 8 there).
pub fn pack_lanes(a8: &[f32], w: usize, packed: &mut [f32]) {
    assert!(a8.len() >= LANES * w * w && packed.len() >= packed_len(w));
    #[cfg(target_arch = "x86_64")]
    if super::super::kernels::simd::usable(w) {
        // SAFETY: AVX2 and FMA detected, w a multiple of 8; lengths asserted above.
        unsafe { avx::pack(a8.as_ptr(), w, packed.as_mut_ptr()) };
        return;
    }
    for l in 0..LANES {
        put_upper(packed, w, l, &a8[l * w * w..(l + 1) * w * w]);
    }
}

/// Lane `lane` of `packed` becomes the identity (padding for a group with fewer entities).
pub fn put_identity(packed: &mut [f32], w: usize, lane: usize) {
    assert!(packed.len() >= packed_len(w) && lane < LANES);
    for i in 0..w {
        for j in i..w {
            packed[at(w, i, j) * LANES + lane] = if i == j { 1.0 } else { 0.0 };
        }
    }
}

/// Solves each lane's `A x = rhs` in place (`rhs` becomes `x`) for the lane-stacked packed
/// upper triangles `packed` (destroyed: they end as the Cholesky factors `U`, `A = UᵀU`).
/// Returns the bit mask of lanes whose system was positive definite; the others' `rhs` runs
/// are garbage. Falls back to [`solve_portable`] without AVX2.
pub fn cholesky_solve(packed: &mut [f32], w: usize, rhs: &mut [f32]) -> u32 {
    assert!(w <= MAX_W && packed.len() >= packed_len(w) && rhs.len() >= w * LANES);
    #[cfg(target_arch = "x86_64")]
    if super::super::kernels::simd::usable(LANES) {
        // SAFETY: AVX2 and FMA detected; lengths asserted above.
        return unsafe { avx::cholesky_solve(packed.as_mut_ptr(), w, rhs.as_mut_ptr()) };
    }
    solve_portable(packed, w, rhs)
}

/// The reference for [`cholesky_solve`]: the same Crout factorisation and column sweeps,
/// lane by lane in scalar f32 (identical operations, so the same results up to FMA rounding).
pub fn solve_portable(packed: &mut [f32], w: usize, rhs: &mut [f32]) -> u32 {
    let mut ok = 0u32;
    for l in 0..LANES {
        let u = |p: &[f32], i: usize, j: usize| p[at(w, i, j) * LANES + l];
        let mut good = true;
        let mut inv = vec![0.0f32; w];
        for i in 0..w {
            for j in i..w {
                let mut acc = u(packed, i, j);
                if i == j {
                    let mut p = [0.0f32; 4];
                    for k in 0..i {
                        p[k % 4] += u(packed, k, i) * u(packed, k, i);
                    }
                    acc -= (p[0] + p[1]) + (p[2] + p[3]);
                } else {
                    for k in 0..i {
                        acc -= u(packed, k, i) * u(packed, k, j);
                    }
                }
                if i == j {
                    if !(acc > 0.0 && acc.is_finite()) {
                        good = false;
                        acc = 1.0;
                    }
                    acc = acc.sqrt();
                    inv[i] = 1.0 / acc;
                } else {
                    acc *= inv[i];
                }
                packed[at(w, i, j) * LANES + l] = acc;
            }
        }
        for k in 0..w {
            let z = rhs[k * LANES + l] * inv[k];
            rhs[k * LANES + l] = z;
            for j in k + 1..w {
                rhs[j * LANES + l] -= u(packed, k, j) * z;
            }
        }
        for i in (0..w).rev() {
            let x = rhs[i * LANES + l] * inv[i];
            rhs[i * LANES + l] = x;
            for k in 0..i {
                rhs[k * LANES + l] -= u(packed, k, i) * x;
            }
        }
        if good && (0..w).all(|i| rhs[i * LANES + l].is_finite()) {
            ok |= 1 << l;
        }
    }
    ok
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{at, LANES};
    use std::arch::x86_64::*;

    /// [`super::cholesky_solve`] on AVX2: Crout order (row `i` of `U` from the finished rows
    /// above it, eight columns per pass so eight FMA chains run at once), then the two
    /// triangular column sweeps.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `a` addresses a packed triangle of order `w`, `x`
    /// `w · LANES` floats, `w ≤ MAX_W`.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn cholesky_solve(a: *mut f32, w: usize, x: *mut f32) -> u32 {
        // Row i's run of (i, j) starts at `row[i] + j` (runs of LANES floats).
        let mut row = [0usize; super::MAX_W];
        for (i, r) in row.iter_mut().enumerate().take(w) {
            *r = at(w, i, i) - i;
        }
        let el = |i: usize, j: usize| a.add((row[i] + j) * LANES);
        let mut inv = [_mm256_setzero_ps(); super::MAX_W];
        let one = _mm256_set1_ps(1.0);
        let inf = _mm256_set1_ps(f32::INFINITY);
        let mut good = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
        for i in 0..w {
            // a_ii − Σ_k u_ki², in four interleaved partial sums (four chains, not one).
            let mut p = [_mm256_setzero_ps(); 4];
            for k in 0..i {
                let u = _mm256_loadu_ps(el(k, i));
                p[k % 4] = _mm256_fmadd_ps(u, u, p[k % 4]);
            }
            let sq = _mm256_add_ps(_mm256_add_ps(p[0], p[1]), _mm256_add_ps(p[2], p[3]));
            let p = _mm256_sub_ps(_mm256_loadu_ps(el(i, i)), sq);
            // Positive and finite (false for NaN); bad lanes continue on 1 and are masked out.
            let pos = _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_GT_OQ>(p, _mm256_setzero_ps()),
                _mm256_cmp_ps::<_CMP_LT_OQ>(p, inf),
            );
            good = _mm256_and_ps(good, pos);
            let s = _mm256_sqrt_ps(_mm256_blendv_ps(one, p, pos));
            _mm256_storeu_ps(el(i, i), s);
            inv[i] = _mm256_div_ps(one, s);
            let mut j = i + 1;
            while j < w {
                match (w - j).min(8) {
                    8 => crout::<8>(a, &row, i, j, inv[i]),
                    7 => crout::<7>(a, &row, i, j, inv[i]),
                    6 => crout::<6>(a, &row, i, j, inv[i]),
                    5 => crout::<5>(a, &row, i, j, inv[i]),
                    4 => crout::<4>(a, &row, i, j, inv[i]),
                    3 => crout::<3>(a, &row, i, j, inv[i]),
                    2 => crout::<2>(a, &row, i, j, inv[i]),
                    _ => crout::<1>(a, &row, i, j, inv[i]),
                }
                j += 8;
            }
        }
        // Uᵀz = b, then U x = z, both as column sweeps (independent FMAs per step).
        let xv = |i: usize| x.add(i * LANES);
        for k in 0..w {
            let z = _mm256_mul_ps(_mm256_loadu_ps(xv(k)), inv[k]);
            _mm256_storeu_ps(xv(k), z);
            for j in k + 1..w {
                let r = _mm256_fnmadd_ps(_mm256_loadu_ps(el(k, j)), z, _mm256_loadu_ps(xv(j)));
                _mm256_storeu_ps(xv(j), r);
            }
        }
        for i in (0..w).rev() {
            let v = _mm256_mul_ps(_mm256_loadu_ps(xv(i)), inv[i]);
            _mm256_storeu_ps(xv(i), v);
            good = _mm256_and_ps(
                good,
                _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_andnot_ps(_mm256_set1_ps(-0.0), v), inf),
            );
            for k in 0..i {
                let r = _mm256_fnmadd_ps(_mm256_loadu_ps(el(k, i)), v, _mm256_loadu_ps(xv(k)));
                _mm256_storeu_ps(xv(k), r);
            }
        }
        _mm256_movemask_ps(good) as u32
    }

    /// [`super::pack_lanes`]: per row, each 8-column chunk of the eight matrices transposed
    /// into eight lane runs.
    ///
    /// # Safety
    /// AVX2 must be available; `a8` holds `LANES·w²` floats, `packed` a triangle of order
    /// `w`, `w` a multiple of 8.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn pack(a8: *const f32, w: usize, packed: *mut f32) {
        for i in 0..w {
            let mut c = i & !7;
            while c < w {
                let mut r = [_mm256_setzero_ps(); LANES];
                for (l, v) in r.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(a8.add(l * w * w + i * w + c));
                }
                let t = transpose(r);
                for (m, v) in t.iter().enumerate().filter(|&(m, _)| c + m >= i) {
                    _mm256_storeu_ps(packed.add(at(w, i, c + m) * LANES), *v);
                }
                c += 8;
            }
        }
    }

    /// `out[m]` = element `m` of every `r[l]`, lane `l`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn transpose(r: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }

    /// Columns `j .. j + J` of row `i` of `U`: `(a_ij − Σ_{k<i} u_ki u_kj) / u_ii`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn crout<const J: usize>(a: *mut f32, row: &[usize], i: usize, j: usize, inv: __m256) {
        let el = |r: usize, c: usize| a.add((row[r] + c) * LANES);
        let mut acc = [_mm256_setzero_ps(); J];
        for (t, v) in acc.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(el(i, j + t));
        }
        for k in 0..i {
            let u = _mm256_loadu_ps(el(k, i));
            let row = el(k, j);
            for (t, v) in acc.iter_mut().enumerate() {
                *v = _mm256_fnmadd_ps(u, _mm256_loadu_ps(row.add(t * LANES)), *v);
            }
        }
        for (t, v) in acc.iter().enumerate() {
            _mm256_storeu_ps(el(i, j + t), _mm256_mul_ps(*v, inv));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SplitMix;

    /// A random SPD matrix of order `w` (row-major), `BᵀB + w·I`-ish.
    fn spd(r: &mut SplitMix, w: usize) -> Vec<f32> {
        let b: Vec<f32> = (0..w * w).map(|_| r.next_normal() as f32).collect();
        let mut a = vec![0.0f32; w * w];
        for i in 0..w {
            for j in 0..w {
                a[i * w + j] = (0..w).map(|k| b[k * w + i] * b[k * w + j]).sum::<f32>();
            }
            a[i * w + i] += 0.5;
        }
        a
    }

    /// Lanes are independent: a lane that is not positive definite is reported and leaves the
    /// others as they would be alone, padding lanes (identity) return their right-hand side,
    /// and the SIMD kernel agrees with the scalar reference lane by lane.
    #[test]
    fn lane_solves_match_the_scalar_reference_per_lane() {
        let mut r = SplitMix::new(31);
        for w in [1, 5, 8, 13, 32, 40, 64] {
            let mut packed = vec![0.0f32; packed_len(w)];
            let mut rhs: Vec<f32> = (0..w * LANES).map(|_| r.next_normal() as f32).collect();
            let mut a0 = Vec::new();
            for l in 0..LANES {
                let mut a = spd(&mut r, w);
                a[w * w - 1] = if l == 3 { -1.0 } else { a[w * w - 1] };
                put_upper(&mut packed, w, l, &a);
                if l == 0 {
                    a0 = a;
                }
            }
            put_identity(&mut packed, w, 6);
            let b = rhs.clone();
            let (mut p2, mut r2) = (packed.clone(), rhs.clone());
            let ok = cholesky_solve(&mut packed, w, &mut rhs);
            assert_eq!(ok, 0xff & !(1 << 3), "w={w}");
            assert_eq!(solve_portable(&mut p2, w, &mut r2), ok, "w={w}");
            for l in (0..LANES).filter(|&l| l != 3) {
                for i in 0..w {
                    let (x, want) = (rhs[i * LANES + l], r2[i * LANES + l]);
                    assert!((x - want).abs() < 1e-3 * want.abs().max(1.0), "w={w} l={l}");
                }
            }
            for i in 0..w {
                assert_eq!(rhs[i * LANES + 6], b[i * LANES + 6]);
            }
            // Lane 0 alone (every other lane padding) gives bit-identical results.
            let mut alone = vec![0.0f32; packed_len(w)];
            let mut r1 = vec![0.0f32; w * LANES];
            for l in 1..LANES {
                put_identity(&mut alone, w, l);
            }
            put_upper(&mut alone, w, 0, &a0);
            for i in 0..w {
                r1[i * LANES] = b[i * LANES];
            }
            assert_eq!(cholesky_solve(&mut alone, w, &mut r1) & 1, 1);
            for i in 0..w {
                assert_eq!(r1[i * LANES].to_bits(), rhs[i * LANES].to_bits(), "w={w}");
            }
        }
    }

    /// The transposing pack equals [`put_upper`] lane by lane.
    #[test]
    fn pack_lanes_equals_put_upper() {
        let mut r = SplitMix::new(33);
        for w in [8, 16, 24, 64] {
            let a8: Vec<f32> = (0..LANES * w * w).map(|_| r.next_normal() as f32).collect();
            let (mut want, mut got) = (vec![0.0; packed_len(w)], vec![0.0; packed_len(w)]);
            for l in 0..LANES {
                put_upper(&mut want, w, l, &a8[l * w * w..(l + 1) * w * w]);
            }
            pack_lanes(&a8, w, &mut got);
            assert_eq!(got, want, "w={w}");
        }
    }

    /// The lane kernel solves `A x = b`: `A x` reproduces `b` for each lane.
    #[test]
    fn lane_solution_reproduces_the_right_hand_side() {
        let mut r = SplitMix::new(32);
        for w in [8, 32, 48] {
            let mut packed = vec![0.0f32; packed_len(w)];
            let mut rhs = vec![0.0f32; w * LANES];
            let mats: Vec<Vec<f32>> = (0..LANES).map(|_| spd(&mut r, w)).collect();
            for (l, a) in mats.iter().enumerate() {
                put_upper(&mut packed, w, l, a);
            }
            rhs.iter_mut().for_each(|v| *v = r.next_normal() as f32);
            let b = rhs.clone();
            assert_eq!(cholesky_solve(&mut packed, w, &mut rhs), 0xff);
            for (l, a) in mats.iter().enumerate() {
                for i in 0..w {
                    let ax: f64 = (0..w)
                        .map(|j| a[i * w + j] as f64 * rhs[j * LANES + l] as f64)
                        .sum();
                    let want = b[i * LANES + l] as f64;
                    assert!(
                        (ax - want).abs() < 2e-3 * want.abs().max(1.0),
                        "w={w} l={l}"
                    );
                }
            }
        }
    }
}
