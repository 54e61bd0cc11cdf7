//! ALS's own messages between workers, on its own [`crate::comm::Channel`].

use crate::comm::Message;
use serde::{Deserialize, Serialize};

/// One virtual shard's partial Gram (or a slice of it) with its regulariser sum.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GramPart {
    /// The virtual shard.
    pub vshard: u32,
    /// Its `d × d` partial, or the receiver's slice of it.
    pub gram: Vec<f32>,
    /// `Σ λ_r‖x_r‖²` over its rows (to worker 0; 0 in the other slices).
    pub reg: f64,
}

/// What ALS workers send each other during a half-step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AlsMsg {
    /// Factor vectors in the order the routing plan agreed, starting at this row of the
    /// sender's list for the destination.
    Vectors(u64, Vec<f32>),
    /// Slices of partial Grams, for the receiver to sum.
    GramParts(Vec<GramPart>),
    /// The sender's slice of the summed Gram (in worker order the slices make the matrix) and
    /// the regulariser sum (meaningful from worker 0).
    GramSum(Vec<f32>, f64),
    /// Per-virtual-shard objective partials, or (index, value) entries of a Gram slice.
    Scalars(Vec<(u32, f64)>),
    /// Counters: the solve's per-worker report, side sizes, "more rounds" flags.
    Counts(Vec<u64>),
    /// Keys of the vectors of side 0 (users) or 1 (items) the sender's process wants from
    /// the receiver every half-step, in its shared array's order (set-up, see `als::shared`).
    Keys(u8, Vec<u64>),
}

impl Message for AlsMsg {
    /// 4 bytes per f32 and per shard id, 8 per f64, for vectors and Gram data only.
    fn payload_bytes(&self) -> u64 {
        match self {
            AlsMsg::Vectors(_, v) => 4 * v.len() as u64,
            AlsMsg::GramParts(p) => p.iter().map(|g| 12 + 4 * g.gram.len() as u64).sum(),
            AlsMsg::GramSum(g, _) => 8 + 4 * g.len() as u64,
            _ => 0,
        }
    }
}
