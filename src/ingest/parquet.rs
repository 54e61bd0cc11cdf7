//! Parquet input: flat columns chosen by name or 0-based index (the same `input.user`,
//! `input.item`, `input.weight`, `input.timestamp` and `input.removed` keys as text), integer
//! or string ids. A file's row groups are what workers share, as byte ranges are for text:
//! every worker reads the footer, and row group `k` (counted over all Parquet files) goes to
//! worker `k mod parts`.
//!
//! Values become events by the text rules, so a Parquet file and the same data as TSV give the
//! same model bit for bit: an integer id is the id its decimal text is; weights pass the same
//! range check; a null in an id, weight or timestamp column is a bad row (named by file, 1-based
//! row and column, under `input.bad_lines`); a null removal flag is an addition, as an empty
//! field is in text. Timestamps with a Parquet unit (`TIMESTAMP`, `DATE`) become Unix seconds.

use super::parquet_columns::{self as columns, Column};
use super::parse::MAX_ABS_WEIGHT;
use super::parse::{number_field, removal_flag, Columns, Event, LineError};
use super::rows::{bad_row, keep_event, ReadStats};
use super::weight::{self, WeightChoice};
use crate::ids::parse_id;
use crate::ids::RawId;
use crate::job::{Format, Input};
use ::parquet::basic::{LogicalType, TimeUnit};
use ::parquet::data_type::Decimal;
use ::parquet::file::reader::{FileReader, SerializedFileReader};
use ::parquet::record::Field;
use ::parquet::schema::types::Type;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The bytes every Parquet file starts (and ends) with.
pub const MAGIC: &[u8; 4] = b"PAR1";

/// Whether `path` is to be read as Parquet: it starts with [`MAGIC`] (whatever the format), or
/// the job says `format = "parquet"`, in which case a file without the magic is an error.
pub fn is_parquet(path: &Path, format: Format) -> Result<bool, String> {
    let name = path.display();
    let f = File::open(path).map_err(|e| format!("{name}: cannot open: {e}"))?;
    let mut head = Vec::with_capacity(4);
    f.take(4)
        .read_to_end(&mut head)
        .map_err(|e| format!("{name}: cannot read: {e}"))?;
    let magic = head == MAGIC;
    if format == Format::Parquet && !magic {
        return Err(format!(
            "{name}: input.format = \"parquet\", but the file does not start with the Parquet magic bytes PAR1: it is not a Parquet file (for text, set input.format to tsv, csv, movielens or whitespace)"
        ));
    }
    Ok(magic)
}

/// Positions of the job's columns in the projection read from each row.
#[derive(Clone, Copy, Debug)]
struct Slots {
    user: usize,
    item: usize,
    weight: Option<usize>,
    ts: Option<usize>,
    removed: Option<usize>,
}

/// One Parquet file with its footer read and the job's columns resolved against its schema.
pub struct ParquetInput {
    path: PathBuf,
    reader: SerializedFileReader<File>,
    /// The leaf columns the job uses, in file order.
    leaves: Vec<usize>,
    slots: Slots,
    /// Divisor turning the timestamp column's raw integers into seconds (1 when unitless).
    ts_per_second: i64,
    /// First row (0-based, in the file) of each row group.
    starts: Vec<u64>,
    /// Where the weights come from.
    pub weight: WeightChoice,
}

impl ParquetInput {
    /// Opens `path`, reads its footer and resolves the job's columns by name or index.
    pub fn open(path: &Path, input: &Input) -> Result<ParquetInput, String> {
        let name = path.display();
        let file = File::open(path).map_err(|e| format!("{name}: cannot open: {e}"))?;
        let reader = SerializedFileReader::new(file).map_err(|e| corrupt(path, &e))?;
        let meta = reader.metadata();
        let root = meta.file_metadata().schema();
        let fields = root.get_fields();
        let names: Vec<String> = fields.iter().map(|f| f.name().to_string()).collect();
        let cols = Columns::resolve(
            &input.user,
            &input.item,
            None,
            input.timestamp.as_ref(),
            Some(&names),
        )
        .and_then(|c| c.with_removed(input.removed.as_ref(), Some(&names)))
        .map_err(|e| format!("{name}: {e}"))?;
        let weight = weight::choose(&input.weight, Format::Parquet, &cols, Some(&names), &[])
            .map_err(|e| format!("{name}: {e}"))?;
        let cols = Columns {
            weight: weight.column,
            ..cols
        };
        let used = [
            Some(cols.user),
            Some(cols.item),
            cols.weight,
            cols.ts,
            cols.removed,
        ];
        let mut wanted: Vec<usize> = used.iter().flatten().copied().collect();
        wanted.sort_unstable();
        wanted.dedup();
        for &c in &wanted {
            check_column(path, fields, &names, c)?;
        }
        let slot = |c: usize| wanted.binary_search(&c).expect("a wanted column");
        let slots = Slots {
            user: slot(cols.user),
            item: slot(cols.item),
            weight: cols.weight.map(slot),
            ts: cols.ts.map(slot),
            removed: cols.removed.map(slot),
        };
        let leaves = columns::leaves(meta.file_metadata().schema_descr(), &wanted);
        let ts_per_second = cols.ts.map_or(1, |c| per_second(&fields[c]));
        let mut starts = Vec::with_capacity(meta.num_row_groups());
        let mut rows = 0u64;
        for g in meta.row_groups() {
            starts.push(rows);
            rows += g.num_rows().max(0) as u64;
        }
        Ok(ParquetInput {
            path: path.to_path_buf(),
            reader,
            leaves,
            slots,
            ts_per_second,
            starts,
            weight,
        })
    }

