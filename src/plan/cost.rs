//! The cost model: what one half-step costs each worker, counted (flops, bytes, entities,
//! interactions) rather than timed, so it can be computed for any layout without the machine.
//!
//! Training records it as it goes ([`crate::als::TrainReport::cost`]); [`count`] derives the
//! same figures from the ingested data and a layout alone, which is what `recflow plan` prints.
//! Bytes are the model data that crosses between workers (what [`crate::als::msg::AlsMsg`]'s
//! `payload_bytes` counts: factor vectors, Gram slices and sums); control messages (counters, a
//! few bytes per worker and superstep) are not counted.

pub use crate::als::cost::{imbalance, shard_cost, HalfStepCost, WorkerCost};
use crate::als::gram::{gram_member, gram_slice};
use crate::als::{counted_row_flops, row_flops};
use crate::job::Als;
use crate::side::{unkey, Assignment};

/// One side of the ingested data, whole (one process holds it all): per virtual shard its
/// rows' degrees, and per row the other side's shards of its interactions.
pub struct SideData {
    /// Per virtual shard, each row's interactions.
    pub degrees: Vec<Vec<u64>>,
    /// The other-side keys of every row's interactions, row after row (shard by shard).
    pub keys: Vec<u64>,
}

/// A layout to count: `workers` threads in all, split evenly over `processes` (process `p`
/// runs workers `p·T .. (p+1)·T`, `T = workers / processes`, as timely numbers them).
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Workers in all.
    pub workers: usize,
    /// Processes (divides `workers`).
    pub processes: usize,
}

impl Layout {
    /// Threads per process.
    pub fn threads(&self) -> usize {
        self.workers / self.processes
    }

    /// The process worker `w` runs in.
    pub fn process_of(&self, w: usize) -> usize {
        w / self.threads()
    }

    /// The worker of process `p` that receives what remote worker `src` sends it
    /// ([`crate::comm::local::LocalGroup::receiver_of`]).
    pub fn receiver(&self, p: usize, src: usize) -> usize {
        p * self.threads() + src % self.threads()
    }
}

/// One side's counts per virtual shard: all the cost model needs of its rows.
#[derive(Clone, Debug, Default)]
pub struct ShardSums {
    /// Rows (entities) of each shard.
    pub rows: Vec<u64>,
    /// Their interactions.
    pub nnz: Vec<u64>,
    /// Solve flops as training counts them, without and with the objective.
    pub flops: [Vec<u64>; 2],
    /// The cost by which shards are assigned ([`shard_cost`]).
    pub cost: Vec<u64>,
}

impl ShardSums {
    /// From each shard's histogram of row degrees, `(interactions, rows with that many)`.
    pub fn of_histograms(als: &Als, shards: &[Vec<(u64, u64)>]) -> ShardSums {
        let d = als.factors as u64;
        let sum = |h: &Vec<(u64, u64)>, f: &dyn Fn(u64) -> u64| -> u64 {
            h.iter().map(|&(n, c)| c * f(n)).sum()
        };
        ShardSums {
            rows: shards.iter().map(|h| sum(h, &|_| 1)).collect(),
            nnz: shards.iter().map(|h| sum(h, &|n| n)).collect(),
            flops: [false, true].map(|loss| {
                let f = |n| counted_row_flops(als, n, loss);
                shards.iter().map(|h| sum(h, &f)).collect()
            }),
            cost: shards
                .iter()
                .map(|h| sum(h, &|n| row_flops(als, n) + 2 * d * d))
                .collect(),
        }
    }

    /// From ingested data: each row its own histogram entry.
    pub fn of_data(als: &Als, data: &SideData) -> ShardSums {
        let h: Vec<Vec<(u64, u64)>> = data
            .degrees
            .iter()
            .map(|d| d.iter().map(|&n| (n, 1)).collect())
            .collect();
        ShardSums::of_histograms(als, &h)
    }
}

