//! Ingest's last step: the routing tables. Each side asks the owners of the other side for
//! exactly the vectors its rows touch, once per distinct key; the answers become the
//! [`crate::side::Routing`] used every half-step.

use super::msg::IngestMsg;
use crate::comm::Channel;
use crate::ids::KeyMap;
use crate::side::{unkey, Assignment, Incoming, Side};

/// Turns the CSR's global keys into gathered indices and asks each owner for its vectors.
pub(super) fn request(
    comm: &mut Channel<IngestMsg>,
    side: &mut Side,
    other: &[u64],
    other_side: u8,
    owners: &Assignment,
) {
    // Distinct keys through a hash map (edges outnumber distinct keys several times over).
    let mut pos: KeyMap<u32> = KeyMap::default();
    for &k in other {
        pos.entry(k).or_insert(0);
    }
    let mut keys: Vec<u64> = pos.keys().copied().collect();
    keys.sort_unstable();
    // Group by owner; the gathered array is owner by owner, keys ascending within an owner.
    let mut by_owner: Vec<Vec<u64>> = vec![Vec::new(); comm.peers];
    for &k in &keys {
        by_owner[owners.owner(unkey(k).0)].push(k);
    }
    drop(keys);
    let mut gathered = Vec::with_capacity(pos.len());
    for (w, ks) in by_owner.into_iter().enumerate() {
        if !ks.is_empty() {
            side.routing.incoming.push(Incoming {
                from: w,
                offset: gathered.len(),
                len: ks.len(),
            });
            gathered.extend_from_slice(&ks);
            comm.send(w, IngestMsg::Request(other_side, ks));
        }
    }
    for (i, k) in gathered.iter().enumerate() {
        *pos.get_mut(k)
            .expect("every gathered key came from the map") = i as u32;
    }
    side.cols = other.iter().map(|k| pos[k]).collect();
    side.gathered_keys = gathered.into();
}
