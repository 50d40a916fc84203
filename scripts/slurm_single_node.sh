#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to try and test the SLURM path (hydra/launcher=slurm).
#
#   sudo bash scripts/slurm_single_node.sh start    # install if missing, configure, start, wait until idle
#   bash scripts/slurm_single_node.sh status        # daemons and node state (exit 0: the node takes jobs)
#   sudo bash scripts/slurm_single_node.sh stop     # cancel its jobs, stop every daemon it started
#
# start: installs the Debian/Ubuntu packages slurmctld, slurmd, slurm-client and munge when they are
# missing (apt-get, no recommends, no service started by the packages), writes /etc/slurm/slurm.conf
# (one node = this host, all its CPUs, one partition `debug`, no accounting, no cgroups: it works in a
# container without systemd), starts munged, slurmctld and slurmd directly (pid files in the state
# folder) and waits until `sinfo` shows the node idle. An existing slurm.conf that this script did not
# write is left alone (start refuses). Needs root (or sudo) for the install and the daemons.
#
# Verbose output (apt, daemons' start-up) goes to $STATE_DIR/setup.log; the daemons log to
# $STATE_DIR/slurmctld.log and slurmd.log. On failure: one line saying why on stderr, exit status 1.
set -euo pipefail

STATE_DIR=${SLURM_SINGLE_NODE_DIR:-/var/spool/shiftprobe-slurm}
CONF=/etc/slurm/slurm.conf
MARKER="# written by shiftprobe scripts/slurm_single_node.sh"
PACKAGES=(slurmctld slurmd slurm-client munge)
PARTITION=debug
LOG=$STATE_DIR/setup.log
WAIT_S=${SLURM_SINGLE_NODE_WAIT_S:-90}

say() { echo "slurm_single_node: $*"; }
fail() {
    echo "slurm_single_node: $* (log: $LOG)" >&2
    exit 1
}

need_root() {
    [ "$(id -u)" -eq 0 ] || fail "needs root for '$1' (run: sudo bash $0 $1)"
}

pid_alive() {  # pid_alive <pid file> <command name>: the process named in the file runs that command
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ]
}

ours() { [ -f "$CONF" ] && head -n 1 "$CONF" | grep -qxF "$MARKER"; }

node_state() { sinfo -h -N -n "$(hostname -s)" -o %t 2>/dev/null | head -n 1 || true; }

# -- install -------------------------------------------------------------------------------------------
missing_packages() {
    local p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
    done
}

install_packages() {
    local missing policy_made=0 status=0
    command -v dpkg-query >/dev/null || { command -v slurmctld >/dev/null && return 0; fail "no dpkg and no slurmctld: install SLURM and munge yourself"; }
    mapfile -t missing < <(missing_packages)
    [ "${#missing[@]}" -eq 0 ] && return 0
    command -v apt-get >/dev/null || fail "packages missing (${missing[*]}) and no apt-get"
    say "installing ${missing[*]} (apt-get; log: $LOG)"
    # no service is started by the packages' scripts: this script starts the daemons itself
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        policy_made=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # bounded: CI waits for this (about 25 s on a 2-core machine; a mirror that does not answer fails fast)
    local apt_opts=(-q -o Acquire::http::Timeout=20 -o Acquire::Retries=1)
    {
        if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
            timeout 90 apt-get "${apt_opts[@]}" update
        fi
        timeout 180 apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}"
    } >>"$LOG" 2>&1 || status=$?
    [ "$policy_made" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
    [ "$status" -eq 0 ] || fail "apt-get could not install ${missing[*]} (exit status $status)"
}

