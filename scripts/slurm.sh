#!/usr/bin/env bash
# A single-node SLURM for workstations and CI, so the study's launch path (submitit -> sbatch -> srun ->
# requeue) is exercised for real and not mocked.
#
#   bash scripts/slurm.sh start     install what is missing, write the config, start the daemons,
#                                   wait until the node accepts work (idempotent; ~1 s when already up)
#   bash scripts/slurm.sh stop      stop the daemons this script started (by pid file, never by name)
#   bash scripts/slurm.sh status    daemons + sinfo; exit 0 only when everything is up
#
# Why these pieces: Debian's slurm-wlm (22.05) + munge, run as root without systemd (containers and CI have
# none). Accounting (MariaDB + slurmdbd) is on by default because submitit reads job states from `sacct`:
# without it every state is UNKNOWN and a cancelled job never counts as finished (`job.result()` hangs).
#
# Environment knobs:
#   LOOPMDM_SLURM_ACCOUNTING=1|0   slurmdbd + MariaDB so sacct works (default 1)
#   LOOPMDM_SLURM_CPUS             CPUs the node offers (default: nproc)
#   LOOPMDM_SLURM_MEM_MB           memory the node offers (default: detected minus 1 GiB)
#   LOOPMDM_SLURM_PARTITION        the default partition's name (default: debug)
set -euo pipefail

ACCOUNTING=${LOOPMDM_SLURM_ACCOUNTING:-1}
PARTITION=${LOOPMDM_SLURM_PARTITION:-debug}
CLUSTER=loopmdm
RUN=/run/loopmdm-slurm          # our pid files: `stop` only ever touches what these name
LOGS=/var/log/loopmdm-slurm
MUNGE_PID=/run/munge/munged.pid
DB_PID=/run/mysqld/mysqld.pid
DAEMONS=(slurmd slurmctld slurmdbd mariadbd munged)   # stop order; start order is the reverse

say() { echo "[slurm.sh $(date +%H:%M:%S)] $*"; }
die() { echo "[slurm.sh] error: $*" >&2; exit 1; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

pidfile() {
  case $1 in
    munged) echo $MUNGE_PID;; mariadbd) echo $DB_PID;; *) echo "$RUN/$1.pid";;
  esac
}

# alive NAME: its pid file names a live (not zombie) process whose command is that daemon. Pid files outlive
# reboots and container restarts, and a daemon killed with its session can linger as a zombie.
alive() {
  local f p; f=$(pidfile "$1")
  [[ -s $f ]] || return 1
  p=$(<"$f"); [[ $p =~ ^[0-9]+$ && -r /proc/$p/stat ]] || return 1
  [[ $(awk '{print $3}' "/proc/$p/stat" 2>/dev/null) != Z ]] || return 1
  [[ $(cat "/proc/$p/comm" 2>/dev/null) == "$1"* || ($1 == mariadbd && $(cat "/proc/$p/comm") == mysqld) ]]
}

