//! The Gram matrices of ALS across workers: per-virtual-shard partials, and their sum by a
//! reduce-scatter over slices of the d² entries, so no worker adds up all V partials alone.
//!
//! Each entry of the sum is the f64 sum, in virtual-shard order, of the same f32 partials on
//! every layout: the slicing decides only which worker adds which entries, so the result is
//! bit-identical to one worker summing everything (and to the binaries that did so).

use super::msg::{AlsMsg, GramPart};
use super::Ch;
use super::{kernels, lambda_of};
use crate::comm::{reduce_in_vshard_order, CommError};
use crate::job::Als;
use crate::side::Side;
use timely::worker::Worker;

/// Per-virtual-shard partial Grams of `side`'s rows, each with its regulariser sum
/// `Σ λ_r‖x_r‖²` (`n_other`: the other side's entities, for frequency scaling), and the flops
/// spent.
pub(super) fn gram_parts(als: &Als, side: &Side, n_other: u64) -> (Vec<GramPart>, u64) {
    let d = als.factors;
    let mut parts = Vec::with_capacity(side.vshards.len());
    for (j, &vs) in side.vshards.iter().enumerate() {
        let (a, b) = (side.starts[j], side.starts[j + 1]);
        let mut g = vec![0.0f32; d * d];
        kernels::gram(&side.factors[a * d..b * d], b - a, d, &mut g);
        let reg: f64 = (a..b)
            .map(|r| {
                let conf = &side.conf[side.indptr[r]..side.indptr[r + 1]];
                lambda_of(als, conf, n_other)
                    * side
                        .row(r)
                        .iter()
                        .map(|&x| x as f64 * x as f64)
                        .sum::<f64>()
            })
            .sum();
        parts.push(GramPart {
            vshard: vs,
            gram: g,
            reg,
        });
    }
    (parts, 2 * side.rows() as u64 * (d * d) as u64)
}

/// One worker's slice of a side's Gram, summed over all virtual shards in virtual-shard order
/// (in f64), with the regulariser sum (complete on worker 0, zero elsewhere).
pub(super) struct SummedGram {
    pub(super) sum: Vec<f64>,
    pub(super) reg: f64,
}

impl SummedGram {
    /// Sums slices of partials (`len` entries each) in virtual-shard order, so every entry is
    /// the same for any layout.
    pub(super) fn of(parts: Vec<GramPart>, len: usize) -> SummedGram {
        let keyed = parts.into_iter().map(|p| (p.vshard, p)).collect();
        let zero = SummedGram {
            sum: vec![0.0f64; len],
            reg: 0.0,
        };
        reduce_in_vshard_order(keyed, zero, |acc, p| {
            acc.sum
                .iter_mut()
                .zip(&p.gram)
                .for_each(|(s, &x)| *s += x as f64);
            acc.reg += p.reg;
        })
    }
}

/// The entries `w` of `peers` workers sums of a `d × d` Gram: a contiguous slice of the
/// row-major matrix.
pub fn gram_slice(w: usize, peers: usize, d: usize) -> std::ops::Range<usize> {
    let n = d * d;
    w * n / peers..(w + 1) * n / peers
}

/// Whether worker `w` takes part in the Gram reduce-scatter: it owns entries, or it is worker
/// 0, which also sums the regulariser.
pub fn gram_member(w: usize, peers: usize, d: usize) -> bool {
    w == 0 || !gram_slice(w, peers, d).is_empty()
}

/// Sends each member worker its slice of every partial (the regulariser sums to worker 0).
pub(super) fn send_gram_slices(comm: &mut Ch, parts: &[GramPart], d: usize) {
    let peers = comm.peers;
    for w in (0..peers).filter(|&w| gram_member(w, peers, d)) {
        let sl = gram_slice(w, peers, d);
        let cut = parts
            .iter()
            .map(|p| GramPart {
                vshard: p.vshard,
                gram: p.gram[sl.clone()].to_vec(),
                reg: if w == 0 { p.reg } else { 0.0 },
            })
            .collect();
        comm.send(w, AlsMsg::GramParts(cut));
    }
}

/// Bytes of Gram slices this worker receives from other workers for the partials of `side`
/// (from those senders `counted` accepts).
pub(super) fn gram_slice_bytes_in(
    comm: &Ch,
    side: &Side,
    d: usize,
    counted: impl Fn(usize) -> bool,
) -> u64 {
    if !gram_member(comm.index, comm.peers, d) {
        return 0;
    }
    let len = gram_slice(comm.index, comm.peers, d).len() as u64;
    let foreign = (0..side.owners.shards())
        .map(|v| side.owners.owner(v))
        .filter(|&o| o != comm.index && counted(o))
        .count() as u64;
    foreign * (4 + 4 * len + 8)
}

/// Gathers every worker's f64 Gram slice on worker 0, in worker order (the whole matrix
/// there, empty elsewhere), so the objective's quadratic part is one sum in entry order.
pub(super) fn gather_slices(
    worker: &mut Worker,
    comm: &mut Ch,
    slice: &[f64],
) -> Result<Vec<f64>, CommError> {
    if !slice.is_empty() {
        let body = slice.iter().enumerate().map(|(i, &x)| (i as u32, x));
        comm.send(0, AlsMsg::Scalars(body.collect()));
    }
    let mut whole = Vec::new();
    for (_, b) in comm.exchange(worker, "train: objective")? {
        if let AlsMsg::Scalars(p) = b {
            whole.extend(p.into_iter().map(|(_, x)| x));
        }
    }
    Ok(whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reduce-scatter's slices, each summed in virtual-shard order and concatenated in
    /// worker order, are the one-worker flat sum bit for bit, for any worker count (including
    /// more workers than Gram entries).
    #[test]
    fn sliced_gram_sum_is_bit_identical_to_the_flat_sum() {
        let d = 5;
        let mut s = 3u64;
        let mut parts: Vec<GramPart> = (0..9u32)
            .map(|v| {
                let g = (0..d * d)
                    .map(|_| {
                        s = crate::ids::mix64(s);
                        ((s >> 40) as f32 / 7.0e3) * if s & 1 == 0 { 1.0 } else { -1e-4 }
                    })
                    .collect();
                GramPart {
                    vshard: v,
                    gram: g,
                    reg: v as f64 * 0.1,
                }
            })
            .collect();
        parts.reverse(); // arrival order must not matter
        let flat = SummedGram::of(parts.clone(), d * d);
        for peers in [1, 2, 3, 7, 25, 40] {
            let mut whole = Vec::new();
            let mut reg = 0.0;
            for w in (0..peers).filter(|&w| gram_member(w, peers, d)) {
                let sl = gram_slice(w, peers, d);
                let cut = parts
                    .iter()
                    .map(|p| GramPart {
                        vshard: p.vshard,
                        gram: p.gram[sl.clone()].to_vec(),
                        reg: if w == 0 { p.reg } else { 0.0 },
                    })
                    .collect();
                let g = SummedGram::of(cut, sl.len());
                whole.extend(g.sum);
                if w == 0 {
                    reg = g.reg;
                }
            }
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&whole), bits(&flat.sum), "{peers} workers");
            assert_eq!(reg.to_bits(), flat.reg.to_bits());
        }
    }
}
