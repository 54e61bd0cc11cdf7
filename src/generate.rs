//! Synthetic implicit-feedback data from a planted low-rank model.
//!
//! Each of `rank` topics owns a random subset of items; item popularity within a topic is
//! Zipf-like, user activity is Zipf-like (a few users carry a large share of the events), and
//! each user draws most events from one main topic and two secondary ones. The expected
//! user×item matrix is therefore (non-negative) rank `rank`, and a factorisation model can
//! recover it. Rows are produced in fixed-size chunks seeded by (seed, chunk), so the data is
//! identical however many threads or workers produce it.

use crate::ids::{mix64, push_decimal, SplitMix};
use std::io::Write;

/// Rows per chunk.
pub const CHUNK: u64 = 1 << 16;

/// Shape of a synthetic data set.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Users.
    pub users: u64,
    /// Items.
    pub items: u64,
    /// Rows.
    pub nnz: u64,
    /// Planted rank (number of topics).
    pub rank: u32,
    /// Seed.
    pub seed: u64,
}

/// Precomputed sampling tables.
pub struct Generator {
    spec: Spec,
    user_cdf: Vec<f64>,
    topic_items: Vec<Vec<u64>>,
    topic_cdf: Vec<Vec<f64>>,
}

/// A large prime: `i * PRIME mod n` scrambles 0..n into itself (gcd(PRIME, n) = 1 for n < PRIME).
const PRIME: u64 = 1_000_000_007;

fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let mut acc = 0.0;
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        acc += 1.0 / ((i + 1) as f64).powf(s);
        v.push(acc);
    }
    v
}

fn sample(cdf: &[f64], r: &mut SplitMix) -> usize {
    let x = r.next_f64() * cdf[cdf.len() - 1];
    cdf.partition_point(|&c| c <= x).min(cdf.len() - 1)
}

impl Generator {
    /// Builds the tables for `spec` (needs `users`, `items`, `rank` ≥ 1).
    pub fn new(spec: Spec) -> Generator {
        let rank = spec.rank.max(1) as usize;
        let mut topic_items = vec![Vec::new(); rank];
        for i in 0..spec.items {
            topic_items[(mix64(spec.seed ^ mix64(i ^ 0xabcd)) % rank as u64) as usize].push(i);
        }
        // A topic that got no item borrows one, so every topic can be sampled.
        for (t, items) in topic_items.iter_mut().enumerate() {
            if items.is_empty() {
                items.push(t as u64 % spec.items);
            }
        }
        let topic_cdf = topic_items.iter().map(|v| zipf_cdf(v.len(), 0.8)).collect();
        Generator {
            user_cdf: zipf_cdf(spec.users as usize, 0.7),
            spec,
            topic_items,
            topic_cdf,
        }
    }

    /// Number of chunks.
    pub fn chunks(&self) -> u64 {
        self.spec.nnz.div_ceil(CHUNK)
    }

    /// Calls `f(user, item, count)` for every row of chunk `c`.
    pub fn chunk(&self, c: u64, mut f: impl FnMut(u64, u64, u32)) {
        let s = &self.spec;
        let rank = self.topic_items.len() as u64;
        let mut r = SplitMix::new(mix64(s.seed ^ mix64(c.wrapping_add(0x1234_5678))));
        let lo = c * CHUNK;
        let hi = (lo + CHUNK).min(s.nnz);
        for _ in lo..hi {
            let u = sample(&self.user_cdf, &mut r) as u64;
            let h = mix64(s.seed ^ mix64(u ^ 0x77));
            let x = r.next_f64();
            let topic = if x < 0.7 {
                h % rank
            } else if x < 0.85 {
                (h >> 20) % rank
            } else if x < 0.95 {
                (h >> 40) % rank
            } else {
                r.below(rank)
            } as usize;
            let item = self.topic_items[topic][sample(&self.topic_cdf[topic], &mut r)];
            let mut count = 1;
            while count < 20 && r.next_f64() < 0.3 {
                count += 1;
            }
            // Scramble ids so that popularity is not visible in the id order.
            f((u * PRIME) % s.users, (item * PRIME) % s.items, count);
        }
    }
}

