//! `lsh.target_recall` for similar items: recall@`similar.k` of the LSH neighbours against
//! exact cosine top-k on a hash-chosen sample of the catalogue, grown like the recommendation
//! sizes ([`grow`]). Every worker holds the whole catalogue and measures the same sample, so all
//! take the same decisions without exchanging counts.

use super::calibrate::{build, grow, nominal, Round};
use super::catalog::Catalog;
use super::lsh::Index;
use super::recall::Sample;
use super::scan::ScanIndex;
use super::similar::{neighbours, unit_rows, Finder};
use crate::cluster::{Comm, CommError};
use crate::job::Lsh;
use crate::side::Side;
use timely::worker::Worker;

/// What the similar-items calibration chose (the manifest's `recommend.lsh.similar`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct SimilarCalibration {
    /// `lsh.target_recall`.
    pub target_recall: f64,
    /// Recall@k of the chosen index on the item sample (None: nothing sampled).
    pub recall_at_k: Option<f64>,
    /// `similar.k`.
    pub recall_k: usize,
    /// Items sampled.
    pub sample_items: usize,
    /// Whether the target is reached (None: nothing sampled).
    pub target_met: Option<bool>,
    /// Why the sizes are what they are.
    pub stopped: &'static str,
    /// Every round measured (catalogue share: the nominal head + bucket lists).
    pub rounds: Vec<Round>,
}

/// The exact neighbours of the sampled items, and measurement of an index against them.
struct Probe<'a> {
    cat: &'a Catalog,
    all: Vec<f32>,
    rows: Vec<usize>,
    exact: Vec<Vec<(f32, usize)>>,
    k: usize,
}

impl Probe<'_> {
    fn in_blocks(&self, f: &mut Finder, step: usize) -> Vec<Vec<(f32, usize)>> {
        let chunks = self.rows.chunks(step.max(1));
        chunks
            .flat_map(|c| neighbours(f, self.cat, &self.all, c, self.k))
            .collect()
    }

    /// Hits and total of `ix`'s neighbours against the exact ones.
    fn recall(&self, ix: &Index) -> Option<f64> {
        let mut f = Finder::Lsh(ix, vec![u32::MAX; self.cat.len()], 0);
        let got = self.in_blocks(&mut f, 256);
        let hits: usize = (got.iter().zip(&self.exact))
            .map(|(g, e)| e.iter().filter(|x| g.iter().any(|y| y.1 == x.1)).count())
            .sum();
        let total: usize = self.exact.iter().map(|e| e.len()).sum();
        (total > 0).then(|| hits as f64 / total as f64)
    }
}

/// Measures `first` (the recommendation index, built with `cfg`) for similar items and grows
/// a separate index while below `cfg.target_recall`. Returns the grown index (None: `first`
/// is the one to use) and the record.
#[allow(clippy::too_many_arguments)]
pub fn calibrate_similar(
    worker: &mut Worker,
    comm: &mut Comm,
    cfg: &Lsh,
    first: &Index,
    cat: &Catalog,
    users: &Side,
    full: Option<&ScanIndex>,
    (sample, seed, k): (usize, u64, usize),
) -> Result<(Option<Index>, SimilarCalibration), CommError> {
    let n = cat.len();
    let all = unit_rows(&cat.factors, users.dim);
    let s = Sample::new(sample, n as u64, seed);
    let rows: Vec<usize> = (0..n).filter(|&i| s.contains(&cat.ids[i])).collect();
    let mut probe = Probe {
        cat,
        all,
        rows,
        exact: Vec::new(),
        k,
    };
    let mut exact = Finder::exact(cat, &probe.all);
    probe.exact = probe.in_blocks(&mut exact, (4_000_000 / n.max(1)).clamp(1, 192));
    let round = |c: &Lsh, r: Option<f64>| Round {
        head: c.head.min(n as u64),
        tables: c.tables,
        bucket_items: c.bucket_items,
        recall: r,
        catalog_share: nominal(c, n) as f64 / n.max(1) as f64,
    };
    let mut recall = probe.recall(first);
    let (mut cur, mut grown) = (cfg.clone(), None);
    let mut rounds = vec![round(&cur, recall)];
    let stopped = loop {
        let Some(r) = recall else {
            break "no items sampled (eval.recall_sample = 0)";
        };
        if r >= cfg.target_recall {
            break "target reached";
        }
        let Some(next) = grow(&cur, rounds.len() - 1, n, cfg.max_share * n as f64) else {
            break "larger sizes would score more than lsh.max_share of the catalogue";
        };
        let (ix, _) = build(worker, comm, &next, cat, users, full)?;
        recall = probe.recall(&ix);
        rounds.push(round(&next, recall));
        (cur, grown) = (next, Some(ix));
    };
    let rec = SimilarCalibration {
        target_recall: cfg.target_recall,
        recall_at_k: recall,
        recall_k: k,
        sample_items: probe.rows.len(),
        target_met: recall.map(|r| r >= cfg.target_recall),
        stopped,
        rounds,
    };
    Ok((grown, rec))
}
