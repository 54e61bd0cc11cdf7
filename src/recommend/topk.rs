//! Many users' best-k lists at once, in flat arrays: the scan and list scorers push tens of
//! candidates per user, so a push must cost a few vector compares, not an allocation or a call.
//!
//! Order is [`super::better`]'s: higher score first, then smaller key. Scores are kept as `i32`
//! in `f32::total_cmp` order, so ranking needs no float compares and a new entry's place is a
//! branch-free count.

use crate::side::GlobalKey as ItemKey;

/// The item of a list entry, in the index space of the scorer that pushes it: a scan position
/// for the norm-ordered scan (`super::scan`, which turns it back into a catalogue index), a
/// catalogue index ([`super::scan::CatalogIx`]) for the candidate-list scorers. Ranking never
/// reads it (ties break by key); it only comes back out with [`Tops::list`].
pub type ListItem = u32;

/// Every user's best `k` so far, with the k-th best score beside it (scorers read thresholds
/// far more often than lists change).
pub struct Tops {
    k: usize,
    len: Vec<u32>,
    /// `(order, key, item)`, `k` per user, best first; `order` is the score in total order.
    /// One array of entries: a push touches one place in memory (separate arrays per field
    /// measured slower).
    ent: Vec<(i32, ItemKey, ListItem)>,
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
    /// Empty lists of at most `k` for `b` users.
    pub fn new(b: usize, k: usize) -> Tops {
        Tops {
            k,
            len: vec![0; b],
            ent: vec![(0, 0, 0); b * k],
            thr: vec![f32::NEG_INFINITY; b],
        }
    }

    /// Scores below this cannot enter user `u`'s list (a tie may, by key).
    #[inline]
    pub fn threshold(&self, u: usize) -> f32 {
        self.thr[u]
    }

    /// Whether user `u`'s list holds `k` entries.
    #[inline]
    pub fn full(&self, u: usize) -> bool {
        self.len[u] as usize == self.k
    }

    /// Inserts item `p` (global `key`, score `s`) into user `u`'s list unless it does not rank
    /// or is already there: the same item pushed twice has the same score bits and key, so it
    /// meets itself.
    #[inline]
    pub fn push(&mut self, u: usize, s: f32, key: ItemKey, p: ListItem) {
        let k = self.k;
        let n = self.len[u] as usize;
        let row = &mut self.ent[u * k..(u + 1) * k];
        let o = order_of(s);
        // Entries ranked above (o, key), counted without a branch per entry; a tie on the
        // score (rare) is settled by keys.
        let mut at = row[..n].iter().filter(|e| e.0 > o).count();
        while at < n && row[at].0 == o {
            if row[at].1 == key {
                return;
            }
            if row[at].1 > key {
                break;
            }
            at += 1;
        }
        if at >= k {
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

    /// Pushes the scores of user `u`'s opening: `buf` holds the first panels of what it is
    /// scored against (`NR` lanes each, the scan's panel width, at most 32; -inf where an item
    /// is seen or a lane is padding), `item(panel * NR + lane)` gives the item's key and
    /// index. Pushing in scan order costs about k·(1 + ln(items / k)) pushes (43 for 256 items
    /// at k = 10), each a few unpredictable branches; here a floor comes first: of the NR
    /// lanes' best scores, the k-th best is at most the user's k-th best (k lanes each hold an
    /// item at least that good), so nothing below it can rank, and about 14 pushes remain.
    /// Needs `k <= NR` to bound anything (a larger k pushes every finite score). The panel
    /// width is a parameter so that this module needs nothing of the scan's (no
    /// scan ↔ topk import cycle).
    pub fn push_opening<const NR: usize>(
        &mut self,
        u: usize,
        buf: &[[f32; NR]],
        item: impl Fn(usize) -> (ItemKey, ListItem),
    ) {
        const { assert!(NR <= 32, "lane masks are u32") };
        let mut best = [f32::NEG_INFINITY; NR];
        for pan in buf {
            for (b, &v) in best.iter_mut().zip(pan) {
                *b = b.max(v);
            }
        }
        // The k-th largest lane best, without sorting: the largest value that at least k lane
        // bests reach.
        let k = self.k;
        let floor = best.iter().fold(f32::NEG_INFINITY, |f, &v| {
            let reach = best.iter().fold(0usize, |c, &w| c + (w >= v) as usize);
            if reach >= k {
                f.max(v)
            } else {
                f
            }
        });
        for (pan, sc) in buf.iter().enumerate() {
            let mut m = sc.iter().enumerate().fold(0u32, |m, (lane, &v)| {
                m | ((v >= floor && v > f32::NEG_INFINITY) as u32) << lane
            });
            while m != 0 {
                let lane = m.trailing_zeros() as usize;
                m &= m - 1;
                let v = sc[lane];
                if v >= self.thr[u] {
                    let (key, p) = item(pan * NR + lane);
                    self.push(u, v, key, p);
                }
            }
        }
    }

    /// User `u`'s list, best first, as `(score, key, item)`.
    pub fn list(&self, u: usize) -> impl Iterator<Item = (f32, ItemKey, ListItem)> + '_ {
        let k = self.k;
        self.ent[u * k..u * k + self.len[u] as usize]
            .iter()
            .map(|&(o, key, p)| (score_of(o), key, p))
    }

    /// Every user's list, best first, as `(score, key, item)`.
    pub fn into_lists(self) -> Vec<Vec<(f32, ItemKey, ListItem)>> {
        (0..self.len.len())
            .map(|u| self.list(u).collect())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SplitMix;
    use crate::recommend::better;

    /// Pushes in random order (with repeats, ties on scores and both signs) give each user the
    /// naive sort's first k, for k from 1 to beyond the panel width.
    #[test]
    fn pushes_match_a_sort() {
        let mut r = SplitMix::new(5);
        for k in [1usize, 3, 8, 10, 17, 70] {
            let b = 7;
            let mut t = Tops::new(b, k);
            let mut all: Vec<Vec<(f32, u64, u32)>> = vec![Vec::new(); b];
            for _ in 0..3000 {
                let u = (r.next_u64() % b as u64) as usize;
                let p = (r.next_u64() % 150) as u32;
                // Coarse scores tie often; an item's score and key are fixed, as in the scorers.
                let s = ((p as i64 * 7919 % 23) - 11) as f32 * 0.5;
                let key = (p as u64 * 2654435761) % 1000;
                t.push(u, s, key, p);
                if !all[u].iter().any(|e| e.2 == p) {
                    all[u].push((s, key, p));
                }
                assert!(t.len[u] as usize <= k);
            }
            for (u, want) in all.iter_mut().enumerate() {
                want.sort_by(|a, b| better((a.0, a.1), (b.0, b.1)));
                want.truncate(k);
                let got: Vec<_> = t.list(u).collect();
                assert_eq!(&got, want, "k {k}, user {u}");
                let thr = if want.len() == k {
                    want[k - 1].0
                } else {
                    f32::NEG_INFINITY
                };
                assert_eq!(t.threshold(u).to_bits(), thr.to_bits());
                assert_eq!(t.full(u), want.len() == k);
            }
        }
    }

    /// The integer order is `f32::total_cmp` and round-trips.
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
