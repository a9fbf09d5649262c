#!/usr/bin/env bash
# bench/run.sh - the load benchmark: jwt-gateway side by side with HAProxy and nginx, a gRPC
# unary run through the gateway against the same upstream direct (h2load), and a decision run
# (nginx + auth_request + the gateway's forward-auth listener vs nginx alone).
#
#   bash bench/run.sh            # full run: 3 interleaved rounds of 10 s per target (~8 min),
#                                # writes bench/results/latest.md
#   bash bench/run.sh --smoke    # 1 round of 2 s per target (about a minute after the build),
#                                # writes bench/out/smoke.md; CI runs this so it cannot rot
#
# Options: --rounds N, --duration SECONDS, --connections N (wrk -c), --output FILE,
#          --no-build (use the target/release/jwt-gateway that is there),
#          --grpc-clients N, --grpc-streams N: h2load -c and -m of the gRPC targets (4 and 8),
#          --targets A,B,...: only these targets (the names in bench/report.py's TARGETS, e.g.
#          gw-cached,gw-traced-cached for the cost of tracing); the memory test then does not run,
#          and only the tokens those targets need are minted,
#          --sched nice|rt|none: priority of the benchmark's processes (root only). nice (the
#          default): nice -20. rt: SCHED_FIFO 1, for a machine busy with other work, where even
#          nice -20 processes wait for the CPU at every wake-up; the kernel's RT throttling
#          (95 % of each second) then stalls the server for up to 50 ms each second, which shows
#          in p99 (p50, req/s and CPU per request are sound).
#
# As root on Debian 12 it installs what is missing (haproxy, nginx, wrk, nghttp2-client and
# nghttp2-server with apt-get, without letting the packages start their services; the
# `cryptography` package from PyPI into a venv if the system Python lacks it), then builds
# `cargo build --release --locked`.
# Everything runs on 127.0.0.1 on free ports; nothing is sent anywhere else. Every process it
# starts is stopped on exit (trap), each step is bounded, and a watchdog ends the run if it
# overstays.
# bench/README.md says what is measured and how.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BENCH="$ROOT/bench"

COMMAND="bash bench/run.sh${*:+ $*}"
MODE=full
ROUNDS=
DURATION=
CONNS=32
# gRPC: h2load's clients (connections) x streams per connection = requests in flight, 32 like wrk's
GRPC_CLIENTS=4
GRPC_STREAMS=8
OUTPUT=
BUILD=1
SCHED="nice"
ONLY=
while (($#)); do
  case "$1" in
    --smoke) MODE=smoke ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --connections) CONNS=$2; shift ;;
    --output) OUTPUT=$2; shift ;;
    --no-build) BUILD=0 ;;
    --sched) SCHED=$2; shift ;;
    --targets) ONLY=$2; shift ;;
    --grpc-clients) GRPC_CLIENTS=$2; shift ;;
    --grpc-streams) GRPC_STREAMS=$2; shift ;;
    -h|--help) sed -n '2,30p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "bench/run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$SCHED" in nice|rt|none) ;; *) echo "bench/run.sh: --sched takes nice, rt or none" >&2; exit 2 ;; esac

ALL_TARGETS=(gw-anon gw-cached gw-traced-cached gw-tls-cached gw-uncached haproxy-pass nginx-pass haproxy-jwt
             gw-grpc grpc-direct nginx-authreq)
