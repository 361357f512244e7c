#!/usr/bin/env bash
# Finetune one experiment on one host with all (or N) of its GPUs, then evaluate its best checkpoint.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=launch/common.sh
source "$HERE/common.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") --config CONFIG.yaml --workdir DIR [options]

Runs '$ALERT_JAX finetune' then '$ALERT_JAX evaluate' on this host. Re-running resumes both stages.

Options:
  --config FILE     experiment config (e.g. configs/experiments/opt-1.3b-cot.yaml)   [required]
  --workdir DIR     run directory: checkpoints, logs, and evaluation in DIR/eval      [required]
  --gpus N          use the first N GPUs (sets CUDA_VISIBLE_DEVICES; default: all visible)
  --set KEY=VALUE   config override, repeatable (e.g. --set model.name=/models/opt-1.3b)
  --skip-finetune   only evaluate (DIR must already hold a trained model)
  --skip-eval       only finetune
  -h, --help        show this help

Environment: XLA_FLAGS is appended to this script's GPU defaults (yours win); ALERT_JAX overrides the command.
USAGE
}

config="" workdir="" gpus="" skip_finetune=0 skip_eval=0
overrides=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --config) need_value "$@"; config=$2; shift 2 ;;
    --workdir) need_value "$@"; workdir=$2; shift 2 ;;
    --gpus) need_value "$@"; gpus=$2; shift 2 ;;
    --set) need_value "$@"; overrides+=(--set "$2"); shift 2 ;;
    --skip-finetune) skip_finetune=1; shift ;;
    --skip-eval) skip_eval=1; shift ;;
    *) die "unknown argument $1" ;;
  esac
done
require_config_and_workdir "$config" "$workdir"
if [[ -n "$gpus" ]]; then
  [[ "$gpus" =~ ^[1-9][0-9]*$ ]] || die "--gpus $gpus: expected a positive integer"
  CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((gpus - 1)))
  export CUDA_VISIBLE_DEVICES
fi

# Overlap collectives with compute (matters for FSDP all-gathers), and let XLA keep most of the
# GPU memory in its own pool instead of growing it on demand.
export XLA_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true ${XLA_FLAGS:-}"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"

mkdir -p "$workdir/logs"
if [[ $skip_finetune -eq 0 ]]; then
  $ALERT_JAX finetune --config "$config" --workdir "$workdir" "${overrides[@]}" 2>&1 | tee -a "$workdir/logs/finetune.log"
fi
if [[ $skip_eval -eq 0 ]]; then
  $ALERT_JAX evaluate --config "$config" --model "$workdir" --workdir "$workdir/eval" "${overrides[@]}" 2>&1 | tee -a "$workdir/logs/evaluate.log"
fi
