//! The randomized SVD's own messages between workers, on its own [`crate::comm::Channel`]
//! (the vector exchanges of its products run on ALS's, see [`super::sketch::gather`]).

use crate::comm::Message;
use serde::{Deserialize, Serialize};

/// One virtual shard's `l × l` Gram of its rows of the distributed block (row-major f64).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardGram {
    /// The virtual shard (the sum over shards runs in its order).
    pub vshard: u32,
    /// `Y_vᵀ·Y_v`.
    pub gram: Vec<f64>,
}

/// What the SVD's supersteps carry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SvdMsg {
    /// The sender's users and items, to everybody (the rank check).
    Totals {
        /// Its user rows.
        users: u64,
        /// Its item rows.
        items: u64,
    },
    /// The sender's per-shard Grams, to worker 0 (one Cholesky-QR pass).
    Grams(Vec<ShardGram>),
    /// Worker 0's Cholesky factor of the summed Gram, to everybody: `R` (upper) and `R⁻¹`,
    /// both `l × l` row-major.
    Cholesky {
        /// `R`.
        r: Vec<f64>,
        /// `R⁻¹`.
        r_inv: Vec<f64>,
    },
    /// Worker 0's small SVD of `Rᵀ`, to everybody.
    SmallSvd {
        /// The `k` leading singular values, descending.
        sigma: Vec<f64>,
        /// `W_k·Σ_k^½`, `l × k` row-major.
        w: Vec<f64>,
    },
}

impl Message for SvdMsg {
    /// 8 bytes per f64 (and 4 per shard id) of the dense blocks; the totals are control.
    fn payload_bytes(&self) -> u64 {
        match self {
            SvdMsg::Totals { .. } => 0,
            SvdMsg::Grams(g) => g.iter().map(|p| 4 + 8 * p.gram.len() as u64).sum(),
            SvdMsg::Cholesky { r, r_inv } => 8 * (r.len() + r_inv.len()) as u64,
            SvdMsg::SmallSvd { sigma, w } => 8 * (sigma.len() + w.len()) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant comes back from bincode (the framing between processes) as it was sent.
    #[test]
    fn every_message_survives_bincode() {
        let sent = vec![
            SvdMsg::Totals { users: 5, items: 2 },
            SvdMsg::Grams(vec![ShardGram {
                vshard: 3,
                gram: vec![1.0, -0.5, -0.5, 2.0],
            }]),
            SvdMsg::Cholesky {
                r: vec![1.0, 0.0, 0.0, 2.0],
                r_inv: vec![1.0, 0.0, 0.0, 0.5],
            },
            SvdMsg::SmallSvd {
                sigma: vec![3.0],
                w: vec![0.1, 0.2],
            },
        ];
        for msg in sent {
            let back: SvdMsg = bincode::deserialize(&bincode::serialize(&msg).unwrap()).unwrap();
            assert_eq!(format!("{back:?}"), format!("{msg:?}"));
        }
    }
}
