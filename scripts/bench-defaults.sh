#!/usr/bin/env bash
# Default settings against implicit 0.7.3 (issue #14): the job a user writes — `[input] path`
# and nothing else — timed per iteration, with and without the objective, next to implicit's
# CG fit (num_threads = THREADS) with the same factors (64), regularization (0.01),
# iterations (15) and confidence matrix (recflow's c = 1 + alpha*ln(1 + w), with the alpha the
# recflow run chose, read from its manifest). Fit only: implicit's recommend-all is not timed.
#
# Usage: scripts/bench-defaults.sh [SHAPE ...]   SHAPE = USERSxITEMSxNNZ (default: three shapes)
#   env: THREADS (2), REPEAT (3) rounds, interleaved; RECFLOW (target/release/recflow)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}; REPEAT=${REPEAT:-3}
BIN=${RECFLOW:-target/release/recflow}; VENV=target/bench-venv
[ -x "$BIN" ] || cargo build --release
"$VENV/bin/python" -c "import implicit, pandas, scipy" 2>/dev/null || {
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q implicit==0.7.3 pandas scipy; }
SHAPES=("$@"); [ ${#SHAPES[@]} -gt 0 ] || SHAPES=(300000x50000x2400000 1000000x100000x10000000 50000x20000x2500000)
echo "# $(date -u +%FT%TZ) $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
printf "%-26s %5s %10s %10s %10s %8s %10s %10s\n" shape round "def s/it" "noloss s/it" "impl s/it" ratio "obj share" alpha
for shape in "${SHAPES[@]}"; do
  IFS=x read -r U I N <<< "$shape"
  data=target/bench-data/defaults-$shape.tsv
  mkdir -p target/bench-data target/bench-defaults
  [ -s "$data" ] || { "$BIN" generate --users "$U" --items "$I" --nnz "$N" --out "$data.tmp" && mv "$data.tmp" "$data"; }
  out=target/bench-defaults/$shape; mkdir -p "$out"
  printf '[input]\npath = "%s"\n[output]\nstore = "store"\nkeep_versions = 1\n' "$(realpath "$data")" > "$out/job.toml"
  for r in $(seq 1 "$REPEAT"); do
    med() { python3 -c "import json,statistics,sys; m=json.load(open(sys.argv[1])); print('%.4f' % statistics.median(m['train']['iteration_secs']))" "$1"; }
    rm -rf "$out/s1" "$out/s2"
    "$BIN" run "$out/job.toml" -q --set output.store="$out/s1" > /dev/null
    m1="$out/s1/$(cat "$out/s1/CURRENT")/manifest.json"
    "$BIN" run "$out/job.toml" -q --set output.store="$out/s2" --set als.loss_every=0 > /dev/null
    m2="$out/s2/$(cat "$out/s2/CURRENT")/manifest.json"
    alpha=$(jq '.confidence.alpha' "$m1")
    "$VENV/bin/python" scripts/bench_implicit.py run --train "$data" --out "$out/impl.json" --recs "$out/impl.npz" \
      --factors 64 --regularization 0.01 --iterations 15 --threads "$THREADS" --solver cg --k 0 \
      --scheme log --alpha "$alpha" > /dev/null
    a=$(med "$m1"); b=$(med "$m2")
    c=$(python3 -c "import json,statistics; print('%.4f' % statistics.median(json.load(open('$out/impl.json'))['iteration_secs']))")
    printf "%-26s %5s %10s %10s %10s %8.3f %9.1f%% %10.3f\n" "$shape" "$r" "$a" "$b" "$c" \
      "$(python3 -c "print($a/$c)")" "$(python3 -c "print(100*($a-$b)/$a)")" "$alpha"
  done
done