if [ -n "$ONLY" ]; then
  IFS=, read -r -a TARGETS <<< "$ONLY"
  for t in "${TARGETS[@]}"; do
    [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || { echo "bench/run.sh: unknown target $t (one of: ${ALL_TARGETS[*]})" >&2; exit 2; }
  done
  MEMORY=0
else
  TARGETS=("${ALL_TARGETS[@]}")
  MEMORY=1
fi

if [ "$MODE" = smoke ]; then
  ROUNDS=${ROUNDS:-1}
  DURATION=${DURATION:-2}
  MEM_TOKENS=2000          # the memory measurement, scaled down
  UNCACHED_TOKENS=4000     # too few for 2 s without repeats: smoke only checks that it all works
  DEADLINE=240
  OUTPUT=${OUTPUT:-$BENCH/out/smoke.md}
else
  ROUNDS=${ROUNDS:-3}
  DURATION=${DURATION:-10}
  MEM_TOKENS=100000
  # A new token on every request: the file must outlast the fastest uncached run (req/s x s),
  # since a repeated token is a cache hit. The hit ratio is measured and shown in the table.
  UNCACHED_TOKENS=${BENCH_UNCACHED_TOKENS:-300000}
  DEADLINE=1200
  OUTPUT=${OUTPUT:-$BENCH/results/latest.md}
fi
WARMUP=1
ISSUER="https://issuer.bench.invalid"
AUDIENCE="bench-api"
KID="bench-rs256"

OUT="$BENCH/out"
RUN="$OUT/run"               # this run's configs, logs and raw wrk outputs (replaced each run)
KEYS="$OUT/keys"             # the RS256 key and minted tokens, kept between runs while valid
log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# ----------------------------------------------------------------------------------------------
# Installs
# ----------------------------------------------------------------------------------------------
want=()
command -v haproxy >/dev/null || want+=(haproxy)
command -v nginx >/dev/null || want+=(nginx)
command -v wrk >/dev/null || want+=(wrk)
{ command -v h2load && command -v nghttp; } >/dev/null || want+=(nghttp2-client)   # gRPC load, checks
command -v nghttpd >/dev/null || want+=(nghttp2-server)     # the gRPC upstream
command -v openssl >/dev/null || want+=(openssl)
command -v curl >/dev/null || want+=(curl)
command -v pgrep >/dev/null || want+=(procps)
command -v taskset >/dev/null || want+=(util-linux)
command -v python3 >/dev/null || want+=(python3 python3-venv)
if ((${#want[@]})); then
  [ "$(id -u)" = 0 ] || die "run as root to apt-get install ${want[*]}"
  log "installing Debian packages: ${want[*]}"
  POLICY_RC_CREATED=0
  # policy-rc.d exit 101 = "not allowed": the packages' own nginx/haproxy services stay down.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    POLICY_RC_CREATED=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
  if [ -d /run/systemd/system ]; then
    systemctl disable --now nginx.service haproxy.service >/dev/null 2>&1 || true
  fi
  if [ "$POLICY_RC_CREATED" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
python_with_cryptography "$OUT/venv" "token signing"

HAPROXY_VERSION=$(haproxy -v | awk 'NR==1 {print $3}')
case "$HAPROXY_VERSION" in
  1.*|2.[0-4]|2.[0-4].*) die "HAProxy $HAPROXY_VERSION has no jwt_verify (needs 2.5 or later)" ;;
esac

build_gateway

# The whole run (after the build) is bounded by DEADLINE seconds.
start_watchdog "$DEADLINE" bench

LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
# How busy the machine is before anything starts: a benchmark on a busy machine measures the
# other work too (the report also flags, per target, CPU used on core 1 by other processes).
busy_sample() { awk '$1 == "cpu" {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat; }
read -r qb0 qt0 < <(busy_sample); sleep 2; read -r qb1 qt1 < <(busy_sample)
BUSY_START=$(( (qt1 - qt0) > 0 ? 100 * (qb1 - qb0) / (qt1 - qt0) : 0 ))
if [ "$BUSY_START" -gt 10 ]; then
  log "warning: the machine is already ${BUSY_START}% busy with other processes; figures will be disturbed"
fi
rm -rf "$RUN"
mkdir -p "$RUN/raw" "$RUN/nginx-tmp" "$KEYS" "$(dirname "$OUTPUT")"

# ----------------------------------------------------------------------------------------------
# CPU pinning: the server under test alone on core 1; wrk and the origin share core 0.
# ----------------------------------------------------------------------------------------------
NPROC=$(nproc)
SRV=()
LOAD=()
if [ "$NPROC" -ge 2 ] && taskset -c 1 true 2>/dev/null && taskset -c 0 true 2>/dev/null; then
  SRV=(taskset -c 1)
  LOAD=(taskset -c 0)
  PINNING="server under test on core 1; wrk and the origin on core 0"
else
  PINNING="none (nproc=$NPROC or taskset refused): every process shares every core"
fi
# On a shared machine (builds, tests of others), the benchmark's own processes run at nice -20
# or SCHED_FIFO (--sched, root only), so the scheduler gives them the CPU first; the report
# still flags CPU that other processes took on the server's core.
case "$SCHED" in
  rt)
    if chrt -f 1 true 2>/dev/null; then
      SRV=(chrt -f 1 "${SRV[@]}")
      LOAD=(chrt -f 1 "${LOAD[@]}")
      PINNING="$PINNING; all SCHED_FIFO 1"
    fi ;;
  none) ;;
  nice)
    if nice -n -20 true 2>/dev/null && [ "$(nice -n -20 nice)" = -20 ]; then
      SRV=(nice -n -20 "${SRV[@]}")
      LOAD=(nice -n -20 "${LOAD[@]}")
      PINNING="$PINNING; all at nice -20"
    fi ;;
  *) die "--sched takes nice, rt or none" ;;
esac
log "pinning: $PINNING"

# ----------------------------------------------------------------------------------------------
# Keys, JWKS, tokens, TLS certificate
# ----------------------------------------------------------------------------------------------
if [ ! -s "$KEYS/key.pem" ]; then
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$KEYS/key.pem" 2>/dev/null
  rm -f "$KEYS"/tokens.*
fi
openssl pkey -in "$KEYS/key.pem" -pubout -out "$KEYS/pub.pem"
JWKS=$("$PYTHON" "$BENCH/mint.py" jwks "$KEYS/key.pem" "$KID")

# The token walk needs UNCACHED_TOKENS, the memory test MEM_TOKENS; a run of cached-token targets
# alone needs only the one token.
NEED_TOKENS=1
if [[ " ${TARGETS[*]} " == *" gw-uncached "* || " ${TARGETS[*]} " == *" haproxy-jwt "* ]]; then NEED_TOKENS=$UNCACHED_TOKENS; fi
if [ "$MEMORY" = 1 ] && [ "$MEM_TOKENS" -gt "$NEED_TOKENS" ]; then NEED_TOKENS=$MEM_TOKENS; fi
TOKENS="$KEYS/tokens.txt"
STAMP="$KEYS/tokens.stamp"     # "<count> <exp> <issuer> <audience> <kid>"
now=$(date +%s)
reuse=0
if [ -s "$TOKENS" ] && [ -f "$STAMP" ]; then
  read -r have_count have_exp have_iss have_aud have_kid < "$STAMP" || true
  if [ "${have_count:-0}" -ge "$NEED_TOKENS" ] && [ "${have_exp:-0}" -gt $((now + 86400)) ] &&
     [ "$have_iss" = "$ISSUER" ] && [ "$have_aud" = "$AUDIENCE" ] && [ "$have_kid" = "$KID" ]; then
    reuse=1
  fi
fi
if [ "$reuse" = 0 ]; then
  log "minting $NEED_TOKENS distinct RS256 tokens (kept in $KEYS for later runs)"
  t0=$(date +%s)
  "$PYTHON" "$BENCH/mint.py" mint "$KEYS/key.pem" "$KID" "$ISSUER" "$AUDIENCE" "$NEED_TOKENS" "$TOKENS" --exp-days 30
  echo "$NEED_TOKENS $((now + 30 * 86400)) $ISSUER $AUDIENCE $KID" > "$STAMP"
  log "minted in $(( $(date +%s) - t0 ))s"
fi
CACHED_TOKEN=$(head -n 1 "$TOKENS")

TLS="$RUN/tls"
mkdir -p "$TLS"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench CA" \
  -keyout "$TLS/ca.key" -out "$TLS/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout "$TLS/gateway.key" -out "$TLS/gateway.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$TLS/ext.cnf"
openssl x509 -req -in "$TLS/gateway.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" -CAcreateserial \
  -days 2 -extfile "$TLS/ext.cnf" -out "$TLS/gateway.crt" 2>/dev/null

# ----------------------------------------------------------------------------------------------
# Configs on free ports
# ----------------------------------------------------------------------------------------------
read -r P_ORIGIN P_GW A_GW P_GWTLS A_GWTLS P_GWU A_GWU P_HAPASS P_HAJWT P_NGINX \
  P_GRPC P_GWD A_GWD P_DECIDE P_NGAUTH P_GWT A_GWT P_OTLP < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(18):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)

