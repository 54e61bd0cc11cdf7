#!/usr/bin/env bash
# recflow vs implicit 0.7.3 on one synthetic data set, side by side in one run (issue #5).
#
# Usage: scripts/bench.sh            (from anywhere; works in the repository root)
#   BENCH_SCALE=full|small   full (default): 1 M users x 100 k items x 10 M rows; small: 100 k x 20 k x 1 M
#   USERS ITEMS NNZ RANK SEED   generator flags (override the scale's defaults); data is reused from
#                               target/bench-data/ when the same file exists
#   TEST_FRACTION (0.2) SPLIT_SEED (7)   the 80/20 split: awk rand() per row with this seed, written
#                               once to target/bench-data/<set>/{train,test}.tsv; both systems train
#                               on the same train.tsv and are scored by the same evaluator on test.tsv
#   FACTORS (64) REG (0.01) ALPHA (1.0) ITERS (15) CG_STEPS (3) K (10)   hyperparameters, identical
#                               for both: constant regularization, confidence 1 + ALPHA*w (implicit
#                               gets the matrix 1 + ALPHA*w and alpha = 1, see bench_implicit.py)
#   WORKERS ("1 2")  recflow worker counts; implicit runs with num_threads = THREADS (2)
#   SOLVERS ("cg cholesky")   REPEAT (1): rounds; each round runs every configuration interleaved
#   IMPLICIT (auto|0|1)  auto: run implicit when target/bench-venv has it, creating the venv with pip
#                        if missing (1: must; 0: recflow only)
#   IMPLICIT_RECOMMEND ("cg")  implicit solvers whose run includes recommend-all (implicit's
#                        recommend-all is slow: about 15 min at full scale); the others fit only
#   RECFLOW (target/release/recflow, built if missing)   OUT (target/bench/<set>-f<F>)
#
# Whole job: recflow = `recflow run` (read TSV, train, exact top-K for every user without seen
# items, publish); implicit = pandas/scipy load + fit + recommend(N=K, filter_already_liked_items)
# for every user, timed inside the process. Peak RSS of both from /usr/bin/time -v.
# Prints one table per round and the ratios recflow / implicit.
set -euo pipefail
cd "$(dirname "$0")/.."
case ${BENCH_SCALE:-full} in
  small) dU=100000 dI=20000 dN=1000000 ;;
  full) dU=1000000 dI=100000 dN=10000000 ;;
  *) echo "BENCH_SCALE must be full or small" >&2; exit 2 ;;
esac
USERS=${USERS:-$dU}; ITEMS=${ITEMS:-$dI}; NNZ=${NNZ:-$dN}; RANK=${RANK:-16}; SEED=${SEED:-1}
TEST_FRACTION=${TEST_FRACTION:-0.2}; SPLIT_SEED=${SPLIT_SEED:-7}
FACTORS=${FACTORS:-64}; REG=${REG:-0.01}; ALPHA=${ALPHA:-1.0}; ITERS=${ITERS:-15}
CG_STEPS=${CG_STEPS:-3}; K=${K:-10}; THREADS=${THREADS:-2}
WORKERS=${WORKERS:-"1 2"}; SOLVERS=${SOLVERS:-"cg cholesky"}; REPEAT=${REPEAT:-1}
IMPLICIT=${IMPLICIT:-auto}; IMPLICIT_RECOMMEND=${IMPLICIT_RECOMMEND:-cg}
BIN=${RECFLOW:-target/release/recflow}
VENV=target/bench-venv
[ -x "$BIN" ] || cargo build --release
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (GNU time)" >&2; exit 2; }

SET="u$USERS-i$ITEMS-n$NNZ-r$RANK-s$SEED"
DATA=target/bench-data/$SET.tsv
SPLIT=target/bench-data/$SET/split-$TEST_FRACTION-$SPLIT_SEED
OUT=${OUT:-target/bench/$SET-f$FACTORS}
mkdir -p target/bench-data "$SPLIT" "$OUT"
if [ ! -s "$DATA" ]; then
  "$BIN" generate --users "$USERS" --items "$ITEMS" --nnz "$NNZ" --rank "$RANK" --seed "$SEED" --out "$DATA.tmp"
  mv "$DATA.tmp" "$DATA"
