//! One half-step's supersteps (see the module doc of [`super`]): the other side's Gram
//! partials and vectors out, the Gram summed slice by slice and broadcast, the solve, the
//! solved side's Gram partials, and the counters and objective gathered on worker 0.

use super::cost::WorkerCost;
use super::exchange::exchange_into;
use super::gram::{
    gather_slices, gram_member, gram_parts, gram_slice, gram_slice_bytes_in, send_gram_slices,
    SummedGram,
};
use super::msg::{AlsMsg, GramPart};
use super::solve::solve_rows;
use super::Ch;
use crate::comm::local::LocalGroup;
use crate::comm::CommError;
use crate::job::{Als, RegScaling};
use crate::side::Side;
use std::time::Instant;
use timely::worker::Worker;

#[derive(Default)]
pub(super) struct Half {
    /// On worker 0 when the objective was wanted.
    pub(super) objective: Option<f64>,
    /// Sum of the observed-pair objective partials (worker 0).
    pub(super) observed: f64,
    /// The solved side's Gram partials (this worker's slice), when they were sent.
    pub(super) own_parts: Vec<GramPart>,
    /// This worker's slice of the solved side's summed Gram, kept for the next half-step.
    pub(super) own_gram: Option<SummedGram>,
    pub(super) solve_secs: Vec<f64>,
    pub(super) vector_bytes: u64,
    pub(super) singular: u64,
    /// Per worker.
    pub(super) flops: Vec<u64>,
    /// All workers.
    pub(super) bytes: u64,
    /// The cost model's counts (worker 0).
    pub(super) workers: Vec<WorkerCost>,
}

/// The other side's Gram for a half-step: still to be computed, or already summed (slice by
/// slice) by the half-step that solved that side (every worker knows which, so all take the
/// same supersteps).
pub(super) enum OtherGram {
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
pub(super) fn half_step(
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
    let mut work = Work::default();
    // 1. Partial Grams of the other side, sliced to the summing workers (unless already
    // summed), then vectors along interaction edges.
    if matches!(other, OtherGram::Compute) {
        work.add(send_side_gram(comm, als, o, n_s));
    }
    let ex = exchange_into(worker, comm, als, s, o, &mut gathered.write())?;
    // 2. Each member sums its slice in virtual-shard order and broadcasts it; the slices,
    // in sender order, are the whole Gram.
    let my_len = gram_slice(comm.index, comm.peers, d).len();
    let (summed, gram) = sum_gram(worker, comm, other, ex.parts, my_len, d)?;
    // 3. Solve every owned row, then this side's Gram partials for the objective and the
    // next half-step.
    let t = Instant::now();
    let solved = {
        let view = gathered.read();
        solve_rows(als, s, (&gram, n_o), &view, want_loss, only)
    };
    s.gathered = Some(gathered);
    work.add((solved.flops, solved.bytes));
    let own = (keep_gram || want_loss).then(|| gram_parts(als, s, n_o));
    let secs = t.elapsed().as_secs_f64();
    let sent_own = own.is_some();
    if let Some((parts, f)) = own {
        work.add((f, 4 * s.factors.len() as u64));
        send_gram_slices(comm, &parts, d);
    }
    // What arrives with the own partials below is known in advance (and checked).
    let own_in = own_slice_bytes_in(comm, group, s, d, sent_own);
    comm.send(0, AlsMsg::Scalars(solved.loss_parts));
    let mut cost = start.since(comm, group, own_in);
    cost.flops = work.flops;
    cost.bytes_local = ex.local_bytes;
    (cost.entities, cost.interactions) = (s.rows() as u64, s.cols.len() as u64);
    cost.secs = secs;
    send_counts(comm, &cost, ex.vector_bytes, solved.singular, work.bytes);
    let before = comm.payload_received;
    let mut half = collect_solve(worker, comm)?;
    assert_eq!(
        comm.payload_received - before,
        own_in.0,
        "Gram slices received differ from the count"
    );
    let own = sent_own.then(|| SummedGram::of(std::mem::take(&mut half.own_parts), my_len));
    if want_loss {
        let own = own.as_ref().expect("own gram");
        half.objective = objective(worker, comm, &gram, own, summed.as_ref(), half.observed)?;
    }
    half.own_gram = own.filter(|_| keep_gram);
    Ok(half)
}

/// Flops and bytes one worker's half-step counts (the cost model's and the report's).
#[derive(Default)]
struct Work {
    flops: u64,
    bytes: u64,
}

impl Work {
    fn add(&mut self, (flops, bytes): (u64, u64)) {
        self.flops += flops;
        self.bytes += bytes;
    }
}

/// Step 1 when the other side's Gram is not summed yet: its partials over this worker's rows
/// of `o`, sliced to the summing workers. Returns the (flops, bytes) it cost.
fn send_side_gram(comm: &mut Ch, als: &Als, o: &Side, n_s: u64) -> (u64, u64) {
    let (parts, f) = gram_parts(als, o, n_s);
    send_gram_slices(comm, &parts, als.factors);
    (f, 4 * o.factors.len() as u64)
}

/// Step 2: this worker's slice of the other side's Gram (summed from `parts` in virtual-shard
/// order if it is a summing member, or as the previous half-step left it), broadcast; then
/// every slice, in sender order, into the whole `d × d` Gram. Returns (the slice, the Gram).
fn sum_gram(
    worker: &mut Worker,
    comm: &mut Ch,
    other: OtherGram,
    parts: Vec<GramPart>,
    my_len: usize,
    d: usize,
) -> Result<(Option<SummedGram>, Vec<f32>), CommError> {
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
    Ok((summed, gram))
}

/// Bytes (all, from other processes) of the solved side's Gram slices this worker receives
/// in the next superstep, when they were sent.
fn own_slice_bytes_in(
    comm: &Ch,
    group: &LocalGroup,
    s: &Side,
    d: usize,
    sent_own: bool,
) -> (u64, u64) {
    if !sent_own {
        return (0, 0);
    }
    let remote = |w: usize| !group.is_local(w);
    (
        gram_slice_bytes_in(comm, s, d, |_| true),
        gram_slice_bytes_in(comm, s, d, remote),
    )
}

/// Sends this worker's solve counters and cost to worker 0 ([`collect_solve`] reads them in
/// this order).
fn send_counts(comm: &mut Ch, cost: &WorkerCost, vector_bytes: u64, singular: u64, bytes: u64) {
    comm.send(
        0,
        AlsMsg::Counts(vec![
            (cost.secs * 1e9) as u64,
            vector_bytes,
            singular,
            cost.flops,
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
}

/// The objective after the half-step, on worker 0: observed-pair partials plus the quadratic
/// part `⟨G_o, G_s⟩` (the solved side's Gram gathered whole) plus both regularisers.
/// Collective.
fn objective(
    worker: &mut Worker,
    comm: &mut Ch,
    gram: &[f32],
    own: &SummedGram,
    other: Option<&SummedGram>,
    observed: f64,
) -> Result<Option<f64>, CommError> {
    let whole = gather_slices(worker, comm, &own.sum)?;
    if comm.index != 0 {
        return Ok(None);
    }
    let other = other.expect("worker 0 sums a slice");
    let quad: f64 = gram.iter().zip(&whole).map(|(&a, &b)| a as f64 * b).sum();
    Ok(Some(observed + quad + own.reg + other.reg))
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