fill() { # fill TEMPLATE OUTPUT KEY=VALUE...
  local tmpl=$1 out=$2
  shift 2
  "$PYTHON" - "$tmpl" "$out" "$@" <<'EOF'
import sys
text = open(sys.argv[1]).read()
import re
for kv in sys.argv[3:]:
    k, v = kv.split("=", 1)
    text = text.replace("@" + k + "@", v)
left = re.findall(r"@[A-Z_]+@", text)
if left:
    sys.exit(f"{sys.argv[1]}: unfilled placeholders {sorted(set(left))}")
open(sys.argv[2], "w").write(text)
EOF
}
PLAIN_BLOCK="  insecure_plaintext: true"
TLS_BLOCK=$(printf '  tls:\n    cert_file: %s\n    key_file: %s' "$TLS/gateway.crt" "$TLS/gateway.key")
# The decision gateway (nginx auth_request target) alone has a forward_auth listener.
DECIDE_BLOCK=$(printf '\nforward_auth:\n  listen: "127.0.0.1:%s"\n  trusted_proxies: ["127.0.0.1/32"]' "$P_DECIDE")
common=(ORIGIN_PORT="$P_ORIGIN" GRPC_PORT="$P_GRPC" ISSUER="$ISSUER" AUDIENCE="$AUDIENCE" OUT="$RUN")
# The traced gateway alone exports spans: to the origin nginx's OTLP sink, at the default
# sample_ratio (0.01).
TRACING_BLOCK=$(printf '\ntracing:\n  otlp_endpoint: "http://127.0.0.1:%s"' "$P_OTLP")
gw_common=("${common[@]}" FORWARD_AUTH_BLOCK= TRACING_BLOCK=)
fill "$BENCH/conf/gateway.yaml.in" "$RUN/gw-plain.yaml" "${gw_common[@]}" PORT="$P_GW" ADMIN_PORT="$A_GW" SERVER_BLOCK="$PLAIN_BLOCK"
fill "$BENCH/conf/gateway.yaml.in" "$RUN/gw-tls.yaml" "${gw_common[@]}" PORT="$P_GWTLS" ADMIN_PORT="$A_GWTLS" SERVER_BLOCK="$TLS_BLOCK"
fill "$BENCH/conf/gateway.yaml.in" "$RUN/gw-uncached.yaml" "${gw_common[@]}" PORT="$P_GWU" ADMIN_PORT="$A_GWU" SERVER_BLOCK="$PLAIN_BLOCK"
fill "$BENCH/conf/gateway.yaml.in" "$RUN/gw-decide.yaml" "${common[@]}" PORT="$P_GWD" ADMIN_PORT="$A_GWD" SERVER_BLOCK="$PLAIN_BLOCK" FORWARD_AUTH_BLOCK="$DECIDE_BLOCK" TRACING_BLOCK=
fill "$BENCH/conf/gateway.yaml.in" "$RUN/gw-traced.yaml" "${common[@]}" PORT="$P_GWT" ADMIN_PORT="$A_GWT" SERVER_BLOCK="$PLAIN_BLOCK" FORWARD_AUTH_BLOCK= TRACING_BLOCK="$TRACING_BLOCK"
fill "$BENCH/conf/origin.nginx.conf.in" "$RUN/origin.conf" "${common[@]}" JWKS="$JWKS" OTLP_PORT="$P_OTLP"
fill "$BENCH/conf/nginx-proxy.conf.in" "$RUN/nginx-proxy.conf" "${common[@]}" PORT="$P_NGINX"
fill "$BENCH/conf/nginx-authreq.conf.in" "$RUN/nginx-authreq.conf" "${common[@]}" PORT="$P_NGAUTH" DECISION_PORT="$P_DECIDE"
fill "$BENCH/conf/haproxy.cfg.in" "$RUN/haproxy.cfg" "${common[@]}" PASS_PORT="$P_HAPASS" JWT_PORT="$P_HAJWT" PUBKEY="$KEYS/pub.pem"

