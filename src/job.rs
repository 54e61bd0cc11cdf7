//! Job files: what to read, how to train, where to publish.
//!
//! A job is a TOML file with one table per stage. Every key has a default, unknown keys are
//! rejected (`deny_unknown_fields`), and [`Job::validate`] names the bad key with its allowed
//! range. `--set section.key=value` overrides are applied to the TOML tree before it is typed,
//! so they are checked exactly like the file.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A whole job.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Job {
    /// Where the events come from and how to parse them.
    pub input: Input,
    /// How event weights become confidences, and per-entity caps.
    pub confidence: Confidence,
    /// The factorisation.
    pub als: Als,
    /// Virtual sharding (fixed for a model's lifetime).
    pub shards: Shards,
    /// Candidate generation by locality-sensitive hashing.
    pub lsh: Lsh,
    /// Top-K recommendations per user.
    pub recommend: Recommend,
    /// Similar items per item.
    pub similar: Similar,
    /// Offline evaluation.
    pub eval: Eval,
    /// The model store.
    pub output: Output,
    /// Warm start from the store's current version, and which model to train.
    pub model: Model,
    /// The stochastic SVD (`model.method = "svd"`).
    pub svd: Svd,
}

/// Input file format.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Tab-separated.
    Tsv,
    /// Comma-separated (fields may be wrapped in double quotes; no embedded delimiters).
    Csv,
    /// MovieLens 1M/10M style: `user::item::rating::timestamp`.
    Movielens,
    /// Runs of spaces or tabs.
    Whitespace,
    /// Apache Parquet (flat columns, by name or index). A file that starts with the Parquet
    /// magic bytes `PAR1` is read as Parquet whatever the format says.
    Parquet,
}

/// Whether the first line of each file is a header (`true`/`false` as TOML booleans or
/// strings, or `"auto"`).
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Header {
    /// A header when a numeric column does not parse or the id columns read like names.
    Auto,
    /// Always a header.
    True,
    /// Never a header.
    False,
}

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected true, false or \"auto\""))?
        {
            Raw::Bool(true) => Ok(Header::True),
            Raw::Bool(false) => Ok(Header::False),
            Raw::Text(t) => match t.as_str() {
                "auto" => Ok(Header::Auto),
                "true" => Ok(Header::True),
                "false" => Ok(Header::False),
                _ => Err(serde::de::Error::custom(format!(
                    "{:?}: expected true, false or \"auto\"",
                    crate::escape::escape(&t)
                ))),
            },
        }
    }
}

/// Where event weights come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightColumn {
    /// A header column named like a weight (`weight`, `count`, `rating`, `plays`, …), or
    /// without a header the first column after the ids that holds numbers; none: weight 1.
    Auto,
    /// Every event weighs 1.
    None,
    /// This column.
    Column(Column),
}

impl WeightColumn {
    /// The column when one was named in the job.
    pub fn column(&self) -> Option<&Column> {
        match self {
            WeightColumn::Column(c) => Some(c),
            _ => None,
        }
    }
}

impl Serialize for WeightColumn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            WeightColumn::Auto => s.serialize_str("auto"),
            WeightColumn::None => s.serialize_str("none"),
            WeightColumn::Column(c) => c.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for WeightColumn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Column::deserialize(d)? {
            Column::Name(n) if n == "auto" => WeightColumn::Auto,
            Column::Name(n) if n == "none" => WeightColumn::None,
            c => WeightColumn::Column(c),
        })
    }
}

/// A single string where a list of strings is expected is a list of one.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    match Raw::deserialize(d)
        .map_err(|_| serde::de::Error::custom("expected a path string or a list of them"))?
    {
        Raw::One(s) => Ok(vec![s]),
        Raw::Many(v) => Ok(v),
    }
}

/// A column, by 0-based position or by header name.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Column {
    /// 0-based position.
    Index(usize),
    /// Name in the header line (needs a header).
    Name(String),
}

/// What to do with a line that does not parse.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BadLines {
    /// Stop with an error naming file, line and field.
    Fail,
    /// Skip it, count it, keep a few samples for the report.
    Skip,
}

