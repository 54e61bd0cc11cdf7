//! The stage sections after `[input]`: confidence, ALS, shards, LSH, recommend, similar,
//! eval, output, model and SVD.

use serde::{Deserialize, Serialize};

/// Confidence scheme.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// c = 1 + alpha * w
    Linear,
    /// c = 1 + alpha * ln(1 + w / epsilon)
    Log,
}

/// `[confidence]`
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Confidence {
    /// Scheme.
    pub scheme: Scheme,
    /// alpha: a number ≥ 0, or `"auto"` (default): chosen from the data so that the mean
    /// confidence of an observed pair is `1/√density` (see [`auto_alpha`]).
    pub alpha: Alpha,
    /// epsilon for the log scheme (> 0).
    pub epsilon: f64,
    /// Keep at most this many items per user (most recent first when timestamps exist). 0 = no cap.
    pub max_per_user: u64,
    /// Keep at most this many users per item. 0 = no cap.
    pub max_per_item: u64,
}

impl Default for Confidence {
    fn default() -> Self {
        Confidence {
            scheme: Scheme::Log,
            alpha: Alpha::Auto,
            epsilon: 1.0,
            max_per_user: 0,
            max_per_item: 0,
        }
    }
}

/// `confidence.alpha`: a number, or chosen from the data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Alpha {
    /// [`auto_alpha`] of the ingested pairs.
    Auto,
    /// This value.
    Value(f64),
}

impl Serialize for Alpha {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Alpha::Auto => s.serialize_str("auto"),
            Alpha::Value(v) => s.serialize_f64(*v),
        }
    }
}

impl<'de> Deserialize<'de> for Alpha {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Int(i64),
            Text(String),
        }
        match Raw::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected a number or \"auto\""))?
        {
            Raw::Num(v) => Ok(Alpha::Value(v)),
            Raw::Int(v) => Ok(Alpha::Value(v as f64)),
            Raw::Text(t) if t == "auto" => Ok(Alpha::Auto),
            Raw::Text(t) => Err(serde::de::Error::custom(format!(
                "{:?}: expected a number or \"auto\"",
                crate::escape::escape(&t)
            ))),
        }
    }
}

/// The mean confidence of an observed pair that `alpha = "auto"` aims at, from the density
/// of the interaction matrix: `1/√density`, within [2, 1000]. Measured on five data sets
/// (docs/BENCHMARKS.md, "Confidence default"): sparse favourites want confidences of 25–60,
/// a dense ratings matrix (MovieLens 100K, 5%) about 4; this rule lands within 6% of the
/// best NDCG@10 of a grid on every one of them.
pub fn target_confidence(density: f64) -> f64 {
    (1.0 / density.max(1e-300).sqrt()).clamp(2.0, 1000.0)
}

/// `alpha = "auto"`: the α that makes the mean observed confidence `1 + α·mean g(w)` equal
/// [`target_confidence`], where `mean_term` is the mean of the scheme's `g(w)` over pairs.
pub fn auto_alpha(density: f64, mean_term: f64) -> f64 {
    (target_confidence(density) - 1.0) / mean_term.max(1e-12)
}

impl Confidence {
    /// The scheme's weight term `g(w)` of a pair with summed weight `w` (> 0):
    /// the confidence is `1 + α·g(w)`.
    pub fn term(&self, w: f64) -> f64 {
        match self.scheme {
            Scheme::Linear => w,
            Scheme::Log => (1.0 + w / self.epsilon).ln(),
        }
    }

    /// The confidence of a pair with summed weight `w` (> 0) under the resolved `alpha`.
    pub fn of(&self, alpha: f64, w: f64) -> f32 {
        (1.0 + alpha * self.term(w)) as f32
    }
}

/// Per-entity linear solver.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Solver {
    /// Exact Cholesky solve (never increases the objective).
    Cholesky,
    /// Warm-started conjugate gradient, `cg_steps` steps.
    Cg,
    /// iALS++ subspace steps (Rendle et al. 2021): one sweep of exact Newton steps on blocks of
    /// `block_size` coordinates per entity and half-step; `block_size = factors` is Cholesky.
    /// Never increases the objective; at large `factors` far cheaper than either.
    Block,
}

