#!/usr/bin/env bash
# Train on a Cloud TPU VM or pod slice: create it, copy this checkout to every worker,
# install, run `python -m hat_ebm_jax.main ... --multihost` on all workers at once, fetch
# each worker's log, delete the TPU.
#
#   launch/tpu_pod.sh [options] -- MAIN_FLAGS...
#
#   -n NAME        TPU name (default hat-ebm-$USER)
#   -z ZONE        zone (default us-central2-b)
#   -t TYPE        accelerator type (default v4-8; e.g. v4-32, v5litepod-16)
#   -v VERSION     TPU VM software version (default tpu-ubuntu2204-base for v4;
#                  v2-alpha-tpuv5-lite for v5e, v2-alpha-tpuv6e for v6e)
#   -p PROJECT     gcloud project (default: gcloud's)
#   -l LOG_DIR     where worker logs are fetched to (default ./tpu_logs/NAME)
#   --spot         create a spot (preemptible) TPU
#   --retries N    after a preemption (the run did not finish), recreate the TPU and rerun
#                  the same command up to N times; it resumes from the latest checkpoint
#   --keep         do not delete the TPU at the end (reuse it with --reuse)
#   --reuse        use an existing TPU NAME (skip create, copy and install)
#   --dry-run      print the commands, run nothing
#
# e.g. launch/tpu_pod.sh -t v4-32 --spot --retries 5 -- --config=configs/cifar10_synth.py \
#        --workdir=gs://BUCKET/runs/cifar10_synth --config.data_dir=gs://BUCKET/tfds
#
# On more than one worker --workdir (and a tfds --config.data_dir) must be gs:// paths:
# every worker writes its shards of each checkpoint into the same directory. The global
# batch (config.batch_size) must divide over the slice's chips (v4-32: 16 devices).
set -euo pipefail

usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit "${1:-0}"; }

NAME="hat-ebm-${USER:-user}"
ZONE=us-central2-b
TYPE=v4-8
VERSION=tpu-ubuntu2204-base
PROJECT=""
LOG_DIR=""
SPOT=0
RETRIES=0
KEEP=0
REUSE=0
DRY_RUN=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -n) NAME="$2"; shift 2 ;;
    -z) ZONE="$2"; shift 2 ;;
    -t) TYPE="$2"; shift 2 ;;
    -v) VERSION="$2"; shift 2 ;;
    -p) PROJECT="$2"; shift 2 ;;
    -l) LOG_DIR="$2"; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --retries) RETRIES="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --reuse) REUSE=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) echo "error: unknown option $1 (main.py flags go after --)" >&2; usage 2 >&2 ;;
  esac