/// `[input]`
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Input {
    /// Files, directories or globs (`*`, `?` in the last component). Relative paths are
    /// resolved against the job file's directory. Empty: the built-in demo data. A single
    /// string is a list of one.
    #[serde(deserialize_with = "one_or_many")]
    pub path: Vec<String>,
    /// Line format.
    pub format: Format,
    /// Header handling.
    pub header: Header,
    /// User id column.
    pub user: Column,
    /// Item id column.
    pub item: Column,
    /// Weight column: `"auto"` (default) finds one, `"none"` weighs every event 1.
    pub weight: WeightColumn,
    /// Timestamp column (integer; used to keep the most recent events under a cap).
    pub timestamp: Option<Column>,
    /// Removal flag column (by index or header name): a true value (`1`, `true`, `yes`,
    /// `removed`, `unfavorite`) makes the event a removal that cancels the pair. Absent:
    /// removals are negative weights.
    pub removed: Option<Column>,
    /// Rows whose weight is below this are dropped before anything else (e.g. 4 turns star
    /// ratings into positives); negative weights (removals) always pass. Absent: keep all rows.
    pub min_weight: Option<f64>,
    /// Malformed lines: fail (default) or skip.
    pub bad_lines: BadLines,
    /// Built-in demo data (used when `path` is empty): synthetic users, items, rows.
    pub demo: Demo,
}

/// Built-in synthetic data for `jobs/quickstart.toml`: nothing to download.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Demo {
    /// Users.
    pub users: u64,
    /// Items.
    pub items: u64,
    /// Rows.
    pub nnz: u64,
    /// Planted rank.
    pub rank: u32,
    /// Seed.
    pub seed: u64,
}

impl Default for Demo {
    fn default() -> Self {
        Demo {
            users: 20_000,
            items: 5_000,
            nnz: 400_000,
            rank: 16,
            seed: 1,
        }
    }
}

impl Default for Input {
    fn default() -> Self {
        Input {
            path: Vec::new(),
            format: Format::Tsv,
            header: Header::Auto,
            user: Column::Index(0),
            item: Column::Index(1),
            weight: WeightColumn::Auto,
            timestamp: None,
            removed: None,
            min_weight: None,
            bad_lines: BadLines::Fail,
            demo: Demo::default(),
        }
    }
}

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
    fn explicit_sizes_rule(table: &mut toml::Table) {
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
}

/// `[eval]`
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Eval {
    /// Hold out this fraction of each user's interactions (0 = none).
    pub holdout: f64,
    /// Held-out interactions file (same format as the input); exclusive with holdout. The
    /// final report's metrics; `recflow tune` never reads it before the model is chosen.
    pub test: Option<String>,
    /// Held-out interactions for tuning and early stopping (a file, directory or glob, same
    /// format as the input): evaluated beside `test` as `valid_metrics`, never the final report.
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

/// A job error: which key, what is wrong.
#[derive(Debug)]
pub struct JobError(pub String);

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JobError {}

impl Job {
    /// The published latent dimension and the key that sets it: `als.factors`, or `svd.rank`
    /// for an svd model.
    pub fn factors(&self) -> (usize, &'static str) {
        match self.model.method {
            Method::Als => (self.als.factors, "als.factors"),
            Method::Svd => (self.svd.rank, "svd.rank"),
        }
    }

    /// Reads a job file, applies `section.key=value` overrides, types and validates it.
    /// An error names its source: the job file, or the `--set` that caused it.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Job, JobError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| JobError(format!("cannot read job file {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Job::parse_from(
            &text,
            overrides,
            Some(base),
            &format!("job file {}", path.display()),
        )
    }

    /// Parses job text with overrides (paths are left as written).
    pub fn parse(text: &str, overrides: &[String]) -> Result<Job, JobError> {
        Job::parse_in(text, overrides, None)
    }

    /// Parses job text; relative paths written in the file resolve against `base`, paths given
    /// in overrides stay relative to the working directory (where the user typed them).
    pub fn parse_in(
        text: &str,
        overrides: &[String],
        base: Option<&Path>,
    ) -> Result<Job, JobError> {
        Job::parse_from(text, overrides, base, "job text")
    }

    /// [`Job::parse_in`], with errors of the text itself prefixed by `source`. A failure of the
    /// whole is blamed on the earliest source (the text, or one `--set`) after which every
    /// step fails, so a typo in `--set` names `--set`, not the file.
    fn parse_from(
        text: &str,
        overrides: &[String],
        base: Option<&Path>,
        source: &str,
    ) -> Result<Job, JobError> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            JobError(format!(
                "{source}: invalid TOML: {}",
                crate::escape::for_terminal(e.to_string().trim())
            ))
        })?;
        if let Some(base) = base {
            resolve_paths(&mut table, base);
        }
        let mut tables = vec![table.clone()];
        for o in overrides {
            apply_override(&mut table, o)?;
            tables.push(table.clone());
        }
        let e = match typed(&table) {
            Ok(job) => return Ok(job),
            Err(e) => e,
        };
        // The culprit: the earliest source after which every tree fails.
        let mut k = tables.len() - 1;
        while k > 0 && typed(&tables[k - 1]).is_err() {
            k -= 1;
        }
        if k == 0 {
            return Err(JobError(format!("{source}: {}", e.0)));
        }
        let o = crate::escape::escape(&overrides[k - 1]);
        Err(JobError(format!("--set {o}: {}", e.0)))
    }

    /// Checks every value against its allowed range; the error names the key.
    pub fn validate(&self) -> Result<(), JobError> {
        self.als.validate()?;
        self.svd.validate()?;
        self.confidence.validate()?;
        self.shards.validate()?;
        self.input.validate()?;
        self.lsh.validate(self.recommend.mode)?;
        if self.recommend.k > 10_000 {
            return bad("recommend.k", "0..=10000", self.recommend.k);
        }
        if self.similar.k > 10_000 {
            return bad("similar.k", "0..=10000", self.similar.k);
        }
        self.eval.validate()?;
        if self.output.store.is_empty() {
            return Err(JobError("output.store must name a directory".into()));
        }
        Ok(())
    }
}

