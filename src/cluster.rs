//! The transitional catch-all message type, on the typed collectives of [`crate::comm`].
//!
//! Stages that have their own message type (ALS: [`crate::als::msg::AlsMsg`]) use their own
//! [`Channel`]; the others still share [`Body`] through [`Comm`] = `Channel<Body>` until they
//! are migrated (the variants left are theirs). The superstep machinery (deadline, abort,
//! sender order) is [`crate::comm::Channel`]'s, the same for both.

pub use crate::comm::CommError;
use crate::comm::{Channel, Message};
use crate::ids::RawId;
use serde::{Deserialize, Serialize};

/// What one superstep message carries. Each stage uses its own variants; bulky variants are
/// one contiguous buffer per destination worker, never one message per vector.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Body {
    /// The parent version's top-k (user, item) lines as the raw ids' stable hashes, routed to
    /// the user's owner (warm start report: how many users' recommendations changed).
    ParentRecs(Vec<(u64, u64)>),
    /// Per-virtual-shard dense f64 blocks (the SVD's Gram partials, or its small factors
    /// tagged by position), summed in vshard order.
    Dense(Vec<(u32, Vec<f64>)>),
    /// Counters by position.
    Counts(Vec<u64>),
    /// A short text (version names, JSON records for the manifest).
    Text(String),
    /// A block of entities: keys, raw ids, interaction counts and row-major vectors.
    Block(Vec<u64>, Vec<RawId>, Vec<u32>, Vec<f32>),
    /// Evaluation partial sums per virtual shard.
    Metrics(Vec<(u32, crate::eval::Metrics)>),
    /// Per user bucket (table, code): the exact fixed-point sum of its users' unit vectors.
    BucketSums(Vec<(u32, u64, Vec<i128>)>),
    /// Item lists by position, concatenated: `(position, length)` of each list, then their
    /// items (bucket rankings a worker computed for everybody).
    Lists(Vec<(u32, u32)>, Vec<u32>),
    /// An error on the sender: everybody stops with it.
    Abort(String),
}

impl Message for Body {
    fn abort_text(&self) -> Option<&str> {
        match self {
            Body::Abort(why) => Some(why),
            _ => None,
        }
    }
}

/// The transitional channel of the stages not yet on their own message types.
pub type Comm = Channel<Body>;

/// The worker that owns virtual shard `v` while ingest consolidates (its staging layout, and
/// the owner of interaction snapshot files); trained sides are owned by cost, see
/// [`crate::side::Side::owners`].
pub fn owner(v: u32, peers: usize) -> usize {
    v as usize % peers
}
