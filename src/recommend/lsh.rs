//! Locality-sensitive hashing of factor vectors into buckets, for candidate generation.
//!
//! Random hyperplanes through the origin give a `planes`-bit code per table; `tables`
//! independent tables. Items are split into `norm_bands` bands by norm (equal counts, largest
//! norms first); with `transform = "mips"` each item becomes `[y/M, √(1 − ‖y‖²/M²)]` with M its
//! band's largest norm and each user `[x/‖x‖, 0]`, so that angular collisions follow inner
//! products within a band (norm-ranging LSH, Yan et al. 2018). The `head` highest-norm items are
//! candidates for everybody. Multi-probe also visits the buckets reached by flipping the
//! user's `probes` lowest-margin bits. `planes = 12, tables = 50, max_bucket = 10000,
//! transform = "none", norm_bands = 1, head = 0, probes = 0` is Etsy's method.
//!
//! User buckets (`transform = "users"`, the default) turn the tables around: they hash *users* by direction,
//! and each (table, code) bucket lists the N items outside the head list that score best against
//! the mean direction of its users (summed over all workers in exact fixed point, ranked by the
//! exact scan). A user's candidates are its buckets' lists plus the head list
//! (`recommend::lists` scores each list for all its users at once). On implicit-ALS vectors, where
//! the items a global head list misses are the next ones by norm at wide angles (no hyperplane
//! code collides with them), this adapts the "head" to the user's direction instead
//! (docs/BENCHMARKS.md).

use super::planes::hyperplanes;
use super::user_tables::{bucket_ids, hash_users, UserTable};
use crate::job::{Lsh, Transform};
use std::collections::HashMap;

/// Bucket index over a catalogue of items.
pub struct Index {
    cfg: Lsh,
    dim: usize,
    /// `tables × planes` hyperplanes of dimension `dim + 1`, row-major.
    planes: Vec<f32>,
    /// Items in each (table, band, code) bucket, ascending.
    buckets: HashMap<(u32, u32, u64), Vec<u32>>,
    /// Candidates for every user.
    pub head: Vec<u32>,
    /// Largest item norm in each band (bands are in decreasing norm order).
    pub band_max: Vec<f32>,
    /// User-bucket lists by bucket id (`transform = "users"`).
    user_lists: Vec<Vec<u32>>,
    /// Buckets dropped for holding more than `max_bucket` items.
    pub dropped_buckets: u64,
    /// (item, table) memberships lost with them.
    pub dropped_memberships: u64,
}

/// Bucket-size statistics for the manifest.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BucketStats {
    /// Buckets kept.
    pub buckets: u64,
    /// Largest kept bucket.
    pub max_size: u64,
    /// Mean kept bucket size.
    pub mean_size: f64,
    /// Buckets dropped for size.
    pub dropped_buckets: u64,
    /// Item-table memberships lost with them.
    pub dropped_memberships: u64,
    /// Items in the head list.
    pub head: u64,
    /// Kept buckets by size: log2 bins (`crate::report::log2_bin`).
    pub size_histogram: Vec<u64>,
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

/// `x`'s bits as an integer that orders like [`f32::total_cmp`].
fn total_order_bits(x: f32) -> u32 {
    let b = x.to_bits();
    // Negative values: flip every bit (reverses their order below the positives); positive
    // values: set the sign bit (above every negative).
    if b >> 31 == 1 {
        !b
    } else {
        b | 1 << 31
    }
}

/// Items by decreasing norm (ties: smaller key first): the head list is its prefix.
pub struct NormOrder {
    /// Every item's norm.
    pub norms: Vec<f32>,
    /// Catalogue indices, largest norm first.
    pub order: Vec<u32>,
    /// Every item's place in `order` (an item is in a head list of `h` when its place is < h).
    pub place: Vec<u32>,
}

