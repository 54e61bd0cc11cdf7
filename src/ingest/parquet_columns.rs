//! Parquet columns read a batch of rows at a time. The crate's record reader builds a row
//! object per row (a vector of (column name, value), the names copied each time), which made
//! Parquet input 4× slower than TSV; the column readers decode a batch of each column into
//! plain values instead. Values become the same [`Field`]s the record reader makes, through
//! the crate's own conversions, so every validation rule and message stays as it was.

use ::parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use ::parquet::data_type::DataType;
use ::parquet::errors::{ParquetError, Result};
use ::parquet::file::reader::RowGroupReader;
use ::parquet::record::Field;
use ::parquet::schema::types::{ColumnDescPtr, SchemaDescriptor};

/// Rows decoded per column at a time: large enough to amortise the per-call work, small
/// enough that a batch of every column stays in cache-sized memory whatever the row group.
pub const BATCH: usize = 8192;

/// The leaf column (index in the file's column chunks) of each flat top-level field of
/// `fields` (indices of the root's fields).
pub fn leaves(schema: &SchemaDescriptor, fields: &[usize]) -> Vec<usize> {
    fields
        .iter()
        .map(|&f| {
            (0..schema.num_columns())
                .find(|&leaf| schema.get_column_root_idx(leaf) == f)
                .expect("a flat field has one leaf column")
        })
        .collect()
}

/// One column chunk of a row group, read batch by batch.
pub struct Column {
    reader: ColumnReader,
    descr: ColumnDescPtr,
    def: Vec<i16>,
}

impl Column {
    /// The reader of leaf column `leaf` of row group `rg`.
    pub fn open(rg: &dyn RowGroupReader, leaf: usize) -> Result<Column> {
        Ok(Column {
            reader: rg.get_column_reader(leaf)?,
            descr: rg.metadata().column(leaf).column_descr_ptr(),
            def: Vec::with_capacity(BATCH),
        })
    }

    /// Appends the next `n` rows' values to `out` ([`Field::Null`] for a null); an error
    /// when the chunk ends before them.
    pub fn read(&mut self, n: usize, out: &mut Vec<Field>) -> Result<()> {
        let before = out.len();
        let (d, def) = (&self.descr, &mut self.def);
        match &mut self.reader {
            ColumnReader::BoolColumnReader(r) => {
                fill(r, d, n, def, out, |v| Ok(Field::convert_bool(d, v)))?
            }
            ColumnReader::Int32ColumnReader(r) => {
                fill(r, d, n, def, out, |v| Ok(Field::convert_int32(d, v)))?
            }
            ColumnReader::Int64ColumnReader(r) => {
                fill(r, d, n, def, out, |v| Ok(Field::convert_int64(d, v)))?
            }
            ColumnReader::Int96ColumnReader(r) => {
                fill(r, d, n, def, out, |v| Ok(Field::convert_int96(d, v)))?
            }
            ColumnReader::FloatColumnReader(r) => {
                fill(r, d, n, def, out, |v| Ok(Field::convert_float(d, v)))?
            }
            ColumnReader::DoubleColumnReader(r) => {
                fill(r, d, n, def, out, |v| Ok(Field::convert_double(d, v)))?
            }
            ColumnReader::ByteArrayColumnReader(r) => {
                fill(r, d, n, def, out, |v| Field::convert_byte_array(d, v))?
            }
            ColumnReader::FixedLenByteArrayColumnReader(r) => fill(r, d, n, def, out, |v| {
                Field::convert_byte_array(d, v.into())
            })?,
        }
        if out.len() - before != n {
            return Err(ParquetError::General(format!(
                "column {} holds {} of the row group's next {n} rows",
                self.descr.path(),
                out.len() - before
            )));
        }
        Ok(())
    }
}

/// Decodes up to `n` rows of a typed column into fields: `max_def_level` 0 (required) has a
/// value per row; otherwise a row whose definition level is below the maximum is null.
fn fill<T: DataType>(
    r: &mut ColumnReaderImpl<T>,
    descr: &ColumnDescPtr,
    n: usize,
    def: &mut Vec<i16>,
    out: &mut Vec<Field>,
    conv: impl Fn(T::T) -> Result<Field>,
) -> Result<()> {
    let max_def = descr.max_def_level();
    let mut values: Vec<T::T> = Vec::with_capacity(n);
    def.clear();
    let levels = (max_def > 0).then_some(&mut *def);
    r.read_records(n, levels, None, &mut values)?;
    let mut values = values.into_iter();
    if max_def == 0 {
        for v in values {
            out.push(conv(v)?);
        }
        return Ok(());
    }
    for &level in def.iter() {
        out.push(if level == max_def {
            let v = values
                .next()
                .ok_or_else(|| ParquetError::General("fewer values than levels".into()))?;
            conv(v)?
        } else {
            Field::Null
        });
    }
    Ok(())
}
