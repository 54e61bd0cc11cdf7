//! Exports a published model for other tools: TSV, NumPy `.npy` or Parquet
//! ([`crate::export_parquet`]: `users.parquet`, `items.parquet`, `recs.parquet`,
//! `similar.parquet`, `buckets.parquet`).
//!
//! Factors: `users.tsv` / `items.tsv` (`id f1 … fd`, sorted by id), or `users.npy` /
//! `items.npy` (float32, rows sorted by id) with `user_ids.txt` / `item_ids.txt` (row → id).
//! Outputs, when the version has them, as one file each (all part files merged, their
//! checksums verified against the manifest):
//! - TSV: `recs.tsv` (`user item score rank`), `similar.tsv` (`item other cosine rank`),
//!   `buckets.tsv` (`table code item`), ordered by first id (recs, similar) or by (table, code)
//!   so that the files do not depend on the worker layout;
//! - NPY: `recs.npy` (int64 `n × 3`: user row, item row, rank) with `recs_scores.npy` (float32),
//!   `similar.npy` (int64 `n × 3`: item row, other row, rank) with `similar_scores.npy`, and
//!   `buckets.npy` (uint64 `n × 3`: table, code, item row); rows index `users.npy` /
//!   `items.npy` and the id lists, which are always written in NPY mode.

use crate::export_parquet as pq;
use crate::ids::RawId;
use crate::store;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// Output format of `recflow export`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// `id<TAB>f1<TAB>…<TAB>fd`, one line per entity, sorted by id.
    Tsv,
    /// `users.npy` / `items.npy` (float32, rows sorted by id) plus `user_ids.txt` / `item_ids.txt`.
    Npy,
    /// One Parquet file per table (`users.parquet`, `recs.parquet`, …; schemas in README).
    Parquet,
}

/// Rows of one side sorted by raw id.
pub fn sorted_side(
    dir: &Path,
    manifest: &store::Manifest,
    side: &str,
) -> Result<(Vec<RawId>, Vec<f32>, usize), String> {
    let (ids, factors, d) = store::load_side(dir, manifest, side)?;
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by(|&a, &b| ids[a].cmp(&ids[b]));
    let mut f = Vec::with_capacity(factors.len());
    for &r in &order {
        f.extend_from_slice(&factors[r * d..(r + 1) * d]);
    }
    let ids = order.iter().map(|&r| ids[r].clone()).collect();
    Ok((ids, f, d))
}

fn create(path: &Path) -> Result<std::io::BufWriter<std::fs::File>, String> {
    std::fs::File::create(path)
        .map(|f| std::io::BufWriter::with_capacity(1 << 20, f))
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// A little-endian element type of an `.npy` file.
pub trait NpyElem: Copy {
    /// NumPy's `descr` (`'<f4'`, `'<i8'`, `'<u8'`).
    const DESCR: &'static str;
    /// Little-endian bytes.
    fn put(self, out: &mut Vec<u8>);
}

impl NpyElem for f32 {
    const DESCR: &'static str = "<f4";
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl NpyElem for i64 {
    const DESCR: &'static str = "<i8";
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl NpyElem for u64 {
    const DESCR: &'static str = "<u8";
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

/// Writes a row-major array of shape `shape` (one or two dimensions) as a version-1.0 `.npy`.
pub fn write_npy_array<T: NpyElem>(path: &Path, shape: &[usize], data: &[T]) -> Result<(), String> {
    let dims = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {dims}, }}",
        T::DESCR
    );
    // Magic (6) + version (2) + length (2) + header + '\n' must be a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut w = create(path)?;
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 8);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for &x in data {
        x.put(&mut out);
    }
    w.write_all(&out)
        .and_then(|_| w.flush())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Writes a row-major f32 matrix as a version-1.0 `.npy` file.
pub fn write_npy(path: &Path, rows: usize, cols: usize, data: &[f32]) -> Result<(), String> {
    write_npy_array(path, &[rows, cols], data)
}

/// The part files of `sub/` (`recs`, `similar`, `buckets`) in part order, read and checked
/// against the manifest's sizes and checksums, and decompressed (either layout:
/// [`store::parts`]).
pub fn read_parts(
    dir: &Path,
    manifest: &store::Manifest,
    sub: &str,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    for f in &manifest.records_under(sub) {
        let bytes = store::parts::read(dir, f)?;
        out.push((dir.join(&f.path).display().to_string(), bytes));
    }
    Ok(out)
}

/// Row of each id (its position in the id-sorted export).
fn row_map(ids: &[RawId]) -> HashMap<String, i64> {
    ids.iter()
        .enumerate()
        .map(|(r, id)| (id.to_string(), r as i64))
        .collect()
}

fn field<'a>(
    it: &mut impl Iterator<Item = &'a str>,
    file: &str,
    line: usize,
    what: &str,
) -> Result<&'a str, String> {
    it.next()
        .ok_or_else(|| format!("{file}:{line}: missing field '{what}'"))
}

