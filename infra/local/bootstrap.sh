#!/usr/bin/env bash
# Installs what is missing and starts what is down, so a fresh Debian machine can run and test
# PhotoEnhance without Docker. Sourced by up.sh and test.sh; safe to run again and again.
#
#   BOOTSTRAP_SKIP_APT=1   never call apt-get (the packages are known to be there)
#   BOOTSTRAP_SKIP_PIP=1   never touch the virtual environment
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"

say() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*" >&2; }

# -- system packages -----------------------------------------------------------------------------
APT_PACKAGES=(
  rabbitmq-server postgresql
  # Ceph RGW: the S3 server with real bucket notifications (MinIO is unreachable here).
  ceph-mon ceph-osd radosgw ceph-common jq uuid-runtime bc curl
  # The browser for the web page's tests; libgl1 for opencv-python.
  chromium libgl1
  # Compose v1 (Python): validates infra/docker-compose.yml without a Docker engine.
  docker-compose
  # Colour tests: Little CMS (builds the Display P3 / Adobe RGB test profiles) and Ghostscript's
  # CMYK profile (no Debian package ships a free Display P3 or CMYK profile of its own).
  liblcms2-2 libgs-common
)

install_apt() {
  [ "${BOOTSTRAP_SKIP_APT:-0}" = 1 ] && return 0
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# -- Python environment --------------------------------------------------------------------------
install_python() {
  [ "${BOOTSTRAP_SKIP_PIP:-0}" = 1 ] && return 0
  local stamp="$VENV/.photoenhance-installed"
  local want
  want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  [ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PY" -m venv "$VENV"; }
  local pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
  say "installing the ML stack (first time: ~2 minutes, ~6 GB)"
  "${pip[@]}" --upgrade pip setuptools wheel
  # torch first, pinned; then basicsr without build isolation: it names torch as a build
  # requirement, and an isolated build would download a different torch just to build a wheel.
  "${pip[@]}" "torch==2.14.1" "torchvision==0.29.1"
  "${pip[@]}" --no-build-isolation "basicsr==1.4.2"
  say "installing photoenhance and its test tools"
  "${pip[@]}" -e "$ROOT[test,bench]"
  echo "$want" > "$stamp"
}

# -- services ------------------------------------------------------------------------------------
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port, seconds, name
  local deadline=$(( $(date +%s) + $2 ))
  until port_open "$1"; do
    [ "$(date +%s)" -lt "$deadline" ] || { say "$3 did not open port $1 within $2 s"; return 1; }
    sleep 0.5
  done
}

start_rabbitmq() {
  if ! port_open 5672; then
    say "starting RabbitMQ"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    timeout 120 rabbitmqctl await_startup >/dev/null 2>&1 || true
    wait_port 5672 60 RabbitMQ
  fi
}

start_postgres() {
  if ! port_open 5432; then
    say "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
    wait_port 5432 60 PostgreSQL
  fi
}

bootstrap() {
  install_apt
  install_python
  start_rabbitmq
  start_postgres
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  bootstrap
fi
