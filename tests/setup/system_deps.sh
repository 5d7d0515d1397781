#!/usr/bin/env bash
# Installs the system packages the test suites need, where we can (root + apt), idempotently.
# Fast on a second run: it only calls apt when a command is missing.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v g++ >/dev/null 2>&1 || need+=(g++)
# tests/test_redis_shared.py: a real Redis for the shared-state backend (never a fake).
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# tests/tools/ladder: `ladder sign --key` / `verify` run OpenSSH's ssh-keygen -Y sign/verify.
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)

# The dashboard's browser test drives Debian's chromium (never a downloaded browser build).
# Optional: if it cannot be installed, that test skips and says why; nothing else needs it.
install_optional_chromium() {
  [ -x /usr/bin/chromium ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: installing chromium with apt (for the dashboard browser test)"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver >/dev/null; } \
      || echo "system-deps: chromium could not be installed; the browser test will skip" >&2
  else
    echo "system-deps: no /usr/bin/chromium and cannot apt-get here; the browser test will skip" >&2
  fi
}
install_optional_chromium

# tests/observe/test_promtool.py and test_metrics.py check the alert rules and the /metrics page
# with Prometheus' own promtool, which Debian ships only in its `prometheus` package. The
# package would also start a Prometheus server: it is stopped and disabled right after.
install_optional_promtool() {
  command -v promtool >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: installing prometheus with apt (for promtool; its server stays off)"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus \
        >/dev/null; } \
      || echo "system-deps: prometheus could not be installed; the promtool checks will skip" >&2
    if command -v systemctl >/dev/null 2>&1; then
      systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
  else
    echo "system-deps: no promtool and cannot apt-get here; the promtool checks will skip" >&2
  fi
}
install_optional_promtool

# tests/packaging/test_homebrew.py checks the formula parses with `ruby -c` (skips without it).
if ! command -v ruby >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: installing ruby with apt (to check the Homebrew formula parses)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends ruby >/dev/null; } \
    || echo "system-deps: ruby could not be installed; the formula's syntax check will skip" >&2
fi

# `make bench` only (`system_deps.sh bench`): nginx, S1's reference proxy; without it S1 runs
# without the nginx arm.
if [ "${1:-}" = bench ] && ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: installing nginx-light with apt (S1's reference proxy)"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx-light \
        >/dev/null; } || echo "system-deps: nginx could not be installed; S1 runs without it" >&2
  fi
fi

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: installing ${need[*]} with apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "system-deps: missing ${need[*]} and cannot apt-get here;" \
       "the suites that need them will be skipped with a message" >&2
fi
