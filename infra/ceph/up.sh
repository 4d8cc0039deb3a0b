#!/usr/bin/env bash
# A throw-away single-node Ceph on 127.0.0.1: one monitor, one in-memory (memstore) OSD and radosgw,
# which speaks S3 and publishes bucket notifications to RabbitMQ. For tests and local runs only:
# no authentication inside the cluster, data lives in memory and dies with the OSD.
#
# Usage:
#   infra/ceph/up.sh          start a new cluster in $BASE (refuses when one is running there)
#   infra/ceph/up.sh rgw      start radosgw again in an existing cluster (after `down.sh rgw`)
#
# Environment (all optional):
#   BASE            folder holding config, data, logs, pids and env   (/tmp/photoenhance-ceph)
#   RGW_PORT        S3 port of radosgw                                (7480)
#   MON_V2_PORT     monitor port, msgr2                               (3300)
#   MON_V1_PORT     monitor port, legacy msgr1                        (6789)
#   S3_ACCESS_KEY   access key of the S3 user   (default: photoenhance/settings.py's default)
#   S3_SECRET_KEY   secret key of the S3 user   (default: photoenhance/settings.py's default)
#   UP_TIMEOUT_S    bound on each wait below, in seconds               (60)
#
# Distinct BASE and ports let several clusters run side by side. Writes $BASE/pids ("name pid" per
# line, read by down.sh) and $BASE/env (S3_* and CEPH_CONF exports, to `source`).
# Exit status: 0 ready; 1 failed (daemons stopped, logs kept in $BASE/log); 2 usage or already
# running; 3 a port is taken (a caller choosing free ports may pick others and try again).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
BASE="${BASE:-${TMPDIR:-/tmp}/photoenhance-ceph}"
# Absolute, always: the daemons change directory, and down.sh matches their command lines.
BASE="$(realpath -m -- "$BASE")"
RGW_PORT="${RGW_PORT:-7480}"
MON_V2_PORT="${MON_V2_PORT:-3300}"
MON_V1_PORT="${MON_V1_PORT:-6789}"
# Keep these two in step with the defaults of S3_ACCESS_KEY / S3_SECRET_KEY in photoenhance/settings.py
# (tests/infra checks it), so a local run needs no configuration.
S3_ACCESS_KEY="${S3_ACCESS_KEY:-PHOTOENHANCEDEV00001}"
S3_SECRET_KEY="${S3_SECRET_KEY:-photoenhance-dev-secret-key-000000000001}"
UP_TIMEOUT_S="${UP_TIMEOUT_S:-60}"
MODE="${1:-all}"

CONF="$BASE/ceph.conf"
PIDS="$BASE/pids"
export CEPH_CONF="$CONF"
T0=$(date +%s.%N)

