//! Summed weights → confidences, once the whole data set is ingested.
//!
//! Ingest leaves each pair's summed weight `w` in the sides' `conf` arrays; [`apply`] maps
//! them in place to `c = 1 + α·g(w)` (`g` from `confidence.scheme`). With `alpha = "auto"`
//! the α comes from the data ([`crate::job::auto_alpha`]): the density of the matrix and the
//! mean of `g(w)` over all pairs, summed per virtual shard and in virtual-shard order on
//! worker 0, so the value — and the model — is the same for any worker layout.

use crate::cluster::{Comm, CommError};
use crate::comm::{Channel, Message};
use crate::job::{auto_alpha, target_confidence, Alpha, Confidence};
use crate::side::Side;
use serde::{Deserialize, Serialize};
use timely::worker::Worker;

/// The confidence rule a run used (recorded in the manifest and the report).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    /// The α applied.
    pub alpha: f64,
    /// Whether it was chosen from the data.
    pub auto: bool,
    /// pairs / (users · items).
    pub density: f64,
    /// Mean of `g(w)` over the training pairs (computed when `auto`).
    pub mean_term: f64,
    /// The mean observed confidence aimed at (when `auto`).
    pub target: f64,
}

/// Resolves α (collectively, when automatic) and turns the weights of this worker's `users`
/// and `items` into confidences. `totals` are the ingest's (pairs, users, items), complete on
/// worker 0.
pub fn apply(
    worker: &mut Worker,
    comm: &mut Comm,
    conf: &Confidence,
    (pairs, n_users, n_items): (u64, u64, u64),
    users: &mut Side,
    items: &mut Side,
) -> Result<Resolved, CommError> {
    let density = pairs as f64 / (n_users as f64 * n_items as f64).max(1.0);
    let resolved = match conf.alpha {
        Alpha::Value(alpha) => Resolved {
            alpha,
            density,
            ..Resolved::default()
        },
        Alpha::Auto => resolve_auto(worker, comm, conf, (density, pairs), users)?,
    };
    for c in users.conf.iter_mut().chain(items.conf.iter_mut()) {
        *c = conf.of(resolved.alpha, *c as f64);
    }
    Ok(resolved)
}

/// The automatic alpha's messages.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum AutoMsg {
    /// Per user virtual shard: the sum of `g(w)` over its pairs, to worker 0.
    Sums(Vec<(u32, f64)>),
    /// Worker 0's choice: alpha, density, mean term, target confidence.
    Chosen([f64; 4]),
}

impl Message for AutoMsg {}

/// Sums `g(w)` per virtual shard of the users, adds the shards up in order on worker 0 and
/// broadcasts what it chose (worker 0's density is the one that counts: its totals are
/// complete).
fn resolve_auto(
    worker: &mut Worker,
    comm: &mut Comm,
    conf: &Confidence,
    (density, pairs): (f64, u64),
    users: &Side,
) -> Result<Resolved, CommError> {
    let parts: Vec<(u32, f64)> = users
        .vshards
        .iter()
        .enumerate()
        .map(|(j, &vs)| {
            let (a, b) = (
                users.indptr[users.starts[j]],
                users.indptr[users.starts[j + 1]],
            );
            (
                vs,
                users.conf[a..b].iter().map(|&w| conf.term(w as f64)).sum(),
            )
        })
        .collect();
    // The automatic alpha's own channel: per-shard sums to worker 0, its choice back.
    let ch = &mut Channel::<AutoMsg>::new(worker, comm.deadline);
    let mut all = Vec::new();
    for (_, m) in ch.gather_to_leader(worker, "confidence: sum weights", AutoMsg::Sums(parts))? {
        if let AutoMsg::Sums(mut p) = m {
            all.append(&mut p);
        }
    }
    let chosen = (ch.index == 0).then(|| {
        let sum = crate::comm::reduce_in_vshard_order(all, 0.0, |a, x| *a += *x);
        let mean_term = sum / (pairs as f64).max(1.0);
        let alpha = auto_alpha(density, mean_term);
        AutoMsg::Chosen([alpha, density, mean_term, target_confidence(density)])
    });
    let got = match ch.broadcast_from(worker, "confidence: alpha", 0, chosen)? {
        AutoMsg::Chosen(c) => c,
        AutoMsg::Sums(_) => {
            return Err(CommError(
                "stage 'confidence: alpha': sums where the choice was due (a bug)".into(),
            ))
        }
    };
    Ok(Resolved {
        alpha: got[0],
        auto: true,
        density: got[1],
        mean_term: got[2],
        target: got[3],
    })
}
