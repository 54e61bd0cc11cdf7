//! The collective steps of the randomized SVD on the sharded sides: the Gaussian test matrix
//! Ω, sparse × dense products at the row owners, and Cholesky-QR of a distributed block.
//!
//! Vectors move between the sides exactly as in ALS (the same routing tables and exchange);
//! every sum runs in an order fixed by global keys (a row's CSR order, Grams per virtual
//! shard then summed in virtual-shard order on worker 0), so results are bit-identical for
//! any worker count or process layout.

use super::dense;
use super::msg::{ShardGram, SvdMsg};
use crate::cluster::{Comm, CommError};
use crate::comm::reduce_in_vshard_order;
use crate::ids::{mix64, SplitMix};
use crate::job::{Als, SvdInput};
use crate::side::Side;
use timely::worker::Worker;

/// The matrix entry of a stored pair: 1, or its confidence.
pub fn entry(input: SvdInput, conf: f32) -> f64 {
    match input {
        SvdInput::Binary => 1.0,
        SvdInput::Confidence => conf as f64,
    }
}

/// Ω's rows for this worker's items, `rows × l`: standard normal, seeded by (seed, raw id),
/// so any layout draws the same matrix.
pub fn omega(items: &Side, seed: u64, l: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; items.rows() * l];
    for (r, id) in items.ids.iter().enumerate() {
        let mut rng = SplitMix::new(mix64(seed ^ mix64(0x005e_ed0f_0e6a ^ id.stable_hash())));
        for x in &mut out[r * l..(r + 1) * l] {
            *x = rng.next_normal() as f32;
        }
    }
    out
}

/// Replaces a side's vectors (now of dimension `dim`).
pub fn set_vectors(side: &mut Side, v: Vec<f32>, dim: usize) {
    debug_assert_eq!(v.len(), side.rows() * dim);
    side.factors = v;
    side.dim = dim;
}

/// f64 → f32, the precision vectors travel in.
pub fn to_f32(y: &[f64]) -> Vec<f32> {
    y.iter().map(|&x| x as f32).collect()
}

/// Sends `o`'s vectors to the workers whose `s`-rows touch them (ALS's exchange); returns
/// `s`'s gathered array, `gathered_keys × o.dim`.
pub fn gather(
    worker: &mut Worker,
    comm: &mut Comm,
    exchange_kib: usize,
    s: &Side,
    o: &Side,
) -> Result<Vec<f32>, CommError> {
    let als = Als {
        factors: o.dim,
        exchange_kib,
        ..Als::default()
    };
    let mut g = vec![0.0f32; s.gathered_keys.len() * o.dim];
    // ALS's exchange runs on ALS's own message type; every worker builds this channel at the
    // same point, as it calls `gather` collectively.
    let mut ch = crate::comm::Channel::<crate::als::msg::AlsMsg>::new(worker, comm.deadline);
    crate::als::exchange_vectors(worker, &mut ch, &als, s, o, &mut g)?;
    Ok(g)
}

/// `rows(s) × l` block `A_s · O` (f64, row-major): row r is `Σ_e a_e · o_{cols[e]}` over
/// its CSR entries, in CSR order.
pub fn sparse_times(s: &Side, gathered: &[f32], l: usize, input: SvdInput) -> Vec<f64> {
    let mut out = vec![0.0f64; s.rows() * l];
    for r in 0..s.rows() {
        let acc = &mut out[r * l..(r + 1) * l];
        for e in s.indptr[r]..s.indptr[r + 1] {
            let a = entry(input, s.conf[e]);
            let g = &gathered[s.cols[e] as usize * l..(s.cols[e] as usize + 1) * l];
            acc.iter_mut().zip(g).for_each(|(y, &x)| *y += a * x as f64);
        }
    }
    out
}

/// Gathers `o`'s vectors and multiplies: `A_s · O` at `s`'s owners.
pub fn product(
    worker: &mut Worker,
    comm: &mut Comm,
    exchange_kib: usize,
    (s, o): (&Side, &Side),
    input: SvdInput,
) -> Result<Vec<f64>, CommError> {
    let g = gather(worker, comm, exchange_kib, s, o)?;
    Ok(sparse_times(s, &g, o.dim, input))
}