# The gRPC unary call, grpc.health.v1.Health/Check, as bytes on the wire: each message is a
# 5-byte prefix (0 = not compressed, 4-byte big-endian length) and the protobuf encoding.
# Request HealthCheckRequest{service: "bench"}: field 1, length 5; h2load sends it as the body.
GRPC_PATH=/grpc.health.v1.Health/Check
GRPC_HEADERS=(-H 'content-type: application/grpc' -H 'te: trailers')
printf '\x00\x00\x00\x00\x07\x0a\x05bench' > "$RUN/grpc-request.bin"
# The upstream's answer, HealthCheckResponse{status: SERVING} (field 1 = 1), is a file nghttpd
# serves at that path, followed by the trailer grpc-status: 0 (see "Servers" below).
mkdir -p "$RUN/grpc-htdocs$(dirname "$GRPC_PATH")"
printf '\x00\x00\x00\x00\x02\x08\x01' > "$RUN/grpc-htdocs$GRPC_PATH"
: > "$RUN/grpc-mime.types"

for cfg in gw-plain gw-tls gw-uncached gw-decide gw-traced; do
  "$GATEWAY" check -c "$RUN/$cfg.yaml" > "$RUN/$cfg.check.txt" 2>&1 || { cat "$RUN/$cfg.check.txt" >&2; die "$cfg.yaml does not pass jwt-gateway check"; }
done
haproxy -c -q -f "$RUN/haproxy.cfg" || die "haproxy.cfg does not pass haproxy -c"
nginx -t -q -e "$RUN/origin.error.log" -p "$RUN" -c "$RUN/origin.conf" || die "origin.conf does not pass nginx -t"
nginx -t -q -e "$RUN/nginx-proxy.error.log" -p "$RUN" -c "$RUN/nginx-proxy.conf" || die "nginx-proxy.conf does not pass nginx -t"
nginx -t -q -e "$RUN/nginx-authreq.error.log" -p "$RUN" -c "$RUN/nginx-authreq.conf" || die "nginx-authreq.conf does not pass nginx -t"

# ----------------------------------------------------------------------------------------------
# Servers
# ----------------------------------------------------------------------------------------------
wait_http() { # wait_http URL [curl options...]: until it answers 200, at most 20 s
  local url=$1 _
  shift
  for _ in $(seq 1 200); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$url" 2>/dev/null)" = 200 ]; then return 0; fi
    sleep 0.1
  done
  return 1
}

"${LOAD[@]}" nginx -e "$RUN/origin.error.log" -p "$RUN" -c "$RUN/origin.conf" -g 'daemon off;' &
ORIGIN_PID=$!; PIDS+=("$ORIGIN_PID")
wait_http "http://127.0.0.1:$P_ORIGIN/" || die "the origin nginx did not start (see $RUN/origin.error.log)"
# The gRPC upstream, next to the origin on core 0: nghttpd (Debian's nghttp2-server, the HTTP/2
# library h2load and curl use), h2c with prior knowledge, one thread, answering every POST to
# GRPC_PATH with the message file and the trailer. It sends no content-type (it has no way to
# set one for a path without an extension); gRPC clients of grpcio's C core accept that (see
# bench/README.md on the choice).
"${LOAD[@]}" nghttpd --no-tls -a 127.0.0.1 -d "$RUN/grpc-htdocs" --mime-types-file="$RUN/grpc-mime.types" \
  --no-content-length --trailer 'grpc-status: 0' "$P_GRPC" > "$RUN/nghttpd.log" 2>&1 &
GRPC_PID=$!; PIDS+=("$GRPC_PID")

declare -A GW_PID
start_gateway() { # start_gateway NAME ADMIN_PORT
  local name=$1 admin=$2 pid
  "${SRV[@]}" "$GATEWAY" run -c "$RUN/$name.yaml" >> "$RUN/$name.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  GW_PID[$name]=$pid
  if ! wait_http "http://127.0.0.1:$admin/readyz"; then
    tail -n 20 "$RUN/$name.log" >&2
    die "gateway $name did not become ready"
  fi
}
restart_gateway() { # restart_gateway NAME ADMIN_PORT: a fresh process, with an empty token cache
  local name=$1 old=${GW_PID[$1]:-}
  if [ -n "$old" ]; then stop_pid "$old"; fi
  start_gateway "$@"
}
start_gateway gw-plain "$A_GW"
start_gateway gw-tls "$A_GWTLS"
start_gateway gw-uncached "$A_GWU"
start_gateway gw-decide "$A_GWD"
start_gateway gw-traced "$A_GWT"