# -- configure -------------------------------------------------------------------------------------------
write_conf() {
    local host addr cpus mem_mb
    host=$(hostname -s)
    addr=$(getent hosts "$host" | awk '{print $1; exit}' || true)
    [ -n "$addr" ] || addr=127.0.0.1
    cpus=$(nproc)
    [ "$cpus" -ge 2 ] || cpus=2  # two tasks per job (DDP over 2 ranks); slurmd is told to trust this
    mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
    if [ -f "$CONF" ] && ! ours; then
        fail "$CONF exists and was not written by this script: not touching a real cluster's configuration"
    fi
    mkdir -p /etc/slurm "$STATE_DIR/ctld" "$STATE_DIR/d"
    cat >"$CONF" <<EOF
$MARKER
# A one-node cluster for trying the SLURM path; 'bash scripts/slurm_single_node.sh stop' removes this file.
ClusterName=shiftprobe
SlurmctldHost=$host($addr)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/d
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/slurmctld.log
SlurmdLogFile=$STATE_DIR/slurmd.log
SlurmdParameters=config_overrides
# no cgroups, no CPU binding, no accounting: runs in a container without systemd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
NodeName=$host NodeAddr=$addr CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

# -- daemons ---------------------------------------------------------------------------------------------
munge_works() { command -v munge >/dev/null && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if munge_works; then
        return 0  # a munged already runs (the system's): use it, and leave it running at stop
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile=/etc/munge/munge.key >>"$LOG" 2>&1
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    if id munge >/dev/null 2>&1; then
        chown munge:munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
        chmod 0400 /etc/munge/munge.key
        runuser -u munge -- munged >>"$LOG" 2>&1 || fail "munged did not start"
    else
        munged --force >>"$LOG" 2>&1 || fail "munged did not start"
    fi
    cp /run/munge/munged.pid "$STATE_DIR/munged.pid"
    for _ in $(seq 1 20); do
        munge_works && return 0
        sleep 0.5
    done
    fail "munged started but 'munge -n | unmunge' fails"
}

start() {
    need_root start
    mkdir -p "$STATE_DIR"
    : >"$LOG"
    if ours && pid_alive "$STATE_DIR/slurmctld.pid" slurmctld && pid_alive "$STATE_DIR/slurmd.pid" slurmd; then
        say "already running"
        wait_idle
        return 0
    fi
    install_packages
    write_conf
    start_munge
    pid_alive "$STATE_DIR/slurmctld.pid" slurmctld || slurmctld -c >>"$LOG" 2>&1 || fail "slurmctld did not start"
    pid_alive "$STATE_DIR/slurmd.pid" slurmd || slurmd >>"$LOG" 2>&1 || fail "slurmd did not start"
    wait_idle
}

wait_idle() {
    local state="" host
    host=$(hostname -s)
    for i in $(seq 1 $((WAIT_S * 2))); do
        state=$(node_state)
        case "$state" in
            idle) say "node $host idle in partition $PARTITION (logs: $STATE_DIR)"; return 0 ;;
            down* | drain* | drng*)
                # a node that slurmctld saw down before slurmd registered: bring it back once
                [ "$i" -eq 10 ] && scontrol update nodename="$host" state=resume >>"$LOG" 2>&1 || true ;;
        esac
        sleep 0.5
    done
    fail "node $host not idle after ${WAIT_S} s (state: ${state:-none}; see $STATE_DIR/slurmctld.log, slurmd.log)"
}

stop_pid() {  # stop_pid <pid file> <command name>
    local pid
    pid_alive "$1" "$2" || { rm -f "$1"; return 0; }
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do
        [ -d "/proc/$pid" ] || { rm -f "$1"; return 0; }
        sleep 0.25
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$1"
}

stop() {
    need_root stop
    local jobs left
    if ours && pid_alive "$STATE_DIR/slurmctld.pid" slurmctld; then
        jobs=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ' || true)
        if [ -n "${jobs// /}" ]; then
            say "cancelling jobs $jobs"
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            for _ in $(seq 1 60); do
                [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
                sleep 0.5
            done
        fi
    fi
    stop_pid "$STATE_DIR/slurmd.pid" slurmd
    stop_pid "$STATE_DIR/slurmctld.pid" slurmctld
    stop_pid "$STATE_DIR/munged.pid" munged  # only a munged this script started
    # job steps of this node that outlived slurmd (there is no other slurmd: this is a one-node cluster)
    if ours; then
        left=$(pgrep -x slurmstepd || true)
        if [ -n "$left" ]; then
            say "ending leftover job steps: $(echo "$left" | tr '\n' ' ')"
            # shellcheck disable=SC2086
            kill -KILL $left 2>/dev/null || true
        fi
        rm -f "$CONF"
    fi
    say "stopped"
}

status() {
    local state
    for d in munged slurmctld slurmd; do
        if pid_alive "$STATE_DIR/$d.pid" "$d"; then echo "$d: running (pid $(cat "$STATE_DIR/$d.pid"))"; else echo "$d: not running (from this script)"; fi
    done
    state=$(node_state)
    echo "node $(hostname -s): ${state:-unknown}"
    case "$state" in idle | mix | alloc | comp) return 0 ;; *) return 3 ;; esac
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
