#!/usr/bin/env bash
# One recflow job over a Slurm allocation; threads per process = cores per task.
#   sbatch -N 4 --ntasks-per-node=1 -c 16 scripts/cluster-slurm.sh jobs/nightly.toml
#   sbatch -n 3 -c 1 scripts/cluster-slurm.sh jobs/quickstart.toml    # several tasks per node work too
# recflow reads SLURM_NTASKS / SLURM_PROCID itself; this script only builds the host list
# (RECFLOW_HOSTS, one host:port per task in task order; tasks sharing a node get consecutive
# ports from RECFLOW_PORT) and starts the tasks with block distribution, so task order follows
# the node list. The input and the model store must be on a filesystem every node sees.
# timely's TCP is unauthenticated: use a private network.
# Tested on a single-node Slurm 22.05 (see docs/BENCHMARKS.md, "Cluster launchers").
set -euo pipefail
JOB=${1:?job file}; shift
PORT=${RECFLOW_PORT:-2101}
BIN=${RECFLOW:-recflow}
mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
# SLURM_TASKS_PER_NODE looks like "2(x3),1": 2 tasks on each of 3 nodes, then 1.
counts=()
IFS=, read -ra parts <<< "${SLURM_TASKS_PER_NODE:-1}"
for part in "${parts[@]}"; do
  if [[ $part =~ ^([0-9]+)\(x([0-9]+)\)$ ]]; then
    for ((r = 0; r < BASH_REMATCH[2]; r++)); do counts+=("${BASH_REMATCH[1]}"); done
  else
    counts+=("$part")
  fi
done
hosts=()
for i in "${!nodes[@]}"; do
  for ((l = 0; l < ${counts[$i]:-1}; l++)); do hosts+=("${nodes[$i]}:$((PORT + l))"); done
done
RECFLOW_HOSTS=$(IFS=,; echo "${hosts[*]}")
export RECFLOW_HOSTS
exec srun --kill-on-bad-exit=1 --distribution=block "$BIN" run "$JOB" -w "${SLURM_CPUS_PER_TASK:-1}" "$@"
