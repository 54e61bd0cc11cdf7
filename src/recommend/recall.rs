//! Recall of a scorer against exact top-k on a hash-chosen sample of users: the LSH recall
//! the report shows, and what [`super::calibrate`] grows the LSH sizes by.
//!
//! The sample is chosen by hashing raw ids, and the counts are integers summed over workers,
//! so every worker reaches the same totals (and the same decisions) for any layout.

use super::catalog::{Catalog, Seen};
pub use super::msg::Hits;
use super::msg::RecMsg;
use super::scan::{top_k, ScanIndex};
use super::scorer::{block_of, Scorer};
use crate::cluster::{Comm, CommError};
use crate::ids::{mix64, RawId};
use crate::side::Side;
use timely::worker::Worker;

/// Salt of the recall sample's hash (keeps it apart from the AUC sample, same seed).
const SAMPLE_SALT: u64 = 0x5eed;

/// A uniform number in [0, 1) from a hash.
pub fn unit(h: u64) -> f64 {
    (mix64(h) >> 11) as f64 / (1u64 << 53) as f64
}

/// About `wanted` of `population` rows, chosen by the hash of their raw ids and `seed`.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    rate: f64,
    seed: u64,
}

impl Sample {
    /// A sample of about `wanted` rows out of `population` (summed over workers).
    pub fn new(wanted: usize, population: u64, seed: u64) -> Sample {
        Sample {
            rate: wanted as f64 / population.max(1) as f64,
            seed,
        }
    }

    /// Whether `id` is in the sample.
    pub fn contains(&self, id: &RawId) -> bool {
        unit(id.stable_hash() ^ self.seed ^ SAMPLE_SALT) < self.rate
    }
}

impl Hits {
    /// Recall@k, where anything was measured.
    pub fn recall(&self) -> Option<f64> {
        (self.total > 0).then(|| self.hits as f64 / self.total as f64)
    }

    /// Items scored per sampled user as a share of a catalogue of `n` items.
    pub fn share(&self, n: usize) -> f64 {
        self.scored as f64 / self.users.max(1) as f64 / n.max(1) as f64
    }

    /// The sums over all workers (every worker gets them).
    pub fn summed(self, worker: &mut Worker, comm: &mut Comm) -> Result<Hits, CommError> {
        let ch = &mut comm.channel::<RecMsg>(worker);
        ch.broadcast(RecMsg::Hits(self));
        let mut all = Hits::default();
        for (_, m) in ch.exchange(worker, "recommend: recall counts")? {
            if let RecMsg::Hits(h) = m {
                all.hits += h.hits;
                all.total += h.total;
                all.scored += h.scored;
                all.users += h.users;
            }
        }
        Ok(all)
    }
}

/// This worker's sampled users with their exclusions and exact top `k`.
pub struct Reference {
    rows: Vec<usize>,
    excluded: Vec<Vec<usize>>,
    exact: Vec<Vec<usize>>,
    k: usize,
}

impl Reference {
    /// The exact top `k` of `users`' rows in `sample` (without their training items when
    /// `exclude_seen`): from the fused scan `full` where it runs, else plain dot products.
    pub fn build(
        users: &Side,
        cat: &Catalog,
        seen: &Seen,
        sample: &Sample,
        exclude_seen: bool,
        full: Option<&ScanIndex>,
        k: usize,
    ) -> Reference {
        let rows: Vec<usize> = (0..users.rows())
            .filter(|&r| sample.contains(&users.ids[r]))
            .collect();
        let excluded: Vec<Vec<usize>> = rows
            .iter()
            .map(|&r| {
                if exclude_seen {
                    seen.row(r)
                } else {
                    Vec::new()
                }
            })
            .collect();
        let exact = match full {
            Some(s) => s
                .top_k(&block_of(users, &rows), &excluded, k)
                .into_iter()
                .map(|l| l.into_iter().map(|(_, i)| i).collect())
                .collect(),
            None => rows
                .iter()
                .zip(&excluded)
                .map(|(&r, ex)| {
                    let x = users.row(r);
                    let d = users.dim;
                    let scores: Vec<f32> = (0..cat.len())
                        .map(|i| super::dot(x, &cat.factors[i * d..(i + 1) * d]))
                        .collect();
                    top_k(&scores, &cat.keys, ex, k)
                })
                .collect(),
        };
        Reference {
            rows,
            excluded,
            exact,
            k,
        }
    }

    /// This worker's counts for `scorer` asked for `want` (≥ k) items per user, as the main
    /// pass asks.
    pub fn measure(&self, scorer: &mut dyn Scorer, users: &Side, want: usize) -> Hits {
        let mut h = Hits::default();
        let step = scorer.block().max(1);
        for (c, rows) in self.rows.chunks(step).enumerate() {
            let ex = &self.excluded[c * step..c * step + rows.len()];
            let ranked = scorer.rank(users, rows, ex, want);
            for (j, got) in ranked.lists.iter().enumerate() {
                let exact = &self.exact[c * step + j];
                h.hits += exact
                    .iter()
                    .filter(|e| got.iter().take(self.k).any(|g| g.0 == **e))
                    .count() as u64;
                h.total += exact.len() as u64;
            }
            h.scored += ranked.scored.iter().flatten().sum::<u64>();
            h.users += rows.len() as u64;
        }
        h
    }
}
