//! `recflow plan --shape`: sizing a cluster from a data set's size alone, by a model of its
//! degrees, for data too big to ingest on the machine that plans.
//!
//! **The model.** Rank each side's entities by activity, `i = 1..N`. Entity `i` holds a share
//! `w_i = i^(-s) / Σ_j j^(-s)` of the pairs (a power law in rank, Zipf with exponent `s`; by
//! default 0.7 for users and 0.8 for items, the exponents `recflow generate` plants), so its
//! degree is `pairs · w_i`, rounded, at least 1 and at most the other side's size. Ids hash to
//! virtual shards, so every shard gets the same mix of ranks: each shard gets `1/V` of every
//! rank range. Each interaction of a row picks its other-side entity independently with
//! probability `w_j` (popular items are in many users' rows), so a process whose rows hold `m`
//! interactions needs `D = Σ_j (1 − exp(−m · w_j))` distinct vectors of the other side, from
//! each owner in proportion to the rows it owns (hashing spreads popular entities evenly).
//! Ranks are grouped into geometric buckets (at most [`BUCKETS`] per side), so a 10⁸-entity
//! side costs milliseconds; flops, entities, interactions and Gram traffic then follow exactly
//! as for ingested data ([`super::cost::count_from`]).
//!
//! What the model leaves out: topic structure (a process's users sharing tastes touch fewer
//! distinct items than independent picks), and the cap on repeated pairs; both make real
//! traffic lower, so the estimate errs on the large side. BENCHMARKS.md compares it with the
//! counts of a generated set.

use super::cost::{per_worker, Layout, ShardSums, Traffic};
use crate::job::Als;
use crate::side::Assignment;

/// Rank buckets per side.
pub const BUCKETS: usize = 4096;

/// A data set described by its size.
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    /// Users with at least one interaction.
    pub users: u64,
    /// Items with at least one interaction.
    pub items: u64,
    /// Distinct (user, item) pairs.
    pub pairs: u64,
    /// Power-law exponent of user activity by rank.
    pub user_exponent: f64,
    /// Power-law exponent of item popularity by rank.
    pub item_exponent: f64,
}

impl Shape {
    /// Parses `users=N,items=N,pairs=N[,user_exponent=S][,item_exponent=S]`.
    pub fn parse(spec: &str) -> Result<Shape, String> {
        let mut s = Shape {
            users: 0,
            items: 0,
            pairs: 0,
            user_exponent: 0.7,
            item_exponent: 0.8,
        };
        for kv in spec.split(',').filter(|kv| !kv.trim().is_empty()) {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                format!("--shape: '{kv}' is not KEY=VALUE (keys: users, items, pairs, user_exponent, item_exponent)")
            })?;
            let (k, v) = (k.trim(), v.trim());
            let int = || {
                v.replace('_', "")
                    .parse::<u64>()
                    .map_err(|e| format!("--shape: {k}={v}: {e}"))
            };
            let real = || match v.parse::<f64>() {
                Ok(x) if (0.0..=3.0).contains(&x) => Ok(x),
                _ => Err(format!("--shape: {k}={v}: an exponent in 0..=3")),
            };
            match k {
                "users" => s.users = int()?,
                "items" => s.items = int()?,
                "pairs" => s.pairs = int()?,
                "user_exponent" => s.user_exponent = real()?,
                "item_exponent" => s.item_exponent = real()?,
                _ => return Err(format!("--shape: unknown key '{k}' (keys: users, items, pairs, user_exponent, item_exponent)")),
            }
        }
        if s.users == 0 || s.items == 0 || s.pairs == 0 {
            return Err("--shape needs users, items and pairs, each at least 1".into());
        }
        if s.pairs > s.users.saturating_mul(s.items) {
            return Err(format!(
                "--shape: {} pairs exceed users × items = {}",
                s.pairs,
                s.users as u128 * s.items as u128
            ));
        }
        Ok(s)
    }
}

/// Entities of one rank range: how many, and each one's degree.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    count: u64,
    degree: u64,
}

/// `Σ_{i=a}^{b-1} i^(-s)`: exact for short ranges, else the midpoint integral.
fn power_sum(a: u64, b: u64, s: f64) -> f64 {
    if b - a <= 32 {
        return (a..b).map(|i| (i as f64).powf(-s)).sum();
    }
    let (lo, hi) = (a as f64 - 0.5, b as f64 - 0.5);
    if (s - 1.0).abs() < 1e-12 {
        (hi / lo).ln()
    } else {
        (hi.powf(1.0 - s) - lo.powf(1.0 - s)) / (1.0 - s)
    }
}

/// One side's rank buckets: `n` entities sharing `pairs` by exponent `s`, degrees ≤ `cap`.
fn buckets(n: u64, s: f64, pairs: u64, cap: u64) -> Vec<Bucket> {
    let ratio = (n as f64).powf(1.0 / BUCKETS as f64);
    let mut bounds = vec![1u64];
    while *bounds.last().unwrap() <= n {
        let cur = *bounds.last().unwrap();
        bounds.push(((cur as f64 * ratio).ceil() as u64).max(cur + 1).min(n + 1));
    }
    let sums: Vec<f64> = bounds
        .windows(2)
        .map(|w| power_sum(w[0], w[1], s))
        .collect();
    let total: f64 = sums.iter().sum();
    bounds
        .windows(2)
        .zip(&sums)
        .map(|(w, &sum)| {
            let count = w[1] - w[0];
            let mean = pairs as f64 * sum / total / count as f64;
            Bucket {
                count,
                degree: (mean.round() as u64).clamp(1, cap),
            }
        })
        .collect()
}

