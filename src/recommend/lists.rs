//! Scoring users against the item lists they belong to (user buckets, the head list), list by
//! list: the users of one list are scored together as a dense users × items block by the same
//! register kernel as the exact scan, so a list's vectors are read once per block of users
//! instead of once per user, and no per-user candidate set is built or deduplicated.
//!
//! Each list is packed in panels of [`NR`] items, best first as given, with each panel's largest
//! norm, so a user sits out a panel that Cauchy–Schwarz shows cannot enter its top k. An item a
//! user reaches through two lists is scored twice with the same bits and kept once; the result
//! is each user's exact top k over the union of its lists, whatever order the lists are
//! visited in, so it does not depend on how users are split into blocks or workers.

use super::scan::{fma_dot, kernel_usable, scan_kernel, MR, NR};

/// Item lists packed for the register kernel.
pub struct Lists {
    d: usize,
    /// Panels of list `l`: `start[l]..start[l + 1]`.
    start: Vec<usize>,
    /// `d × NR` floats per panel (dimension-major), zero-padded.
    panels: Vec<f32>,
    /// Catalogue index of each panel lane; `u32::MAX` for padding.
    lane_item: Vec<u32>,
    /// Real items in each panel.
    lane_count: Vec<u8>,
    /// Largest item norm in each panel.
    panel_norm: Vec<f32>,
}

/// Reusable buffers for [`Lists::score`].
#[derive(Default)]
pub struct Scratch {
    count: Vec<u32>,
    by_list: Vec<u32>,
    unorm: Vec<f32>,
    active: [u32; MR],
}

impl Lists {
    /// Packs `lists` (catalogue indices) of the row-major `factors` (`d` wide); `None` unless
    /// the AVX2+FMA kernel runs for this `d`.
    pub fn build(lists: &[&[u32]], factors: &[f32], d: usize) -> Option<Lists> {
        if !kernel_usable(d) {
            return None;
        }
        let norm = |i: u32| {
            let y = &factors[i as usize * d..(i as usize + 1) * d];
            fma_dot(y, y).sqrt()
        };
        let mut out = Lists {
            d,
            start: Vec::with_capacity(lists.len() + 1),
            panels: Vec::new(),
            lane_item: Vec::new(),
            lane_count: Vec::new(),
            panel_norm: Vec::new(),
        };
        out.start.push(0);
        let mut normed: Vec<(f32, u32)> = Vec::new();
        for list in lists {
            normed.clear();
            normed.extend(list.iter().map(|&i| (norm(i), i)));
            for chunk in normed.chunks(NR) {
                let base = out.panels.len();
                out.panels.resize(base + d * NR, 0.0);
                for (lane, &(_, i)) in chunk.iter().enumerate() {
                    let y = &factors[i as usize * d..(i as usize + 1) * d];
                    for (k, &v) in y.iter().enumerate() {
                        out.panels[base + k * NR + lane] = v;
                    }
                }
                out.lane_item.extend(chunk.iter().map(|&(_, i)| i));
                out.lane_item
                    .extend(std::iter::repeat_n(u32::MAX, NR - chunk.len()));
                out.lane_count.push(chunk.len() as u8);
                out.panel_norm
                    .push(chunk.iter().map(|c| c.0).fold(0.0, f32::max));
            }
            out.start.push(out.panel_norm.len());
        }
        Some(out)
    }

    /// Number of lists.
    pub fn count(&self) -> usize {
        self.start.len() - 1
    }