/// How lambda scales per entity.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RegScaling {
    /// Constant lambda (as `implicit`).
    None,
    /// lambda times the entity's interaction count (Spark's ALS-WR).
    Count,
    /// lambda times (the entity's weight in the objective)^exponent: `N + Σ_j (c_j − 1)`, N the
    /// number of entities on the other side (each unobserved pair weighs 1, an observed one
    /// c_j). Rendle et al.'s `(n_u + α₀·N)^ν`, divided by α₀ (README: the mapping).
    Frequency,
}

/// `[als]`
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Als {
    /// Latent dimension d.
    pub factors: usize,
    /// lambda.
    pub regularization: f64,
    /// Scaling of lambda.
    pub regularization_scaling: RegScaling,
    /// ν of `regularization_scaling = "frequency"`.
    pub regularization_exponent: f64,
    /// Initial vectors: 0 = uniform in [0, 0.01) (as `implicit`); > 0 = normal with standard
    /// deviation `init_std / √factors` (Rendle et al. use 0.1). Seeded per raw id either way.
    pub init_std: f64,
    /// Full iterations (a user half-step then an item half-step).
    pub iterations: usize,
    /// Solver.
    pub solver: Solver,
    /// Conjugate-gradient steps per entity and half-step (solver = "cg").
    pub cg_steps: usize,
    /// Coordinates per block (solver = "block"; capped at `factors`, where it is Cholesky).
    pub block_size: usize,
    /// Relaxation ω of each block step when blocks are smaller than `factors`: the step is ω
    /// times the exact Newton step on the block (0 < ω < 2 still never raises the objective).
    pub block_relaxation: f64,
    /// Seed for the initial vectors.
    pub seed: u64,
    /// Compute and log the objective every this many iterations (0 = never).
    pub loss_every: usize,
    /// Write a checkpoint into the store every this many iterations (0 = never).
    pub checkpoint_every: usize,
    /// Most KiB of vectors one worker sends one peer per exchange round. Bounds the memory
    /// the vector exchange adds; does not change the model.
    pub exchange_kib: usize,
}

impl Default for Als {
    fn default() -> Self {
        Als {
            factors: 64,
            regularization: 0.01,
            regularization_scaling: RegScaling::None,
            regularization_exponent: 1.0,
            init_std: 0.0,
            iterations: 15,
            solver: Solver::Cg,
            cg_steps: 3,
            block_size: 32,
            block_relaxation: 1.0,
            seed: 42,
            loss_every: 1,
            checkpoint_every: 0,
            exchange_kib: 16384,
        }
    }
}

/// `[shards]`
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Shards {
    /// Number of virtual shards V.
    #[serde(rename = "virtual")]
    pub virtual_shards: u32,
}

impl Default for Shards {
    fn default() -> Self {
        Shards {
            virtual_shards: 256,
        }
    }
}

/// Hashing of vectors before bucketing.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transform {
    /// Hash raw vectors (Etsy's method).
    None,
    /// Maximum-inner-product transform per norm band.
    Mips,
    /// Hash users, not items: each user bucket lists the `bucket_items` items (outside the head
    /// list) best for its users' mean direction (measured best: docs/BENCHMARKS.md).
    Users,
}

/// `[lsh]`
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Lsh {
    /// Bits per table.
    pub planes: u32,
    /// Tables (0 = no hash tables: the head list alone).
    pub tables: u32,
    /// Buckets holding more items are dropped (0 = no limit).
    pub max_bucket: u64,
    /// Transform.
    pub transform: Transform,
    /// Norm bands for norm-ranging LSH (1 = one global band).
    pub norm_bands: u32,
    /// The N highest-norm items are candidates for every user (0 = off).
    pub head: u64,
    /// Multi-probe: extra buckets per table from flipping the lowest-margin bits.
    pub probes: u32,
    /// Seed for the hyperplanes.
    pub seed: u64,
    /// Items listed per user bucket (`transform = "users"`), beyond the head list's.
    pub bucket_items: u32,
    /// Recall@k against exact top-k (on the hash-chosen user sample) that the run grows `head`,
    /// `bucket_items` and `tables` towards; 0 = off (sizes as given). A job that sets `head`,
    /// `tables` or `bucket_items` but not this key gets 0 at load time ([`Lsh::SIZE_KEYS`]), so
    /// explicit settings such as Etsy's stay reproducible.
    pub target_recall: f64,
    /// Cost cap of that growth: items scored per user, as a share of the catalogue.
    pub max_share: f64,
}

