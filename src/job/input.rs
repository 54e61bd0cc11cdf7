//! `[input]`: what to read and how to parse it.

use serde::{Deserialize, Serialize};

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
