#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with the Rust toolchain:
#
#   bash tests/run.sh
#
# Installs (as root, with apt-get) the Debian packages the tests need, then runs formatting,
# lints, unit and integration tests, the benches' build, the deploy checks, and short bounded
# smoke runs of the load benchmark and the fuzzers. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s (%d s into the run)\n' "$*" "$SECONDS"; }

# Debian packages used by tests: redis-server (shared revocation and DPoP replay), prometheus
# (promtool and a real scrape), nginx, python3 and tomcat10 (the real upstreams of
# tests/it/differential.rs; tomcat10 brings a JRE), python3-cryptography and python3-jwt. The load-benchmark smoke run installs its own (haproxy, nginx, wrk).
want=()
command -v redis-server >/dev/null || want+=(redis-server)
command -v promtool >/dev/null || want+=(prometheus)
command -v nginx >/dev/null || want+=(nginx)
command -v python3 >/dev/null || want+=(python3)
# Sender-constrained tokens (tests/it/binding.rs): proofs and client certificates come from
# Debian's python3 with python3-cryptography and python3-jwt, never from the gateway's code; the
# gateway's assertions (tests/it/tracing.rs) are verified with the same PyJWT, an independent
# JWT library.
/usr/bin/python3 -c 'import cryptography, jwt' 2>/dev/null || want+=(python3-cryptography python3-jwt)
# Tomcat is not on PATH: the tests run Debian's install in /usr/share/tomcat10 with `java`.
{ [ -e /usr/share/tomcat10/bin/bootstrap.jar ] && command -v java >/dev/null; } || want+=(tomcat10)
# The browser end-to-end test (tests/it/chromium.rs) drives headless Chromium.
command -v chromium >/dev/null || want+=(chromium)
if ((${#want[@]})); then
  step "installing Debian packages: ${want[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "tests/run.sh: run as root (apt-get install ${want[*]})" >&2
    exit 1
  fi
  # Packages must not start their own services on this machine; tests start what they need.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "cargo test (unit, integration, property, Wycheproof vectors)"
cargo test --locked

step "benches compile (cargo bench --no-run)"
cargo bench --locked --no-run

step "load benchmark smoke run (a few seconds per target; installs haproxy, nginx, wrk)"
bash bench/run.sh --smoke

step "deploy checks (promtool, Kubernetes schemas, dashboard, systemd)"
bash deploy/check.sh

step "fuzz smoke: every cargo-fuzz target, 10 s each (longer runs: bash fuzz/run.sh 3600)"
FUZZ_FLAGS="-s none" bash fuzz/run.sh 10

printf '\n==> all green in %d s\n' "$SECONDS"