impl Lsh {
    /// Keys that fix the candidate sizes: given without `target_recall`, growth is off.
    pub const SIZE_KEYS: [&'static str; 3] = ["head", "tables", "bucket_items"];

    /// Turns growth off in `table` (a job's TOML tree, overrides applied) when it sets a size
    /// key of `[lsh]` but not `lsh.target_recall`.
    pub(super) fn explicit_sizes_rule(table: &mut toml::Table) {
        if let Some(toml::Value::Table(l)) = table.get_mut("lsh") {
            let sized = Lsh::SIZE_KEYS.iter().any(|k| l.contains_key(*k));
            if sized && !l.contains_key("target_recall") {
                l.insert("target_recall".into(), toml::Value::Float(0.0));
            }
        }
    }
}

impl Default for Lsh {
    fn default() -> Self {
        Lsh {
            planes: 10,
            tables: 1,
            max_bucket: 0,
            transform: Transform::Users,
            norm_bands: 8,
            head: 256,
            probes: 2,
            seed: 7,
            bucket_items: 32,
            target_recall: 0.95,
            max_share: 0.10,
        }
    }
}

/// How recommendations are found.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// LSH candidates (plus the head list).
    Lsh,
    /// Score every item (blocked GEMM).
    Exact,
    /// Most popular items (baseline).
    Popular,
}

/// `[recommend]`
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Recommend {
    /// Items per user (0 = no recommendation stage).
    pub k: usize,
    /// Mode.
    pub mode: Mode,
    /// Never recommend an item the user already has.
    pub exclude_seen: bool,
}

impl Default for Recommend {
    fn default() -> Self {
        Recommend {
            k: 10,
            mode: Mode::Exact,
            exclude_seen: true,
        }
    }
}

/// `[similar]`
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Similar {
    /// Similar items per item (0 = off).
    pub k: usize,
    /// How they are found in lsh mode under `lsh.target_recall`.
    pub method: SimilarMethod,
}

/// How similar items are found in lsh mode under `lsh.target_recall` (without a target, from
/// the LSH buckets; in exact mode, exact).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SimilarMethod {
    /// Exact below [`SimilarMethod::GRAPH_FROM`] items, the neighbour graph from there.
    #[default]
    Auto,
    /// The neighbour graph refined to the target.
    Graph,
    /// Exact cosine over the whole catalogue.
    Exact,
}

impl SimilarMethod {
    /// Catalogue size from which `auto` takes the graph: below it the blocked exact scan cost
    /// less than the graph on every catalogue measured (300 k items: 105 s against 380 s on 2
    /// cores, docs/BENCHMARKS.md); exact grows with the square of the catalogue, the graph's
    /// cost per item does not.
    pub const GRAPH_FROM: usize = 1_000_000;
}

/// An optional path where an empty string means none: `--set KEY=` can switch off a file.
fn empty_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

/// `[eval]`
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Eval {
    /// Hold out this fraction of each user's interactions (0 = none).
    pub holdout: f64,
    /// Held-out interactions file (same format as the input); exclusive with holdout. The
    /// final report's metrics; `recflow tune` never reads it before the model is chosen.
    /// `""` is none (so `--set eval.test=` drops the file a job names).
    #[serde(deserialize_with = "empty_is_none")]
    pub test: Option<String>,
    /// Held-out interactions for tuning and early stopping (a file, directory or glob, same
    /// format as the input): evaluated beside `test` as `valid_metrics`, never the final report.
    /// `""` is none.
    #[serde(deserialize_with = "empty_is_none")]
    pub valid: Option<String>,
    /// Cut-off(s) for the metrics: one number or a list (`[10, 20]`); the first is the
    /// report's headline, recommendations are computed to the largest.
    pub k: Cutoffs,
    /// Seed of the holdout split and the LSH-recall sample.
    pub seed: u64,
    /// Users sampled to measure LSH recall against exact top-k (0 = off).
    pub recall_sample: usize,
}

