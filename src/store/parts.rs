//! Output parts (`recs/`, `similar/`, `buckets/`): TSV lines, one file per worker, stored
//! plain (`part-NNNNN.tsv`) or as a Zstandard frame (`part-NNNNN.tsv.zst`, the default:
//! `output.compression`). The file name says which, so a reader needs no setting and old
//! (plain) stores still load. Checksums in the manifest are of the bytes on disk: a damaged
//! file is refused before it is decompressed.

use super::{fail_injected, read_record, write_error, FileRecord};
use crate::job::Compression;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The suffix of a compressed part.
pub const ZSTD_SUFFIX: &str = ".zst";

/// zstd level 1: on recs text it compresses as well as level 3 or 6 (timestamps and scores
/// leave little for the slower match finders) at the fastest speed.
const LEVEL: i32 = 1;

/// The path of worker `worker`'s part under `sub` (`"recs"`, `"similar"`, `"buckets"`).
pub fn part_path(sub: &str, worker: usize, c: Compression) -> String {
    match c {
        Compression::Zstd => format!("{sub}/part-{worker:05}.tsv{ZSTD_SUFFIX}"),
        Compression::None => format!("{sub}/part-{worker:05}.tsv"),
    }
}

/// Whether a part path names a compressed part.
pub fn is_compressed(rel: &str) -> bool {
    rel.ends_with(ZSTD_SUFFIX)
}

/// The bytes to store for a part held in memory (similar, buckets): `plain` itself, or its
/// zstd frame when `rel` names a compressed part.
pub fn encode(rel: &str, plain: &[u8]) -> Vec<u8> {
    if !is_compressed(rel) {
        return plain.to_vec();
    }
    let mut enc = encoder(Vec::with_capacity(plain.len() / 2)).expect("zstd encoder in memory");
    enc.write_all(plain).expect("writing to memory");
    enc.finish().expect("writing to memory")
}

fn encoder<W: Write>(w: W) -> std::io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut e = zstd::stream::write::Encoder::new(w, LEVEL)?;
    // The frame checksum lets zstdcat and other readers notice damage too.
    e.include_checksum(true)?;
    Ok(e)
}

/// A part's text: its file read and checked against its record, decompressed when
/// compressed. The compressed bytes and the text are each held once.
pub fn read(dir: &Path, rec: &FileRecord) -> Result<Vec<u8>, String> {
    let bytes = read_record(dir, rec)?;
    if !is_compressed(&rec.path) {
        return Ok(bytes);
    }
    decompress(&dir.join(&rec.path), &bytes)
}

/// The text of a part file outside a manifest (a test, `recflow eval --recs DIR`), told by
/// its name as in a version.
pub fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !is_compressed(&path.to_string_lossy()) {
        return Ok(bytes);
    }
    decompress(path, &bytes)
}

/// [`read_file`] as text (tests and scripts read parts as lines).
pub fn read_text(path: &Path) -> Result<String, String> {
    String::from_utf8(read_file(path)?).map_err(|_| format!("{}: not UTF-8 text", path.display()))
}

fn decompress(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut text = Vec::with_capacity(bytes.len() * 3);
    zstd::stream::read::Decoder::with_buffer(bytes)
        .and_then(|mut d| d.read_to_end(&mut text))
        .map_err(|e| {
            format!(
                "{}: cannot decompress (zstd): {}: the file is damaged although its checksum matches the manifest; republish the version",
                path.display(),
                crate::escape::escape(&e.to_string())
            )
        })?;
    Ok(text)
}

/// The file under a [`PartWriter`]: counts and checksums the bytes that reach the disk.
struct Sink {
    file: File,
    path: PathBuf,
    bytes: u64,
    crc: crc32fast::Hasher,
    xxh: xxhash_rust::xxh3::Xxh3,
    inject: bool,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.inject {
            self.file.write_all(&buf[..buf.len() / 2])?;
            return Err(std::io::Error::from_raw_os_error(28));
        }
        let n = self.file.write(buf)?;
        self.crc.update(&buf[..n]);
        self.xxh.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

enum Out {
    Plain(Sink),
    Zstd(zstd::stream::write::Encoder<'static, Sink>),
}

/// A part file written block by block, for outputs too large to hold in memory until publish
/// (a worker's recs are ~35 bytes × k per user). A compressed part is compressed on the way:
/// only the encoder's window is held, never the whole text.
pub struct PartWriter {
    out: Out,
    rel: String,
    rows: u64,
}

impl PartWriter {
    /// Creates `path` (and its directory); `rel` is its path in the version once published
    /// (see [`part_path`]), and says whether it is compressed.
    pub fn create(path: PathBuf, rel: &str) -> Result<PartWriter, String> {
        if let Some(dir) = path.parent() {
            crate::cleanup::create_dir_all(dir)?;
        }
        let file =
            File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let sink = Sink {
            file,
            inject: fail_injected(&path),
            path,
            bytes: 0,
            crc: crc32fast::Hasher::new(),
            xxh: xxhash_rust::xxh3::Xxh3::new(),
        };
        let out = if is_compressed(rel) {
            let p = sink.path.clone();
            Out::Zstd(encoder(sink).map_err(|e| write_error(&p, e))?)
        } else {
            Out::Plain(sink)
        };
        Ok(PartWriter {
            out,
            rel: rel.to_string(),
            rows: 0,
        })
    }

    fn path(&self) -> &Path {
        match &self.out {
            Out::Plain(s) => &s.path,
            Out::Zstd(e) => &e.get_ref().path,
        }
    }