"${SRV[@]}" haproxy -db -f "$RUN/haproxy.cfg" > "$RUN/haproxy.log" 2>&1 &
HAPROXY_PID=$!; PIDS+=("$HAPROXY_PID")
"${SRV[@]}" nginx -e "$RUN/nginx-proxy.error.log" -p "$RUN" -c "$RUN/nginx-proxy.conf" -g 'daemon off;' &
NGINX_PID=$!; PIDS+=("$NGINX_PID")
"${SRV[@]}" nginx -e "$RUN/nginx-authreq.error.log" -p "$RUN" -c "$RUN/nginx-authreq.conf" -g 'daemon off;' &
NGAUTH_PID=$!; PIDS+=("$NGAUTH_PID")
wait_http "http://127.0.0.1:$P_HAPASS/" || die "HAProxy did not start (see $RUN/haproxy.log)"
wait_http "http://127.0.0.1:$P_NGINX/" || die "nginx did not start (see $RUN/nginx-proxy.error.log)"

# Every target answers 200 to the request it will get, before anything is measured.
AUTH=(-H "Authorization: Bearer $CACHED_TOKEN")
wait_http "http://127.0.0.1:$P_GW/anon/ping" || die "gateway anonymous route does not answer 200"
wait_http "http://127.0.0.1:$P_GW/api/ping" "${AUTH[@]}" || die "gateway does not accept the benchmark token"
wait_http "http://127.0.0.1:$P_GWT/api/ping" "${AUTH[@]}" || die "the traced gateway does not accept the benchmark token"
# The traced gateway really exports: a client's sampled traceparent is always exported, so one
# request with it must show up in the sink's access log within the exporter's 1 s batch delay.
curl -s -o /dev/null --max-time 2 "${AUTH[@]}" -H "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" "http://127.0.0.1:$P_GWT/api/ping"
exported=0
for _ in $(seq 1 50); do
  if grep -q '"POST /v1/traces HTTP/1.1" 200' "$RUN/otlp.access.log" 2>/dev/null; then exported=1; break; fi
  sleep 0.1
