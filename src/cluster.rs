//! What every stage is handed about the cluster: which worker this is, how many there are,
//! how long a superstep may wait, and one collective that needs no message type of its own
//! ([`Comm::agree`]).
//!
//! No stage's message travels through here: each stage builds its own [`Channel`] of its own
//! message type ([`Comm::channel`]; e.g. `checkpoint::CheckpointMsg`, `warm::WarmMsg`,
//! `svd::msg::SvdMsg`, `recommend::msg::RecMsg`, `als::msg::AlsMsg`). This module imports no
//! stage, so any stage may import it. [`owner`] stays here: it is the cluster's default layout
//! of virtual shards over workers (a function of the two counts, no message), which ingest's
//! consolidation and snapshot files follow.

pub use crate::comm::CommError;
use crate::comm::{Channel, Message};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use timely::worker::Worker;

/// The message type of [`Comm::agree`]'s supersteps: there is none (an agreement carries only
/// the aborts [`Channel::abort`] sends, which are the layer's own), so no value exists.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum NoData {}

impl Message for NoData {}

/// One worker's place in the cluster, handed to every stage (parameters named `comm`).
pub struct Comm {
    /// This worker's index.
    pub index: usize,
    /// Number of workers.
    pub peers: usize,
    /// Longest wait for one superstep (`recflow run --deadline-secs`).
    pub deadline: Duration,
    /// The supersteps of [`Comm::agree`].
    agreement: Channel<NoData>,
}

impl Comm {
    /// The context of `worker` (every worker builds it at the same point: it builds one
    /// dataflow, for [`Comm::agree`]).
    pub fn new(worker: &mut Worker, deadline: Duration) -> Comm {
        Comm {
            index: worker.index(),
            peers: worker.peers(),
            deadline,
            agreement: Channel::new(worker, deadline),
        }
    }

    /// A new channel of a stage's message type `M`, with this context's deadline. Collective:
    /// every worker must build it at the same point (timely matches dataflows by the order
    /// they are built), so build it before any branch that depends on the worker.
    pub fn channel<M: Message>(&self, worker: &mut Worker) -> Channel<M> {
        Channel::new(worker, self.deadline)
    }

    /// One superstep to agree on success: if `local` is an error on any worker, every worker
    /// fails with it (see [`Channel::agree`]).
    pub fn agree<T>(
        &mut self,
        worker: &mut Worker,
        stage: &str,
        local: Result<T, String>,
    ) -> Result<T, CommError> {
        self.agreement.agree(worker, stage, local)
    }
}

/// The worker that owns virtual shard `v` while ingest consolidates (its staging layout, and
/// the owner of interaction snapshot files); trained sides are owned by cost, see
/// [`crate::side::Side::owners`].
pub fn owner(v: u32, peers: usize) -> usize {
    v as usize % peers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, Serialize, Deserialize)]
    struct Ping(u64);
    impl Message for Ping {}

    /// A stage's channel built through the context carries its own type beside the context's
    /// agreements, and an agreement that fails on one worker fails on all.
    #[test]
    fn stage_channels_and_agreements_share_one_context() {
        let out = timely::execute(timely::Config::process(3), |worker| {
            let mut comm = Comm::new(worker, Duration::from_secs(30));
            let ch = &mut comm.channel::<Ping>(worker);
            ch.broadcast(Ping(comm.index as u64 + 1));
            let sum: u64 = ch
                .exchange(worker, "ping")
                .unwrap()
                .iter()
                .map(|m| m.1 .0)
                .sum();
            let ok = comm.agree(worker, "fine", Ok::<_, String>(comm.index));
            let bad = comm.agree(
                worker,
                "one fails",
                if comm.index == 2 {
                    Err("disk full".into())
                } else {
                    Ok(())
                },
            );
            (comm.peers, sum, ok.unwrap(), bad.map_err(|e| e.0))
        })
        .unwrap()
        .join();
        for (w, r) in out.into_iter().enumerate() {
            let (peers, sum, ok, bad) = r.unwrap();
            assert_eq!((peers, sum, ok), (3, 6, w));
            let why = bad.expect_err("every worker fails");
            assert!(why.contains("disk full"), "{why}");
            if w != 2 {
                assert!(why.contains("worker 2 failed"), "{why}");
            }
        }
    }
}
