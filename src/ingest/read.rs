//! Parallel input: every worker reads a disjoint byte range of every plain file, whole
//! compressed files in turn (a gzip or zstd stream cannot be entered mid-way: [`super::compress`]),
//! and whole row groups of Parquet files in turn ([`super::parquet`]).
//!
//! A file of `n` bytes is cut at `n·k/parts`; a line belongs to the part in which its first
//! byte lies, so each line is read exactly once whatever the number of parts. Line numbers
//! for error messages are recovered only on the error path (by counting newlines before it).

use super::compress::{self, Codec};
use super::parquet;
use super::parse::{looks_like_header, number_field, parse_line, Columns, Event, Fields};
use super::rows::{bad_row, keep_event};
pub use super::rows::{ReadStats, MAX_SAMPLES};
use super::weight::{self, WeightChoice};
use crate::job::{Format, Header, Input, WeightColumn};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Longest accepted input line in bytes: a longer one is an error (or a counted skip), never
/// an unbounded buffer (a binary file, or a file with `\r`-only line ends, is one huge line).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// The UTF-8 byte order mark some tools put at the start of a text file; it is dropped.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Expands `input.path`'s files, directories (their regular, non-hidden files) and globs,
/// sorted.
pub fn list_files(paths: &[String]) -> Result<Vec<PathBuf>, String> {
    list_files_of("input.path", paths)
}

/// [`list_files`] for the paths of job key `key` (`eval.test`, …), which its errors name.
pub fn list_files_of(key: &str, paths: &[String]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        let path = Path::new(p);
        if p.contains(['*', '?', '[']) {
            let mut hits: Vec<PathBuf> = glob::glob(p)
                .map_err(|e| format!("{key} '{p}': bad pattern: {e}"))?
                .filter_map(Result::ok)
                .filter(|x| x.is_file())
                .collect();
            if hits.is_empty() {
                return Err(format!("{key} '{p}': the pattern matches no file"));
            }
            hits.sort();
            out.extend(hits);
        } else if path.is_dir() {
            let mut hits: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| format!("{key} '{p}': cannot list directory: {e}"))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|x| {
                    x.is_file()
                        && !x
                            .file_name()
                            .map(|n| n.to_string_lossy().starts_with('.'))
                            .unwrap_or(true)
                })
                .collect();
            if hits.is_empty() {
                return Err(format!("{key} '{p}': the directory holds no file"));
            }
            hits.sort();
            out.extend(hits);
        } else if path.is_file() {
            out.push(path.to_path_buf());
        } else if path.exists() {
            return Err(format!(
                "{key} '{p}': not a regular file or directory (a device, socket or pipe cannot be split among workers)"
            ));
        } else {
            return Err(format!(
                "{key} '{p}': no such file or directory (relative paths written in a job file resolve against the job file's directory; paths given with --set, against the working directory)"
            ));
        }
    }
    Ok(out)
}

/// Lines of a file's head looked at to find its header and weight column.
const HEAD_LINES: usize = 64;

/// Reads up to [`HEAD_LINES`] first lines of a file (within its first MiB), without line
/// ends or a byte order mark: for header detection, column names and the weight column.
fn head_lines(path: &Path, codec: Codec) -> Result<Vec<Vec<u8>>, String> {
    // A compressed file's head is that of its text.
    let mut r = compress::open(path, codec)?.take(1 << 20);
    let mut out = Vec::new();
    while out.len() < HEAD_LINES {
        let mut line = Vec::new();
        let k = r
            .read_until(b'\n', &mut line)
            .map_err(|e| compress::read_error(path, codec, out.len() as u64 + 1, &e))?;
        if k == 0 {
            break;
        }
        while line.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
            line.pop();
        }
        out.push(line);
    }
    if out.is_empty() {
        out.push(Vec::new());
    }
    // `\r\n` ends are accepted; a `\r` inside the first line means `\r`-only line ends (old
    // Mac tools), which would otherwise read as one huge line (or one header line). Binary
    // files (NUL bytes, not UTF-8) get the line-length message instead.
    let first = &out[0];
    let text = !first.contains(&0) && std::str::from_utf8(first).is_ok();
    if text && first.contains(&b'\r') {
        return Err(format!(
            "{}:1: the line holds a carriage return (\\r) that does not end it: the file seems to use \\r-only line ends; convert them to \\n or \\r\\n (e.g. tr '\\r' '\\n')",
            path.display()
        ));
    }
    if out[0].starts_with(BOM) {
        out[0].drain(..BOM.len());
    }
    Ok(out)
}

