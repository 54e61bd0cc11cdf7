#!/usr/bin/env bash
# What the objective costs (issue #14): CPU seconds of training with `als.loss_every = 1`
# (the default) against `0`, on the default job for each shape, rounds interleaved. CPU time
# (perf's task-clock, all threads) rather than wall time: it is far less disturbed by other
# load on a shared machine. Training CPU = run CPU − the CPU of the same run with 0 iterations.
#
# Usage: scripts/bench-objective.sh [SHAPE ...]   SHAPE = USERSxITEMSxNNZ (default: three shapes)
#   env: REPEAT (3); RECFLOW (target/release/recflow); needs perf
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT=${REPEAT:-3}; BIN=${RECFLOW:-target/release/recflow}
[ -x "$BIN" ] || cargo build --release
SHAPES=("$@"); [ ${#SHAPES[@]} -gt 0 ] || SHAPES=(300000x50000x2400000 1000000x100000x10000000 50000x20000x2500000)
cpu() { # job, sets... -> CPU seconds of the whole run
  local out; out=$(mktemp -d)
  perf stat -x, -e task-clock -o "$out/stat" "$BIN" run "$1" -q --set output.store="$out/s" "${@:2}" > /dev/null
  awk -F, '/task-clock/ { printf "%.3f", $1 / 1000 }' "$out/stat"; rm -rf "$out"
}
echo "# $(date -u +%FT%TZ) $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
printf "%-26s %5s %12s %12s %12s %10s\n" shape round "cpu iters=0" "cpu loss=0" "cpu loss=1" "obj share"
for shape in "${SHAPES[@]}"; do
  IFS=x read -r U I N <<< "$shape"
  data=target/bench-data/defaults-$shape.tsv; mkdir -p target/bench-data target/bench-objective
  [ -s "$data" ] || { "$BIN" generate --users "$U" --items "$I" --nnz "$N" --out "$data.tmp" && mv "$data.tmp" "$data"; }
  job=target/bench-objective/$shape.toml
  printf '[input]\npath = "%s"\n[recommend]\nk = 0\n' "$(realpath "$data")" > "$job"
  for r in $(seq 1 "$REPEAT"); do
    z=$(cpu "$job" --set als.iterations=0); a=$(cpu "$job" --set als.loss_every=0); b=$(cpu "$job")
    printf "%-26s %5s %12s %12s %12s %9.1f%%\n" "$shape" "$r" "$z" "$a" "$b" \
      "$(python3 -c "print(100 * ($b - $a) / ($a - $z))")"
  done
done
