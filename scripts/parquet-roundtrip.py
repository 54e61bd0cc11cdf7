#!/usr/bin/env python3
"""Parquet with another tool (pyarrow): inputs written by pyarrow train the same model as the
same data in TSV, and recflow's Parquet exports read back in pyarrow as its TSV exports.

    python3 scripts/parquet-roundtrip.py [--recflow target/release/recflow] [--keep DIR]

Skips (exit 0, says so) when pyarrow is not importable: `pip install pyarrow` (e.g. into
target/bench-venv). Exit 1 on any difference.
"""

import argparse
import os
import subprocess
import sys
import tempfile

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError:
    print("parquet-roundtrip: pyarrow is not importable; skipped (pip install pyarrow)")
    sys.exit(0)

JOB = """[input]
{input}
[als]
factors = 8
iterations = 3
[shards]
virtual = 16
[recommend]
k = 5
mode = "lsh"
[lsh]
head = 0
tables = 2
planes = 4
[similar]
k = 4
[output]
store = "{store}"
"""


def events(n_users=1500, per_user=12, n_items=400):
    """Deterministic (user, item, weight, seconds) rows."""
    rows = []
    x = 12345
    for u in range(n_users):
        for k in range(per_user):
            x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
            item = (x >> 33) % n_items
            rows.append((u, f"item-{item}", float(1 + (x >> 20) % 5), 1_600_000_000 + u * 100 + k))
    return rows


def run(cmd, cwd):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"parquet-roundtrip: {' '.join(cmd)} failed:\n{r.stderr}")


def train_and_export(bin_, d, name, input_, workers, fmt):
    with open(os.path.join(d, f"{name}.toml"), "w") as f:
        f.write(JOB.format(input=input_, store=f"store-{name}"))
    run([bin_, "run", f"{name}.toml", "-w", str(workers), "--quiet"], d)
    out = os.path.join(d, f"out-{name}-{fmt}")
    run([bin_, "export", f"store-{name}", "--out", out, "--format", fmt], d)
    return out


def read_tsv(path):
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f]


def same(a, b):
    """A pyarrow value against a TSV field: floats as float32, the rest as text."""
    if isinstance(a, float):
        return pa.scalar(a, pa.float32()).as_py() == pa.scalar(float(b), pa.float32()).as_py()
    return str(a) == b


def check_export(tsv_dir, pq_dir):
    """Every table of the Parquet export equals the TSV export, row by row."""
    failures = 0
    for table in ["users", "items", "recs", "similar", "buckets"]:
        tsv = read_tsv(os.path.join(tsv_dir, f"{table}.tsv"))
        t = pq.read_table(os.path.join(pq_dir, f"{table}.parquet"))
        rows = t.to_pylist()
        if len(rows) != len(tsv):
            print(f"  {table}: {len(rows)} rows in Parquet, {len(tsv)} in TSV")
            failures += 1
            continue
        bad = 0
        for r, line in zip(rows, tsv):
            values = []
            for v in r.values():
                values.extend(v if isinstance(v, list) else [v])
            if len(values) != len(line) or not all(same(v, f) for v, f in zip(values, line)):
                bad += 1
        print(f"  {table}.parquet: {len(rows)} rows, schema {t.schema.names} "
              f"({', '.join(str(x) for x in t.schema.types)}): {'ok' if bad == 0 else f'{bad} rows differ'}")
        failures += bad > 0
    return failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--recflow", default=os.path.abspath("target/release/recflow"))
    ap.add_argument("--keep", help="work in this directory (kept) instead of a temporary one")
    a = ap.parse_args()
    d = a.keep or tempfile.mkdtemp(prefix="parquet-roundtrip-")
    os.makedirs(d, exist_ok=True)
    rows = events()
    with open(os.path.join(d, "e.tsv"), "w") as f:
        f.write("user\titem\tweight\tts\n")
        for u, i, w, t in rows:
            f.write(f"{u}\t{i}\t{w:g}\t{t}\n")
    table = pa.table({
        "user": pa.array([r[0] for r in rows], pa.int64()),
        "item": pa.array([r[1] for r in rows], pa.string()),
        "weight": pa.array([r[2] for r in rows], pa.float64()),
        "ts": pa.array([r[3] * 1_000_000 for r in rows], pa.timestamp("us")),
    })
    # Several row groups, dictionary-encoded strings, the codecs real files use.
    for codec in ["snappy", "zstd", "gzip", "none"]:
        pq.write_table(table, os.path.join(d, f"e-{codec}.parquet"), row_group_size=2500,
                       compression=codec)
    tsv_input = 'path = "e.tsv"\ntimestamp = "ts"'
    want_dir = train_and_export(a.recflow, d, "tsv", tsv_input, 1, "tsv")
    want = [open(os.path.join(want_dir, f)).read() for f in ("users.tsv", "items.tsv")]
    failures = 0
    for codec in ["snappy", "zstd", "gzip", "none"]:
        inp = f'path = "e-{codec}.parquet"\nuser = "user"\nitem = "item"\ntimestamp = "ts"'
        got_dir = train_and_export(a.recflow, d, f"pq-{codec}", inp, 3, "tsv")
        got = [open(os.path.join(got_dir, f)).read() for f in ("users.tsv", "items.tsv")]
        ok = got == want
        failures += not ok
        print(f"pyarrow {codec} input ({pq.ParquetFile(os.path.join(d, f'e-{codec}.parquet')).num_row_groups} row groups), -w 3: "
              f"{'factors identical to TSV -w 1' if ok else 'FACTORS DIFFER'}")
    pq_dir = os.path.join(d, "out-tsv-parquet")
    run([a.recflow, "export", "store-tsv", "--out", pq_dir, "--format", "parquet"], d)
    tsv_dir = want_dir
    print("recflow export --format parquet, read by pyarrow", pa.__version__)
    failures += check_export(tsv_dir, pq_dir)
    print(f"parquet-roundtrip: {'all ok' if failures == 0 else f'{failures} failure(s)'} ({d})")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
