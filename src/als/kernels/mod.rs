//! Dense kernels of one ALS half-step: Gram matrices, per-entity normal equations, solves.
//!
//! Everything is f32 row-major; faer does the GEMMs and the Cholesky factorisation
//! (sequentially: parallelism comes from workers, not from inside a 64×64 solve).
//!
//! This module owns the shared scratch ([`Solver`]), the Gram GEMM, the matvec and the
//! row prefetch; `cholesky` holds the direct solve, `cg` the conjugate-gradient solve,
//! [`simd`] the AVX2+FMA building blocks both use, and `loss` the per-entity objective.

use faer::linalg::cholesky::llt;
use faer::{Accum, MatMut, MatRef, Par};

mod cg;
mod cholesky;
mod loss;
#[cfg(target_arch = "x86_64")]
pub mod simd;
#[cfg(test)]
mod tests;

pub use cg::cg_portable;
pub use loss::{entity_loss, observed_loss};

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

/// Whether the AVX2 kernels run for dimension `d` (false off x86-64).
pub fn simd_usable(d: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    return simd::usable(d);
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}
