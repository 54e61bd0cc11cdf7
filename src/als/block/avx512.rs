//! AVX-512 versions of the group step's two `d²`-sized kernels, for blocks of a multiple of 16.
//!
//! Both perform, element by element, exactly the FMA chains of their AVX2 counterparts (the
//! Gram tile in [`super::group`], the rank-4 updates of [`super::Block::build`]) — the wider
//! registers only hold more independent chains — so a model is bit-identical whether or not
//! the machine has AVX-512 (tests check this on machines that have it).

use std::arch::x86_64::*;

/// Whether these kernels run here for blocks of `w`.
pub fn usable(w: usize) -> bool {
    w.is_multiple_of(16)
        && (16..=64).contains(&w)
        && std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("fma")
}

/// Entities per Gram tile for `v` vectors of 16 outputs each (16 accumulators at most).
const fn entities_for(v: usize) -> usize {
    [8, 8, 5, 4][v - 1]
}

/// `out[e·w + i] = Σ_t slab[t·w + i] · xs[e][t]` (see [`super::group::gram_cols`]), tiles of
/// [`entities_for`] entities; a short last tile is padded with `zero` (its outputs land in
/// `out` rows past `xs.len()`, which must exist).
///
/// # Safety
/// [`usable`]`(w)` must hold; `slab` holds `d·w` floats, every `xs[e]` and `zero` `d` floats,
/// `out` `xs.len().next_multiple_of(entities_for(w / 16))·w`.
#[target_feature(enable = "avx512f,fma")]
pub unsafe fn gram_cols(
    slab: &[f32],
    d: usize,
    w: usize,
    xs: &[&[f32]],
    zero: &[f32],
    out: &mut [f32],
) {
    let v = w / 16;
    let per = entities_for(v);
    let mut e0 = 0;
    while e0 < xs.len() {
        let mut xp = [zero.as_ptr(); 8];
        for (t, x) in xs[e0..].iter().take(per).enumerate() {
            xp[t] = x.as_ptr();
        }
        let op = out.as_mut_ptr().add(e0 * w);
        match v {
            1 => gram_tile::<8, 1>(slab.as_ptr(), d, w, xp, op),
            2 => gram_tile::<8, 2>(slab.as_ptr(), d, w, xp, op),
            3 => gram_tile::<5, 3>(slab.as_ptr(), d, w, xp, op),
            _ => gram_tile::<4, 4>(slab.as_ptr(), d, w, xp, op),
        }
        e0 += per;
    }
}

/// `E` entities × `V` vectors of outputs in registers while the slab's `d` rows stream.
#[inline]
#[target_feature(enable = "avx512f,fma")]
unsafe fn gram_tile<const E: usize, const V: usize>(
    slab: *const f32,
    d: usize,
    w: usize,
    xp: [*const f32; 8],
    out: *mut f32,
) {
    let mut acc = [[_mm512_setzero_ps(); V]; E];
    for t in 0..d {
        let row = slab.add(t * w);
        let mut gv = [_mm512_setzero_ps(); V];
        for (v, g) in gv.iter_mut().enumerate() {
            *g = _mm512_loadu_ps(row.add(16 * v));
        }
        for (e, a) in acc.iter_mut().enumerate() {
            let xb = _mm512_set1_ps(*xp[e].add(t));
            for (v, g) in gv.iter().enumerate() {
                a[v] = _mm512_fmadd_ps(xb, *g, a[v]);
            }
        }
    }
    for (e, a) in acc.iter().enumerate() {
        for (v, x) in a.iter().enumerate() {
            _mm512_storeu_ps(out.add(e * w + 16 * v), *x);
        }
    }
}

/// `a[i][j] += Σ_p scaled[p][i] · ys[p][j]` over the pairs in order, on every 8-row band's
/// columns from its first 16-aligned one (the upper triangle and some scratch left of it),
/// for the row-major `w × w` block system `a` (see [`super::Block::build`]).
///
/// # Safety
/// [`usable`]`(w)` must hold; `a` holds `w²` floats, `scaled` `ys.len()·w`, every `ys[p]` `w`.
#[target_feature(enable = "avx512f,fma")]
pub unsafe fn syrk_upper(a: &mut [f32], w: usize, scaled: &[f32], ys: &[*const f32]) {
    let mut r0 = 0;
    while r0 < w {
        let mut c0 = r0 & !15;
        while c0 < w {
            let (ap, sp) = (a.as_mut_ptr().add(r0 * w + c0), scaled.as_ptr().add(r0));
            if w - c0 >= 32 {
                syrk_tile::<2>(ap, w, sp, ys, c0);
                c0 += 32;
            } else {
                syrk_tile::<1>(ap, w, sp, ys, c0);
                c0 += 16;
            }
        }
        r0 += 8;
    }
}

/// Eight rows × `V` vectors of `a` (at `a`, row stride `w`) in registers over all pairs.
#[inline]
#[target_feature(enable = "avx512f,fma")]
unsafe fn syrk_tile<const V: usize>(
    a: *mut f32,
    w: usize,
    scaled: *const f32,
    ys: &[*const f32],
    c0: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); V]; 8];
    for (i, row) in acc.iter_mut().enumerate() {
        for (v, x) in row.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(a.add(i * w + 16 * v));
        }
    }
    for (p, &y) in ys.iter().enumerate() {
        let mut yv = [_mm512_setzero_ps(); V];
        for (v, x) in yv.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(y.add(c0 + 16 * v));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let c = _mm512_set1_ps(*scaled.add(p * w + i));
            for (v, x) in row.iter_mut().enumerate() {
                *x = _mm512_fmadd_ps(c, yv[v], *x);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (v, x) in row.iter().enumerate() {
            _mm512_storeu_ps(a.add(i * w + 16 * v), *x);
        }
    }
}

/// `scaled[p·w + i] = (conf[p] − 1) · ys[p][i]` (the coefficients of [`syrk_upper`]; the same
/// products as [`super::Block::build`]'s).
///
/// # Safety
/// [`usable`]`(w)` must hold; `scaled` holds `ys.len()·w` floats, every `ys[p]` `w`.
#[target_feature(enable = "avx512f,fma")]
pub unsafe fn scale_rows(ys: &[*const f32], conf: &[f32], w: usize, scaled: &mut [f32]) {
    let out = scaled.as_mut_ptr();
    for (p, (&y, &c)) in ys.iter().zip(conf).enumerate() {
        let cv = _mm512_set1_ps(c - 1.0);
        for v in 0..w / 16 {
            let o = out.add(p * w + 16 * v);
            _mm512_storeu_ps(o, _mm512_mul_ps(cv, _mm512_loadu_ps(y.add(16 * v))));
        }
    }
}