/// A value out of its key's range.
fn bad(key: &str, allowed: &str, got: impl std::fmt::Display) -> Result<(), JobError> {
    Err(JobError(format!(
        "{key} = {got} is out of range: allowed {allowed}"
    )))
}

impl Als {
    fn validate(&self) -> Result<(), JobError> {
        let a = self;
        if !(1..=1024).contains(&a.factors) {
            return bad("als.factors", "1..=1024", a.factors);
        }
        if !(a.regularization.is_finite() && a.regularization >= 0.0) {
            return bad(
                "als.regularization",
                "a finite number >= 0",
                a.regularization,
            );
        }
        if a.iterations > 10_000 {
            return bad("als.iterations", "0..=10000", a.iterations);
        }
        if !(1..=1 << 22).contains(&a.exchange_kib) {
            return bad("als.exchange_kib", "1..=4194304", a.exchange_kib);
        }
        if !(1..=1024).contains(&a.cg_steps) {
            return bad("als.cg_steps", "1..=1024", a.cg_steps);
        }
        if !(1..=1024).contains(&a.block_size) {
            return bad("als.block_size", "1..=1024", a.block_size);
        }
        if !(a.regularization_exponent.is_finite()
            && (0.0..=4.0).contains(&a.regularization_exponent))
        {
            return bad(
                "als.regularization_exponent",
                "0..=4",
                a.regularization_exponent,
            );
        }
        if !(a.init_std.is_finite() && (0.0..=100.0).contains(&a.init_std)) {
            return bad(
                "als.init_std",
                "0..=100 (0: uniform in [0, 0.01))",
                a.init_std,
            );
        }
        Ok(())
    }
}

impl Svd {
    fn validate(&self) -> Result<(), JobError> {
        let s = self;
        if !(1..=1024).contains(&s.rank) {
            return bad("svd.rank", "1..=1024", s.rank);
        }
        if s.oversample > 1024 {
            return bad("svd.oversample", "0..=1024", s.oversample);
        }
        if s.power_iterations > 100 {
            return bad("svd.power_iterations", "0..=100", s.power_iterations);
        }
        Ok(())
    }
}

impl Confidence {
    fn validate(&self) -> Result<(), JobError> {
        let c = self;
        if let Alpha::Value(a) = c.alpha {
            if !(a.is_finite() && a >= 0.0) {
                return bad("confidence.alpha", "\"auto\" or a finite number >= 0", a);
            }
        }
        if !(c.epsilon.is_finite() && c.epsilon > 0.0) {
            return bad("confidence.epsilon", "a finite number > 0", c.epsilon);
        }
        Ok(())
    }
}

