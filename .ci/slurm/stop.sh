#!/usr/bin/env bash
# Stop the daemons .ci/slurm/start.sh started (by the pid files it keeps in $SMIL_SLURM_DIR),
# cancelling any job still queued. Safe to run when nothing is running.
set -uo pipefail

STATE="${SMIL_SLURM_DIR:-/tmp/smil-ci-slurm}"

if [ -s "$STATE/slurmctld.pid" ] && command -v scancel >/dev/null; then
    scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
fi

stop_pid_file() {
    local name="$1" file="$2" pid
    [ -s "$file" ] || return 0
    pid="$(cat "$file")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "stop.sh: $name ($pid) did not stop on TERM; sending KILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$file"
}

stop_pid_file slurmd "$STATE/slurmd.pid"
stop_pid_file slurmctld "$STATE/slurmctld.pid"
stop_pid_file munged "$STATE/munged.pid"
echo "SLURM stopped"