    /// Each user's `k` best items (best first, as `(score, key, catalogue index)`) over every
    /// list `member[u * per..(u + 1) * per]`, scored against user `u` (rows of `users`, `d`
    /// wide), leaving out its excluded items `ex_items[ex_start[u]..ex_start[u + 1]]` (sorted
    /// catalogue indices); `keys` are the catalogue's global keys (ties). Adds to `scored[u]`
    /// the items the kernel scored for `u`. Lists are visited in ascending id, so the list that
    /// gives the highest k-th best scores soonest (the head list) should come first: it prunes
    /// the others.
    #[allow(clippy::too_many_arguments)]
    pub fn score(
        &self,
        users: &[f32],
        per: usize,
        member: &[u32],
        (ex_start, ex_items): (&[u32], &[u32]),
        keys: &[u64],
        k: usize,
        scored: &mut [u32],
        s: &mut Scratch,
    ) -> Vec<Vec<(f32, u64, u32)>> {
        let d = self.d;
        let b = users.len() / d;
        debug_assert_eq!(member.len(), b * per);
        let mut tops = Tops::new(b, k);
        if k == 0 {
            return tops.into_lists();
        }
        // Users grouped by list (counting sort: lists ascending, users ascending within).
        s.count.clear();
        s.count.resize(self.count() + 1, 0);
        for &l in member {
            s.count[l as usize + 1] += 1;
        }
        for l in 0..self.count() {
            s.count[l + 1] += s.count[l];
        }
        s.by_list.clear();
        s.by_list.resize(member.len(), 0);
        for (j, &l) in member.iter().enumerate() {
            let at = &mut s.count[l as usize];
            s.by_list[*at as usize] = (j / per) as u32;
            *at += 1;
        }
        // count[l] is now the end of list l's users (the start of list l + 1's).
        s.unorm.clear();
        s.unorm
            .extend(users.chunks_exact(d).map(|u| fma_dot(u, u).sqrt()));
        let zero = vec![0.0f32; d];
        let mut from = 0usize;
        for l in 0..self.count() {
            let to = s.count[l] as usize;
            // MR of the list's users at a time through all of its panels, so their rows and
            // lists stay in L1; a user sits a panel out when Cauchy–Schwarz (with a margin for
            // rounding; a threshold above -inf means its list is full) rules the panel out.
            for grp in s.by_list[from..to].chunks(MR) {
                for pan in self.start[l]..self.start[l + 1] {
                    let reach = self.panel_norm[pan] * (1.0 + 1e-4);
                    let mut g = 0;
                    let mut thr = [f32::INFINITY; MR];
                    let mut rows = [zero.as_ptr(); MR];
                    for &u in grp {
                        let t = tops.thr[u as usize];
                        if t <= s.unorm[u as usize] * reach + f32::MIN_POSITIVE {
                            thr[g] = t;
                            rows[g] = users[u as usize * d..].as_ptr();
                            s.active[g] = u;
                            scored[u as usize] += self.lane_count[pan] as u32;
                            g += 1;
                        }
                    }
                    if g > 0 {
                        let active = s.active;
                        self.run(
                            pan,
                            rows,
                            &thr,
                            &active[..g],
                            (ex_start, ex_items),
                            keys,
                            &mut tops,
                        );
                    }
                }
            }
            from = to;
        }
        tops.into_lists()
    }

    /// Scores panel `pan` for the users `active` (rows `rows`, thresholds `thr`) and pushes
    /// the items that enter their lists.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        pan: usize,
        rows: [*const f32; MR],
        thr: &[f32; MR],
        active: &[u32],
        (ex_start, ex_items): (&[u32], &[u32]),
        keys: &[u64],
        tops: &mut Tops,
    ) {
        let d = self.d;
        let mut out = [[0.0f32; NR]; MR];
        // SAFETY: `build` only succeeds where the AVX2+FMA kernel is usable for d; every row
        // pointer addresses d floats (unused ones a zero row); the panel holds d × NR floats.
        let hit = unsafe {
            scan_kernel(
                rows,
                &self.panels[pan * d * NR..(pan + 1) * d * NR],
                d,
                thr,
                &mut out,
            )
        };
        let real = (1u32 << self.lane_count[pan]) - 1;
        for (j, &u) in active.iter().enumerate() {
            if hit & (1 << j) == 0 {
                continue;
            }
            let u = u as usize;
            // Lanes at or above the threshold, as bits (no branch per lane).
            let t = thr[j];
            let mut m = out[j]
                .iter()
                .enumerate()
                .fold(0u32, |m, (lane, &sc)| m | ((sc >= t) as u32) << lane)
                & real;
            let ex = &ex_items[ex_start[u] as usize..ex_start[u + 1] as usize];
            while m != 0 {
                let lane = m.trailing_zeros() as usize;
                m &= m - 1;
                let (sc, i) = (out[j][lane], self.lane_item[pan * NR + lane]);
                if sc >= tops.thr[u] && ex.binary_search(&i).is_err() {
                    tops.push(u, sc, keys[i as usize], i);
                }
            }
        }
    }
}