say() { printf '[up.sh %5.2fs] %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*"; }
die() { echo "up.sh: ERROR: $*" >&2; exit 1; }

# --- processes --------------------------------------------------------------------------------
# A recorded pid counts as ours only while it is alive, not a zombie, and was started with our
# config file: pids get reused, and other clusters may run on this machine.
ours() {
  [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null &&
    tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qxF -- "$CONF"
}
pid_of() { [ -f "$PIDS" ] && awk -v n="$1" '$1 == n { p = $2 } END { if (p) print p }' "$PIDS"; }

start() { # name, command... : run detached in its own session, log to $BASE/log/<name>.out
  local name="$1"; shift
  setsid "$@" </dev/null >"$BASE/log/$name.out" 2>&1 &
  local pid=$!
  # replace an older line of the same daemon (restart of radosgw)
  if [ -f "$PIDS" ]; then grep -v "^$name " "$PIDS" >"$PIDS.tmp" || true; mv "$PIDS.tmp" "$PIDS"; fi
  echo "$name $pid" >>"$PIDS"
}

# wait_for <what> <command...>: poll until the command succeeds, at most UP_TIMEOUT_S; fail early
# when a daemon we started has died, naming its log.
wait_for() {
  local what="$1"; shift
  local deadline=$(( $(date +%s) + UP_TIMEOUT_S ))
  until "$@" >/dev/null 2>&1; do
    while read -r name pid; do
      ours "$pid" || die "$name (pid $pid) died while waiting for $what; last lines of $BASE/log/$name.*:
$(tail -n 15 "$BASE/log/$name".* 2>/dev/null)"
    done <"$PIDS"
    [ "$(date +%s)" -lt "$deadline" ] || die "$what not reached within ${UP_TIMEOUT_S}s; logs in $BASE/log"
    sleep 0.2
  done
}

port_taken() {
  if command -v ss >/dev/null; then
    [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}

rgw_answers() { curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$RGW_PORT/"; }

start_rgw() {
  start rgw.a radosgw -f -c "$CONF" -n client.rgw.a
  wait_for "radosgw answering on port $RGW_PORT" rgw_answers
  say "radosgw answering on http://127.0.0.1:$RGW_PORT"
}

# On failure stop whatever this run started, so nothing is left holding ports; keep the logs.
on_exit() {
  local rc=$?
  if [ "$rc" != 0 ] && [ -f "$PIDS" ]; then
    BASE="$BASE" "$HERE/down.sh" --keep >/dev/null 2>&1 || true
    echo "up.sh: stopped the daemons it started; logs kept in $BASE/log (down.sh removes them)" >&2
  fi
}

# --- restart of radosgw only ------------------------------------------------------------------
if [ "$MODE" = rgw ]; then
  [ -f "$CONF" ] && [ -f "$BASE/env" ] || { echo "up.sh: no cluster in $BASE" >&2; exit 2; }
  RGW_PORT="$(sed -n 's/^export S3_ENDPOINT=http:\/\/127\.0\.0\.1://p' "$BASE/env")"
  pid="$(pid_of rgw.a || true)"
  if [ -n "$pid" ] && ours "$pid"; then echo "up.sh: radosgw already running (pid $pid)"; exit 0; fi
  port_taken "$RGW_PORT" && { echo "up.sh: port $RGW_PORT is taken" >&2; exit 3; }
  start_rgw
  exit 0
fi
[ "$MODE" = all ] || { echo "usage: $0 [rgw]" >&2; exit 2; }

# --- a new cluster ------------------------------------------------------------------------------
if [ -f "$PIDS" ]; then
  while read -r name pid; do
    ours "$pid" && { echo "up.sh: a cluster is running in $BASE ($name pid $pid); run down.sh first" >&2; exit 2; }
  done <"$PIDS"
fi
for port in "$RGW_PORT" "$MON_V2_PORT" "$MON_V1_PORT"; do
  port_taken "$port" && { echo "up.sh: port $port is taken" >&2; exit 3; }
done
for tool in ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph-authtool uuidgen curl bc; do
  command -v "$tool" >/dev/null || die "$tool not found; apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw ceph-common jq uuid-runtime bc curl"
done

rm -rf "$BASE"
mkdir -p "$BASE"/{log,run,mon.a,osd.0,rgw.a}
trap on_exit EXIT
FSID="$(uuidgen)"
MON_ADDR="[v2:127.0.0.1:$MON_V2_PORT,v1:127.0.0.1:$MON_V1_PORT]"

cat >"$CONF" <<EOF
[global]
fsid = $FSID
mon_initial_members = a
mon_host = $MON_ADDR
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_ipv6 = false
# a throw-away cluster on loopback: no cephx
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
keyring = $BASE/keyring
run_dir = $BASE/run
admin_socket = $BASE/run/\$name.asok
log_file = $BASE/log/\$name.log
log_to_stderr = false
err_to_stderr = true
# one OSD: pools of size 1, few placement groups, no warnings about it
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_max_pg_per_osd = 1000
mon_warn_on_pool_no_redundancy = false
mon_data_avail_warn = 1
mon_data_avail_crit = 0
# each map change (pool create, application enable) otherwise waits ~1 s for a paxos proposal
paxos_propose_interval = 0.05
paxos_min_wait = 0.01

[mon]
mon_data = $BASE/mon.\$id

[osd]
osd_data = $BASE/osd.\$id
osd_objectstore = memstore
memstore_device_bytes = 4294967296
osd_op_num_shards = 1
osd_op_num_threads_per_shard = 2
# A killed radosgw leaves its watches on the control objects until they time out (30 s by
# default), and every metadata change (bucket create/delete) meanwhile waits for its answer:
# after a crash test the next bucket deletion took 29 s. Expire them quickly instead.
osd_client_watch_timeout = 5

[client.rgw.a]
# radosgw defaults to ms_mon_client_mode=secure, which needs cephx
ms_mon_client_mode = crc
rgw_data = $BASE/rgw.a
rgw_frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
rgw_thread_pool_size = 64
# bound on waiting for a (possibly dead) watcher's answer, see osd_client_watch_timeout above;
# radosgw pings its own watches once per objecter tick, so tick well within that timeout
client_notify_timeout = 3
objecter_tick_interval = 1
# "notifications" serves the SNS topic API used to configure bucket notifications
rgw_enable_apis = s3, admin, notifications
EOF

# ceph-mon --mkfs wants a keyring even with auth off
ceph-authtool --create-keyring "$BASE/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool "$BASE/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
  --cap mgr 'allow *' >/dev/null
: >"$PIDS"

# --- monitor
monmaptool --create --fsid "$FSID" --addv a "$MON_ADDR" "$BASE/monmap" >/dev/null
ceph-mon -c "$CONF" --mkfs -i a --monmap "$BASE/monmap" --keyring "$BASE/keyring" \
  >"$BASE/log/mon.a.mkfs.out" 2>&1 || die "ceph-mon --mkfs failed: $(tail -n 5 "$BASE/log/mon.a.mkfs.out")"
start mon.a ceph-mon -f -c "$CONF" -i a
say "monitor started"

# --- OSD id and radosgw's pools, in one librados client (each `ceph` CLI call costs ~0.5 s of
#     Python start-up). Creating the pools up front saves radosgw ~2 s of lazy creation per pool on
#     the first bucket and the first PUT.
OSD_UUID="$(uuidgen)"
OSD_ID="$(/usr/bin/python3 - "$CONF" "$OSD_UUID" "$UP_TIMEOUT_S" 2>"$BASE/log/setup.err" <<'PY'
import json, sys, rados
conf, osd_uuid, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3])
cluster = rados.Rados(conffile=conf)
cluster.connect(timeout=timeout)

def mon(**cmd):
    ret, out, err = cluster.mon_command(json.dumps(cmd), b"")
    if ret != 0:
        sys.exit(f"{cmd}: {err}")
    return out

osd_id = mon(prefix="osd new", uuid=osd_uuid).decode().strip()
for pool in (".rgw.root", "default.rgw.log", "default.rgw.control", "default.rgw.meta",
             "default.rgw.buckets.index", "default.rgw.buckets.data", "default.rgw.buckets.non-ec"):
    mon(prefix="osd pool create", pool=pool, pg_num=8, pgp_num=8)
    mon(prefix="osd pool application enable", pool=pool, app="rgw")
cluster.shutdown()
print(osd_id)
PY
)" || die "cluster set-up through the monitor failed: $(tail -n 5 "$BASE/log/setup.err")"
[ "$OSD_ID" = 0 ] || die "expected OSD id 0, the monitor gave '$OSD_ID'"
say "OSD registered, pools created"

# --- OSD
ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$OSD_UUID" >"$BASE/log/osd.0.mkfs.out" 2>&1 ||
  die "ceph-osd --mkfs failed: $(tail -n 5 "$BASE/log/osd.0.mkfs.out")"
start osd.0 ceph-osd -f -c "$CONF" -i 0
# radosgw started before the OSD is up waits ~5 s (its objecter's tick) to learn that it is; the
# OSD's own log says when it is, with no CLI call
osd_active() { grep -q 'state: booting -> active' "$BASE/log/osd.0.log"; }
wait_for "OSD up" osd_active
say "OSD up"

# --- radosgw, then the S3 user (radosgw-admin after radosgw: both would create the default zone)
start_rgw
user_created() {
  timeout 30 radosgw-admin -c "$CONF" user create --uid=photoenhance --display-name="PhotoEnhance tests" \
    --access-key="$S3_ACCESS_KEY" --secret-key="$S3_SECRET_KEY" >"$BASE/log/user-create.json" 2>"$BASE/log/user-create.err"
}
wait_for "S3 user creation" user_created
say "S3 user created (access key $S3_ACCESS_KEY)"

cat >"$BASE/env" <<EOF
export CEPH_CONF=$CONF
export S3_PROVIDER=ceph
export S3_ENDPOINT=http://127.0.0.1:$RGW_PORT
export S3_ACCESS_KEY=$S3_ACCESS_KEY
export S3_SECRET_KEY=$S3_SECRET_KEY
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
EOF
say "ready: source $BASE/env"
