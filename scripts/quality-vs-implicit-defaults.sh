#!/usr/bin/env bash
# recflow's defaults against implicit 0.7.3's defaults (issue 14), on validation splits, both
# scored by `recflow eval` (precision / NDCG at 10, implicit's definitions) from their recs.
# recflow: the job a user writes (`[input] path`, nothing else; -w = all cores).
# implicit: AlternatingLeastSquares() defaults on the raw weights (scripts/implicit_defaults.py).
# Sets: ml (u.data 80/20 split by awk srand(7)), cite (citeulike train/valid as TSV),
# gowalla (LightGCN split train/valid), counts (scripts/gen_counts.py train/valid).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${RECFLOW:-target/release/recflow}; PY=target/bench-venv/bin/python; OUT=target/quality-defaults
mkdir -p "$OUT"
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
printf "%-8s %-10s %8s %8s\n" set system p@10 ndcg@10
for s in ml cite gowalla counts; do
  train=target/data/$s/train.tsv; valid=target/data/$s/valid.tsv
  rm -rf "$OUT/$s"; mkdir -p "$OUT/$s"
  printf '[input]\npath = "%s"\n' "$(realpath "$train")" > "$OUT/$s/job.toml"
  "$BIN" run "$OUT/$s/job.toml" -q --set output.store="$OUT/$s/store" > /dev/null
  "$PY" scripts/implicit_defaults.py --train "$train" --out "$OUT/$s/implicit.tsv"
  for sys in recflow implicit; do
    recs="$OUT/$s/implicit.tsv"; [ $sys = recflow ] && recs="$OUT/$s/store/$(cat "$OUT/$s/store/CURRENT")/recs"
    "$BIN" eval --recs "$recs" --train "$train" --test "$valid" --k 10 > "$OUT/$s/$sys.json"
    printf "%-8s %-10s %8.4f %8.4f\n" "$s" "$sys" "$(jq .precision "$OUT/$s/$sys.json")" "$(jq .ndcg "$OUT/$s/$sys.json")"
  done
done