/// Formats chunk `c` as TSV rows `user<TAB>item<TAB>count`.
pub fn chunk_tsv(g: &Generator, c: u64, buf: &mut Vec<u8>) {
    g.chunk(c, |u, i, n| {
        push_decimal(buf, u);
        buf.push(b'\t');
        push_decimal(buf, i);
        buf.push(b'\t');
        push_decimal(buf, n as u64);
        buf.push(b'\n');
    });
}

/// Writes the whole data set as TSV to `out`, using `threads` threads.
pub fn write_tsv(spec: Spec, out: &mut dyn Write, threads: usize) -> std::io::Result<()> {
    let g = Generator::new(spec);
    let n = g.chunks();
    let threads = threads.max(1) as u64;
    let batch = threads * 4;
    let mut c0 = 0;
    while c0 < n {
        let c1 = (c0 + batch).min(n);
        let bufs: Vec<Vec<u8>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    let g = &g;
                    s.spawn(move || {
                        let mut parts = Vec::new();
                        let mut c = c0 + t;
                        while c < c1 {
                            let mut b = Vec::with_capacity(CHUNK as usize * 20);
                            chunk_tsv(g, c, &mut b);
                            parts.push((c, b));
                            c += threads;
                        }
                        parts
                    })
                })
                .collect();
            let mut all: Vec<(u64, Vec<u8>)> =
                hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
            all.sort_by_key(|p| p.0);
            all.into_iter().map(|p| p.1).collect()
        });
        for b in bufs {
            out.write_all(&b)?;
        }
        c0 = c1;
    }
    Ok(())
}

/// A next-day event file on top of a base data set (`recflow generate --delta DAY`).
#[derive(Clone, Debug)]
pub struct Delta {
    /// Day number, ≥ 1 (day 0 is the base set itself); each day gets its own events and ids.
    pub day: u64,
    /// New events.
    pub nnz: u64,
    /// New users appearing on this day (ids from `users + (day−1)·new_users`).
    pub new_users: u64,
    /// New items appearing on this day (ids from `items + (day−1)·new_items`).
    pub new_items: u64,
    /// Base pairs removed ("unfavorite": one event with minus the pair's base weight).
    pub removals: u64,
}

/// Writes a realistic next-day event file for the base set `base`: `delta.nnz` new events drawn
/// from the same planted model (about 15% by new users, 10% on new items, each new user or item
/// inheriting the tastes or topic of an existing one), then removals of base pairs as negative
/// weights that cancel the pair's whole base weight. Deterministic in (base, delta).
pub fn write_delta_tsv(base: Spec, delta: &Delta, out: &mut dyn Write) -> std::io::Result<()> {
    let day = delta.day.max(1);
    let base_chunks = base.nnz.div_ceil(CHUNK);
    let per_day = delta.nnz.div_ceil(CHUNK);
    let g = Generator::new(Spec {
        nnz: (base_chunks + day * per_day) * CHUNK,
        ..base.clone()
    });
    let salt = mix64(base.seed ^ mix64(day ^ 0xde17a));
    let mut buf = Vec::with_capacity(CHUNK as usize * 20);
    let mut left = delta.nnz;
    for c in base_chunks + (day - 1) * per_day..base_chunks + day * per_day {
        let mut r = SplitMix::new(mix64(salt ^ c));
        g.chunk(c, |u, i, n| {
            if left == 0 {
                return;
            }
            left -= 1;
            let u = if delta.new_users > 0 && r.next_f64() < 0.15 {
                base.users + (day - 1) * delta.new_users + mix64(u ^ salt) % delta.new_users
            } else {
                u
            };
            let i = if delta.new_items > 0 && r.next_f64() < 0.10 {
                base.items + (day - 1) * delta.new_items + mix64(i ^ salt) % delta.new_items
            } else {
                i
            };
            push_row(&mut buf, u, i, n as i64);
        });
        out.write_all(&buf)?;
        buf.clear();
    }
    // Removals: pick base rows by hash, then cancel each picked pair's whole base weight.
    if delta.removals > 0 && base.nnz > 0 {
        let base_g = Generator::new(base.clone());
        let mut picked: std::collections::BTreeMap<(u64, u64), i64> = Default::default();
        let mut row = 0u64;
        for c in 0..base_g.chunks() {
            base_g.chunk(c, |u, i, _| {
                if mix64(salt ^ mix64(row ^ 0x5e1)) % base.nnz < delta.removals {
                    picked.insert((u, i), 0);
                }
                row += 1;
            });
        }
        for c in 0..base_g.chunks() {
            base_g.chunk(c, |u, i, n| {
                if let Some(w) = picked.get_mut(&(u, i)) {
                    *w += n as i64;
                }
            });
        }
        for ((u, i), w) in picked {
            push_row(&mut buf, u, i, -w);
        }
        out.write_all(&buf)?;
    }
    Ok(())
}

