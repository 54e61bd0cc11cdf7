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

use super::scan::{fma_dot, kernel_usable, scan_kernel, score_opening, MR, NR, OPEN_PANELS};
use super::topk::Tops;

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
    /// Slot (`panel * NR + lane`) of each catalogue item in list 0's opening panels, or
    /// `u32::MAX`: where a user's seen items sit in the opening's score buffer (a list holds
    /// an item once).
    open_slot: Vec<u32>,
}

/// Reusable buffers for [`Lists::score`].
#[derive(Default)]
pub struct Scratch {
    /// Opening scores: `OPEN_PANELS` panels per user of a group.
    open: Vec<[f32; NR]>,
    count: Vec<u32>,
    by_list: Vec<u32>,
    unorm: Vec<f32>,
    active: [u32; MR],
}

impl Scratch {
    /// Groups the users by list (a counting sort: lists ascending, users ascending within):
    /// `by_list` holds the users of `member` (`per` lists each), and `count[l]` ends list `l`'s.
    fn group_by_list(&mut self, member: &[u32], per: usize, lists: usize) {
        self.count.clear();
        self.count.resize(lists + 1, 0);
        for &l in member {
            self.count[l as usize + 1] += 1;
        }
        for l in 0..lists {
            self.count[l + 1] += self.count[l];
        }
        self.by_list.clear();
        self.by_list.resize(member.len(), 0);
        for (j, &l) in member.iter().enumerate() {
            let at = &mut self.count[l as usize];
            self.by_list[*at as usize] = (j / per) as u32;
            *at += 1;
        }
    }
}