/// `eval.k`: one cut-off or several.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Cutoffs {
    /// One cut-off (`k = 10`).
    One(usize),
    /// Several (`k = [10, 20]`), the first the headline.
    List(Vec<usize>),
}

impl Cutoffs {
    /// The cut-offs, the headline first.
    pub fn list(&self) -> Vec<usize> {
        match self {
            Cutoffs::One(k) => vec![*k],
            Cutoffs::List(v) => v.clone(),
        }
    }

    /// The headline cut-off.
    pub fn first(&self) -> usize {
        self.list().first().copied().unwrap_or(0)
    }

    /// The largest cut-off (how deep lists must go for the metrics).
    pub fn max(&self) -> usize {
        self.list().into_iter().max().unwrap_or(0)
    }
}

impl Default for Eval {
    fn default() -> Self {
        Eval {
            holdout: 0.0,
            test: None,
            valid: None,
            k: Cutoffs::One(10),
            seed: 3,
            recall_sample: 2000,
        }
    }
}

/// `[output]`
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Output {
    /// Model store directory (relative paths resolve against the working directory).
    pub store: String,
    /// Published versions to keep (older ones are removed after a successful publish);
    /// 0 keeps every version.
    pub keep_versions: usize,
    /// How output parts (recs, similar, buckets) are written: `part-NNNNN.tsv.zst` or plain
    /// `part-NNNNN.tsv`. Readers take either, so old stores still load.
    pub compression: Compression,
}

/// `output.compression`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Zstandard frames (`.tsv.zst`): about 2.5× smaller, read by zstdcat, pandas, polars,
    /// DuckDB and Spark.
    #[default]
    Zstd,
    /// Plain TSV (`.tsv`), the layout before compression existed.
    None,
}

impl Default for Output {
    fn default() -> Self {
        Output {
            store: "models/default".into(),
            keep_versions: 7,
            compression: Compression::Zstd,
        }
    }
}

/// `[model]`
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Model {
    /// Start from the store's `CURRENT` version: its interaction snapshot plus the new events,
    /// its factors for known users and items, new ones folded in. Without a published version
    /// the run trains from scratch.
    pub warm_start: bool,
    /// On a warm start, add the parent's interaction snapshot to the input (the input holds
    /// only the events since the parent). `false`: the input is a full dump of all events and
    /// only the parent's factors are reused.
    pub snapshot: bool,
    /// Which factorisation trains the model.
    pub method: Method,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            warm_start: false,
            snapshot: true,
            method: Method::Als,
        }
    }
}

/// `model.method`: the factorisation.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Weighted ALS (`[als]`).
    Als,
    /// Randomized truncated SVD (`[svd]`): no iterations to converge, fold-in by projection.
    Svd,
}

/// `svd.input`: what the SVD factorises.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SvdInput {
    /// 1 for every observed pair (the reference's favorites matrix).
    Binary,
    /// The pair's confidence `c = 1 + α·g(w)` as `[confidence]` defines it.
    Confidence,
}

/// `[svd]`: randomized truncated SVD (Halko, Martinsson & Tropp 2011).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Svd {
    /// Rank k of the published factors (the model's latent dimension).
    pub rank: usize,
    /// Oversampling p: the sketch has `rank + oversample` columns.
    pub oversample: usize,
    /// Power iterations q: each sharpens the spectrum by another factor (σ_j/σ_k)^2.
    pub power_iterations: usize,
    /// Seed of the Gaussian test matrix (drawn per raw item id).
    pub seed: u64,
    /// What is factorised.
    pub input: SvdInput,
}

impl Default for Svd {
    fn default() -> Self {
        Svd {
            rank: Als::default().factors,
            oversample: 10,
            power_iterations: 2,
            seed: 42,
            input: SvdInput::Binary,
        }
    }
}
