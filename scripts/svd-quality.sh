#!/usr/bin/env bash
# Issue 18: quality (and train seconds) of the svd model against ALS on the shared sets, same d.
#   scripts/svd-quality.sh [BIN] [OUT]    (BIN default target/release/recflow)
# Per set and config: NDCG@20 / Recall@20 over all items without the user's training items
# (exact mode), and the manifest's train_secs. ALS: the defaults (cg, 15 iterations,
# λ = 0.01, confidence.alpha = "auto"); svd: rank = d, oversample 10, 2 power iterations,
# input binary or confidence (the same confidence as ALS).
set -euo pipefail
BIN=${1:-target/release/recflow}
OUT=${2:-/tmp/svd-quality}
D=${D:-64}
DATA=/work/shared/data
mkdir -p "$OUT/gowalla"
for f in train valid test; do
  [ -s "$OUT/gowalla/$f.tsv" ] || zcat "$DATA/gowalla-lightgcn/$f.tsv.gz" > "$OUT/gowalla/$f.tsv"
done
cat "$OUT/gowalla/train.tsv" "$OUT/gowalla/valid.tsv" > "$OUT/gowalla/trainvalid.tsv"
: > "$OUT/job.toml"
SETS=(
  "ml-100k tsv $DATA/ml-100k/u.data eval.holdout=0.2"
  "gowalla tsv $OUT/gowalla/trainvalid.tsv eval.test=$OUT/gowalla/test.tsv"
  "citeulike whitespace $DATA/citeulike/train.txt eval.test=$DATA/citeulike/test.txt"
  "amazon-sports whitespace $DATA/amazon-sports/train.txt eval.test=$DATA/amazon-sports/test.txt"
)
CONFIGS=(
  "als model.method=als"
  "svd-binary model.method=svd,svd.input=binary"
  "svd-confidence model.method=svd,svd.input=confidence"
)
printf "%-14s %-15s %9s %9s %9s\n" set model ndcg@20 recall@20 train_s
for s in "${SETS[@]}"; do
  read -r name format path ev <<< "$s"
  for c in "${CONFIGS[@]}"; do
    read -r cname kvs <<< "$c"
    store="$OUT/store-$name-$cname"
    rm -rf "$store"
    args=(--set "input.path=$path" --set "input.format=$format" --set "input.header=false"
          --set "$ev" --set "output.store=$store" --set "als.factors=$D" --set "svd.rank=$D"
          --set "recommend.k=20" --set "recommend.mode=exact" --set "eval.k=20")
    IFS=, read -ra kv <<< "$kvs"
    for x in "${kv[@]}"; do args+=(--set "$x"); done
    "$BIN" run "$OUT/job.toml" -w 2 -q "${args[@]}" > /dev/null
    python3 - "$store" "$name" "$cname" <<'PY'
import json, sys, pathlib
s = pathlib.Path(sys.argv[1]); v = (s / "CURRENT").read_text().strip()
m = json.loads((s / v / "manifest.json").read_text())
print("%-14s %-15s %9.4f %9.4f %9.2f" % (sys.argv[2], sys.argv[3], m["metrics"]["ndcg"], m["metrics"]["recall"], m["timings"]["train_secs"]))
PY
  done
done