/// The assignments (users, items) that ingest's rebalancing computes for `workers`.
pub fn assignments(als: &Als, data: &[SideData; 2], workers: usize) -> [Assignment; 2] {
    [0, 1].map(|t| {
        let costs: Vec<u64> = data[t]
            .degrees
            .iter()
            .map(|d| shard_cost(als, d.iter().copied()))
            .collect();
        Assignment::by_cost(&costs, workers)
    })
}

/// Per worker, one side's vector traffic in a half-step.
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    /// Vector bytes sent to other processes.
    pub sent: Vec<u64>,
    /// Vector bytes received from other processes.
    pub received: Vec<u64>,
    /// Vector bytes copied into the own process's shared array.
    pub local: Vec<u64>,
}

impl Traffic {
    /// No traffic yet, for `workers`.
    pub fn zero(workers: usize) -> Traffic {
        Traffic {
            sent: vec![0; workers],
            received: vec![0; workers],
            local: vec![0; workers],
        }
    }

    /// Adds `b` bytes of worker `src`'s vectors that process `p` needs.
    pub fn add(&mut self, layout: Layout, src: usize, p: usize, b: u64) {
        if layout.process_of(src) == p {
            self.local[src] += b;
        } else {
            self.sent[src] += b;
            self.received[layout.receiver(p, src)] += b;
        }
    }
}

/// Per worker: the bytes of the vectors of one side (owned per `own`) that the other side's
/// rows need (`needers`: per row its keys into the vector side, its shard per `need_own`),
/// as [`crate::als::shared`] moves them: each needed vector once per process that needs it,
/// copied by its owner when local, else sent by its owner to the process's receiver.
fn vector_traffic(
    d: usize,
    needers: &SideData,
    need_own: &Assignment,
    own: &Assignment,
    layout: Layout,
) -> Traffic {
    let mut t = Traffic::zero(layout.workers);
    // (vector key, destination process) pairs, deduplicated.
    let mut pairs: Vec<(u64, u32)> = Vec::new();
    let mut at = 0;
    for (vs, degs) in needers.degrees.iter().enumerate() {
        let p = layout.process_of(need_own.owner(vs as u32)) as u32;
        let n: u64 = degs.iter().sum();
        pairs.extend(needers.keys[at..at + n as usize].iter().map(|&k| (k, p)));
        at += n as usize;
    }
    pairs.sort_unstable();
    pairs.dedup();
    let b = 4 * d as u64;
    for (k, p) in pairs {
        t.add(layout, own.owner(unkey(k).0), p as usize, b);
    }
    t
}

/// Adds the Gram reduce-scatter of a side owned per `own` to `cost`: every worker sends each
/// member its slice of every owned shard's partial; then every member broadcasts its sum.
fn gram_traffic(
    cost: &mut [WorkerCost],
    d: usize,
    own: &Assignment,
    layout: Layout,
    partials: bool,
) {
    let w = cost.len();
    let owned: Vec<u64> = (0..w).map(|a| own.owned(a).len() as u64).collect();
    let mut add = |from: usize, to: usize, b: u64| {
        cost[from].bytes_sent += b;
        cost[to].bytes_received += b;
        if layout.process_of(from) != layout.process_of(to) {
            cost[from].network_sent += b;
            cost[to].network_received += b;
        }
    };
    for m in (0..w).filter(|&m| gram_member(m, w, d)) {
        let len = gram_slice(m, w, d).len() as u64;
        for a in (0..w).filter(|&a| a != m) {
            if partials {
                add(a, m, owned[a] * (12 + 4 * len));
            } else {
                add(m, a, 8 + 4 * len);
            }
        }
    }
}

/// Per worker of `owners`: the sum over its shards of `f(shard)`.
pub fn per_worker(owners: &Assignment, workers: usize, f: impl Fn(usize) -> u64) -> Vec<u64> {
    let mut out = vec![0u64; workers];
    for v in 0..owners.shards() {
        out[owners.owner(v)] += f(v as usize);
    }
    out
}

