#!/usr/bin/env bash
# Scaling of ALS with worker threads (and processes) on synthetic data.
# Usage: scripts/bench-scaling.sh [RECFLOW_BIN] [OUT_DIR]
#   env: USERS ITEMS NNZ FACTORS ITERS WORKERS ("1 2 4 8 16") PROCS ("4x4": processes x threads)
# Needs a machine with at least 16 cores for meaningful times (efficiency = t1 / (W * tW)). The
# counted side (flops, bytes, balance per worker) comes from `recflow plan`, printed first, and
# each run's report carries the same counts next to its times.
set -euo pipefail
BIN=${1:-target/release/recflow}
OUT=${2:-target/bench}
USERS=${USERS:-1000000}; ITEMS=${ITEMS:-100000}; NNZ=${NNZ:-10000000}
FACTORS=${FACTORS:-64}; ITERS=${ITERS:-3}
WORKERS=${WORKERS:-"1 2 4 8 16"}
PROCS=${PROCS-"4x4"}
mkdir -p "$OUT"
DATA="$OUT/synth-${USERS}-${ITEMS}-${NNZ}.tsv"
if [ ! -f "$DATA" ]; then
  /usr/bin/time -f "generate: %e s, %M KB" "$BIN" generate --users "$USERS" --items "$ITEMS" --nnz "$NNZ" --seed 1 --out "$DATA"
fi
cat > "$OUT/job.toml" <<JOB
[input]
path = ["$(realpath "$DATA")"]
weight = 2
[confidence]
alpha = 1.0
[als]
factors = $FACTORS
regularization = 0.01
iterations = $ITERS
loss_every = 0
[recommend]
k = 0
JOB
echo "== counted (recflow plan) =="
"$BIN" plan "$OUT/job.toml" -w "$(echo $WORKERS | tr ' ' ',')" --json "$OUT/plan.json"
echo "== timed =="
# One table row from the run's manifest: layout, peak RSS (MB or "-").
report() {
  python3 - "$1" "$2" "$OUT"/store/v*/manifest.json <<'PY'
import json, sys, statistics
m = json.load(open(sys.argv[3]))
it = m["train"]["iteration_secs"]
vb = m["train"]["vector_bytes_per_half_step"]
# Solve-time and flops balance (max/mean over workers) of the second iteration's half-steps.
def ratio(h, k):
    v = [w[k] for w in h["workers"]]
    mean = sum(v) / len(v)
    return max(v) / mean if mean > 0 else 1.0
cost = [h for h in m["train"].get("cost", []) if h["iteration"] == min(2, len(it))]
bal = " ".join(f"{h['half']}:flops {ratio(h, 'flops'):.3f} secs {ratio(h, 'secs'):.3f}" for h in cost)
print(f"{sys.argv[1]:<8} {m['timings']['ingest_secs']:<10.2f} {statistics.median(it):<12.3f} {m['timings']['train_secs']:<12.2f} {sys.argv[2]:<10} vector_MB/half-step {[round(b/1e6,1) for b in vb[:2]]} max/mean {bal}")
PY
}
printf "%-8s %-10s %-12s %-12s %-10s %s\n" layout ingest_s iter_s_median train_s peak_rss_mb traffic
for w in $WORKERS; do
  rm -rf "$OUT/store"
  /usr/bin/time -f "%M" -o "$OUT/rss" "$BIN" run "$OUT/job.toml" -w "$w" -q --set output.store="$OUT/store" > /dev/null
  report "1x$w" "$(( $(cat "$OUT/rss") / 1024 ))"
done
# Process layouts (PROCS="4x4 2x8"): N processes × T threads on loopback via cluster-local.sh.
for layout in $PROCS; do
  n=${layout%x*}; t=${layout#*x}
  rm -rf "$OUT/store"
  RECFLOW="$BIN" /usr/bin/time -f "%M" -o "$OUT/rss" "$(dirname "$0")/cluster-local.sh" "$n" "$t" "$OUT/job.toml" -q --set output.store="$OUT/store" > /dev/null
  report "$layout" "-"
done
