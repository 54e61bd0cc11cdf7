//! One gathered array per process instead of one per worker thread.
//!
//! Ingest leaves each worker a gathered layout of its own: the other side's vectors its rows
//! touch, owner by owner, which `cols` index. With T threads in a process those arrays hold
//! the same vectors up to T times (at 16 threads on 1 M users, 1.3 GB of user vectors for the
//! item half-step instead of 0.26 GB), and the vectors between threads travel as message
//! copies. Before the first half-step the threads of each process therefore agree on one
//! array per side, [`SharedRows`]: the union of their keys, owner by owner and ascending
//! within an owner (exactly ingest's layout when a process has one thread). Each worker's
//! `cols` are renumbered into it, in place, so every row reads the same vectors in the same
//! order and the arithmetic is unchanged. Every half-step then fills it once:
//! - a worker of the process copies its own vectors that any thread of the process needs
//!   straight into the array (no message);
//! - a remote worker sends its vectors once per process (not once per thread), to the thread
//!   [`LocalGroup::receiver_of`] names, which writes that block.
//!
//! The blocks are disjoint, so the threads write without locks, and all read once written.

use super::msg::AlsMsg;
use super::Ch;
use crate::comm::local::{fresh_token, process_nonce, LocalGroup, SharedRows, Slots};
use crate::comm::CommError;
use crate::side::{unkey, Assignment, Incoming, Outgoing, Side};
use std::sync::{Arc, OnceLock};
use timely::worker::Worker;

/// Finds the workers of this process (one superstep): each announces its process's nonce.
pub(crate) fn discover(worker: &mut Worker, ch: &mut Ch) -> Result<LocalGroup, CommError> {
    ch.broadcast(AlsMsg::Counts(vec![process_nonce(), fresh_token()]));
    let mut all = Vec::with_capacity(ch.peers);
    for (from, m) in ch.exchange(worker, "train: local group")? {
        if let AlsMsg::Counts(c) = m {
            all.push((from, c[0], c[1]));
        }
    }
    Ok(LocalGroup::from_announcements(ch.index, &all))
}

/// Gives both sides the process-shared layout (unless a warm start's fold-in already did)
/// and a fresh shared gathered array each, until [`release`]. Collective: every worker is in
/// the same state, so all take the same supersteps.
pub(crate) fn share_sides(
    worker: &mut Worker,
    ch: &mut Ch,
    group: &mut LocalGroup,
    users: &mut Side,
    items: &mut Side,
) -> Result<(), CommError> {
    if !users.shared_layout {
        relayout_sides(worker, ch, group, users, items)?;
    }
    let (n, d) = (group.len(), users.dim);
    for s in [&mut *users, &mut *items] {
        let rows = s.gathered_keys.len();
        let shared = group.share(|| SharedRows::new(rows, d, n));
        let mine = s
            .routing
            .incoming
            .iter()
            .map(|i| i.offset..i.offset + i.len)
            .collect();
        s.gathered = Some(shared.member(group.rank, mine));
    }
    Ok(())
}

/// Frees this thread's hold on the shared gathered arrays (the last thread frees them): they
/// are only needed while half-steps run.
pub(crate) fn release(users: &mut Side, items: &mut Side) {
    users.gathered = None;
    items.gathered = None;
}

/// Renumbers both sides into their processes' shared layouts and rebuilds the routing.
fn relayout_sides(
    worker: &mut Worker,
    ch: &mut Ch,
    group: &mut LocalGroup,
    users: &mut Side,
    items: &mut Side,
) -> Result<(), CommError> {
    let n = group.len();
    let slots = [0, 1].map(|_| group.share(|| Slots::<Arc<[u64]>>::new(n)));
    slots[0].put(group.rank, std::mem::take(&mut users.gathered_keys));
    slots[1].put(group.rank, std::mem::take(&mut items.gathered_keys));
    // Every thread has put its keys once this superstep is over.
    ch.exchange(worker, "train: share keys")?;
    let unions = [0, 1].map(|_| group.share(OnceLock::<Arc<[u64]>>::new));
    let (io, uo) = (items.owners.clone(), users.owners.clone());
    relayout(ch, group, users, &io, &slots[0], &unions[0], 1);
    relayout(ch, group, items, &uo, &slots[1], &unions[1], 0);
    users.routing.outgoing.clear();
    items.routing.outgoing.clear();
    // This worker's own blocks: it copies them itself.
    own_block(ch.index, users, items);
    own_block(ch.index, items, users);
    for (from, m) in ch.exchange(worker, "train: share requests")? {
        if let AlsMsg::Keys(side, keys) = m {
            let o = if side == 0 { &mut *users } else { &mut *items };
            let rows = keys.iter().map(|&k| o.row_of(k) as u32).collect();
            o.routing.outgoing.push(Outgoing { to: from, rows });
        }
    }
    for s in [&mut *users, &mut *items] {
        s.routing.outgoing.sort_by_key(|o| o.to);
        s.shared_layout = true;
    }
    Ok(())
}

/// The rows of `o` that worker `me` copies into `s`'s shared array itself (its own block).
fn own_block(me: usize, s: &Side, o: &mut Side) {
    if let Some((_, inc)) = s.routing.from(me) {
        let keys = &s.gathered_keys[inc.offset..inc.offset + inc.len];
        let rows = keys.iter().map(|&k| o.row_of(k) as u32).collect();
        o.routing.outgoing.push(Outgoing { to: me, rows });
    }
}

/// Renumbers `s`'s columns into its process's union of keys (of the other side, owned per
/// `owners`), sets its incoming blocks (those this worker receives or copies) and asks the
/// remote owners for theirs (`Keys(other, ..)`, answered in the caller's superstep).
fn relayout(
    ch: &mut Ch,
    group: &LocalGroup,
    s: &mut Side,
    owners: &Assignment,
    slots: &Slots<Arc<[u64]>>,
    union: &OnceLock<Arc<[u64]>>,
    other: u8,
) {
    let by = |k: u64| (owners.owner(unkey(k).0), k);
    let u = union
        .get_or_init(|| {
            slots.with_all(|all| {
                let mut keys: Vec<u64> = all.iter().flat_map(|k| k.iter().copied()).collect();
                keys.sort_unstable_by_key(|&k| by(k));
                keys.dedup();
                keys.into()
            })
        })
        .clone();
    let old = slots.take(group.rank).expect("this worker's keys");
    let pos: Vec<u32> = old
        .iter()
        .map(|&k| {
            u.binary_search_by_key(&by(k), |&x| by(x))
                .expect("every thread's key is in its process's union") as u32
        })
        .collect();
    drop(old);
    for c in &mut s.cols {
        *c = pos[*c as usize];
    }
    drop(pos);
    s.routing.incoming.clear();
    let mut lo = 0;
    while lo < u.len() {
        let from = owners.owner(unkey(u[lo]).0);
        let hi = lo + u[lo..].partition_point(|&k| owners.owner(unkey(k).0) == from);
        if group.receiver_of(from) == ch.index {
            s.routing.incoming.push(Incoming {
                from,
                offset: lo,
                len: hi - lo,
            });
            if from != ch.index {
                ch.send(from, AlsMsg::Keys(other, u[lo..hi].to_vec()));
            }
        }
        lo = hi;
    }
    s.gathered_keys = u;
}