# retry N SLEEP CMD...: run CMD until it succeeds, at most N times.
retry() {
  local n=$1 s=$2; shift 2
  for ((i = 0; i < n; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep "$s"; done
  return 1
}

stop_daemons() {
  local d f p
  for d in "${DAEMONS[@]}"; do
    alive "$d" || continue
    f=$(pidfile "$d"); p=$(<"$f")
    say "stopping $d (pid $p)"; kill "$p" 2>/dev/null || true
    for ((i = 0; i < 75; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$p" 2>/dev/null; then say "$d did not stop in 15 s: SIGKILL"; kill -9 "$p" 2>/dev/null || true; fi
  done
}

show_status() {
  local d ok=0
  for d in "${DAEMONS[@]}"; do
    [[ $d =~ ^(slurmdbd|mariadbd)$ && $ACCOUNTING != 1 ]] && continue
    if alive "$d"; then echo "$d: running (pid $(<"$(pidfile "$d")"))"; else echo "$d: stopped"; ok=1; fi
  done
  if ((ok == 0)); then sinfo 2>/dev/null || ok=1; fi
  return $ok
}

install_packages() {
  local need=() pair
  for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
  done
  if [[ $ACCOUNTING == 1 ]]; then
    command -v slurmdbd >/dev/null || need+=(slurmdbd)
    command -v mariadbd >/dev/null || need+=(mariadb-server)
  fi
  ((${#need[@]})) || return 0
  command -v apt-get >/dev/null || die "missing ${need[*]} and no apt-get: install them by hand"
  say "apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d 101: packages must not try to start services (no systemd here; we start them ourselves)
  local policy=/usr/sbin/policy-rc.d created=0
  [[ -e $policy ]] || { printf '#!/bin/sh\nexit 101\n' >$policy; chmod +x $policy; created=1; }
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  ((created)) && rm -f $policy
  return 0
}

start_munge() {
  if [[ ! -s /etc/munge/munge.key ]]; then
    say "creating munge key"
    mkdir -p /etc/munge
    mungekey --create --force 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge; chmod 0755 /run/munge
  if alive munged; then say "munged already running"; else
    rm -f $MUNGE_PID /run/munge/munge.socket.2*
    say "starting munged"; runuser -u munge -- /usr/sbin/munged
  fi
  munge_ok() { timeout 5 munge -n </dev/null | timeout 5 unmunge >/dev/null; }
  retry 50 0.1 munge_ok || die "munge credential round trip failed (see /var/log/munge/munged.log)"
}

start_accounting() {
  mkdir -p /run/mysqld; chown mysql:mysql /run/mysqld
  if alive mariadbd; then say "mariadbd already running"; else
    [[ -d /var/lib/mysql/mysql ]] || { say "initialising MariaDB datadir"; mariadb-install-db --user=mysql >/dev/null; }
    say "starting mariadbd"
    setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --pid-file=$DB_PID --skip-log-bin \
      --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 >>"$LOGS/mariadbd.out" 2>&1 </dev/null &
  fi
  retry 150 0.2 mariadb-admin ping || die "mariadbd did not answer; see $LOGS/mariadbd.out"
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'loopmdm';
    ALTER USER 'slurm'@'localhost' IDENTIFIED BY 'loopmdm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  write_if_changed /etc/slurm/slurmdbd.conf 600 <<EOF   # slurmdbd refuses a world-readable config
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=$LOGS/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=loopmdm
StorageLoc=slurm_acct_db
EOF
  ensure_daemon slurmdbd
}

# The cluster must exist in the database before slurmctld registers, or sacct shows nothing. sacctmgr reads
# slurm.conf, so this runs after it is written.
register_cluster() {
  retry 100 0.2 sacctmgr -n -P list cluster format=cluster || die "slurmdbd did not answer; see $LOGS/slurmdbd.log"
  sacctmgr -n -P list cluster format=cluster | grep -qx $CLUSTER \
    || { say "registering cluster $CLUSTER"; sacctmgr -i add cluster $CLUSTER >/dev/null; }
}

# write_if_changed PATH MODE < content: replace PATH only when the content differs, so an unchanged start
# restarts nothing; sets CHANGED=1|0.
write_if_changed() {
  local tmp; tmp=$(mktemp "$(dirname "$1")/.new.XXXXXX")
  cat >"$tmp"; chmod "$2" "$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; CHANGED=0; else mv -f "$tmp" "$1"; say "wrote $1"; CHANGED=1; fi
}

write_slurm_conf() {
  local host=$1 cpus mem real acct
  cpus=${LOOPMDM_SLURM_CPUS:-$(nproc)}
  real=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  mem=${LOOPMDM_SLURM_MEM_MB:-$((real > 2048 ? real - 1024 : real))}
  if [[ $ACCOUNTING == 1 ]]; then
    acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
  else
    acct="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
  fi
  mkdir -p /var/spool/slurmctld /var/spool/slurmd
  # No cgroup plugins (containers rarely allow them). Requeued jobs wait cred_expire seconds before they may
  # start again (default 120 s, so that old job-step credentials lapse first): 20 s here, with short scheduler
  # intervals, so a preempted job is back within ~half a minute; the preemption tests wait on exactly that.
  write_if_changed /etc/slurm/slurm.conf 644 <<EOF
# generated by loopmdm-study scripts/slurm.sh: single-node cluster for workstations and CI
ClusterName=$CLUSTER
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=20
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
$acct
JobCompType=jobcomp/none
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=10
Waittime=0
MaxArraySize=1001
DefMemPerCPU=1024
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

# (re)start DAEMON when it is down or its config changed
ensure_daemon() {
  local pid
  if alive "$1"; then
    if ((CHANGED)); then
      pid=$(<"$RUN/$1.pid"); say "config changed: restarting $1 (pid $pid)"; kill "$pid"
      retry 75 0.2 bash -c "! kill -0 $pid" || die "$1 (pid $pid) did not stop"
      "/usr/sbin/$1"
    else say "$1 already running"; fi
  else say "starting $1"; "/usr/sbin/$1"; fi
}

wait_for_node() {
  local host=$1 state=
  for ((i = 0; i < 120; i++)); do
    state=$(sinfo -h -n "$host" -N -o %T 2>/dev/null | head -1 || true)
    case $state in
      idle | mixed | allocated | completing) return 0;;
      down* | drain* | fail*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true;;
    esac
    sleep 0.5
  done
  die "node $host not ready (state=${state:-none}); see $LOGS/slurmctld.log and $LOGS/slurmd.log"
}

start() {
  local t0 host; t0=$(date +%s.%N)
  [[ $(id -u) == 0 ]] || die "run as root (the daemons run as root; use sudo)"
  mkdir -p "$RUN" "$LOGS" /etc/slurm
  install_packages
  # slurmd finds its NodeName from the short hostname, and the controller must resolve it
  host=$(hostname -s)
  getent hosts "$host" >/dev/null || { say "adding $host to /etc/hosts"; echo "127.0.0.1 $host" >>/etc/hosts; }
  start_munge
  [[ $ACCOUNTING == 1 ]] && start_accounting
  write_slurm_conf "$host"
  [[ $ACCOUNTING == 1 ]] && register_cluster
  ensure_daemon slurmctld
  retry 100 0.1 scontrol ping || die "slurmctld did not answer; see $LOGS/slurmctld.log"
  ensure_daemon slurmd
  wait_for_node "$host"
  if [[ $ACCOUNTING == 1 ]]; then retry 50 0.2 sacct -n -X -j 1 || die "sacct does not work; see $LOGS/slurmdbd.log"; fi
  sinfo
  say "ready in $(elapsed "$t0") s (accounting=$ACCOUNTING, partition=$PARTITION)"
}

case ${1:-start} in
  start) start;;
  stop) stop_daemons;;
  restart) stop_daemons; start;;
  status) show_status;;
  *) echo "usage: bash scripts/slurm.sh start|stop|status|restart" >&2; exit 2;;
esac
