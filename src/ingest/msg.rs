//! Ingest's own messages between workers, on its own [`crate::comm::Channel`].

use super::parse::Event;
use super::read::ReadStats;
use crate::comm::Message;
use crate::ids::RawId;
use crate::side::ShardRows;
use serde::{Deserialize, Serialize};

/// What ingest's supersteps carry; bulky variants are one buffer per destination worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum IngestMsg {
    /// Parsed events, routed to the user's (staging) owner.
    Events(Vec<Event>),
    /// Events of a separate held-out set (0: `eval.test`, 1: `eval.valid`), routed like
    /// [`IngestMsg::Events`].
    TestEvents(u8, Vec<Event>),
    /// Reading statistics, to worker 0.
    Read(ReadStats),
    /// Consolidated (user, item, weight, timestamp) pairs, routed to the item's owner.
    Pairs(Vec<(RawId, RawId, f32, i64)>),
    /// Held-out (user, item) pairs, routed to the item's owner to learn the item key.
    TestPairs(u8, Vec<(RawId, RawId)>),
    /// (user, item key, weight) routed back to the user's owner once item keys are known.
    ItemKeyed(Vec<(RawId, u64, f32)>),
    /// Held-out pairs with the item key (`u64::MAX`: the item has no training data).
    TestKeyed(u8, Vec<(RawId, u64)>),
    /// (item key, user key, weight) so the item owner can build its CSR.
    Edges(Vec<(u64, u64, f32)>),
    /// (side, shard, cost) triples of the sender's shards, flattened.
    Costs(Vec<u64>),
    /// Virtual shards moving to their owner by cost.
    Shards(Vec<ShardRows>),
    /// Keys of `side` (0 users, 1 items) whose vectors the sender needs every half-step.
    Request(u8, Vec<u64>),
    /// The sender's counters, to worker 0.
    Counts(super::Counts),
}

impl Message for IngestMsg {}