/// Resolves one file's columns: whether its first line is a header, and where its weights
/// come from (see [`super::weight`]).
fn file_columns(
    path: &Path,
    codec: Codec,
    input: &Input,
) -> Result<(Columns, bool, WeightChoice), String> {
    let name = path.display();
    let head = head_lines(path, codec)?;
    let explicit = input.weight.column();
    let probe_cols = Columns::resolve(
        &input.user,
        &input.item,
        explicit,
        input.timestamp.as_ref(),
        None,
    )
    .and_then(|c| c.with_removed(input.removed.as_ref(), None));
    let has_header = match input.header {
        Header::True => true,
        Header::False => false,
        Header::Auto => match &probe_cols {
            Ok(c) => {
                looks_like_header(&head[0], input.format, c)
                    || (input.weight == WeightColumn::Auto
                        && names_a_weight(&head, input.format, c))
            }
            Err(_) => true, // names are used: there must be a header
        },
    };
    let names = has_header.then(|| {
        let mut fields = Fields::default();
        fields.split(&head[0], input.format);
        (0..fields.len())
            .filter_map(|i| fields.get(&head[0], i))
            .map(|f| {
                String::from_utf8_lossy(f)
                    .trim()
                    .trim_matches('"')
                    .to_string()
            })
            .collect::<Vec<String>>()
    });
    let cols = Columns::resolve(
        &input.user,
        &input.item,
        None,
        input.timestamp.as_ref(),
        names.as_deref(),
    )
    .and_then(|c| c.with_removed(input.removed.as_ref(), names.as_deref()))
    .map_err(|e| format!("{name}: {e}"))?;
    let data = &head[has_header as usize..];
    let weight = weight::choose(&input.weight, input.format, &cols, names.as_deref(), data)
        .map_err(|e| format!("{name}: {e}"))?;
    let cols = Columns {
        weight: weight.column,
        ..cols
    };
    Ok((cols, has_header, weight))
}

/// With the weight column to be found: a first line whose candidate weight field is not a
/// number while the next line's is, is a header (e.g. `customer,product,qty`).
fn names_a_weight(head: &[Vec<u8>], format: Format, cols: &Columns) -> bool {
    let c = weight::candidate(cols);
    let num = |line: &Vec<u8>| {
        let mut fields = Fields::default();
        fields.split(line, format);
        fields.get(line, c).and_then(number_field).is_some()
    };
    head.len() >= 2 && !num(&head[0]) && num(&head[1])
}

/// 1-based number of the line starting at byte `offset`.
fn line_number(path: &Path, offset: u64) -> u64 {
    let Ok(f) = File::open(path) else { return 0 };
    let mut r = BufReader::new(f).take(offset);
    let mut buf = [0u8; 1 << 16];
    let mut n = 1;
    while let Ok(k) = r.read(&mut buf) {
        if k == 0 {
            break;
        }
        n += buf[..k].iter().filter(|&&b| b == b'\n').count() as u64;
    }
    n
}

/// One file being read: what every line of it is parsed with.
struct FileRead<'a> {
    path: &'a Path,
    input: &'a Input,
    cols: Columns,
    has_header: bool,
    codec: Codec,
}

/// Reads part `part` of `parts` of every file, calling `sink` for each kept event: a byte
/// range of each plain file, the whole of every `parts`-th compressed file, and every
/// `parts`-th row group of the Parquet files (counted over all of them, in listing order).
pub fn read_part(
    files: &[PathBuf],
    input: &Input,
    part: usize,
    parts: usize,
    mut sink: impl FnMut(Event),
) -> Result<ReadStats, String> {
    let started = std::time::Instant::now();
    let mut st = ReadStats::default();
    let mut compressed = 0;
    let mut row_groups = 0;
    for path in files {
        if parquet::is_parquet(path, input.format)? {
            let file = parquet::ParquetInput::open(path, input)?;
            if !st.weights.contains(&file.weight.described) {
                st.weights.push(file.weight.described.clone());
            }
            let first = row_groups;
            row_groups += file.row_groups();
            let mine: Vec<usize> = (0..file.row_groups())
                .filter(|g| compress::owner(first + g, parts) == part)
                .collect();
            file.read_row_groups(&mine, input, &mut st, &mut sink)?;
            continue;
        }
        let codec = Codec::detect(path)?;
        if codec != Codec::Plain {
            compressed += 1;
            if compress::owner(compressed - 1, parts) != part {
                continue;
            }
        }
        let (cols, has_header, weight) = file_columns(path, codec, input)?;
        if !st.weights.contains(&weight.described) {
            st.weights.push(weight.described);
        }
        let f = FileRead {
            path,
            input,
            cols,
            has_header,
            codec,
        };
        if codec == Codec::Plain {
            read_range(&f, part, parts, &mut st, &mut sink)?;
        } else {
            let mut r = compress::open(path, codec)?;
            read_lines(&f, &mut r, 0, u64::MAX, &mut st, &mut sink)?;
        }
    }
    st.secs = started.elapsed().as_secs_f64();
    if st.bytes > 0 && st.secs > 0.0 {
        st.min_mb_per_sec_per_worker = st.bytes as f64 / st.secs / 1e6;
    }
    Ok(st)
}

