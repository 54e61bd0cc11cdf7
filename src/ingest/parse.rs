//! One input line → one event. No allocation per line for numeric ids.

use crate::escape::{escape, escape_bytes, sample};
use crate::ids::parse_id;
use crate::ids::RawId;
use crate::job::{Column, Format};

/// Largest accepted |weight|: beyond this, confidences overflow f32 arithmetic.
pub const MAX_ABS_WEIGHT: f64 = 1e9;

/// One parsed event.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// User id.
    pub user: RawId,
    /// Item id.
    pub item: RawId,
    /// Weight (negative = removal, e.g. an "unfavorite").
    pub weight: f32,
    /// Timestamp, `i64::MIN` when the input has none.
    pub ts: i64,
}

/// Column positions resolved for one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Columns {
    /// User column.
    pub user: usize,
    /// Item column.
    pub item: usize,
    /// Weight column.
    pub weight: Option<usize>,
    /// Timestamp column.
    pub ts: Option<usize>,
    /// Removal flag column: a true value makes the event a removal of the pair.
    pub removed: Option<usize>,
}

impl Columns {
    fn max(&self) -> usize {
        self.user
            .max(self.item)
            .max(self.weight.unwrap_or(0))
            .max(self.ts.unwrap_or(0))
            .max(self.removed.unwrap_or(0))
    }

    /// Adds the removal flag column (`input.removed`), by index or header name.
    pub fn with_removed(
        mut self,
        removed: Option<&Column>,
        header: Option<&[String]>,
    ) -> Result<Columns, String> {
        if let Some(c) = removed {
            let any = Column::Index(0);
            let r = Columns::resolve(c, &any, None, None, header)
                .map_err(|e| e.replace("input.user", "input.removed"))?;
            self.removed = Some(r.user);
        }
        Ok(self)
    }

    /// Resolves job columns, using `header` (the file's first line split into fields) for names.
    pub fn resolve(
        user: &Column,
        item: &Column,
        weight: Option<&Column>,
        ts: Option<&Column>,
        header: Option<&[String]>,
    ) -> Result<Columns, String> {
        let one = |c: &Column, key: &str| -> Result<usize, String> {
            match c {
                Column::Index(i) => Ok(*i),
                Column::Name(n) => {
                    let h = header.ok_or_else(|| {
                        format!("input.{key} = \"{}\" names a column, but the file has no header line (set input.header = \"true\" or use a 0-based index)", escape(n))
                    })?;
                    h.iter().position(|x| x == n).ok_or_else(|| {
                        // A binary or compressed file's "header" is bounded and escaped.
                        format!(
                            "input.{key} = \"{}\": no such column in the header ({})",
                            escape(n),
                            sample(h.join(", ").as_bytes())
                        )
                    })
                }
            }
        };
        Ok(Columns {
            user: one(user, "user")?,
            item: one(item, "item")?,
            weight: weight.map(|c| one(c, "weight")).transpose()?,
            ts: ts.map(|c| one(c, "timestamp")).transpose()?,
            removed: None,
        })
    }
}

/// Reads a removal flag: `Some(true)` for a removal, `Some(false)` for an addition.
pub fn removal_flag(f: &[u8]) -> Option<bool> {
    let s = String::from_utf8_lossy(f).trim().to_ascii_lowercase();
    match s.as_str() {
        "1" | "true" | "t" | "yes" | "y" | "removed" | "remove" | "unfavorite" | "deleted"
        | "delete" => Some(true),
        "0" | "false" | "f" | "no" | "n" | "" | "added" | "add" | "favorite" => Some(false),
        _ => None,
    }
}

/// Why a line did not parse: the field and what was wrong.
#[derive(Debug, PartialEq)]
pub struct LineError {
    /// Which field ("user", "weight", "columns", …).
    pub field: &'static str,
    /// What was wrong, with a hint where one helps.
    pub message: String,
}

/// A line's fields, reused from line to line: byte ranges into the line itself, or, for a CSV
/// line with quotes, into `unquoted` (its fields as the CSV parser decoded them).
#[derive(Clone, Debug, Default)]
pub struct Fields {
    ranges: Vec<(usize, usize)>,
    unquoted: Vec<u8>,
    in_unquoted: bool,
    ends: Vec<usize>,
    csv: Option<csv_core::Reader>,
}

impl Fields {
    /// Splits `line` (without its `\n`) in the format's way.
    pub fn split(&mut self, line: &[u8], format: Format) {
        self.in_unquoted = false;
        match format {
            // Without a quote, RFC 4180 CSV is a plain split: no parser needed on that line.
            Format::Csv if line.contains(&b'"') => self.split_csv(line),
            _ => split_fields(line, format, &mut self.ranges),
        }
    }