/// Every half-step of training `als` from scratch on `data` with `layout`, counted as
/// [`crate::als::train`] counts them (same schedule: the first half-step also computes the
/// items' Gram; the last keeps none; logged iterations add the objective).
pub fn count(als: &Als, data: &[SideData; 2], layout: Layout) -> Vec<HalfStepCost> {
    check(layout);
    let owners = assignments(als, data, layout.workers);
    let d = als.factors;
    let traffic = [0, 1].map(|t| vector_traffic(d, &data[t], &owners[t], &owners[1 - t], layout));
    let sums = [0, 1].map(|t| ShardSums::of_data(als, &data[t]));
    count_from(als, &sums, &owners, &traffic, layout)
}

fn check(layout: Layout) {
    assert!(
        layout.processes >= 1 && layout.workers.is_multiple_of(layout.processes),
        "{} workers do not split evenly over {} processes",
        layout.workers,
        layout.processes
    );
}

/// [`count`] from per-shard sums, the assignments and each half-step's vector traffic (from
/// data, or from a model of it: `plan --shape`).
pub fn count_from(
    als: &Als,
    sums: &[ShardSums; 2],
    owners: &[Assignment; 2],
    traffic: &[Traffic; 2],
    layout: Layout,
) -> Vec<HalfStepCost> {
    check(layout);
    let (w, d) = (layout.workers, als.factors);
    let dd = (d * d) as u64;
    let rows = |t: usize| per_worker(&owners[t], w, |v| sums[t].rows[v]);
    let nnz = |t: usize| per_worker(&owners[t], w, |v| sums[t].nnz[v]);
    let mut out = Vec::new();
    for it in 1..=als.iterations {
        let want_loss = als.loss_every > 0 && (it % als.loss_every == 0 || it == als.iterations);
        for (t, half) in ["users", "items"].into_iter().enumerate() {
            let fresh = it == 1 && t == 0;
            let keep = !(it == als.iterations && t == 1);
            let (rs, ro, ns) = (rows(t), rows(1 - t), nnz(t));
            let solve = per_worker(&owners[t], w, |v| sums[t].flops[want_loss as usize][v]);
            let mut cost: Vec<WorkerCost> = (0..w)
                .map(|x| WorkerCost {
                    flops: solve[x]
                        + if fresh { 2 * ro[x] * dd } else { 0 }
                        + if keep || want_loss { 2 * rs[x] * dd } else { 0 },
                    bytes_sent: traffic[t].sent[x],
                    bytes_received: traffic[t].received[x],
                    network_sent: traffic[t].sent[x],
                    network_received: traffic[t].received[x],
                    bytes_local: traffic[t].local[x],
                    entities: rs[x],
                    interactions: ns[x],
                    secs: 0.0,
                })
                .collect();
            if fresh {
                gram_traffic(&mut cost, d, &owners[1 - t], layout, true);
            }
            gram_traffic(&mut cost, d, &owners[1 - t], layout, false);
            if keep || want_loss {
                gram_traffic(&mut cost, d, &owners[t], layout, true);
            }
            out.push(HalfStepCost {
                iteration: it,
                half: half.to_string(),
                workers: cost,
            });
        }
    }
    out
}

/// The network lower bound of a half-step solving side `t`: every vector the side's rows need
/// crosses once per process that needs it and does not own it (Gram traffic excluded). Equal
/// to the vector part of [`count`]'s network bytes, since routing sends exactly that.
pub fn vector_bound(als: &Als, data: &[SideData; 2], layout: Layout, t: usize) -> u64 {
    let owners = assignments(als, data, layout.workers);
    let v = vector_traffic(als.factors, &data[t], &owners[t], &owners[1 - t], layout);
    v.sent.iter().sum()
}
