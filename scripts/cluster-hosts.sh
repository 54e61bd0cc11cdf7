#!/usr/bin/env bash
# One recflow job over a list of hosts, started with ssh.
# Usage: scripts/cluster-hosts.sh HOSTFILE THREADS JOB.toml [extra recflow run args...]
#   HOSTFILE: one host:port per line, in process order (the same file is passed to recflow,
#   so it must exist at the same path on every host, e.g. on the shared filesystem).
#   env: RECFLOW (binary path on the hosts, default "recflow"), SSH (default "ssh").
# Waits for all processes and exits with the first failure's code, stopping the others.
set -euo pipefail
HOSTS=${1:?hostfile}; T=${2:?threads}; JOB=${3:?job file}; shift 3
BIN=${RECFLOW:-recflow}; SSH=${SSH:-ssh}
mapfile -t hosts < <(grep -v '^\s*\(#\|$\)' "$HOSTS")
N=${#hosts[@]}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
for ((p = 0; p < N; p++)); do
  host=${hosts[$p]%:*}
  $SSH "$host" "$BIN" run "$JOB" -n "$N" -p "$p" -w "$T" --hostfile "$HOSTS" "$@" &
  pids+=($!)
done
status=0
for _ in "${pids[@]}"; do
  wait -n || status=$?
  if [ "$status" -ne 0 ]; then
    echo "cluster-hosts: a process failed (exit $status); stopping the others" >&2
    break
  fi
done
exit "$status"
