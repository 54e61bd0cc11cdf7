//! Weighted ALS (Hu, Koren, Volinsky 2008) over sharded sides.
//!
//! One half-step, solving side S against the fixed other side O:
//! 1. O's owners send each worker exactly the O-vectors its S-rows touch (one buffer per
//!    destination, per the routing tables) and cut their per-virtual-shard partial Grams into
//!    W contiguous slices of the d² entries, slice w to worker w (a reduce-scatter);
//! 2. each worker sums its slice over all virtual shards in virtual-shard order and broadcasts
//!    it, so every worker holds the same OᵀO whatever the worker count, and no worker sums the
//!    V whole partials alone (each adds V slices of d²/W entries);
//! 3. every worker solves its S-rows; optionally the objective partials go to worker 0.
//!
//! Every floating-point sum runs in an order fixed by global keys, never by worker layout, so
//! the factors are bit-identical for any number of workers. Each Gram entry is still the same
//! f64 sum, in virtual-shard order, of the same f32 partials as with one summing worker: the
//! slicing only distributes *which* worker adds up *which* entries, so models match the binaries
//! that summed on worker 0 bit for bit.

pub mod block;
pub mod cost;
mod exchange;
pub mod flops;
pub mod gram;
mod half_step;
pub mod kernels;
pub mod msg;
pub mod shared;
pub mod solve;

/// ALS's channel.
type Ch = Channel<AlsMsg>;

use crate::cluster::Comm;
use crate::comm::{Channel, CommError};
use crate::job::{Als, Solver};
use crate::progress::Log;
use crate::side::Side;
use cost::HalfStepCost;
pub(crate) use exchange::exchange_vectors;
pub use flops::{counted_row_flops, lambda_of, row_flops};
use half_step::{half_step, Half, OtherGram};
use msg::AlsMsg;
use serde::Serialize;
use std::time::Instant;
use timely::worker::Worker;

/// The objective after one half-step.
#[derive(Clone, Debug, Serialize)]
pub struct ObjectivePoint {
    /// 1-based iteration.
    pub iteration: usize,
    /// "users" or "items": the side just solved.
    pub half: &'static str,
    /// Value of the weighted objective.
    pub value: f64,
}

/// What training reports (complete on worker 0).
#[derive(Clone, Debug, Default, Serialize)]
pub struct TrainReport {
    /// Objective after each half-step of each logged iteration.
    pub objective: Vec<ObjectivePoint>,
    /// Wall seconds per iteration.
    pub iteration_secs: Vec<f64>,
    /// Per half-step, per worker: seconds spent solving (load balance).
    pub solve_secs_per_worker: Vec<Vec<f64>>,
    /// Bytes of factor vectors sent between different workers per half-step (all workers).
    pub vector_bytes_per_half_step: Vec<u64>,
    /// Entities whose system was not positive definite (their vector was zeroed).
    pub singular: u64,
    /// Per half-step: floating-point operations performed (all workers), counted analytically
    /// per entity: Gram `2·n·d²` per other-side row block; Cholesky build `2·n·d² + 2·n·d`
    /// (`n·d·(d + 8) + 2·n·d` on the AVX2 path, which builds the upper triangle only), the
    /// factorisation `d³/3`, the two triangular solves `2·d²`; CG `2·d² + 4·n·d` for the
    /// residual and `2·d² + 4·n·d + 10·d` per step; loss `2·d² + 2·n·d + 2·d` (n: the entity's
    /// interactions, d: factors).
    pub flops_per_half_step: Vec<u64>,
    /// Per half-step: bytes the solve reads and writes at least once (all workers): every
    /// gathered row an entity touches (`4·d` per interaction), the CSR (8 per interaction), the
    /// entity's own vector (read + write, `8·d`), the other side's rows for the Gram and the
    /// vectors sent between workers.
    pub bytes_per_half_step: Vec<u64>,
    /// Per half-step, per worker: achieved GFLOP/s of the solve (flops / solve seconds).
    pub gflops_per_worker: Vec<Vec<f64>>,
    /// Measured single-core peak of the solve's inner kernel on this machine (GFLOP/s), see
    /// [`kernels::measure_peak_gflops`].
    pub peak_gflops_per_core: f64,
    /// Per half-step: the floor its flops imply, `max over workers(flops) / peak` (seconds).
    pub floor_secs_per_half_step: Vec<f64>,
    /// Per iteration: the sum of its half-steps' floors, next to `iteration_secs`.
    pub floor_secs_per_iteration: Vec<f64>,
    /// The cost model, counted while training: per half-step and per worker, flops, bytes sent
    /// and received, entities and interactions owned, solve seconds (`recflow plan` counts the
    /// same from the ingested data alone).
    pub cost: Vec<HalfStepCost>,
}