/// Reads the lines of a plain file that start in its part's byte range.
fn read_range(
    f: &FileRead,
    part: usize,
    parts: usize,
    st: &mut ReadStats,
    sink: &mut impl FnMut(Event),
) -> Result<(), String> {
    let name = f.path.display();
    let len = std::fs::metadata(f.path)
        .map_err(|e| format!("{name}: cannot stat: {e}"))?
        .len();
    let start = len * part as u64 / parts as u64;
    let end = len * (part as u64 + 1) / parts as u64;
    if start >= end {
        return Ok(());
    }
    let mut file = File::open(f.path).map_err(|e| format!("{name}: cannot open: {e}"))?;
    if start > 0 {
        file.seek(SeekFrom::Start(start - 1))
            .map_err(|e| format!("{name}: seek: {e}"))?;
    }
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut pos = start;
    if start > 0 {
        // The line that began before `start` is another part's; skipped without buffering
        // (it may be arbitrarily long). k counts the byte at start-1.
        let k = r
            .skip_until(b'\n')
            .map_err(|e| format!("{name}: read: {e}"))?;
        pos = start - 1 + k as u64;
    }
    read_lines(f, &mut r, pos, end, st, sink)
}

/// Reads the lines starting at stream offsets `pos..end` (`pos` is a line start; 0 is the
/// file's first line). Plain files find a failing line's number by counting newlines before
/// it; a compressed stream is read from its start, so its lines are counted as they come.
fn read_lines<R: BufRead>(
    f: &FileRead,
    r: &mut R,
    mut pos: u64,
    end: u64,
    st: &mut ReadStats,
    sink: &mut impl FnMut(Event),
) -> Result<(), String> {
    let mut line = Vec::with_capacity(256);
    let mut fields = Fields::default();
    let mut counted = 0u64;
    while pos < end {
        let line_no = counted + 1;
        let read_err = |e: std::io::Error| match f.codec {
            Codec::Plain => format!("{}: read: {e}", f.path.display()),
            c => compress::read_error(f.path, c, line_no, &e),
        };
        line.clear();
        let mut k = r
            .by_ref()
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(read_err)?;
        if k == 0 {
            break;
        }
        let too_long = line.len() > MAX_LINE_BYTES && line.last() != Some(&b'\n');
        if too_long {
            k += r.skip_until(b'\n').map_err(read_err)?;
        }
        let line_start = pos;
        pos += k as u64;
        counted += 1;
        st.bytes += k as u64;
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if line_start == 0 {
            if line.starts_with(BOM) {
                line.drain(..BOM.len());
            }
            // An over-long first line is an error, not a header to skip unseen.
            if f.has_header && !too_long {
                continue;
            }
        }
        let ln = || match f.codec {
            Codec::Plain => line_number(f.path, line_start),
            _ => line_no,
        };
        let parsed = if too_long {
            Err(super::parse::LineError {
                field: "line",
                message: format!(
                    "longer than {MAX_LINE_BYTES} bytes (is this a text file with \\n line ends?)"
                ),
            })
        } else {
            parse_line(&line, f.input.format, &f.cols, &mut fields)
        };
        take_line(f, &line, parsed, line_start == 0, ln, st, sink)?;
    }
    Ok(())
}

