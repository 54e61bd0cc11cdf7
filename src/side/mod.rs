//! One side (users or items) of the sharded model, as held by one worker.
//!
//! A worker owns the virtual shards its side's [`Assignment`] gives it (by counted cost, see
//! [`assign`]). Its rows are those shards' entities, shard by shard in ascending
//! order and, within a shard, in raw-id order. An entity's global key is
//! `(vshard << 32) | local index`, which does not depend on the worker count or assignment.

use crate::comm::local::RowsHandle;
use crate::ids::RawId;
mod assign;

pub use assign::Assignment;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// An entity's global key, `(vshard << 32) | local index` ([`key`]): the same for any worker
/// count or assignment, so every order that must not depend on the layout sorts by it.
pub type GlobalKey = u64;

/// An entry's column: a row of the gathered array of the other side's vectors that this
/// side's CSR indexes ([`Side::cols`]; its key is `gathered_keys[col]`). Not a row of the
/// other side on any worker, and not a catalogue index.
pub type GatheredCol = u32;

/// Packs a global key.
pub fn key(vshard: u32, local: u32) -> GlobalKey {
    ((vshard as u64) << 32) | local as u64
}

/// Unpacks a global key into (vshard, local index).
pub fn unkey(k: GlobalKey) -> (u32, u32) {
    ((k >> 32) as u32, k as u32)
}

/// Where one source worker's vectors land in the gathered array, every half-step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// The worker that owns (and sends) these vectors.
    pub from: usize,
    /// First gathered row they fill.
    pub offset: usize,
    /// How many vectors.
    pub len: usize,
}

/// The rows of this side whose vectors one destination worker needs, in its gathered order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The worker that needs them.
    pub to: usize,
    /// Rows of this side, in the order the destination's [`Incoming`] expects.
    pub rows: Vec<u32>,
}

/// The routing plan of one side: what it receives of the other side's vectors and what it
/// sends of its own, every half-step (built once by ingest).
#[derive(Clone, Debug, Default)]
pub struct Routing {
    /// Per source worker (ascending), the gathered range its buffer fills.
    pub incoming: Vec<Incoming>,
    /// Per destination worker, the rows to send.
    pub outgoing: Vec<Outgoing>,
}

impl Routing {
    /// The gathered range worker `from` fills, if it sends anything.
    pub fn from(&self, from: usize) -> Option<(usize, &Incoming)> {
        self.incoming
            .iter()
            .enumerate()
            .find(|(_, r)| r.from == from)
    }
}

/// One virtual shard's entities in transit between workers (ingest's rebalancing step): raw
/// ids in row order, each row's degree, and its CSR entries as global keys of the other side.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardRows {
    /// 0 users, 1 items.
    pub side: u8,
    /// The virtual shard.
    pub vshard: u32,
    /// Raw id of each row.
    pub ids: Vec<RawId>,
    /// Interactions of each row.
    pub degrees: Vec<u32>,
    /// Other-side key of each entry, row by row.
    pub keys: Vec<u64>,
    /// Weight (or confidence) of each entry.
    pub conf: Vec<f32>,
}

/// The sharded state of one side on one worker.
#[derive(Debug, Default)]
pub struct Side {
    /// Owned virtual shards, ascending.
    pub vshards: Vec<u32>,
    /// Which worker owns each virtual shard of this side (the same on every worker).
    pub owners: Assignment,
    /// Row range of each owned shard: rows `starts[j]..starts[j+1]` belong to `vshards[j]`.
    pub starts: Vec<usize>,
    /// Raw id of each row.
    pub ids: Vec<RawId>,
    /// Row-major factors, `rows × dim`.
    pub factors: Vec<f32>,
    /// Latent dimension.
    pub dim: usize,
    /// CSR over rows: entries `indptr[r]..indptr[r+1]`.
    pub indptr: Vec<usize>,
    /// Column of each entry: index into the gathered array of the other side's vectors.
    pub cols: Vec<GatheredCol>,
    /// Confidence of each entry.
    pub conf: Vec<f32>,
    /// Global key of each gathered vector (ascending within each source worker). Once
    /// training shares the gathered array between the threads of a process
    /// (`als::shared`), this is that array's keys, the same `Arc` on every thread.
    pub gathered_keys: Arc<[GlobalKey]>,
    /// The vectors this side receives and sends every half-step.
    pub routing: Routing,
    /// This thread's handle on the process-shared array of the other side's vectors that
    /// `cols` index (only while half-steps run).
    pub gathered: Option<RowsHandle>,
    /// Whether `cols`, `gathered_keys` and `routing` are in the process-shared layout
    /// (`als::shared`) rather than ingest's per-worker one.
    pub shared_layout: bool,
}

impl Side {
    /// Number of rows (entities) on this worker.
    pub fn rows(&self) -> usize {
        self.ids.len()
    }

    /// The vector of row `r`.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.factors[r * self.dim..(r + 1) * self.dim]
    }

    /// Global key of row `r` (binary search over shard starts).
    pub fn key_of(&self, r: usize) -> u64 {
        let j = self.starts.partition_point(|&s| s <= r) - 1;
        key(self.vshards[j], (r - self.starts[j]) as u32)
    }

    /// Row of a key owned by this worker.
    pub fn row_of(&self, k: u64) -> usize {
        let (v, l) = unkey(k);
        let j = self
            .vshards
            .binary_search(&v)
            .expect("the key's virtual shard is owned by this worker");
        self.starts[j] + l as usize
    }

    /// Number of interactions of row `r`.
    pub fn degree(&self, r: usize) -> usize {
        self.indptr[r + 1] - self.indptr[r]
    }
}
