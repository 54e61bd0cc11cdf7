//! What the calibration rounds ([`super::calibrate`]) share, so that a round costs the sample's
//! users rather than all users: the items' norm order (the head lists are its prefixes), every
//! table's user buckets (hashed once, together with the tables a later round of the rotation
//! adds; more tables add tables, other sizes keep them) and every
//! bucket's ranking of the catalogue, kept while it is deep enough for the round's head list and
//! bucket list length. A list taken from a kept ranking is the one a fresh ranking would give:
//! the first `bucket_items` items outside the head list, by the same exact order.

use super::catalog::Catalog;
use super::lsh::{Index, NormOrder};
use super::msg::RecMsg;
use super::scan::{fma_dot, top_k, ScanIndex};
use super::user_tables::{bucket_ids, hash_users, UserTable};
use crate::cluster::{Comm, CommError};
use crate::job::{Lsh, Transform};
use crate::side::Side;
use timely::worker::Worker;

/// Each bucket direction's `n` best items, best first, leaving out `head` (sorted catalogue
/// indices): from the fused scan `full` where it runs, else plain dot products.
pub fn rank_dirs(
    cat: &Catalog,
    full: Option<&ScanIndex>,
    dirs: &[f32],
    head: &[usize],
    n: usize,
) -> Vec<Vec<u32>> {
    let d = cat.factors.len() / cat.len().max(1);
    match full {
        Some(s) => {
            let heads = vec![head.to_vec(); dirs.len() / d.max(1)];
            s.top_k(dirs, &heads, n)
                .into_iter()
                .map(|l| l.into_iter().map(|(_, i)| i as u32).collect())
                .collect()
        }
        None => dirs
            .chunks_exact(d.max(1))
            .map(|q| {
                let sc: Vec<f32> = (0..cat.len())
                    .map(|i| fma_dot(q, &cat.factors[i * d..(i + 1) * d]))
                    .collect();
                let top = top_k(&sc, &cat.keys, head, n);
                top.into_iter().map(|i| i as u32).collect()
            })
            .collect(),
    }
}

/// [`rank_dirs`] with the directions shared out over the workers: each ranks every
/// `peers`-th one and all get every list (collective; a list does not depend on who ranks it).
fn rank_shared(
    worker: &mut Worker,
    comm: &mut Comm,
    (cat, full): (&Catalog, Option<&ScanIndex>),
    dirs: &[f32],
    head: &[usize],
    n: usize,
) -> Result<Vec<Vec<u32>>, CommError> {
    let d = cat.factors.len() / cat.len().max(1);
    let m = dirs.len() / d.max(1);
    let mine: Vec<usize> = (comm.index..m).step_by(comm.peers.max(1)).collect();
    let q: Vec<f32> = mine
        .iter()
        .flat_map(|&j| dirs[j * d..(j + 1) * d].iter().copied())
        .collect();
    let (mut at, mut items) = (Vec::with_capacity(mine.len()), Vec::new());
    for (&j, l) in mine.iter().zip(rank_dirs(cat, full, &q, head, n)) {
        at.push((j as u32, l.len() as u32));
        items.extend_from_slice(&l);
    }
    let ch = &mut comm.channel::<RecMsg>(worker);
    ch.broadcast(RecMsg::Lists { at, items });
    let mut out = vec![Vec::new(); m];
    for (_, msg) in ch.exchange(worker, "recommend: bucket rankings")? {
        if let RecMsg::Lists { at, items } = msg {
            let mut from = 0;
            for (j, len) in at {
                out[j as usize] = items[from..from + len as usize].to_vec();
                from += len as usize;
            }
        }
    }
    Ok(out)
}

/// Every bucket's items best first, leaving out the head list of `excluded` items; `depth`
/// items were asked for (a shorter list holds everything outside that head list).
#[derive(Default)]
struct Ranking {
    lists: Vec<Vec<u32>>,
    excluded: usize,
    depth: usize,
}

impl Ranking {
    /// Whether the first `n` items outside the head list of `h` items (`place`: each item's
    /// place in the norm order) are known for all `buckets` buckets.
    fn covers(&self, buckets: usize, place: &[u32], h: usize, n: usize) -> bool {
        let outside = |l: &Vec<u32>| {
            l.iter()
                .filter(|&&i| place[i as usize] as usize >= h)
                .count()
        };
        self.lists.len() == buckets
            && self.excluded <= h
            && self
                .lists
                .iter()
                .all(|l| l.len() < self.depth || outside(l) >= n)
    }

    /// The first `n` items of every bucket outside the head list of `h` items.
    fn lists(&self, place: &[u32], h: usize, n: usize) -> Vec<Vec<u32>> {
        let outside = |&i: &u32| place[i as usize] as usize >= h;
        let take = |l: &Vec<u32>| l.iter().copied().filter(outside).take(n).collect();
        self.lists.iter().map(take).collect()
    }
}

/// What a calibration round prepares for the rounds after it, should they come: how deep to
/// rank a table it (re)ranks, and how many tables to hash when it hashes users at all (one pass
/// over the users serves the tables of a later growth too).
#[derive(Clone, Copy, Debug)]
pub struct Ahead {
    /// Items to rank per bucket (at least the round's `bucket_items`).
    pub depth: usize,
    /// Tables to hash (at least the round's `tables`).
    pub tables: u32,
}

/// One hashed table and its buckets' ranking.
struct Table {
    users: UserTable,
    ranking: Ranking,
}

