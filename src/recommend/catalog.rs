//! The item side gathered on every worker, and the per-user item lists read from it (seen
//! items, held-out items, popularity order).

use super::msg::{ItemBlock, RecMsg};
use crate::cluster::{Comm, CommError};
use crate::ids::RawId;
use crate::side::Side;
use std::collections::HashMap;
use timely::worker::Worker;

/// The whole item side, gathered on one worker, ordered by global key.
pub struct Catalog {
    /// Global keys, ascending.
    pub keys: Vec<u64>,
    /// Raw ids.
    pub ids: Vec<RawId>,
    /// Interaction counts.
    pub degrees: Vec<u32>,
    /// Row-major vectors.
    pub factors: Vec<f32>,
}

impl Catalog {
    /// Index of a global key.
    pub fn index(&self, key: u64) -> Option<usize> {
        self.keys.binary_search(&key).ok()
    }

    /// Items.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Every item by decreasing interaction count, then key (`popular` mode's ranking).
    pub fn by_popularity(&self) -> Vec<usize> {
        let mut p: Vec<usize> = (0..self.len()).collect();
        p.sort_unstable_by(|&a, &b| {
            self.degrees[b]
                .cmp(&self.degrees[a])
                .then(self.keys[a].cmp(&self.keys[b]))
        });
        p
    }
}

/// One item row on its way into the catalogue: key, id, degree, (block, row in block).
struct Gathered {
    key: u64,
    id: RawId,
    degree: u32,
    block: usize,
    row: usize,
}

/// All-gathers the item side (every worker ends with the same catalog).
pub fn gather_items(
    worker: &mut Worker,
    comm: &mut Comm,
    items: &Side,
) -> Result<Catalog, CommError> {
    let keys: Vec<u64> = (0..items.rows()).map(|r| items.key_of(r)).collect();
    let degrees = (0..items.rows()).map(|r| items.degree(r) as u32).collect();
    let ch = &mut comm.channel::<RecMsg>(worker);
    ch.broadcast(RecMsg::Items(ItemBlock {
        keys,
        ids: items.ids.clone(),
        degrees,
        factors: items.factors.clone(),
    }));
    let d = items.dim;
    let mut rows: Vec<Gathered> = Vec::new();
    let mut blocks = Vec::new();
    for (_, m) in ch.exchange(worker, "recommend: gather items")? {
        if let RecMsg::Items(b) = m {
            let block = blocks.len();
            let rows_in = b.keys.into_iter().zip(b.ids).zip(b.degrees);
            for (row, ((key, id), degree)) in rows_in.enumerate() {
                rows.push(Gathered {
                    key,
                    id,
                    degree,
                    block,
                    row,
                });
            }
            blocks.push(b.factors);
        }
    }
    rows.sort_unstable_by_key(|r| r.key);
    let mut cat = Catalog {
        keys: Vec::with_capacity(rows.len()),
        ids: Vec::with_capacity(rows.len()),
        degrees: Vec::with_capacity(rows.len()),
        factors: Vec::with_capacity(rows.len() * d),
    };
    for g in rows {
        cat.keys.push(g.key);
        cat.ids.push(g.id);
        cat.degrees.push(g.degree);
        cat.factors
            .extend_from_slice(&blocks[g.block][g.row * d..(g.row + 1) * d]);
    }
    Ok(cat)
}

/// Held-out items per user row as catalogue indices (`usize::MAX`: no training data).
pub(super) fn held_out_rows(
    users: &Side,
    cat: &Catalog,
    held: &[(RawId, u64)],
) -> HashMap<usize, Vec<usize>> {
    let row_of: HashMap<&RawId, usize> = users
        .ids
        .iter()
        .enumerate()
        .map(|(r, id)| (id, r))
        .collect();
    let mut tests: HashMap<usize, Vec<usize>> = HashMap::new();
    for (u, ik) in held {
        if let Some(&r) = row_of.get(u) {
            // An item with no training data is never recommended.
            tests
                .entry(r)
                .or_default()
                .push(cat.index(*ik).unwrap_or(usize::MAX));
        }
    }
    tests
}

/// The training items of this worker's users as sorted catalogue indices, looked up once per
/// gathered item.
pub(super) struct Seen<'a> {
    users: &'a Side,
    /// Catalogue index of each gathered item (u32::MAX: not in the catalogue).
    cat_of: Vec<u32>,
}

impl<'a> Seen<'a> {
    /// Indexes `users`' gathered items in `cat`.
    pub fn new(users: &'a Side, cat: &Catalog) -> Seen<'a> {
        let cat_of = users
            .gathered_keys
            .iter()
            .map(|&k| cat.index(k).map_or(u32::MAX, |i| i as u32))
            .collect();
        Seen { users, cat_of }
    }

    /// Sorted catalogue indices of row `r`'s training items.
    pub fn row(&self, r: usize) -> Vec<usize> {
        let u = self.users;
        let mut seen: Vec<usize> = u.cols[u.indptr[r]..u.indptr[r + 1]]
            .iter()
            .map(|&c| self.cat_of[c as usize])
            .filter(|&i| i != u32::MAX)
            .map(|i| i as usize)
            .collect();
        seen.sort_unstable();
        seen
    }
}