impl NormOrder {
    /// The order of row-major `items` (`dim` wide); `keys` break norm ties.
    pub fn new(items: &[f32], keys: &[u64], dim: usize) -> NormOrder {
        let n = keys.len();
        let norms: Vec<f32> = (0..n)
            .map(|i| norm(&items[i * dim..(i + 1) * dim]))
            .collect();
        // Sorted as plain integers (descending norm in `f32::total_cmp`'s order, then key):
        // the same order as comparing norms and keys, without a gather per comparison.
        let mut by: Vec<(u32, u64, u32)> = (0..n)
            .map(|i| (!total_order_bits(norms[i]), keys[i], i as u32))
            .collect();
        by.sort_unstable();
        let order: Vec<u32> = by.into_iter().map(|(_, _, i)| i).collect();
        let mut place = vec![0u32; n];
        for (p, &i) in order.iter().enumerate() {
            place[i as usize] = p as u32;
        }
        NormOrder {
            norms,
            order,
            place,
        }
    }
}

impl Index {
    /// Builds the index over row-major `items` (`n × dim`); `keys` break norm ties.
    pub fn build(cfg: &Lsh, items: &[f32], keys: &[u64], dim: usize) -> Index {
        Index::build_ordered(cfg, items, dim, &NormOrder::new(items, keys, dim))
    }

    /// [`Index::build`] with the items' norm order computed once (calibration rounds share it).
    pub fn build_ordered(cfg: &Lsh, items: &[f32], dim: usize, by_norm: &NormOrder) -> Index {
        let (norms, order) = (&by_norm.norms, &by_norm.order);
        let n = order.len();
        let planes = hyperplanes(cfg.seed, 0..cfg.tables, cfg.planes, dim);
        let h = (cfg.head as usize).min(n);
        let mut head: Vec<u32> = order[..h].to_vec();
        head.sort_unstable();
        let rest = &order[h..];
        let bands = cfg.norm_bands as usize;
        let mut idx = Index {
            cfg: cfg.clone(),
            dim,
            planes,
            buckets: HashMap::new(),
            head,
            band_max: Vec::new(),
            user_lists: Vec::new(),
            dropped_buckets: 0,
            dropped_memberships: 0,
        };
        // With user buckets (or no tables) no item is hashed: only the bands' norms are needed,
        // and copying every item per calibration round was a tenth of the calibration's time.
        let hashed = cfg.tables * (cfg.transform != Transform::Users) as u32;
        let mut z = vec![0.0f32; dim + 1];
        for (b, chunk) in rest.chunks(rest.len().div_ceil(bands).max(1)).enumerate() {
            let m = chunk
                .first()
                .map(|&i| norms[i as usize])
                .unwrap_or(1.0)
                .max(f32::MIN_POSITIVE);
            idx.band_max.push(m);
            if hashed == 0 {
                continue;
            }
            for &i in chunk {
                let y = &items[i as usize * dim..(i as usize + 1) * dim];
                match cfg.transform {
                    Transform::None | Transform::Users => {
                        z[..dim].copy_from_slice(y);
                        z[dim] = 0.0;
                    }
                    Transform::Mips => {
                        z[..dim].iter_mut().zip(y).for_each(|(z, &y)| *z = y / m);
                        z[dim] = (1.0 - (norms[i as usize] / m).powi(2)).max(0.0).sqrt();
                    }
                }
                // With user buckets the tables hash users, not items (see `user_buckets`).
                for t in 0..hashed {
                    let (code, _) = idx.code(t, &z);
                    idx.buckets.entry((t, b as u32, code)).or_default().push(i);
                }
            }
        }
        if cfg.max_bucket > 0 {
            let (mut db, mut dm) = (0, 0);
            idx.buckets.retain(|_, v| {
                let keep = v.len() as u64 <= cfg.max_bucket;
                if !keep {
                    db += 1;
                    dm += v.len() as u64;
                }
                keep
            });
            idx.dropped_buckets = db;
            idx.dropped_memberships = dm;
        }
        for v in idx.buckets.values_mut() {
            v.sort_unstable();
        }
        idx
    }

    /// Code of `z` (length dim + 1) in table `t`, and the per-bit margins |plane·z|.
    fn code(&self, t: u32, z: &[f32]) -> (u64, Vec<f32>) {
        let p = self.cfg.planes as usize;
        let w = self.dim + 1;
        let mut code = 0u64;
        let mut margins = Vec::with_capacity(p);
        for j in 0..p {
            let h = &self.planes[(t as usize * p + j) * w..(t as usize * p + j + 1) * w];
            let s: f32 = h.iter().zip(z).map(|(a, b)| a * b).sum();
            if s >= 0.0 {
                code |= 1 << j;
            }
            margins.push(s.abs());
        }
        (code, margins)
    }

