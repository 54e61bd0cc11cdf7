//! Parquet output of `recflow export --format parquet`: one file per table, flat columns that
//! pandas, polars, DuckDB, Spark or a warehouse read directly (schemas in README, "Export").
//!
//! Ids keep their kind: a side whose ids are all integers (that fit int64) is written as
//! `int64`, any other as UTF-8 `string`, and the recs/similar/buckets columns naming that side's
//! entities use the same type, so they join with the factor tables. Row groups hold about
//! [`VALUES_PER_ROW_GROUP`] values per column; compression is Snappy, which every reader has.

use crate::ids::RawId;
use ::parquet::basic::{Compression, IntType, LogicalType, Repetition, Type as Physical};
use ::parquet::data_type::{ByteArray, ByteArrayType, FloatType, Int32Type, Int64Type};
use ::parquet::file::properties::WriterProperties;
use ::parquet::file::writer::{SerializedColumnWriter, SerializedFileWriter};
use ::parquet::schema::types::{PrimitiveTypeBuilder, Type};
use std::path::Path;
use std::sync::Arc;

/// Values per column chunk aimed at: a row group of factors holds this many floats.
pub const VALUES_PER_ROW_GROUP: usize = 1 << 22;

/// How one side's ids are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    /// `int64`: every id is an integer ≤ `i64::MAX`.
    Int,
    /// UTF-8 `string`.
    Str,
}

impl IdKind {
    /// The kind that holds every id of `ids`.
    pub fn of(ids: &[RawId]) -> IdKind {
        let int = ids
            .iter()
            .all(|id| matches!(id, RawId::Num(n) if *n <= i64::MAX as u64));
        if int {
            IdKind::Int
        } else {
            IdKind::Str
        }
    }
}

/// One column's values (all columns of a table have the same number of rows).
pub enum ColumnData {
    /// Entity ids of one side, written as that side's [`IdKind`].
    Ids(IdKind, Vec<RawId>),
    /// `float`.
    F32(Vec<f32>),
    /// `int32`.
    I32(Vec<i32>),
    /// `int64` annotated unsigned (`uint64` in Arrow).
    U64(Vec<u64>),
    /// `list<float>` of `width` elements per row, row-major.
    F32List(usize, Vec<f32>),
}

impl ColumnData {
    fn rows(&self) -> usize {
        match self {
            ColumnData::Ids(_, v) => v.len(),
            ColumnData::F32(v) => v.len(),
            ColumnData::I32(v) => v.len(),
            ColumnData::U64(v) => v.len(),
            ColumnData::F32List(w, v) => v.len().checked_div(*w).unwrap_or(0),
        }
    }

    fn width(&self) -> usize {
        match self {
            ColumnData::F32List(w, _) => (*w).max(1),
            _ => 1,
        }
    }

