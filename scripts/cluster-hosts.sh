#!/usr/bin/env bash
# One recflow job over a list of hosts, started with ssh.
# Usage: scripts/cluster-hosts.sh HOSTFILE THREADS JOB.toml [extra recflow run args...]
#   HOSTFILE: one host:port per line, in process order (the same file is passed to recflow,
#   so it must exist at the same path on every host, e.g. on the shared filesystem; so must
#   the job file and the store).
#   env: RECFLOW (binary path on the hosts, default "recflow"), SSH (default "ssh -o BatchMode=yes").
# Waits for all processes and exits with the first failure's code, stopping the others.
#
# A remote process dies with its ssh connection: each one runs under a small shell that kills
# it when the connection's stdin closes (the launcher exiting, or its ssh client being killed),
# so stopping the launcher never leaves recflow running on a host.
# Tested on loopback against a real sshd (see docs/BENCHMARKS.md, "Cluster launchers").
set -euo pipefail
HOSTS=${1:?hostfile}; T=${2:?threads}; JOB=${3:?job file}; shift 3
BIN=${RECFLOW:-recflow}; SSH=${SSH:-ssh -o BatchMode=yes}
mapfile -t hosts < <(grep -v '^\s*\(#\|$\)' "$HOSTS")
N=${#hosts[@]}
# Every ssh reads from this FIFO, which only this script holds open for writing (fd 5; the
# children get the read end only): when the script ends, however it ends, every remote side
# sees end-of-file.
dir=$(mktemp -d); mkfifo "$dir/keep"
exec 3<>"$dir/keep" 4<"$dir/keep" 5>"$dir/keep" 3>&-
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; exec 5>&-; rm -rf "$dir"; }
trap cleanup EXIT
for ((p = 0; p < N; p++)); do
  host=${hosts[$p]%:*}
  cmd=$(printf '%q ' "$BIN" run "$JOB" -n "$N" -p "$p" -w "$T" --hostfile "$HOSTS" "$@")
  # The reader is a builtin in its own subshell, so killing it leaves no process behind; it
  # reads a copy of stdin (fd 4) because background jobs get /dev/null as stdin.
  remote="exec 4<&0; $cmd & r=\$!; ( read -r _ <&4; kill \$r 2>/dev/null ) & w=\$!; wait \$r; s=\$?; kill \$w 2>/dev/null; exit \$s"
  $SSH "$host" "$remote" <&4 4<&- 5>&- &
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
