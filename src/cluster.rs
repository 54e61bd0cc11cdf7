//! Worker-to-worker communication on timely: bulk-synchronous supersteps.
//!
//! One small dataflow per worker carries [`Envelope`]s from an input handle, through an
//! exchange that routes each to its destination worker, into an inbox. A superstep is: send
//! envelopes, advance the epoch, step the worker until the probe says every envelope of the
//! epoch has arrived everywhere. Large state (factors, CSR, routing) lives outside the
//! dataflow, owned by the worker's driver; only what must move crosses workers, and it does
//! so through timely, so the same code runs with threads or processes.
//!
//! timely has no timeouts: a stopped peer would make everybody wait forever. Each superstep
//! therefore has a deadline after which it fails with a message naming the stage.

use crate::ids::RawId;
use crate::ingest::parse::Event;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Input, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;

/// What one superstep message carries. Each stage uses its own variants; bulky variants are
/// one contiguous buffer per destination worker, never one message per vector.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Body {
    /// Parsed events, routed to the user's owner.
    Events(Vec<Event>),
    /// Events of a separate held-out set (0: `eval.test`, 1: `eval.valid`), routed like
    /// [`Body::Events`].
    TestEvents(u8, Vec<Event>),
    /// Consolidated (user, item, weight, timestamp) pairs, routed to the item's owner.
    Pairs(Vec<(RawId, RawId, f32, i64)>),
    /// Held-out (user, item) pairs, routed to the item's owner to learn the item key.
    TestPairs(u8, Vec<(RawId, RawId)>),
    /// The parent version's top-k (user, item) lines as the raw ids' stable hashes, routed to
    /// the user's owner (warm start report: how many users' recommendations changed).
    ParentRecs(Vec<(u64, u64)>),
    /// Held-out pairs with the item key (`u64::MAX`: the item has no training data).
    TestKeyed(u8, Vec<(RawId, u64)>),
    /// (user, item key, weight) routed back to the user's owner once item keys are known.
    ItemKeyed(Vec<(RawId, u64, f32)>),
    /// (item key, user key, weight) so the item owner can build its CSR.
    Edges(Vec<(u64, u64, f32)>),
    /// Keys of `side` (0 users, 1 items) whose vectors the sender needs every half-step.
    Request(u8, Vec<u64>),
    /// Factor vectors in the order agreed by the routing tables, starting at this row of the
    /// sender's list for the destination.
    Vectors(u64, Vec<f32>),
    /// Per-virtual-shard partial Gram matrices (vshard, d×d, regulariser sum).
    GramParts(Vec<(u32, Vec<f32>, f64)>),
    /// The summed Gram matrix and regulariser sum, broadcast by worker 0.
    GramSum(Vec<f32>, f64),
    /// Per-virtual-shard scalars (e.g. objective partials), summed in vshard order.
    Scalars(Vec<(u32, f64)>),
    /// Reading statistics.
    Read(crate::ingest::read::ReadStats),
    /// Counters by position.
    Counts(Vec<u64>),
    /// A short text (version names, JSON records for the manifest).
    Text(String),
    /// Scored candidates: (user key, item key, score).
    Scored(Vec<(u64, u64, f32)>),
    /// A block of entities: keys, raw ids, interaction counts and row-major vectors.
    Block(Vec<u64>, Vec<RawId>, Vec<u32>, Vec<f32>),
    /// Virtual shards moving to their owner by cost (ingest's rebalancing step).
    Shards(Vec<crate::side::ShardRows>),
    /// Evaluation partial sums per virtual shard.
    Metrics(Vec<(u32, crate::eval::Metrics)>),
    /// Per user bucket (table, code): the exact fixed-point sum of its users' unit vectors.
    BucketSums(Vec<(u32, u64, Vec<i128>)>),
    /// An error on the sender: everybody stops with it.
    Abort(String),
}

/// A message between workers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// Destination worker.
    pub to: u32,
    /// Sender.
    pub from: u32,
    /// Sender-local sequence number (received messages are sorted by (from, seq)).
    pub seq: u64,
    /// Payload.
    pub body: Body,
}

/// A failed superstep.
#[derive(Debug)]
pub struct CommError(pub String);

impl std::fmt::Display for CommError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Bulk-synchronous messaging for one worker.
pub struct Comm {
    input: InputHandle<u64, CapacityContainerBuilder<Vec<Envelope>>>,
    probe: ProbeHandle<u64>,
    inbox: Rc<RefCell<Vec<(u64, Envelope)>>>,
    seq: u64,
    /// This worker's index.
    pub index: usize,
    /// Number of workers.
    pub peers: usize,
    /// Longest wait for one superstep.
    pub deadline: Duration,
    /// Bytes of vectors sent by this worker (for the traffic report).
    pub vector_bytes_sent: u64,
    /// Payload bytes of model data (vectors, Gram slices and sums) sent to other workers
    /// (the cost model; see [`Body::payload_bytes`]).
    pub payload_sent: u64,
    /// The same, received from other workers.
    pub payload_received: u64,
}

