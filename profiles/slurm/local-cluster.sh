#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for trying profiles/slurm and for `pytest -m slurm`.
#
#   sudo apt-get install -y slurm-wlm munge          # Debian/Ubuntu (once)
#   sudo profiles/slurm/local-cluster.sh start       # munged, slurmctld and slurmd on 127.0.0.1
#   sinfo                                            # the node `localhost`, idle
#   sudo profiles/slurm/local-cluster.sh status      # sinfo
#   sudo profiles/slurm/local-cluster.sh stop        # stops what `start` started, removes what it wrote
#
# Needs root (or sudo): the daemons run as root, munged as the munge user. Everything listens on the
# loopback interface only. The configuration (slurm.conf, cgroup.conf), state, logs and pid files live in
# CDLN_SLURM_DIR (default /tmp/cdln-slurm). slurm.conf is also linked from /etc/slurm/slurm.conf, where
# every SLURM client looks (the executor plugin's job steps clear SLURM_* variables, SLURM_CONF with them,
# before calling srun), so the script refuses to run on a machine that already has a SLURM configuration.
# No accounting database: `sacct` does not work on this cluster, so the profile queries job states with
# `squeue`. One partition `debug` with every core of this machine and its memory less 2 GB; no GPUs.
set -euo pipefail

DIR=${CDLN_SLURM_DIR:-/tmp/cdln-slurm}
CONF=$DIR/slurm.conf
ETC=/etc/slurm
NODE=localhost

die() {
    echo "local-cluster: $*" >&2
    exit 1
}

need_root() {
    [ "$(id -u)" -eq 0 ] || die "run as root (sudo $0 $*)"
    for tool in munged slurmctld slurmd sinfo; do
        command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] ||
            die "$tool not found: apt-get install -y slurm-wlm munge"
    done
}

write_config() {
    mkdir -p "$DIR"/{state,spool,log}
    local cpus mem
    cpus=$(nproc)
    mem=$(awk '/MemTotal/ {print int($2 / 1024) - 2048}' /proc/meminfo)
    cat >"$CONF" <<EOF
# Written by profiles/slurm/local-cluster.sh: one node, loopback only, no accounting.
ClusterName=cdln-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
# finished jobs stay visible to squeue for 5 min (the executor's status checks need >= 3x its first wait)
MinJobAge=300
MailProg=/bin/true
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$(hostname -s) CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    # Read by slurmd when a cgroup plugin is configured; none is (containers often lack a writable cgroup tree).
    cat >"$DIR/cgroup.conf" <<EOF
# Written by profiles/slurm/local-cluster.sh: no cgroup enforcement (proctrack/linuxproc, task/none).
ConstrainCores=no
ConstrainRAMSpace=no
EOF
    mkdir -p "$ETC"
    for name in slurm.conf cgroup.conf; do
        if [ -e "$ETC/$name" ] && [ "$(readlink "$ETC/$name")" != "$DIR/$name" ]; then
            die "$ETC/$name exists and is not this script's: this machine has a SLURM configuration already"
        fi
        ln -sfn "$DIR/$name" "$ETC/$name"
    done
}

start_munge() {
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        return  # a munged is already serving this machine
    fi
    [ -s /etc/munge/munge.key ] || {
        if command -v mungekey >/dev/null; then mungekey --create --force; else
            dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
        fi
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    }
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    runuser -u munge -- /usr/sbin/munged
    touch "$DIR/munged.started-here"
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return
        sleep 0.1
    done
    die "munged did not start"
}

wait_idle() {
    for _ in $(seq 150); do
        state=$(SLURM_CONF=$CONF sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
        case $state in
        idle* | mixed* | allocated*) return 0 ;;
        esac
        sleep 0.2
    done
    echo "local-cluster: node $NODE is '${state:-unreachable}' after 30 s; logs in $DIR/log" >&2
    tail -n 20 "$DIR"/log/*.log >&2 || true
    return 1
}

start() {
    need_root start
    if [ -f "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null; then
        echo "local-cluster: already running ($CONF)"
    else
        write_config
        start_munge
        SLURM_CONF=$CONF /usr/sbin/slurmctld -i -f "$CONF"
        SLURM_CONF=$CONF /usr/sbin/slurmd -N "$NODE" -f "$CONF"
    fi
    wait_idle
    SLURM_CONF=$CONF sinfo
}

stop_daemon() {
    local pidfile=$1
    [ -f "$pidfile" ] || return 0
    local pid
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "$pidfile"
}

stop() {
    need_root stop
    [ -f "$CONF" ] || {
        echo "local-cluster: not running (no $CONF)"
        return 0
    }
    SLURM_CONF=$CONF scancel --user=root 2>/dev/null || true
    stop_daemon "$DIR/slurmd.pid"
    stop_daemon "$DIR/slurmctld.pid"
    if [ -f "$DIR/munged.started-here" ] && [ -f /run/munge/munged.pid ]; then
        stop_daemon /run/munge/munged.pid
    fi
    for name in slurm.conf cgroup.conf; do
        if [ "$(readlink "$ETC/$name" 2>/dev/null)" = "$DIR/$name" ]; then rm -f "$ETC/$name"; fi
    done
    rm -rf "$DIR"
    echo "local-cluster: stopped"
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) SLURM_CONF=$CONF sinfo ;;
*) die "usage: $0 start|stop|status" ;;
esac
