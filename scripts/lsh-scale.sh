#!/usr/bin/env bash
# Recommend-stage time of the default LSH mode against exact mode as the catalogue grows.
# Trains one iteration per catalogue size (training time is not the point), then re-runs only
# the recommend stage on that model in each mode, REPS times, and prints the manifest's
# recommend_secs, recall@10 of LSH against exact and the share of the catalogue scored.
# Usage: scripts/lsh-scale.sh [RECFLOW_BIN] [OUT_DIR]
#   env: USERS (2000000) ITEMS ("100000 300000 1000000") PER_USER (10 events) WORKERS (2) REPS (1)
#        KEEP=1: reuse OUT's trained store of a size. Modes run in turn (lsh, exact, lsh, exact…):
#        paired runs, so a drift in the shared machine's load hits both.
set -euo pipefail
BIN=$(realpath "${1:-target/release/recflow}")
OUT=${2:-target/lsh-scale}
USERS=${USERS:-2000000}; ITEMS=${ITEMS:-100000 300000 1000000}; PER_USER=${PER_USER:-10}
W=${WORKERS:-2}; REPS=${REPS:-1}
mkdir -p "$OUT"; OUT=$(realpath "$OUT")
echo "# $(date -u +%FT%TZ) $USERS users, $PER_USER events per user, factors 64, $W workers"
echo "| items | rep | mode | recommend s | score s | prepare s | recall@10 | share scored | head/tables/bucket_items |"
echo "|---|---|---|---|---|---|---|---|---|"
for n in $ITEMS; do
  data="$OUT/gen-$USERS-$n.tsv"
  [ -s "$data" ] || "$BIN" generate --users "$USERS" --items "$n" --nnz $((USERS * PER_USER)) --seed 4 --out "$data" >/dev/null
  job="$OUT/job-$n.toml"; store="$OUT/store-$n"
  printf '[input]\npath = ["%s"]\nheader = "false"\nweight = 2\n[als]\nfactors = 64\niterations = 1\nloss_every = 0\n[recommend]\nk = 10\nmode = "lsh"\n[output]\nkeep_versions = 1\n' "$data" > "$job"
  # A store already trained for this size is reused (KEEP=1): the model is the same either way.
  if [ "${KEEP:-0}" != 1 ] || [ ! -d "$store" ]; then
    rm -rf "$store"
    "$BIN" run "$job" -w "$W" -q --set output.store="$store" --set recommend.k=0 >/dev/null
  fi
  again=(--set output.store="$store" --set model.warm_start=true --set model.snapshot=false --set als.iterations=0)
  for rep in $(seq "$REPS"); do
    for mode in lsh exact; do
      "$BIN" run "$job" -w "$W" -q "${again[@]}" --set recommend.mode=$mode >/dev/null
      python3 - "$n" "$mode" "$store"/v*/manifest.json "$rep" <<'PY'
import json, sys
m = json.load(open(sys.argv[3])); r = m["recommend"]; t = m["timings"]
l = r.get("lsh") or {}; z = (l.get("calibration") or {}).get("chosen") or {}
share = l.get("catalog_share", (r.get("exact") or {}).get("catalog_share", 1.0))
rec = l.get("recall_at_k")
p = t["recommend_phases"]
print(f"| {sys.argv[1]} | {sys.argv[4]} | {sys.argv[2]} | {t['recommend_secs']:.1f} | {p['score']:.1f} | {p['prepare']:.1f} | "
      f"{'-' if rec is None else f'{rec:.4f}'} | {share:.4f} | {z.get('head', '-')}/{z.get('tables', '-')}/{z.get('bucket_items', '-')} |")
PY
    done
  done
done
