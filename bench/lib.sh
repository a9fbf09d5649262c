# shellcheck shell=bash disable=SC2034  # PYTHON and GATEWAY are read by the caller
# bench/lib.sh - what bench/run.sh and bench/soak.sh share. Sourced, not run: the caller defines
# log and die first, and sets ROOT, BUILD (1 to build) and, for the watchdog, its own name.

# PYTHON: the system python3 if it has the `cryptography` package, else a venv in $1 that gets
# it from PyPI ($2 says what for, in the log line).
python_with_cryptography() {
  local venv=$1 purpose=$2
  PYTHON=python3
  if python3 -c 'import cryptography' 2>/dev/null; then return 0; fi
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import cryptography' 2>/dev/null; then
    log "installing the cryptography package from PyPI into $venv ($purpose)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'cryptography>=42'
  fi
  PYTHON="$venv/bin/python"
}

# GATEWAY: the release binary, built first unless BUILD=0.
build_gateway() {
  if [ "$BUILD" = 1 ]; then
    log "cargo build --release --locked"
    cargo build --release --locked
  fi
  GATEWAY="$ROOT/target/release/jwt-gateway"
  [ -x "$GATEWAY" ] || die "no $GATEWAY (build it, or drop --no-build)"
}

# Process bookkeeping: every process started by the caller goes into PIDS and is stopped on exit,
# newest first; the watchdog (start_watchdog) bounds the whole run.
PIDS=()
WATCHDOG=
# shellcheck disable=SC2317  # stop_pid and cleanup run from the EXIT trap
stop_pid() {
  local pid=$1 _
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
# shellcheck disable=SC2317
cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
  if [ -n "$WATCHDOG" ]; then kill -TERM "$WATCHDOG" 2>/dev/null || true; wait "$WATCHDOG" 2>/dev/null || true; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# start_watchdog SECONDS NAME: ends the run (TERM to this shell) if it is still going after SECONDS.
start_watchdog() {
  local seconds=$1 name=$2
  (
    trap 'kill "$sp" 2>/dev/null; exit 0' TERM
    sleep "$seconds" & sp=$!
    wait "$sp"
    echo "$name: time limit of ${seconds}s reached, stopping" >&2
    kill -TERM $$
  ) &
  WATCHDOG=$!
}