done
[ "$exported" = 1 ] || die "the traced gateway exported no span to the OTLP sink (see $RUN/gw-traced.log)"
wait_http "https://127.0.0.1:$P_GWTLS/api/ping" --cacert "$TLS/ca.crt" "${AUTH[@]}" || die "gateway over TLS does not answer 200"
wait_http "http://127.0.0.1:$P_HAJWT/api/ping" "${AUTH[@]}" || die "HAProxy jwt_verify does not accept the benchmark token"
# One signature character changed, never to itself: a character ten from the end carries six
# signature bits (the last one carries only two, and was 'A' for one token in four).
bad_signature() {
  local token=$1 at=$((${#1} - 10))
  local was=${token:at:1} now=A
  [ "$was" = A ] && now=B
  printf '%s%s%s' "${token:0:at}" "$now" "${token:at+1}"
}
FORGED_TOKEN=$(bad_signature "$CACHED_TOKEN")
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $FORGED_TOKEN" "http://127.0.0.1:$P_HAJWT/api/ping")
[ "$code" = 401 ] || die "HAProxy jwt_verify answers $code to a bad signature (expected 401): it would not be verifying"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $FORGED_TOKEN" "http://127.0.0.1:$P_GW/api/ping")
[ "$code" = 401 ] || die "the gateway answers $code to a bad signature (expected 401)"

# gRPC: the upstream's answer, direct and through the gateway, is a real gRPC success: HTTP 200,
# a DATA frame with the message, then the trailer grpc-status: 0 (a trailers-only gRPC denial,
# also HTTP 200, carries grpc-status in its only HEADERS frame and no DATA). nghttp
# (nghttp2-client, like h2load) prints every frame it receives.
grpc_call() { # grpc_call NAME URL [nghttp options...]: nghttp -v output in $RUN/NAME.grpc.txt
  local name=$1 url=$2
  shift 2
  timeout 10 nghttp -nv -d "$RUN/grpc-request.bin" "${GRPC_HEADERS[@]}" "$@" "$url" > "$RUN/$name.grpc.txt" 2>&1 || true
}
grpc_trailer_status() { # grpc_trailer_status FILE: the grpc-status received after a DATA frame
  awk '/recv DATA frame/ {data = 1}
       data && /recv \(stream_id=[0-9]+\) grpc-status:/ {print $NF; exit}' "$1"
}
grpc_ok() { # grpc_ok NAME URL [nghttp options...]: dies unless the call is a gRPC success
  local name=$1 url=$2 f="$RUN/$1.grpc.txt"
  grpc_call "$@"
  if ! grep -q 'recv (stream_id=[0-9]*) :status: 200' "$f" || [ "$(grpc_trailer_status "$f")" != 0 ]; then
    die "gRPC $name: $url is not answered with a message and the trailer grpc-status: 0 (see $f)"
  fi
}
for _ in $(seq 1 50); do  # nghttpd listens within milliseconds; at most 5 s
  grpc_call direct "http://127.0.0.1:$P_GRPC$GRPC_PATH"
  grep -q 'recv (stream_id=[0-9]*) :status: 200' "$RUN/direct.grpc.txt" && break
  sleep 0.1
done
grpc_ok direct "http://127.0.0.1:$P_GRPC$GRPC_PATH" -H "authorization: Bearer $CACHED_TOKEN"
grpc_ok gateway "http://127.0.0.1:$P_GW$GRPC_PATH" -H "authorization: Bearer $CACHED_TOKEN"
grpc_call gateway-forged "http://127.0.0.1:$P_GW$GRPC_PATH" -H "authorization: Bearer $FORGED_TOKEN"
grep -q 'recv (stream_id=[0-9]*) grpc-status: 16' "$RUN/gateway-forged.grpc.txt" ||
  die "the gateway's gRPC route does not answer a bad signature with grpc-status 16 (see $RUN/gateway-forged.grpc.txt)"

# Decisions: nginx lets the cached token through and sends a forged one or none back as 401.
wait_http "http://127.0.0.1:$P_NGAUTH/api/ping" "${AUTH[@]}" || die "nginx + auth_request does not let the benchmark token through (see $RUN/nginx-authreq.error.log, $RUN/gw-decide.log)"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $FORGED_TOKEN" "http://127.0.0.1:$P_NGAUTH/api/ping")
[ "$code" = 401 ] || die "nginx + auth_request answers $code to a bad signature (expected 401)"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_NGAUTH/api/ping")
[ "$code" = 401 ] || die "nginx + auth_request answers $code to no token (expected 401)"

# ----------------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------------
cpu_ticks() { # cpu_ticks PID...: utime+stime of these processes and their children processes
  local total=0 pid p
  for pid in "$@"; do
    for p in "$pid" $(pgrep -P "$pid" 2>/dev/null || true); do
      if [ -r "/proc/$p/stat" ]; then
        total=$((total + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
      fi
    done
  done
  echo "$total"
}
core_ticks() { # core_ticks N: busy and total ticks of core N, "busy total"
  awk -v c="cpu$1" '$1 == c {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat
}
grpc_counts() { # grpc_counts ADMIN_PORT: "ok other" gRPC responses of the route grpc so far
  curl -s --max-time 2 "http://127.0.0.1:$1/metrics" | awk '
    /^gateway_grpc_responses_total\{/ && /route="grpc"/ {
      if ($0 ~ /grpc_status="0"/) ok += $NF; else other += $NF }
    END { printf "%d %d\n", ok, other }'
}
cache_counts() { # cache_counts ADMIN_PORT: "hits misses" of token validation so far
  curl -s --max-time 2 "http://127.0.0.1:$1/metrics" | awk '
    /^gateway_token_validation_duration_seconds_count/ {
      if ($0 ~ /cache="hit"/) h += $NF; else if ($0 ~ /cache="miss"/) m += $NF }
    END { printf "%d %d\n", h, m }'
}
children_cpu_ticks() { # sets CHILD_TICKS: CPU of this shell's finished children (bash `times`,
  # 2nd line), in ticks. `times` runs in this shell: in a $(...) subshell it would report that
  # subshell's own children, none.
  times > "$RUN/times.txt"
  CHILD_TICKS=$(awk -v hz="$CLK_TCK" 'NR == 2 {
    t = 0
    for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
    printf "%d\n", t * hz + 0.5 }' "$RUN/times.txt")
}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

RUNS="$RUN/runs.tsv"
CLK_TCK=$(getconf CLK_TCK)
printf 'target\tround\traw\tcpu_ticks\twall_s\tcore0_busy_pct\tcore1_busy_pct\thits\tmisses\tload_ticks\tgrpc_ok\tgrpc_other\n' > "$RUNS"

# target -> "pid-var admin-port url [wrk args...]"
target_args() {
  case "$1" in
    gw-anon)       echo "http://127.0.0.1:$P_GW/anon/ping" ;;
    gw-cached)     echo "http://127.0.0.1:$P_GW/api/ping" ;;
    gw-traced-cached) echo "http://127.0.0.1:$P_GWT/api/ping" ;;
    gw-tls-cached) echo "https://127.0.0.1:$P_GWTLS/api/ping" ;;
    gw-uncached)   echo "http://127.0.0.1:$P_GWU/" ;;
    haproxy-pass)  echo "http://127.0.0.1:$P_HAPASS/api/ping" ;;
    nginx-pass)    echo "http://127.0.0.1:$P_NGINX/api/ping" ;;
    haproxy-jwt)   echo "http://127.0.0.1:$P_HAJWT/" ;;
    gw-grpc)       echo "http://127.0.0.1:$P_GW$GRPC_PATH" ;;
    grpc-direct)   echo "http://127.0.0.1:$P_GRPC$GRPC_PATH" ;;
    nginx-authreq) echo "http://127.0.0.1:$P_NGAUTH/api/ping" ;;
  esac
}
target_pid() { # the server's processes: for grpc-direct the gRPC upstream itself (core 0)
  case "$1" in
    gw-anon|gw-cached|gw-grpc) echo "${GW_PID[gw-plain]}" ;;
    gw-traced-cached)  echo "${GW_PID[gw-traced]}" ;;
    gw-tls-cached)     echo "${GW_PID[gw-tls]}" ;;
    gw-uncached)       echo "${GW_PID[gw-uncached]}" ;;
    haproxy-*)         echo "$HAPROXY_PID" ;;
    nginx-pass)        echo "$NGINX_PID" ;;
    grpc-direct)       echo "$GRPC_PID" ;;
    nginx-authreq)     echo "$NGAUTH_PID ${GW_PID[gw-decide]}" ;;
  esac
}
target_admin() {
  case "$1" in
    gw-anon|gw-cached|gw-grpc) echo "$A_GW" ;;
    gw-traced-cached)  echo "$A_GWT" ;;
    gw-tls-cached)     echo "$A_GWTLS" ;;
    gw-uncached)       echo "$A_GWU" ;;
    nginx-authreq)     echo "$A_GWD" ;;
    *)                 echo "" ;;
  esac
}

