#!/usr/bin/env bash
# Byte-for-byte comparison of two recflow builds: the proof that a refactor changed nothing.
#
# Usage: scripts/compare-outputs.sh OLD_BIN NEW_BIN [SCENARIO...]
#   env: OUT (work dir, default target/compare), NEW_SET ("k=v k=v": --set pairs passed to the
#        new binary only, for keys the old one does not know, e.g. "lsh.target_recall=0"),
#        THREADS (workers for the multi-worker scenarios, default 3)
# Scenarios (default: all): qs-w1 qs-w3 qs-2p ml gen-exact gen-lsh-users gen-lsh-none
#   gen-lsh-mips gen-popular warm svd svd-2p svd-warm checkpoint
#
# Each scenario runs both binaries on the same job into separate stores, then compares what a
# user gets: exported factors and recommendations (`recflow export`, each binary reading its
# own store), similar items and LSH buckets (part files, sorted), and from the manifest and
# report the metrics, validation metrics, objective per half-step, ingest counts and LSH
# statistics. Timings, traffic counters, file lists and dates are not compared (they depend on
# the machine and the layout). Exit status 1 if any scenario differs.
set -euo pipefail
OLD=$(realpath "${1:?old binary}"); NEW=$(realpath "${2:?new binary}"); shift 2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/target/compare}
W=${THREADS:-3}
DATA=${RECFLOW_DATA:-$ROOT/../shared/data}
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
SCEN=("$@")
[ ${#SCEN[@]} -gt 0 ] || SCEN=(qs-w1 qs-w3 qs-2p ml gen-exact gen-lsh-users gen-lsh-none gen-lsh-mips gen-popular warm svd svd-2p svd-warm checkpoint)

new_sets=()
for kv in ${NEW_SET:-}; do new_sets+=(--set "$kv"); done

# A 1 M-event generated set and a day-2 delta, written once by the old binary.
GEN=$OUT/gen.tsv
if [ ! -s "$GEN" ]; then
  "$OLD" generate --users 50000 --items 10000 --nnz 1000000 --seed 5 --out "$GEN" >/dev/null
  "$OLD" generate --users 50000 --items 10000 --nnz 1000000 --seed 5 --delta 1 --out "$OUT/gen-day2.tsv" >/dev/null
fi
cat > "$OUT/gen.toml" <<EOF
[input]
path = ["$GEN"]
[als]
factors = 32
iterations = 5
[similar]
k = 10
[eval]
holdout = 0.1
k = [10, 20]
EOF
cat > "$OUT/warm.toml" <<EOF
[input]
path = ["$GEN"]
[als]
factors = 16
iterations = 3
[lsh]
tables = 2
[recommend]
mode = "lsh"
EOF

# run BIN LABEL STORE JOB [args...]: one job into STORE (created fresh unless warm).
run() {
  local bin=$1 label=$2 store=$3 job=$4; shift 4
  local extra=()
  [ "$label" = new ] && extra=("${new_sets[@]}")
  "$bin" run "$job" --quiet --set output.store="$store" "${extra[@]}" "$@" >"$store.log" 2>&1 \
    || { echo "  $label run failed: see $store.log"; tail -3 "$store.log"; return 1; }
}

run_2p() {
  local bin=$1 label=$2 store=$3 job=$4; shift 4
  local extra=()
  [ "$label" = new ] && extra=("${new_sets[@]}")
  RECFLOW=$bin "$ROOT/scripts/cluster-local.sh" 2 2 "$job" --quiet --set output.store="$store" \
    "${extra[@]}" "$@" >"$store.log" 2>&1 || { echo "  $label 2-process run failed: see $store.log"; return 1; }
}

# normalise BIN STORE DIR: what a user gets from the store's CURRENT version, as plain files.
normalise() {
  local bin=$1 store=$2 dir=$3 v
  rm -rf "$dir"; mkdir -p "$dir"
  v=$(cat "$store/CURRENT")
  "$bin" export "$store" --out "$dir/export" >/dev/null
  for part in similar buckets; do
    if [ -d "$store/$v/$part" ]; then
      # Plain or zstd parts (output.compression): compared as text.
      { find "$store/$v/$part" -type f -name '*.tsv' -print0 | sort -z | xargs -0 -r cat
        find "$store/$v/$part" -type f -name '*.tsv.zst' -print0 | sort -z | xargs -0 -r zstd -dcq
      } | LC_ALL=C sort >"$dir/$part.tsv"
    fi
  done
  # A checkpointing run's last state: its fingerprint and every factor file's digest.
  [ -f "$store/.checkpoint/state.json" ] && cp "$store/.checkpoint/state.json" "$dir/checkpoint-state.json"
  python3 - "$store/$v" "$dir/summary.json" <<'PY'
import json, sys, os
v, out = sys.argv[1], sys.argv[2]
m = json.load(open(os.path.join(v, "manifest.json")))
r = json.load(open(os.path.join(v, "report.json")))
keep = {
    "metrics": m.get("metrics"),
    "valid_metrics": m.get("valid_metrics"),
    "factors": m.get("factors"),
    "objective": r.get("objective"),
    "counts": r.get("counts"),
    "lsh": r.get("lsh"),
    "degrees": r.get("degrees"),
    "dropped": r.get("dropped"),
    "svd": {k: x for k, x in (m.get("svd") or {}).items() if k != "secs"},
}
json.dump(keep, open(out, "w"), indent=1, sort_keys=True)
PY
}

scenario() {
  local name=$1 job mode=run args=()
  case $name in
    qs-w1) job=$ROOT/jobs/quickstart.toml; args=(-w 1) ;;
    qs-w3) job=$ROOT/jobs/quickstart.toml; args=(-w "$W") ;;
    qs-2p) job=$ROOT/jobs/quickstart.toml; mode=run_2p ;;
    ml) job=$ROOT/jobs/movielens.toml; args=(-w 2) ;;
    gen-exact) job=$OUT/gen.toml; args=(-w "$W") ;;
    gen-lsh-users) job=$OUT/gen.toml; args=(-w "$W" --set recommend.mode=lsh --set lsh.tables=2) ;;
    gen-lsh-none) job=$OUT/gen.toml; args=(-w "$W" --set recommend.mode=lsh --set lsh.transform=none --set lsh.tables=4) ;;
    gen-lsh-mips) job=$OUT/gen.toml; args=(-w "$W" --set recommend.mode=lsh --set lsh.transform=mips --set lsh.tables=4) ;;
    gen-popular) job=$OUT/gen.toml; args=(-w 2 --set recommend.mode=popular) ;;
    warm) job=$OUT/warm.toml; args=(-w 2) ;;
    svd) job=$OUT/gen.toml; args=(-w "$W" --set model.method=svd --set svd.rank=16) ;;
    svd-2p) job=$ROOT/jobs/quickstart.toml; mode=run_2p; args=(--set model.method=svd --set svd.rank=8) ;;
    svd-warm) job=$OUT/gen.toml; args=(-w 2 --set model.method=svd --set svd.rank=16 --set recommend.mode=popular) ;;
    checkpoint) job=$ROOT/jobs/quickstart.toml; args=(-w 2 --set als.checkpoint_every=1) ;;
    *) echo "unknown scenario $name"; return 2 ;;
  esac
  [ "$name" = ml ] && [ ! -e "$DATA/ml-100k/u.data" ] && { echo "$name: skipped (no $DATA/ml-100k)"; return 0; }
  local bin label store
  for label in old new; do
    bin=$OLD; [ $label = new ] && bin=$NEW
    store=$OUT/$name-$label
    rm -rf "$store"
    (cd "$(dirname "$job")" && $mode "$bin" $label "$store" "$job" "${args[@]}") || return 1
    if [ "$name" = warm ] || [ "$name" = svd-warm ]; then
      (cd "$OUT" && $mode "$bin" $label "$store" "$job" "${args[@]}" \
        --set "input.path=$OUT/gen-day2.tsv" --set model.warm_start=true) || return 1
    fi
    normalise "$bin" "$store" "$OUT/$name-$label.out"
  done
  if diff -rq "$OUT/$name-old.out" "$OUT/$name-new.out" >"$OUT/$name.diff"; then
    echo "$name: identical ($(du -sh "$OUT/$name-new.out" | cut -f1) compared)"
  else
    echo "$name: DIFFERENT"; sed 's/^/  /' "$OUT/$name.diff"; return 1
  fi
}

status=0
for s in "${SCEN[@]}"; do scenario "$s" || status=1; done
exit $status
