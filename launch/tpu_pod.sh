#!/usr/bin/env bash
# Set up, finetune and evaluate one experiment on every worker of a Cloud TPU pod slice, from your workstation.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=launch/common.sh
source "$HERE/common.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") --tpu NAME --zone ZONE --setup [--git URL] [options]
       $(basename "$0") --tpu NAME --zone ZONE --config CONFIG.yaml --workdir DIR [options]

--setup puts alert_jax on every worker of the TPU VM slice NAME and installs it with its TPU extra
(pip install -e '.[tpu]'): either this checkout (copied as a tarball of the tracked and untracked,
non-ignored files, with gcloud compute tpus tpu-vm scp --worker=all) or, with --git URL, a clone of URL.

Without --setup, runs 'alert-jax finetune' and then 'alert-jax evaluate' (best checkpoint, the
config's eval settings, output in DIR/eval) on every worker at once (gcloud compute tpus tpu-vm ssh
--worker=all) with ALERT_JAX_DISTRIBUTED=1: the workers form one jax job through jax's TPU cluster
detection, the model is sharded over every chip of the slice in both stages, and process 0 writes the
shared files. Each host writes DIR/logs/{finetune,evaluate}-<hostname>.log; this script's own copy of
the interleaved output goes to ./logs/tpu_pod-NAME-<time>.log. Re-running resumes both stages.

DIR must be the same shared directory on every host (an NFS or gcsfuse mount).

Options:
  --tpu NAME        TPU VM name                                                     [required]
  --zone ZONE       its zone, e.g. us-central2-b                                    [required]
  --project ID      GCP project (default: gcloud's configured one)
  --setup           copy (or --git clone) and install alert_jax on every worker, then stop
  --git URL         with --setup: clone URL (a branch with --ref) instead of copying this checkout
  --ref REF         with --git: branch or tag to check out (default: the remote's default branch)
  --config FILE     experiment config, path relative to --repo                      [required to run]
  --workdir DIR     shared run directory, absolute path on the workers              [required to run]
  --repo DIR        checkout of alert_jax on the workers (default: ~/alert_jax)
  --set KEY=VALUE   config override, repeatable
  --skip-finetune   only evaluate (DIR must already hold a trained model)
  --skip-eval       only finetune
  --dry-run         print the gcloud commands instead of running them
  -h, --help        show this help
USAGE
}

tpu="" zone="" project="" config="" workdir="" repo='~/alert_jax' git_url="" ref=""
setup=0 dry_run=0 skip_finetune=0 skip_eval=0
overrides=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --tpu) need_value "$@"; tpu=$2; shift 2 ;;
    --zone) need_value "$@"; zone=$2; shift 2 ;;
    --project) need_value "$@"; project=$2; shift 2 ;;
    --setup) setup=1; shift ;;
    --git) need_value "$@"; git_url=$2; shift 2 ;;
    --ref) need_value "$@"; ref=$2; shift 2 ;;
    --config) need_value "$@"; config=$2; shift 2 ;;
    --workdir) need_value "$@"; workdir=$2; shift 2 ;;
    --repo) need_value "$@"; repo=$2; shift 2 ;;
    --set) need_value "$@"; overrides+=(--set "$2"); shift 2 ;;
    --skip-finetune) skip_finetune=1; shift ;;
    --skip-eval) skip_eval=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    *) die "unknown argument $1" ;;
  esac
done
for required in tpu zone; do
  [[ -n "${!required}" ]] || die "--$required is required"
done
[[ -z "$git_url" || $setup -eq 1 ]] || die "--git only goes with --setup"
[[ -z "$ref" || -n "$git_url" ]] || die "--ref only goes with --git"

where=(--zone "$zone")
[[ -z "$project" ]] || where+=(--project "$project")

gcloud_run() {  # ARGS...: run (or, with --dry-run, print) one gcloud command
  if [[ $dry_run -eq 1 ]]; then
    printf 'gcloud'; printf ' %q' "$@"; printf '\n'
    return 0
  fi
  gcloud "$@"
}

on_all_workers() {  # REMOTE_COMMAND: run it on every worker of the slice at once
  gcloud_run compute tpus tpu-vm ssh "$tpu" "${where[@]}" --worker=all --command "$1"
}

[[ $dry_run -eq 1 ]] || command -v gcloud >/dev/null 2>&1 || die "gcloud is not on PATH"

# The repo path stays unquoted in remote commands so that a leading ~ expands on the workers.
install="cd $repo && python3 -m pip install --upgrade pip && python3 -m pip install -e '.[tpu]'"

if [[ $setup -eq 1 ]]; then
  if [[ -n "$git_url" ]]; then
    branch=""
    [[ -z "$ref" ]] || branch="--branch $(printf '%q' "$ref")"
    on_all_workers "set -euo pipefail; rm -rf $repo; git clone --depth 1 $branch $(printf '%q' "$git_url") $repo; $install"
  else
    checkout=$(cd "$HERE/.." && pwd)
    tarball=$(mktemp "${TMPDIR:-/tmp}/alert_jax.XXXXXX.tar.gz")
    trap 'rm -f "$tarball"' EXIT
    # Tracked and untracked-but-not-ignored files: the working tree as you see it, without runs/ or venvs.
    (cd "$checkout" && git ls-files -z --cached --others --exclude-standard | tar -czf "$tarball" --null -T -)
    gcloud_run compute tpus tpu-vm scp "$tarball" "$tpu:/tmp/alert_jax.tar.gz" "${where[@]}" --worker=all
    on_all_workers "set -euo pipefail; rm -rf $repo; mkdir -p $repo; tar -xzf /tmp/alert_jax.tar.gz -C $repo; $install"
  fi
  exit 0
fi

for required in config workdir; do
  [[ -n "${!required}" ]] || die "--$required is required"
done
[[ "$workdir" == /* ]] || die "--workdir $workdir: must be an absolute path (it is used on the workers)"

# The remote command, each argument quoted for the workers' shell. Per-host logs name the host so that
# workers never share a file.
logdir=$(printf '%q' "$workdir/logs")
stages=""
if [[ $skip_finetune -eq 0 ]]; then
  args=$(printf ' %q' finetune --config "$config" --workdir "$workdir" "${overrides[@]}")
  stages+="alert-jax$args 2>&1 | tee -a $logdir/finetune-\$(hostname).log; "
fi
if [[ $skip_eval -eq 0 ]]; then
  args=$(printf ' %q' evaluate --config "$config" --model "$workdir" --workdir "$workdir/eval" "${overrides[@]}")
  stages+="alert-jax$args 2>&1 | tee -a $logdir/evaluate-\$(hostname).log; "
fi
remote="set -euo pipefail; cd $repo; export ALERT_JAX_DISTRIBUTED=1; mkdir -p $logdir; $stages"

if [[ $dry_run -eq 1 ]]; then
  on_all_workers "$remote"
  exit 0
fi
mkdir -p logs
on_all_workers "$remote" 2>&1 | tee "logs/tpu_pod-$tpu-$(date +%Y%m%d-%H%M%S).log"
