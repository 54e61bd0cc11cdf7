//! Solving one worker's rows of a side against the broadcast Gram and the gathered vectors of
//! the other side, counting the flops and bytes the cost model reports.

use super::flops::{entity_flops, lambda_of};
use super::{block, kernels};
use crate::job::{Als, Solver};
use crate::side::Side;

/// What solving one worker's rows produced.
pub(super) struct Solved {
    /// Per owned virtual shard: the observed-pair part of the objective (when wanted).
    pub(super) loss_parts: Vec<(u32, f64)>,
    pub(super) singular: u64,
    pub(super) flops: u64,
    pub(super) bytes: u64,
}

/// Solves every owned row of `s` (or those `only` flags) against the broadcast Gram.
pub(super) fn solve_rows(
    als: &Als,
    s: &mut Side,
    (gram, n_o): (&[f32], u64),
    gathered: &[f32],
    want_loss: bool,
    only: Option<&[bool]>,
) -> Solved {
    let d = als.factors;
    let du = d as u64;
    let upper = kernels::simd_usable(d);
    let mut solver = kernels::Solver::new(d);
    let mut out = Solved {
        loss_parts: Vec::with_capacity(s.vshards.len()),
        singular: 0,
        flops: 0,
        bytes: 0,
    };
    if als.solver == Solver::Block {
        out.singular += block::solve_side(als, n_o, gram, gathered, s, only);
    }
    for (j, &vs) in s.vshards.iter().enumerate() {
        let mut loss = 0.0f64;
        for r in s.starts[j]..s.starts[j + 1] {
            if only.is_some_and(|m| !m[r]) {
                continue;
            }
            let (a, b) = (s.indptr[r], s.indptr[r + 1]);
            let nu = (b - a) as u64;
            let bs = als.block_size.min(d) as u64;
            let steps = als.cg_steps as u64;
            out.flops += entity_flops(als.solver, du, nu, steps, bs, want_loss, upper);
            out.bytes += nu * (4 * du + 8) + 8 * du;
            if r + 2 < s.indptr.len() {
                let next = &s.cols[b..s.indptr[r + 2]];
                kernels::prefetch_rows(gathered, &next[..next.len().min(8)], d);
            }
            let (cols, conf) = (&s.cols[a..b], &s.conf[a..b]);
            let lam = lambda_of(als, conf, n_o);
            let x = &mut s.factors[r * d..(r + 1) * d];
            match als.solver {
                Solver::Cholesky => {
                    if !solver.solve(gram, lam as f32, gathered, cols, conf, x) {
                        out.singular += 1;
                    }
                    if want_loss {
                        loss += kernels::observed_loss(gathered, cols, conf, x);
                    }
                }
                Solver::Cg => {
                    let steps = als.cg_steps;
                    loss += solver.cg(gram, lam as f32, gathered, cols, conf, x, steps, want_loss);
                }
                // Solved above, block by block over all rows.
                Solver::Block => {
                    if want_loss {
                        loss += kernels::observed_loss(gathered, cols, conf, x);
                    }
                }
            }
        }
        out.loss_parts.push((vs, loss));
    }
    out
}
