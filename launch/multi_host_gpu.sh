#!/usr/bin/env bash
# One process per GPU host of a multi-host job: finetune together, then evaluate together.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=launch/common.sh
source "$HERE/common.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") --config CONFIG.yaml --workdir DIR [options]

Run this script once on every host, with one of:
  SLURM     srun --nodes=4 --ntasks-per-node=1 --gpus-per-node=8 $(basename "$0") --config C --workdir D
            (jax reads the coordinator, process count and id from SLURM's environment)
  explicit  on host i of N:  $(basename "$0") --coordinator HOST0:1234 --num-processes N --process-id i \\
                               --config C --workdir D

All processes run 'alert-jax finetune' as one job, then 'alert-jax evaluate' of the best checkpoint as
one job (the model sharded over every GPU of every host; process 0 writes DIR/eval). Each process logs to
DIR/logs/{finetune,evaluate}-process<i>.log. DIR must be one shared directory (NFS, Lustre) seen by every
host. Re-running resumes both stages.

Options:
  --config FILE          experiment config                                  [required]
  --workdir DIR          shared run directory                               [required]
  --coordinator H:PORT   JAX_COORDINATOR_ADDRESS (omit under SLURM)
  --num-processes N      JAX_NUM_PROCESSES (with --coordinator)
  --process-id I         JAX_PROCESS_ID, 0..N-1 (with --coordinator)
  --set KEY=VALUE        config override, repeatable
  --skip-eval            only finetune
  -h, --help             show this help
USAGE
}

config="" workdir="" coordinator="" num_processes="" process_id="" skip_eval=0
overrides=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --config) need_value "$@"; config=$2; shift 2 ;;
    --workdir) need_value "$@"; workdir=$2; shift 2 ;;
    --coordinator) need_value "$@"; coordinator=$2; shift 2 ;;
    --num-processes) need_value "$@"; num_processes=$2; shift 2 ;;
    --process-id) need_value "$@"; process_id=$2; shift 2 ;;
    --set) need_value "$@"; overrides+=(--set "$2"); shift 2 ;;
    --skip-eval) skip_eval=1; shift ;;
    *) die "unknown argument $1" ;;
  esac
done
require_config_and_workdir "$config" "$workdir"

if [[ -n "$coordinator" ]]; then
  [[ "$num_processes" =~ ^[1-9][0-9]*$ ]] || die "--num-processes must be a positive integer with --coordinator"
  [[ "$process_id" =~ ^[0-9]+$ && "$process_id" -lt "$num_processes" ]] \
    || die "--process-id must be in 0..$((num_processes - 1)) with --coordinator"
  export JAX_COORDINATOR_ADDRESS=$coordinator JAX_NUM_PROCESSES=$num_processes JAX_PROCESS_ID=$process_id
elif [[ -n "${SLURM_PROCID:-}" && "${SLURM_NTASKS:-1}" -gt 1 ]]; then
  process_id=$SLURM_PROCID
else
  die "not a multi-host launch: give --coordinator/--num-processes/--process-id or run under srun with >1 task"
fi

export XLA_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true ${XLA_FLAGS:-}"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"

mkdir -p "$workdir/logs"
$ALERT_JAX finetune --config "$config" --workdir "$workdir" "${overrides[@]}" 2>&1 \
  | tee -a "$workdir/logs/finetune-process$process_id.log"

if [[ $skip_eval -eq 0 ]]; then
  $ALERT_JAX evaluate --config "$config" --model "$workdir" --workdir "$workdir/eval" "${overrides[@]}" 2>&1 \
    | tee -a "$workdir/logs/evaluate-process$process_id.log"
fi