fn lookup(
    map: &HashMap<String, i64>,
    id: &str,
    file: &str,
    line: usize,
    side: &str,
) -> Result<i64, String> {
    map.get(id)
        .copied()
        .ok_or_else(|| format!("{file}:{line}: {side} '{id}' is not in the model's {side}s"))
}

fn parse_num<T: std::str::FromStr>(
    s: &str,
    file: &str,
    line: usize,
    what: &str,
) -> Result<T, String> {
    s.parse()
        .map_err(|_| format!("{file}:{line}: field '{what}' is not a number: '{s}'"))
}

/// One line of a part file: (file, 1-based line number, text).
type Line<'a> = (&'a str, usize, &'a str);

/// Sort key of a line, independent of the worker layout.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum LineKey {
    /// recs / similar: the first id (lines of one id keep their rank order).
    Id(RawId),
    /// buckets: (table, code) (items of one bucket keep their order).
    Bucket(u64, u64),
}

/// The lines of all parts of `sub`, ordered so that the result does not depend on how many
/// workers wrote them: recs and similar by their first id, buckets by (table, code); ties keep
/// part order, which is rank order (recs, similar) or catalogue order (bucket members).
fn ordered_lines<'a>(parts: &'a [(String, Vec<u8>)], sub: &str) -> Result<Vec<Line<'a>>, String> {
    let mut keyed = Vec::new();
    for (file, bytes) in parts {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("{file}: not UTF-8: {e}"))?;
        for (n, l) in text.lines().enumerate() {
            let ln = n + 1;
            let mut it = l.split('\t');
            let key = if sub == "buckets" {
                let t = parse_num(field(&mut it, file, ln, "table")?, file, ln, "table")?;
                let c = parse_num(field(&mut it, file, ln, "code")?, file, ln, "code")?;
                LineKey::Bucket(t, c)
            } else {
                let id = field(&mut it, file, ln, "id")?;
                LineKey::Id(
                    RawId::parse(id.as_bytes())
                        .map_err(|e| format!("{file}:{ln}: bad id '{id}': {e}"))?,
                )
            };
            keyed.push((key, (file.as_str(), ln, l)));
        }
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(keyed.into_iter().map(|(_, l)| l).collect())
}

