#!/usr/bin/env bash
# bench/soak.sh - the soak benchmark: mixed traffic for a while against a release build while
# the JWKS endpoint flaps and the configuration is reloaded, then a report on what was served
# and whether the gateway's memory and file descriptors stayed flat.
#
#   bash bench/soak.sh               # 10 minutes
#   bash bench/soak.sh --minutes 1   # a quick run
#
# Options: --minutes N, --rate R (requests/s over all connections, default 400),
#          --connections N (default 16), --no-build (use the target/release/jwt-gateway there).
#
# What runs, all on 127.0.0.1 on free ports (bench/soak/soak.py has the parts):
# - a JWKS endpoint answering 200 and 500 in turn, 20 s each (Cache-Control: max-age=10; the
#   provider refreshes every 15 s at most, 5 s at least), so refreshes fail and recover all along;
# - an HTTP/1.1 upstream with a WebSocket echo;
# - the gateway (`run`, JSON access log at info to bench/out/soak/gateway.log), its config
#   swapped between two valid variants and SIGHUP sent every 30 s;
# - an asyncio client: valid, expired, forged (another key, trusted kid), unknown-kid and
#   anonymous requests on keep-alive connections, and WebSocket sessions of 10 echo round trips.
# The report (also in bench/out/soak/report.md) gives requests served, answers by kind and
# status, JWKS and reload counters, and the gateway's RSS and open fds at boot, after the
# warm-up and at the end, with a PASS/FAIL line. Exit status 0 on PASS, 1 on FAIL.
#
# Needs python3 with the `cryptography` package (installed from PyPI into bench/out/soak/venv if
# the system Python lacks it) for ES256 signing. Every process started here is stopped on exit,
# by its pid, and a watchdog bounds the run (after the build) to the soak's length plus 3 min.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
MINUTES=10
RATE=400
CONNS=16
BUILD=1
while (($#)); do
  case "$1" in
    --minutes) MINUTES=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --connections) CONNS=$2; shift ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,28p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "bench/soak.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$MINUTES" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "bench/soak.sh: --minutes takes a number" >&2; exit 2; }
SECONDS_TOTAL=$(python3 -c "print(int(float('$MINUTES') * 60))")

OUT="$ROOT/bench/out/soak"
SOAK="$ROOT/bench/soak/soak.py"
log() { printf 'soak: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

command -v python3 >/dev/null || die "python3 is needed"
mkdir -p "$OUT"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
python_with_cryptography "$OUT/venv" "ES256 signing"

build_gateway

start_watchdog $((SECONDS_TOTAL + 180)) soak

# ----------------------------------------------------------------------------------------------
# Keys, ports, the JWKS endpoint and the upstream
# ----------------------------------------------------------------------------------------------
rm -f "$OUT"/*.pem "$OUT"/*.yaml "$OUT"/*.log "$OUT/report.md"
"$PYTHON" "$SOAK" keys "$OUT"
read -r PORT ADMIN JWKS_PORT UP_PORT < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks:
    s.close()
EOF
)
ISSUER="http://127.0.0.1:$JWKS_PORT"

"$PYTHON" "$SOAK" jwks "$JWKS_PORT" "$OUT/jwks.json" 20 2>"$OUT/jwks.log" &
PIDS+=($!)
"$PYTHON" "$SOAK" upstream "$UP_PORT" 2>"$OUT/upstream.log" &
PIDS+=($!)
wait_port() {
  local port=$1 _
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  die "nothing listens on 127.0.0.1:$port"
}
wait_port "$JWKS_PORT"
wait_port "$UP_PORT"

# ----------------------------------------------------------------------------------------------
# Two valid config variants: B adds a claim header and a route. Same provider in both, so its
# keys and cache survive each swap.
# ----------------------------------------------------------------------------------------------
config() {
  local variant=$1
  cat <<EOF
server:
  listen: "127.0.0.1:$PORT"
  insecure_plaintext: true
  limits: { request_timeout: 10s }
admin:
  listen: "127.0.0.1:$ADMIN"
log: { level: info, format: json }
providers:
  - name: soak
    issuer: "$ISSUER"
    jwks_url: "$ISSUER/jwks"
    allow_insecure_jwks_http: true
    algorithms: [ES256]
    audiences: ["soak-api"]
    jwks: { refresh_interval: 15s, min_refresh: 5s, fetch_timeout: 2s }
routes:
  - name: public
    match: { path_prefix: /public }
    upstream: "http://127.0.0.1:$UP_PORT"
    auth: anonymous
  - name: api
    match: { path_prefix: /api }
    upstream: "http://127.0.0.1:$UP_PORT"
    auth: { providers: [soak] }
EOF
  if [ "$variant" = a ]; then
    cat <<EOF
    forward: { claims: { sub: X-Auth-Subject } }
EOF
  else
    cat <<EOF
    forward: { claims: { sub: X-Auth-Subject, jti: X-Auth-Jti } }
  - name: variant-b
    match: { path_prefix: /b }
    upstream: "http://127.0.0.1:$UP_PORT"
    auth: anonymous
EOF
  fi
}
config a >"$OUT/gateway-a.yaml"
config b >"$OUT/gateway-b.yaml"
for v in a b; do
  "$GATEWAY" check -c "$OUT/gateway-$v.yaml" >/dev/null || die "config variant $v does not pass check"
done
cp "$OUT/gateway-a.yaml" "$OUT/gateway.yaml"

"$GATEWAY" run -c "$OUT/gateway.yaml" 2>"$OUT/gateway.log" &
GW_PID=$!
PIDS+=("$GW_PID")
ready=0
for _ in $(seq 1 100); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$ADMIN/readyz" 2>/dev/null; then ready=1; break; fi
  kill -0 "$GW_PID" 2>/dev/null || break
  sleep 0.1
done
[ "$ready" = 1 ] || { tail -n 20 "$OUT/gateway.log" >&2; die "the gateway did not become ready"; }
log "gateway pid $GW_PID on 127.0.0.1:$PORT; $MINUTES min at $RATE req/s over $CONNS connections"

set +e
"$PYTHON" "$SOAK" drive --port "$PORT" --admin "$ADMIN" --jwks-port "$JWKS_PORT" --pid "$GW_PID" \
  --keys "$OUT" --issuer "$ISSUER" --config "$OUT/gateway.yaml" \
  --config-a "$OUT/gateway-a.yaml" --config-b "$OUT/gateway-b.yaml" --report "$OUT/report.md" \
  --seconds "$SECONDS_TOTAL" --rate "$RATE" --connections "$CONNS"
rc=$?
set -e
kill -0 "$GW_PID" 2>/dev/null || { log "the gateway is no longer running"; rc=1; }
log "access log: $(wc -l <"$OUT/gateway.log") lines in $OUT/gateway.log; report in $OUT/report.md"
exit "$rc"
