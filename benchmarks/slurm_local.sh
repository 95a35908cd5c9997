#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for benchmarks/slurm_array.sh and tests/test_slurm.py:
# munged, slurmctld and slurmd run from a state folder, without systemd or cgroups. Needs root and
# Debian's slurm-wlm and munge packages (apt-get install slurm-wlm munge).
#
#   eval "$(benchmarks/slurm_local.sh start DIR)"   # starts the daemons; prints `export SLURM_CONF=...`
#   benchmarks/slurm_local.sh stop DIR              # stops the daemons started by `start DIR`
#
# The cluster has one node (this host, every CPU) in one partition, `debug`; jobs run as root.
# SLURM_LOCAL_PORT (default 6817) sets slurmctld's port, slurmd uses the next one.
set -euo pipefail
action=${1:?usage: slurm_local.sh start|stop DIR}; dir=${2:?usage: slurm_local.sh start|stop DIR}
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)

stop() {
    local name pid
    # Jobs still in this cluster first (slurmd ends their processes), then each daemon by the pid it
    # wrote, slurmd before slurmctld.
    if [ -f "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
        SLURM_CONF=$dir/slurm.conf timeout 10 scancel --user="$(id -un)" 2>/dev/null || true
        for _ in $(seq 50); do
            [ -z "$(SLURM_CONF=$dir/slurm.conf timeout 5 squeue -h -o %i 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
    for name in slurmd slurmctld munged; do
        [ -f "$dir/$name.pid" ] || continue
        pid=$(cat "$dir/$name.pid")
        if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$dir/$name.pid"
    done
}

if [ "$action" = stop ]; then stop; exit 0; fi
[ "$action" = start ] || { echo "usage: slurm_local.sh start|stop DIR" >&2; exit 2; }
for program in munged mungekey slurmctld slurmd sinfo; do
    command -v "$program" >/dev/null || { echo "$program not found (apt-get install slurm-wlm munge)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "slurm_local.sh needs root (slurmd runs jobs as root here)" >&2; exit 2; }

host=$(hostname -s); cpus=$(nproc); port=${SLURM_LOCAL_PORT:-6817}
mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
chmod 711 "$dir/munge"  # munged wants its socket's folder searchable
[ -f "$dir/munge/munge.key" ] || mungekey --create --keyfile="$dir/munge/munge.key" --bits=1024
chmod 600 "$dir/munge/munge.key"
socket=$dir/munge/munge.socket
cat > "$dir/slurm.conf" <<EOF
ClusterName=hydrapick-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SchedulerParameters=sched_interval=1
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$dir/slurm.conf

stop  # daemons of an earlier start in this folder
# munged refuses root without --force; the key, socket and logs live in $dir.
munged --force --key-file="$dir/munge/munge.key" --socket="$socket" --pid-file="$dir/munged.pid" \
       --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed"
# -i: ignore state left by an earlier cluster in this folder; each daemon forks and writes its pid file.
slurmctld -i
slurmd
for _ in $(seq 150); do
    state=$(sinfo -h -n "$host" -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    sleep 0.2
done
if [ "${state:-}" != idle ]; then
    echo "slurm_local.sh: node $host is '${state:-unreachable}', not idle, after 30 s; logs in $dir/log" >&2
    tail -n 20 "$dir"/log/*.log >&2 || true
    stop
    exit 1
fi
echo "export SLURM_CONF=$dir/slurm.conf"