/// Hands a parsed line's event to `sink`, or applies the bad-line rule to its error.
fn take_line(
    f: &FileRead,
    line: &[u8],
    parsed: Result<Option<Event>, super::parse::LineError>,
    first: bool,
    line_no: impl Fn() -> u64,
    st: &mut ReadStats,
    sink: &mut impl FnMut(Event),
) -> Result<(), String> {
    let input = f.input;
    match parsed {
        Ok(None) => Ok(()), // blank lines are not counted
        Ok(Some(ev)) => {
            keep_event(input, ev, st, sink);
            Ok(())
        }
        Err(e) => {
            let mut msg = format!(
                "{}:{}: field {}: {}: '{}'",
                f.path.display(),
                line_no(),
                e.field,
                e.message,
                crate::escape::sample(line)
            );
            if first && input.header == Header::False {
                msg.push_str(" (input.header = \"false\": if this is a header line, set input.header = \"true\" or \"auto\")");
            }
            bad_row(input, msg, "line", st)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::BadLines;
    use std::io::Write;

    fn input() -> Input {
        Input {
            weight: crate::job::WeightColumn::Column(crate::job::Column::Index(2)),
            ..Input::default()
        }
    }

    #[test]
    fn every_line_read_once_for_any_split() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.tsv");
        let mut f = File::create(&p).unwrap();
        writeln!(f, "user\titem\tweight").unwrap();
        for i in 0..1000 {
            writeln!(f, "{}\t{}\t{}", i, i * 7 % 13, 1 + i % 3).unwrap();
        }
        drop(f);
        let files = vec![p];
        for parts in [1, 2, 3, 7, 64] {
            let mut seen = Vec::new();
            for part in 0..parts {
                read_part(&files, &input(), part, parts, |e| seen.push(e.user)).unwrap();
            }
            seen.sort();
            let want: Vec<_> = (0..1000).map(crate::ids::RawId::Num).collect();
            assert_eq!(seen, want, "parts={parts}");
        }
    }

    #[test]
    fn bad_line_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.tsv");
        std::fs::write(&p, "1\t2\t1\n3\t4\t1\n5\t6\tabc\n7\t8\t1\n").unwrap();
        let files = vec![p.clone()];
        let e = read_part(&files, &input(), 0, 1, |_| {}).unwrap_err();
        assert!(e.contains("b.tsv:3:"), "{e}");
        assert!(e.contains("weight"), "{e}");
        assert!(e.contains("abc"), "{e}");
        let mut inp = input();
        inp.bad_lines = BadLines::Skip;
        let mut n = 0;
        let st = read_part(&files, &inp, 0, 1, |_| n += 1).unwrap();
        assert_eq!((n, st.skipped, st.samples.len()), (3, 1, 1));
    }

    #[test]
    fn compressed_files_are_read_whole_by_one_part_with_line_numbers() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let text = "1\t2\t1\n3\t4\t1\n5\t6\tabc\n";
        let p = dir.path().join("b.data"); // gzip, not named so
        let mut e = flate2::write::GzEncoder::new(File::create(&p).unwrap(), Default::default());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap();
        let q = dir.path().join("c.zst");
        std::fs::write(&q, zstd::encode_all(text.as_bytes(), 1).unwrap()).unwrap();
        let files = vec![p, q];
        let mut inp = input();
        inp.bad_lines = BadLines::Skip;
        // File k goes to part k mod 3: parts 0 and 1 read one file each, part 2 none.
        let mut seen = Vec::new();
        for part in 0..3 {
            let st = read_part(&files, &inp, part, 3, |e| seen.push(e.user)).unwrap();
            assert_eq!(st.events, if part < 2 { 2 } else { 0 }, "part {part}");
            if part < 2 {
                assert!(
                    st.samples[0].contains(":3: field weight"),
                    "{:?}",
                    st.samples
                );
            }
        }
        seen.sort();
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn listing() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["b.tsv", "a.tsv", ".hidden"] {
            std::fs::write(dir.path().join(n), "1\t2\n").unwrap();
        }
        let d = dir.path().to_string_lossy().to_string();
        let l = list_files(std::slice::from_ref(&d)).unwrap();
        assert_eq!(l.len(), 2);
        assert!(l[0].ends_with("a.tsv"));
        let g = list_files(&[format!("{d}/*.tsv")]).unwrap();
        assert_eq!(g, l);
        assert!(list_files(&[format!("{d}/nope")])
            .unwrap_err()
            .contains("no such file"));
        assert!(list_files(&[format!("{d}/*.csv")])
            .unwrap_err()
            .contains("matches no file"));
    }
}
