//! Chooses the LSH sizes (`head`, `bucket_items`, `tables`) that reach `lsh.target_recall`.
//!
//! Starting from the configured sizes, each round builds the index, measures recall@k against
//! exact top-k on the sample ([`Reference`]) and, while below the target, grows one size
//! (rotating bucket list length, head list, tables; each doubles) whose nominal cost
//! (`head + tables × bucket_items` items per user) stays within `lsh.max_share` of the
//! catalogue. Recall counts are integers summed over workers, so every worker takes the same
//! decisions and the chosen sizes do not depend on the layout.

use super::bucket_cache::{Ahead, BucketCache};
use super::catalog::Catalog;
use super::lsh::Index;
use super::lsh_scorer;
use super::recall::{Hits, Reference};
use super::scan::ScanIndex;
use crate::cluster::{Comm, CommError};
use crate::job::{Lsh, Transform};
use crate::side::Side;
use timely::worker::Worker;

/// One measured setting.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Round {
    /// Head list length.
    pub head: u64,
    /// Hash tables.
    pub tables: u32,
    /// Items per user bucket.
    pub bucket_items: u32,
    /// Recall@k on the sample (None: nobody sampled).
    pub recall: Option<f64>,
    /// Items scored per sampled user, as a share of the catalogue.
    pub catalog_share: f64,
}

/// What the calibration chose and why it stopped (the manifest's `lsh.calibration`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Calibration {
    /// `lsh.target_recall` (0 = sizes as given).
    pub target_recall: f64,
    /// `lsh.max_share`.
    pub max_share: f64,
    /// Whether the chosen sizes reach the target (None: no target, or nothing sampled).
    pub target_met: Option<bool>,
    /// Why the sizes are what they are.
    pub stopped: &'static str,
    /// The sizes used (the last accepted round).
    pub chosen: Round,
    /// Every round measured, in order (a rejected last round included).
    pub rounds: Vec<Round>,
}

/// The index to recommend with, every row's user buckets, the settings and their record.
pub struct Chosen {
    /// The index.
    pub index: Index,
    /// User bucket per row and table (empty without user buckets).
    pub codes: Vec<u32>,
    /// The settings it was built with.
    pub cfg: Lsh,
    /// Counts of the last accepted round.
    pub hits: Hits,
    /// The record.
    pub calibration: Calibration,
}

/// Items a user scores at most (head list plus bucket lists; item tables add an unknown
/// number, measured instead).
pub(super) fn nominal(cfg: &Lsh, n: usize) -> u64 {
    let lists = if cfg.transform == Transform::Users {
        cfg.tables as u64 * cfg.bucket_items as u64
    } else {
        0
    };
    cfg.head.min(n as u64) + lists
}

/// The next sizes after `round` rounds: the first of the rotation (bucket list length, head
/// list, tables; from `round`) that changes something and stays within `cap` items per user.
pub(super) fn grow(cfg: &Lsh, round: usize, n: usize, cap: f64) -> Option<Lsh> {
    let users = cfg.transform == Transform::Users;
    (0..3).find_map(|step| {
        let mut next = cfg.clone();
        match (round + step) % 3 {
            0 if users && cfg.tables > 0 => {
                next.bucket_items = (cfg.bucket_items.saturating_mul(2)).min(n.max(1) as u32)
            }
            1 => next.head = cfg.head.saturating_mul(2).max(64).min(n as u64),
            2 => next.tables = (cfg.tables.saturating_mul(2)).clamp(1, 1024),
            _ => {}
        }
        let fits = nominal(&next, n) as f64 <= cap;
        (next != *cfg && fits).then_some(next)
    })
}

/// What round `round` (sizes `cfg`) prepares for the next ones ([`Ahead`]). Depth: the bucket
/// list length of the next round where that round only lengthens the lists (then its ranking
/// is already there), else `cfg`'s own. Tables: the most that the next rounds of one rotation
/// would use (hashing a table costs far less in the pass that hashes the round's own tables
/// than in a pass of its own). Without a target there is no next round.
fn ahead(cfg: &Lsh, round: usize, n: usize, cap: f64) -> Ahead {
    let next = |c: &Lsh, r: usize| {
        (cfg.target_recall > 0.0)
            .then(|| grow(c, r, n, cap))
            .flatten()
    };
    let depth = next(cfg, round)
        .filter(|g| (g.head, g.tables) == (cfg.head, cfg.tables))
        .unwrap_or_else(|| cfg.clone())
        .bucket_items as usize;
    let (mut c, mut tables) = (cfg.clone(), cfg.tables);
    for r in round..round + 3 {
        let Some(g) = next(&c, r) else { break };
        tables = tables.max(g.tables);
        c = g;
    }
    Ahead { depth, tables }
}

fn round(cfg: &Lsh, h: &Hits, n: usize) -> Round {
    Round {
        head: cfg.head.min(n as u64),
        tables: cfg.tables,
        bucket_items: cfg.bucket_items,
        recall: h.recall(),
        catalog_share: h.share(n),
    }
}