impl Shards {
    fn validate(&self) -> Result<(), JobError> {
        if !(1..=65_536).contains(&self.virtual_shards) {
            return bad("shards.virtual", "1..=65536", self.virtual_shards);
        }
        Ok(())
    }
}

impl Input {
    fn validate(&self) -> Result<(), JobError> {
        if let Some(m) = self.min_weight {
            if !m.is_finite() {
                return bad("input.min_weight", "a finite number", m);
            }
        }
        if let (Column::Index(u), Column::Index(i)) = (&self.user, &self.item) {
            if u == i {
                return Err(JobError(format!(
                    "input.user and input.item are both column {u}: they must differ"
                )));
            }
        }
        let d = &self.demo;
        if d.users == 0 || d.items == 0 || d.rank == 0 {
            return bad(
                "input.demo",
                "users, items, rank >= 1",
                format!("{}/{}/{}", d.users, d.items, d.rank),
            );
        }
        Ok(())
    }
}

impl Lsh {
    fn validate(&self, mode: Mode) -> Result<(), JobError> {
        let l = self;
        if !(1..=64).contains(&l.planes) {
            return bad("lsh.planes", "1..=64", l.planes);
        }
        if l.tables > 1024 {
            return bad("lsh.tables", "0..=1024 (0 = head list only)", l.tables);
        }
        if !(1..=64).contains(&l.norm_bands) {
            return bad("lsh.norm_bands", "1..=64", l.norm_bands);
        }
        if !(0.0..=1.0).contains(&l.target_recall) {
            return bad(
                "lsh.target_recall",
                "0..=1 (0 = sizes as given)",
                l.target_recall,
            );
        }
        if !(l.max_share > 0.0 && l.max_share <= 1.0) {
            return bad(
                "lsh.max_share",
                "a share of the catalogue in (0, 1]",
                l.max_share,
            );
        }
        if l.transform == Transform::Users && !(1..=1_000_000).contains(&l.bucket_items) {
            return bad(
                "lsh.bucket_items",
                "1..=1000000 with transform = \"users\"",
                l.bucket_items,
            );
        }
        // Probes flip bits of item codes; user buckets ignore them (so a small `planes` there
        // does not need `probes` lowered too).
        if l.probes > l.planes && l.transform != Transform::Users {
            return bad("lsh.probes", "0..=lsh.planes", l.probes);
        }
        if mode == Mode::Lsh && l.tables == 0 && l.head == 0 {
            return bad(
                "lsh.tables",
                "at least 1 when lsh.head = 0 (recommend.mode = \"lsh\" would have no candidates)",
                l.tables,
            );
        }
        Ok(())
    }
}

impl Eval {
    fn validate(&self) -> Result<(), JobError> {
        let e = self;
        if !(0.0..1.0).contains(&e.holdout) {
            return bad("eval.holdout", "0 <= holdout < 1", e.holdout);
        }
        if e.holdout > 0.0 && e.test.is_some() {
            return Err(JobError(
                "eval.holdout and eval.test are exclusive: set one of them".into(),
            ));
        }
        let ks = e.k.list();
        if ks.is_empty() || ks.iter().any(|k| !(1..=10_000).contains(k)) {
            return bad(
                "eval.k",
                "1..=10000, or a non-empty list of such",
                format!("{ks:?}"),
            );
        }
        Ok(())
    }
}

/// Types and validates a TOML tree.
fn typed(table: &toml::Table) -> Result<Job, JobError> {
    let mut table = table.clone();
    Lsh::explicit_sizes_rule(&mut table);
    let job: Job = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| {
            JobError(crate::escape::for_terminal(
                &e.to_string().trim().replace('\n', " "),
            ))
        })?;
    job.validate()?;
    Ok(job)
}

fn resolve_paths(table: &mut toml::Table, base: &Path) {
    if let Some(toml::Value::Table(input)) = table.get_mut("input") {
        match input.get_mut("path") {
            Some(toml::Value::Array(a)) => {
                for v in a.iter_mut() {
                    if let toml::Value::String(s) = v {
                        *s = resolve(base, s);
                    }
                }
            }
            Some(toml::Value::String(s)) => *s = resolve(base, s),
            _ => {}
        }
    }
    if let Some(toml::Value::Table(eval)) = table.get_mut("eval") {
        for key in ["test", "valid"] {
            if let Some(toml::Value::String(s)) = eval.get_mut(key) {
                *s = resolve(base, s);
            }
        }
    }
}