    /// Calls `f` for every candidate item of a user vector `x` (an item may come more than once).
    pub fn candidates(&self, x: &[f32], mut f: impl FnMut(u32)) {
        self.head.iter().for_each(|&i| f(i));
        self.bucket_candidates(x, f);
    }

    /// Like [`Index::candidates`] without the head list: the items of the user's buckets.
    pub fn bucket_candidates(&self, x: &[f32], mut f: impl FnMut(u32)) {
        let probes = self.probes(x);
        for b in 0..self.band_max.len() as u32 {
            self.band_items(&probes, b, &mut f);
        }
    }

    /// The (table, code) buckets a user vector `x` visits: its own code in every table, then
    /// the codes with one of its `probes` lowest-margin bits flipped.
    pub fn probes(&self, x: &[f32]) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        if self.cfg.tables == 0 {
            return out;
        }
        let mut z = vec![0.0f32; self.dim + 1];
        let nx = match self.cfg.transform {
            Transform::Mips => norm(x).max(f32::MIN_POSITIVE),
            Transform::None | Transform::Users => 1.0,
        };
        z[..self.dim]
            .iter_mut()
            .zip(x)
            .for_each(|(z, &x)| *z = x / nx);
        for t in 0..self.cfg.tables {
            let (code, margins) = self.code(t, &z);
            let mut bits: Vec<usize> = (0..margins.len()).collect();
            bits.sort_by(|&a, &b| margins[a].total_cmp(&margins[b]).then(a.cmp(&b)));
            out.push((t, code));
            out.extend(
                bits.iter()
                    .take(self.cfg.probes as usize)
                    .map(|&j| (t, code ^ (1 << j))),
            );
        }
        out
    }

    /// Calls `f` for the items of band `b` in the buckets `probes` (from [`Index::probes`]).
    pub fn band_items(&self, probes: &[(u32, u64)], b: u32, mut f: impl FnMut(u32)) {
        for &(t, c) in probes {
            if let Some(v) = self.buckets.get(&(t, b, c)) {
                v.iter().for_each(|&i| f(i));
            }
        }
    }

    /// Hash tables.
    pub fn tables(&self) -> usize {
        self.cfg.tables as usize
    }

    /// Items listed for user bucket `id` (from [`Index::user_buckets`]).
    pub fn user_bucket(&self, id: u32) -> &[u32] {
        &self.user_lists[id as usize]
    }

    /// Every user bucket's items, by bucket id (from [`Index::user_buckets`]).
    pub fn user_lists(&self) -> &[Vec<u32>] {
        &self.user_lists
    }

    /// Builds the user buckets (`transform = "users"`) on every worker at once: each worker hashes
    /// its users (`users`, row-major) with [`hash_users`], and each bucket lists the
    /// `bucket_items` items that `rank` (top-N of the catalogue for a block of query vectors)
    /// returns for its mean direction. Returns every user's bucket ids (one per table), row by
    /// row.
    pub fn user_buckets(
        &mut self,
        worker: &mut timely::worker::Worker,
        comm: &mut crate::cluster::Comm,
        users: &[f32],
        rank: impl Fn(&[f32], usize) -> Vec<Vec<u32>>,
    ) -> Result<Vec<u32>, crate::cluster::CommError> {
        let (seed, planes, d) = (self.cfg.seed, self.cfg.planes, self.dim);
        let tabs = hash_users(worker, comm, (seed, planes), 0..self.cfg.tables, users, d)?;
        let dirs: Vec<f32> = tabs.iter().flat_map(|t| t.dirs.iter().copied()).collect();
        let mut lists = rank(&dirs, self.cfg.bucket_items as usize).into_iter();
        let tables: Vec<&UserTable> = tabs.iter().collect();
        let per_table = tabs
            .iter()
            .map(|t| lists.by_ref().take(t.codes.len()).collect())
            .collect();
        self.install_user_lists(&tables, per_table);
        Ok(bucket_ids(&tables, users.len() / d.max(1)))
    }

    /// Sets the user buckets of tables `0..tables.len()`: `lists[t][b]` (best first) for bucket
    /// `tables[t].codes[b]`; bucket ids run table by table, codes ascending ([`bucket_ids`]).
    pub fn install_user_lists(&mut self, tables: &[&UserTable], lists: Vec<Vec<Vec<u32>>>) {
        self.buckets.clear();
        self.user_lists.clear();
        for (t, (tab, lists)) in tables.iter().zip(lists).enumerate() {
            assert_eq!(tab.codes.len(), lists.len(), "one list per bucket");
            for (&c, v) in tab.codes.iter().zip(lists) {
                let mut sorted = v.clone();
                sorted.sort_unstable();
                self.buckets.insert((t as u32, 0, c), sorted);
                // Best first: list scoring meets the likely winners first (high thresholds early).
                self.user_lists.push(v);
            }
        }
    }

    /// Size statistics.
    pub fn stats(&self) -> BucketStats {
        let sizes: Vec<u64> = self.buckets.values().map(|v| v.len() as u64).collect();
        BucketStats {
            buckets: sizes.len() as u64,
            max_size: sizes.iter().copied().max().unwrap_or(0),
            mean_size: sizes.iter().sum::<u64>() as f64 / sizes.len().max(1) as f64,
            dropped_buckets: self.dropped_buckets,
            dropped_memberships: self.dropped_memberships,
            head: self.head.len() as u64,
            size_histogram: sizes
                .iter()
                .fold(vec![0; crate::report::BINS], |mut h, &n| {
                    h[crate::report::log2_bin(n)] += 1;
                    h
                }),
        }
    }

    /// Buckets of the tables with `t % parts == part`, as `table<TAB>code<TAB>item` lines with
    /// the band folded into the code (`band << planes | code`), sorted.
    pub fn bucket_lines(
        &self,
        item_ids: &[crate::ids::RawId],
        part: usize,
        parts: usize,
    ) -> (Vec<u8>, u64) {
        let mut keys: Vec<&(u32, u32, u64)> = self
            .buckets
            .keys()
            .filter(|k| k.0 as usize % parts == part)
            .collect();
        keys.sort_unstable();
        let mut out = Vec::new();
        let mut n = 0;
        for k in keys {
            let code = (k.1 as u64) << self.cfg.planes | k.2;
            for &i in &self.buckets[k] {
                out.extend_from_slice(
                    format!("{}\t{}\t{}\n", k.0, code, item_ids[i as usize]).as_bytes(),
                );
                n += 1;
            }
        }
        (out, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SplitMix;

    fn cfg() -> Lsh {
        Lsh {
            planes: 4,
            tables: 8,
            max_bucket: 0,
            transform: Transform::Mips,
            norm_bands: 2,
            head: 0,
            probes: 0,
            seed: 1,
            bucket_items: 0,
            ..Lsh::default()
        }
    }

    fn random(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut r = SplitMix::new(seed);
        (0..n * d).map(|_| r.next_normal() as f32).collect()
    }

    #[test]
    fn norm_order_is_the_comparison_sort() {
        // Integer keys order like `total_cmp`, signed zeros, infinities and NaN included.
        let v = [
            f32::NAN,
            f32::INFINITY,
            1.5,
            f32::MIN_POSITIVE,
            1e-45,
            0.0,
            -0.0,
            -1e-45,
            -2.0,
            f32::NEG_INFINITY,
            -f32::NAN,
        ];
        for a in v {
            for b in v {
                let want = a.total_cmp(&b);
                assert_eq!(
                    total_order_bits(a).cmp(&total_order_bits(b)),
                    want,
                    "{a} {b}"
                );
            }
        }
        // Rows with tied norms (coarse values, permuted signs): largest norm first, then key.
        let (n, d) = (300, 3);
        let mut r = SplitMix::new(11);
        let items: Vec<f32> = (0..n * d).map(|_| r.below(3) as f32 - 1.0).collect();
        let keys: Vec<u64> = (0..n as u64).map(|i| (i * 7919) % 1000).collect();
        let o = NormOrder::new(&items, &keys, d);
        let mut want: Vec<u32> = (0..n as u32).collect();
        want.sort_by(|&a, &b| {
            o.norms[b as usize]
                .total_cmp(&o.norms[a as usize])
                .then(keys[a as usize].cmp(&keys[b as usize]))
        });
        assert_eq!(o.order, want);
        assert!(o
            .order
            .iter()
            .enumerate()
            .all(|(p, &i)| o.place[i as usize] as usize == p));
    }

    #[test]
    fn enough_tables_find_everything() {
        // One plane per table and many tables: every item collides with every query somewhere.
        let (n, d) = (40, 6);
        let items = random(n, d, 2);
        let keys: Vec<u64> = (0..n as u64).collect();
        let c = Lsh {
            planes: 1,
            tables: 64,
            ..cfg()
        };
        let idx = Index::build(&c, &items, &keys, d);
        let x = random(1, d, 3);
        let mut seen = vec![false; n];
        idx.candidates(&x, |i| seen[i as usize] = true);
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn reference_settings_are_plain_hyperplane_lsh() {
        // transform none, one band: an item and a query share a bucket in table t exactly when
        // every plane puts them on the same side.
        let (n, d) = (200, 5);
        let items = random(n, d, 4);
        let keys: Vec<u64> = (0..n as u64).collect();
        let c = Lsh {
            planes: 3,
            tables: 5,
            max_bucket: 0,
            transform: Transform::None,
            norm_bands: 1,
            head: 0,
            probes: 0,
            seed: 9,
            bucket_items: 0,
            ..Lsh::default()
        };
        let idx = Index::build(&c, &items, &keys, d);
        let x = random(1, d, 5);
        let mut got = vec![0u32; n];
        idx.candidates(&x, |i| got[i as usize] += 1);
        for i in 0..n {
            let mut want = 0;
            for t in 0..5usize {
                let same = (0..3).all(|j| {
                    let h = &idx.planes[(t * 3 + j) * (d + 1)..(t * 3 + j + 1) * (d + 1)];
                    let a: f32 = h
                        .iter()
                        .zip(&items[i * d..(i + 1) * d])
                        .map(|(p, v)| p * v)
                        .sum();
                    let b: f32 = h.iter().zip(&x).map(|(p, v)| p * v).sum();
                    (a >= 0.0) == (b >= 0.0)
                });
                want += same as u32;
            }
            assert_eq!(got[i], want, "item {i}");
        }
    }

    #[test]
    fn oversized_buckets_are_dropped_and_counted() {
        let (n, d) = (100, 4);
        let items = random(n, d, 6);
        let keys: Vec<u64> = (0..n as u64).collect();
        let c = Lsh {
            planes: 1,
            tables: 3,
            max_bucket: 30,
            norm_bands: 1,
            ..cfg()
        };
        let idx = Index::build(&c, &items, &keys, d);
        // One plane splits 100 items in two halves, so most buckets exceed 30.
        assert!(idx.dropped_buckets > 0);
        assert!(idx.buckets.values().all(|v| v.len() <= 30));
        let lost: u64 = idx.dropped_memberships;
        let kept: u64 = idx.buckets.values().map(|v| v.len() as u64).sum();
        assert_eq!(lost + kept, 300);
    }

    #[test]
    fn mips_transform_keeps_inner_product_order_within_a_band() {
        // For the transformed vectors, cosine with [x/|x|, 0] is x·y / (|x| M): the same order
        // as the inner product.
        let (n, d) = (50, 4);
        let items = random(n, d, 7);
        let x = random(1, d, 8);
        let m = (0..n)
            .map(|i| norm(&items[i * d..(i + 1) * d]))
            .fold(0.0f32, f32::max);
        let nx = norm(&x);
        let mut by_ip: Vec<usize> = (0..n).collect();
        let ip = |i: usize| {
            items[i * d..(i + 1) * d]
                .iter()
                .zip(&x)
                .map(|(a, b)| a * b)
                .sum::<f32>()
        };
        by_ip.sort_by(|&a, &b| ip(b).total_cmp(&ip(a)));
        let cos = |i: usize| {
            let y = &items[i * d..(i + 1) * d];
            let z: Vec<f32> = y
                .iter()
                .map(|v| v / m)
                .chain(std::iter::once(
                    (1.0 - (norm(y) / m).powi(2)).max(0.0).sqrt(),
                ))
                .collect();
            let q: Vec<f32> = x
                .iter()
                .map(|v| v / nx)
                .chain(std::iter::once(0.0))
                .collect();
            z.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>() / norm(&z)
        };
        for w in by_ip.windows(2) {
            assert!(cos(w[0]) >= cos(w[1]) - 1e-6);
        }
    }
}