    fn schema(&self, name: &str) -> ::parquet::errors::Result<Type> {
        fn prim(p: Physical, name: &str) -> PrimitiveTypeBuilder<'_> {
            Type::primitive_type_builder(name, p).with_repetition(Repetition::REQUIRED)
        }
        match self {
            ColumnData::Ids(IdKind::Int, _) => prim(Physical::INT64, name).build(),
            ColumnData::Ids(IdKind::Str, _) => prim(Physical::BYTE_ARRAY, name)
                .with_logical_type(Some(LogicalType::String))
                .build(),
            ColumnData::F32(_) => prim(Physical::FLOAT, name).build(),
            ColumnData::I32(_) => prim(Physical::INT32, name).build(),
            ColumnData::U64(_) => prim(Physical::INT64, name)
                .with_logical_type(Some(LogicalType::Integer(IntType {
                    bit_width: 64,
                    is_signed: false,
                })))
                .build(),
            // The standard three-level list, as Arrow writes it.
            ColumnData::F32List(..) => {
                let element = prim(Physical::FLOAT, "element").build()?;
                let list = Type::group_type_builder("list")
                    .with_repetition(Repetition::REPEATED)
                    .with_fields(vec![Arc::new(element)])
                    .build()?;
                Type::group_type_builder(name)
                    .with_repetition(Repetition::REQUIRED)
                    .with_logical_type(Some(LogicalType::List))
                    .with_fields(vec![Arc::new(list)])
                    .build()
            }
        }
    }

    /// Writes rows `a..b` of this column into `w`.
    fn write(&self, w: &mut SerializedColumnWriter<'_>, a: usize, b: usize) -> Result<(), String> {
        let r = match self {
            ColumnData::Ids(IdKind::Int, ids) => {
                let mut v = Vec::with_capacity(b - a);
                for id in &ids[a..b] {
                    match id {
                        RawId::Num(n) if *n <= i64::MAX as u64 => v.push(*n as i64),
                        other => return Err(format!("id '{other}' is not an int64 id")),
                    }
                }
                w.typed::<Int64Type>().write_batch(&v, None, None)
            }
            ColumnData::Ids(IdKind::Str, ids) => {
                let v: Vec<ByteArray> = ids[a..b]
                    .iter()
                    .map(|id| ByteArray::from(id.to_string().into_bytes()))
                    .collect();
                w.typed::<ByteArrayType>().write_batch(&v, None, None)
            }
            ColumnData::F32(v) => w.typed::<FloatType>().write_batch(&v[a..b], None, None),
            ColumnData::I32(v) => w.typed::<Int32Type>().write_batch(&v[a..b], None, None),
            ColumnData::U64(v) => {
                let v: Vec<i64> = v[a..b].iter().map(|&x| x as i64).collect();
                w.typed::<Int64Type>().write_batch(&v, None, None)
            }
            ColumnData::F32List(width, v) => {
                let width = *width;
                let n = b - a;
                // Definition 1: an element; 0: an empty list. Repetition 0 starts a row.
                let (def, rep): (Vec<i16>, Vec<i16>) = if width == 0 {
                    (vec![0; n], vec![0; n])
                } else {
                    let rep = (0..n * width).map(|i| (i % width != 0) as i16).collect();
                    (vec![1; n * width], rep)
                };
                let values = &v[a * width..b * width];
                w.typed::<FloatType>()
                    .write_batch(values, Some(&def), Some(&rep))
            }
        };
        r.map(|_| ()).map_err(|e| e.to_string())
    }
}

