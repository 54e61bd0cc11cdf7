//! The run driver's own messages between workers, on its own [`crate::comm::Channel`].

use crate::comm::{Json, Message};
use crate::store::FileRecord;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What the driver's supersteps carry (control only: no model data).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RunMsg {
    /// Worker 0's job-and-data fingerprint (checkpoints are only resumed under the same one).
    Fingerprint(String),
    /// New (users, items) folded in by a warm start on the sender, to worker 0.
    NewEntities([u64; 2]),
    /// The version being staged and its staging directory, from worker 0.
    Staging {
        /// `vNNNNNN`.
        version: String,
        /// Where every worker writes its files.
        dir: PathBuf,
    },
    /// The files the sender wrote into the staging directory, to worker 0.
    Written(Json<Vec<FileRecord>>),
    /// Worker 0 published the version.
    Published,
}

impl Message for RunMsg {}