/// Each virtual shard's degree histogram: `1/V` of every bucket (the remainders rotate over
/// the shards, bucket by bucket).
fn histograms(b: &[Bucket], shards: usize) -> Vec<Vec<(u64, u64)>> {
    let v = shards as u64;
    (0..v)
        .map(|sh| {
            b.iter()
                .enumerate()
                .map(|(k, x)| {
                    (
                        x.degree,
                        x.count / v + u64::from((sh + k as u64) % v < x.count % v),
                    )
                })
                .filter(|&(_, c)| c > 0)
                .collect()
        })
        .collect()
}

/// The modelled data: each side's buckets and per-shard sums.
pub struct Modelled {
    buckets: [Vec<Bucket>; 2],
    /// Per side, per virtual shard.
    pub sums: [ShardSums; 2],
}

/// Models `shape` over `shards` virtual shards for `als`.
pub fn model(als: &Als, shape: &Shape, shards: usize) -> Modelled {
    let buckets = [
        buckets(shape.users, shape.user_exponent, shape.pairs, shape.items),
        buckets(shape.items, shape.item_exponent, shape.pairs, shape.users),
    ];
    let sums = [0, 1].map(|t| ShardSums::of_histograms(als, &histograms(&buckets[t], shards)));
    Modelled { buckets, sums }
}

/// The expected vector traffic of the half-step solving side `t` on `layout`.
pub fn traffic(
    m: &Modelled,
    owners: &[Assignment; 2],
    d: usize,
    layout: Layout,
    t: usize,
) -> Traffic {
    let w = layout.workers;
    let nnz = per_worker(&owners[t], w, |v| m.sums[t].nnz[v]);
    let rows = per_worker(&owners[1 - t], w, |v| m.sums[1 - t].rows[v]);
    let all_rows: u64 = rows.iter().sum();
    let vec_side = &m.buckets[1 - t];
    let total: f64 = vec_side.iter().map(|b| (b.count * b.degree) as f64).sum();
    let mut out = Traffic::zero(w);
    for p in 0..layout.processes {
        let mp: u64 = (0..w)
            .filter(|&x| layout.process_of(x) == p)
            .map(|x| nnz[x])
            .sum();
        let need: f64 = vec_side
            .iter()
            .map(|b| b.count as f64 * -(-(mp as f64) * b.degree as f64 / total).exp_m1())
            .sum();
        for (src, &r) in rows.iter().enumerate() {
            let vectors = (need * r as f64 / all_rows.max(1) as f64).round() as u64;
            out.add(layout, src, p, vectors * 4 * d as u64);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_rank_and_keep_the_pairs() {
        let b = buckets(1_000_000, 0.7, 10_000_000, 100_000);
        assert_eq!(b.iter().map(|x| x.count).sum::<u64>(), 1_000_000);
        let pairs: u64 = b.iter().map(|x| x.count * x.degree).sum();
        assert!((pairs as f64 / 1e7 - 1.0).abs() < 0.01, "{pairs}");
        assert!(
            b.windows(2).all(|w| w[0].degree >= w[1].degree),
            "degrees fall with rank"
        );
        // Exact against a direct sum where the ranges are short.
        let direct: f64 = (1..=20u64).map(|i| (i as f64).powf(-0.7)).sum();
        assert!((power_sum(1, 21, 0.7) - direct).abs() < 1e-9);
        let approx = power_sum(1000, 100_000, 0.7);
        let exact: f64 = (1000..100_000u64).map(|i| (i as f64).powf(-0.7)).sum();
        assert!((approx / exact - 1.0).abs() < 1e-4, "{approx} vs {exact}");
    }

    #[test]
    fn shards_split_every_bucket_evenly() {
        let b = buckets(1000, 0.8, 20_000, 500);
        let h = histograms(&b, 7);
        let rows: Vec<u64> = h.iter().map(|s| s.iter().map(|x| x.1).sum()).collect();
        assert_eq!(rows.iter().sum::<u64>(), 1000);
        assert!(
            rows.iter().max().unwrap() - rows.iter().min().unwrap() <= 2,
            "{rows:?}"
        );
    }

    #[test]
    fn parse_reads_keys_and_refuses_nonsense() {
        let s = Shape::parse("users=100_000_000,items=10000000,pairs=5000000000").unwrap();
        assert_eq!(
            (s.users, s.items, s.pairs),
            (100_000_000, 10_000_000, 5_000_000_000)
        );
        assert_eq!(s.user_exponent, 0.7);
        assert!(Shape::parse("users=10,items=10").is_err());
        assert!(Shape::parse("users=10,items=10,pairs=101").is_err());
        assert!(Shape::parse("users=10,items=10,pairs=5,colour=3").is_err());
    }
}