    /// How many fields the line has.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether the line has no field (never after [`Fields::split`]: a blank line has one).
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Field `i` of `line` (the line last split).
    pub fn get<'a>(&'a self, line: &'a [u8], i: usize) -> Option<&'a [u8]> {
        let &(s, e) = self.ranges.get(i)?;
        Some(if self.in_unquoted {
            &self.unquoted[s..e]
        } else {
            &line[s..e]
        })
    }

    /// Quoted fields (embedded commas, `""` for a quote) through csv-core. A record never
    /// spans lines: files are split among workers at line ends.
    fn split_csv(&mut self, line: &[u8]) {
        // `\n` only ends a record: a `\r` inside a field stays there to be reported.
        let r = self.csv.get_or_insert_with(|| {
            csv_core::ReaderBuilder::new()
                .terminator(csv_core::Terminator::Any(b'\n'))
                .build()
        });
        r.reset();
        // Decoding only shrinks a field, and a line has at most len + 1 fields.
        self.unquoted.resize(line.len(), 0);
        self.ends.resize(line.len() + 1, 0);
        let (mut nin, mut nout, mut nend) = (0, 0, 0);
        loop {
            let (res, i, o, e) = r.read_record(
                &line[nin..],
                &mut self.unquoted[nout..],
                &mut self.ends[nend..],
            );
            (nin, nout, nend) = (nin + i, nout + o, nend + e);
            if matches!(
                res,
                csv_core::ReadRecordResult::Record | csv_core::ReadRecordResult::End
            ) {
                break;
            }
        }
        self.ranges.clear();
        let mut start = 0;
        for &end in &self.ends[..nend] {
            self.ranges.push((start, end));
            start = end;
        }
        if self.ranges.is_empty() {
            self.ranges.push((0, 0));
        }
        self.in_unquoted = true;
    }
}

/// Splits `line` into field ranges, reusing `out` (CSV quotes are not decoded: see [`Fields`]).
fn split_fields(line: &[u8], format: Format, out: &mut Vec<(usize, usize)>) {
    out.clear();
    match format {
        // Parquet files are never read as lines (see `super::parquet`); tabs if ever asked.
        Format::Tsv | Format::Csv | Format::Parquet => {
            let d = if format == Format::Csv { b',' } else { b'\t' };
            let mut start = 0;
            for (i, &b) in line.iter().enumerate() {
                if b == d {
                    out.push((start, i));
                    start = i + 1;
                }
            }
            out.push((start, line.len()));
        }
        Format::Movielens => {
            let mut start = 0;
            let mut i = 0;
            while i + 1 < line.len() {
                if line[i] == b':' && line[i + 1] == b':' {
                    out.push((start, i));
                    i += 2;
                    start = i;
                } else {
                    i += 1;
                }
            }
            out.push((start, line.len()));
        }
        Format::Whitespace => {
            let mut i = 0;
            while i < line.len() {
                while i < line.len() && (line[i] == b' ' || line[i] == b'\t') {
                    i += 1;
                }
                if i == line.len() {
                    break;
                }
                let s = i;
                while i < line.len() && line[i] != b' ' && line[i] != b'\t' {
                    i += 1;
                }
                out.push((s, i));
            }
        }
    }
}

/// Strips a trailing `\r` (CRLF files) and surrounding spaces / CSV quotes from a field.
fn clean(mut f: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\r'] = f {
        f = rest;
    }
    while let [b' ', rest @ ..] = f {
        f = rest;
    }
    if f.len() >= 2 && f[0] == b'"' && f[f.len() - 1] == b'"' {
        f = &f[1..f.len() - 1];
    }
    f
}

/// A field as a finite number, read as the line parser reads weights.
pub fn number_field(f: &[u8]) -> Option<f64> {
    number::<f64>(clean(f)).filter(|v| v.is_finite())
}

fn number<T: std::str::FromStr>(f: &[u8]) -> Option<T> {
    std::str::from_utf8(f).ok()?.parse().ok()
}