/// The calibration's reusable state (see the module doc).
pub struct BucketCache<'a> {
    cat: &'a Catalog,
    full: Option<&'a ScanIndex>,
    by_norm: NormOrder,
    /// The `(seed, planes)` the tables were hashed with.
    hashed_with: (u64, u32),
    tables: Vec<Table>,
}

impl<'a> BucketCache<'a> {
    /// Nothing hashed or ranked yet.
    pub fn new(cat: &'a Catalog, full: Option<&'a ScanIndex>) -> BucketCache<'a> {
        let d = cat.factors.len() / cat.len().max(1);
        BucketCache {
            cat,
            full,
            by_norm: NormOrder::new(&cat.factors, &cat.keys, d),
            hashed_with: (0, 0),
            tables: Vec::new(),
        }
    }

    /// The index for `cfg` and every row's user bucket per table, the same as a single
    /// [`Index::build`] and [`Index::user_buckets`] at those sizes give (collective: every worker hashes its users into the
    /// tables not hashed yet, in the same calls; `ahead.tables` of them when it hashes). A
    /// table whose kept ranking falls short is ranked again `ahead.depth` deep (at least
    /// `bucket_items`: the next round's list length, so that a growing list does not need
    /// another ranking).
    pub fn index(
        &mut self,
        worker: &mut Worker,
        comm: &mut Comm,
        (cfg, ahead): (&Lsh, Ahead),
        users: &Side,
    ) -> Result<(Index, Vec<u32>), CommError> {
        let d = users.dim;
        let mut ix = Index::build_ordered(cfg, &self.cat.factors, d, &self.by_norm);
        if cfg.transform != Transform::Users || cfg.tables == 0 {
            return Ok((ix, Vec::new()));
        }
        if self.hashed_with != (cfg.seed, cfg.planes) {
            self.tables.clear();
            self.hashed_with = (cfg.seed, cfg.planes);
        }
        let have = self.tables.len() as u32;
        if have < cfg.tables {
            let (with, to) = ((cfg.seed, cfg.planes), cfg.tables.max(ahead.tables));
            let new = hash_users(worker, comm, with, have..to, &users.factors, d)?;
            self.tables.extend(new.into_iter().map(|users| Table {
                users,
                ranking: Ranking::default(),
            }));
        }
        let (h, n) = (ix.head.len(), cfg.bucket_items as usize);
        let head: Vec<usize> = ix.head.iter().map(|&i| i as usize).collect();
        let depth = ahead.depth.max(n);
        let place = &self.by_norm.place;
        let tables = &mut self.tables[..cfg.tables as usize];
        for t in tables.iter_mut() {
            if !t.ranking.covers(t.users.codes.len(), place, h, n) {
                let on = (self.cat, self.full);
                let lists = rank_shared(worker, comm, on, &t.users.dirs, &head, depth)?;
                t.ranking = Ranking {
                    lists,
                    excluded: h,
                    depth,
                };
            }
        }
        let lists = tables
            .iter()
            .map(|t| t.ranking.lists(place, h, n))
            .collect();
        let refs: Vec<&UserTable> = tables.iter().map(|t| &t.users).collect();
        ix.install_user_lists(&refs, lists);
        Ok((ix, bucket_ids(&refs, users.rows())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first `n` items outside the head list of `h`, straight from the whole order.
    fn fresh(order: &[u32], place: &[u32], h: usize, n: usize) -> Vec<u32> {
        let outside = |i: &&u32| place[**i as usize] as usize >= h;
        order.iter().filter(outside).take(n).copied().collect()
    }

    #[test]
    fn kept_rankings_give_fresh_lists_and_say_when_they_fall_short() {
        // 12 items; norm places: item i is at place (i * 5) % 12 (a permutation).
        let place: Vec<u32> = (0..12u32).map(|i| (i * 5) % 12).collect();
        // One bucket's exact order of the whole catalogue.
        let order: Vec<u32> = vec![3, 0, 7, 11, 1, 5, 9, 2, 4, 6, 8, 10];
        // Ranked 5 deep leaving out the head of 2 (items at places 0, 1: items 0 and 5).
        let kept = Ranking {
            lists: vec![fresh(&order, &place, 2, 5)],
            excluded: 2,
            depth: 5,
        };
        assert_eq!(kept.lists[0], vec![3, 7, 11, 1, 9]);
        for (h, n) in [(2, 3), (2, 5), (4, 2), (4, 4), (6, 1)] {
            let fits = kept.covers(1, &place, h, n);
            let want = fresh(&order, &place, h, n);
            // Whenever the kept ranking says it covers (h, n), its list is the fresh one.
            if fits {
                assert_eq!(kept.lists(&place, h, n)[0], want, "h {h} n {n}");
            }
            // Places of 3, 7, 11, 1, 9: 3, 11, 7, 5, 9; a head of h keeps those >= h.
            let outside = [3u32, 11, 7, 5, 9]
                .iter()
                .filter(|&&p| p as usize >= h)
                .count();
            assert_eq!(fits, outside >= n, "h {h} n {n}");
        }
        // A shorter head than the one left out, or another bucket count, is never covered.
        assert!(!kept.covers(1, &place, 1, 1));
        assert!(!kept.covers(2, &place, 2, 1));
        // A ranking shorter than asked holds everything outside its head: it covers any n.
        let all = Ranking {
            lists: vec![fresh(&order, &place, 2, 99)],
            excluded: 2,
            depth: 99,
        };
        assert!(all.covers(1, &place, 4, 50));
        assert_eq!(all.lists(&place, 4, 50)[0], fresh(&order, &place, 4, 50));
    }
}
