#!/usr/bin/env bash
# Runs the whole test suite on this machine: installs what is missing, starts RabbitMQ and
# PostgreSQL when they are down, lints (`ruff check .`: any finding fails the run before a test
# starts), then pytest (which brings up its own Ceph RGW on free ports).
# Extra arguments go to pytest, e.g. `infra/local/test.sh tests/db -x`.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=bootstrap.sh
source "$HERE/bootstrap.sh"
bootstrap
cd "$ROOT"
"$VENV/bin/ruff" check .
exec "$VENV/bin/python" -m pytest "$@"
