//! recflow: implicit-feedback recommenders (weighted ALS + LSH) as distributed batch jobs on
//! timely dataflow.
//!
//! Data flows one way through the modules: [`job`] (what to do) → [`ingest`] (events into
//! sharded interactions) → [`als`] (factors) → [`store`] (a published, versioned model), with
//! [`comm`] carrying every worker-to-worker message (typed supersteps; [`cluster`] is the
//! context every stage is handed; each stage has its own message type) and [`run`] driving the
//! stages. Below every stage sit [`ids`] (raw ids, hashing, the consolidated pair), [`escape`],
//! [`progress`] (what a terminal shows) and [`side`] (one side of the sharded model and which
//! worker owns each shard); no module imports one that imports it back.
#![warn(missing_docs)]

pub mod als;
pub mod checkpoint;
pub mod cleanup;
pub mod cluster;
pub mod comm;
pub mod confidence;
pub mod escape;
pub mod eval;
pub mod eval_store;
pub mod export;
pub mod export_parquet;
pub mod generate;
pub mod ids;
pub mod ingest;
pub mod job;
pub mod launch;
pub mod lock;
pub mod plan;
pub mod progress;
pub mod query;
pub mod recommend;
pub mod report;
pub mod run;
pub mod side;
pub mod store;
pub mod svd;
pub mod tune;
pub mod warm;