/// Every user's best `k` so far in one flat array (no allocation per user), with the k-th best
/// score beside it: the kernel reads thresholds far more often than lists change.
struct Tops {
    k: usize,
    len: Vec<u32>,
    /// `(order, key, item)`, `k` slots per user, best first; `order` is the score as an
    /// integer in `f32::total_cmp` order, so ranking needs no float compares.
    ent: Vec<(i32, u64, u32)>,
    /// The k-th best score, or -inf while a list is not full.
    thr: Vec<f32>,
}

/// `f32::total_cmp` order as an `i32` (reversible: see [`score_of`]).
fn order_of(s: f32) -> i32 {
    let b = s.to_bits() as i32;
    b ^ (((b >> 31) as u32) >> 1) as i32
}

fn score_of(o: i32) -> f32 {
    f32::from_bits((o ^ (((o >> 31) as u32) >> 1) as i32) as u32)
}

impl Tops {
    fn new(b: usize, k: usize) -> Tops {
        Tops {
            k,
            len: vec![0; b],
            ent: vec![(0, 0, 0); b * k],
            thr: vec![f32::NEG_INFINITY; b],
        }
    }

    /// Inserts item `p` for user `u` unless it does not rank or is already there (the same
    /// item through two lists has the same score bits and key, so it meets itself).
    fn push(&mut self, u: usize, s: f32, key: u64, p: u32) {
        let k = self.k;
        let n = self.len[u] as usize;
        let row = &mut self.ent[u * k..(u + 1) * k];
        let o = order_of(s);
        // Entries ranked above (o, key), counted without a branch per entry; a tie on the
        // score (rare) is settled by keys.
        let mut at = row[..n].iter().filter(|e| e.0 > o).count();
        while at < n && row[at].0 == o {
            if row[at].1 == key {
                return; // p itself
            }
            if row[at].1 > key {
                break;
            }
            at += 1;
        }
        if at == k {
            return;
        }
        let end = (n + 1).min(k);
        row.copy_within(at..end - 1, at + 1);
        row[at] = (o, key, p);
        self.len[u] = end as u32;
        if end == k {
            self.thr[u] = score_of(row[k - 1].0);
        }
    }

