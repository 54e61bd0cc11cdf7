//! The per-worker cost records training fills in as it goes (`plan::cost` counts the same
//! records from the ingested data alone), and [`shard_cost`], by which ingest assigns shards to
//! workers. They live here so the dependencies run one way (plan → als, ingest → als).

use super::row_flops;
use crate::job::Als;
use serde::{Deserialize, Serialize};

/// One worker's share of one half-step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerCost {
    /// Floating-point operations (solve, Gram partials, objective), as `TrainReport` counts.
    pub flops: u64,
    /// Model-data bytes sent to other workers.
    pub bytes_sent: u64,
    /// Model-data bytes received from other workers.
    pub bytes_received: u64,
    /// The part of `bytes_sent` that went to workers in other processes (the network).
    #[serde(default)]
    pub network_sent: u64,
    /// The part of `bytes_received` that came from workers in other processes.
    #[serde(default)]
    pub network_received: u64,
    /// Vector bytes this worker copied into its process's shared gathered array (its own
    /// vectors that threads of its process need): within-process traffic, no message.
    #[serde(default)]
    pub bytes_local: u64,
    /// Entities of the solved side owned.
    pub entities: u64,
    /// Their interactions.
    pub interactions: u64,
    /// Seconds spent solving (0 in a plan).
    pub secs: f64,
}

/// One half-step, per worker.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HalfStepCost {
    /// 1-based iteration.
    pub iteration: usize,
    /// The side solved: "users" or "items".
    pub half: String,
    /// Per worker.
    pub workers: Vec<WorkerCost>,
}

/// max/mean of one quantity over workers (1 when all are equal or all are 0).
pub fn imbalance(values: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.collect();
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    let max = v.iter().copied().fold(0.0, f64::max);
    if mean > 0.0 {
        max / mean
    } else {
        1.0
    }
}

impl HalfStepCost {
    /// (max, mean) of a quantity over the workers.
    pub fn max_mean(&self, f: impl Fn(&WorkerCost) -> f64) -> (f64, f64) {
        let v: Vec<f64> = self.workers.iter().map(f).collect();
        let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
        (v.iter().copied().fold(0.0, f64::max), mean)
    }

    /// Bytes sent by all workers.
    pub fn total_sent(&self) -> u64 {
        self.workers.iter().map(|w| w.bytes_sent).sum()
    }

    /// Bytes sent by all workers to other processes.
    pub fn network_sent(&self) -> u64 {
        self.workers.iter().map(|w| w.network_sent).sum()
    }

    /// Bytes moved within processes by all workers: messages between threads of one process
    /// and copies into the shared gathered arrays.
    pub fn within_process(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| w.bytes_sent - w.network_sent + w.bytes_local)
            .sum()
    }
}

/// The cost by which a shard is assigned: its rows' solve flops (machine-independent count)
/// plus the flops of its partial Gram (`2·d²` per row), given each row's interactions.
pub fn shard_cost(als: &Als, degrees: impl Iterator<Item = u64>) -> u64 {
    let d = als.factors as u64;
    degrees.map(|n| row_flops(als, n) + 2 * d * d).sum()
}