impl Body {
    /// Bytes of model data this message carries: 4 per f32 (and per shard id), 8 per f64;
    /// control messages (counters, texts, requests) count 0. The cost model's unit, so that
    /// `recflow plan` can count the same from the data alone.
    pub fn payload_bytes(&self) -> u64 {
        match self {
            Body::Vectors(_, v) => 4 * v.len() as u64,
            Body::GramParts(p) => p.iter().map(|(_, g, _)| 12 + 4 * g.len() as u64).sum(),
            Body::GramSum(g, _) => 8 + 4 * g.len() as u64,
            _ => 0,
        }
    }
}

impl Comm {
    /// Builds the messaging dataflow on `worker`.
    pub fn new(worker: &mut Worker, deadline: Duration) -> Comm {
        let mut input = InputHandle::new();
        let probe = ProbeHandle::new();
        let inbox: Rc<RefCell<Vec<(u64, Envelope)>>> = Rc::default();
        let sink = inbox.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            scope
                .input_from(&mut input)
                .unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
                    Exchange::new(|e: &Envelope| e.to as u64),
                    "Inbox",
                    move |_cap, _info| {
                        move |(input, _frontier), _output| {
                            input.for_each(|cap, data| {
                                let t = *cap.least().expect("a totally ordered stamp");
                                sink.borrow_mut().extend(data.drain(..).map(|e| (t, e)));
                            });
                        }
                    },
                )
                .probe_with(&probe);
        });
        Comm {
            input,
            probe,
            inbox,
            seq: 0,
            index: worker.index(),
            peers: worker.peers(),
            deadline,
            vector_bytes_sent: 0,
            payload_sent: 0,
            payload_received: 0,
        }
    }

    /// Queues `body` for worker `to` in the current superstep.
    pub fn send(&mut self, to: usize, body: Body) {
        if to != self.index {
            if let Body::Vectors(_, v) = &body {
                self.vector_bytes_sent += 4 * v.len() as u64;
            }
            self.payload_sent += body.payload_bytes();
        }
        self.seq += 1;
        self.input.send(Envelope {
            to: to as u32,
            from: self.index as u32,
            seq: self.seq,
            body,
        });
    }

    /// Sends a copy of `body` to every worker (including this one).
    pub fn broadcast(&mut self, body: Body) {
        for w in 0..self.peers {
            self.send(w, body.clone());
        }
    }

    /// Ends the superstep: waits until every message of it has arrived, then returns this
    /// worker's messages ordered by (sender, sequence), so results never depend on arrival
    /// order. An [`Body::Abort`] from any worker turns into an error here.
    pub fn exchange(
        &mut self,
        worker: &mut Worker,
        stage: &str,
    ) -> Result<Vec<(usize, Body)>, CommError> {
        let epoch = *self.input.time();
        self.input.advance_to(epoch + 1);
        let start = Instant::now();
        while self.probe.less_than(self.input.time()) {
            worker.step_or_park(Some(Duration::from_millis(50)));
            if start.elapsed() > self.deadline {
                return Err(CommError(format!(
                    "stage '{stage}' (superstep {epoch}) did not complete within {:?} on worker {}: a peer is stopped, hung or unreachable (if the stage is just slow, raise `recflow run --deadline-secs`, default 600)",
                    self.deadline, self.index
                )));
            }
        }
        // Faster peers may already have sent messages of later supersteps: keep those.
        let (mut got, later): (Vec<_>, Vec<_>) = std::mem::take(&mut *self.inbox.borrow_mut())
            .into_iter()
            .partition(|(t, _)| *t <= epoch);
        *self.inbox.borrow_mut() = later;
        got.sort_by_key(|(_, e)| (e.from, e.seq));
        let mut out = Vec::with_capacity(got.len());
        for (_, e) in got {
            if let Body::Abort(msg) = e.body {
                return Err(CommError(format!("worker {} failed: {msg}", e.from)));
            }
            if e.from as usize != self.index {
                self.payload_received += e.body.payload_bytes();
            }
            out.push((e.from as usize, e.body));
        }
        Ok(out)
    }

    /// Runs a superstep whose only purpose is to agree on success: if `local` is an error,
    /// every worker gets it (so no worker waits for a peer that gave up).
    pub fn agree<T>(
        &mut self,
        worker: &mut Worker,
        stage: &str,
        local: Result<T, String>,
    ) -> Result<T, CommError> {
        if let Err(e) = &local {
            self.broadcast(Body::Abort(e.clone()));
        }
        let got = self.exchange(worker, stage);
        match local {
            Err(e) => Err(CommError(e)),
            Ok(v) => got.map(|_| v),
        }
    }
}

/// The worker that owns virtual shard `v` while ingest consolidates (its staging layout, and
/// the owner of interaction snapshot files); trained sides are owned by cost, see
/// [`crate::side::Side::owners`].
pub fn owner(v: u32, peers: usize) -> usize {
    v as usize % peers
}