/// Parses one line (without its `\n`). `Ok(None)` for a blank line.
pub fn parse_line(
    line: &[u8],
    format: Format,
    cols: &Columns,
    fields: &mut Fields,
) -> Result<Option<Event>, LineError> {
    let trimmed = clean(line);
    if trimmed.is_empty() {
        return Ok(None);
    }
    fields.split(line, format);
    let need = cols.max() + 1;
    if fields.len() < need {
        return Err(LineError {
            field: "columns",
            message: format!(
                "{} column(s), need at least {need} (is input.format = \"{}\" right?)",
                fields.len(),
                format_name(format)
            ),
        });
    }
    let get = |i: usize| clean(fields.get(line, i).unwrap_or_default());
    let id = |i: usize, field: &'static str| {
        parse_id(get(i)).map_err(|message| LineError { field, message })
    };
    let user = id(cols.user, "user")?;
    let item = id(cols.item, "item")?;
    not_a_header(&user, &item)?;
    let weight = match cols.weight {
        None => 1.0,
        Some(i) => weight_field(get(i))?,
    };
    // A removal cancels the pair: every event of it in this batch and in the snapshot.
    let weight = match cols.removed {
        None => weight,
        Some(i) => match removal_flag(get(i)) {
            Some(true) => -(MAX_ABS_WEIGHT as f32),
            Some(false) => weight,
            None => {
                return Err(LineError {
                    field: "removed",
                    message: format!(
                        "'{}' is not a removal flag (true/false, 1/0, yes/no, removed, unfavorite)",
                        escape_bytes(get(i))
                    ),
                })
            }
        },
    };
    let ts = match cols.ts {
        None => i64::MIN,
        Some(i) => timestamp_field(get(i))?,
    };
    Ok(Some(Event {
        user,
        item,
        weight,
        ts,
    }))
}

/// A line whose user and item both read like column names is a header where none is
/// expected: said as such, not as two odd ids.
#[inline]
fn not_a_header(user: &RawId, item: &RawId) -> Result<(), LineError> {
    if let (RawId::Str(u), RawId::Str(i)) = (user, item) {
        if is_column_name(u.as_bytes()) && is_column_name(i.as_bytes()) {
            return Err(LineError {
                field: "user",
                message: format!(
                    "'{u}' and '{i}' look like column names: a header line where none is expected (set input.header = \"true\" or \"auto\" if the file starts with a header; remove header lines inside a file)"
                ),
            });
        }
    }
    Ok(())
}

/// The weight column: a finite number within ±[`MAX_ABS_WEIGHT`].
#[inline]
fn weight_field(f: &[u8]) -> Result<f32, LineError> {
    let w: f64 = number(f).ok_or_else(|| LineError {
        field: "weight",
        message: format!("'{}' is not a number", escape_bytes(f)),
    })?;
    if !w.is_finite() || w.abs() > MAX_ABS_WEIGHT {
        return Err(LineError {
            field: "weight",
            message: format!("{w} is not a finite number within ±{MAX_ABS_WEIGHT:e}"),
        });
    }
    Ok(w as f32)
}

/// The timestamp column: an integer, or a finite number truncated to one.
#[inline]
fn timestamp_field(f: &[u8]) -> Result<i64, LineError> {
    number::<i64>(f)
        .or_else(|| number::<f64>(f).filter(|x| x.is_finite()).map(|x| x as i64))
        .ok_or_else(|| LineError {
            field: "timestamp",
            message: format!("'{}' is not an integer", escape_bytes(f)),
        })
}

/// Decides whether a first line is a header (for `header = "auto"`): it is when a numeric
/// column does not parse as a number, or the id columns read like column names.
pub fn looks_like_header(line: &[u8], format: Format, cols: &Columns) -> bool {
    let mut fields = Fields::default();
    fields.split(line, format);
    let get = |i: usize| fields.get(line, i).map(clean);
    let not_num = |i: Option<usize>| {
        i.and_then(get)
            .map(|f| number::<f64>(f).is_none())
            .unwrap_or(false)
    };
    if not_num(cols.weight) || not_num(cols.ts) {
        return true;
    }
    let name = |i: usize| get(i).is_some_and(is_column_name);
    name(cols.user) && name(cols.item)
}

/// Column names that header lines use for id columns (compared ignoring ASCII case).
const COLUMN_NAMES: &[&str] = &[
    "user",
    "userid",
    "user_id",
    "uid",
    "users",
    "item",
    "itemid",
    "item_id",
    "iid",
    "items",
    "movie",
    "movieid",
    "movie_id",
    "product",
    "product_id",
    "track",
    "artist",
];

/// Whether a field reads like the name of an id column ("user", "itemId", …).
pub fn is_column_name(f: &[u8]) -> bool {
    f.len() <= 10
        && COLUMN_NAMES
            .iter()
            .any(|n| n.as_bytes().eq_ignore_ascii_case(f))
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Tsv => "tsv",
        Format::Csv => "csv",
        Format::Movielens => "movielens",
        Format::Whitespace => "whitespace",
        Format::Parquet => "parquet",
    }
}

#[cfg(test)]
mod tests;
