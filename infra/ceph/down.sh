#!/usr/bin/env bash
# Stop a cluster that infra/ceph/up.sh started, and by default remove its folder. Idempotent: with
# nothing running, or no folder at all, it does nothing and succeeds.
#
# Usage:
#   infra/ceph/down.sh            stop every daemon, then remove $BASE
#   infra/ceph/down.sh --keep     stop every daemon, keep $BASE (logs, config)
#   infra/ceph/down.sh rgw        stop radosgw only (SIGTERM; `up.sh rgw` starts it again)
#   infra/ceph/down.sh rgw --kill kill radosgw only, with SIGKILL (a crash, for fault injection)
#
# Environment: BASE (as for up.sh), DOWN_TIMEOUT_S (how long a daemon may take to exit after
# SIGTERM before it gets SIGKILL; default 10).
set -uo pipefail

BASE="${BASE:-${TMPDIR:-/tmp}/photoenhance-ceph}"
# Absolute, always: the daemons change directory, and down.sh matches their command lines.
BASE="$(realpath -m -- "$BASE")"
DOWN_TIMEOUT_S="${DOWN_TIMEOUT_S:-10}"
CONF="$BASE/ceph.conf"
PIDS="$BASE/pids"

ONLY=""; KEEP=0; SIGNAL=TERM
for arg in "$@"; do
  case "$arg" in
    rgw) ONLY=rgw.a ;;
    --keep) KEEP=1 ;;
    --kill) SIGNAL=KILL ;;
    *) echo "usage: $0 [--keep] | rgw [--kill]" >&2; exit 2 ;;
  esac
done

# Only a live, non-zombie process started with this cluster's config file is ours: pids get reused,
# and other clusters may run on this machine.
ours() {
  [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null &&
    tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qxF -- "$CONF"
}

# stop <signal> <name pid>...: one daemon after the other, each signalled and waited for (bounded,
# then SIGKILL). One at a time on purpose: radosgw told to stop while the monitor and OSD stop
# too waits for them for seconds; stopped in order the whole cluster goes in well under a second.
stop() {
  local sig="$1"; shift
  while [ $# -ge 2 ]; do
    local name="$1" pid="$2"; shift 2
    ours "$pid" || continue
    kill "-$sig" "$pid" 2>/dev/null && echo "down.sh: SIG$sig to $name (pid $pid)"
    local deadline=$(( $(date +%s) + DOWN_TIMEOUT_S ))
    while ours "$pid"; do
      if [ "$(date +%s)" -ge "$deadline" ]; then
        kill -KILL "$pid" 2>/dev/null && echo "down.sh: $name (pid $pid) still running after ${DOWN_TIMEOUT_S}s, sent SIGKILL"
        deadline=$(( $(date +%s) + 5 ))
      fi
      sleep 0.05
    done
  done
}

if [ -f "$PIDS" ]; then
  if [ -n "$ONLY" ]; then
    # shellcheck disable=SC2046  # "name pid" pairs split into words on purpose
    stop "$SIGNAL" $(awk -v n="$ONLY" '$1 == n' "$PIDS")
    exit 0
  fi
  # reverse start order: radosgw, OSD, monitor
  # shellcheck disable=SC2046
  stop "$SIGNAL" $(tac "$PIDS")
  rm -f "$PIDS"
elif [ -n "$ONLY" ]; then
  echo "down.sh: no cluster in $BASE"; exit 0
fi

[ "$KEEP" = 1 ] && exit 0
[ -e "$BASE" ] || exit 0
# Remove only what up.sh made: guard against BASE pointing somewhere precious by mistake.
if [ -f "$CONF" ] && [ -d "$BASE/log" ]; then
  rm -rf "$BASE" && echo "down.sh: removed $BASE"
else
  echo "down.sh: $BASE does not look like a cluster folder of up.sh; left in place" >&2
fi
