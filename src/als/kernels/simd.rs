//! AVX2+FMA kernels for `d` a multiple of 8 (x86-64, detected at run time).

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
        d.is_multiple_of(8) && g.len() >= d * d && p.len() == d && ap.len() == d && r.len() == d
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
