#!/usr/bin/env bash
# Runs one recflow job as N processes on this machine, talking over loopback.
# Usage: scripts/cluster-local.sh N THREADS JOB.toml [extra recflow run args...]
#   env: RECFLOW (binary, default target/release/recflow)
# Picks free ports, starts every process, waits for all of them and exits with the first
# failure's code (killing the rest), so a dead process never leaves the others running.
set -euo pipefail
N=${1:?processes}; T=${2:?threads per process}; JOB=${3:?job file}; shift 3
BIN=${RECFLOW:-target/release/recflow}
HOSTS=$(mktemp)
trap 'rm -f "$HOSTS"; kill $(jobs -p) 2>/dev/null || true' EXIT
python3 - "$N" > "$HOSTS" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print("\n".join(f"127.0.0.1:{s.getsockname()[1]}" for s in socks))
PY
pids=()
for ((p = 0; p < N; p++)); do
  # Only process 0 prints progress and the summary.
  "$BIN" run "$JOB" -n "$N" -p "$p" -w "$T" --hostfile "$HOSTS" "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  wait -n || status=$?
  if [ "$status" -ne 0 ]; then
    echo "cluster-local: a process failed (exit $status); stopping the others" >&2
    kill "${pids[@]}" 2>/dev/null || true
    break
  fi
done
wait 2>/dev/null || true
exit "$status"
