#!/usr/bin/env bash
# Recall-versus-cost sweep for LSH candidate generation on generated data.
# Trains once per setting (same seed, so the same model), prints recall@10 against exact top-10
# and the share of the catalogue scored per user, for LSH settings and for the head list alone.
# Usage: scripts/lsh-sweep.sh [RECFLOW_BIN] [OUT_DIR]
#   env: USERS ITEMS NNZ WORKERS SAMPLE
set -euo pipefail
BIN=${1:-target/release/recflow}
OUT=${2:-target/lsh-sweep}
USERS=${USERS:-200000}; ITEMS=${ITEMS:-50000}; NNZ=${NNZ:-2000000}
WORKERS=${WORKERS:-2}; SAMPLE=${SAMPLE:-2000}; ITERS=${ITERS:-10}; SOLVER=${SOLVER:-cholesky}
GRID=${GRID:-full}   # full | quick (exact, head alone, a few head + bucket settings)
mkdir -p "$OUT"
# DATA: an existing TSV (user, item, weight) instead of generated data, e.g. the train split
# of scripts/bench.sh.
if [ -z "${DATA:-}" ]; then
  DATA="$OUT/synth-${USERS}-${ITEMS}-${NNZ}.tsv"
  [ -f "$DATA" ] || "$BIN" generate --users "$USERS" --items "$ITEMS" --nnz "$NNZ" --seed 2 --out "$DATA"
fi
cat > "$OUT/job.toml" <<JOB
[input]
path = ["$(realpath "$DATA")"]
header = "false"
weight = 2
[confidence]
alpha = 1.0
[als]
factors = 64
regularization = 0.01
iterations = $ITERS
solver = "$SOLVER"
loss_every = 0
[recommend]
k = 10
mode = "lsh"
[eval]
recall_sample = $SAMPLE
[output]
keep_versions = 1
JOB
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo '?'), data $DATA, $WORKERS workers, $SOLVER x $ITERS"
# Train once; every setting then re-runs only the recommend stage on that model (a warm start
# with 0 iterations and the input as a full dump keeps the factors bit for bit).
rm -rf "$OUT/store"
"$BIN" run "$OUT/job.toml" -w "$WORKERS" -q --set output.store="$OUT/store" --set recommend.k=0 > /dev/null
AGAIN=(--set output.store="$OUT/store" --set model.warm_start=true --set model.snapshot=false --set als.iterations=0)
report() { # label
  python3 - "$1" "$OUT"/store/v*/manifest.json <<'PY'
import json, sys
m = json.load(open(sys.argv[2]))
t = m["timings"]
l = m["recommend"].get("lsh") or {"recall_at_k": 1.0, "catalog_share": 1.0, "candidates_per_user": float("nan")}
print(f"{sys.argv[1]:<48} recall@10 {l['recall_at_k']:.3f}  catalog_share {l['catalog_share']:.4f}  "
      f"cand/user {l['candidates_per_user']:.0f}  rec_s {t['recommend_secs']:.2f}  "
      f"score_s {t['recommend_phases']['score']:.2f}  prepare_s {t['recommend_phases']['prepare']:.2f}")
PY
}
run() { # label, --set args...
  local label=$1; shift
  "$BIN" run "$OUT/job.toml" -w "$WORKERS" -q "${AGAIN[@]}" "$@" > /dev/null
  report "$label"
}
exact() {
  "$BIN" run "$OUT/job.toml" -w "$WORKERS" -q "${AGAIN[@]}" --set recommend.mode=exact > /dev/null
  report "exact (whole catalogue, fused scan)"
}
if [ "$GRID" = quick ]; then
  exact
  for h in 50 100 150 250 500 1000; do
    run "head $h alone" --set lsh.head=$h --set lsh.tables=0
  done
  for h in 50 100; do
    for pt in "12 16" "16 32"; do
      set -- $pt
      run "mips p$1 r$2 bands4 probes1 head$h" --set lsh.head=$h --set lsh.planes=$1 --set lsh.tables=$2 --set lsh.norm_bands=4 --set lsh.probes=1 --set lsh.transform=mips
    done
  done
  # User buckets: tables hash users; each bucket lists the N items outside the head best for
  # its users; the head list is scored for everybody.
  for hptn in "0 10 8 40" "64 10 4 16" "128 10 2 16" "128 10 3 16" "128 10 4 16" "128 8 4 16" \
      "128 10 4 32" "256 10 1 32"; do
    set -- $hptn
    run "user buckets head$1 p$2 r$3 n$4" --set lsh.head=$1 --set lsh.planes=$2 --set lsh.tables=$3 --set lsh.transform=users --set lsh.bucket_items=$4
  done
  exit 0
fi
exact
# Etsy's reference settings.
run "reference p12 r50 cap10000 none" --set lsh.planes=12 --set lsh.tables=50 --set lsh.max_bucket=10000 --set lsh.transform=none --set lsh.norm_bands=1 --set lsh.head=0 --set lsh.probes=0
# Head list alone.
for h in 250 500 1000 2000 4000; do
  run "head $h alone" --set lsh.head=$h --set lsh.tables=0
done
# Norm-ranged MIPS LSH + head.
for h in 100 250 500; do
  for pt in "8 8" "8 16" "10 16" "6 16"; do
    set -- $pt
    for b in 4 8 16; do
      run "mips p$1 r$2 bands$b probes2 head$h" --set lsh.head=$h --set lsh.planes=$1 --set lsh.tables=$2 --set lsh.norm_bands=$b --set lsh.probes=2 --set lsh.transform=mips
    done
  done
done
# User buckets + head list.
for h in 64 128 256; do
  for ptn in "10 1 32" "8 4 16" "10 2 16" "10 4 16" "10 4 32" "12 8 16"; do
    set -- $ptn
    run "user buckets head$h p$1 r$2 n$3" --set lsh.head=$h --set lsh.planes=$1 --set lsh.tables=$2 --set lsh.transform=users --set lsh.bucket_items=$3
  done
done