    /// Appends `bytes` (text) holding `rows` rows.
    pub fn append(&mut self, bytes: &[u8], rows: u64) -> Result<(), String> {
        let written = match &mut self.out {
            Out::Plain(s) => s.write_all(bytes),
            Out::Zstd(e) => e.write_all(bytes),
        };
        written.map_err(|e| write_error(self.path(), e))?;
        self.rows += rows;
        Ok(())
    }

    /// The finished file: (its path, its record). Not synced yet: [`super::sync_file`] does
    /// that at publish, when the file is moved into the version (the disk catches up
    /// meanwhile).
    pub fn finish(self) -> Result<(PathBuf, FileRecord), String> {
        let path = self.path().to_path_buf();
        let mut sink = match self.out {
            Out::Plain(s) => s,
            Out::Zstd(e) => e.finish().map_err(|e| write_error(&path, e))?,
        };
        sink.flush().map_err(|e| write_error(&path, e))?;
        let rec = FileRecord {
            path: self.rel,
            bytes: sink.bytes,
            crc32: sink.crc.finalize(),
            rows: self.rows,
            xxh3: Some(format!("{:032x}", sink.xxh.digest128())),
            vshards: Vec::new(),
        };
        Ok((sink.path, rec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{sync_file, VersionWriter};

    const BLOCKS: [&[u8]; 4] = [
        b"u1\ti1\t0.5\t1\n",
        b"",
        b"u2\ti9\t1e-7\t1\nu2\ti3\t-2.0\t2\n",
        b"x",
    ];

    /// Written in blocks: (file bytes, record).
    fn write_blocks(dir: &Path, rel: &str, blocks: &[&[u8]]) -> (Vec<u8>, FileRecord) {
        let mut w = PartWriter::create(dir.join("p").join(rel), rel).unwrap();
        for (n, b) in blocks.iter().enumerate() {
            w.append(b, n as u64).unwrap();
        }
        let (path, rec) = w.finish().unwrap();
        sync_file(&path).unwrap();
        (std::fs::read(&path).unwrap(), rec)
    }

    /// Either layout: the part written block by block has the record (size, checksums, rows)
    /// of the bytes on disk, which equal what `VersionWriter::part` writes at once; both read
    /// back as the plain text, and a plain part is the text itself.
    #[test]
    fn block_written_parts_match_parts_written_at_once_in_both_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let all: Vec<u8> = BLOCKS.concat();
        for c in [Compression::None, Compression::Zstd] {
            let rel = part_path("recs", 3, c);
            let (disk, rec) = write_blocks(dir.path(), &rel, &BLOCKS);
            let mut vw = VersionWriter::new(&dir.path().join(format!("once-{c:?}")));
            let once = vw.part(&rel, &all, 6).unwrap().clone();
            assert_eq!(rec.path, rel);
            assert_eq!(
                (rec.bytes, rec.crc32, rec.rows, &rec.xxh3),
                (once.bytes, once.crc32, once.rows, &once.xxh3),
                "{c:?}"
            );
            assert_eq!(disk.len() as u64, rec.bytes);
            assert_eq!(crc32fast::hash(&disk), rec.crc32);
            assert_eq!(read(&dir.path().join("p"), &rec).unwrap(), all, "{c:?}");
            assert_eq!(read_file(&dir.path().join("p").join(&rel)).unwrap(), all);
            match c {
                Compression::None => assert_eq!(disk, all),
                Compression::Zstd => assert_eq!(&disk[..4], b"\x28\xb5\x2f\xfd"),
            }
        }
        assert_eq!(
            part_path("similar", 12, Compression::None),
            "similar/part-00012.tsv"
        );
        assert_eq!(
            part_path("buckets", 0, Compression::Zstd),
            "buckets/part-00000.tsv.zst"
        );
    }

    /// A large part (many encoder buffers) compresses to well under its size and reads back
    /// exactly; zero-length text is a valid empty frame.
    #[test]
    fn large_and_empty_parts_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let text: Vec<u8> = (0..200_000u64)
            .flat_map(|u| {
                format!(
                    "{}\t{}\t0.{:07}\t{}\n",
                    u / 10,
                    u * 7919 % 5000,
                    u,
                    u % 10 + 1
                )
                .into_bytes()
            })
            .collect();
        let blocks: Vec<&[u8]> = text.chunks(70_001).collect();
        let (disk, rec) = write_blocks(dir.path(), "recs/part-00000.tsv.zst", &blocks);
        assert!(
            disk.len() * 2 < text.len(),
            "{} of {}",
            disk.len(),
            text.len()
        );
        assert_eq!(read(&dir.path().join("p"), &rec).unwrap(), text);
        let (_, empty) = write_blocks(dir.path(), "recs/part-00001.tsv.zst", &[]);
        assert_eq!(read(&dir.path().join("p"), &empty).unwrap(), b"");
    }

    /// A compressed part whose bytes were replaced (manifest re-signed to match) is an error
    /// naming the file, not garbage text.
    #[test]
    fn damaged_frame_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut disk, _) = write_blocks(dir.path(), "recs/part-00000.tsv.zst", &BLOCKS);
        let at = disk.len() - 6;
        disk[at] ^= 0x55;
        let mut vw = VersionWriter::new(&dir.path().join("bad"));
        let rec = vw
            .write("recs/part-00000.tsv.zst", &disk, 6)
            .unwrap()
            .clone();
        let e = read(&dir.path().join("bad"), &rec).unwrap_err();
        assert!(
            e.contains("bad/recs/part-00000.tsv.zst: cannot decompress (zstd)"),
            "{e}"
        );
    }
}
