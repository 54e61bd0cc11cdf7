//! Ingest's rebalancing step: virtual shards move from their staging owner (`v mod W`, where
//! they were consolidated and numbered) to the owner their counted cost gives them.
//!
//! The cost of a shard is what its rows cost in a half-step (see
//! [`crate::als::cost::shard_cost`]), counted by its staging owner and broadcast, so every
//! worker runs the same [`Assignment::by_cost`] on the same numbers. Nothing about a shard
//! changes on the way (ids, row order, CSR entries as global keys): the model does not depend
//! on where a shard lives, only the load balance does.

use super::msg::IngestMsg;
use crate::als::cost::shard_cost;
use crate::comm::{Channel, CommError};
use crate::ids::RawId;
use crate::job::Als;
use crate::side::{Assignment, ShardRows, Side};
use timely::worker::Worker;

/// One side before routing: its rows, with CSR entries as the other side's global keys.
pub struct Unrouted {
    /// The side (its `cols`, `gathered_keys` and routing are still empty).
    pub side: Side,
    /// Other-side key of each CSR entry.
    pub keys: Vec<u64>,
}

/// Held-out pairs of a worker's users (`eval.test`, `eval.valid`): (user, item key).
pub type Held = [Vec<(RawId, u64)>; 2];

/// Counts every shard's cost, agrees on the assignment of both sides and moves the shards
/// (and the users' held-out pairs) to their owners. Collective.
pub fn rebalance(
    worker: &mut Worker,
    comm: &mut Channel<IngestMsg>,
    als: &Als,
    v: u32,
    sides: [Unrouted; 2],
    held: Held,
) -> Result<([Unrouted; 2], Held), CommError> {
    let owners = agree_costs(worker, comm, als, v, &sides)?;
    // The sides' dimension is the model's (`Job::factors`: an svd model's rank), not always
    // `als.factors`.
    let dim = sides[0].side.dim;
    let mut out: Vec<Vec<ShardRows>> = vec![Vec::new(); comm.peers];
    for (t, u) in sides.into_iter().enumerate() {
        for block in split(u, t as u8) {
            out[owners[t].owner(block.vshard)].push(block);
        }
    }
    let mut held_out: [Vec<Vec<(RawId, u64)>>; 2] =
        [vec![Vec::new(); comm.peers], vec![Vec::new(); comm.peers]];
    for (set, pairs) in held.into_iter().enumerate() {
        for (u, k) in pairs {
            held_out[set][owners[0].owner(u.vshard(v))].push((u, k));
        }
    }
    let [h0, h1] = held_out;
    for (w, ((blocks, a), b)) in out.into_iter().zip(h0).zip(h1).enumerate() {
        comm.send(w, IngestMsg::Shards(blocks));
        comm.send(w, IngestMsg::TestKeyed(0, a));
        comm.send(w, IngestMsg::TestKeyed(1, b));
    }
    let mut got: Vec<ShardRows> = Vec::new();
    let mut held: Held = [Vec::new(), Vec::new()];
    for (_, b) in comm.exchange(worker, "ingest: rebalance")? {
        match b {
            IngestMsg::Shards(mut s) => got.append(&mut s),
            IngestMsg::TestKeyed(set, mut p) => held[set as usize].append(&mut p),
            _ => unreachable!(),
        }
    }
    got.sort_unstable_by_key(|b| (b.side, b.vshard));
    let items = got.split_off(got.partition_point(|b| b.side == 0));
    let [uo, io] = owners;
    let sides = [
        assemble(got, uo, comm.index, dim),
        assemble(items, io, comm.index, dim),
    ];
    Ok((sides, held))
}

/// Broadcasts the cost of every owned shard of both sides and returns the assignments (users,
/// items) every worker computes from them.
fn agree_costs(
    worker: &mut Worker,
    comm: &mut Channel<IngestMsg>,
    als: &Als,
    v: u32,
    sides: &[Unrouted; 2],
) -> Result<[Assignment; 2], CommError> {
    let mut msg = Vec::new();
    for (t, u) in sides.iter().enumerate() {
        let s = &u.side;
        for (j, &vs) in s.vshards.iter().enumerate() {
            let degrees = (s.starts[j]..s.starts[j + 1]).map(|r| s.degree(r) as u64);
            msg.extend([t as u64, vs as u64, shard_cost(als, degrees)]);
        }
    }
    comm.broadcast(IngestMsg::Costs(msg));
    let mut costs = [vec![0u64; v as usize], vec![0u64; v as usize]];
    for (_, b) in comm.exchange(worker, "ingest: shard costs")? {
        if let IngestMsg::Costs(c) = b {
            for x in c.chunks_exact(3) {
                costs[x[0] as usize][x[1] as usize] = x[2];
            }
        }
    }
    Ok(costs.map(|c| Assignment::by_cost(&c, comm.peers)))
}

/// Cuts a side into its shards (consuming it).
fn split(u: Unrouted, side: u8) -> Vec<ShardRows> {
    let Unrouted { side: s, keys } = u;
    let mut ids = s.ids.into_iter();
    let mut out = Vec::with_capacity(s.vshards.len());
    for (j, &vs) in s.vshards.iter().enumerate() {
        let (a, b) = (s.starts[j], s.starts[j + 1]);
        let (ea, eb) = (
            s.indptr.get(a).copied().unwrap_or(0),
            s.indptr.get(b).copied().unwrap_or(0),
        );
        out.push(ShardRows {
            side,
            vshard: vs,
            ids: ids.by_ref().take(b - a).collect(),
            degrees: (a..b)
                .map(|r| (s.indptr[r + 1] - s.indptr[r]) as u32)
                .collect(),
            keys: keys[ea..eb].to_vec(),
            conf: s.conf[ea..eb].to_vec(),
        });
    }
    out
}

/// Builds this worker's side from the shards it received (ascending by shard).
fn assemble(blocks: Vec<ShardRows>, owners: Assignment, me: usize, dim: usize) -> Unrouted {
    let vshards = owners.owned(me);
    debug_assert!(blocks.iter().map(|b| b.vshard).eq(vshards.iter().copied()));
    let mut s = Side {
        starts: vec![0],
        indptr: vec![0],
        vshards,
        owners,
        dim,
        ..Side::default()
    };
    let mut keys = Vec::new();
    for b in blocks {
        s.ids.extend(b.ids);
        s.starts.push(s.ids.len());
        for d in b.degrees {
            s.indptr
                .push(s.indptr.last().copied().unwrap_or(0) + d as usize);
        }
        keys.extend(b.keys);
        s.conf.extend(b.conf);
    }
    Unrouted { side: s, keys }
}