    /// Row groups in the file.
    pub fn row_groups(&self) -> usize {
        self.starts.len()
    }

    /// Reads the row groups `groups`, handing kept events to `sink` under the job's bad-row
    /// and `min_weight` rules.
    pub fn read_row_groups(
        &self,
        groups: &[usize],
        input: &Input,
        st: &mut ReadStats,
        sink: &mut impl FnMut(Event),
    ) -> Result<(), String> {
        for &g in groups {
            let rg = self
                .reader
                .get_row_group(g)
                .map_err(|e| corrupt(&self.path, &e))?;
            st.bytes += rg.metadata().compressed_size().max(0) as u64;
            let mut cols = (self.leaves.iter())
                .map(|&leaf| Column::open(rg.as_ref(), leaf))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| corrupt(&self.path, &e))?;
            let rows = rg.metadata().num_rows().max(0) as usize;
            let mut batch: Vec<Vec<Field>> = vec![Vec::with_capacity(columns::BATCH); cols.len()];
            let mut done = 0;
            while done < rows {
                let n = columns::BATCH.min(rows - done);
                for (c, out) in cols.iter_mut().zip(&mut batch) {
                    out.clear();
                    c.read(n, out).map_err(|e| corrupt(&self.path, &e))?;
                }
                for i in 0..n {
                    let mut values: [&Field; 5] = [&Field::Null; 5];
                    for (slot, col) in values.iter_mut().zip(&batch) {
                        *slot = &col[i];
                    }
                    let row = self.starts[g] + (done + i) as u64 + 1;
                    self.take(&values, row, input, st, sink)?;
                }
                done += n;
            }
        }
        Ok(())
    }

    /// One row (1-based `row` in the file): its event kept, or a bad row under the job's rules.
    fn take(
        &self,
        values: &[&Field; 5],
        row: u64,
        input: &Input,
        st: &mut ReadStats,
        sink: &mut impl FnMut(Event),
    ) -> Result<(), String> {
        match self.event(values) {
            Ok(ev) => keep_event(input, ev, st, sink),
            Err(e) => {
                let msg = format!(
                    "{}: row {row}: field {}: {}",
                    self.path.display(),
                    e.field,
                    e.message
                );
                bad_row(input, msg, "row", st)?;
            }
        }
        Ok(())
    }

    /// One row's values (in projection order) as an event, by the text rules.
    fn event(&self, v: &[&Field; 5]) -> Result<Event, LineError> {
        let s = self.slots;
        let user = id(v[s.user], "user")?;
        let item = id(v[s.item], "item")?;
        let weight = match s.weight {
            None => 1.0,
            Some(k) => weight_of(v[k])?,
        };
        let weight = match s.removed {
            Some(k) if removed(v[k])? => -(MAX_ABS_WEIGHT as f32),
            _ => weight,
        };
        let ts = match s.ts {
            None => i64::MIN,
            Some(k) => timestamp(v[k], self.ts_per_second)?,
        };
        Ok(Event {
            user,
            item,
            weight,
            ts,
        })
    }
}

/// The message for a Parquet file that cannot be decoded.
fn corrupt(path: &Path, e: &::parquet::errors::ParquetError) -> String {
    format!(
        "{}: cannot read as Parquet: {}: the file is truncated or corrupt (or not Parquet)",
        path.display(),
        crate::escape::escape(&e.to_string())
    )
}

/// A job column must exist and be a single (non-repeated) primitive value per row.
fn check_column(
    path: &Path,
    fields: &[Arc<Type>],
    names: &[String],
    c: usize,
) -> Result<(), String> {
    let name = path.display();
    let Some(f) = fields.get(c) else {
        return Err(format!(
            "{name}: column index {c} is out of range: the file has {} column(s) ({})",
            names.len(),
            crate::escape::sample(names.join(", ").as_bytes())
        ));
    };
    let repeated = f.get_basic_info().has_repetition()
        && f.get_basic_info().repetition() == ::parquet::basic::Repetition::REPEATED;
    if !f.is_primitive() || repeated {
        return Err(format!(
            "{name}: column {c} ({:?}) is a nested or repeated column: ids, weights, timestamps and flags must be flat columns (one value per row)",
            f.name()
        ));
    }
    Ok(())
}