/// Writes the lines of `sub` as one TSV file; returns its path.
fn write_tsv(lines: &[Line<'_>], sub: &str, out: &Path) -> Result<String, String> {
    let path = out.join(format!("{sub}.tsv"));
    let mut w = create(&path)?;
    for (_, _, l) in lines {
        w.write_all(l.as_bytes())
            .and_then(|_| w.write_all(b"\n"))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    w.flush()
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path.display().to_string())
}

/// `a b score rank` lines (recs: user item; similar: item other) as index and score arrays.
fn pairs_npy(
    lines: &[Line<'_>],
    first: (&HashMap<String, i64>, &str),
    second: (&HashMap<String, i64>, &str),
) -> Result<(Vec<i64>, Vec<f32>), String> {
    let mut idx = Vec::with_capacity(lines.len() * 3);
    let mut scores = Vec::with_capacity(lines.len());
    for &(file, ln, l) in lines {
        let mut it = l.split('\t');
        let a = field(&mut it, file, ln, first.1)?;
        let b = field(&mut it, file, ln, second.1)?;
        let s = field(&mut it, file, ln, "score")?;
        let r = field(&mut it, file, ln, "rank")?;
        idx.push(lookup(first.0, a, file, ln, first.1)?);
        idx.push(lookup(second.0, b, file, ln, second.1)?);
        idx.push(parse_num::<i64>(r, file, ln, "rank")?);
        scores.push(parse_num::<f32>(s, file, ln, "score")?);
    }
    Ok((idx, scores))
}

/// `table code item` lines as a `n × 3` array (item as its row).
fn buckets_npy(lines: &[Line<'_>], items: &HashMap<String, i64>) -> Result<Vec<u64>, String> {
    let mut out = Vec::with_capacity(lines.len() * 3);
    for &(file, ln, l) in lines {
        let mut it = l.split('\t');
        let t = field(&mut it, file, ln, "table")?;
        let c = field(&mut it, file, ln, "code")?;
        let i = field(&mut it, file, ln, "item")?;
        out.push(parse_num::<u64>(t, file, ln, "table")?);
        out.push(parse_num::<u64>(c, file, ln, "code")?);
        out.push(lookup(items, i, file, ln, "item")? as u64);
    }
    Ok(out)
}

/// `recflow export`.
pub fn export(
    store_path: &Path,
    version: Option<&str>,
    out: &Path,
    format: ExportFormat,
) -> Result<Vec<String>, String> {
    let (dir, manifest) = store::open(store_path, version)?;
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut written = Vec::new();
    let mut rows = Vec::new();
    let mut kinds = Vec::new();
    for (side, singular) in [("users", "user"), ("items", "item")] {
        let (ids, f, d) = sorted_side(&dir, &manifest, side)?;
        match format {
            ExportFormat::Tsv => {
                let path = out.join(format!("{side}.tsv"));
                write_factors_tsv(&path, &ids, &f, d)?;
                written.push(path.display().to_string());
            }
            ExportFormat::Npy => {
                let path = out.join(format!("{side}.npy"));
                write_npy(&path, ids.len(), d, &f)?;
                let idp = out.join(format!("{singular}_ids.txt"));
                write_ids(&idp, &ids)?;
                written.push(path.display().to_string());
                written.push(idp.display().to_string());
            }
            ExportFormat::Parquet => {
                let path = out.join(format!("{side}.parquet"));
                kinds.push(pq::IdKind::of(&ids));
                rows.push(HashMap::new()); // rows are not needed: ids are written as ids
                pq::write_table(&path, &pq::factors_table(side, ids, d, f))?;
                written.push(path.display().to_string());
                continue;
            }
        }
        rows.push(row_map(&ids));
    }
    let rows = (&rows[0], &rows[1]);
    for sub in ["recs", "similar", "buckets"] {
        let parts = read_parts(&dir, &manifest, sub)?;
        if parts.is_empty() {
            continue;
        }
        let lines = ordered_lines(&parts, sub)?;
        match format {
            ExportFormat::Tsv => written.push(write_tsv(&lines, sub, out)?),
            ExportFormat::Parquet => written.push(write_lines_parquet(&lines, sub, out, &kinds)?),
            ExportFormat::Npy => written.extend(write_lines_npy(&lines, sub, out, rows)?),
        }
    }
    Ok(written)
}

/// `id<TAB>f1<TAB>…<TAB>fd` per entity (rows of `f`, `d` wide, in the order of `ids`).
fn write_factors_tsv(path: &Path, ids: &[RawId], f: &[f32], d: usize) -> Result<(), String> {
    let mut w = create(path)?;
    let mut line = String::new();
    for (r, id) in ids.iter().enumerate() {
        use std::fmt::Write as _;
        line.clear();
        let _ = write!(line, "{id}");
        for x in &f[r * d..(r + 1) * d] {
            let _ = write!(line, "\t{x}");
        }
        line.push('\n');
        w.write_all(line.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    w.flush()
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// One id per line: the row → id list beside an `.npy` file.
fn write_ids(path: &Path, ids: &[RawId]) -> Result<(), String> {
    let mut w = create(path)?;
    for id in ids {
        writeln!(w, "{id}").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    w.flush()
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// `SUB.parquet` of one output; `kinds` are the (users, items) id kinds. Returns its path.
fn write_lines_parquet(
    lines: &[Line<'_>],
    sub: &str,
    out: &Path,
    kinds: &[pq::IdKind],
) -> Result<String, String> {
    let table = match sub {
        "buckets" => pq::buckets_table(lines, kinds[1])?,
        "recs" => pq::pairs_table(lines, sub, kinds[0], kinds[1])?,
        _ => pq::pairs_table(lines, sub, kinds[1], kinds[1])?,
    };
    let p = out.join(format!("{sub}.parquet"));
    pq::write_table(&p, &table)?;
    Ok(p.display().to_string())
}

/// `SUB.npy` (and for recs and similar `SUB_scores.npy`) of one output, ids as rows of
/// `rows` (users, items). Returns the paths written.
fn write_lines_npy(
    lines: &[Line<'_>],
    sub: &str,
    out: &Path,
    (users, items): (&HashMap<String, i64>, &HashMap<String, i64>),
) -> Result<Vec<String>, String> {
    if sub == "buckets" {
        let b = buckets_npy(lines, items)?;
        let p = out.join("buckets.npy");
        write_npy_array(&p, &[lines.len(), 3], &b)?;
        return Ok(vec![p.display().to_string()]);
    }
    let (a, b) = if sub == "recs" {
        ((users, "user"), (items, "item"))
    } else {
        ((items, "item"), (items, "other"))
    };
    let (idx, scores) = pairs_npy(lines, a, b)?;
    let p = out.join(format!("{sub}.npy"));
    write_npy_array(&p, &[scores.len(), 3], &idx)?;
    let q = out.join(format!("{sub}_scores.npy"));
    write_npy_array(&q, &[scores.len()], &scores)?;
    Ok(vec![p.display().to_string(), q.display().to_string()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(bytes: &[u8]) -> String {
        let n = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + n) % 64, 0);
        String::from_utf8(bytes[10..10 + n].to_vec()).unwrap()
    }

    #[test]
    fn npy_headers_for_each_type_and_shape() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        write_npy_array(&p, &[3], &[1.0f32, 2.0, 3.0]).unwrap();
        let b = std::fs::read(&p).unwrap();
        assert!(header(&b).starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }"));
        assert_eq!(b.len() - b.len() / 64 * 64, 12);
        write_npy_array(&p, &[2, 3], &[1i64, -2, 3, 4, 5, 6]).unwrap();
        let b = std::fs::read(&p).unwrap();
        assert!(header(&b).contains("'descr': '<i8'") && header(&b).contains("(2, 3)"));
        let data = &b[b.len() - 48..];
        assert_eq!(i64::from_le_bytes(data[8..16].try_into().unwrap()), -2);
        write_npy_array(&p, &[1, 3], &[u64::MAX, 0, 1]).unwrap();
        assert!(header(&std::fs::read(&p).unwrap()).contains("'<u8'"));
    }

    #[test]
    fn recs_and_buckets_map_ids_to_rows_and_name_bad_lines() {
        let users = row_map(&[RawId::Num(5), RawId::Num(9)]);
        let items = row_map(&[RawId::Num(1), RawId::Num(2), RawId::Num(3)]);
        let parts = vec![
            ("p0".to_string(), b"9\t3\t0.5\t1\n9\t1\t0.25\t2\n".to_vec()),
            ("p1".to_string(), b"5\t2\t1.5\t1\n".to_vec()),
        ];
        // Ordered by user id whatever the part order; ranks stay in order within a user.
        let lines = ordered_lines(&parts, "recs").unwrap();
        assert_eq!(
            lines.iter().map(|l| (l.0, l.1)).collect::<Vec<_>>(),
            vec![("p1", 1), ("p0", 1), ("p0", 2)]
        );
        let (idx, scores) = pairs_npy(&lines, (&users, "user"), (&items, "item")).unwrap();
        assert_eq!(idx, vec![0, 1, 1, 1, 2, 1, 1, 0, 2]);
        assert_eq!(scores, vec![1.5, 0.5, 0.25]);
        let bad = vec![("p2".to_string(), b"5\t7\t1.0\t1\n".to_vec())];
        let lines = ordered_lines(&bad, "recs").unwrap();
        let e = pairs_npy(&lines, (&users, "user"), (&items, "item")).unwrap_err();
        assert!(e.contains("p2:1") && e.contains("item '7'"), "{e}");
        let b = vec![
            ("b1".to_string(), b"3\t4\t1\n".to_vec()),
            ("b0".to_string(), b"0\t17\t2\n0\t17\t1\n".to_vec()),
        ];
        let lines = ordered_lines(&b, "buckets").unwrap();
        assert_eq!(
            buckets_npy(&lines, &items).unwrap(),
            vec![0, 17, 1, 0, 17, 0, 3, 4, 0]
        );
        let short = vec![("b1".to_string(), b"0\n".to_vec())];
        assert!(ordered_lines(&short, "buckets")
            .unwrap_err()
            .contains("b1:1: missing field 'code'"));
    }
}
