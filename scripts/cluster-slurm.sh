#!/usr/bin/env bash
# One recflow job over a Slurm allocation: one task per node, threads = cores per task.
#   sbatch -N 4 --ntasks-per-node=1 -c 16 scripts/cluster-slurm.sh jobs/nightly.toml
# recflow reads SLURM_NTASKS / SLURM_PROCID itself; this script only builds the host list
# (RECFLOW_HOSTS, in task order) and starts the tasks. The input and the model store must be on
# a filesystem every node sees. timely's TCP is unauthenticated: use a private network.
set -euo pipefail
JOB=${1:?job file}; shift
PORT=${RECFLOW_PORT:-2101}
BIN=${RECFLOW:-recflow}
RECFLOW_HOSTS=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/\$/:$PORT/" | paste -sd, -)
export RECFLOW_HOSTS
exec srun --kill-on-bad-exit=1 "$BIN" run "$JOB" -w "${SLURM_CPUS_PER_TASK:-1}" "$@"
