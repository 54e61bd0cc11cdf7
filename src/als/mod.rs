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
pub mod kernels;
pub mod msg;
pub mod shared;
pub mod solve;

/// ALS's channel.
type Ch = Channel<AlsMsg>;

use crate::cluster::Comm;
use crate::comm::local::LocalGroup;
use crate::comm::{Channel, CommError};
use crate::job::{Als, RegScaling, Solver};
use crate::report::Log;
use crate::side::Side;
use cost::{HalfStepCost, WorkerCost};
use exchange::exchange_into;
pub(crate) use exchange::exchange_vectors;
pub use flops::{counted_row_flops, lambda_of, row_flops};
use gram::{
    gather_slices, gram_member, gram_parts, gram_slice, gram_slice_bytes_in, send_gram_slices,
    SummedGram,
};
use msg::{AlsMsg, GramPart};
use serde::Serialize;
use solve::solve_rows;
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
                if let Some(value) = h.objective {
                    rep.objective.push(ObjectivePoint {
                        iteration: it,
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
                let floor = if rep.peak_gflops_per_core > 0.0 {
                    max_flops as f64 / (rep.peak_gflops_per_core * 1e9)
                } else {
                    0.0
                };
                rep.flops_per_half_step.push(h.flops.iter().sum());
                rep.bytes_per_half_step.push(h.bytes);
                rep.gflops_per_worker.push(gf);
                rep.floor_secs_per_half_step.push(floor);
                rep.solve_secs_per_worker.push(h.solve_secs);
                rep.vector_bytes_per_half_step.push(h.vector_bytes);
                rep.singular += h.singular;
                rep.cost.push(HalfStepCost {
                    iteration: it,
                    half: half.to_string(),
                    workers: std::mem::take(&mut h.workers),
                });
            }
        }
        let secs = t.elapsed().as_secs_f64();
        rep.iteration_secs.push(secs);
        if comm.index == 0 {
            let n = rep.floor_secs_per_half_step.len();
            rep.floor_secs_per_iteration.push(
                rep.floor_secs_per_half_step[n.saturating_sub(2)..]
                    .iter()
                    .sum(),
            );
        }
        let objective = rep.objective.last().filter(|p| p.iteration == it);
        log.iteration(it, als.iterations, objective.map(|p| p.value), secs);
        after(worker, comm, it, users, items)?;
    }
    shared::release(users, items);
    Ok(rep)
}

#[derive(Default)]
struct Half {
    /// On worker 0 when the objective was wanted.
    objective: Option<f64>,
    /// Sum of the observed-pair objective partials (worker 0).
    observed: f64,
    /// The solved side's Gram partials (this worker's slice), when they were sent.
    own_parts: Vec<GramPart>,
    /// This worker's slice of the solved side's summed Gram, kept for the next half-step.
    own_gram: Option<SummedGram>,
    solve_secs: Vec<f64>,
    vector_bytes: u64,
    singular: u64,
    /// Per worker.
    flops: Vec<u64>,
    /// All workers.
    bytes: u64,
    /// The cost model's counts (worker 0).
    workers: Vec<WorkerCost>,
}

/// The other side's Gram for a half-step: still to be computed, or already summed (slice by
/// slice) by the half-step that solved that side (every worker knows which, so all take the
/// same supersteps).
enum OtherGram {
    Compute,
    Summed(Option<SummedGram>),
}

/// Entities on each side over all workers (s's, o's), for frequency scaling. Collective, and
/// only called when it is on, so other jobs keep their supersteps.
fn side_totals(
    worker: &mut Worker,
    comm: &mut Ch,
    s: &Side,
    o: &Side,
) -> Result<(u64, u64), CommError> {
    comm.broadcast(AlsMsg::Counts(vec![s.rows() as u64, o.rows() as u64]));
    let mut t = (0, 0);
    for (_, b) in comm.exchange(worker, "train: side totals")? {
        if let AlsMsg::Counts(c) = b {
            t.0 += c[0];
            t.1 += c[1];
        }
    }
    Ok(t)
}

