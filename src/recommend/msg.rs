//! The recommendation stage's own messages between workers, on its own
//! [`crate::comm::Channel`]: the catalogue all-gather, the counts every worker needs to make
//! the same sampling and calibration decisions, LSH user buckets and bucket rankings, and the
//! evaluation sums merged on worker 0. Data only: the steps that send them live with their
//! stage parts (`catalog`, `recall`, `user_tables`, `bucket_cache`, `evaluate`).

use crate::comm::Message;
use crate::eval::Metrics;
use crate::ids::RawId;
use serde::{Deserialize, Serialize};

/// A worker's item rows, on their way into every worker's catalogue.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ItemBlock {
    /// Global keys.
    pub keys: Vec<u64>,
    /// Raw ids.
    pub ids: Vec<RawId>,
    /// Interaction counts.
    pub degrees: Vec<u32>,
    /// Row-major vectors.
    pub factors: Vec<f32>,
}

/// Integer counts of one recall measurement (summable in any order, so every worker reaches
/// the same totals for any layout); measured and read in `recall`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hits {
    /// Exact top-k items found in the scorer's first k.
    pub hits: u64,
    /// Exact top-k items.
    pub total: u64,
    /// Items the scorer scored for the sampled users.
    pub scored: u64,
    /// Sampled users.
    pub users: u64,
}

/// One table's user bucket and the exact fixed-point sum of its users' unit vectors (on the
/// sender; summed over workers, in any order: integers).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BucketSum {
    /// The table.
    pub table: u32,
    /// The bucket's code in it.
    pub code: u64,
    /// Per coordinate, the sum of the unit vectors scaled to fixed point.
    pub sum: Vec<i128>,
}

/// A worker's evaluation sums, to worker 0.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalSums {
    /// Metric sums tagged by (held-out set, virtual shard or the coverage slot), summed on
    /// worker 0 in tag order.
    pub metrics: Vec<(u32, Metrics)>,
    /// The caller's counters (lines, users without recs, …), summed element by element.
    pub counters: Vec<u64>,
}

/// A worker's similar-items neighbour lists of one graph round, to everybody
/// (`similar_graph`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NeighbourLists {
    /// Catalogue index of each of the sender's items.
    pub rows: Vec<u32>,
    /// `degree` neighbours per row (catalogue indices, best first, `u32::MAX` pads).
    pub nb: Vec<u32>,
    /// Their cosines.
    pub cos: Vec<f32>,
    /// Cosines the sender computed in the round.
    pub scored: u64,
}

/// What the recommendation stage's supersteps carry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RecMsg {
    /// The sender's user rows, to everybody (sample rates are shares of all users).
    Users(u64),
    /// The sender's item rows, to everybody.
    Items(ItemBlock),
    /// The sender's recall counts, to everybody.
    Hits(Hits),
    /// The sender's user-bucket sums, sorted by (table, code), to everybody.
    BucketSums(Vec<BucketSum>),
    /// Bucket rankings the sender computed, to everybody: every list's (position, length),
    /// then all their items concatenated in that order.
    Lists {
        /// (position among the buckets, length) per list.
        at: Vec<(u32, u32)>,
        /// The lists' items.
        items: Vec<u32>,
    },
    /// The sender's evaluation sums, to worker 0.
    Eval(EvalSums),
    /// The sender's similar-items neighbour lists, to everybody.
    Neighbours(NeighbourLists),
}

impl Message for RecMsg {
    /// The bulk data: item vectors, keys and degrees (4 bytes per f32 and u32, 8 per key; raw
    /// ids not counted), bucket sums (16 bytes per coordinate), ranked lists (4 per item) and
    /// neighbour lists (4 per index and per cosine);
    /// counts and evaluation sums are control.
    fn payload_bytes(&self) -> u64 {
        match self {
            RecMsg::Items(b) => (4 * b.factors.len() + 12 * b.keys.len()) as u64,
            RecMsg::BucketSums(s) => s.iter().map(|b| 12 + 16 * b.sum.len() as u64).sum(),
            RecMsg::Lists { at, items } => (8 * at.len() + 4 * items.len()) as u64,
            RecMsg::Neighbours(l) => (4 * (l.rows.len() + l.nb.len() + l.cos.len())) as u64,
            RecMsg::Users(_) | RecMsg::Hits(_) | RecMsg::Eval(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Between processes timely frames messages with bincode, which is not self-describing:
    /// every variant must come back as it was sent (inside one process nothing is serialised,
    /// so only a multi-process run would notice).
    #[test]
    fn every_message_survives_bincode() {
        let mut m = Metrics::new(&[5, 10]);
        m.users = 3;
        m.at[1].covered = vec![0b101];
        let sent = vec![
            RecMsg::Users(7),
            RecMsg::Items(ItemBlock {
                keys: vec![3, 9],
                ids: vec![RawId::Num(3), RawId::Str("x y".into())],
                degrees: vec![1, 4],
                factors: vec![0.5, -1.0, 2.0, 0.25],
            }),
            RecMsg::Hits(Hits {
                hits: 1,
                total: 2,
                scored: 30,
                users: 4,
            }),
            RecMsg::BucketSums(vec![BucketSum {
                table: 1,
                code: u64::MAX,
                sum: vec![i128::MIN, 5],
            }]),
            RecMsg::Lists {
                at: vec![(4, 2)],
                items: vec![8, 1],
            },
            RecMsg::Eval(EvalSums {
                metrics: vec![(1 << 24 | 3, m)],
                counters: vec![0, 11],
            }),
            RecMsg::Neighbours(NeighbourLists {
                rows: vec![2],
                nb: vec![0, u32::MAX],
                cos: vec![0.5, 0.0],
                scored: 9,
            }),
        ];
        for msg in sent {
            let back: RecMsg = bincode::deserialize(&bincode::serialize(&msg).unwrap()).unwrap();
            assert_eq!(format!("{back:?}"), format!("{msg:?}"));
        }
    }
}
