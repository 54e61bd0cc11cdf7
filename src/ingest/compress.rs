//! Compressed inputs: gzip and zstd, told from plain text by their magic bytes (a `.gz` name
//! is neither needed nor trusted). A compressed stream cannot be entered at a byte offset, so
//! such a file is read whole by one worker (see [`owner`]).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// How a file's bytes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// Plain text: split among workers by byte range.
    Plain,
    /// gzip (RFC 1952), concatenated members included (`cat a.gz b.gz`, bgzip).
    Gzip,
    /// Zstandard, several frames included (`zstd -c a >> x.zst`).
    Zstd,
}

const GZIP_MAGIC: &[u8] = b"\x1f\x8b";
const ZSTD_MAGIC: &[u8] = b"\x28\xb5\x2f\xfd";

impl Codec {
    /// The codec named by a file's first bytes.
    pub fn of_magic(head: &[u8]) -> Codec {
        if head.starts_with(GZIP_MAGIC) {
            Codec::Gzip
        } else if head.starts_with(ZSTD_MAGIC) {
            Codec::Zstd
        } else {
            Codec::Plain
        }
    }

    /// Reads a file's first bytes to find its codec.
    pub fn detect(path: &Path) -> Result<Codec, String> {
        let f = File::open(path).map_err(|e| format!("{}: cannot open: {e}", path.display()))?;
        let mut head = Vec::with_capacity(4);
        f.take(4)
            .read_to_end(&mut head)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Ok(Codec::of_magic(&head))
    }

    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Plain => "plain text",
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
        }
    }
}

/// The worker that reads the `k`-th compressed file (counted in listing order over the
/// compressed files only, so plain files between them do not unbalance the spread).
pub fn owner(k: usize, parts: usize) -> usize {
    k % parts
}

/// The decompressed text of a file, buffered.
pub fn open(path: &Path, codec: Codec) -> Result<Box<dyn BufRead>, String> {
    let f = File::open(path).map_err(|e| format!("{}: cannot open: {e}", path.display()))?;
    const BUF: usize = 1 << 20;
    // Compressed bytes in a small buffer, the text in a large one (lines are read from it).
    let raw = |f| BufReader::with_capacity(1 << 16, f);
    Ok(match codec {
        Codec::Plain => Box::new(BufReader::with_capacity(BUF, f)),
        Codec::Gzip => Box::new(BufReader::with_capacity(
            BUF,
            flate2::bufread::MultiGzDecoder::new(raw(f)),
        )),
        Codec::Zstd => {
            let d = zstd::stream::read::Decoder::with_buffer(raw(f))
                .map_err(|e| format!("{}: cannot start zstd decoding: {e}", path.display()))?;
            Box::new(BufReader::with_capacity(BUF, d))
        }
    })
}

/// The message for a read error inside a compressed stream: it names the file, the codec and
/// the line reached (decoders report a cut file as an unexpected end or a bad checksum).
pub fn read_error(path: &Path, codec: Codec, line: u64, e: &std::io::Error) -> String {
    let what = crate::escape::escape(&e.to_string());
    match codec {
        Codec::Plain => format!("{}:{line}: cannot read: {what}", path.display()),
        c => format!(
            "{}:{line}: cannot decompress ({}): {what}: the file is truncated or corrupt",
            path.display(),
            c.name()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_name_the_codec() {
        assert_eq!(Codec::of_magic(b"\x1f\x8b\x08\x00"), Codec::Gzip);
        assert_eq!(Codec::of_magic(b"\x28\xb5\x2f\xfd\x00"), Codec::Zstd);
        assert_eq!(Codec::of_magic(b"1\t2\t3"), Codec::Plain);
        assert_eq!(Codec::of_magic(b"\x1f"), Codec::Plain);
        assert_eq!(Codec::of_magic(b""), Codec::Plain);
    }
}