/// One half-step solving side `s`; with `only`, just the rows it flags (fold-in).
///
/// The objective costs `n·d` per interaction, not `d²` per entity: its quadratic part
/// `Σ_r x_rᵀ G_o x_r` is `⟨G_o, G_s⟩`, and `G_s`, the Gram of the rows just solved, is what the
/// next half-step needs anyway; with `keep_gram` it is computed here, at the end, where the
/// solved vectors already are, and returned (summed, on worker 0) for the next half-step.
#[allow(clippy::too_many_arguments)]
fn half_step(
    worker: &mut Worker,
    comm: &mut Ch,
    group: &LocalGroup,
    als: &Als,
    s: &mut Side,
    o: &Side,
    other: OtherGram,
    keep_gram: bool,
    want_loss: bool,
    only: Option<&[bool]>,
) -> Result<Half, CommError> {
    let d = als.factors;
    let (n_s, n_o) = if als.regularization_scaling == RegScaling::Frequency {
        side_totals(worker, comm, s, o)?
    } else {
        (0, 0)
    };
    let start = Counters::of(comm);
    let mut gathered = s
        .gathered
        .take()
        .expect("the side's shared gathered array (als::shared::share_sides)");
    let (mut flops, mut bytes) = (0u64, 0u64);
    // 1. Partial Grams of the other side, sliced to the summing workers (unless already
    // summed), then vectors along interaction edges.
    let fresh = matches!(other, OtherGram::Compute);
    if fresh {
        let (parts, f) = gram_parts(als, o, n_s);
        flops += f;
        bytes += 4 * o.factors.len() as u64;
        send_gram_slices(comm, &parts, d);
    }
    let ex = exchange_into(worker, comm, als, s, o, &mut gathered.write())?;
    let (parts, vector_bytes) = (ex.parts, ex.vector_bytes);
    // 2. Each member sums its slice in virtual-shard order and broadcasts it; the slices,
    // in sender order, are the whole Gram.
    let my_len = gram_slice(comm.index, comm.peers, d).len();
    let member = gram_member(comm.index, comm.peers, d);
    let summed = match other {
        OtherGram::Compute => member.then(|| SummedGram::of(parts, my_len)),
        OtherGram::Summed(g) => g,
    };
    if let Some(g) = &summed {
        let g32 = g.sum.iter().map(|&x| x as f32).collect();
        comm.broadcast(AlsMsg::GramSum(g32, g.reg));
    }
    let mut gram = Vec::with_capacity(d * d);
    for (_, b) in comm.exchange(worker, "train: gram")? {
        if let AlsMsg::GramSum(mut g, _) = b {
            gram.append(&mut g);
        }
    }
    assert_eq!(gram.len(), d * d, "the Gram slices do not cover the matrix");
    // 3. Solve every owned row, then this side's Gram partials for the objective and the
    // next half-step.
    let t = Instant::now();
    let solved = {
        let view = gathered.read();
        solve_rows(als, s, (&gram, n_o), &view, want_loss, only)
    };
    s.gathered = Some(gathered);
    flops += solved.flops;
    bytes += solved.bytes;
    let own = (keep_gram || want_loss).then(|| gram_parts(als, s, n_o));
    let secs = t.elapsed().as_secs_f64();
    let sent_own = own.is_some();
    if let Some((parts, f)) = own {
        flops += f;
        bytes += 4 * s.factors.len() as u64;
        send_gram_slices(comm, &parts, d);
    }
    // What arrives with the own partials below is known in advance (and checked).
    let (own_in, own_in_net) = if sent_own {
        let remote = |w: usize| !group.is_local(w);
        (
            gram_slice_bytes_in(comm, s, d, |_| true),
            gram_slice_bytes_in(comm, s, d, remote),
        )
    } else {
        (0, 0)
    };
    comm.send(0, AlsMsg::Scalars(solved.loss_parts));
    let mut cost = start.since(comm, group, (own_in, own_in_net));
    cost.flops = flops;
    cost.bytes_local = ex.local_bytes;
    (cost.entities, cost.interactions) = (s.rows() as u64, s.cols.len() as u64);
    cost.secs = secs;
    comm.send(
        0,
        AlsMsg::Counts(vec![
            (secs * 1e9) as u64,
            vector_bytes,
            solved.singular,
            flops,
            bytes,
            cost.bytes_sent,
            cost.bytes_received,
            cost.entities,
            cost.interactions,
            cost.network_sent,
            cost.network_received,
            cost.bytes_local,
        ]),
    );
    let before = comm.payload_received;
    let mut half = collect_solve(worker, comm)?;
    assert_eq!(
        comm.payload_received - before,
        own_in,
        "Gram slices received differ from the count"
    );
    let own = sent_own.then(|| SummedGram::of(std::mem::take(&mut half.own_parts), my_len));
    if want_loss {
        let own = own.as_ref().expect("own gram");
        let whole = gather_slices(worker, comm, &own.sum)?;
        if comm.index == 0 {
            let other = summed.as_ref().expect("worker 0 sums a slice");
            let quad: f64 = gram.iter().zip(&whole).map(|(&a, &b)| a as f64 * b).sum();
            half.objective = Some(half.observed + quad + own.reg + other.reg);
        }
    }
    half.own_gram = own.filter(|_| keep_gram);
    Ok(half)
}

