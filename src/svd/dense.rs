//! Small dense f64 linear algebra of the randomized SVD: the l × l Grams, their Cholesky
//! factors and the small SVD, plus the per-shard block products. Everything here runs on
//! one worker's data in a fixed order, so equal inputs give equal bits on every layout.

use faer::{Accum, MatMut, MatRef, Par};

/// `YᵀY` of a row-major `rows × l` block, row-major `l × l`.
pub fn gram(y: &[f64], rows: usize, l: usize) -> Vec<f64> {
    let mut g = vec![0.0f64; l * l];
    if rows > 0 {
        let ym = MatRef::from_row_major_slice(y, rows, l);
        let gm = MatMut::from_row_major_slice_mut(&mut g, l, l);
        faer::linalg::matmul::matmul(gm, Accum::Replace, ym.transpose(), ym, 1.0, Par::Seq);
    }
    g
}

/// `Y ← Y·M` for a row-major `rows × l` block and a row-major `l × c` matrix; returns the
/// `rows × c` result.
pub fn times(y: &[f64], rows: usize, l: usize, m: &[f64], c: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; rows * c];
    if rows > 0 {
        let ym = MatRef::from_row_major_slice(y, rows, l);
        let mm = MatRef::from_row_major_slice(m, l, c);
        let om = MatMut::from_row_major_slice_mut(&mut out, rows, c);
        faer::linalg::matmul::matmul(om, Accum::Replace, ym, mm, 1.0, Par::Seq);
    }
    out
}

/// Relative shift added to the Gram's diagonal before its Cholesky factorisation (shifted
/// Cholesky-QR, Fukaya et al. 2020): keeps a rank-deficient sketch (data of lower rank than
/// the sketch) factorisable; the second pass removes the loss of orthogonality it causes.
pub const SHIFT: f64 = 1e-12;

/// Upper-triangular `R` with `G + s·I = RᵀR`, `s = SHIFT · max diag(G)`, row-major.
/// `None` when `G` is zero or not positive (semi)definite even after the shift.
pub fn cholesky_upper(g: &[f64], l: usize) -> Option<Vec<f64>> {
    let top = (0..l).map(|i| g[i * l + i]).fold(0.0f64, f64::max);
    if top <= 0.0 || !top.is_finite() {
        return None;
    }
    let s = SHIFT * top;
    let mut r = vec![0.0f64; l * l];
    for i in 0..l {
        let mut d = g[i * l + i] + s;
        for k in 0..i {
            d -= r[k * l + i] * r[k * l + i];
        }
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        r[i * l + i] = d;
        for j in i + 1..l {
            let mut v = g[i * l + j];
            for k in 0..i {
                v -= r[k * l + i] * r[k * l + j];
            }
            r[i * l + j] = v / d;
        }
    }
    Some(r)
}

/// Inverse of an upper-triangular row-major matrix (back substitution, column by column).
pub fn invert_upper(r: &[f64], l: usize) -> Vec<f64> {
    let mut inv = vec![0.0f64; l * l];
    for c in 0..l {
        for i in (0..=c).rev() {
            let mut v = if i == c { 1.0 } else { 0.0 };
            for k in i + 1..=c {
                v -= r[i * l + k] * inv[k * l + c];
            }
            inv[i * l + c] = v / r[i * l + i];
        }
    }
    inv
}

/// Product of two row-major `l × l` matrices.
pub fn mul(a: &[f64], b: &[f64], l: usize) -> Vec<f64> {
    times(a, l, l, b, l)
}

/// The small SVD `M = U·diag(σ)·Wᵀ` of a row-major `l × l` matrix: returns `(σ, W)` with
/// `σ` descending and `W` row-major `l × l` (its columns are the right singular vectors).
pub fn small_svd(m: &[f64], l: usize) -> Result<(Vec<f64>, Vec<f64>), String> {
    let mat = faer::Mat::<f64>::from_fn(l, l, |i, j| m[i * l + j]);
    let svd = mat
        .thin_svd()
        .map_err(|e| format!("svd: the small {l}×{l} SVD did not converge ({e:?})"))?;
    let s = svd.S().column_vector();
    let v = svd.V();
    let mut order: Vec<usize> = (0..l).collect();
    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
    let sigma = order.iter().map(|&j| s[j]).collect();
    let mut w = vec![0.0f64; l * l];
    for (c, &j) in order.iter().enumerate() {
        for i in 0..l {
            w[i * l + c] = v[(i, j)];
        }
    }
    Ok((sigma, w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SplitMix;

    fn random(rows: usize, cols: usize, seed: u64) -> Vec<f64> {
        let mut r = SplitMix::new(seed);
        (0..rows * cols).map(|_| r.next_normal()).collect()
    }

    #[test]
    fn cholesky_reproduces_the_gram_and_inverts() {
        let l = 7;
        let y = random(30, l, 3);
        let g = gram(&y, 30, l);
        let r = cholesky_upper(&g, l).unwrap();
        let rtr = times(&transpose(&r, l), l, l, &r, l);
        for (a, b) in rtr.iter().zip(&g) {
            assert!((a - b).abs() < 1e-9 * g[0].abs().max(1.0), "{a} vs {b}");
        }
        let id = mul(&r, &invert_upper(&r, l), l);
        for i in 0..l {
            for j in 0..l {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((id[i * l + j] - want).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn a_zero_gram_is_refused() {
        assert!(cholesky_upper(&[0.0; 4], 2).is_none());
    }

    #[test]
    fn small_svd_is_sorted_and_reconstructs_the_row_space() {
        let l = 6;
        let m = random(l, l, 8);
        let (s, w) = small_svd(&m, l).unwrap();
        assert!(s.windows(2).all(|p| p[0] >= p[1]));
        // ‖M·w_j‖ = σ_j, and W is orthogonal.
        let mw = mul(&m, &w, l);
        for j in 0..l {
            let n: f64 = (0..l).map(|i| mw[i * l + j].powi(2)).sum::<f64>().sqrt();
            assert!((n - s[j]).abs() < 1e-10 * s[0]);
        }
        let wtw = mul(&transpose(&w, l), &w, l);
        for i in 0..l {
            assert!((wtw[i * l + i] - 1.0).abs() < 1e-12);
        }
    }

    fn transpose(a: &[f64], l: usize) -> Vec<f64> {
        let mut t = vec![0.0; l * l];
        for i in 0..l {
            for j in 0..l {
                t[j * l + i] = a[i * l + j];
            }
        }
        t
    }
}