fn resolve(base: &Path, p: &str) -> String {
    let pb = PathBuf::from(p);
    if pb.is_absolute() {
        p.to_string()
    } else {
        base.join(pb).to_string_lossy().into_owned()
    }
}

/// Applies one `section.key=value` override. The value is read as a TOML value when it
/// parses as one (numbers, booleans, arrays, quoted strings), else as a bare string.
fn apply_override(table: &mut toml::Table, spec: &str) -> Result<(), JobError> {
    let shown = crate::escape::escape(spec);
    let (key, value) = spec.split_once('=').ok_or_else(|| {
        JobError(format!(
            "--set {shown}: expected section.key=value, e.g. --set als.factors=128"
        ))
    })?;
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(JobError(format!(
            "--set {shown}: the key must be section.key, e.g. als.factors"
        )));
    }
    let value = value.trim();
    let parsed: toml::Value = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let mut cur = table;
    for p in &parts[..parts.len() - 1] {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry.as_table_mut().ok_or_else(|| {
            JobError(format!(
                "--set {shown}: {} is not a section",
                crate::escape::escape(p)
            ))
        })?;
    }
    cur.insert(parts[parts.len() - 1].to_string(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_lsh_sizes_turn_growth_off_unless_a_target_is_given() {
        let t = |sets: &[&str]| {
            Job::parse("", &sets.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap()
                .lsh
                .target_recall
        };
        assert_eq!(t(&[]), 0.95);
        assert_eq!(t(&["lsh.planes=8", "lsh.transform=mips"]), 0.95);
        for key in Lsh::SIZE_KEYS {
            assert_eq!(t(&[&format!("lsh.{key}=2")]), 0.0, "{key}");
        }
        assert_eq!(t(&["lsh.head=2", "lsh.target_recall=0.9"]), 0.9);
        let file = Job::parse("[lsh]\nhead = 0\ntables = 50\nplanes = 12\n", &[]).unwrap();
        assert_eq!(file.lsh.target_recall, 0.0);
        for (set, key) in [
            ("lsh.target_recall=1.5", "lsh.target_recall"),
            ("lsh.max_share=0", "lsh.max_share"),
            ("lsh.max_share=2", "lsh.max_share"),
        ] {
            let e = Job::parse("", &[set.to_string()]).unwrap_err().to_string();
            assert!(e.contains(key), "{set}: {e}");
        }
    }

    #[test]
    fn defaults_are_valid() {
        let j = Job::parse("", &[]).unwrap();
        assert_eq!(j, Job::default());
    }

    #[test]
    fn reference_job_lists_every_default() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/reference.toml"))
                .unwrap();
        let j = Job::parse(&text, &[]).unwrap();
        assert_eq!(
            j,
            Job::default(),
            "jobs/reference.toml drifted from the defaults"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Job::parse("[als]\nfactor = 3\n", &[]).unwrap_err();
        assert!(e.0.contains("factor"), "{}", e.0);
        let e = Job::parse("[alss]\n", &[]).unwrap_err();
        assert!(e.0.contains("alss"), "{}", e.0);
    }

    #[test]
    fn ranges_are_named() {
        for (text, key) in [
            ("[als]\nfactors = 0", "als.factors"),
            ("[als]\nregularization = -1.0", "als.regularization"),
            ("[confidence]\nalpha = -2.0", "confidence.alpha"),
            (
                "[confidence]\nscheme = \"log\"\nepsilon = 0.0",
                "confidence.epsilon",
            ),
            ("[shards]\nvirtual = 0", "shards.virtual"),
            ("[lsh]\nplanes = 65", "lsh.planes"),
            ("[eval]\nholdout = 1.5", "eval.holdout"),
        ] {
            let e = Job::parse(text, &[]).unwrap_err();
            assert!(e.0.contains(key), "{text}: {}", e.0);
            assert!(e.0.contains("allowed"), "{text}: {}", e.0);
        }
        let e = Job::parse("[als]\nfactors = \"many\"", &[]).unwrap_err();
        assert!(e.0.contains("factors"), "{}", e.0);
    }

    #[test]
    fn overrides_apply_and_validate() {
        let j = Job::parse(
            "[als]\nfactors = 8",
            &[
                "als.factors=16".into(),
                "output.store=models/x".into(),
                "input.path=data/a.tsv".into(),
                "confidence.scheme=log".into(),
            ],
        )
        .unwrap();
        assert_eq!(j.als.factors, 16);
        assert_eq!(j.output.store, "models/x");
        assert_eq!(j.input.path, vec!["data/a.tsv".to_string()]);
        assert_eq!(j.confidence.scheme, Scheme::Log);
        let e = Job::parse("", &["als.factors=0".into()]).unwrap_err();
        assert!(e.0.contains("als.factors"));
        let e = Job::parse("", &["als.nope=1".into()]).unwrap_err();
        assert!(e.0.contains("nope"), "{}", e.0);
        assert!(Job::parse("", &["factors".into()]).is_err());
    }

    #[test]
    fn path_takes_a_string_or_a_list() {
        let j = Job::parse("[input]\npath = \"events.tsv\"", &[]).unwrap();
        assert_eq!(j.input.path, vec!["events.tsv".to_string()]);
        let j = Job::parse("[input]\npath = [\"a.tsv\", \"b/\"]", &[]).unwrap();
        assert_eq!(j.input.path, vec!["a.tsv".to_string(), "b/".to_string()]);
        let j = Job::parse_in("[input]\npath = \"e.tsv\"", &[], Some(Path::new("jobs"))).unwrap();
        assert_eq!(
            j.input.path,
            vec![Path::new("jobs").join("e.tsv").display().to_string()]
        );
        let e = Job::parse("[input]\npath = 3", &[]).unwrap_err();
        assert!(
            e.0.contains("input.path") && e.0.contains("string"),
            "{}",
            e.0
        );
    }

    #[test]
    fn header_takes_booleans_and_strings() {
        for (v, h) in [
            ("false", Header::False),
            ("true", Header::True),
            ("\"false\"", Header::False),
            ("\"auto\"", Header::Auto),
        ] {
            let j = Job::parse(&format!("[input]\nheader = {v}"), &[]).unwrap();
            assert_eq!(j.input.header, h, "{v}");
        }
        let j = Job::parse("", &["input.header=false".into()]).unwrap();
        assert_eq!(j.input.header, Header::False);
        let e = Job::parse("[input]\nheader = \"maybe\"", &[]).unwrap_err();
        assert!(
            e.0.contains("input.header") && e.0.contains("auto"),
            "{}",
            e.0
        );
    }

    #[test]
    fn weight_column_auto_none_or_named() {
        assert_eq!(
            Job::parse("", &[]).unwrap().input.weight,
            WeightColumn::Auto
        );
        let w = |t: &str| {
            Job::parse(&format!("[input]\nweight = {t}"), &[])
                .unwrap()
                .input
                .weight
        };
        assert_eq!(w("\"none\""), WeightColumn::None);
        assert_eq!(w("\"auto\""), WeightColumn::Auto);
        assert_eq!(w("2"), WeightColumn::Column(Column::Index(2)));
        assert_eq!(
            w("\"plays\""),
            WeightColumn::Column(Column::Name("plays".into()))
        );
    }

    #[test]
    fn errors_name_the_set_that_caused_them() {
        let e = Job::load_text("[als]\nfactors = 8\n", &["als.factor=8".into()]);
        assert!(e.0.starts_with("--set als.factor=8:"), "{}", e.0);
        assert!(e.0.contains("factor"), "{}", e.0);
        let e = Job::load_text("[als]\nfactors = 8\n", &["als.factors=0".into()]);
        assert!(e.0.starts_with("--set als.factors=0:"), "{}", e.0);
        // The file's own mistakes are the file's, whatever --set says.
        let e = Job::load_text("[als]\nfactor = 8\n", &["als.factors=4".into()]);
        assert!(e.0.starts_with("job file j.toml:"), "{}", e.0);
        // A bad file fixed by --set, then a bad --set: the --set is named.
        let e = Job::load_text(
            "[als]\nfactors = 0\n",
            &["als.factors=4".into(), "als.bogus=1".into()],
        );
        assert!(e.0.starts_with("--set als.bogus=1:"), "{}", e.0);
    }

    impl Job {
        /// `Job::load` of `text` as if read from `j.toml`, expecting an error.
        fn load_text(text: &str, sets: &[String]) -> JobError {
            Job::parse_from(text, sets, None, "job file j.toml").unwrap_err()
        }
    }
}