load_cmd() { # load_cmd TARGET DURATION [LOG]: runs wrk (h2load for gRPC) against TARGET
  local target=$1 d=$2 log=${3:-} url
  url=$(target_args "$target")
  local base=("${LOAD[@]}" timeout $((d + 30)) wrk -t1 -c"$CONNS" -d"${d}s" --timeout 5s --latency)
  case "$target" in
    gw-anon) "${base[@]}" "$url" ;;
    gw-cached|gw-traced-cached|gw-tls-cached|haproxy-pass|nginx-pass|nginx-authreq) "${base[@]}" "${AUTH[@]}" "$url" ;;
    gw-uncached|haproxy-jwt) "${base[@]}" -s "$BENCH/tokens.lua" "$url" -- "$TOKENS" /api/ping "$UNCACHED_TOKENS" ;;
    gw-grpc|grpc-direct)
      # the unary call with the cached token, GRPC_CLIENTS connections x GRPC_STREAMS streams;
      # LOG: one line per request (start, HTTP status, microseconds), for p50 and p99
      "${LOAD[@]}" timeout $((d + 30)) h2load -t1 -c"$GRPC_CLIENTS" -m"$GRPC_STREAMS" -D "$d" \
        -d "$RUN/grpc-request.bin" "${GRPC_HEADERS[@]}" -H "authorization: Bearer $CACHED_TOKEN" \
        ${log:+"--log-file=$log"} "$url" ;;
  esac
}

rps_of() { # rps_of RAW: req/s from wrk's or h2load's output
  awk '/^Requests\/sec:/ {print $2} /^finished in / {print $4}' "$1"
}

measure() { # measure TARGET ROUND
  local target=$1 round=$2 pids admin raw t0 t1 h0 h1 g0 g1 w0 w1 b0 b1 tot0 tot1 s0 s1 stot0 stot1 o0 o1 k0 k1
  if [ "$target" = gw-uncached ]; then
    restart_gateway gw-uncached "$A_GWU"
    # warm the fresh process (connections, pools) on its anonymous route, not its cache
    "${LOAD[@]}" timeout 30 wrk -t1 -c"$CONNS" -d"${WARMUP}s" "http://127.0.0.1:$P_GWU/anon/ping" > /dev/null
  else
    load_cmd "$target" "$WARMUP" > /dev/null
  fi
  read -ra pids <<< "$(target_pid "$target")"
  admin=$(target_admin "$target")
  raw="$RUN/raw/$target-r$round.txt"
  h0="0 0"; [ -n "$admin" ] && h0=$(cache_counts "$admin")
  g0="0 0"; [ "$target" = gw-grpc ] && g0=$(grpc_counts "$admin")
  read -r b0 tot0 < <(core_ticks 0)
  read -r s0 stot0 < <(core_ticks 1)
  o0=$(cpu_ticks "$ORIGIN_PID" "$GRPC_PID")
  t0=$(cpu_ticks "${pids[@]}"); w0=$(date +%s.%N)
  children_cpu_ticks; k0=$CHILD_TICKS      # right around the load, so it is all but alone in it
  load_cmd "$target" "$DURATION" "${raw%.txt}.log" > "$raw"
  children_cpu_ticks; k1=$CHILD_TICKS
  t1=$(cpu_ticks "${pids[@]}"); w1=$(date +%s.%N)
  o1=$(cpu_ticks "$ORIGIN_PID" "$GRPC_PID")
  read -r b1 tot1 < <(core_ticks 0)
  read -r s1 stot1 < <(core_ticks 1)
  h1="0 0"; [ -n "$admin" ] && h1=$(cache_counts "$admin")
  g1="0 0"; [ "$target" = gw-grpc ] && g1=$(grpc_counts "$admin")
  read -r hh0 mm0 <<< "$h0"; read -r hh1 mm1 <<< "$h1"
  read -r gok0 got0 <<< "$g0"; read -r gok1 got1 <<< "$g1"
  local gok="" got=""
  if [ "$target" = gw-grpc ]; then gok=$((gok1 - gok0)); got=$((got1 - got0)); fi
  local busy=$(( (tot1 - tot0) > 0 ? 100 * (b1 - b0) / (tot1 - tot0) : 0 ))
  local sbusy=$(( (stot1 - stot0) > 0 ? 100 * (s1 - s0) / (stot1 - stot0) : 0 ))
  # load_ticks: wrk or h2load (a finished child of this shell) plus the origin and gRPC upstream
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$round" "$raw" $((t1 - t0)) \
    "$(awk -v a="$w0" -v b="$w1" 'BEGIN {printf "%.3f", b - a}')" "$busy" "$sbusy" $((hh1 - hh0)) $((mm1 - mm0)) \
    $((o1 - o0 + k1 - k0)) "$gok" "$got" >> "$RUNS"
  if [ -f "${raw%.txt}.log" ]; then  # h2load's per-request log (~25 bytes each): keep p50 and p99
    "$PYTHON" "$BENCH/report.py" latency "${raw%.txt}.log" "${raw%.txt}.latency"
    rm -f "${raw%.txt}.log"
  fi
  log "round $round  $target: $(rps_of "$raw") req/s"
}

