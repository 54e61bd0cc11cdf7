//! One side (users or items) of the sharded model, as held by one worker.
//!
//! A worker owns the virtual shards `v ≡ index (mod W)`. Its rows are those shards' entities,
//! shard by shard in ascending order and, within a shard, in raw-id order. An entity's global
//! key is `(vshard << 32) | local index`, which does not depend on the worker count.

use crate::ids::RawId;

/// Packs a global key.
pub fn key(vshard: u32, local: u32) -> u64 {
    ((vshard as u64) << 32) | local as u64
}

/// Unpacks a global key into (vshard, local index).
pub fn unkey(k: u64) -> (u32, u32) {
    ((k >> 32) as u32, k as u32)
}

/// The sharded state of one side on one worker.
#[derive(Debug, Default)]
pub struct Side {
    /// Owned virtual shards, ascending.
    pub vshards: Vec<u32>,
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
    pub cols: Vec<u32>,
    /// Confidence of each entry.
    pub conf: Vec<f32>,
    /// Global key of each gathered vector (ascending).
    pub gathered_keys: Vec<u64>,
    /// For each destination worker, the rows whose vectors it needs, in its gathered order.
    pub send_plan: Vec<(usize, Vec<u32>)>,
    /// For each source worker (ascending), where its buffer lands in the gathered array.
    pub recv: Vec<(usize, usize, usize)>,
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

    /// Row of a key owned by this worker (`peers` workers in all).
    pub fn row_of(&self, k: u64, peers: usize) -> usize {
        let (v, l) = unkey(k);
        self.starts[v as usize / peers] + l as usize
    }

    /// Number of interactions of row `r`.
    pub fn degree(&self, r: usize) -> usize {
        self.indptr[r + 1] - self.indptr[r]
    }
}