done
MAIN_FLAGS=("$@")
LOG_DIR="${LOG_DIR:-./tpu_logs/$NAME}"
if [[ ${#MAIN_FLAGS[@]} -eq 0 ]]; then
  echo "error: give main.py's flags after --, e.g. -- --config=configs/cifar10_synth.py --workdir=gs://BUCKET/run" >&2
  exit 2
fi
WORKDIR=""
for f in "${MAIN_FLAGS[@]}"; do [[ "$f" == --workdir=* ]] && WORKDIR="${f#--workdir=}"; done
if [[ -n "$WORKDIR" && "$WORKDIR" != gs://* && "$TYPE" != *-8 ]]; then
  echo "warning: --workdir=$WORKDIR is not a gs:// path; on a multi-worker slice every" \
       "worker must write checkpoints to the same (shared) directory" >&2
fi

GCLOUD=(gcloud compute tpus tpu-vm)
COMMON=(--zone="$ZONE")
[[ -n "$PROJECT" ]] && COMMON+=(--project="$PROJECT")
REMOTE_DIR=hat_ebm_jax
REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ARCHIVE="${TMPDIR:-/tmp}/hat_ebm_jax_src.tar.gz"

run() {  # prints a command, then runs it unless --dry-run
  printf '+'; printf ' %q' "$@"; printf '\n'
  [[ "$DRY_RUN" == 1 ]] || "$@"
}

# The training command every worker runs (quoted for the remote shell).
printf -v REMOTE_MAIN ' %q' "${MAIN_FLAGS[@]}"
REMOTE_RUN="cd $REMOTE_DIR && python3 -m hat_ebm_jax.main$REMOTE_MAIN --multihost > train.log 2>&1; rc=\$?; tail -n 3 train.log; exit \$rc"

create_and_install() {
  local extra=()
  [[ "$SPOT" == 1 ]] && extra+=(--spot)
  run "${GCLOUD[@]}" create "$NAME" "${COMMON[@]}" --accelerator-type="$TYPE" \
      --version="$VERSION" "${extra[@]}"
  # This checkout (committed files only) to every worker.
  run git -C "$REPO_ROOT" archive --format=tar.gz -o "$ARCHIVE" HEAD
  run "${GCLOUD[@]}" scp "$ARCHIVE" "$NAME:~/hat_ebm_jax_src.tar.gz" "${COMMON[@]}" \
      --worker=all
  run "${GCLOUD[@]}" ssh "$NAME" "${COMMON[@]}" --worker=all --command="mkdir -p \
$REMOTE_DIR && tar -xzf hat_ebm_jax_src.tar.gz -C $REMOTE_DIR && cd $REMOTE_DIR && \
python3 -m pip install -q -U pip && python3 -m pip install -q -e . \
'jax[tpu]>=0.10,<0.12' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
}

fetch_logs() {
  [[ "$DRY_RUN" == 1 ]] || mkdir -p "$LOG_DIR"
  local n=1
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "+ # one scp per worker i = 0 .. (number of workers - 1):"
  else
    n=$("${GCLOUD[@]}" describe "$NAME" "${COMMON[@]}" \
        --format='value(networkEndpoints[].ipAddress)' | tr ';,' '\n\n' | grep -c . || echo 1)
  fi
  for ((i = 0; i < n; i++)); do
    run "${GCLOUD[@]}" scp "$NAME:~/$REMOTE_DIR/train.log" "$LOG_DIR/worker_$i.log" \
        "${COMMON[@]}" --worker="$i" || true
  done
  echo "logs in $LOG_DIR (summaries, samples and checkpoints are in the workdir)"
}

delete_tpu() {  # delete_tpu [force]
  [[ "$KEEP" == 1 && "${1:-}" != force ]] && return 0
  run "${GCLOUD[@]}" delete "$NAME" "${COMMON[@]}" --quiet || true
}

attempt=0
while true; do
  [[ "$REUSE" == 1 && $attempt -eq 0 ]] || create_and_install
  set +e
  # All workers at once; jax.distributed finds its peers from the TPU metadata.
  run "${GCLOUD[@]}" ssh "$NAME" "${COMMON[@]}" --worker=all --command="$REMOTE_RUN"
  rc=$?
  set -e
  fetch_logs
  # Finished: status 0 without "Preempted: saved step" (a preempted run saves and exits
  # 0; a lost VM gives a non-zero status).
  if [[ "$DRY_RUN" == 1 ]] || { [[ $rc -eq 0 ]] && ! grep -q 'Preempted: saved step' \
      "$LOG_DIR/worker_0.log" 2>/dev/null; }; then
    delete_tpu
    exit "$rc"
  fi
  attempt=$((attempt + 1))
  if [[ $attempt -gt $RETRIES ]]; then
    delete_tpu
    echo "run interrupted (status $rc); rerun the same command to resume from the" \
         "latest checkpoint in the workdir" >&2
    exit 1
  fi
  echo "run interrupted (status $rc): recreating the TPU, attempt $((attempt + 1)) of" \
       "$((RETRIES + 1))" >&2
  delete_tpu force  # a preempted spot TPU must be deleted before it can be recreated
  sleep 60
done