log "$ROUNDS round(s) of ${DURATION}s per target, wrk -t1 -c$CONNS (gRPC: h2load -t1 -c$GRPC_CLIENTS -m$GRPC_STREAMS), targets interleaved"
for ((r = 1; r <= ROUNDS; r++)); do
  n=${#TARGETS[@]}
  for ((k = 0; k < n; k++)); do
    # each round starts one target later, so no target always follows the same one
    measure "${TARGETS[$(((k + r - 1) % n))]}" "$r"
  done
done

# ----------------------------------------------------------------------------------------------
# Memory with MEM_TOKENS distinct cached tokens (a fresh gateway, each token sent once)
# ----------------------------------------------------------------------------------------------
# Only with every target (--targets leaves it out): it needs the uncached rate measured above.
if [ "$MEMORY" = 1 ]; then
  log "memory: RSS before and after $MEM_TOKENS distinct valid tokens, each sent once"
  restart_gateway gw-uncached "$A_GWU"
  MEM_PID=${GW_PID[gw-uncached]}
  "${LOAD[@]}" timeout 30 wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$P_GWU/anon/ping" > /dev/null
  sleep 1
  RSS_BEFORE=$(rss_kb "$MEM_PID")
  sent=0
  for attempt in 1 2 3 4; do
    # sized from the uncached rate measured above, with room to spare; the Lua script sends each
    # remaining token once, then only anonymous requests until wrk's time is up
    # shellcheck disable=SC2016
    rate=$(awk -F'\t' '$1 == "gw-uncached" {print $3}' "$RUNS" | xargs -r awk '/Requests\/sec/ {print int($2)}' | sort -n | head -n 1)
    rate=${rate:-5000}; [ "$rate" -gt 0 ] || rate=5000
    d=$(( (MEM_TOKENS - sent) * 3 / (2 * rate) + 2 ))
    [ "$d" -le 60 ] || d=60
    "${LOAD[@]}" timeout $((d + 30)) wrk -t1 -c"$CONNS" -d"${d}s" -s "$BENCH/tokens.lua" "http://127.0.0.1:$P_GWU/" -- \
      "$TOKENS" /api/ping $((MEM_TOKENS - sent)) /anon/ping "$sent" > "$RUN/raw/memory-$attempt.txt"
    before_attempt=$sent
    read -r _ sent < <(cache_counts "$A_GWU")
    if [ "$sent" -ge "$MEM_TOKENS" ] || [ "$sent" -le "$before_attempt" ]; then break; fi
  done
  sleep 2
  RSS_AFTER=$(rss_kb "$MEM_PID")
  ENTRIES=$(curl -s --max-time 2 "http://127.0.0.1:$A_GWU/metrics" | awk '/^gateway_token_cache_entries/ {print $NF}')
  NON2XX_MEM=$(cat "$RUN"/raw/memory-*.txt | awk '/Non-2xx/ {s += $NF} END {print s + 0}')
  printf 'tokens=%s\nverified=%s\ncache_entries=%s\nrss_before_kb=%s\nrss_after_kb=%s\nnon2xx=%s\n' \
    "$MEM_TOKENS" "$sent" "${ENTRIES:-?}" "$RSS_BEFORE" "$RSS_AFTER" "$NON2XX_MEM" > "$RUN/memory.txt"
fi

# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
{
  echo "mode=$MODE"
  echo "command=$COMMAND"
  echo "sched=$SCHED"
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "nproc=$NPROC"
  echo "cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "mem=$(awk '/^MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "kernel=$(uname -r)"
  echo "loadavg_start=$LOADAVG_START"
  echo "busy_start=$BUSY_START"
  echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "pinning=$PINNING"
  echo "rounds=$ROUNDS"
  echo "duration=$DURATION"
  echo "connections=$CONNS"
  echo "grpc_clients=$GRPC_CLIENTS"
  echo "grpc_streams=$GRPC_STREAMS"
  echo "clk_tck=$CLK_TCK"
  echo "uncached_tokens=$UNCACHED_TOKENS"
  echo "gateway=$("$GATEWAY" --version 2>/dev/null | head -n 1 || echo jwt-gateway) ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo '+changes'))"
  echo "haproxy=$HAPROXY_VERSION"
  echo "nginx=$(nginx -v 2>&1 | sed 's/.*nginx\///')"
  echo "wrk=$(wrk -v 2>&1 | awk 'NR==1 {print $2}')"
  echo "h2load=$(h2load --version 2>&1 | awk 'NR==1 {print $2}')"
  echo "nghttpd=$(nghttpd --version 2>&1 | awk 'NR==1 {print $2}')"
} > "$RUN/meta.txt"

"$PYTHON" "$BENCH/report.py" "$RUN" "$OUTPUT"
log "table written to ${OUTPUT#"$ROOT"/}"
