//! Top-K recommendations for every user, without the items they already have, and their
//! evaluation on held-out pairs.
//!
//! Every worker gathers all item vectors (`catalog`, an all-gather). One `scorer::Scorer` per mode,
//! chosen once: `exact` scans the whole catalogue for each user in decreasing norm with a
//! register-blocked kernel and stops exactly when no remaining item can enter the top k
//! ([`ScanIndex`]); `lsh` scores candidate lists (`lsh_scorer`) from an index whose sizes
//! `calibrate` grows until recall against exact top-k on a user sample (`recall`) reaches
//! `lsh.target_recall`; `popular` ranks items by interaction count. Each worker writes the lines
//! of the users it owns (`text`) and evaluates them as they are made (`evaluate`).

use crate::cluster::{Comm, CommError};
use crate::eval::Metrics;
use crate::side::Side;
use timely::worker::Worker;

mod bucket_cache;
mod calibrate;
mod catalog;
mod evaluate;
mod lists;
pub mod lsh;
mod lsh_scorer;
mod msg;
mod planes;
mod recall;
mod scan;
mod scorer;
mod similar;
mod similar_graph;
mod text;
mod topk;
mod user_tables;

pub use calibrate::{Calibration, Round};
pub use catalog::{gather_items, Catalog};
pub use evaluate::{auc_rate, auc_sampled, score_row};
pub use scan::{better, fma_dot, score_candidates, top_k, Packed, ScanIndex, MR, NR};
pub use similar::similar_items;

/// What the recommendation stage leaves on one worker.
pub struct Recs {
    /// This worker's part file (`user<TAB>item<TAB>score<TAB>rank`), written block by block
    /// under the store's pending directory (synced and moved into the version at publish),
    /// with its record as `recs/part-NNNNN.tsv[.zst]` (`output.compression`); `None` when `recommend.k` is 0.
    pub part: Option<(std::path::PathBuf, crate::store::FileRecord)>,
    /// `(user, item)` of every line as the raw ids' stable hashes, when asked for (the
    /// comparison with the parent version).
    pub pairs: Option<Vec<(u64, u64)>>,
    /// Lines in it.
    pub lines: u64,
    /// Users with no candidate at all (no line written).
    pub users_without_recs: u64,
    /// Evaluation sums (whole job on worker 0 after the merge, summed in vshard order), one
    /// per held-out set given to [`recommend`] (`eval.test` or the holdout, then `eval.valid`).
    pub metrics: Vec<Metrics>,
    /// Items in the catalogue (the coverage denominator).
    pub catalogue: usize,
    /// LSH: this worker's bucket part file and its line count.
    pub buckets: Option<(Vec<u8>, u64)>,
    /// Similar items: this worker's part file (`item<TAB>other<TAB>cosine<TAB>rank`) and lines.
    pub similar: Option<(Vec<u8>, u64)>,
    /// Exact mode: items the pruned scan scored per user (mean, histogram, catalogue share);
    /// None where the scan did not run (the dense fallback scores every item).
    pub exact: Option<serde_json::Value>,
    /// LSH: bucket statistics, candidates scored per user, recall against exact top-k and the
    /// sizes chosen for `lsh.target_recall` (complete on worker 0).
    pub lsh: Option<serde_json::Value>,
    /// Where this worker's time went.
    pub phases: Phases,
}

/// Seconds one worker spent in each part of the recommendation stage.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Phases {
    /// Gathering the catalogue, building the scan index, the LSH index and user buckets (every
    /// calibration round, with its recall measurement).
    pub prepare: f64,
    /// Finding every user's top k (seen items, candidates, scoring).
    pub score: f64,
    /// Writing the recs lines.
    pub write: f64,
    /// Evaluation against the held-out sets.
    pub eval: f64,
    /// Similar items (`[similar]`).
    pub similar: f64,
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Seconds since `clock`, which restarts.
fn lap(clock: &mut std::time::Instant) -> f64 {
    let now = std::time::Instant::now();
    let s = (now - *clock).as_secs_f64();
    *clock = now;
    s
}

/// Sum over all workers of this worker's user rows (every worker gets it).
fn total_users(worker: &mut Worker, comm: &mut Comm, users: &Side) -> Result<u64, CommError> {
    let ch = &mut comm.channel::<msg::RecMsg>(worker);
    ch.broadcast(msg::RecMsg::Users(users.rows() as u64));
    let mut total = 0u64;
    for (_, m) in ch.exchange(worker, "recommend: count users")? {
        if let msg::RecMsg::Users(n) = m {
            total += n;
        }
    }
    Ok(total)
}

/// Candidates scored per user: a sum, the users counted and a log2 histogram.
struct Scored {
    sum: u64,
    users: u64,
    hist: Vec<u64>,
}

impl Scored {
    fn new() -> Scored {
        Scored {
            sum: 0,
            users: 0,
            hist: vec![0; crate::report::BINS],
        }
    }

    fn add(&mut self, c: u64) {
        self.sum += c;
        self.users += 1;
        self.hist[crate::report::log2_bin(c)] += 1;
    }

    /// Mean, histogram and catalogue share as the manifest shows them.
    fn json(&self, n: usize) -> serde_json::Map<String, serde_json::Value> {
        let per_user = self.sum as f64 / self.users.max(1) as f64;
        let v = serde_json::json!({
            "candidates_per_user": per_user,
            "candidates_histogram": self.hist,
            "catalog_share": per_user / n.max(1) as f64,
        });
        v.as_object().expect("an object").clone()
    }
}

mod pass;
pub use pass::recommend;
