#!/usr/bin/env bash
# How the confidence default was chosen (issue #14): precision@10 and NDCG@10 on *validation*
# data for each candidate confidence, on the shared sets and on heavy-tailed generated counts.
#
# Usage: scripts/confidence-defaults.sh [CONFIG ...]
#   CONFIG: a space-free list of --set values joined by ',' (default: the candidates below);
#   env: DATA (../shared/data), WORKERS (2), OUT (target/conf-defaults)
# Every run is the job a user writes (no [als] section: the defaults) plus the candidate's keys.
# Validation split: ml-100k has none, so a 20% per-user holdout (eval.holdout, seed 3); the
# LightGCN++ sets (citeulike, amazon-sports) and Gowalla train on train and score valid;
# `counts` is scripts/gen_counts.py (train/valid, Pareto counts). Test splits are never read.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}; WORKERS=${WORKERS:-2}; OUT=${OUT:-target/conf-defaults}
BIN=${RECFLOW:-target/release/recflow}
[ -x "$BIN" ] || cargo build --release
mkdir -p "$OUT" target/data/gowalla
for f in train valid; do
  [ -s target/data/gowalla/$f.tsv ] || zcat "$DATA/gowalla-lightgcn/$f.tsv.gz" > target/data/gowalla/$f.tsv
done
[ -s target/data/counts/train.tsv ] || target/bench-venv/bin/python scripts/gen_counts.py --out target/data/counts

CONFIGS=("$@")
if [ ${#CONFIGS[@]} -eq 0 ]; then
  CONFIGS=(
    "confidence.scheme=linear,confidence.alpha=40"
    "confidence.scheme=linear,confidence.alpha=10"
    "confidence.scheme=linear,confidence.alpha=1"
    "confidence.scheme=log,confidence.alpha=10"
    "confidence.scheme=log,confidence.alpha=20"
    "confidence.scheme=log,confidence.alpha=40"
  )
fi

# name format path eval-key eval-value
SETS=(
  "ml-100k tsv $DATA/ml-100k/u.data eval.holdout 0.2"
  "citeulike whitespace $DATA/citeulike/train.txt eval.test $DATA/citeulike/valid.txt"
  "amazon-sports whitespace $DATA/amazon-sports/train.txt eval.test $DATA/amazon-sports/valid.txt"
  "gowalla tsv target/data/gowalla/train.tsv eval.test target/data/gowalla/valid.tsv"
  "counts tsv target/data/counts/train.tsv eval.test target/data/counts/valid.tsv"
)

echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo '?'), -w $WORKERS, defaults + CONFIG"
printf "%-14s %-48s %8s %8s\n" set config p@10 ndcg@10
for s in "${SETS[@]}"; do
  read -r name format path ekey eval <<< "$s"
  for c in "${CONFIGS[@]}"; do
    store="$OUT/$name-$(echo "$c" | tr ',=' '__')"
    rm -rf "$store"
    sets=(--set "input.path=$path" --set "input.format=$format" --set "$ekey=$eval" --set "output.store=$store")
    [ "$name" = ml-100k ] && sets+=(--set input.timestamp=3)
    IFS=',' read -ra kv <<< "$c"
    for x in "${kv[@]}"; do sets+=(--set "$x"); done
    printf '' > "$OUT/job.toml"
    "$BIN" run "$OUT/job.toml" -w "$WORKERS" -q "${sets[@]}" > /dev/null
    m="$store/$(cat "$store/CURRENT")/manifest.json"
    printf "%-14s %-48s %8.4f %8.4f\n" "$name" "$c" \
      "$(jq '.metrics.precision' "$m")" "$(jq '.metrics.ndcg' "$m")"
  done
done