fi
if [ ! -s "$SPLIT/train.tsv" ]; then
  awk -v seed="$SPLIT_SEED" -v frac="$TEST_FRACTION" -v tr="$SPLIT/train.tmp" -v te="$SPLIT/test.tmp" \
    'BEGIN { srand(seed) } { if (rand() < frac) print > te; else print > tr }' "$DATA"
  mv "$SPLIT/test.tmp" "$SPLIT/test.tsv"; mv "$SPLIT/train.tmp" "$SPLIT/train.tsv"
fi
TRAIN=$(realpath "$SPLIT/train.tsv"); TEST=$(realpath "$SPLIT/test.tsv")

have_implicit() { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import implicit, pandas, scipy" 2>/dev/null; }
if [ "$IMPLICIT" != 0 ] && ! have_implicit; then
  echo "creating $VENV (implicit==0.7.3 pandas scipy)" >&2
  { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q implicit==0.7.3 pandas scipy; } >&2 || true
  if ! have_implicit; then
    [ "$IMPLICIT" = 1 ] && { echo "implicit not available" >&2; exit 1; }
    echo "implicit not available: recflow only" >&2; IMPLICIT=0
  fi
fi
[ "$IMPLICIT" = auto ] && IMPLICIT=1
PY=python3; [ -x "$VENV/bin/python" ] && PY=$VENV/bin/python

cat > "$OUT/job.toml" <<JOB
[input]
path = ["$TRAIN"]
format = "tsv"
header = "false"
user = 0
item = 1
weight = 2
[confidence]
alpha = $ALPHA
[als]
factors = $FACTORS
regularization = $REG
iterations = $ITERS
cg_steps = $CG_STEPS
loss_every = 0
[recommend]
k = $K
mode = "exact"
exclude_seen = true
[eval]
holdout = 0.0
[output]
store = "store"
keep_versions = 1
JOB

echo "# $(date -u +%FT%TZ) $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "# data $SET ($(wc -l < "$TRAIN") train / $(wc -l < "$TEST") test rows); factors $FACTORS, reg $REG, alpha $ALPHA, iterations $ITERS, cg_steps $CG_STEPS, k $K"

rss_mb() { awk -F': ' '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$1"; }
wall_s() { awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, a, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + a[i]; printf "%.1f", s }' "$1"; }
precision() { # $1: --recflow DIR | --recs FILE
  if "$PY" -c "import pandas" 2>/dev/null; then
    "$PY" scripts/bench_implicit.py eval --train "$TRAIN" --test "$TEST" --k "$K" "$@" | "$PY" -c "import json,sys; print('%.4f' % json.load(sys.stdin)['precision'])"
  else
    echo "-"
  fi
}

# Rows: system solver workers s/iter(median) ingest_s fit_s recommend_s total_s wall_s rss_mb p@k
ROWS="$OUT/rows.tsv"; : > "$ROWS"
run_recflow() { # solver workers round
  local dir="$OUT/recflow-$1-w$2-r$3"
  rm -rf "$dir"; mkdir -p "$dir"
  /usr/bin/time -v -o "$dir/time.txt" "$BIN" run "$OUT/job.toml" -w "$2" -q \
    --set output.store="$dir/store" --set als.solver="$1" > "$dir/stdout" 2> "$dir/stderr"
  local m; m=$(ls "$dir"/store/v*/manifest.json)
  local p; p=$(precision --recflow "$(dirname "$m")")
  python3 - "$m" "$1" "$2" "$(wall_s "$dir/time.txt")" "$(rss_mb "$dir/time.txt")" "$p" >> "$ROWS" <<'PY'
import json, statistics, sys
m = json.load(open(sys.argv[1])); t = m["timings"]; it = m["train"]["iteration_secs"]
print("\t".join(["recflow", sys.argv[2], sys.argv[3], "%.3f" % statistics.median(it),
      "%.2f" % t["ingest_secs"], "%.2f" % t["train_secs"], "%.2f" % t.get("recommend_secs", 0),
      "%.2f" % t["total_secs"], sys.argv[4], sys.argv[5], sys.argv[6]]))
PY
  # Keep the manifest (flops, GFLOP/s, floor) and drop the rest.
  cp "$m" "$dir/manifest.json"; rm -rf "$dir/store"
}
run_implicit() { # solver round
  local dir="$OUT/implicit-$1-r$2"
  rm -rf "$dir"; mkdir -p "$dir"
  local rec=0
  case " $IMPLICIT_RECOMMEND " in *" $1 "*) rec=$K ;; esac
  /usr/bin/time -v -o "$dir/time.txt" "$VENV/bin/python" scripts/bench_implicit.py run \
    --train "$TRAIN" --out "$dir/result.json" --recs "$dir/recs.npz" --factors "$FACTORS" \
    --regularization "$REG" --alpha "$ALPHA" --iterations "$ITERS" --threads "$THREADS" \
    --solver "$1" --cg-steps "$CG_STEPS" --k "$rec" > "$dir/stdout" 2> "$dir/stderr"
  local p="-"; [ "$rec" != 0 ] && p=$(precision --recs "$dir/recs.npz")
  python3 - "$dir/result.json" "$1" "$THREADS" "$(wall_s "$dir/time.txt")" "$(rss_mb "$dir/time.txt")" "$p" "$rec" >> "$ROWS" <<'PY'
import json, statistics, sys
r = json.load(open(sys.argv[1]))
rec = sys.argv[7] != "0"
print("\t".join(["implicit", sys.argv[2], sys.argv[3], "%.3f" % statistics.median(r["iteration_secs"]),
      "%.2f" % r["load_s"], "%.2f" % r["fit_s"], "%.2f" % r["recommend_s"] if rec else "-",
      "%.2f" % r["total_s"] if rec else "-", sys.argv[4] if rec else "-", sys.argv[5], sys.argv[6]]))
PY
  rm -f "$dir/recs.npz"
}

for round in $(seq 1 "$REPEAT"); do
  for solver in $SOLVERS; do
    for w in $WORKERS; do run_recflow "$solver" "$w" "$round"; done
    [ "$IMPLICIT" = 1 ] && run_implicit "$solver" "$round"
  done
done

python3 - "$ROWS" "$THREADS" <<'PY'
import sys
from collections import defaultdict
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
hdr = ["system", "solver", "w", "s/iter", "ingest_s", "fit_s", "recommend_s", "job_s", "wall_s", "rss_MB", "p@k"]
print("\n" + "  ".join(f"{h:>11}" for h in hdr))
for r in rows:
    print("  ".join(f"{c:>11}" for c in r))
# Medians over rounds, then ratios against implicit (same solver, and implicit-cg for whole job).
def med(v):
    v = sorted(v); return v[len(v) // 2] if v else None
agg = defaultdict(lambda: defaultdict(list))
for r in rows:
    for i, h in enumerate(hdr[3:], 3):
        try:
            agg[(r[0], r[1], r[2])][h].append(float(r[i]))
        except ValueError:
            pass
imp = {s: agg[("implicit", s, sys.argv[2])] for s in ("cg", "cholesky")}
print("\nratios recflow / implicit (medians over rounds; whole job and wall vs implicit's run with recommend-all)")
print("  ".join(f"{h:>14}" for h in ["solver", "w", "s/iter", "ingest", "job_s", "wall_s", "rss", "p@k"]))
def ratio(a, b):
    return f"{a / b:.3f}" if a is not None and b else "-"
for (sysname, s, w), v in sorted(agg.items()):
    if sysname != "recflow":
        continue
    i = imp.get(s, {})
    # implicit's whole job: the same solver if it ran recommend-all, else any that did.
    full = i if i.get("job_s") else next((x for x in imp.values() if x.get("job_s")), {})
    print("  ".join(f"{c:>14}" for c in [s, w,
        ratio(med(v["s/iter"]), med(i.get("s/iter", []))),
        ratio(med(v["ingest_s"]), med(i.get("ingest_s", []))),
        ratio(med(v["job_s"]), med(full.get("job_s", []))),
        ratio(med(v["wall_s"]), med(full.get("wall_s", []))),
        ratio(med(v["rss_MB"]), med(i.get("rss_MB", []))),
        ratio(med(v.get("p@k", [])), med(full.get("p@k", [])))]))
PY
echo "rows: $ROWS; manifests (train.flops_per_half_step, gflops_per_worker, floor) under $OUT/recflow-*"
