//! The per-entity objective: the observed-pair term a half-step sums as it solves, and the
//! direct reference the Gram-trick objective is tested against.

#[cfg(target_arch = "x86_64")]
use super::simd;
use super::simd_usable;

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
pub(super) fn observed_from(conf: &[f32], yx: &[f32]) -> f64 {
    conf.iter()
        .zip(yx)
        .map(|(&c, &s)| {
            let s = s as f64;
            c as f64 * (1.0 - s) * (1.0 - s) - s * s
        })
        .sum()
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
