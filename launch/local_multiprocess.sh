#!/usr/bin/env bash
# N training processes on this machine, talking over loopback: the multi-host code path
# (jax.distributed, per-process input shares, collective orbax checkpoints, preemption
# sync) without a cluster. CPU only; collectives go through gloo.
#
#   launch/local_multiprocess.sh [-n PROCESSES] [-d DEVICES_PER_PROCESS] [-p PORT]
#       [-l LOG_DIR] [--dry-run] -- MAIN_FLAGS...
#
# e.g. launch/local_multiprocess.sh -n 2 -d 2 -- --config=configs/tiny.py --workdir=/tmp/w
#
# Each process gets XLA_FLAGS=--xla_force_host_platform_device_count=DEVICES_PER_PROCESS,
# JAX_PLATFORMS=cpu, JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo and
# --coordinator_address=127.0.0.1:PORT --num_processes=N --process_id=i; its output goes
# to LOG_DIR/process_<i>.log (default LOG_DIR: the current directory). The script
# prints "process <i> pid <pid>" per process, waits for all, forwards SIGTERM/SIGINT to
# them (a preemption: they save at the same step and exit 0), kills the others when one
# fails, and exits with the first non-zero status. Rerun the same command to resume.
set -euo pipefail

usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit "${1:-0}"; }

NUM_PROCESSES=2
DEVICES=2
PORT="${PORT:-}"
LOG_DIR=.
DRY_RUN=0
PYTHON="${PYTHON:-python}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    -n) NUM_PROCESSES="$2"; shift 2 ;;
    -d) DEVICES="$2"; shift 2 ;;
    -p) PORT="$2"; shift 2 ;;
    -l) LOG_DIR="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) echo "error: unknown option $1 (main.py flags go after --)" >&2; usage 2 >&2 ;;
  esac
done
MAIN_FLAGS=("$@")
if [[ ! "$NUM_PROCESSES" =~ ^[1-9][0-9]*$ || ! "$DEVICES" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: -n and -d take positive integers (got -n $NUM_PROCESSES -d $DEVICES)" >&2
  exit 2
fi
if [[ -z "$PORT" ]]; then  # a free port, chosen by the kernel
  PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi

XLA="--xla_force_host_platform_device_count=$DEVICES${XLA_FLAGS:+ $XLA_FLAGS}"
ENV=(JAX_PLATFORMS=cpu JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo "XLA_FLAGS=$XLA")
command_for() {  # command_for I -> the argv of process I
  CMD=(env "${ENV[@]}" "$PYTHON" -m hat_ebm_jax.main "${MAIN_FLAGS[@]}"
       "--coordinator_address=127.0.0.1:$PORT" "--num_processes=$NUM_PROCESSES"
       "--process_id=$1")
}

if [[ "$DRY_RUN" == 1 ]]; then
  for ((i = 0; i < NUM_PROCESSES; i++)); do
    command_for "$i"
    printf '%q ' "${CMD[@]}"; printf '> %q 2>&1 &\n' "$LOG_DIR/process_$i.log"
  done
  echo wait
  exit 0
fi

mkdir -p "$LOG_DIR"
PIDS=()
stop_all() {
  for pid in "${PIDS[@]}"; do kill -"$1" "$pid" 2>/dev/null || true; done
}
trap 'echo "forwarding SIGTERM to ${PIDS[*]}"; stop_all TERM' TERM
trap 'echo "forwarding SIGINT to ${PIDS[*]}"; stop_all INT' INT
for ((i = 0; i < NUM_PROCESSES; i++)); do
  command_for "$i"
  "${CMD[@]}" > "$LOG_DIR/process_$i.log" 2>&1 &
  PIDS+=($!)
  echo "process $i pid $! log $LOG_DIR/process_$i.log"
done

STATUS=0
declare -A LEFT=()  # pid -> process index, of the processes not yet reaped
for ((i = 0; i < NUM_PROCESSES; i++)); do LEFT[${PIDS[$i]}]=$i; done
while [[ ${#LEFT[@]} -gt 0 ]]; do
  done_pid=''
  set +e
  wait -n -p done_pid "${!LEFT[@]}"  # (bash >= 5.1)
  rc=$?
  set -e
  [[ -z "$done_pid" ]] && continue  # a trapped signal interrupted the wait
  echo "process ${LEFT[$done_pid]} exited with status $rc"
  unset "LEFT[$done_pid]"
  if [[ $rc -ne 0 && $STATUS -eq 0 ]]; then
    STATUS=$rc
    # The others would block in collectives with a dead peer: kill them (the last
    # checkpoint is complete; rerun to resume from it).
    [[ ${#LEFT[@]} -gt 0 ]] && echo "killing the others (${!LEFT[*]})" >&2
    for pid in "${!LEFT[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  fi
done
for ((i = 0; i < NUM_PROCESSES; i++)); do
  echo "--- process $i: tail of $LOG_DIR/process_$i.log"
  tail -n 5 "$LOG_DIR/process_$i.log" || true
done
exit "$STATUS"