/// Orthonormalises the columns of the distributed `rows × l` block `y` (rows of `s` on every
/// worker) in place by Cholesky-QR twice. Returns `R` (row-major, upper) with
/// `y_before = y_after · R`, the same on every worker. Collective.
pub fn orthonormalise(
    worker: &mut Worker,
    comm: &mut Comm,
    s: &Side,
    y: &mut [f64],
    l: usize,
    stage: &str,
) -> Result<Vec<f64>, CommError> {
    let mut total: Option<Vec<f64>> = None;
    for _ in 0..2 {
        let (r, rinv) = cholesky_step(worker, comm, s, y, l, stage)?;
        for j in 0..s.vshards.len() {
            let (a, b) = (s.starts[j], s.starts[j + 1]);
            let q = dense::times(&y[a * l..b * l], b - a, l, &rinv, l);
            y[a * l..b * l].copy_from_slice(&q);
        }
        // y₀ = Q₁R₁ = Q₂R₂R₁.
        total = Some(match total {
            None => r,
            Some(t) => dense::mul(&r, &t, l),
        });
    }
    Ok(total.expect("two passes"))
}

/// One Cholesky-QR pass: per-virtual-shard Grams to worker 0, summed there in vshard order
/// and factorised; `(R, R⁻¹)` broadcast.
fn cholesky_step(
    worker: &mut Worker,
    comm: &mut Comm,
    s: &Side,
    y: &[f64],
    l: usize,
    stage: &str,
) -> Result<(Vec<f64>, Vec<f64>), CommError> {
    let parts = (0..s.vshards.len())
        .map(|j| {
            let (a, b) = (s.starts[j], s.starts[j + 1]);
            let gram = dense::gram(&y[a * l..b * l], b - a, l);
            ShardGram {
                vshard: s.vshards[j],
                gram,
            }
        })
        .collect();
    let ch = &mut comm.channel::<SvdMsg>(worker);
    let mut all = Vec::new();
    for (_, m) in ch.gather_to_leader(worker, stage, SvdMsg::Grams(parts))? {
        if let SvdMsg::Grams(p) = m {
            all.extend(p.into_iter().map(|p| (p.vshard, p.gram)));
        }
    }
    let mut factor = None;
    if comm.index == 0 {
        let g = reduce_in_vshard_order(all, vec![0.0f64; l * l], |g, p| {
            g.iter_mut().zip(p).for_each(|(s, &x)| *s += x)
        });
        match dense::cholesky_upper(&g, l) {
            Some(r) => {
                let r_inv = dense::invert_upper(&r, l);
                factor = Some(SvdMsg::Cholesky { r, r_inv });
            }
            None => ch.abort(&format!(
                "{stage}: the sketch's Gram matrix is not positive definite (the data is empty or not finite); check the input, or lower svd.rank"
            )),
        }
    }
    match ch.broadcast_from(worker, stage, 0, factor)? {
        SvdMsg::Cholesky { r, r_inv } => Ok((r, r_inv)),
        _ => Err(CommError(format!(
            "{stage}: no Cholesky factor from worker 0"
        ))),
    }
}

/// Entities on each side over all workers (users, items). Collective.
pub fn totals(
    worker: &mut Worker,
    comm: &mut Comm,
    users: &Side,
    items: &Side,
) -> Result<(u64, u64), CommError> {
    let ch = &mut comm.channel::<SvdMsg>(worker);
    ch.broadcast(SvdMsg::Totals {
        users: users.rows() as u64,
        items: items.rows() as u64,
    });
    let mut t = (0, 0);
    for (_, m) in ch.exchange(worker, "svd: side totals")? {
        if let SvdMsg::Totals { users, items } = m {
            t.0 += users;
            t.1 += items;
        }
    }
    Ok(t)
}