impl TrainReport {
    /// Worker 0's record of one half-step: objective, throughput, floor, traffic and cost.
    fn record_half_step(&mut self, iteration: usize, half: &'static str, mut h: Half) {
        if let Some(value) = h.objective {
            self.objective.push(ObjectivePoint {
                iteration,
                half,
                value,
            });
        }
        let gf: Vec<f64> = h
            .flops
            .iter()
            .zip(&h.solve_secs)
            .map(|(&f, &t)| if t > 0.0 { f as f64 / t / 1e9 } else { 0.0 })
            .collect();
        let max_flops = h.flops.iter().copied().max().unwrap_or(0);
        let floor = if self.peak_gflops_per_core > 0.0 {
            max_flops as f64 / (self.peak_gflops_per_core * 1e9)
        } else {
            0.0
        };
        self.flops_per_half_step.push(h.flops.iter().sum());
        self.bytes_per_half_step.push(h.bytes);
        self.gflops_per_worker.push(gf);
        self.floor_secs_per_half_step.push(floor);
        self.solve_secs_per_worker.push(h.solve_secs);
        self.vector_bytes_per_half_step.push(h.vector_bytes);
        self.singular += h.singular;
        self.cost.push(HalfStepCost {
            iteration,
            half: half.to_string(),
            workers: std::mem::take(&mut h.workers),
        });
    }

    /// The iteration's floor: the sum of its two half-steps' (worker 0).
    fn record_iteration_floor(&mut self) {
        let n = self.floor_secs_per_half_step.len();
        self.floor_secs_per_iteration.push(
            self.floor_secs_per_half_step[n.saturating_sub(2)..]
                .iter()
                .sum(),
        );
    }
}

/// Called after each iteration with (worker, comm, iteration, users, items): checkpoints.
pub type AfterIteration<'a> =
    dyn FnMut(&mut Worker, &mut Comm, usize, &Side, &Side) -> Result<(), CommError> + 'a;

/// Runs iterations `start + 1 ..= als.iterations` (users, then items) on this worker's sides.
#[allow(clippy::too_many_arguments)]
pub fn train(
    worker: &mut Worker,
    comm: &mut Comm,
    als: &Als,
    users: &mut Side,
    items: &mut Side,
    log: &Log,
    start: usize,
    after: &mut AfterIteration<'_>,
) -> Result<TrainReport, CommError> {
    let mut rep = TrainReport {
        peak_gflops_per_core: if comm.index == 0 {
            kernels::measure_peak_gflops(als.factors)
        } else {
            0.0
        },
        ..TrainReport::default()
    };
    // The Gram of the side solved last, summed by that half-step: the next one's other side.
    let mut other = OtherGram::Compute;
    // ALS's own channel, for the supersteps of its half-steps.
    let mut ch = Ch::new(worker, comm.deadline);
    // One gathered array per side and process, shared by its threads; ingest's freed
    // buffers go back to the OS first (once per process), so they do not sit under the peak.
    let mut group = shared::discover(worker, &mut ch)?;
    if group.rank == 0 {
        crate::comm::local::return_freed_memory();
    }
    shared::share_sides(worker, &mut ch, &mut group, users, items)?;
    for it in start + 1..=als.iterations {
        let t = Instant::now();
        let want_loss = als.loss_every > 0 && (it % als.loss_every == 0 || it == als.iterations);
        for half in ["users", "items"] {
            let (s, o) = if half == "users" {
                (&mut *users, &*items)
            } else {
                (&mut *items, &*users)
            };
            let last = it == als.iterations && half == "items";
            let mut h = half_step(
                worker, &mut ch, &group, als, s, o, other, !last, want_loss, None,
            )?;
            other = OtherGram::Summed(h.own_gram.take());
            if comm.index == 0 {
                rep.record_half_step(it, half, h);
            }
        }
        let secs = t.elapsed().as_secs_f64();
        rep.iteration_secs.push(secs);
        if comm.index == 0 {
            rep.record_iteration_floor();
        }
        let objective = rep.objective.last().filter(|p| p.iteration == it);
        log.iteration(it, als.iterations, objective.map(|p| p.value), secs);
        after(worker, comm, it, users, items)?;
    }
    shared::release(users, items);
    Ok(rep)
}

/// Folds new entities in before a warm start's iterations: one exact (Cholesky) solve of every
/// new user against the fixed items, then of every new item against the users; known entities
/// keep their vectors. `new_users` / `new_items` flag this worker's rows. Collective.
pub fn fold_in(
    worker: &mut Worker,
    comm: &mut Comm,
    als: &Als,
    users: &mut Side,
    items: &mut Side,
    new_users: &[bool],
    new_items: &[bool],
) -> Result<(), CommError> {
    let exact = Als {
        solver: Solver::Cholesky,
        ..als.clone()
    };
    let mut ch = Ch::new(worker, comm.deadline);
    let mut group = shared::discover(worker, &mut ch)?;
    shared::share_sides(worker, &mut ch, &mut group, users, items)?;
    for half in ["users", "items"] {
        let (s, o, new) = if half == "users" {
            (&mut *users, &*items, new_users)
        } else {
            (&mut *items, &*users, new_items)
        };
        let other = OtherGram::Compute;
        let only = Some(new);
        half_step(
            worker, &mut ch, &group, &exact, s, o, other, false, false, only,
        )?;
    }
    shared::release(users, items);
    Ok(())
}