    fn into_lists(self) -> Vec<Vec<(f32, u64, u32)>> {
        let k = self.k;
        (0..self.len.len())
            .map(|u| {
                self.ent[u * k..u * k + self.len[u] as usize]
                    .iter()
                    .map(|&(o, key, p)| (score_of(o), key, p))
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SplitMix;
    use crate::recommend::better;

    /// Each user's top-k over the union of its lists, against a naive sort of that union:
    /// overlapping lists (the same item through two lists), exclusions, ties (coarse values),
    /// zero vectors, lists shorter and longer than a panel, k beyond the union.
    #[test]
    fn list_scores_match_naive_union() {
        let mut r = SplitMix::new(21);
        // `aligned`: items and users point almost the same way, so scores come close to
        // ‖x‖‖y‖ and Cauchy–Schwarz skips panels (a bound that is too eager fails this case).
        for (n, d, coarse, aligned) in [
            (50usize, 8usize, true, false),
            (400, 64, false, false),
            (900, 24, true, false),
            (600, 16, false, true),
        ] {
            let val = |r: &mut SplitMix| super::super::scan::test_value(r, coarse);
            let along = |r: &mut SplitMix, j: usize| {
                (1.0 + 0.05 * r.next_normal() as f32) * if j.is_multiple_of(2) { 1.0 } else { 0.5 }
            };
            let draw = |r: &mut SplitMix, count: usize| -> Vec<f32> {
                (0..count)
                    .map(|j| if aligned { along(r, j % d) } else { val(r) })
                    .collect()
            };
            let mut factors = draw(&mut r, n * d);
            if aligned {
                // One scale per item (a whole row), so norms vary from item to item.
                for row in factors.chunks_mut(d) {
                    let s = 0.1 + 3.0 * r.next_f64() as f32;
                    row.iter_mut().for_each(|v| *v *= s);
                }
            }
            factors[..d].fill(0.0);
            let keys: Vec<u64> = (0..n as u64).map(|i| i * 5 + 1).collect();
            let lists: Vec<Vec<u32>> = (0..13)
                .map(|_| {
                    let len = r.below(60) as usize;
                    let mut v: Vec<u32> = (0..len).map(|_| r.below(n as u64) as u32).collect();
                    v.sort_unstable();
                    v.dedup();
                    v
                })
                .collect();
            let refs: Vec<&[u32]> = lists.iter().map(|v| v.as_slice()).collect();
            let Some(ix) = Lists::build(&refs, &factors, d) else {
                return; // no AVX2 here: the per-user path serves
            };
            let (nu, per) = (40usize, 3usize);
            let mut users = draw(&mut r, nu * d);
            users[d..2 * d].fill(0.0);
            let member: Vec<u32> = (0..nu * per).map(|_| r.below(13) as u32).collect();
            let excluded: Vec<Vec<usize>> = (0..nu)
                .map(|_| (0..n).filter(|_| r.below(8) == 0).collect())
                .collect();
            let mut ex_start = vec![0u32];
            let mut ex_items = Vec::new();
            for e in &excluded {
                ex_items.extend(e.iter().map(|&i| i as u32));
                ex_start.push(ex_items.len() as u32);
            }
            for k in [0usize, 1, 10, 200] {
                let mut scored = vec![0u32; nu];
                let best = ix.score(
                    &users,
                    per,
                    &member,
                    (&ex_start, &ex_items),
                    &keys,
                    k,
                    &mut scored,
                    &mut Scratch::default(),
                );
                for u in 0..nu {
                    let x = &users[u * d..(u + 1) * d];
                    let mut union: Vec<u32> = member[u * per..(u + 1) * per]
                        .iter()
                        .flat_map(|&l| lists[l as usize].iter().copied())
                        .filter(|&i| !excluded[u].contains(&(i as usize)))
                        .collect();
                    union.sort_unstable();
                    union.dedup();
                    let mut want: Vec<(f32, u64, u32)> = union
                        .iter()
                        .map(|&i| {
                            let y = &factors[i as usize * d..(i as usize + 1) * d];
                            (fma_dot(x, y), keys[i as usize], i)
                        })
                        .collect();
                    want.sort_by(|a, b| better((a.0, a.1), (b.0, b.1)));
                    want.truncate(k);
                    assert_eq!(best[u], want, "n={n} d={d} k={k} user {u}");
                    let reach: u32 = member[u * per..(u + 1) * per]
                        .iter()
                        .map(|&l| lists[l as usize].len() as u32)
                        .sum();
                    assert!(scored[u] <= reach, "scored more than its lists hold");
                }
            }
        }
    }

    #[test]
    fn order_of_is_total_cmp_and_reversible() {
        let v = [
            f32::NEG_INFINITY,
            -3.5,
            -f32::MIN_POSITIVE,
            -0.0,
            0.0,
            1e-30,
            2.0,
            f32::MAX,
            f32::INFINITY,
        ];
        for a in v {
            assert_eq!(score_of(order_of(a)).to_bits(), a.to_bits());
            for b in v {
                assert_eq!(order_of(a).cmp(&order_of(b)), a.total_cmp(&b), "{a} {b}");
            }
        }
    }
}
