//! Per-entity quantities of a solve: its regularisation λ, and how many flops it costs,
//! counted analytically (see [`super::TrainReport::flops_per_half_step`]): the run report's
//! counts, `recflow plan`'s, and the cost by which virtual shards are assigned.

use super::{block, kernels};
use crate::job::{Als, RegScaling, Solver};

/// Flops of one entity's solve with `n` interactions (see [`TrainReport::flops_per_half_step`]).
/// `upper`: the Cholesky build updates only the upper triangle (the AVX2 path), `n·d·(d + 8)`
/// flops with the lanes left of the diagonal it also computes, instead of a full `2·n·d²` GEMM.
#[allow(clippy::too_many_arguments)]
pub(super) fn entity_flops(
    solver: Solver,
    d: u64,
    n: u64,
    cg_steps: u64,
    block_size: u64,
    loss: bool,
    upper: bool,
) -> u64 {
    let build = if upper {
        n * d * (d + 8)
    } else {
        2 * n * d * d
    };
    let solve = match solver {
        Solver::Cholesky => build + 2 * n * d + d * d * d / 3 + 2 * d * d,
        Solver::Cg => (2 * d * d + 4 * n * d) + cg_steps * (2 * d * d + 4 * n * d + 10 * d),
        Solver::Block => block::flops(d, n, block_size, upper),
    };
    solve
        + if loss {
            2 * d * d + 2 * n * d + 2 * d
        } else {
            0
        }
}

/// Flops of solving one entity with `n` interactions under `als` (without the objective), as
/// the portable kernels count them (the AVX2 path counts a little less): the cost by which
/// virtual shards are assigned, so it must not depend on the machine.
pub fn row_flops(als: &Als, n: u64) -> u64 {
    let (d, bs) = (als.factors as u64, als.block_size.min(als.factors) as u64);
    entity_flops(als.solver, d, n, als.cg_steps as u64, bs, false, false)
}

/// The flops `solve_rows` counts for one entity with `n` interactions on this machine.
pub fn counted_row_flops(als: &Als, n: u64, loss: bool) -> u64 {
    let (d, bs) = (als.factors as u64, als.block_size.min(als.factors) as u64);
    let upper = kernels::simd_usable(als.factors);
    entity_flops(als.solver, d, n, als.cg_steps as u64, bs, loss, upper)
}

/// λ of one entity with confidences `conf` against `n_other` entities on the other side.
pub fn lambda_of(als: &Als, conf: &[f32], n_other: u64) -> f64 {
    match als.regularization_scaling {
        RegScaling::None => als.regularization,
        RegScaling::Count => als.regularization * conf.len() as f64,
        RegScaling::Frequency => {
            // The entity's weight in the objective: 1 per pair, c − 1 more per observed pair.
            let mass = n_other as f64 + conf.iter().map(|&c| c as f64 - 1.0).sum::<f64>();
            als.regularization * mass.powf(als.regularization_exponent)
        }
    }
}