/// Grows the LSH sizes of `cfg` until recall@k on `reference` reaches `cfg.target_recall` (or
/// the cap stops it); `want`: items per user the main pass asks for.
#[allow(clippy::too_many_arguments)]
pub fn calibrate(
    worker: &mut Worker,
    comm: &mut Comm,
    cfg: &Lsh,
    cat: &Catalog,
    users: &Side,
    full: Option<&ScanIndex>,
    reference: &Reference,
    want: usize,
) -> Result<Chosen, CommError> {
    let n = cat.len();
    let cap = cfg.max_share * n as f64;
    // Rounds share the hashed tables and the buckets' rankings (a round re-ranks only where its
    // sizes need more of a ranking than was kept).
    let mut cache = BucketCache::new(cat, full);
    let mut measure = |worker: &mut Worker, comm: &mut Comm, c: &Lsh, round: usize| {
        let (ix, codes) = cache.index(worker, comm, (c, ahead(c, round, n, cap)), users)?;
        let local = reference.measure(
            &mut *lsh_scorer::for_sample(cat, &ix, &codes, full),
            users,
            want,
        );
        Ok::<_, CommError>((ix, codes, local.summed(worker, comm)?))
    };
    let (mut index, mut codes, mut hits) = measure(worker, comm, cfg, 0)?;
    let mut cfg = cfg.clone();
    let mut rounds = vec![round(&cfg, &hits, n)];
    let stopped = loop {
        let Some(recall) = hits.recall() else {
            break "no users sampled (eval.recall_sample = 0): sizes as given";
        };
        if cfg.target_recall == 0.0 {
            break "sizes as given (lsh.target_recall = 0)";
        }
        if recall >= cfg.target_recall {
            break "target reached";
        }
        let Some(next) = grow(&cfg, rounds.len() - 1, n, cap) else {
            break "larger sizes would score more than lsh.max_share of the catalogue";
        };
        let (ix, c, h) = measure(worker, comm, &next, rounds.len())?;
        rounds.push(round(&next, &h, n));
        if h.share(n) > cfg.max_share {
            break "the next sizes scored more than lsh.max_share of the catalogue";
        }
        (index, codes, hits, cfg) = (ix, c, h, next);
    };
    let target_met = (cfg.target_recall > 0.0)
        .then(|| hits.recall().map(|r| r >= cfg.target_recall))
        .flatten();
    let calibration = Calibration {
        target_recall: cfg.target_recall,
        max_share: cfg.max_share,
        target_met,
        stopped,
        chosen: round(&cfg, &hits, n),
        rounds,
    };
    Ok(Chosen {
        index,
        codes,
        cfg,
        hits,
        calibration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_rotates_and_respects_the_cap() {
        let cfg = Lsh::default();
        let n = 100_000;
        let a = grow(&cfg, 0, n, 1e9).unwrap();
        assert_eq!((a.head, a.tables, a.bucket_items), (256, 1, 64));
        let b = grow(&a, 1, n, 1e9).unwrap();
        assert_eq!((b.head, b.tables, b.bucket_items), (512, 1, 64));
        let c = grow(&b, 2, n, 1e9).unwrap();
        assert_eq!((c.head, c.tables, c.bucket_items), (512, 2, 64));
        // Head 1024 (1088 items) does not fit under 650, the next in the rotation (2 tables,
        // 640) does; under 600 nothing does.
        let d = grow(&b, 1, n, 650.0).unwrap();
        assert_eq!((d.head, d.tables, d.bucket_items), (512, 2, 64));
        assert!(grow(&b, 1, n, 600.0).is_none());
    }

    #[test]
    fn rounds_prepare_the_next_rounds_of_one_rotation() {
        let cfg = Lsh::default();
        let (n, cap) = (1_000_000, 1e5);
        // Round 0 (256/1/32): round 1 only lengthens the lists (rank 64 deep); round 3 adds a
        // table (hash 2 now).
        let a = ahead(&cfg, 0, n, cap);
        assert_eq!((a.depth, a.tables), (64, 2));
        // Round 2 (512/1/64): round 3 adds a table, so its own depth.
        let two = Lsh {
            head: 512,
            bucket_items: 64,
            ..cfg.clone()
        };
        let b = ahead(&two, 2, n, cap);
        assert_eq!((b.depth, b.tables), (64, 2));
        // Under a cap that leaves no growth, and without a target: the round's own sizes.
        assert_eq!(ahead(&two, 2, n, 500.0).tables, 1);
        let given = Lsh {
            target_recall: 0.0,
            ..cfg
        };
        let c = ahead(&given, 0, n, cap);
        assert_eq!((c.depth, c.tables), (32, 1));
    }

    #[test]
    fn growth_stops_when_everything_is_already_a_candidate() {
        let cfg = Lsh {
            transform: Transform::None,
            tables: 1024,
            head: 50,
            ..Lsh::default()
        };
        assert!(grow(&cfg, 0, 50, 1e9).is_none());
    }
}
