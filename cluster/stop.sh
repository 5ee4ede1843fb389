#!/usr/bin/env bash
# Stop the single-node Slurm cluster started by start.sh.
# Usage: stop.sh [STATE_DIR]   (default /tmp/randsac-slurm). Safe when nothing runs.
# The state dir (accounting DB, logs) is kept; delete it for a clean slate.
set -euo pipefail

STATE_DIR="${1:-/tmp/randsac-slurm}"
RUN="$STATE_DIR/run"

log() { echo "[stop] $*"; }

# stop_pid NAME PIDFILE: SIGTERM the process, wait up to 30 s, then SIGKILL.
stop_pid() {
    local name=$1 pidfile=$2 pid i
    if ! [ -s "$pidfile" ] || ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        log "$name not running"
        rm -f "$pidfile"
        return 0
    fi
    pid=$(cat "$pidfile")
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
        sleep 0.5
    done
    log "$name did not exit after 30 s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

[ "$(id -u)" -eq 0 ] || { echo "[stop] ERROR: must run as root" >&2; exit 1; }

# Cancel all jobs while slurmctld still runs, and give them a moment to end.
if [ -s "$RUN/slurmctld.pid" ] && kill -0 "$(cat "$RUN/slurmctld.pid")" 2>/dev/null &&
    scontrol ping >/dev/null 2>&1; then
    mapfile -t jobs < <(squeue -h -o %i 2>/dev/null || true)
    if [ ${#jobs[@]} -gt 0 ]; then
        log "cancelling jobs: ${jobs[*]}"
        scancel "${jobs[@]}" 2>/dev/null || true
        for ((i = 0; i < 40; i++)); do
            [ -z "$(squeue -h -t running,completing -o %i 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
fi

stop_pid slurmd "$RUN/slurmd.pid"
stop_pid slurmctld "$RUN/slurmctld.pid"
stop_pid slurmdbd "$RUN/slurmdbd.pid"
stop_pid mariadb "$RUN/mariadb.pid"

# Only stop munged if start.sh started it (leave a system-managed munged alone).
if [ -f "$RUN/munged.started-by-us" ]; then
    stop_pid munged /run/munge/munged.pid
    rm -f "$RUN/munged.started-by-us"
else
    log "munged not started by start.sh, leaving it alone"
fi
log "done"