fn push_row(buf: &mut Vec<u8>, u: u64, i: u64, w: i64) {
    push_decimal(buf, u);
    buf.push(b'\t');
    push_decimal(buf, i);
    buf.push(b'\t');
    if w < 0 {
        buf.push(b'-');
    }
    push_decimal(buf, w.unsigned_abs());
    buf.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let spec = Spec {
            users: 100,
            items: 50,
            nnz: 1000,
            rank: 4,
            seed: 9,
        };
        let mut a = Vec::new();
        write_tsv(spec.clone(), &mut a, 1).unwrap();
        let mut b = Vec::new();
        write_tsv(spec, &mut b, 3).unwrap();
        assert_eq!(a, b);
        let text = String::from_utf8(a).unwrap();
        assert_eq!(text.lines().count(), 1000);
        for l in text.lines() {
            let f: Vec<u64> = l.split('\t').map(|x| x.parse().unwrap()).collect();
            assert!(f[0] < 100 && f[1] < 50 && (1..=20).contains(&f[2]));
        }
    }

    #[test]
    fn delta_has_new_ids_events_and_exact_removals() {
        let base = Spec {
            users: 200,
            items: 100,
            nnz: 5000,
            rank: 4,
            seed: 9,
        };
        let d = Delta {
            day: 2,
            nnz: 1000,
            new_users: 10,
            new_items: 5,
            removals: 50,
        };
        let mut a = Vec::new();
        write_delta_tsv(base.clone(), &d, &mut a).unwrap();
        let mut b = Vec::new();
        write_delta_tsv(base.clone(), &d, &mut b).unwrap();
        assert_eq!(a, b, "deterministic");
        let rows: Vec<(u64, u64, i64)> = String::from_utf8(a)
            .unwrap()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (
                    f[0].parse().unwrap(),
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                )
            })
            .collect();
        let adds: Vec<_> = rows.iter().filter(|r| r.2 > 0).collect();
        let dels: Vec<_> = rows.iter().filter(|r| r.2 < 0).collect();
        assert_eq!(adds.len(), 1000);
        // Day 2's new ids follow day 1's.
        assert!(adds.iter().any(|r| (210..220).contains(&r.0)));
        assert!(adds.iter().any(|r| (105..110).contains(&r.1)));
        assert!(adds.iter().all(|r| r.0 < 200 || (210..220).contains(&r.0)));
        assert!(!dels.is_empty());
        // Each removal cancels the pair's whole base weight.
        let mut sum: std::collections::HashMap<(u64, u64), i64> = Default::default();
        let g = Generator::new(base);
        for c in 0..g.chunks() {
            g.chunk(c, |u, i, n| *sum.entry((u, i)).or_default() += n as i64);
        }
        for r in dels {
            assert_eq!(sum[&(r.0, r.1)], -r.2);
        }
    }

    #[test]
    fn activity_is_skewed() {
        let g = Generator::new(Spec {
            users: 1000,
            items: 1000,
            nnz: 100_000,
            rank: 8,
            seed: 1,
        });
        let mut per_user = vec![0u32; 1000];
        for c in 0..g.chunks() {
            g.chunk(c, |u, _, _| per_user[u as usize] += 1);
        }
        per_user.sort_unstable();
        let top: u32 = per_user[990..].iter().sum();
        assert!(
            top > 5_000,
            "top 1% of users should carry >5% of rows, got {top}"
        );
    }
}