impl Lists {
    /// Packs `lists` (catalogue indices, each item at most once per list) of the row-major
    /// `factors` (`d` wide); `None` unless the AVX2+FMA kernel runs for this `d`.
    pub fn build(lists: &[&[u32]], factors: &[f32], d: usize) -> Option<Lists> {
        if !kernel_usable(d) {
            return None;
        }
        let norm = |i: u32| {
            let y = &factors[i as usize * d..(i as usize + 1) * d];
            fma_dot(y, y).sqrt()
        };
        // Sized up front: grown panel by panel, the vectors were copied on every reallocation
        // (tens of MB at a million items) and their pages touched twice.
        let count: usize = lists.iter().map(|l| l.len().div_ceil(NR)).sum();
        let mut out = Lists {
            d,
            start: Vec::with_capacity(lists.len() + 1),
            panels: Vec::with_capacity(count * d * NR),
            lane_item: Vec::with_capacity(count * NR),
            lane_count: Vec::with_capacity(count),
            panel_norm: Vec::with_capacity(count),
            open_slot: vec![u32::MAX; factors.len() / d.max(1)],
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
        let opening = out.start.get(1).map_or(0, |&e| e.min(OPEN_PANELS) * NR);
        for (slot, &i) in out.lane_item[..opening].iter().enumerate() {
            if i != u32::MAX {
                out.open_slot[i as usize] = slot as u32;
            }
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
        s.group_by_list(member, per, self.count());
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
            let open = if l == 0 && k <= NR {
                OPEN_PANELS.min(self.start[1])
            } else {
                0
            };
            for grp in s.by_list[from..to].chunks(MR) {
                if open > 0 {
                    let mut rows = [zero.as_ptr(); MR];
                    let at = |u: u32| users[u as usize * d..].as_ptr();
                    rows.iter_mut().zip(grp).for_each(|(r, &u)| *r = at(u));
                    self.open(
                        open,
                        rows,
                        grp,
                        (ex_start, ex_items),
                        keys,
                        &mut tops,
                        &mut s.open,
                    );
                    let opened: u32 = self.lane_count[..open].iter().map(|&c| c as u32).sum();
                    grp.iter().for_each(|&u| scored[u as usize] += opened);
                }
                for pan in self.start[l] + open..self.start[l + 1] {
                    let reach = self.panel_norm[pan] * (1.0 + 1e-4);
                    let mut g = 0;
                    let mut thr = [f32::INFINITY; MR];
                    let mut rows = [zero.as_ptr(); MR];
                    for &u in grp {
                        let t = tops.threshold(u as usize);
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

    /// Scores list 0's first `open` panels for the (fresh) users `grp` into one buffer each,
    /// seen items as -inf, and pushes only what can rank ([`Tops::push_opening`]).
    #[allow(clippy::too_many_arguments)]
    fn open(
        &self,
        open: usize,
        rows: [*const f32; MR],
        grp: &[u32],
        (ex_start, ex_items): (&[u32], &[u32]),
        keys: &[u64],
        tops: &mut Tops,
        buf: &mut Vec<[f32; NR]>,
    ) {
        // SAFETY: as in `run`.
        unsafe { score_opening(rows, &self.panels, self.d, open, buf) };
        for (g, &u) in grp.iter().enumerate() {
            let u = u as usize;
            let buf = &mut buf[g * open..(g + 1) * open];
            // Padding lanes and seen items never count or rank.
            for (pan, sc) in buf.iter_mut().enumerate() {
                sc[self.lane_count[pan] as usize..].fill(f32::NEG_INFINITY);
            }
            for &i in &ex_items[ex_start[u] as usize..ex_start[u + 1] as usize] {
                let slot = self.open_slot[i as usize] as usize;
                if slot < open * NR {
                    buf[slot / NR][slot % NR] = f32::NEG_INFINITY;
                }
            }
            tops.push_opening(u, buf, |slot| {
                let i = self.lane_item[slot];
                (keys[i as usize], i)
            });
        }
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
                if sc >= tops.threshold(u) && ex.binary_search(&i).is_err() {
                    tops.push(u, sc, keys[i as usize], i);
                }
            }
        }
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
            // List 0 is head-like: most of the catalogue, longer than the opening panels.
            let mut lists: Vec<Vec<u32>> = vec![(0..n as u32).filter(|_| r.below(5) > 0).collect()];
            lists.extend((1..13).map(|_| {
                let len = r.below(60) as usize;
                let mut v: Vec<u32> = (0..len).map(|_| r.below(n as u64) as u32).collect();
                v.sort_unstable();
                v.dedup();
                v
            }));
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

    /// The opening's floor is exactly the k-th best lane: the best items sit in distinct lanes
    /// (so the k-th best overall is the k-th lane best, the tightest case), some of them seen.
    /// A floor one lane too high loses the k-th item here.
    #[test]
    fn opening_floor_keeps_the_kth_item() {
        let mut r = SplitMix::new(8);
        let d = 8;
        for trial in 0..40 {
            let n = NR * (OPEN_PANELS + 2);
            // Item i scores v[i] against the user e0; low scores everywhere but 14 items in
            // distinct lanes, in random panels.
            let mut v: Vec<f32> = (0..n).map(|_| r.next_f64() as f32).collect();
            let mut lanes: Vec<usize> = (0..NR).collect();
            for j in (1..NR).rev() {
                lanes.swap(j, r.below(j as u64 + 1) as usize);
            }
            for (t, &lane) in lanes.iter().take(14).enumerate() {
                let pan = r.below(OPEN_PANELS as u64) as usize;
                v[pan * NR + lane] = 10.0 + t as f32;
            }
            let mut factors = vec![0.0f32; n * d];
            for (i, &x) in v.iter().enumerate() {
                factors[i * d] = x;
            }
            let list: Vec<u32> = (0..n as u32).collect();
            let Some(ix) = Lists::build(&[&list], &factors, d) else {
                return;
            };
            let mut user = vec![0.0f32; d];
            user[0] = 1.0;
            let seen: Vec<u32> = (0..n as u32).filter(|_| r.below(6) == 0).collect();
            let keys: Vec<u64> = (0..n as u64).collect();
            for k in [1usize, 5, 10, 16] {
                let mut scored = [0u32];
                let got = ix.score(
                    &user,
                    1,
                    &[0],
                    (&[0, seen.len() as u32], &seen),
                    &keys,
                    k,
                    &mut scored,
                    &mut Scratch::default(),
                );
                let mut want: Vec<(f32, u64, u32)> = (0..n as u32)
                    .filter(|i| !seen.contains(i))
                    .map(|i| (v[i as usize], i as u64, i))
                    .collect();
                want.sort_by(|a, b| better((a.0, a.1), (b.0, b.1)));
                want.truncate(k);
                assert_eq!(got[0], want, "trial {trial}, k {k}");
            }
        }
    }
}