/// A table to write: named columns of equal length.
pub struct Table {
    /// Name of the Parquet schema (the message type).
    pub name: &'static str,
    /// The columns, in order.
    pub columns: Vec<(&'static str, ColumnData)>,
}

/// Writes `table` as one Parquet file at `path`, in row groups of about
/// [`VALUES_PER_ROW_GROUP`] values per column.
pub fn write_table(path: &Path, table: &Table) -> Result<(), String> {
    let widest = table
        .columns
        .iter()
        .map(|(_, c)| c.width())
        .max()
        .unwrap_or(1);
    write_table_grouped(path, table, (VALUES_PER_ROW_GROUP / widest).max(1))
}

/// Writes `table` as one Parquet file at `path`, `per_group` rows to a row group.
pub fn write_table_grouped(path: &Path, table: &Table, per_group: usize) -> Result<(), String> {
    let per_group = per_group.max(1);
    let name = path.display();
    let fail = |e: &dyn std::fmt::Display| format!("cannot write {name}: {e}");
    let rows = table.columns.first().map_or(0, |(_, c)| c.rows());
    if let Some((col, c)) = table.columns.iter().find(|(_, c)| c.rows() != rows) {
        return Err(fail(&format!(
            "column {col} has {} rows, not {rows}",
            c.rows()
        )));
    }
    let fields = table
        .columns
        .iter()
        .map(|(n, c)| c.schema(n).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(&e))?;
    let schema = Type::group_type_builder(table.name)
        .with_fields(fields)
        .build()
        .map_err(|e| fail(&e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(format!("recflow {}", env!("CARGO_PKG_VERSION")))
        .build();
    let file = std::fs::File::create(path).map_err(|e| format!("cannot create {name}: {e}"))?;
    let mut w =
        SerializedFileWriter::new(file, Arc::new(schema), Arc::new(props)).map_err(|e| fail(&e))?;
    let mut a = 0;
    // An empty table still gets one (empty) row group, so readers see its schema and 0 rows.
    while a < rows || (a == 0 && rows == 0) {
        let b = (a + per_group).min(rows);
        let mut rg = w.next_row_group().map_err(|e| fail(&e))?;
        for (_, c) in &table.columns {
            let mut cw = rg
                .next_column()
                .map_err(|e| fail(&e))?
                .ok_or_else(|| fail(&"fewer schema columns than data columns"))?;
            c.write(&mut cw, a, b).map_err(|e| fail(&e))?;
            cw.close().map_err(|e| fail(&e))?;
        }
        rg.close().map_err(|e| fail(&e))?;
        if rows == 0 {
            break;
        }
        a = b;
    }
    w.close().map_err(|e| fail(&e))?;
    Ok(())
}

/// The factor table of one side: `user` or `item` (id), `factors` (`list<float>`).
pub fn factors_table(side: &'static str, ids: Vec<RawId>, d: usize, f: Vec<f32>) -> Table {
    let (name, col) = if side == "users" {
        ("user_factors", "user")
    } else {
        ("item_factors", "item")
    };
    Table {
        name,
        columns: vec![
            (col, ColumnData::Ids(IdKind::of(&ids), ids)),
            ("factors", ColumnData::F32List(d, f)),
        ],
    }
}

/// One line of a part file: (file, 1-based line number, text).
pub type PartLine<'a> = (&'a str, usize, &'a str);

fn fields<'a, const N: usize>(l: &PartLine<'a>, names: [&str; N]) -> Result<[&'a str; N], String> {
    let (file, ln, text) = *l;
    let mut it = text.split('\t');
    let mut out = [""; N];
    for (o, n) in out.iter_mut().zip(names) {
        *o = it
            .next()
            .ok_or_else(|| format!("{file}:{ln}: missing field '{n}'"))?;
    }
    Ok(out)
}

fn num<T: std::str::FromStr>(s: &str, l: &PartLine<'_>, what: &str) -> Result<T, String> {
    s.parse()
        .map_err(|_| format!("{}:{}: field '{what}' is not a number: '{s}'", l.0, l.1))
}

fn raw_id(s: &str, l: &PartLine<'_>) -> Result<RawId, String> {
    RawId::parse(s.as_bytes()).map_err(|e| format!("{}:{}: bad id '{s}': {e}", l.0, l.1))
}

/// `recs` (`user item score rank`) or `similar` (`item other score rank`) lines as a table;
/// `first` and `second` are the id kinds of the two id columns' sides.
pub fn pairs_table(
    lines: &[PartLine<'_>],
    sub: &str,
    first: IdKind,
    second: IdKind,
) -> Result<Table, String> {
    let (name, a_name, b_name) = if sub == "recs" {
        ("recs", "user", "item")
    } else {
        ("similar", "item", "other")
    };
    let n = lines.len();
    let (mut a, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut score, mut rank) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for l in lines {
        let [x, y, s, r] = fields(l, [a_name, b_name, "score", "rank"])?;
        a.push(raw_id(x, l)?);
        b.push(raw_id(y, l)?);
        score.push(num::<f32>(s, l, "score")?);
        rank.push(num::<i32>(r, l, "rank")?);
    }
    Ok(Table {
        name,
        columns: vec![
            (a_name, ColumnData::Ids(first, a)),
            (b_name, ColumnData::Ids(second, b)),
            ("score", ColumnData::F32(score)),
            ("rank", ColumnData::I32(rank)),
        ],
    })
}

/// `buckets` (`table code item`) lines as a table.
pub fn buckets_table(lines: &[PartLine<'_>], items: IdKind) -> Result<Table, String> {
    let n = lines.len();
    let (mut table, mut code, mut item) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for l in lines {
        let [t, c, i] = fields(l, ["table", "code", "item"])?;
        table.push(num::<i32>(t, l, "table")?);
        code.push(num::<u64>(c, l, "code")?);
        item.push(raw_id(i, l)?);
    }
    Ok(Table {
        name: "buckets",
        columns: vec![
            ("table", ColumnData::I32(table)),
            ("code", ColumnData::U64(code)),
            ("item", ColumnData::Ids(items, item)),
        ],
    })
}
