#!/usr/bin/env bash
# A real one-node SLURM on this machine (Debian's slurmctld, slurmd, munge), for trying
# `lievae_sweep --launcher=slurm` and for the `slurm` tests (docs/clusters.md). Needs root and no
# systemd: the daemons run as plain background processes.
#
#   bash scripts/slurm_local.sh start   installs the packages if missing (apt-get), writes
#                                       /etc/slurm/slurm.conf, starts munged, slurmctld and slurmd
#                                       and waits until the node is idle; does nothing when a
#                                       cluster already answers
#   bash scripts/slurm_local.sh stop    cancels the jobs of that cluster and stops exactly the
#                                       daemons `start` started (their pids are in the state dir)
#   bash scripts/slurm_local.sh status  says whether a cluster answers, and what `start` started
#
# LIEVAE_SLURM_DIR (default /tmp/lievae_slurm): state, spool, logs and pid files.
# LIEVAE_SLURM_CPUS (default 8): the CPUs the node declares; more than the machine has is fine
# (small jobs then do not queue behind each other; the kernel shares the real cores).
set -euo pipefail
state=${LIEVAE_SLURM_DIR:-/tmp/lievae_slurm}
cpus=${LIEVAE_SLURM_CPUS:-8}
conf=/etc/slurm/slurm.conf
marker="# written by lievae_tf scripts/slurm_local.sh"
action=${1:-}

say() { echo "slurm_local: $*" >&2; }
die() { say "$*"; exit 1; }

answers() { timeout 10 sinfo -h >/dev/null 2>&1; }

node_state() { timeout 10 sinfo -h -N -n "$(hostname -s)" -o %t 2>/dev/null | head -n1; }

alive() {  # pid $1 runs the program $2
  [ -n "$1" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]
}

stop_pid() {  # SIGTERM to the pid in file $1 if it still runs program $2; SIGKILL after 15 s
  local pid
  pid=$(cat "$1" 2>/dev/null || true)
  if alive "$pid" "$2"; then
    kill -TERM "$pid"
    for _ in $(seq 150); do alive "$pid" "$2" || break; sleep 0.1; done
    if alive "$pid" "$2"; then kill -KILL "$pid"; say "$2 ($pid) did not stop in 15 s: killed"; fi
    say "stopped $2 ($pid)"
  fi
  rm -f "$1"
}

install_packages() {
  local missing=()
  command -v slurmctld >/dev/null || missing+=(slurmctld)
  command -v slurmd >/dev/null || missing+=(slurmd)
  command -v sbatch >/dev/null || missing+=(slurm-client)
  command -v munged >/dev/null || missing+=(munge)
  [ ${#missing[@]} -eq 0 ] && return
  command -v apt-get >/dev/null || die "${missing[*]} missing and no apt-get: install SLURM and munge yourself."
  say "installing ${missing[*]} (apt-get)"
  apt-get update -qq
  # The packages' own service start-up needs systemd, which is not there: refuse it (status 101
  # of policy-rc.d), we start the daemons ourselves.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
}

write_config() {
  if [ -f "$conf" ] && ! grep -qxF "$marker" "$conf"; then
    die "$conf exists and was not written by this script: a SLURM is configured here already; use it, or move $conf away."
  fi
  local host memory_mb
  host=$(hostname -s)
  memory_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
  mkdir -p /etc/slurm "$state/ctld" "$state/spool" "$state/log"
  cat > "$conf.tmp" <<EOF
$marker
# One node on localhost, no accounting, no cgroups (no systemd needed).
ClusterName=lievae
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
# A requeued job waits cred_expire + 1 s before it may start again (SLURM's default: 120 s).
AuthInfo=cred_expire=10
# Bind to the configured addresses (127.0.0.1), not every interface.
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
# The declared CPUs and memory, whatever the hardware reports.
SlurmdParameters=config_overrides
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.slurm.pid
SlurmdPidFile=$state/slurmd.slurm.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$conf.tmp" "$conf"
}

start_munge() {
  if [ -S /run/munge/munge.socket.2 ] && timeout 5 munge -n </dev/null >/dev/null 2>&1; then
    return  # a munged answers already (not ours: left alone)
  fi
  [ -f /etc/munge/munge.key ] || die "/etc/munge/munge.key is missing: create it with mungekey (package munge)."
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge
  chmod 0755 /run/munge
  runuser -u munge -- munged --pid-file=/run/munge/munged.pid
  for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
  cp /run/munge/munged.pid "$state/munged.pid"
}

start() {
  [ "$(id -u)" = 0 ] || die "needs root (it installs packages and starts the SLURM daemons)."
  if command -v sinfo >/dev/null && answers; then
    say "a SLURM cluster answers already (sinfo): nothing started"
    return
  fi
  install_packages
  mkdir -p "$state"
  write_config
  start_munge
  slurmctld -D -c -f "$conf" >>"$state/log/slurmctld.out" 2>&1 &
  echo $! > "$state/slurmctld.pid"
  slurmd -D -f "$conf" >>"$state/log/slurmd.out" 2>&1 &
  echo $! > "$state/slurmd.pid"
  for _ in $(seq 300); do
    case "$(node_state)" in
      idle*) say "node $(hostname -s) idle ($cpus CPUs); logs in $state/log"; return ;;
    esac
    sleep 0.1
  done
  say "the node did not become idle within 30 s (state: '$(node_state)'); logs in $state/log:"
  tail -n 5 "$state/log/slurmctld.log" "$state/log/slurmd.log" >&2 || true
  stop
  exit 1
}

stop() {
  if [ -f "$state/slurmctld.pid" ] && alive "$(cat "$state/slurmctld.pid")" slurmctld; then
    # The jobs of the cluster we started: cancel them and let their steps end, so that no
    # slurmstepd outlives slurmd.
    timeout 10 scancel --full --quiet --user=root 2>/dev/null || true
    for _ in $(seq 300); do
      [ -z "$(timeout 10 squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
  stop_pid "$state/slurmd.pid" slurmd
  stop_pid "$state/slurmctld.pid" slurmctld
  stop_pid "$state/munged.pid" munged
  if [ -f "$conf" ] && grep -qxF "$marker" "$conf"; then rm -f "$conf"; fi
}

status() {
  if command -v sinfo >/dev/null && answers; then say "a cluster answers: node $(hostname -s) $(node_state)"
  else say "no cluster answers"; fi
  local name
  for name in munged slurmctld slurmd; do
    if [ -f "$state/$name.pid" ] && alive "$(cat "$state/$name.pid")" "$name"; then
      say "started here: $name ($(cat "$state/$name.pid"))"
    fi
  done
}

case "$action" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "unknown action '$action': use start, stop or status." ;;
esac