/// The channel's payload counters at the start of a half-step, to count what it moved.
struct Counters {
    sent: u64,
    received: u64,
    sent_to: Vec<u64>,
    received_from: Vec<u64>,
}

impl Counters {
    fn of(comm: &Ch) -> Counters {
        Counters {
            sent: comm.payload_sent,
            received: comm.payload_received,
            sent_to: comm.payload_sent_to.clone(),
            received_from: comm.payload_received_from.clone(),
        }
    }

    /// The bytes moved since, all and to or from other processes, plus `pending` (all,
    /// network) bytes known to arrive in the next superstep.
    fn since(&self, comm: &Ch, group: &LocalGroup, pending: (u64, u64)) -> WorkerCost {
        let remote = |now: &[u64], then: &[u64]| -> u64 {
            (0..comm.peers)
                .filter(|&w| !group.is_local(w))
                .map(|w| now[w] - then[w])
                .sum()
        };
        WorkerCost {
            bytes_sent: comm.payload_sent - self.sent,
            bytes_received: comm.payload_received - self.received + pending.0,
            network_sent: remote(&comm.payload_sent_to, &self.sent_to),
            network_received: remote(&comm.payload_received_from, &self.received_from) + pending.1,
            ..WorkerCost::default()
        }
    }
}

/// Gathers every worker's solve counters, objective partials and Gram partials on worker 0.
fn collect_solve(worker: &mut Worker, comm: &mut Ch) -> Result<Half, CommError> {
    let mut loss = Vec::new();
    let mut half = Half {
        solve_secs: vec![0.0; comm.peers],
        flops: vec![0u64; comm.peers],
        ..Half::default()
    };
    if comm.index == 0 {
        half.workers = vec![WorkerCost::default(); comm.peers];
    }
    for (from, b) in comm.exchange(worker, "train: solve")? {
        match b {
            AlsMsg::Scalars(mut p) => loss.append(&mut p),
            AlsMsg::GramParts(mut p) => half.own_parts.append(&mut p),
            AlsMsg::Counts(c) => {
                half.solve_secs[from] = c[0] as f64 / 1e9;
                half.vector_bytes += c[1];
                half.singular += c[2];
                half.flops[from] = c[3];
                half.bytes += c[4];
                half.workers[from] = WorkerCost {
                    flops: c[3],
                    bytes_sent: c[5],
                    bytes_received: c[6],
                    entities: c[7],
                    interactions: c[8],
                    network_sent: c[9],
                    network_received: c[10],
                    bytes_local: c[11],
                    secs: c[0] as f64 / 1e9,
                };
            }
            _ => unreachable!(),
        }
    }
    loss.sort_by_key(|p| p.0);
    half.observed = loss.iter().map(|p| p.1).sum();
    half.bytes += half.vector_bytes;
    Ok(half)
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
