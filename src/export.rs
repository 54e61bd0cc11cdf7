//! Exports a published model for other tools: TSV or NumPy `.npy`.

use crate::ids::RawId;
use crate::store;
use std::io::Write;
use std::path::Path;

/// Output format of `recflow export`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// `id<TAB>f1<TAB>…<TAB>fd`, one line per entity, sorted by id.
    Tsv,
    /// `users.npy` / `items.npy` (float32, rows sorted by id) plus `user_ids.txt` / `item_ids.txt`.
    Npy,
}

/// Rows of one side sorted by raw id.
pub fn sorted_side(
    dir: &Path,
    manifest: &serde_json::Value,
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

/// Writes a row-major f32 matrix as a version-1.0 `.npy` file.
pub fn write_npy(path: &Path, rows: usize, cols: usize, data: &[f32]) -> Result<(), String> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + length (2) + header + '\n' must be a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut w = create(path)?;
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for x in data {
        out.extend_from_slice(&x.to_le_bytes());
    }
    w.write_all(&out)
        .and_then(|_| w.flush())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
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
    for (side, singular) in [("users", "user"), ("items", "item")] {
        let (ids, f, d) = sorted_side(&dir, &manifest, side)?;
        match format {
            ExportFormat::Tsv => {
                let path = out.join(format!("{side}.tsv"));
                let mut w = create(&path)?;
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
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                written.push(path.display().to_string());
            }
            ExportFormat::Npy => {
                let path = out.join(format!("{side}.npy"));
                write_npy(&path, ids.len(), d, &f)?;
                let idp = out.join(format!("{singular}_ids.txt"));
                let mut w = create(&idp)?;
                for id in &ids {
                    writeln!(w, "{id}")
                        .map_err(|e| format!("cannot write {}: {e}", idp.display()))?;
                }
                w.flush()
                    .map_err(|e| format!("cannot write {}: {e}", idp.display()))?;
                written.push(path.display().to_string());
                written.push(idp.display().to_string());
            }
        }
    }
    Ok(written)
}
