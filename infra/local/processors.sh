# shellcheck shell=bash
# Which workers up.sh starts: a pure function of PROCESSORS, the levels this machine can serve and
# the first port (no side effects, so tests/infra/test_local_processors.py runs it on its own).
#
#   processor_plan SPEC SERVED BASE_PORT [TAKEN_PORTS]
#
# SPEC (PROCESSORS):
#   empty       one worker serving SERVED (the levels whose weights are present)
#   N           N workers, each serving SERVED (the old form: more workers on the same levels)
#   LEVEL:N,... N workers per level, each serving that level only, e.g. fast:1,balanced:1
#               (a level whose weights are missing is left out with a warning)
# Prints one line per worker, "name port levels", ports counting up from BASE_PORT and stepping
# over TAKEN_PORTS (space-separated: the other services' ports on this machine); the name
# doubles as the log file's and, prefixed with the host name, as the worker id. A malformed SPEC,
# a level named twice, or a plan that starts no worker: a message on stderr and status 2.
processor_plan() {
  local spec="$1" served="$2" port="$3" taken=" ${4:-} "
  local -a entries=()
  local entry level count i n=0 seen=","
  # $port moves to the next port not taken (called before each worker; the worker then takes it)
  _skip_taken() {
    while [[ "$taken" == *" $port "* ]]; do port=$((port + 1)); done
  }
  if [ -z "$served" ]; then
    echo "processor_plan: no level to serve" >&2
    return 2
  fi
  [ -n "$spec" ] || spec=1
  if [[ "$spec" =~ ^[0-9]+$ ]]; then
    if [ "$spec" -lt 1 ]; then
      echo "PROCESSORS=$spec: start at least one worker" >&2
      return 2
    fi
    for ((i = 1; i <= spec; i++)); do
      _skip_taken
      echo "processor-$i $port $served"
      taken="$taken$port "
    done
    return 0
  fi
  IFS=',' read -ra entries <<<"$spec"
  for entry in "${entries[@]}"; do
    if [[ ! "$entry" =~ ^(fast|balanced|best):([0-9]+)$ ]]; then
      echo "PROCESSORS=$spec: '$entry' is not LEVEL:COUNT (levels fast, balanced, best), nor is PROCESSORS a number" >&2
      return 2
    fi
    level="${BASH_REMATCH[1]}"
    count="${BASH_REMATCH[2]}"
    if [[ "$seen" == *",$level,"* ]]; then
      echo "PROCESSORS=$spec: $level is named twice" >&2
      return 2
    fi
    seen="$seen$level,"
    if [[ ",$served," != *",$level,"* ]]; then
      echo "PROCESSORS: no $level worker: its weights are missing (serving $served; see README, Model weights)" >&2
      continue
    fi
    for ((i = 1; i <= count; i++)); do
      _skip_taken
      echo "processor-$level-$i $port $level"
      taken="$taken$port "
      n=$((n + 1))
    done
  done
  if [ "$n" -lt 1 ]; then
    echo "PROCESSORS=$spec starts no worker (levels served here: $served)" >&2
    return 2
  fi
}