/// Raw units per second of a timestamp column (by its logical type; 1 for plain integers).
fn per_second(t: &Type) -> i64 {
    match t.get_basic_info().logical_type_ref() {
        Some(LogicalType::Timestamp(ts)) => match ts.unit {
            TimeUnit::MILLIS => 1_000,
            TimeUnit::MICROS => 1_000_000,
            TimeUnit::NANOS => 1_000_000_000,
        },
        _ => 1,
    }
}

fn null(field: &'static str) -> LineError {
    LineError {
        field,
        message: "null (a missing value)".into(),
    }
}

fn wrong_type(field: &'static str, f: &Field, want: &str) -> LineError {
    let shown = match f {
        Field::Str(s) => s.clone(),
        _ => f.to_string(),
    };
    LineError {
        field,
        message: format!(
            "'{}' is not {want}",
            crate::escape::sample(shown.as_bytes())
        ),
    }
}

/// An integer value of any width, signed or not.
fn integer(f: &Field) -> Option<i128> {
    Some(match *f {
        Field::Byte(v) => v as i128,
        Field::Short(v) => v as i128,
        Field::Int(v) => v as i128,
        Field::Long(v) => v as i128,
        Field::UByte(v) => v as i128,
        Field::UShort(v) => v as i128,
        Field::UInt(v) => v as i128,
        Field::ULong(v) => v as i128,
        _ => return None,
    })
}

/// A decimal's value (big-endian two's complement, scaled).
fn decimal(d: &Decimal) -> f64 {
    let bytes = d.data();
    let mut v: i128 = if bytes.first().is_some_and(|&b| b & 0x80 != 0) {
        -1
    } else {
        0
    };
    for &b in bytes.iter().take(16) {
        v = (v << 8) | b as i128;
    }
    v as f64 / 10f64.powi(d.scale())
}

/// A numeric value as f64; strings are read as text weights are.
fn number(f: &Field) -> Option<f64> {
    match f {
        Field::Float(v) => Some(*v as f64),
        Field::Double(v) => Some(*v),
        Field::Float16(v) => Some(f64::from(*v)),
        Field::Decimal(d) => Some(decimal(d)),
        Field::Str(s) => number_field(s.as_bytes()),
        _ => integer(f).map(|v| v as f64),
    }
}

fn id(f: &Field, field: &'static str) -> Result<RawId, LineError> {
    let parsed = match f {
        Field::Null => return Err(null(field)),
        Field::Str(s) => parse_id(s.as_bytes()),
        Field::Bytes(b) => parse_id(b.data()),
        _ => match integer(f) {
            // The id its decimal text is: `42` is numeric id 42, `-1` the string id "-1".
            Some(v) => parse_id(v.to_string().as_bytes()),
            None => return Err(wrong_type(field, f, "an id (integers or strings)")),
        },
    };
    parsed.map_err(|message| LineError { field, message })
}

fn weight_of(f: &Field) -> Result<f32, LineError> {
    if matches!(f, Field::Null) {
        return Err(null("weight"));
    }
    let w = number(f).ok_or_else(|| wrong_type("weight", f, "a number"))?;
    if !w.is_finite() || w.abs() > MAX_ABS_WEIGHT {
        return Err(LineError {
            field: "weight",
            message: format!("{w} is not a finite number within ±{MAX_ABS_WEIGHT:e}"),
        });
    }
    Ok(w as f32)
}

fn removed(f: &Field) -> Result<bool, LineError> {
    let flag = match f {
        Field::Null => Some(false),
        Field::Bool(b) => Some(*b),
        Field::Str(s) => removal_flag(s.as_bytes()),
        _ => integer(f).and_then(|v| removal_flag(v.to_string().as_bytes())),
    };
    flag.ok_or_else(|| {
        wrong_type(
            "removed",
            f,
            "a removal flag (true/false, 1/0, yes/no, removed, unfavorite)",
        )
    })
}

fn timestamp(f: &Field, per_second: i64) -> Result<i64, LineError> {
    let whole = |x: f64| x.is_finite().then_some(x as i64);
    let ts = match f {
        Field::Null => return Err(null("timestamp")),
        Field::TimestampMillis(v) => Some(v.div_euclid(1_000)),
        Field::TimestampMicros(v) => Some(v.div_euclid(1_000_000)),
        Field::Date(d) => Some(*d as i64 * 86_400),
        Field::Str(s) => {
            let t = s.trim();
            t.parse::<i64>()
                .ok()
                .or_else(|| t.parse().ok().and_then(whole))
        }
        Field::Float(_) | Field::Double(_) | Field::Decimal(_) => number(f).and_then(whole),
        _ => integer(f).and_then(|v| i64::try_from(v).ok().map(|v| v.div_euclid(per_second))),
    };
    ts.ok_or_else(|| wrong_type("timestamp", f, "an integer or a timestamp"))
}

#[cfg(test)]
#[path = "parquet_tests.rs"]
mod tests;
