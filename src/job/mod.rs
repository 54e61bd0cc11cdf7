//! Job files: what to read, how to train, where to publish.
//!
//! A job is a TOML file with one table per stage. Every key has a default, unknown keys are
//! rejected (`deny_unknown_fields`), and [`Job::validate`] names the bad key with its allowed
//! range. `--set section.key=value` overrides are applied to the TOML tree before it is typed,
//! so they are checked exactly like the file.

mod input;
mod sections;
#[cfg(test)]
mod tests;
mod validate;

pub use input::*;
pub use sections::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use validate::bad;

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
