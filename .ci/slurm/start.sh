#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine for the `slurm` tests (CI, `make test-slurm`).
#
# Installs the Debian packages munge, slurmctld, slurmd and slurm-client when missing, writes
# /etc/slurm/slurm.conf (refusing to touch one this script did not write), starts munged, slurmctld
# and slurmd as daemons and waits until the node is idle. Needs root; no systemd, no cgroups
# (proctrack/linuxproc, task/affinity), no accounting daemon (so `sacct` does not work: the CI
# profile profiles/slurm-ci uses `squeue` for job status). Jobs run as root.
# State, logs and pid files live in $SMIL_SLURM_DIR (default /tmp/smil-ci-slurm); stop.sh stops
# what this script started.
set -euo pipefail

STATE="${SMIL_SLURM_DIR:-/tmp/smil-ci-slurm}"
CONF=/etc/slurm/slurm.conf
MARKER="# written by smil .ci/slurm/start.sh"
WAIT_S="${SMIL_SLURM_WAIT_S:-60}"

die() { echo "start.sh: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts daemons)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    command -v apt-get >/dev/null || die "munge/slurm are missing and apt-get is not available"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client >/dev/null
fi

if [ -e "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
    die "$CONF exists and was not written by this script; refusing to replace a real SLURM configuration"
fi

host="$(hostname -s)"
# "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
node_line="$(slurmd -C | head -n 1)"
case "$node_line" in NodeName=*) ;; *) die "unexpected 'slurmd -C' output: $node_line" ;; esac
addr="$(getent hosts "$host" | awk '{print $1; exit}')"
[ -n "$addr" ] || addr=127.0.0.1

mkdir -p "$STATE"/{ctld,spool,log} /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 0755 /run/munge

cat > "$CONF" <<CONF
$MARKER
# A one-node test cluster; every key here is what a single container without systemd needs.
ClusterName=smilci
SlurmctldHost=$host($addr)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
# Finished jobs stay visible to squeue and scontrol for an hour: the plugin reads job states with
# squeue (no accounting here), and tests/test_slurm.py inspects every job after a run of minutes.
MinJobAge=3600
InactiveLimit=0
KillWait=5
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
$node_line NodeAddr=$addr State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    [ -s /etc/munge/munge.key ] || mungekey --create --force >/dev/null 2>&1 \
        || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
    # --force: start even if a munged that died left its socket behind.
    runuser -u munge -- munged --force --pid-file=/run/munge/munged.pid
    cp /run/munge/munged.pid "$STATE/munged.pid"
    munge -n | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"
fi

alive "$STATE/slurmctld.pid" || slurmctld
alive "$STATE/slurmd.pid" || slurmd

deadline=$((SECONDS + WAIT_S))
state=""
while [ $SECONDS -lt $deadline ]; do
    state="$(sinfo -h -N -n "$host" -o %T 2>/dev/null || true)"
    case "$state" in
        idle|idle~|mixed|allocated) echo "SLURM is up: node $host is $state ($node_line)"; exit 0 ;;
        down*|drain*|fail*) scontrol update NodeName="$host" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 1
done
echo "start.sh: node $host did not become idle within ${WAIT_S}s (state: '${state:-unknown}')" >&2
tail -n 30 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 2>/dev/null || true
exit 1
